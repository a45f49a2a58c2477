//! What `evaluate task` runs (`runners::protocols` runs it): the `eval:` section, one protocol
//! of CALM's evaluation (AAAI 2025, section 4) per entry.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Invalid, tagged};
use crate::data::{AvaSource, CaptionSplit};

/// The `eval:` section: which protocol `evaluate task` runs, on which data.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// `null` until an eval config names one (`configs/eval/*.yaml`).
    pub protocol: Option<Protocol>,
    /// At most this many test images (AVA, AVA-Captions; the first in file order) or query
    /// photos per rater and draw (FLICKR-AES); `null`: all. For quick checks; the paper's
    /// numbers use all.
    pub max_images: Option<usize>,
}

impl EvalConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_images == Some(0) {
            return Err(Invalid::new("eval.max_images", "must be at least 1"));
        }
        if let Some(Protocol::FlickrAes(f)) = &self.protocol {
            if f.shots.is_empty() || f.shots.contains(&0) {
                return Err(Invalid::new(
                    "eval.protocol.shots",
                    "needs at least one k, each at least 1",
                ));
            }
            if f.seeds.is_empty() {
                return Err(Invalid::new(
                    "eval.protocol.seeds",
                    "needs at least one seed",
                ));
            }
            if f.min_queries < 3 {
                return Err(Invalid::new(
                    "eval.protocol.min_queries",
                    "must be at least 3 (SRCC over fewer is not informative)",
                ));
            }
        }
        Ok(())
    }
}

/// The protocols; `kind` selects one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// Score every image of the split list against its mean opinion score.
    AvaScoring(AvaSource),
    /// Comment on every image of one split against its reference comments.
    AvaCaptions(AvaCaptionsProtocol),
    /// k-shot personalized assessment per rater.
    FlickrAes(FlickrAesProtocol),
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const KINDS: &[&str] = &["ava_scoring", "ava_captions", "flickr_aes"];
        let (kind, rest) = tagged::split(deserializer, KINDS)?;
        match kind {
            0 => tagged::fields(rest).map(Self::AvaScoring),
            1 => tagged::fields(rest).map(Self::AvaCaptions),
            _ => tagged::fields(rest).map(Self::FlickrAes),
        }
    }
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Self::AvaScoring(_) => "ava_scoring",
            Self::AvaCaptions(_) => "ava_captions",
            Self::FlickrAes(_) => "flickr_aes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvaCaptionsProtocol {
    pub json: PathBuf,
    pub images: PathBuf,
    pub split: CaptionSplit,
}

impl Default for AvaCaptionsProtocol {
    fn default() -> Self {
        Self {
            json: PathBuf::new(),
            images: PathBuf::new(),
            split: CaptionSplit::Test,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlickrAesProtocol {
    pub csv: PathBuf,
    pub images: PathBuf,
    /// The k of each evaluation (CALM reports 10 and 100).
    pub shots: Vec<usize>,
    /// One draw of each rater's k examples per seed; results are averaged over them.
    pub seeds: Vec<u64>,
    /// The test raters (FLICKR-AES's 37); `null`: every rater in the file.
    pub workers: Option<Vec<String>>,
    /// A rater is evaluated at k only with at least this many photos left to score.
    pub min_queries: usize,
}

impl Default for FlickrAesProtocol {
    fn default() -> Self {
        Self {
            csv: PathBuf::new(),
            images: PathBuf::new(),
            shots: vec![10, 100],
            seeds: (0..5).collect(),
            workers: None,
            min_queries: 10,
        }
    }
}
