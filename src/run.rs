//! A run's output directory. Every run records what produced it before doing any work:
//! `config.resolved.yaml` (the config after every layer and override) and `run.json` (command
//! line, seed, git commit and whether the tree had uncommitted changes, device, version, time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{ConfigError, to_yaml};

/// Where a command makes its run directory when not given one (`runs/<command>`), and where
/// `finetune` looks for, or makes, the pretraining run it starts from.
pub fn default_runs(command: &str) -> PathBuf {
    Path::new("runs").join(command)
}

/// Every file name of a run directory, in one place: the training loop, the commands that
/// read runs and `sweep` all find a run's files through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

impl RunLayout {
    /// The config after every layer and override.
    pub const RESOLVED_CONFIG: &str = "config.resolved.yaml";
    /// Command line, seed, git state, device, version, time (`RunRecord`).
    pub const RUN_RECORD: &str = "run.json";
    /// Held locked by the process that writes a run (`RunLock`).
    pub const LOCK: &str = "run.lock";
    /// One JSON line per optimiser step.
    pub const METRICS: &str = "metrics.jsonl";
    /// TensorBoard event files.
    pub const EVENTS: &str = "events";
    /// The trained weights when the run finished.
    pub const FINAL_MODEL: &str = "model.safetensors";
    pub const SUMMARY: &str = "summary.json";
    /// Copies of the photos a pretraining run held out.
    pub const HELD_OUT: &str = "held_out";
    /// The photos a pretraining run trains on and holds out, recorded when it starts.
    pub const SPLIT: &str = "split.json";
    /// Where a fine-tuning run records the pretraining run it started from.
    pub const PRETRAINED: &str = "pretrained.json";
    /// `checkpoints/step-NNNNNNNN/` folders and the `latest` pointer.
    pub const CHECKPOINTS: &str = "checkpoints";
    /// What an `evaluate` run measured.
    pub const EVAL_METRICS: &str = "metrics.json";

    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn resolved_config(&self) -> PathBuf {
        self.root.join(Self::RESOLVED_CONFIG)
    }

    pub fn run_record(&self) -> PathBuf {
        self.root.join(Self::RUN_RECORD)
    }

    pub fn metrics(&self) -> PathBuf {
        self.root.join(Self::METRICS)
    }

    pub fn events(&self) -> PathBuf {
        self.root.join(Self::EVENTS)
    }

    pub fn final_model(&self) -> PathBuf {
        self.root.join(Self::FINAL_MODEL)
    }

    pub fn summary(&self) -> PathBuf {
        self.root.join(Self::SUMMARY)
    }

    pub fn held_out(&self) -> PathBuf {
        self.root.join(Self::HELD_OUT)
    }

    pub fn split(&self) -> PathBuf {
        self.root.join(Self::SPLIT)
    }

    pub fn pretrained(&self) -> PathBuf {
        self.root.join(Self::PRETRAINED)
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(Self::CHECKPOINTS)
    }
}

// Short names for the messages and helpers below.
const RESOLVED_CONFIG: &str = RunLayout::RESOLVED_CONFIG;
const RUN_RECORD: &str = RunLayout::RUN_RECORD;
const LOCK: &str = RunLayout::LOCK;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "{0} already holds a run ({RUN_RECORD}); choose another --output-dir or pass --overwrite"
    )]
    Exists(PathBuf),
    #[error(
        "{0} holds files but no run ({RUN_RECORD}); --overwrite only empties a run directory, so choose another --output-dir"
    )]
    NotARun(PathBuf),
    #[error("{output} overlaps {input}, which this command reads; choose another --output-dir")]
    Overlap { output: PathBuf, input: PathBuf },
    #[error("{0} is in use by another process ({LOCK} is locked); wait for it to end")]
    InUse(PathBuf),
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
    /// Creates the directory, refusing to write over an earlier run by accident. With
    /// `overwrite`, an earlier run there is deleted first, every file of it: a new run never
    /// shares its directory with the old one's metrics, events, checkpoints or held-out
    /// photos. A directory that holds other files is never emptied.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self, RunError> {
        if holds_run(path) {
            if !overwrite {
                return Err(RunError::Exists(path.to_path_buf()));
            }
            // Never from under a process still writing the run.
            let lock = RunLock::acquire(path)?;
            clear(path, &[LOCK])?;
            drop(lock);
        } else if overwrite && has_entries(path) {
            return Err(RunError::NotARun(path.to_path_buf()));
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

    /// Writes a file inside the run directory, atomically: a killed process leaves the old
    /// file or the new one, never a torn one.
    pub fn write(&self, name: &str, contents: &str) -> Result<(), RunError> {
        crate::io::atomic::write_atomic(&self.path.join(name), contents.as_bytes()).map_err(|e| {
            RunError::Io {
                path: e.path,
                source: e.source,
            }
        })
    }
}

/// Whether `dir` holds a run (or an evaluation) of ours: what `--overwrite` may delete.
pub fn holds_run(dir: &Path) -> bool {
    dir.join(RUN_RECORD).is_file()
}

