//! Checkpoint tensors and their mapping onto modules, shared by the format loaders: tensors
//! widened to f32 and keyed by checkpoint name; applied through burn-store by field name
//! (Linear weights transposed from PyTorch's `[out, in]`, norm `weight`/`bias` renamed to
//! `gamma`/`beta`). What the checkpoint lacks is an error naming the key; what the module
//! lacks is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{
    ApplyResult, BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("{path}: tensor `{key}` has dtype {dtype:?}; expected F32, F16 or BF16")]
    Dtype {
        path: PathBuf,
        key: String,
        dtype: Dtype,
    },
    #[error("{dir}: checkpoint lacks {} weight(s) the model needs: {}", .keys.len(), .keys.join(", "))]
    Missing { dir: PathBuf, keys: Vec<String> },
    #[error("{dir}: {message}")]
    Mismatch { dir: PathBuf, message: String },
}

/// What loading matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Module weights set from the checkpoint.
    pub applied: Vec<String>,
    /// Checkpoint tensors the module has no place for (another tower, old buffers).
    pub unexpected: Vec<String>,
}

/// All floating-point tensors of a checkpoint directory, widened to f32 (stored as
/// little-endian bytes, the safetensors layout), keyed by HF name.
#[derive(Debug, Default)]
pub struct Tensors {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

/// Refuses a config that describes far more parameters than its checkpoint holds, before
/// the model is built: the sizes a header declares can then never make a reader allocate more
/// than twice what the file itself holds (a `block_count` of 10^9 in a 1 MB file). `declared`
/// counts the config's matrices only, so a complete checkpoint holds at least as many; one
/// that lacks a tensor or two (a head) passes here and is told which by the loader.
pub(crate) fn check_describes(
    path: &Path,
    declared: u128,
    held: u128,
) -> Result<(), CheckpointError> {
    if declared <= 2 * held {
        return Ok(());
    }
    Err(CheckpointError::Format {
        path: path.to_path_buf(),
        message: format!(
            "its config describes at least {declared} parameters, more than twice the {held} values the checkpoint holds: the config does not belong to these weights"
        ),
    })
}

/// `config.validate(...)` for a checkpoint's own config, as a format error naming the file.
pub(crate) fn check_config(
    path: &Path,
    checked: Result<(), crate::config::Invalid>,
) -> Result<(), CheckpointError> {
    checked.map_err(|invalid| CheckpointError::Format {
        path: path.to_path_buf(),
        message: invalid.to_string(),
    })
}

impl Tensors {
    /// How many values the tensors hold together.
    pub fn element_count(&self) -> u128 {
        self.tensors
            .values()
            .map(|(shape, _)| shape.iter().map(|&d| d as u128).product::<u128>())
            .sum()
    }

    /// Reads `model.safetensors` or every shard named by `model.safetensors.index.json`.
    pub fn read_dir(dir: &Path) -> Result<Self, CheckpointError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            #[derive(Deserialize)]
            struct Index {
                weight_map: BTreeMap<String, String>,
            }
            let index: Index = read_json(&index)?;
            let mut shards: Vec<String> = index.weight_map.into_values().collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            return Err(CheckpointError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        let mut all = Self::default();
        for file in files {
            all.read_file(&file)?;
        }
        Ok(all)
    }

    /// The tensors of one safetensors file.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let mut tensors = Self::default();
        tensors.read_file(path)?;
        Ok(tensors)
    }

