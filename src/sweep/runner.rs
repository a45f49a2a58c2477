//! Running a sweep's runs as separate processes, N at a time: finished runs are skipped,
//! interrupted ones resumed from their last checkpoint, and a failing run is recorded with its
//! error without stopping the others.
//!
//! Each run directory holds what its binary writes, plus `sweep_status.json` (written by the
//! sweep when the process ends) and `log.txt` (the process's output, every attempt appended).
//! A run is finished when its status says `succeeded`; a directory without that status is a run
//! that was interrupted (or failed) and is started again: resumed when it has a checkpoint.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::spec::{PlannedRun, SweepError};
use crate::run::{RunLayout, utc_timestamp};
use crate::train::checkpoints;

pub const STATUS: &str = "sweep_status.json";
pub const LOG: &str = "log.txt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Succeeded,
    Failed,
}

/// `sweep_status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub status: Status,
    /// The process's exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// The error line the process printed last (or how it ended).
    pub error: Option<String>,
    pub resumed: bool,
    pub seconds: f64,
    pub finished_utc: String,
}

/// Where a run stands before the sweep starts.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Never started.
    New,
    Succeeded,
    /// Ended with an error last time; resumed from its checkpoint when it has one, else
    /// started again.
    Failed(String),
    /// Started but never ended (the sweep was stopped): resumed from its checkpoint when it
    /// has one, else started again.
    Interrupted {
        resumable: bool,
    },
}

impl RunState {
    pub fn label(&self) -> &'static str {
        match self {
            RunState::New => "new",
            RunState::Succeeded => "done",
            RunState::Failed(_) => "failed before",
            RunState::Interrupted { resumable: true } => "interrupted, resumes",
            RunState::Interrupted { resumable: false } => "interrupted, restarts",
        }
    }
}

pub fn read_status(dir: &Path) -> Option<RunStatus> {
    let text = crate::files::read_string(&dir.join(STATUS), crate::files::MAX_CONFIG_BYTES).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether a run directory holds a complete checkpoint to resume from.
pub fn resumable(dir: &Path) -> bool {
    matches!(checkpoints::latest(dir), Ok(Some(_)))
}

/// A run directory's state, from its status file and checkpoints.
pub fn run_state(dir: &Path) -> RunState {
    match read_status(dir) {
        Some(s) if s.status == Status::Succeeded => RunState::Succeeded,
        Some(s) => RunState::Failed(s.error.unwrap_or_default()),
        None if dir.join(RunLayout::RUN_RECORD).is_file()
            || dir.join(RunLayout::RESOLVED_CONFIG).is_file() =>
        {
            RunState::Interrupted {
                resumable: resumable(dir),
            }
        }
        None => RunState::New,
    }
}

/// How a run's process starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Fresh,
    /// Over an earlier attempt that left no checkpoint, whose files are deleted first (the
    /// log of every attempt is kept).
    Restart,
    /// From the run's latest checkpoint (`--resume`).
    Resume,
}

/// What happened to one run in this invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: String,
    /// `None`: skipped, it had already succeeded.
    pub status: Option<RunStatus>,
}

