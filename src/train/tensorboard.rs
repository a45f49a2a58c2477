//! TensorBoard event files, written without a TensorBoard crate (README, "Dependencies"): the
//! TFRecord framing (little-endian u64 length, masked CRC-32C of the length, payload, masked
//! CRC-32C of the payload) around `tensorboard.Event` protobufs (`event.proto`,
//! `summary.proto`). Scalars use `Summary.Value.simple_value`, which TensorBoard reads as a
//! scalar series. Encoding follows proto3: zero-valued plain fields are left out, `oneof` members
//! are always written, so the bytes equal those of TensorBoard's own writer (tested against a
//! file it wrote).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// TFRecord's masked CRC: a CRC of data that itself holds CRCs is weak, so it is rotated and
/// offset.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the payload, its masked CRC.
pub fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn length_delimited(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `Event{wall_time = 1, step = 2, file_version = 3 | summary = 5}`.
fn event(wall_time: f64, step: i64, body: EventBody<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    if wall_time != 0.0 {
        out.push(1 << 3 | 1);
        out.extend_from_slice(&wall_time.to_le_bytes());
    }
    if step != 0 {
        out.push(2 << 3);
        // int64 is encoded as its two's-complement u64.
        varint(step as u64, &mut out);
    }
    match body {
        EventBody::FileVersion(v) => length_delimited(3, v.as_bytes(), &mut out),
        EventBody::Scalar { tag, value } => {
            // Summary{value = 1: Value{tag = 1, simple_value = 2}}.
            let mut v = Vec::new();
            if !tag.is_empty() {
                length_delimited(1, tag.as_bytes(), &mut v);
            }
            // `simple_value` belongs to a `oneof`, whose members are written even when zero.
            v.push(2 << 3 | 5);
            v.extend_from_slice(&value.to_le_bytes());
            let mut summary = Vec::new();
            length_delimited(1, &v, &mut summary);
            length_delimited(5, &summary, &mut out);
        }
    }
    out
}

enum EventBody<'a> {
    FileVersion(&'a str),
    Scalar { tag: &'a str, value: f32 },
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct EventError {
    path: PathBuf,
    source: std::io::Error,
}

/// Appends scalar events to one event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix seconds>.calm` (TensorBoard finds event files
    /// by the `tfevents` in their name) and writes the `brain.Event:2` version record.
    pub fn create(dir: &Path) -> Result<Self, EventError> {
        let wall_time = now();
        let path = dir.join(format!("events.out.tfevents.{}.calm", wall_time as u64));
        Self::create_at(&path, wall_time)
    }

    /// As `create`, with an explicit file name and version-record time.
    pub fn create_at(path: &Path, wall_time: f64) -> Result<Self, EventError> {
        let err = |source| EventError {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(err)?;
        let mut writer = Self {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        };
        writer.write(&event(
            wall_time,
            0,
            EventBody::FileVersion("brain.Event:2"),
        ))?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A scalar at `step`, stamped with the current time.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> Result<(), EventError> {
        self.scalar_at(tag, step, value, now())
    }

    pub fn scalar_at(
        &mut self,
        tag: &str,
        step: i64,
        value: f32,
        wall_time: f64,
    ) -> Result<(), EventError> {
        self.write(&event(wall_time, step, EventBody::Scalar { tag, value }))
    }

    /// Pushes buffered records to the file, so a crash loses at most what came after.
    pub fn flush(&mut self) -> Result<(), EventError> {
        let path = &self.path;
        self.file.flush().map_err(|source| EventError {
            path: path.clone(),
            source,
        })
    }

    fn write(&mut self, payload: &[u8]) -> Result<(), EventError> {
        let path = &self.path;
        self.file
            .write_all(&record(payload))
            .map_err(|source| EventError {
                path: path.clone(),
                source,
            })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // Nothing to report an error to here; `flush` is the checked way.
        let _ = self.file.flush();
    }
}
