//! Writes that a crash cannot leave half done: the bytes go to a temporary file beside the
//! target, are flushed to disk, and replace the target by one rename (atomic on POSIX file
//! systems). A reader sees the old file or the new one, never a torn one; what a crash can
//! leave behind is a stray `.tmp` file, never a broken target.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct AtomicWriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The temporary name used for `path`: same directory (so the rename stays within one file
/// system), marked with the process id so that two writers never share it.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    let tmp = temporary_path(path);
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| AtomicWriteError { path: p, source }
    };
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(path)(e));
    }
    std::fs::rename(&tmp, path).map_err(err(path))?;
    // The rename itself is durable once the directory entry is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
