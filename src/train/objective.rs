//! The pretraining objective on one batch: the weighted sum of the per-level ITC losses, the
//! attribute regressions and the margin ranking of originals above their degraded copies,
//! each also returned by name for logging.

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::losses::{attribute_regression, itc, margin_ranking};
use crate::model::pretrain::{LevelHeads, PretrainModel};

/// The weight of each loss (0 turns it off) and their hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    pub itc_low: f64,
    pub itc_middle: f64,
    pub itc_high: f64,
    pub attributes: f64,
    pub ranking: f64,
    /// ITC temperature (BLIP-2 learns it from 0.07).
    pub temperature: f64,
    /// How far an original's quality score must exceed its degraded copy's.
    pub margin: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            itc_low: 1.0,
            itc_middle: 1.0,
            itc_high: 1.0,
            attributes: 1.0,
            ranking: 1.0,
            temperature: 0.07,
            margin: 0.2,
        }
    }
}

/// One batch: N images (originals and degraded copies), their encoder hidden states, their
/// cues' embeddings per level, their standardised attributes, and which pairs to rank.
#[derive(Debug, Clone)]
pub struct PretrainBatch {
    /// One `[N, T_i, E_i]` per encoder depth.
    pub hidden_states: Vec<Tensor<3>>,
    /// `[N, text_dim]` each: the low, middle and high cues.
    pub cues: [Tensor<2>; 3],
    /// `[N, K_low]` and `[N, K_middle]`.
    pub low_attributes: Tensor<2>,
    pub middle_attributes: Tensor<2>,
    /// `(original, degraded)` row pairs.
    pub pairs: Vec<(usize, usize)>,
}

impl PretrainBatch {
    /// The same batch as constants of an autodiff graph (built without autodiff, e.g. on a
    /// loader thread).
    pub fn autodiff(self) -> Self {
        Self {
            hidden_states: self
                .hidden_states
                .into_iter()
                .map(|t| t.autodiff())
                .collect(),
            cues: self.cues.map(|t| t.autodiff()),
            low_attributes: self.low_attributes.autodiff(),
            middle_attributes: self.middle_attributes.autodiff(),
            pairs: self.pairs,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Losses {
    /// Unweighted, by name: `itc_low`, `itc_middle`, `itc_high`, `attributes`, `ranking`.
    pub named: Vec<(&'static str, Tensor<1>)>,
    /// The weighted sum, to backpropagate.
    pub total: Tensor<1>,
}

fn rows(t: &Tensor<1>, idx: &[usize]) -> Tensor<1> {
    let device = t.device();
    let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    let n = idx.len();
    t.clone().select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device),
    )
}

pub fn losses(model: &PretrainModel, batch: &PretrainBatch, config: &LossConfig) -> Losses {
    let out = model.forward(&batch.hidden_states);
    let mut named = Vec::new();
    let mut total: Option<Tensor<1>> = None;
    let mut add = |name: &'static str, weight: f64, loss: Tensor<1>| {
        if weight != 0.0 {
            let weighted = loss.clone() * weight;
            total = Some(match total.take() {
                Some(t) => t + weighted,
                None => weighted,
            });
        }
        named.push((name, loss));
    };
    let levels: [(&'static str, f64, &Option<LevelHeads>, usize); 3] = [
        ("itc_low", config.itc_low, &out.low, 0),
        ("itc_middle", config.itc_middle, &out.middle, 1),
        ("itc_high", config.itc_high, &out.high, 2),
    ];
    for (name, weight, heads, cue) in levels {
        if let Some(h) = heads {
            add(
                name,
                weight,
                itc(
                    h.text_queries.clone(),
                    batch.cues[cue].clone(),
                    config.temperature,
                ),
            );
        }
    }
    let mut attribute_terms = Vec::new();
    if let Some(p) = out.low.as_ref().and_then(|h| h.attributes.clone()) {
        attribute_terms.push(attribute_regression(p, batch.low_attributes.clone()));
    }
    if let Some(p) = out.middle.as_ref().and_then(|h| h.attributes.clone()) {
        attribute_terms.push(attribute_regression(p, batch.middle_attributes.clone()));
    }
    if !attribute_terms.is_empty() {
        let n = attribute_terms.len() as f64;
        let sum = attribute_terms
            .into_iter()
            .reduce(|a, b| a + b)
            .map(|s| s / n);
        if let Some(sum) = sum {
            add("attributes", config.attributes, sum);
        }
    }
    if !batch.pairs.is_empty() {
        let originals: Vec<usize> = batch.pairs.iter().map(|p| p.0).collect();
        let degraded: Vec<usize> = batch.pairs.iter().map(|p| p.1).collect();
        add(
            "ranking",
            config.ranking,
            margin_ranking(
                rows(&out.quality, &originals),
                rows(&out.quality, &degraded),
                config.margin,
            ),
        );
    }
    let total = total.unwrap_or_else(|| out.quality.clone().sum() * 0.0);
    Losses { named, total }
}
