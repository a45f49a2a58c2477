//! AVA-Captions (Ghosal et al., ICCV-W 2019), distributed in the Karpathy/COCO captioning JSON
//! layout: `{"images": [{"filename", "split", "sentences": [{"raw", "tokens"}], ...}]}`. Fields
//! other than those read here (`imgid`, `sentids`, `filepath`, ...) are ignored.

use std::path::Path;

use serde::Deserialize;

use crate::data::DataError;

/// Karpathy-style split names; `restval` is validation data moved into training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionSplit {
    Train,
    Val,
    Test,
    Restval,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionedImage {
    pub filename: String,
    pub split: CaptionSplit,
    /// The raw reference comments, in file order.
    pub captions: Vec<String>,
}

#[derive(Deserialize)]
struct File {
    images: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    filename: String,
    split: CaptionSplit,
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    raw: String,
}

/// Reads the JSON; a syntax or schema error names the file, line and column.
pub fn read_ava_captions(path: &Path) -> Result<Vec<CaptionedImage>, DataError> {
    let file: File = super::read_json(path)?;
    Ok(file
        .images
        .into_iter()
        .map(|e| CaptionedImage {
            filename: e.filename,
            split: e.split,
            captions: e.sentences.into_iter().map(|s| s.raw).collect(),
        })
        .collect())
}