/// Runs every run of `plan` not yet finished, `jobs` at a time, each in `results/<id>/`.
/// `command` builds the process of a run from its directory and how it starts. A run that
/// cannot start (its program is missing, say) fails alone, like one that exits with an error.
pub fn run_all(
    plan: &[PlannedRun],
    results: &Path,
    jobs: usize,
    command: &dyn Fn(&PlannedRun, &Path, Start) -> Command,
    progress: &mut dyn Write,
) -> Result<Vec<Outcome>, SweepError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SweepError::Io { path, source }
    };
    std::fs::create_dir_all(results).map_err(io(results))?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut queue: Vec<(&PlannedRun, Start)> = Vec::new();
    for run in plan {
        let dir = results.join(&run.id);
        let start = match run_state(&dir) {
            RunState::Succeeded => {
                let _ = writeln!(progress, "skip {}: finished", run.id);
                outcomes.push(Outcome {
                    id: run.id.clone(),
                    status: None,
                });
                continue;
            }
            RunState::New => Start::Fresh,
            // A run that failed after a checkpoint (killed for memory at step 900 of 1000)
            // resumes; its checkpoints are never deleted by a restart.
            RunState::Failed(_) if resumable(&results.join(&run.id)) => Start::Resume,
            RunState::Failed(_) | RunState::Interrupted { resumable: false } => Start::Restart,
            RunState::Interrupted { resumable: true } => Start::Resume,
        };
        queue.push((run, start));
    }
    queue.reverse();
    let total = queue.len();
    let mut running: Vec<Running> = Vec::new();
    let mut done = 0usize;
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs.max(1) {
            let Some((run, start)) = queue.pop() else {
                break;
            };
            let dir = results.join(&run.id);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            if start != Start::Resume {
                // A run started again starts clean, as `--overwrite` would leave it: nothing
                // of the earlier attempt (metrics, events, held-out photos, a status that
                // would make a killed process look finished) but the log of every attempt.
                crate::run::clear(&dir, &[LOG, RunLayout::LOCK]).map_err(|e| SweepError::Io {
                    path: dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            }
            let _ = std::fs::remove_file(dir.join(STATUS));
            let began = Instant::now();
            let spawned = spawn(command(run, &dir, start), &dir, start)
                .map_err(|e| format!("cannot start: {e}"));
            match spawned {
                Ok((child, log_start)) => {
                    let _ = writeln!(
                        progress,
                        "start {} ({}){}",
                        run.id,
                        match start {
                            Start::Fresh => "new",
                            Start::Restart => "restart",
                            Start::Resume => "resume",
                        },
                        if total > 1 {
                            format!(" [{} running, {} queued]", running.len() + 1, queue.len())
                        } else {
                            String::new()
                        }
                    );
                    running.push(Running {
                        run,
                        dir,
                        child,
                        began,
                        start,
                        log_start,
                    });
                }
                Err(error) => {
                    let status = finish(&dir, None, Some(error), start, began)?;
                    done += 1;
                    report(progress, &run.id, &status, done, total);
                    outcomes.push(Outcome {
                        id: run.id.clone(),
                        status: Some(status),
                    });
                }
            }
        }
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait() {
                Ok(None) => i += 1,
                Ok(Some(exit)) => {
                    let r = running.swap_remove(i);
                    let error = (!exit.success()).then(|| {
                        last_error_line(&r.dir.join(LOG), r.log_start).unwrap_or_else(|| match exit
                            .code()
                        {
                            Some(code) => format!("exited with status {code}"),
                            None => "killed by a signal".to_string(),
                        })
                    });
                    let status = finish(&r.dir, exit.code(), error, r.start, r.began)?;
                    done += 1;
                    report(progress, &r.run.id, &status, done, total);
                    outcomes.push(Outcome {
                        id: r.run.id.clone(),
                        status: Some(status),
                    });
                }
                Err(e) => return Err(io(&running[i].dir)(e)),
            }
        }
        if !running.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // In plan order, whatever order they finished in.
    outcomes.sort_by_key(|o| plan.iter().position(|r| r.id == o.id));
    Ok(outcomes)
}

struct Running<'a> {
    run: &'a PlannedRun,
    dir: PathBuf,
    child: Child,
    began: Instant,
    start: Start,
    log_start: u64,
}

/// Starts `command` with its output appended to the run's log; returns where this attempt's
/// output begins in the log.
fn spawn(mut command: Command, dir: &Path, start: Start) -> std::io::Result<(Child, u64)> {
    let log_path = dir.join(LOG);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    writeln!(
        log,
        "== {} {:?}: {:?}",
        utc_timestamp(SystemTime::now()),
        start,
        command
    )?;
    let log_start = log.metadata()?.len();
    let stderr = log.try_clone()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .spawn()?;
    Ok((child, log_start))
}

/// The last line of this attempt's output that reports an error (`<command>: error: ...`, as
/// the binaries print it, or a panic).
fn last_error_line(log: &Path, from: u64) -> Option<String> {
    let bytes = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(bytes.get(from as usize..)?);
    text.lines()
        .rev()
        .find(|l| l.contains("error:") || l.contains("panicked at"))
        .map(|l| l.trim().to_string())
}

fn finish(
    dir: &Path,
    exit_code: Option<i32>,
    error: Option<String>,
    start: Start,
    began: Instant,
) -> Result<RunStatus, SweepError> {
    let status = RunStatus {
        status: if error.is_none() {
            Status::Succeeded
        } else {
            Status::Failed
        },
        exit_code,
        error,
        resumed: start == Start::Resume,
        seconds: began.elapsed().as_secs_f64(),
        finished_utc: utc_timestamp(SystemTime::now()),
    };
    let path = dir.join(STATUS);
    let text = serde_json::to_string_pretty(&status).map_err(|e| SweepError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::io::atomic::write_atomic(&path, text.as_bytes()).map_err(|e| SweepError::Io {
        path: e.path,
        source: e.source,
    })?;
    Ok(status)
}

fn report(progress: &mut dyn Write, id: &str, status: &RunStatus, done: usize, total: usize) {
    let _ = match &status.error {
        None => writeln!(
            progress,
            "done {id} in {:.0} s ({done}/{total})",
            status.seconds
        ),
        Some(error) => writeln!(progress, "FAILED {id}: {error} ({done}/{total})"),
    };
}