/// The command `run.json` says made the run in `dir` (`pretrain`, `finetune`, `evaluate`).
pub fn recorded_command(dir: &Path) -> Option<String> {
    let text =
        crate::files::read_string(&dir.join(RUN_RECORD), crate::files::MAX_CONFIG_BYTES).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    record.get("command")?.as_str().map(str::to_string)
}

/// Refuses an output directory that is or holds `input`, something the command reads:
/// `--overwrite` would delete it before it is read, and the run's files would land among it.
/// An output inside a checkpoint's run (`--output-dir RUN/eval/ava`) is allowed: clearing it
/// touches nothing the command reads.
pub fn check_apart(output: &Path, input: &Path) -> Result<(), RunError> {
    check_overlap(output, input, false)
}

/// Like [`check_apart`], and also refuses an output inside `input`: for data folders, whose
/// scans would otherwise pick up the run's own files (held-out copies, plots).
pub fn check_outside(output: &Path, input: &Path) -> Result<(), RunError> {
    check_overlap(output, input, true)
}

fn check_overlap(output: &Path, input: &Path, nor_inside: bool) -> Result<(), RunError> {
    let (Ok(out), Ok(inp)) = (absolute_existing(output), absolute_existing(input)) else {
        return Ok(());
    };
    if inp.starts_with(&out) || (nor_inside && out.starts_with(&inp)) {
        return Err(RunError::Overlap {
            output: output.to_path_buf(),
            input: input.to_path_buf(),
        });
    }
    Ok(())
}

/// `path` made absolute with links resolved, as far as it exists (an output directory may not
/// exist yet).
fn absolute_existing(path: &Path) -> std::io::Result<PathBuf> {
    let mut existing = std::path::absolute(path)?;
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = existing.canonicalize()?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}

/// An exclusive lock on a run directory (`run.lock`, `flock`), held while a process writes the
/// run: a second `--resume` of the same run, or an `--overwrite` of it, is refused instead of
/// deleting the first one's files mid-write. The kernel releases it when the process ends,
/// however it ends.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(dir: &Path) -> Result<Self, RunError> {
        let path = dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| RunError::Io {
                path: path.clone(),
                source,
            })?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: the descriptor is open for the lifetime of `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                return Err(RunError::InUse(dir.to_path_buf()));
            }
        }
        Ok(Self { _file: file })
    }
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Deletes everything inside `dir` but the entries named in `keep` (a sweep keeps its log of
/// every attempt). A link is removed, never followed.
pub fn clear(dir: &Path, keep: &[&str]) -> Result<(), RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Io { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io(&path))?.is_dir();
        if is_dir {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Deletes what a killed process may leave in a folder of a run: the temporary files and
/// folders (`.NAME.PID.tmp`, `NAME.PID-N.tmp`) of writes it did not finish. One process writes a run at a time,
/// so any such entry is debris when a run starts or resumes.
pub fn remove_debris(dir: &Path) -> Result<usize, RunError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !is_debris(&name) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let result = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|source| RunError::Io { path, source })?;
        removed += 1;
    }
    Ok(removed)
}

/// A scratch name of an atomic write: ours (`.name.PID.tmp`, `io::atomic`), Burn's, where a
/// safetensors file is streamed (`name.PID-N.tmp`), or the safetensors crate's own file that
/// it writes the bytes into before renaming it onto Burn's (tempfile's `.tmpXXXXXX`).
fn is_debris(name: &str) -> bool {
    if let Some(random) = name.strip_prefix(".tmp")
        && random.len() == 6
        && random.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return true;
    }
    let Some(stem) = name.strip_suffix(".tmp") else {
        return false;
    };
    if name.starts_with('.') {
        return true;
    }
    stem.rsplit_once('.').is_some_and(|(_, tag)| {
        tag.split_once('-').is_some_and(|(pid, n)| {
            !pid.is_empty()
                && !n.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && n.bytes().all(|b| b.is_ascii_digit())
        })
    })
}

/// The commit checked out, when the run starts, in the source tree this binary was built from,
/// and whether tracked files differ from it; `None` where git or that tree is not available
/// (a binary copied elsewhere).
fn git_state() -> (Option<String>, Option<bool>) {
    git_state_of(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// `git_state` of the tree at `dir`. Read-only: `--no-optional-locks` keeps `git status` from
/// refreshing the index, which would take `.git/index.lock` in the user's source tree (and
/// fail a `git commit` running there at that moment).
pub fn git_state_of(dir: &Path) -> (Option<String>, Option<bool>) {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("--no-optional-locks")
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
    #[test]
    fn scratch_files_of_every_atomic_writer_are_debris_and_nothing_else_is() {
        for name in [
            ".model.safetensors.81.tmp",
            "model.safetensors.81-0.tmp",
            ".step.tmp",
            ".tmpA1b2C3",
        ] {
            assert!(super::is_debris(name), "{name}");
        }
        for name in [
            "model.safetensors",
            "notes.tmp",
            "a.b-c.tmp",
            "a.-1.tmp",
            "latest",
            ".tmpfile-x",
        ] {
            assert!(!super::is_debris(name), "{name}");
        }
    }

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
