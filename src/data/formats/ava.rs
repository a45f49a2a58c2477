//! AVA (Murray et al., CVPR 2012). `AVA.txt` has one image a line, 15 integers separated by
//! spaces: index, image id, the vote counts for scores 1..10, two semantic tag ids (0 = none)
//! and the challenge id. The official splits are lists of image ids, one a line.

use std::path::{Path, PathBuf};

use crate::data::DataError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvaRecord {
    pub index: u32,
    pub image_id: u64,
    /// Votes for the scores 1..=10.
    pub votes: [u32; 10],
    pub tags: [u32; 2],
    pub challenge: u32,
}

impl AvaRecord {
    pub fn num_votes(&self) -> u64 {
        self.votes.iter().map(|&v| u64::from(v)).sum()
    }

    /// Mean opinion score on 1..10; `None` for an image nobody voted on.
    pub fn mean_score(&self) -> Option<f64> {
        let n = self.num_votes();
        (n > 0).then(|| {
            let total: u64 = (1u64..)
                .zip(self.votes)
                .map(|(s, v)| s * u64::from(v))
                .sum();
            total as f64 / n as f64
        })
    }

    /// The vote distribution over scores 1..=10, summing to one.
    pub fn distribution(&self) -> Option<[f64; 10]> {
        let n = self.num_votes();
        (n > 0).then(|| self.votes.map(|v| f64::from(v) / n as f64))
    }

    /// `{images}/{image_id}.jpg`, the layout of the AVA download.
    pub fn image_path(&self, images: &Path) -> PathBuf {
        images.join(format!("{}.jpg", self.image_id))
    }
}

/// Reads `AVA.txt`. A line that is not 15 non-negative integers is an error naming the line.
pub fn read_ava_txt(path: &Path) -> Result<Vec<AvaRecord>, DataError> {
    let text = super::read_text(path)?;
    let mut records = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |message: String| DataError::Malformed {
            path: path.to_path_buf(),
            line: number + 1,
            message,
        };
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|f| {
                f.parse::<u64>()
                    .map_err(|_| malformed(format!("`{f}` is not a non-negative integer")))
            })
            .collect::<Result<_, _>>()?;
        if fields.len() != 15 {
            return Err(malformed(format!(
                "expected 15 fields (index, image id, 10 vote counts, 2 tags, challenge), found {}",
                fields.len()
            )));
        }
        let small = |i: usize| {
            u32::try_from(fields[i]).map_err(|_| malformed(format!("field {} is too large", i + 1)))
        };
        let mut votes = [0u32; 10];
        for (k, vote) in votes.iter_mut().enumerate() {
            *vote = small(2 + k)?;
        }
        records.push(AvaRecord {
            index: small(0)?,
            image_id: fields[1],
            votes,
            tags: [small(12)?, small(13)?],
            challenge: small(14)?,
        });
    }
    Ok(records)
}

/// Reads an image-id list (the official `*.jpgl` split files): one id a line, blank lines
/// ignored; a `.jpg` suffix is tolerated.
pub fn read_id_list(path: &Path) -> Result<Vec<u64>, DataError> {
    let text = super::read_text(path)?;
    let mut ids = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let field = line.trim();
        if field.is_empty() {
            continue;
        }
        let id = field.strip_suffix(".jpg").unwrap_or(field);
        ids.push(id.parse::<u64>().map_err(|_| DataError::Malformed {
            path: path.to_path_buf(),
            line: number + 1,
            message: format!("`{field}` is not an image id"),
        })?);
    }
    Ok(ids)
}
