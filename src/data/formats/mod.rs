//! Readers for the annotation formats of the aesthetic datasets, each in its own file, and for
//! plain folders and list files of images.

pub mod ava;
pub mod ava_captions;
pub mod flickr_aes;
pub mod llava;
pub mod score_table;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::DataError;

/// File extensions taken as images when scanning a folder (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// The image files in a folder, sorted by path. Files are chosen by extension only; whether
/// they decode is found out when they are loaded, where failures are skipped and counted.
pub fn scan_folder(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, DataError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|source| DataError::Io {
            path: current.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| DataError::Io {
                path: current.clone(),
                source,
            })?;
            let path = entry.path();
            // `file_type` does not follow links, so a link back up the tree is no cycle.
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                if recursive {
                    pending.push(path);
                }
            } else if has_image_extension(&path) {
                // Runs record their photos as text (split.json, held_out/images.txt).
                if path.to_str().is_some() {
                    found.push(path);
                } else {
                    crate::errln!(
                        "warning: skipping {}: its name is not UTF-8",
                        path.display()
                    );
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// A list file: one image path a line, relative to the list file's folder unless absolute;
/// blank lines and lines starting with `#` are ignored.
pub fn read_list(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let text = read_text(path)?;
    let base = path.parent().unwrap_or(Path::new(""));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| base.join(l))
        .collect())
}

/// A file's text without the byte-order mark that Windows editors and spreadsheet exports
/// put first (it would otherwise be part of the first path, column name or JSON token).
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
    let mut text =
        crate::files::read_string(path, crate::files::MAX_ANNOTATION_BYTES).map_err(|source| {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| DataError::Malformed {
        path: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    })
}

/// A CSV field as RFC 4180 writes it: quoted when it holds a comma, a quote or a line break,
/// with quotes doubled.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
