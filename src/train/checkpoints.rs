//! A training run's checkpoints: `checkpoints/step-NNNNNNNN/` holds the model
//! (`model.safetensors`, PyTorch conventions), the optimiser state (`optimizer.bpk`, Burn's
//! burnpack) and the loop's position (`state.json`); `checkpoints/latest` names the newest
//! complete one. A checkpoint is written in a temporary folder and renamed into place, and only
//! then does `latest` change (atomically), so a crash at any point leaves `latest` naming a
//! complete checkpoint.
//!
//! With the optimiser state sharded over W ranks (ZeRO stage 1), each rank writes its own
//! share, `optimizer.RRRRR-of-WWWWW.bpk`, into the leader's temporary folder before the leader
//! renames it. Any number of ranks reads either form: each keeps the state of the parameters
//! it now steps, so a run resumes on another number of ranks, or on one process.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use crate::io::atomic::{AtomicWriteError, write_atomic};
use crate::io::checkpoint::{CheckpointError, load_module_except, save_module_matching};

pub const LATEST: &str = "latest";
pub const MODEL: &str = "model.safetensors";
pub const OPTIMIZER: &str = "optimizer.bpk";
pub const STATE: &str = "state.json";
/// `latest` holds one folder name.
const MAX_POINTER_BYTES: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum TrainCheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: optimiser state: {message}")]
    Optimizer { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("{0} holds no checkpoint (no checkpoints/latest)")]
    NoCheckpoint(PathBuf),
    #[error(
        "{dir}: the optimiser state is incomplete: {message}; a checkpoint's shards are written by every rank before it is named `latest`"
    )]
    Shards { dir: PathBuf, message: String },
}

impl From<AtomicWriteError> for TrainCheckpointError {
    fn from(e: AtomicWriteError) -> Self {
        Self::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainCheckpointError + '_ {
    move |source| TrainCheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the loop stands after the last optimiser step of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps completed.
    pub step: usize,
    /// Micro-batches consumed (`step` x gradient accumulation).
    pub micro_batches: usize,
    /// Images that failed to load so far.
    pub skipped: Vec<String>,
}

/// Which parameters a checkpoint holds: the one rule that saving and loading both read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Every parameter.
    All,
    /// What fine-tuning trains when the LLM's base stays frozen: the MFAM, the LoRA adapters
    /// and the score heads. The base (540 MB for SmolLM2-135M in f32, 27 GB for Vicuna-7B) is
    /// read again from its own file.
    Trained,
}

/// The modules `Kept::Trained` holds, by the first parts of their parameter paths.
const TRAINED_PREFIXES: [&str; 3] = ["mfam", "llm.lora", "score_head"];

