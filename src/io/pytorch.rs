//! PyTorch `.pth` state dicts (zip or the legacy pre-1.6 format, which burn-store reads
//! directly): the EfficientNet-Lite0 ImageNet weights.

use std::path::{Path, PathBuf};

use burn::store::PytorchStore;
use burn::tensor::Device;

use super::checkpoint::{CheckpointError, LoadReport, load_from_store};
use crate::model::EfficientNetLite0Config;
use crate::model::vision::efficientnet::EfficientNetLite0;

/// `path` itself, or the only `.pth` file in the folder `path`.
fn pth_file(path: &Path) -> Result<PathBuf, CheckpointError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pth" || e == "pt"))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!("expected one .pth file in the folder, found {n}"),
        }),
    }
}

/// Loads EfficientNet-Lite0 from a `.pth` file (or a folder holding one).
pub fn load_efficientnet_lite0(
    path: &Path,
    config: &EfficientNetLite0Config,
    device: &Device,
) -> Result<(EfficientNetLite0, LoadReport), CheckpointError> {
    let file = pth_file(path)?;
    if let Err(source) = crate::files::regular_file(&file) {
        return Err(CheckpointError::Io { path: file, source });
    }
    let store = PytorchStore::from_file(&file)
        .allow_partial(true)
        .validate(false);
    let mut model = config.init(device);
    let report = load_from_store(&mut model, store, &file)?;
    Ok((model, report))
}
