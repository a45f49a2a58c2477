//! Least-squares initialisation of the level projections before instruction tuning, in the
//! manner of LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features and
//! Underperform Out-of-Distribution"): fit the new head by linear probing first, then
//! fine-tune. The head here is each level's `language_projection` into the LLM's embedding
//! space. Its probe's target for an image is what the image's conversation makes the model
//! say, read in the LLM's own input embeddings: the embeddings of the assistant tokens it
//! supervises, summed and divided by the square root of their number, so that a score's one
//! word weighs as much as a suggestion's twenty (with plain sums the fit served the long
//! suggestions and the scores stopped following the image; README, built-in job).
//!
//! Why: a projection started at random gives the LLM tokens it has never seen, and the few
//! hundred conversations of a CPU budget teach it to read only the strongest feature (every
//! held-out copy was then "blurred", or every one "underexposed"). A fitted projection hands
//! it, from step 0, tokens that lean towards the words the answers use for such an image,
//! which a language model already knows how to carry to its output; ridge regression is the
//! convex problem a linear probe on the same features solves well.
//!
//! The fit is kernel ridge regression in its dual form (`n` images, far fewer than the
//! Q-Former's width): `W^T = Zc^T (Zc Zc^T + lambda I)^-1 Tc`, with `Zc` the images' mean
//! Q-Former outputs and `Tc` their targets, both centred. The bias puts the tokens at the
//! mean embedding of the supervised tokens, the scale of an ordinary token.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::instruct_batch::PreparedBatch;
use crate::model::calm::Calm;
use crate::model::mfam::{Branch, Group};

/// How the level projections start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorInitKind {
    /// BLIP-2's N(0, 0.02).
    Random,
    /// Fitted by ridge regression to the first stage's answers (module docs).
    LeastSquares,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorInitConfig {
    pub kind: ProjectorInitKind,
    /// Micro-batches of the first stage's data to fit on (drawn apart from the training
    /// stream), each of `finetune.batch_size` conversations.
    pub batches: usize,
    /// Ridge penalty as a share of the mean squared norm of the centred features.
    pub ridge: f64,
}

impl Default for ProjectorInitConfig {
    fn default() -> Self {
        Self {
            kind: ProjectorInitKind::LeastSquares,
            batches: 32,
            ridge: 0.1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("no conversation with exactly one image and a supervised answer to fit on")]
    NoData,
    #[error("the regression's system is not positive definite (ridge {0})")]
    Singular(f64),
}

/// What the fit used and how well it explains its own targets, per level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub images: usize,
    /// Share of the centred targets' sum of squares the fitted projection explains, for the
    /// low, middle and high levels (absent when a level is disabled).
    pub r_squared: Vec<(Group, f64)>,
}

/// One image with its features per level and its target.
struct Example {
    /// Mean Q-Former output of each enabled level.
    features: Vec<Vec<f64>>,
    /// The embeddings of its supervised tokens, summed...
    sum: Vec<f64>,
    /// ...and divided by the square root of their number.
    target: Vec<f64>,
    /// Supervised tokens in `target`.
    tokens: usize,
}

