//! The architectures of the checkpoints a config names, read without loading their weights:
//! from the checkpoint's own `config.json` (or a GGUF file's metadata) when it is on this
//! machine, else from the copy of its `config.json` this repository ships
//! (`configs/architectures/<name>/`), so that a job can be sized before its weights are
//! downloaded.

use std::path::{Path, PathBuf};

use super::checkpoint::CheckpointError;
use super::gguf::GgufFile;
use super::hf::{bert_config_from_json, read_bert_config};
use super::llama::{is_gguf, llama_config_from_json, read_llama_config, read_llama_gguf_config};
use super::models::{FetchedModel, model_dir};
use crate::model::WeightsConfig;
use crate::model::bert::BertConfig;
use crate::model::llama::LlamaConfig;

/// The shipped `config.json` files, by the name a weights path ends with.
const SHIPPED: [(&str, &str); 4] = [
    (
        "vicuna-7b-v1.5",
        include_str!("../../configs/architectures/vicuna-7b-v1.5/config.json"),
    ),
    (
        "bert-base-uncased",
        include_str!("../../configs/architectures/bert-base-uncased/config.json"),
    ),
    (
        "minilm",
        include_str!("../../configs/architectures/minilm/config.json"),
    ),
    (
        "smollm2",
        include_str!("../../configs/architectures/smollm2/config.json"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ArchitectureError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "{0} is not on this machine and its architecture is not among those shipped in configs/architectures ({names}); download it, or point the config at its folder",
        names = SHIPPED.map(|(n, _)| n).join(", ")
    )]
    Unknown(PathBuf),
}

/// A config and where it was read.
#[derive(Debug, Clone)]
pub struct Resolved<T> {
    pub config: T,
    pub source: String,
}

fn shipped(name: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn shipped_path(name: &str) -> PathBuf {
    Path::new("configs/architectures").join(name)
}

/// The name a weights path is known by: its last component without a `.gguf` extension.
fn name_of(path: &Path) -> String {
    let stem = if is_gguf(path) {
        path.file_stem()
    } else {
        path.file_name()
    };
    stem.map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The cue encoder's architecture (`model.weights.text_encoder`; the default all-MiniLM-L6-v2).
pub fn text_encoder(weights: &WeightsConfig) -> Result<Resolved<BertConfig>, ArchitectureError> {
    let (path, name) = match &weights.text_encoder {
        Some(path) => (Some(path.clone()), name_of(path)),
        None => (
            model_dir(FetchedModel::Minilm).ok(),
            FetchedModel::Minilm.name().to_string(),
        ),
    };
    if let Some(dir) = path.filter(|d| d.join("config.json").is_file()) {
        return Ok(Resolved {
            config: read_bert_config(&dir)?,
            source: dir.join("config.json").display().to_string(),
        });
    }
    let text = shipped(&name).ok_or_else(|| {
        ArchitectureError::Unknown(weights.text_encoder.clone().unwrap_or_default())
    })?;
    let dir = shipped_path(&name);
    Ok(Resolved {
        config: bert_config_from_json(text, &dir)?,
        source: format!("{} (shipped)", dir.join("config.json").display()),
    })
}

/// The LLM's architecture (`model.weights.llm`; the default SmolLM2-135M-Instruct).
pub fn llm(weights: &WeightsConfig) -> Result<Resolved<LlamaConfig>, ArchitectureError> {
    let (path, name) = match &weights.llm {
        Some(path) => (Some(path.clone()), name_of(path)),
        None => (
            model_dir(FetchedModel::Smollm2)
                .ok()
                .map(|d| d.join(FetchedModel::Smollm2.main_file())),
            FetchedModel::Smollm2.name().to_string(),
        ),
    };
    if let Some(path) = path {
        if is_gguf(&path) && path.is_file() {
            let file = GgufFile::read(&path).map_err(|e| CheckpointError::Format {
                path: path.clone(),
                message: e.to_string(),
            })?;
            return Ok(Resolved {
                config: read_llama_gguf_config(&file)?,
                source: path.display().to_string(),
            });
        }
        if path.join("config.json").is_file() {
            return Ok(Resolved {
                config: read_llama_config(&path)?,
                source: path.join("config.json").display().to_string(),
            });
        }
    }
    let text = shipped(&name)
        .ok_or_else(|| ArchitectureError::Unknown(weights.llm.clone().unwrap_or_default()))?;
    let file = shipped_path(&name).join("config.json");
    Ok(Resolved {
        config: llama_config_from_json(text, &file)?,
        source: format!("{} (shipped)", file.display()),
    })
}
