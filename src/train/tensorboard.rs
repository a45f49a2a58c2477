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

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    pub value: f32,
}

/// Reads the scalars of an event file (any writer's: TensorBoard's own, tensorboardX, ours).
/// Records whose CRCs do not match are an error; a record cut short at the end of the file
/// (a run killed while writing) ends the reading, as TensorBoard's reader does.
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>, EventError> {
    let bytes = std::fs::read(path).map_err(|source| EventError {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |what: &str| EventError {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    };
    let mut scalars = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 12 {
        let (len_bytes, tail) = rest.split_at(8);
        let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| corrupt("length"))?);
        let len_crc = u32::from_le_bytes(tail[..4].try_into().map_err(|_| corrupt("crc"))?);
        if len_crc != masked_crc32c(len_bytes) {
            return Err(corrupt("a record length fails its CRC"));
        }
        let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(16)) else {
            return Err(corrupt("a record length overflows"));
        };
        if rest.len() < end {
            break;
        }
        let payload = &rest[12..end - 4];
        let crc = u32::from_le_bytes(rest[end - 4..end].try_into().map_err(|_| corrupt("crc"))?);
        if crc != masked_crc32c(payload) {
            return Err(corrupt("a record fails its CRC"));
        }
        parse_event(payload, &mut scalars).ok_or_else(|| corrupt("a malformed Event"))?;
        rest = &rest[end..];
    }
    Ok(scalars)
}

/// Protobuf wire format: one field's number, wire type and value, advancing `bytes`.
enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn read_field<'a>(bytes: &mut &'a [u8]) -> Option<(u64, Field<'a>)> {
    let key = read_varint(bytes)?;
    let take = |bytes: &mut &'a [u8], n: usize| -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    };
    let field = match key & 7 {
        0 => Field::Varint(read_varint(bytes)?),
        1 => {
            take(bytes, 8)?;
            Field::Fixed64
        }
        2 => {
            let len = usize::try_from(read_varint(bytes)?).ok()?;
            Field::Bytes(take(bytes, len)?)
        }
        5 => Field::Fixed32(u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?)),
        _ => return None,
    };
    Some((key >> 3, field))
}

/// `Event{step = 2, summary = 5: Summary{value = 1: Value{tag = 1, simple_value = 2}}}`; other
/// fields and non-scalar values are skipped.
fn parse_event(mut bytes: &[u8], out: &mut Vec<Scalar>) -> Option<()> {
    let mut step = 0i64;
    let mut values = Vec::new();
    while !bytes.is_empty() {
        match read_field(&mut bytes)? {
            (2, Field::Varint(v)) => step = v as i64,
            (5, Field::Bytes(mut summary)) => {
                while !summary.is_empty() {
                    if let (1, Field::Bytes(mut value)) = read_field(&mut summary)? {
                        let (mut tag, mut simple) = (String::new(), None);
                        while !value.is_empty() {
                            match read_field(&mut value)? {
                                (1, Field::Bytes(t)) => tag = String::from_utf8_lossy(t).into(),
                                (2, Field::Fixed32(v)) => simple = Some(f32::from_bits(v)),
                                _ => {}
                            }
                        }
                        if let Some(value) = simple {
                            values.push((tag, value));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out.extend(
        values
            .into_iter()
            .map(|(tag, value)| Scalar { tag, step, value }),
    );
    Some(())
}

/// Every scalar of `tag` in the event files of `dir`, by step; files are read in name order
/// (their names start with the time they were created), so after a resume the later value of
/// a step replaces the earlier one.
pub fn read_curve(dir: &Path, tag: &str) -> Result<Vec<(i64, f32)>, EventError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("tfevents"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EventError {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    files.sort();
    let mut curve = std::collections::BTreeMap::new();
    for file in files {
        for s in read_scalars(&file)? {
            if s.tag == tag {
                curve.insert(s.step, s.value);
            }
        }
    }
    Ok(curve.into_iter().collect())
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // Nothing to report an error to here; `flush` is the checked way.
        let _ = self.file.flush();
    }
}
