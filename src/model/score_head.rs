//! Score readouts beside the LLM's words, read from its last hidden state where the answer to
//! a scoring question begins:
//! - a distribution over the ten scores 1..=10 trained with the squared earth mover's
//!   distance of NIMA (Talebi & Milanfar, TIP 2018, eq. 1 with r = 2), as MMLQ does for an
//!   MLLM;
//! - a regression of the score itself, as ROC4MLLM reads a score from the hidden state at
//!   the answer instead of decoding digits.
//!
//! Both are linear maps of the hidden state after the LLM's final norm, the input its LM head
//! reads, so the LoRA adapters and projections that shape the words shape these too.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

/// Bins of the score distribution: AVA's ten vote buckets, scores 1..=10.
pub const SCORE_BINS: usize = 10;

/// The regression predicts `(score - SCORE_MID) / SCORE_HALF_RANGE`: scores of 1..10 map to
/// -1..1, so its squared error has the scale of the distribution's loss.
pub const SCORE_MID: f64 = 5.5;
pub const SCORE_HALF_RANGE: f64 = 4.5;

#[derive(Module, Debug)]
pub struct ScoreHead {
    /// `[D] -> [SCORE_BINS]` logits.
    pub distribution: Linear,
    /// `[D] -> [1]`, the standardised score.
    pub regression: Linear,
}

/// The heads' outputs for N answers.
#[derive(Debug, Clone)]
pub struct ScoreOutputs {
    /// `[N, SCORE_BINS]`.
    pub logits: Tensor<2>,
    /// `[N]`, standardised (see `SCORE_MID`).
    pub standardised: Tensor<1>,
}

impl ScoreHead {
    /// Fresh heads for an LLM of width `hidden_size`; the regression starts at the middle of
    /// the scale (zero bias) and the distribution near uniform.
    pub fn new(hidden_size: usize, device: &Device) -> Self {
        Self {
            distribution: LinearConfig::new(hidden_size, SCORE_BINS).init(device),
            regression: LinearConfig::new(hidden_size, 1).init(device),
        }
    }

    /// `hidden`: `[N, D]`, the final-norm hidden states at the N answers' predecessors.
    pub fn forward(&self, hidden: Tensor<2>) -> ScoreOutputs {
        let n = hidden.dims()[0];
        ScoreOutputs {
            logits: self.distribution.forward(hidden.clone()),
            standardised: self.regression.forward(hidden).reshape([n]),
        }
    }
}

impl ScoreOutputs {
    /// Per answer: the expected score of the distribution and the regressed score, both on
    /// the 1..10 scale.
    pub fn scores(&self) -> Vec<(f64, f64)> {
        let p: Vec<f32> = softmax(self.logits.clone(), 1)
            .into_data()
            .iter::<f32>()
            .collect();
        let r: Vec<f32> = self
            .standardised
            .clone()
            .into_data()
            .iter::<f32>()
            .collect();
        p.chunks(SCORE_BINS)
            .zip(r)
            .map(|(p, r)| {
                let expected = p
                    .iter()
                    .enumerate()
                    .map(|(k, &p)| (k + 1) as f64 * f64::from(p))
                    .sum::<f64>();
                (expected, SCORE_MID + SCORE_HALF_RANGE * f64::from(r))
            })
            .collect()
    }
}

/// NIMA's loss per answer, `[N]`: the root mean square difference of the cumulative
/// distributions of `logits` `[N, K]` (after softmax) and `target` `[N, K]` (rows summing to
/// one), over the K bins.
pub fn emd_loss(logits: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let [n, k] = logits.dims();
    let device = logits.device();
    // Cumulative sums as a product with an upper-triangular matrix of ones: c[j] = sum_{i<=j}.
    let ones: Vec<f32> = (0..k * k)
        .map(|x| if x / k <= x % k { 1.0 } else { 0.0 })
        .collect();
    let triangle = Tensor::<2>::from_data(TensorData::new(ones, [k, k]), &device);
    let difference = softmax(logits, 1) - target;
    let cumulative = difference.matmul(triangle);
    // The epsilon keeps the square root's gradient finite at a perfect fit.
    (cumulative.powi_scalar(2).mean_dim(1).reshape([n]) + 1e-12).sqrt()
}