/// Fits every enabled level's `language_projection` of `model` to `batches` (module docs).
/// Conversations with more or fewer than one image are left out. `model` may live on an
/// autodiff device; the projections keep their parameter ids and whether they take
/// gradients.
pub fn fit_level_projections(
    model: Calm,
    batches: &[PreparedBatch],
    ridge: f64,
    device: &Device,
) -> Result<(Calm, FitReport), FitError> {
    let mfam = model.mfam.valid();
    let embeddings = model.llm.model.embed_tokens.valid().weight.val();
    let mut examples = Vec::new();
    for batch in batches {
        if batch.hidden_states.is_empty() {
            continue;
        }
        let states: Vec<Tensor<3>> = batch
            .hidden_states
            .iter()
            .map(|s| s.clone().to_device(device))
            .collect();
        let out = mfam.forward(&states);
        let levels: Vec<Vec<f32>> = [&out.low, &out.middle, &out.high]
            .into_iter()
            .flatten()
            .map(|l| {
                l.queries
                    .clone()
                    .mean_dim(1)
                    .into_data()
                    .iter::<f32>()
                    .collect()
            })
            .collect();
        let images: usize = batch.images.iter().sum();
        let mut image = 0;
        for (row, &count) in batch.rows.iter().zip(&batch.images) {
            let first = image;
            image += count;
            let ids: Vec<i64> = row.targets().map(|(_, _, id)| i64::from(id)).collect();
            if count != 1 || ids.is_empty() {
                continue;
            }
            let n = ids.len();
            let rows = embeddings.clone().select(
                0,
                Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), device),
            );
            let sum: Vec<f64> = rows
                .sum_dim(0)
                .into_data()
                .iter::<f32>()
                .map(f64::from)
                .collect();
            let target = sum.iter().map(|v| v / (n as f64).sqrt()).collect();
            let features = levels
                .iter()
                .map(|l| {
                    let h = l.len() / images.max(1);
                    l[first * h..(first + 1) * h]
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect()
                })
                .collect();
            examples.push(Example {
                features,
                sum,
                target,
                tokens: n,
            });
        }
    }
    if examples.is_empty() {
        return Err(FitError::NoData);
    }
    let n = examples.len();
    let dim = examples[0].target.len();
    let total_tokens: usize = examples.iter().map(|e| e.tokens).sum();
    // The bias: the mean embedding of a supervised token.
    let mut bias = vec![0.0; dim];
    for e in &examples {
        for (b, t) in bias.iter_mut().zip(&e.sum) {
            *b += t / total_tokens as f64;
        }
    }
    let target_mean = column_mean(examples.iter().map(|e| e.target.as_slice()), dim);
    let tc: Vec<Vec<f64>> = examples
        .iter()
        .map(|e| {
            e.target
                .iter()
                .zip(&target_mean)
                .map(|(t, m)| t - m)
                .collect()
        })
        .collect();
    let enabled: Vec<Group> = [&model.mfam.low, &model.mfam.middle, &model.mfam.high]
        .into_iter()
        .zip([Group::Low, Group::Middle, Group::High])
        .filter_map(|(b, group)| b.as_ref().map(|_| group))
        .collect();
    let mut fitted = Vec::new();
    let mut r_squared = Vec::new();
    for (level, name) in enabled.iter().enumerate() {
        let width = examples[0].features[level].len();
        let mean = column_mean(examples.iter().map(|e| e.features[level].as_slice()), width);
        let zc: Vec<Vec<f64>> = examples
            .iter()
            .map(|e| {
                e.features[level]
                    .iter()
                    .zip(&mean)
                    .map(|(z, m)| z - m)
                    .collect()
            })
            .collect();
        let (weight, r2) = dual_ridge(&zc, &tc, ridge)?;
        // tokens = W z + b' with b' chosen so that the mean feature maps onto `bias`.
        let offset: Vec<f64> = (0..dim)
            .map(|j| bias[j] - (0..width).map(|i| weight[i][j] * mean[i]).sum::<f64>())
            .collect();
        fitted.push((weight, offset));
        r_squared.push((*name, r2));
    }
    let mut model = model;
    let mut fits = fitted.into_iter();
    for branch in [
        &mut model.mfam.low,
        &mut model.mfam.middle,
        &mut model.mfam.high,
    ]
    .into_iter()
    .flatten()
    {
        if let Some((weight, offset)) = fits.next() {
            set_projection(branch, &weight, &offset);
        }
    }
    Ok((
        model,
        FitReport {
            images: n,
            r_squared,
        },
    ))
}

