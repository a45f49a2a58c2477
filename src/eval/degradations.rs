//! How well a quality score tells originals from their degraded copies: the share of
//! (original, copy) pairs in which the original scores strictly higher, overall and per kind
//! of degradation. A tie counts as a miss, so a constant score gets 0, not 0.5.

use std::collections::BTreeMap;

use serde::Serialize;

/// One scored pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPair {
    /// The degradation's name (`Degradation::name`).
    pub kind: &'static str,
    pub original: f32,
    pub degraded: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairwiseAccuracy {
    pub pairwise_accuracy: f64,
    pub pairs: usize,
    /// Accuracy per degradation kind.
    pub per_kind: BTreeMap<String, f64>,
}

/// `None` without pairs.
pub fn pairwise_accuracy(pairs: &[ScoredPair]) -> Option<PairwiseAccuracy> {
    if pairs.is_empty() {
        return None;
    }
    let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut right = 0;
    for p in pairs {
        let ok = p.original > p.degraded;
        right += usize::from(ok);
        let entry = by_kind.entry(p.kind.to_string()).or_default();
        entry.0 += usize::from(ok);
        entry.1 += 1;
    }
    Some(PairwiseAccuracy {
        pairwise_accuracy: right as f64 / pairs.len() as f64,
        pairs: pairs.len(),
        per_kind: by_kind
            .into_iter()
            .map(|(k, (r, n))| (k, r as f64 / n as f64))
            .collect(),
    })
}
