//! A run's output directory. Every run records what produced it before doing any work:
//! `config.resolved.yaml` (the config after every layer and override) and `run.json` (command
//! line, seed, git commit and whether the tree had uncommitted changes, device, version, time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{ConfigError, to_yaml};

pub const RESOLVED_CONFIG: &str = "config.resolved.yaml";
pub const RUN_RECORD: &str = "run.json";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "{0} already holds a run ({RUN_RECORD}); choose another --output-dir or pass --overwrite"
    )]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot encode {RUN_RECORD}: {0}")]
    Json(#[from] serde_json::Error),
}

/// What `run.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub command: String,
    pub command_line: Vec<String>,
    pub seed: u64,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    pub device: String,
    pub calm_version: String,
    pub started_utc: String,
}

impl RunRecord {
    /// Describes the current process: its arguments, the code's git state and the time.
    pub fn current(command: &str, seed: u64, device: &str) -> Self {
        let (git_commit, git_dirty) = git_state();
        Self {
            command: command.to_string(),
            command_line: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            seed,
            git_commit,
            git_dirty,
            device: device.to_string(),
            calm_version: env!("CARGO_PKG_VERSION").to_string(),
            started_utc: utc_timestamp(SystemTime::now()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates (or, with `overwrite`, reuses) the directory, refusing to write over an
    /// earlier run by accident.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self, RunError> {
        if path.join(RUN_RECORD).exists() && !overwrite {
            return Err(RunError::Exists(path.to_path_buf()));
        }
        std::fs::create_dir_all(path).map_err(|source| RunError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Creates a new directory `<base>/<UTC time>` (`-2`, `-3`, ... appended when runs start
    /// in the same second); creation is atomic, so concurrent runs never share one.
    pub fn create_unique(base: &Path) -> Result<Self, RunError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunError::Io { path, source }
        };
        std::fs::create_dir_all(base).map_err(io(base))?;
        let stamp = utc_timestamp(SystemTime::now()).replace([':', '-'], "");
        for n in 1..=10_000 {
            let name = if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            };
            let path = base.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Err(RunError::Exists(base.join(stamp)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `config.resolved.yaml` and `run.json`.
    pub fn record<C: Serialize>(&self, config: &C, record: &RunRecord) -> Result<(), RunError> {
        self.write(RESOLVED_CONFIG, &to_yaml(config)?)?;
        self.write(RUN_RECORD, &serde_json::to_string_pretty(record)?)
    }

    /// Writes a file inside the run directory.
    pub fn write(&self, name: &str, contents: &str) -> Result<(), RunError> {
        let path = self.path.join(name);
        std::fs::write(&path, contents).map_err(|source| RunError::Io { path, source })
    }
}

/// The commit checked out, when the run starts, in the source tree this binary was built from,
/// and whether tracked files differ from it; `None` where git or that tree is not available
/// (a binary copied elsewhere).
fn git_state() -> (Option<String>, Option<bool>) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let dirty = commit
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
        .map(|s| !s.is_empty());
    (commit, dirty)
}

/// RFC 3339 UTC time to the second, e.g. `2026-11-22T00:31:05Z`.
pub fn utc_timestamp(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_known_dates() {
        let at = |s: u64| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_307_465), "2026-11-22T00:31:05Z");
    }
}