fn is_trained(path: &str) -> bool {
    TRAINED_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

impl Kept {
    /// Whether the checkpoint holds the parameter at `path` (e.g. `mfam.low.query_tokens`).
    pub fn holds(self, path: &str) -> bool {
        match self {
            Self::All => true,
            Self::Trained => is_trained(path),
        }
    }

    /// `holds` as the filter of a safetensors store (path, container path); `None` for all.
    pub fn predicate(self) -> Option<fn(&str, &str) -> bool> {
        match self {
            Self::All => None,
            Self::Trained => Some(|path, _| is_trained(path)),
        }
    }
}

fn step_name(step: usize) -> String {
    format!("step-{step:08}")
}

/// Whether `name` is what `step_name` writes: `step-` and at least eight digits.
fn is_step_name(name: &str) -> bool {
    name.strip_prefix("step-")
        .is_some_and(|digits| digits.len() >= 8 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes a checkpoint of `model` and `optimizer` after `state.step` steps, points `latest`
/// at it, and deletes all but the newest `keep` checkpoints (0 keeps all).
pub fn save<M: Module>(
    run: &Path,
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf, TrainCheckpointError> {
    save_matching(run, model, Kept::All, optimizer, state, keep)
}

/// `save` keeping only the parameters `kept` holds.
pub fn save_matching<M: Module>(
    run: &Path,
    model: &M,
    kept: Kept,
    optimizer: &ModuleOptimizer,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf, TrainCheckpointError> {
    let staged = stage(run, state.step)?;
    write_optimizer(&staged.join(OPTIMIZER), optimizer)?;
    commit(run, &staged, model, kept, state, keep)
}

/// The temporary folder of the checkpoint after `step` steps, made empty: the optimiser's
/// state goes there (`write_optimizer`), then `commit` adds the rest and names it `latest`.
pub fn stage(run: &Path, step: usize) -> Result<PathBuf, TrainCheckpointError> {
    let root = run.join(crate::run::RunLayout::CHECKPOINTS);
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let tmp = root.join(format!(".{}.{}.tmp", step_name(step), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    Ok(tmp)
}

/// The file of rank `rank`'s share of a sharded optimiser state over `ranks` ranks.
pub fn optimizer_shard(rank: usize, ranks: usize) -> String {
    format!("optimizer.{rank:05}-of-{ranks:05}.bpk")
}

/// `optimizer`'s state (all of it, or this rank's share) at `path`, in the staged folder that
/// `commit` renames into place. Streamed to the file: a whole container built in memory first
/// would add a copy of Adam's state to the run's peak (1.2 GB for SmolLM2 trained whole).
pub fn write_optimizer(
    path: &Path,
    optimizer: &ModuleOptimizer,
) -> Result<(), TrainCheckpointError> {
    optimizer
        .save(path)
        .map_err(|e| TrainCheckpointError::Optimizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Writes the model and the loop's state into the `staged` folder, renames it into place,
/// points `latest` at it and prunes all but the newest `keep` (0 keeps all).
pub fn commit<M: Module>(
    run: &Path,
    staged: &Path,
    model: &M,
    kept: Kept,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf, TrainCheckpointError> {
    let root = run.join(crate::run::RunLayout::CHECKPOINTS);
    let name = step_name(state.step);
    save_module_matching(model, &staged.join(MODEL), kept.predicate())?;
    let state_json =
        serde_json::to_string_pretty(state).map_err(|e| TrainCheckpointError::State {
            path: staged.join(STATE),
            message: e.to_string(),
        })?;
    write_atomic(&staged.join(STATE), state_json.as_bytes())?;
    let dir = root.join(&name);
    // A checkpoint of the same step left by a run that was killed before it moved `latest`.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::rename(staged, &dir).map_err(io(&dir))?;
    write_atomic(&root.join(LATEST), format!("{name}\n").as_bytes())?;
    if keep > 0 {
        prune(&root, &name, keep)?;
    }
    Ok(dir)
}

fn prune(root: &Path, latest: &str, keep: usize) -> Result<(), TrainCheckpointError> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map_err(io(root))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_step_name(n) && n.as_str() <= latest)
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in &names[..excess] {
        let dir = root.join(name);
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    Ok(())
}

/// The run directory `path` names (a run, or one of its checkpoint folders) and the weights to
/// read from it: the checkpoint's own, else the run's finished `final_model`, else its latest
/// checkpoint's.
pub fn locate(path: &Path, final_model: &str) -> Result<(PathBuf, PathBuf), TrainCheckpointError> {
    if path.join(STATE).is_file() {
        let run = path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(path)
            .to_path_buf();
        return Ok((run, path.join(MODEL)));
    }
    if path.join(final_model).is_file() {
        return Ok((path.to_path_buf(), path.join(final_model)));
    }
    let latest =
        latest(path)?.ok_or_else(|| TrainCheckpointError::NoCheckpoint(path.to_path_buf()))?;
    Ok((path.to_path_buf(), latest.join(MODEL)))
}

/// Deletes the debris a killed run left in `run` and its checkpoints folder
/// (`run::remove_debris`); the number of entries removed.
pub fn remove_debris(run: &Path) -> Result<usize, crate::run::RunError> {
    Ok(crate::run::remove_debris(run)?
        + crate::run::remove_debris(&run.join(crate::run::RunLayout::CHECKPOINTS))?)
}

/// The checkpoint `latest` names, if any.
pub fn latest(run: &Path) -> Result<Option<PathBuf>, TrainCheckpointError> {
    let root = run.join(crate::run::RunLayout::CHECKPOINTS);
    let pointer = root.join(LATEST);
    if !pointer.is_file() {
        return Ok(None);
    }
    let name = crate::files::read_string(&pointer, MAX_POINTER_BYTES).map_err(io(&pointer))?;
    // Only a checkpoint folder of this run: a name like `../../elsewhere` or an absolute path
    // would load (or, when pruned, delete) another run's files.
    let name = name.trim();
    if !is_step_name(name) {
        return Err(TrainCheckpointError::State {
            path: pointer,
            message: format!("names {name:?}, not a checkpoint folder of this run (step-NNNNNNNN)"),
        });
    }
    let dir = root.join(name);
    if !dir.join(STATE).is_file() {
        return Err(TrainCheckpointError::State {
            path: pointer,
            message: format!("names {}, which is not a complete checkpoint", name.trim()),
        });
    }
    Ok(Some(dir))
}

/// Reads a checkpoint into `model` (built as the run built it) and `optimizer`.
pub fn load<M: Module>(
    dir: &Path,
    model: &mut M,
    optimizer: ModuleOptimizer,
) -> Result<(ModuleOptimizer, TrainerState), TrainCheckpointError> {
    load_matching(dir, model, optimizer, Kept::All, None)
}

/// Which parameters' optimiser state a rank keeps, by parameter id (`None`: all of them).
pub type StateFilter<'a> = Option<&'a dyn Fn(u64) -> bool>;

/// `load` for a checkpoint of `save_matching`: parameters `kept` does not hold were not saved
/// and keep the values `model` has. The optimiser keeps the state of the parameters `owned`
/// accepts, from the whole state or from the shards of a sharded one.
pub fn load_matching<M: Module>(
    dir: &Path,
    model: &mut M,
    optimizer: ModuleOptimizer,
    kept: Kept,
    owned: StateFilter<'_>,
) -> Result<(ModuleOptimizer, TrainerState), TrainCheckpointError> {
    let report = load_module_except(model, &dir.join(MODEL), |path| !kept.holds(path))?;
    if !report.unexpected.is_empty() {
        return Err(TrainCheckpointError::State {
            path: dir.join(MODEL),
            message: format!(
                "holds weights this model lacks: {}; was the run's config changed?",
                report.unexpected.join(", ")
            ),
        });
    }
    let optimizer = load_optimizer(dir, optimizer, owned)?;
    let state_path = dir.join(STATE);
    let text = crate::files::read_string(&state_path, crate::files::MAX_CONFIG_BYTES)
        .map_err(io(&state_path))?;
    let state = serde_json::from_str(&text).map_err(|e| TrainCheckpointError::State {
        path: state_path,
        message: e.to_string(),
    })?;
    Ok((optimizer, state))
}

/// The optimiser state of checkpoint `dir`: `optimizer.bpk`, or every shard of a sharded
/// state, keeping what `owned` accepts. Shards are read lazily, so a rank materialises only
/// its own share however large the whole is.
fn load_optimizer(
    dir: &Path,
    optimizer: ModuleOptimizer,
    owned: StateFilter<'_>,
) -> Result<ModuleOptimizer, TrainCheckpointError> {
    let whole = dir.join(OPTIMIZER);
    let files = if whole.is_file() {
        vec![whole]
    } else {
        shard_files(dir)?
    };
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |e: burn::store::burn_pack::Error| TrainCheckpointError::Optimizer {
            path,
            message: e.to_string(),
        }
    };
    if files.len() == 1 && owned.is_none() {
        let path = &files[0];
        let bytes =
            crate::files::read_bytes(path, crate::files::MAX_WEIGHTS_BYTES).map_err(io(path))?;
        return optimizer
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| TrainCheckpointError::Optimizer {
                path: path.clone(),
                message: e.to_string(),
            });
    }
    let keeps = |id: u64| owned.is_none_or(|f| f(id));
    let mut tensors = Vec::new();
    let mut scalars = std::collections::BTreeMap::new();
    let mut metadata = std::collections::BTreeMap::new();
    for path in &files {
        let reader = burn::store::burn_pack::Reader::from_file_exact(path).map_err(failed(path))?;
        // Scalars and paths are keyed "{id}.{field}" and "{id}", as Burn's optimiser record
        // writes them.
        let id_of = |key: &str| key.split('.').next().and_then(|id| id.parse::<u64>().ok());
        for (key, value) in reader.scalars() {
            if id_of(key).is_none_or(keeps) {
                scalars.insert(key.clone(), *value);
            }
        }
        for (key, value) in reader.metadata() {
            if id_of(key).is_none_or(keeps) {
                metadata.insert(key.clone(), value.clone());
            }
        }
        for tensor in reader.into_tensors().map_err(failed(path))? {
            if tensor.param_id.is_none_or(keeps) {
                tensors.push(tensor);
            }
        }
    }
    let mut writer = burn::store::burn_pack::Writer::new(tensors);
    for (key, value) in &scalars {
        writer = writer.with_scalar(key, *value);
    }
    for (key, value) in &metadata {
        writer = writer.with_metadata(key, value);
    }
    let bytes = writer.into_bytes().map_err(failed(dir))?;
    optimizer
        .from_bytes(bytes)
        .map_err(|e| TrainCheckpointError::Optimizer {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })
}

/// The shards of a sharded optimiser state in `dir`, in rank order; an error unless all W of
/// one sharding are there.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, TrainCheckpointError> {
    let incomplete = |message: String| TrainCheckpointError::Shards {
        dir: dir.to_path_buf(),
        message,
    };
    let mut found: Vec<(usize, usize)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy();
        let parsed = name
            .strip_prefix("optimizer.")
            .and_then(|n| n.strip_suffix(".bpk"))
            .and_then(|n| n.split_once("-of-"))
            .and_then(|(r, w)| Some((r.parse::<usize>().ok()?, w.parse::<usize>().ok()?)));
        if let Some(pair) = parsed {
            found.push(pair);
        }
    }
    found.sort_unstable();
    let Some(&(_, ranks)) = found.first() else {
        return Err(incomplete(format!(
            "neither {OPTIMIZER} nor any optimizer.RRRRR-of-WWWWW.bpk"
        )));
    };
    let expected: Vec<(usize, usize)> = (0..ranks).map(|r| (r, ranks)).collect();
    if found != expected {
        return Err(incomplete(format!(
            "found shards {:?} (rank, of), expected all {ranks}",
            found
        )));
    }
    Ok((0..ranks)
        .map(|r| dir.join(optimizer_shard(r, ranks)))
        .collect())
}
