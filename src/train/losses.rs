//! The pretraining losses (docs/design.md §2): per-level image-text contrastive alignment
//! as BLIP-2's ITC (Li et al., 2023: the similarity of an image to a text is the largest over
//! the image's query outputs; in-batch negatives; symmetric cross-entropy), attribute
//! regression, and a margin ranking of originals above their degraded copies. Each returns a
//! one-element tensor so that the caller can weight, sum and log it by name.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

/// L2-normalises the last dimension.
fn normalize<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(D - 1)
        .sqrt()
        .clamp_min(1e-12)
        .expand(dims);
    x / norm
}

/// Mean cross-entropy of `logits` `[N, C]` against class `targets[i]` per row.
fn cross_entropy(logits: Tensor<2>, targets: &[i64]) -> Tensor<1> {
    let [n, _] = logits.dims();
    let device = logits.device();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(targets.to_vec(), [n]), &device)
        .reshape([n, 1]);
    log_softmax(logits, 1).gather(1, idx).mean().neg()
}

/// BLIP-2's ITC for one level: `queries` `[B, Q, H]` (the level's query outputs, projected to
/// the text space) and `texts` `[B, H]` (the cue embeddings; row i belongs to image i). Both
/// are L2-normalised here; sim(i, j) = max over q of cos(query_iq, text_j); the loss is the
/// mean of the image-to-text and text-to-image cross-entropies of sim / `temperature`, with the
/// diagonal as targets.
pub fn itc(queries: Tensor<3>, texts: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [b, q, h] = queries.dims();
    let queries = normalize(queries);
    let texts = normalize(texts);
    // [B, Q, H] x [H, B] -> [B, Q, B], then the best query per (image, text).
    let sim = queries
        .reshape([b * q, h])
        .matmul(texts.transpose())
        .reshape([b, q, b])
        .max_dim(1)
        .reshape([b, b])
        / temperature;
    let targets: Vec<i64> = (0..b as i64).collect();
    (cross_entropy(sim.clone(), &targets) + cross_entropy(sim.transpose(), &targets)) / 2.0
}

/// Mean squared error between predicted and measured attributes, `[B, K]` each.
pub fn attribute_regression(predicted: Tensor<2>, measured: Tensor<2>) -> Tensor<1> {
    (predicted - measured).powf_scalar(2.0).mean()
}

/// Margin ranking: each original's quality score `[N]` should exceed its degraded copy's
/// `[N]` by `margin`; mean of max(0, margin - (original - degraded)).
pub fn margin_ranking(original: Tensor<1>, degraded: Tensor<1>, margin: f64) -> Tensor<1> {
    (degraded - original + margin).clamp_min(0.0).mean()
}