fn column_mean<'a>(rows: impl Iterator<Item = &'a [f64]>, width: usize) -> Vec<f64> {
    let mut sum = vec![0.0; width];
    let mut n = 0usize;
    for row in rows {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
        n += 1;
    }
    sum.iter().map(|s| s / n.max(1) as f64).collect()
}

/// Ridge regression of `tc` (`[n][d_out]`) on `zc` (`[n][d_in]`), both centred, solved in the
/// dual: the weight as `[d_in][d_out]` (burn's `Linear` layout) and the share of `tc`'s sum
/// of squares it explains on the same rows.
pub fn dual_ridge(
    zc: &[Vec<f64>],
    tc: &[Vec<f64>],
    ridge: f64,
) -> Result<(Vec<Vec<f64>>, f64), FitError> {
    let n = zc.len();
    let d_in = zc.first().map_or(0, Vec::len);
    let d_out = tc.first().map_or(0, Vec::len);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut k: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| dot(&zc[i], &zc[j])).collect())
        .collect();
    let lambda = ridge * (0..n).map(|i| k[i][i]).sum::<f64>() / n.max(1) as f64;
    for (i, row) in k.iter_mut().enumerate() {
        row[i] += lambda;
    }
    let l = cholesky(&k).ok_or(FitError::Singular(ridge))?;
    // A = K^-1 Tc, one column of Tc at a time.
    let mut a = vec![vec![0.0; d_out]; n];
    for j in 0..d_out {
        let column: Vec<f64> = tc.iter().map(|r| r[j]).collect();
        let x = cholesky_solve(&l, &column);
        for (row, v) in a.iter_mut().zip(x) {
            row[j] = v;
        }
    }
    let mut weight = vec![vec![0.0; d_out]; d_in];
    for (z, a_row) in zc.iter().zip(&a) {
        for (w_row, &zi) in weight.iter_mut().zip(z) {
            for (w, &av) in w_row.iter_mut().zip(a_row) {
                *w += zi * av;
            }
        }
    }
    let mut residual = 0.0;
    let mut total = 0.0;
    for (z, t) in zc.iter().zip(tc) {
        for (j, &tj) in t.iter().enumerate() {
            let p: f64 = z.iter().zip(&weight).map(|(zi, w)| zi * w[j]).sum();
            residual += (tj - p).powi(2);
            total += tj * tj;
        }
    }
    let r2 = if total > 0.0 {
        1.0 - residual / total
    } else {
        0.0
    };
    Ok((weight, r2))
}

/// The lower-triangular `L` with `L L^T = a`, or `None` when `a` is not positive definite.
fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                // Also refuses NaN.
                if d.is_nan() || d <= 0.0 {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

fn cholesky_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = l.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i][k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k][i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i][i];
    }
    x
}

/// Writes `weight` (`[d_in][d_out]`) and `bias` into `branch`'s projection, keeping its
/// parameter ids (checkpoints and Adam's moments find parameters by id).
fn set_projection(branch: &mut Branch, weight: &[Vec<f64>], bias: &[f64]) {
    let linear: &mut Linear = &mut branch.language_projection;
    let device = linear.weight.val().device();
    let d_in = weight.len();
    let d_out = bias.len();
    let w: Vec<f32> = weight.iter().flatten().map(|&v| v as f32).collect();
    let (id, old, mapper) = linear.weight.clone().consume();
    linear.weight = Param::from_mapped_value(
        id,
        Tensor::from_data(TensorData::new(w, [d_in, d_out]), &device)
            .set_require_grad(old.is_require_grad()),
        mapper,
    );
    if let Some(b) = linear.bias.take() {
        let (id, old, mapper) = b.consume();
        let v: Vec<f32> = bias.iter().map(|&v| v as f32).collect();
        linear.bias = Some(Param::from_mapped_value(
            id,
            Tensor::from_data(TensorData::new(v, [d_out]), &device)
                .set_require_grad(old.is_require_grad()),
            mapper,
        ));
    }
}