    /// Adds the tensors of one safetensors file.
    pub fn read_file(&mut self, path: &Path) -> Result<(), CheckpointError> {
        let bytes =
            crate::files::read_bytes(path, crate::files::MAX_WEIGHTS_BYTES).map_err(|source| {
                CheckpointError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        for (key, view) in file.tensors() {
            let data = view.data();
            let widen = |f: fn([u8; 2]) -> f32| -> Vec<u8> {
                data.chunks_exact(2)
                    .flat_map(|b| f([b[0], b[1]]).to_le_bytes())
                    .collect()
            };
            let values = match view.dtype() {
                Dtype::F32 => data.to_vec(),
                Dtype::F16 => widen(|b| half::f16::from_le_bytes(b).to_f32()),
                Dtype::BF16 => widen(|b| half::bf16::from_le_bytes(b).to_f32()),
                // Integer buffers (e.g. `position_ids`) are not weights.
                Dtype::I64 | Dtype::I32 | Dtype::BOOL => continue,
                dtype => {
                    return Err(CheckpointError::Dtype {
                        path: path.to_path_buf(),
                        key,
                        dtype,
                    });
                }
            };
            self.tensors.insert(key, (view.shape().to_vec(), values));
        }
        Ok(())
    }

    /// A tensor as f32 on `device`, or `None` if absent or not of rank `D`.
    pub fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Option<Tensor<D>> {
        let (shape, bytes) = self.tensors.get(key)?;
        if shape.len() != D {
            return None;
        }
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Some(Tensor::from_data(
            TensorData::new(values, shape.clone()),
            device,
        ))
    }

    /// Adds a tensor (read back to the host as f32).
    pub fn insert<const D: usize>(&mut self, key: &str, tensor: Tensor<D>) -> Result<(), String> {
        let shape = tensor.dims().to_vec();
        let values: Vec<f32> = tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.insert(key.to_string(), (shape, bytes));
        Ok(())
    }

    /// Writes all tensors as one f32 safetensors file.
    pub fn write(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self
            .to_safetensors()
            .map_err(|message| CheckpointError::Format {
                path: path.to_path_buf(),
                message,
            })?;
        std::fs::write(path, bytes).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Keeps the tensors under `prefix` (without it) when any key has it; the rest become
    /// unexpected. A CLIPVisionModel saved by transformers 5 has no prefix; one from
    /// transformers 4, or a full CLIPModel, has `vision_model.`.
    pub fn take_prefix(self, prefix: &str) -> (Self, Vec<String>) {
        if !self.tensors.keys().any(|k| k.starts_with(prefix)) {
            return (self, Vec::new());
        }
        let mut kept = Self::default();
        let mut others = Vec::new();
        for (key, value) in self.tensors {
            match key.strip_prefix(prefix) {
                Some(rest) => {
                    kept.tensors.insert(rest.to_string(), value);
                }
                None => others.push(key),
            }
        }
        (kept, others)
    }

    /// The same tensors under new names.
    pub fn rename(self, f: impl Fn(&str) -> String) -> Self {
        Self {
            tensors: self.tensors.into_iter().map(|(k, v)| (f(&k), v)).collect(),
        }
    }

    fn to_safetensors(&self) -> Result<Vec<u8>, String> {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(k, (shape, bytes))| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        safetensors::serialize(views, None).map_err(|e| e.to_string())
    }
}

/// Saves every parameter of `module` as one safetensors file in PyTorch's conventions
/// (`weight`/`bias`, Linear weights `[out, in]`), so that PyTorch tools can read it; written
/// atomically, so a crash never leaves a torn file at `path`.
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<(), CheckpointError> {
    save_module_matching(module, path, None)
}

/// `save_module` restricted to the parameters for which `holds(path, container)` is true, e.g.
/// the trained parts of a model whose frozen rest is loaded from its own checkpoint.
pub fn save_module_matching<M: Module>(
    module: &M,
    path: &Path,
    holds: Option<fn(&str, &str) -> bool>,
) -> Result<(), CheckpointError> {
    let format = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    // Streamed to the file a tensor at a time, into a scratch file renamed over `path` once
    // complete: a container built in memory first would add a copy of every saved weight to
    // the process's peak (28 GB for Vicuna-7B trained whole).
    let mut store = SafetensorsStore::from_file(path)
        .overwrite(true)
        .with_to_adapter(BurnToPyTorchAdapter);
    if let Some(holds) = holds {
        store = store.with_predicate(holds);
    }
    module
        .save_into(&mut store)
        .map_err(|e| format(e.to_string()))
}

/// Loads a file written by `save_module` into `module` (built with the same config): a
/// missing weight or a shape mismatch is an error naming the key; extra tensors are reported.
pub fn load_module<M: Module>(module: &mut M, path: &Path) -> Result<LoadReport, CheckpointError> {
    load_module_except(module, path, |_| false)
}

/// `load_module` for a file that holds part of `module` (`save_module_matching`): weights
/// for which `kept(path)` holds may be absent and keep their current values; any other
/// missing weight is still an error.
pub fn load_module_except<M: Module>(
    module: &mut M,
    path: &Path,
    kept: impl Fn(&str) -> bool,
) -> Result<LoadReport, CheckpointError> {
    let bytes =
        crate::files::read_bytes(path, crate::files::MAX_WEIGHTS_BYTES).map_err(|source| {
            CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .allow_partial(true)
        .validate(false);
    load_from_store_except(module, store, path, kept)
}

/// Sets `module`'s weights from `tensors` by name. Linear weights are transposed from
/// PyTorch's `[out, in]`; LayerNorm `weight`/`bias` become Burn's `gamma`/`beta`. `tensors` is
/// consumed and freed once serialised, before the module's own copies are made: at no time
/// are there three copies of the weights (1.79 GB peak for SmolLM2 from its GGUF file before,
/// that is three times its 0.54 GB of f32 weights and the file).
pub fn apply<M: Module>(
    module: &mut M,
    tensors: Tensors,
    dir: &Path,
) -> Result<LoadReport, CheckpointError> {
    apply_except(module, tensors, dir, |_| false)
}

/// `apply` where the module's weights for which `kept(path)` holds may be absent (set by the
/// caller some other way).
pub(crate) fn apply_except<M: Module>(
    module: &mut M,
    tensors: Tensors,
    dir: &Path,
    kept: impl Fn(&str) -> bool,
) -> Result<LoadReport, CheckpointError> {
    let bytes = tensors
        .to_safetensors()
        .map_err(|message| CheckpointError::Mismatch {
            dir: dir.to_path_buf(),
            message,
        })?;
    drop(tensors);
    let store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .allow_partial(true)
        .validate(false);
    load_from_store_except(module, store, dir, kept)
}

/// Applies a burn-store store, built with `allow_partial(true)` and `validate(false)` so that
/// its whole result comes back, and turns that result into ours: a shape or dtype mismatch,
/// or a weight the module needs and the checkpoint lacks, is an error naming the key; `path`
/// names the checkpoint in errors.
pub(crate) fn load_from_store<M: Module, S: ModuleStore<Error: std::fmt::Display>>(
    module: &mut M,
    store: S,
    path: &Path,
) -> Result<LoadReport, CheckpointError> {
    load_from_store_except(module, store, path, |_| false)
}

/// `load_from_store` where weights for which `kept(path)` holds may be absent.
fn load_from_store_except<M: Module, S: ModuleStore<Error: std::fmt::Display>>(
    module: &mut M,
    mut store: S,
    path: &Path,
    kept: impl Fn(&str) -> bool,
) -> Result<LoadReport, CheckpointError> {
    let result = module
        .load_from(&mut store)
        .map_err(|e| CheckpointError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    check(result, path, kept)
}

fn check(
    result: ApplyResult,
    dir: &Path,
    kept: impl Fn(&str) -> bool,
) -> Result<LoadReport, CheckpointError> {
    if let Some(error) = result.errors.first() {
        return Err(CheckpointError::Mismatch {
            dir: dir.to_path_buf(),
            message: error.to_string(),
        });
    }
    let missing: Vec<String> = result
        .missing
        .iter()
        .filter(|(path, _)| !kept(path))
        .map(|(path, _)| hf_name(path))
        .collect();
    if !missing.is_empty() {
        return Err(CheckpointError::Missing {
            dir: dir.to_path_buf(),
            keys: missing,
        });
    }
    Ok(LoadReport {
        applied: result.applied,
        unexpected: result.unused,
    })
}

/// Burn's LayerNorm names are `gamma`/`beta`; errors speak the checkpoint's language.
fn hf_name(path: &str) -> String {
    path.strip_suffix(".gamma")
        .map(|p| format!("{p}.weight"))
        .or_else(|| path.strip_suffix(".beta").map(|p| format!("{p}.bias")))
        .unwrap_or_else(|| path.to_string())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CheckpointError> {
    let text =
        crate::files::read_string(path, crate::files::MAX_CONFIG_BYTES).map_err(|source| {
            CheckpointError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
