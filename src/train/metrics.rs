//! `metrics.jsonl`, one JSON line per optimiser step, shared by the training loops: appended
//! as steps finish, read back for summaries, and cut back to a checkpoint's step when a killed
//! run resumes (the resumed run computes those steps again).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct MetricsError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn error(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |source| MetricsError {
        path: path.to_path_buf(),
        source,
    }
}

/// A line of `metrics.jsonl`: the 0-based step it records.
pub trait StepLine: Serialize + DeserializeOwned {
    fn step(&self) -> usize;
}

/// Appends `line` and flushes, so that a killed run keeps every finished step.
pub fn append<T: StepLine>(
    file: &mut std::fs::File,
    path: &Path,
    line: &T,
) -> Result<(), MetricsError> {
    let json = serde_json::to_string(line).map_err(|e| MetricsError {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    writeln!(file, "{json}").map_err(error(path))?;
    file.flush().map_err(error(path))
}

/// Every line of the file.
pub fn read<T: StepLine>(path: &Path) -> Result<Vec<T>, MetricsError> {
    let text = std::fs::read_to_string(path).map_err(error(path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| MetricsError {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })
        })
        .collect()
}

/// Drops the lines of steps from `step` on, which a resumed run computes again; a torn last
/// line (killed mid-write) is dropped too.
pub fn keep_before<T: StepLine>(path: &Path, step: usize) -> Result<(), MetricsError> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(error(path))?;
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<T>(l).is_ok_and(|m| m.step() < step))
        .map(|l| format!("{l}\n"))
        .collect();
    crate::io::atomic::write_atomic(path, kept.as_bytes()).map_err(|e| MetricsError {
        path: e.path,
        source: e.source,
    })
}
