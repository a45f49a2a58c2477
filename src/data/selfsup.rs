//! One self-supervised training pair from an unlabeled photo (docs/design.md §2): the
//! original and a degraded copy (a kind and severity drawn from a seed), each with its
//! standardised pseudo-attributes and its three text cues. Pretraining ranks the original
//! above the copy, regresses the attributes and aligns each level with its cue.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::attributes::{low_attributes, middle_attributes};
use super::cues::{Cues, cues};
use super::degrade::{Degradation, SplitMix};
use super::image::ImageError;

/// How an attribute's raw value is mapped before centring and scaling.
#[derive(Debug, Clone, Copy)]
enum Warp {
    Linear,
    /// `log10(value)`, for the heavy-tailed, positive measures.
    Log10,
    /// `log10(1 + value)`, for blockiness: a ratio minus 1 that reaches the hundreds when a
    /// heavily compressed copy has flat blocks (steps inside a block near zero).
    Log10OnePlus,
}

/// How each attribute is brought to a unit scale: `(warp(value) - centre) / scale`. Centre
/// and scale are the median and the interquartile range / 1.35 (a robust standard
/// deviation) over the sample photos at full size. Blockiness depends on resolution: it is
/// centred on the photos resized to 224 px, where degradations are applied, with a scale
/// that puts a copy at JPEG severity 0.3 about one unit above them (median over the photos).
const LOW_SCALES: [(Warp, f32, f32); 8] = [
    (Warp::Linear, 0.45, 0.10),       // exposure
    (Warp::Linear, 0.20, 0.08),       // contrast
    (Warp::Linear, 0.40, 0.33),       // saturation
    (Warp::Linear, 0.16, 0.15),       // colourfulness
    (Warp::Log10, -2.31, 0.58),       // sharpness
    (Warp::Log10, -2.35, 0.37),       // noise
    (Warp::Linear, 0.05, 0.18),       // colour temperature
    (Warp::Log10OnePlus, 0.005, 0.2), // blockiness at 224 px
];
const MIDDLE_SCALES: [(Warp, f32, f32); 6] = [
    (Warp::Linear, 0.135, 0.02), // thirds distance
    (Warp::Linear, 0.87, 0.13),  // symmetry
    (Warp::Linear, 0.0, 2.0),    // horizon tilt (degrees)
    (Warp::Linear, 0.54, 0.23),  // simplicity
    (Warp::Linear, 0.24, 0.62),  // depth of field
    (Warp::Linear, 0.28, 0.044), // border energy
];

/// Standardised targets are clamped to this many robust standard deviations. Without it a
/// few copies (a flat photo compressed hard, the horizon angle of a blurred photo measured
/// on noise) reach tens to thousands of units, and their squared errors made the
/// `attributes` loss of single steps hundreds of times its median (issue #20). Within the
/// bound the map is unchanged, so every other target keeps its value.
pub const TARGET_BOUND: f32 = 5.0;

fn standardise(values: Vec<f32>, scales: &[(Warp, f32, f32)]) -> Vec<f32> {
    values
        .into_iter()
        .zip(scales)
        .map(|(v, &(warp, centre, scale))| {
            let v = match warp {
                Warp::Linear => v,
                Warp::Log10 => v.max(1e-6).log10(),
                Warp::Log10OnePlus => (1.0 + v).max(1e-6).log10(),
            };
            let z = (v - centre) / scale;
            // The measures guard their divisions, so NaN is not expected; should one come, it
            // lands at a bound (the log warps) or the centre, never in the loss.
            if z.is_nan() {
                0.0
            } else {
                z.clamp(-TARGET_BOUND, TARGET_BOUND)
            }
        })
        .collect()
}

/// Which degradations pretraining draws from, and how hard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairConfig {
    pub degradations: Vec<Degradation>,
    pub min_severity: f32,
    pub max_severity: f32,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self {
            degradations: Degradation::ALL.to_vec(),
            min_severity: 0.3,
            max_severity: 1.0,
        }
    }
}

/// One image of a pair with its targets.
#[derive(Debug, Clone)]
pub struct Example {
    pub image: RgbImage,
    /// `None` for the original.
    pub degradation: Option<(Degradation, f32)>,
    pub cues: Cues,
    /// Standardised, in the order of `LOW_NAMES` / `MIDDLE_NAMES`.
    pub low: Vec<f32>,
    pub middle: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PairError {
    #[error("no degradations configured")]
    NoDegradations,
    #[error(transparent)]
    Image(#[from] ImageError),
}

fn example(
    image: RgbImage,
    degradation: Option<(Degradation, f32)>,
    caption: Option<&str>,
    seed: u64,
) -> Example {
    let low = low_attributes(&image);
    let middle = middle_attributes(&image);
    Example {
        cues: cues(&low, &middle, degradation.map(|d| d.0), caption, seed),
        low: standardise(low.to_vec(), &LOW_SCALES),
        middle: standardise(middle.to_vec(), &MIDDLE_SCALES),
        degradation,
        image,
    }
}

/// The original and one degraded copy of `image`, all choices drawn from `seed`.
pub fn make_pair(
    image: &RgbImage,
    caption: Option<&str>,
    config: &PairConfig,
    seed: u64,
) -> Result<(Example, Example), PairError> {
    if config.degradations.is_empty() {
        return Err(PairError::NoDegradations);
    }
    let mut rng = SplitMix(seed);
    let kind = config.degradations[(rng.next() % config.degradations.len() as u64) as usize];
    let t = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
    let severity = config.min_severity + t * (config.max_severity - config.min_severity);
    let copy = kind.apply(image, severity, rng.next())?;
    let cue_seed = rng.next();
    Ok((
        example(image.clone(), None, caption, cue_seed),
        example(copy, Some((kind, severity)), caption, cue_seed),
    ))
}
