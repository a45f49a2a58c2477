//! Reading a file that a user, a dataset or a downloaded checkpoint named: regular files only
//! (a FIFO would block the reader forever, `/dev/zero` never ends), and never more than a
//! stated number of bytes, checked before anything is read (docs/robustness.md).
//! Every reader of a config, an annotation file, an image or a small run record goes through
//! here; large weight files are opened by `io` after the same `regular_file` check.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

/// Config files (YAML), sweep specs and the small JSON records of a run.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Annotation files: AVA.txt is 21 MB, AVA-Captions' JSON about 160 MB.
pub const MAX_ANNOTATION_BYTES: u64 = 1 << 30;
/// Weight files and optimiser state, read whole: the bound is only there to say no to a
/// device file; a 70B model in f16 is 140 GB.
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 40;
/// One image file; the decoder's own limits (`data::image`) bound what it may become.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// What the file system says a path is, in words, for errors about non-regular files.
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    "not a regular file"
}

fn refuse(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

/// The metadata of `path` (links followed) when it is a regular file; otherwise an error that
/// says what it is instead (a dangling link is told apart from a missing file).
pub fn regular_file(path: &Path) -> std::io::Result<Metadata> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::io::Error::new(e.kind(), "a link to a missing file")
                } else {
                    e
                },
            );
        }
        Err(e) => return Err(e),
    };
    if meta.is_file() {
        Ok(meta)
    } else {
        let kind = kind_of(&meta);
        Err(refuse(format!("{kind}, not a regular file")))
    }
}

/// Opens a regular file for reading. On Unix the open does not wait for a writer, so a file
/// replaced by a FIFO between the check and the open cannot hang the reader.
pub fn open_regular(path: &Path) -> std::io::Result<(File, u64)> {
    regular_file(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let kind = kind_of(&meta);
        return Err(refuse(format!("{kind}, not a regular file")));
    }
    Ok((file, meta.len()))
}

/// The whole of a regular file of at most `max` bytes.
pub fn read_bytes(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > max {
        return Err(too_large(len, max));
    }
    if let Some(memory) = physical_memory()
        && len > memory
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!(
                "it is {}, more than this machine's {} of memory",
                bytes(len),
                bytes(memory)
            ),
        ));
    }
    let mut buffer = Vec::new();
    // A sparse file may claim any length: ask for the memory instead of aborting without it.
    buffer
        .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot hold its {} in memory: {e}", bytes(len)),
            )
        })?;
    // A file that grows while it is read is cut at the limit and refused, not followed.
    file.take(max + 1).read_to_end(&mut buffer)?;
    if buffer.len() as u64 > max {
        return Err(too_large(buffer.len() as u64, max));
    }
    Ok(buffer)
}

/// The machine's physical memory, where the system says (a file read whole must fit in it).
pub fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads a system constant and has no preconditions.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            return Some(pages as u64 * page as u64);
        }
    }
    None
}

/// `read_bytes` as UTF-8 text.
pub fn read_string(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_bytes(path, max)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()))
}

fn too_large(len: u64, max: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!(
            "{} is larger than the {} this file may have",
            bytes(len),
            bytes(max)
        ),
    )
}

/// `12.3 MB`-style sizes for messages.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}
