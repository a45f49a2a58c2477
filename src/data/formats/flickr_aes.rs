//! FLICKR-AES (Ren et al., ICCV 2017): per-worker ratings in
//! `FLICKR-AES_image_labeled_by_each_worker.csv`, a header then `worker, imagePair, score`
//! rows with scores 1..5. Header names are matched loosely (case, spaces, `image`/`imagePair`)
//! because copies of the file in circulation differ in them.

use std::path::Path;

use crate::data::DataError;

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRating {
    pub worker: String,
    pub image: String,
    /// 1..=5.
    pub score: f32,
}

/// Reads the per-worker CSV. A row with a missing column or a score outside 1..5 is an error
/// naming the file and line.
pub fn read_flickr_aes(path: &Path) -> Result<Vec<WorkerRating>, DataError> {
    let text = super::read_text(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| malformed(path, 1, e.to_string()))?
        .clone();
    let find = |names: &[&str]| {
        headers.iter().position(|h| {
            let h = h.to_ascii_lowercase().replace([' ', '_'], "");
            names.contains(&h.as_str())
        })
    };
    let columns = (
        find(&["worker", "workerid"]),
        find(&["image", "imagepair", "imageid", "imagename"]),
        find(&["score", "rating"]),
    );
    let (Some(worker), Some(image), Some(score)) = columns else {
        return Err(malformed(
            path,
            1,
            format!(
                "header must name worker, image (or imagePair) and score columns; found {headers:?}"
            ),
        ));
    };
    let mut ratings = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            malformed(path, line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let field = |i: usize, name: &str| {
            record
                .get(i)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| malformed(path, line, format!("missing {name}")))
        };
        let raw = field(score, "score")?;
        let value: f32 = raw
            .parse()
            .map_err(|_| malformed(path, line, format!("score `{raw}` is not a number")))?;
        if !(1.0..=5.0).contains(&value) {
            return Err(malformed(
                path,
                line,
                format!("score {value} is outside 1..5"),
            ));
        }
        ratings.push(WorkerRating {
            worker: field(worker, "worker")?.to_string(),
            image: field(image, "image")?.to_string(),
            score: value,
        });
    }
    Ok(ratings)
}

fn malformed(path: &Path, line: usize, message: String) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        line,
        message,
    }
}
