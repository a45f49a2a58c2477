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
impl PairwiseAccuracy {
    /// No pairs: accuracy NaN.
    pub fn empty() -> Self {
        Self {
            pairwise_accuracy: f64::NAN,
            pairs: 0,
            per_kind: BTreeMap::new(),
        }
    }
}

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

/// Which copies `evaluate degradations` makes of each photo: every configured degradation
/// kind (`pretrain.pairs.degradations`) at each of these severities.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DegradationEvalConfig {
    pub severities: Vec<f32>,
}

impl Default for DegradationEvalConfig {
    /// A moderate and the strongest severity of the training range.
    fn default() -> Self {
        Self {
            severities: vec![0.5, 1.0],
        }
    }
}

/// What `evaluate degradations` prints: the trained and the randomly initialised model's
/// pairwise accuracy on the same pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DegradationReport {
    pub pairwise_accuracy: f64,
    pub random_init_pairwise_accuracy: f64,
    pub per_kind: BTreeMap<String, f64>,
    pub random_init_per_kind: BTreeMap<String, f64>,
    pub pairs: usize,
    pub photos: Vec<String>,
    pub severities: Vec<f32>,
    /// Photos left out because they could not be read, with why (`data.loader.bad_images:
    /// skip`); absent when none was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl DegradationReport {
    /// `None` without pairs.
    pub fn new(
        trained: &[ScoredPair],
        random_init: &[ScoredPair],
        photos: Vec<String>,
        severities: Vec<f32>,
    ) -> Option<Self> {
        let t = pairwise_accuracy(trained)?;
        let r = pairwise_accuracy(random_init)?;
        Some(Self {
            pairwise_accuracy: t.pairwise_accuracy,
            random_init_pairwise_accuracy: r.pairwise_accuracy,
            per_kind: t.per_kind,
            random_init_per_kind: r.per_kind,
            pairs: t.pairs,
            photos,
            severities,
            skipped: Vec::new(),
        })
    }
}

/// The evaluation images: for each photo, its centre crop at the encoder's size and one
/// degraded copy per kind and severity, each copy's randomness fixed by `seed` and its place.
#[derive(Debug, Clone)]
pub struct EvalPairs {
    /// The originals, one per photo.
    pub originals: Vec<image::RgbImage>,
    /// `(photo index, kind, copy)`.
    pub copies: Vec<(usize, crate::data::degrade::Degradation, image::RgbImage)>,
}

impl EvalPairs {
    /// An image that cannot be cropped or degraded is an error with its index.
    pub fn new(
        photos: &[image::RgbImage],
        transform: &crate::data::Transform,
        kinds: &[crate::data::degrade::Degradation],
        severities: &[f32],
        seed: u64,
    ) -> Result<Self, (usize, crate::data::image::ImageError)> {
        let centre = transform.centred();
        // A centre crop draws nothing from the generator.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let mut originals = Vec::with_capacity(photos.len());
        let mut copies = Vec::new();
        for (i, photo) in photos.iter().enumerate() {
            let crop = centre.crop(photo, &mut rng).map_err(|e| (i, e))?;
            for (k, &kind) in kinds.iter().enumerate() {
                for (s, &severity) in severities.iter().enumerate() {
                    let place = ((i * kinds.len() + k) * severities.len() + s) as u64;
                    let copy_seed = seed ^ place.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let copy = kind.apply(&crop, severity, copy_seed).map_err(|e| (i, e))?;
                    copies.push((i, kind, copy));
                }
            }
            originals.push(crop);
        }
        Ok(Self { originals, copies })
    }

    /// Pairs the scores of the originals and of the copies (in `copies` order).
    pub fn score(&self, originals: &[f32], copies: &[f32]) -> Vec<ScoredPair> {
        self.copies
            .iter()
            .zip(copies)
            .map(|((i, kind, _), &degraded)| ScoredPair {
                kind: kind.name(),
                original: originals[*i],
                degraded,
            })
            .collect()
    }
}
