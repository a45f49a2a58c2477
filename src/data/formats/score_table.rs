//! Tables of per-image scores that `evaluate scores` compares: predictions and ground truth as
//! CSV with a header (`image,score`, or `image,p1,...,p10` for a 10-bin distribution over the
//! scores 1..10, or both), or AVA's own `AVA.txt` as ground truth. `infer score`'s CSV
//! (`image,score,score_numeric,score_levels`) is such a table; extra columns are ignored.
//!
//! Images are matched by name: the file name without its folders and extension, so that
//! `photos/953619.jpg`, `953619.jpg` and AVA's id `953619` are the same image.

use std::collections::BTreeMap;
use std::path::Path;

use super::ava::read_ava_txt;
use crate::data::DataError;

/// One image's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreEntry {
    /// The image as the file wrote it.
    pub image: String,
    /// The score, or the distribution's mean when only a distribution is given.
    pub score: f64,
    /// Probabilities of the scores 1..10, summing to one.
    pub distribution: Option<[f64; 10]>,
}

/// Entries by matching key (`image_key`), in key order.
pub type ScoreTable = BTreeMap<String, ScoreEntry>;

/// The name two tables match an image by.
pub fn image_key(image: &str) -> String {
    let name = image.rsplit(['/', '\\']).next().unwrap_or(image);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem.to_string(),
        _ => name.to_string(),
    }
}

/// Reads a CSV score table, or `AVA.txt` (recognised by its 15 integer columns and no
/// header). Two rows naming the same image are an error: which one counts would be a guess.
pub fn read_score_table(path: &Path) -> Result<ScoreTable, DataError> {
    let text = super::read_text(path)?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let fields: Vec<&str> = first.split_whitespace().collect();
    if fields.len() == 15 && fields.iter().all(|f| f.parse::<u64>().is_ok()) {
        return ava_table(path);
    }
    csv_table(path, &text)
}

fn ava_table(path: &Path) -> Result<ScoreTable, DataError> {
    let mut table = ScoreTable::new();
    for record in read_ava_txt(path)? {
        // An image nobody voted on has no ground truth.
        let (Some(score), Some(distribution)) = (record.mean_score(), record.distribution()) else {
            continue;
        };
        let image = record.image_id.to_string();
        let entry = ScoreEntry {
            image: image.clone(),
            score,
            distribution: Some(distribution),
        };
        if table.insert(image_key(&image), entry).is_some() {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                message: format!("image {image} is listed twice"),
            });
        }
    }
    Ok(table)
}

fn csv_table(path: &Path, text: &str) -> Result<ScoreTable, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let invalid = |message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let header = reader
        .headers()
        .map_err(|e| invalid(format!("reading the header: {e}")))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let image_col = column("image").ok_or_else(|| {
        invalid(format!(
            "the header {:?} has no `image` column (expected `image,score` or `image,p1,...,p10`)",
            header.iter().collect::<Vec<_>>()
        ))
    })?;
    let score_col = column("score");
    let bins: Vec<usize> = (1..=10).filter_map(|k| column(&format!("p{k}"))).collect();
    if !(bins.is_empty() || bins.len() == 10) {
        return Err(invalid(format!(
            "has {} of the ten columns p1..p10",
            bins.len()
        )));
    }
    if score_col.is_none() && bins.is_empty() {
        return Err(invalid(
            "has neither a `score` column nor the columns p1..p10".into(),
        ));
    }
    let mut table = ScoreTable::new();
    for (i, record) in reader.records().enumerate() {
        // The header is line 1.
        let line = i + 2;
        let malformed = |message: String| DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message,
        };
        let record = record.map_err(|e| malformed(e.to_string()))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        let number = |c: usize| -> Result<f64, DataError> {
            let f = field(c);
            match f.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(malformed(format!(
                    "`{f}` in column `{}` is not a finite number",
                    header.get(c).unwrap_or("?")
                ))),
            }
        };
        let image = field(image_col).to_string();
        if image.is_empty() {
            return Err(malformed("empty image name".into()));
        }
        let distribution = if bins.is_empty() {
            None
        } else {
            let mut p = [0.0; 10];
            for (slot, &c) in p.iter_mut().zip(&bins) {
                *slot = number(c)?;
            }
            let total: f64 = p.iter().sum();
            if p.iter().any(|&x| x < 0.0) || total <= 0.0 {
                return Err(malformed(
                    "p1..p10 must be non-negative with a positive sum".into(),
                ));
            }
            Some(p.map(|x| x / total))
        };
        let score = match score_col {
            Some(c) => number(c)?,
            None => distribution
                .as_ref()
                .map(distribution_mean)
                .ok_or_else(|| malformed("no score and no distribution".into()))?,
        };
        let key = image_key(&image);
        let entry = ScoreEntry {
            image,
            score,
            distribution,
        };
        if let Some(earlier) = table.insert(key, entry) {
            return Err(malformed(format!(
                "image `{}` appears twice (matched by its name without folders and extension)",
                earlier.image
            )));
        }
    }
    Ok(table)
}

/// The expected score of a distribution over 1..10.
pub fn distribution_mean(p: &[f64; 10]) -> f64 {
    p.iter().zip(1..=10).map(|(p, k)| p * f64::from(k)).sum()
}

/// Pairs of entries matched by key, and the keys found on one side only.
pub struct Matched<'a> {
    pub pairs: Vec<(&'a ScoreEntry, &'a ScoreEntry)>,
    pub only_pred: Vec<&'a str>,
    pub only_gt: Vec<&'a str>,
}

pub fn match_tables<'a>(pred: &'a ScoreTable, gt: &'a ScoreTable) -> Matched<'a> {
    let mut m = Matched {
        pairs: Vec::new(),
        only_pred: Vec::new(),
        only_gt: Vec::new(),
    };
    for (key, p) in pred {
        match gt.get(key) {
            Some(g) => m.pairs.push((p, g)),
            None => m.only_pred.push(&p.image),
        }
    }
    m.only_gt = gt
        .iter()
        .filter(|(k, _)| !pred.contains_key(*k))
        .map(|(_, g)| g.image.as_str())
        .collect();
    m
}
