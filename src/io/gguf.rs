//! GGUF files (llama.cpp): header, metadata and tensors, with dequantisation to f32.
//!
//! The reference is ggml's GGUF specification (`docs/gguf.md` and `src/gguf.cpp` in
//! ggml-org/ggml) and the `gguf` Python package (gguf-py, `GGUFReader` and `gguf.quants`, the
//! version pinned in `scripts/fixtures/requirements.txt`), whose dequantised values the tests
//! compare against bit for bit. Block layouts are those of ggml's `ggml-common.h`.
//!
//! Versions 2 and 3, little-endian (version 1 used 32-bit counts and predates every published
//! model; big-endian files are refused by name). The whole file is read into memory: every
//! read is bounds-checked, and counts and lengths are checked against the bytes left before
//! anything is allocated, so a truncated or hostile file is an error, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};

use crate::model::quant::{q4_0, q4_1, q4_k, q6_k, q8_0, scale_min_k4};

/// `general.alignment` when the file does not set it (ggml's `GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u32 = 32;
const MAGIC: [u8; 4] = *b"GGUF";
/// ggml's `GGML_MAX_DIMS`: ggml refuses tensors of higher rank.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are allowed by the format; the limit keeps recursion bounded.
const MAX_ARRAY_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a GGUF file (starts with \"{found}\", expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: String },
    #[error("{path}: GGUF version {version} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "{path}: truncated: {what} needs {needed} byte(s) at offset {offset}, the file has {len}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: no metadata key `{key}`")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}` is {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: no tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    #[error(
        "{path}: tensor `{name}` has ggml type {type_name} (id {type_id}), which cannot be dequantised"
    )]
    UnsupportedType {
        path: PathBuf,
        name: String,
        type_id: u32,
        type_name: String,
    },
}

/// The type of a metadata value, with gguf-py's names (`GGUFValueType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// The type of an on-disk id, `None` for ids the format does not define.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// gguf-py's name (`GGUFValueType.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "UINT8",
            Self::I8 => "INT8",
            Self::U16 => "UINT16",
            Self::I16 => "INT16",
            Self::U32 => "UINT32",
            Self::I32 => "INT32",
            Self::F32 => "FLOAT32",
            Self::Bool => "BOOL",
            Self::String => "STRING",
            Self::Array => "ARRAY",
            Self::U64 => "UINT64",
            Self::I64 => "INT64",
            Self::F64 => "FLOAT64",
        }
    }

    /// The fewest bytes a value of this type takes: what bounds an array's count.
    fn min_size(self) -> u64 {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            // A string is at least its u64 length; an array its u32 type and u64 count.
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            Self::Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// The element type is kept so that an empty array still has one.
    Array {
        element_type: ValueType,
        values: Vec<MetadataValue>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array { .. } => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value, widened losslessly.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// "UINT32", "ARRAY of STRING": for messages.
    pub fn type_description(&self) -> String {
        match self {
            Self::Array { element_type, .. } => format!("ARRAY of {element_type}"),
            other => other.value_type().name().to_string(),
        }
    }
}

/// A ggml tensor type id. The known ids are associated constants with gguf-py's names
/// (`GGMLQuantizationType`); other ids are kept as read, so that a file with a type newer
/// than this reader still opens and only that tensor is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

/// (id, name, elements per block, bytes per block), as gguf-py's `GGML_QUANT_SIZES`.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q4_1: Self = Self(3);
    pub const Q5_0: Self = Self(6);
    pub const Q5_1: Self = Self(7);
    pub const Q8_0: Self = Self(8);
    pub const Q2_K: Self = Self(10);
    pub const Q3_K: Self = Self(11);
    pub const Q4_K: Self = Self(12);
    pub const Q5_K: Self = Self(13);
    pub const Q6_K: Self = Self(14);
    pub const BF16: Self = Self(30);

    fn entry(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        GGML_TYPES.iter().find(|t| t.0 == self.0)
    }

    /// gguf-py's name, `None` for an id it does not know.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|t| t.1)
    }

    /// (elements per block, bytes per block), `None` for an unknown id.
    pub fn block(self) -> Option<(u64, u64)> {
        self.entry().map(|t| (t.2, t.3))
    }

    /// Whether [`dequantize`] handles this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            Self::F32
                | Self::F16
                | Self::BF16
                | Self::Q4_0
                | Self::Q4_1
                | Self::Q5_0
                | Self::Q5_1
                | Self::Q8_0
                | Self::Q2_K
                | Self::Q3_K
                | Self::Q4_K
                | Self::Q5_K
                | Self::Q6_K
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown"),
        }
    }
}

/// A tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` varies fastest (ggml's `ne[0]`), the reverse of PyTorch's shape.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in PyTorch / numpy order (`dims` reversed).
    pub fn shape(&self) -> Vec<usize> {
        // Reading checked that the element count, hence every dim, fits usize.
        self.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect()
    }

    /// The element count, `None` on overflow.
    pub fn n_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// The size of the data, `None` for an unknown type, a first dim that is not a whole
    /// number of blocks, or overflow.
    pub fn n_bytes(&self) -> Option<u64> {
        let (block, size) = self.ggml_type.block()?;
        let ne0 = self.dims.first().copied().unwrap_or(1);
        if ne0 % block != 0 {
            return None;
        }
        (self.n_elements()? / block).checked_mul(size)
    }
}

/// A GGUF file, held in memory.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetadataValue>,
    /// In file order.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, else [`DEFAULT_ALIGNMENT`].
    pub alignment: u32,
    /// The start of the data section, from the start of the file.
    pub data_offset: u64,
    /// Shared with the quantised matrices that read their blocks from it.
    bytes: Arc<Vec<u8>>,
}

impl GgufFile {
    pub fn read(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let bytes =
            crate::files::read_bytes(path, crate::files::MAX_WEIGHTS_BYTES).map_err(|source| {
                GgufError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Self::from_bytes(bytes, path)
    }

    /// Parses a file already in memory; `path` only names it in messages.
    pub fn from_bytes(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<Self, GgufError> {
        let path = path.into();
        let parsed = Parser::new(&bytes, &path).parse()?;
        Ok(Self {
            path,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            bytes: Arc::new(bytes),
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.metadata.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: String) -> GgufError {
        GgufError::WrongType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            found,
        }
    }

    /// An integer of any width whose value fits `T`: converters differ in the widths they
    /// write (`block_count` as UINT32 or UINT64, token ids as UINT32 or INT32).
    fn get_integer<T: TryFrom<i128>>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<T, GgufError> {
        let value = self.require(key)?;
        let Some(n) = value.as_integer() else {
            return Err(self.wrong_type(key, expected, value.type_description()));
        };
        T::try_from(n).map_err(|_| {
            self.wrong_type(
                key,
                expected,
                format!("{} {n}, out of range", value.type_description()),
            )
        })
    }

    /// Any integer type whose value fits u32.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.get_integer(key, "an integer that fits u32")
    }

    /// Any integer type whose value fits u64.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get_integer(key, "an integer that fits u64")
    }

    /// Any integer type whose value fits i32.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.get_integer(key, "an integer that fits i32")
    }

    /// Any integer type whose value fits i64.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.get_integer(key, "an integer that fits i64")
    }

    /// A FLOAT32 value (a FLOAT64 would lose precision silently, so it is refused).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            MetadataValue::F32(v) => Ok(*v),
            other => Err(self.wrong_type(key, "FLOAT32", other.type_description())),
        }
    }

    /// A FLOAT32 or FLOAT64 value.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        match self.require(key)? {
            MetadataValue::F32(v) => Ok(f64::from(*v)),
            MetadataValue::F64(v) => Ok(*v),
            other => Err(self.wrong_type(key, "FLOAT32 or FLOAT64", other.type_description())),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            MetadataValue::Bool(v) => Ok(*v),
            other => Err(self.wrong_type(key, "BOOL", other.type_description())),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            MetadataValue::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "STRING", other.type_description())),
        }
    }

    /// An array's element type and values.
    pub fn get_array(&self, key: &str) -> Result<(ValueType, &[MetadataValue]), GgufError> {
        match self.require(key)? {
            MetadataValue::Array {
                element_type,
                values,
            } => Ok((*element_type, values)),
            other => Err(self.wrong_type(key, "ARRAY", other.type_description())),
        }
    }

    fn get_array_of<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&'a MetadataValue) -> Option<T>,
    ) -> Result<Vec<T>, GgufError> {
        let value = self.require(key)?;
        let mismatch = || self.wrong_type(key, expected, value.type_description());
        match value {
            MetadataValue::Array { values, .. } => {
                values.iter().map(|v| f(v).ok_or_else(mismatch)).collect()
            }
            _ => Err(mismatch()),
        }
    }

    /// An ARRAY of STRING (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        self.get_array_of(key, "ARRAY of STRING", MetadataValue::as_str)
    }

    /// An ARRAY of FLOAT32 (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        self.get_array_of(key, "ARRAY of FLOAT32", |v| match v {
            MetadataValue::F32(x) => Some(*x),
            _ => None,
        })
    }

    /// An ARRAY of any integer type whose values fit i32 (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        self.get_array_of(key, "ARRAY of integers that fit i32", |v| {
            v.as_integer().and_then(|n| i32::try_from(n).ok())
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })
    }

    fn unsupported(&self, info: &TensorInfo) -> GgufError {
        GgufError::UnsupportedType {
            path: self.path.clone(),
            name: info.name.clone(),
            type_id: info.ggml_type.0,
            type_name: info.ggml_type.to_string(),
        }
    }

    /// A tensor's raw bytes as stored.
    pub fn tensor_data(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let (info, range) = self.tensor_range(name)?;
        Ok((info, &self.bytes[range]))
    }

    /// A tensor's bytes as stored, as the whole file's shared buffer and where in it they
    /// start: what a quantised matrix keeps instead of a copy.
    pub fn tensor_blocks(
        &self,
        name: &str,
    ) -> Result<(&TensorInfo, Arc<Vec<u8>>, usize), GgufError> {
        let (info, range) = self.tensor_range(name)?;
        Ok((info, Arc::clone(&self.bytes), range.start))
    }

    fn tensor_range(&self, name: &str) -> Result<(&TensorInfo, std::ops::Range<usize>), GgufError> {
        let info = self.require_tensor(name)?;
        let Some(n_bytes) = info.n_bytes() else {
            return Err(self.unsupported(info));
        };
        // Checked again here: the fields are public and may have changed since reading.
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some((start, start.checked_add(n_bytes)?)))
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        match range.filter(|r| r.end <= self.bytes.len()) {
            Some(range) => Ok((info, range)),
            None => Err(GgufError::Format {
                path: self.path.clone(),
                message: format!(
                    "tensor `{name}` ({n_bytes} bytes at data offset {}) runs past the end of the file",
                    info.offset
                ),
            }),
        }
    }

    /// A tensor dequantised to f32, with its shape in PyTorch / numpy order.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let info = self.require_tensor(name)?;
        if !info.ggml_type.can_dequantize() {
            return Err(self.unsupported(info));
        }
        let (info, data) = self.tensor_data(name)?;
        let values = dequantize(info.ggml_type, data).ok_or_else(|| self.unsupported(info))?;
        Ok((info.shape(), values))
    }
}

struct Parsed {
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<TensorInfo>,
    alignment: u32,
    data_offset: u64,
}

/// A bounds-checked little-endian cursor; `what` names the item being read, for messages.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
    what: String,
}

impl<'a> Parser<'a> {
    fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Self {
            bytes,
            pos: 0,
            path,
            what: "the header".to_string(),
        }
    }

    fn format(&self, message: String) -> GgufError {
        GgufError::Format {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos.min(self.bytes.len())) as u64
    }

    fn truncated(&self, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what: self.what.clone(),
            offset: self.pos as u64,
            needed,
            len: self.bytes.len() as u64,
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let (all, pos) = (self.bytes, self.pos);
        let bytes = usize::try_from(n)
            .ok()
            .and_then(|n| Some((n, pos.checked_add(n)?)))
            .and_then(|(n, end)| Some((n, all.get(pos..end)?)));
        match bytes {
            Some((n, b)) => {
                self.pos += n;
                Ok(b)
            }
            None => Err(self.truncated(n)),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64)?;
        // `take` returned exactly N bytes.
        b.try_into().map_err(|_| self.truncated(N as u64))
    }

    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        let start = self.pos;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            self.format(format!(
                "{}: string at offset {start} is not valid UTF-8 ({e})",
                self.what
            ))
        })
    }

    /// Refuses a count of items that cannot fit in the bytes left, before allocating.
    fn check_count(&self, count: u64, min_size: u64, item: &str) -> Result<usize, GgufError> {
        let fits = count <= self.remaining() / min_size.max(1);
        match usize::try_from(count) {
            Ok(n) if fits => Ok(n),
            _ => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: format!(
                    "{}: {count} {item}(s) of at least {min_size} byte(s)",
                    self.what
                ),
                offset: self.pos as u64,
                needed: count.saturating_mul(min_size),
                len: self.bytes.len() as u64,
            }),
        }
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<MetadataValue, GgufError> {
        Ok(match ty {
            ValueType::U8 => MetadataValue::U8(self.u8()?),
            ValueType::I8 => MetadataValue::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => MetadataValue::U16(self.u16()?),
            ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => MetadataValue::U32(self.u32()?),
            ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(self.array()?)),
            // As gguf-py (numpy's bool) reads it: any non-zero byte is true.
            ValueType::Bool => MetadataValue::Bool(self.u8()? != 0),
            ValueType::String => MetadataValue::String(self.string()?),
            ValueType::U64 => MetadataValue::U64(self.u64()?),
            ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.format(format!(
                        "{}: arrays nested deeper than {MAX_ARRAY_DEPTH}",
                        self.what
                    )));
                }
                let element_type = self.value_type()?;
                let count = self.u64()?;
                let count =
                    self.check_count(count, element_type.min_size(), element_type.name())?;
                let mut values = Vec::with_capacity(count);
                for _ in 0..count {
                    values.push(self.value(element_type, depth + 1)?);
                }
                MetadataValue::Array {
                    element_type,
                    values,
                }
            }
        })
    }

    fn value_type(&mut self) -> Result<ValueType, GgufError> {
        let id = self.u32()?;
        ValueType::from_id(id)
            .ok_or_else(|| self.format(format!("{}: unknown metadata value type {id}", self.what)))
    }

    fn parse(mut self) -> Result<Parsed, GgufError> {
        let magic = self.bytes.get(..4).unwrap_or(self.bytes);
        if magic != MAGIC {
            return Err(GgufError::BadMagic {
                path: self.path.to_path_buf(),
                found: magic.escape_ascii().to_string(),
            });
        }
        self.pos = 4;
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            // A big-endian file's version reads byte-swapped here.
            if (2..=3).contains(&version.swap_bytes()) {
                return Err(self.format(format!(
                    "big-endian GGUF (version {}) is not supported",
                    version.swap_bytes()
                )));
            }
            return Err(GgufError::UnsupportedVersion {
                path: self.path.to_path_buf(),
                version,
            });
        }
        let n_tensors = self.u64()?;
        let n_kv = self.u64()?;

        self.what = "the metadata count".to_string();
        // A key is at least its u64 length, a value its u32 type and one byte.
        let n_kv = self.check_count(n_kv, 13, "metadata entry")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            self.what = format!("metadata entry #{i}");
            let key = self.string()?;
            self.what = format!("metadata `{key}`");
            let ty = self.value_type()?;
            let value = self.value(ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(self.format(format!("duplicate metadata key `{key}`")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(MetadataValue::U32(a)) if a.is_power_of_two() => *a,
            Some(MetadataValue::U32(a)) => {
                return Err(self.format(format!("general.alignment {a} is not a power of two")));
            }
            Some(other) => {
                return Err(self.format(format!(
                    "general.alignment is {}, expected UINT32",
                    other.type_description()
                )));
            }
        };

        self.what = "the tensor count".to_string();
        // A name's u64 length, n_dims u32, type u32 and offset u64.
        let n_tensors = self.check_count(n_tensors, 24, "tensor info")?;
        let mut tensors = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            self.what = format!("tensor info #{i}");
            let name = self.string()?;
            self.what = format!("tensor info `{name}`");
            let n_dims = self.u32()?;
            if n_dims > MAX_DIMS {
                return Err(self.format(format!(
                    "tensor `{name}` has {n_dims} dimensions, more than ggml's {MAX_DIMS}"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| self.u64())
                .collect::<Result<Vec<_>, _>>()?;
            let ggml_type = GgmlType(self.u32()?);
            let offset = self.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        let align = u64::from(alignment);
        let data_offset = (self.pos as u64).div_ceil(align).saturating_mul(align);
        let data_len = (self.bytes.len() as u64).saturating_sub(data_offset);
        let mut names = std::collections::HashSet::new();
        for t in &tensors {
            let name = &t.name;
            if !names.insert(name.as_str()) {
                return Err(self.format(format!("duplicate tensor `{name}`")));
            }
            match t.n_elements().map(usize::try_from) {
                Some(Ok(_)) => {}
                _ => {
                    return Err(self.format(format!(
                        "tensor `{name}` has dims {:?}, too many elements",
                        t.dims
                    )));
                }
            }
            if t.offset % align != 0 {
                return Err(self.format(format!(
                    "tensor `{name}` has offset {}, not a multiple of the alignment {alignment}",
                    t.offset
                )));
            }
            // An unknown type has no known size: such a tensor is refused when it is read.
            let Some((block, _)) = t.ggml_type.block() else {
                continue;
            };
            if t.dims.first().copied().unwrap_or(1) % block != 0 {
                return Err(self.format(format!(
                    "tensor `{name}` of type {} has dims {:?}: the first is not a multiple of the block size {block}",
                    t.ggml_type, t.dims
                )));
            }
            let Some(n_bytes) = t.n_bytes() else {
                return Err(self.format(format!(
                    "tensor `{name}` of type {} with dims {:?} is too large for any file",
                    t.ggml_type, t.dims
                )));
            };
            match t.offset.checked_add(n_bytes) {
                Some(end) if end <= data_len => {}
                _ => {
                    return Err(GgufError::Truncated {
                        path: self.path.to_path_buf(),
                        what: format!("the data of tensor `{name}`"),
                        offset: data_offset.saturating_add(t.offset),
                        needed: n_bytes,
                        len: self.bytes.len() as u64,
                    });
                }
            }
        }
        Ok(Parsed {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }
}

/// Dequantises whole blocks of `ggml_type` to f32, exactly as gguf-py's `gguf.quants` (and
/// ggml's `dequantize_row_*`) compute them. `None` for a type it does not handle or data that
/// is not a whole number of blocks.
pub fn dequantize(ggml_type: GgmlType, data: &[u8]) -> Option<Vec<f32>> {
    match ggml_type {
        GgmlType::F32 => blocks::<4, 1>(data, |b, y| y[0] = f32::from_le_bytes(*b)),
        GgmlType::F16 => blocks::<2, 1>(data, |b, y| y[0] = f16::from_le_bytes(*b).to_f32()),
        GgmlType::BF16 => blocks::<2, 1>(data, |b, y| y[0] = bf16::from_le_bytes(*b).to_f32()),
        GgmlType::Q4_0 => blocks(data, q4_0),
        GgmlType::Q4_1 => blocks(data, q4_1),
        GgmlType::Q5_0 => blocks(data, q5_0),
        GgmlType::Q5_1 => blocks(data, q5_1),
        GgmlType::Q8_0 => blocks(data, q8_0),
        GgmlType::Q2_K => blocks(data, q2_k),
        GgmlType::Q3_K => blocks(data, q3_k),
        GgmlType::Q4_K => blocks(data, q4_k),
        GgmlType::Q5_K => blocks(data, q5_k),
        GgmlType::Q6_K => blocks(data, q6_k),
        _ => None,
    }
}

/// Applies `f` to each `N`-byte block, giving `M` values each.
fn blocks<const N: usize, const M: usize>(
    data: &[u8],
    f: impl Fn(&[u8; N], &mut [f32; M]),
) -> Option<Vec<f32>> {
    let (blocks, rest) = data.as_chunks::<N>();
    if !rest.is_empty() {
        return None;
    }
    let mut out = vec![0.0f32; blocks.len().checked_mul(M)?];
    let (outs, _) = out.as_chunks_mut::<M>();
    for (b, y) in blocks.iter().zip(outs) {
        f(b, y);
    }
    Some(out)
}

fn half(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

// The legacy 32-element blocks: low nibbles give elements 0..16, high nibbles 16..32; the
// fifth bits of Q5 sit in a little-endian u32, bit j for element j. gguf-py computes
// `d * q (+ m)` in f32, and so does this (no fused multiply-add), so results match bit for bit.

fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = half(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        let lo = (q & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        y[j] = d * f32::from(i16::from(lo) - 16);
        y[j + 16] = d * f32::from(i16::from(hi) - 16);
    }
}

fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m) = (half(b[0], b[1]), half(b[2], b[3]));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let q = b[8 + j];
        let lo = (q & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        y[j] = d * f32::from(lo) + m;
        y[j + 16] = d * f32::from(hi) + m;
    }
}

// The K-quants: 256-element super-blocks of 16 or 8 sub-blocks with their own scales. Within
// each 128 (Q2_K, Q3_K, Q6_K) or 64 (Q4_K, Q5_K) elements, successive groups of 32 take
// successive bit fields of the same 32 (or 64) bytes.

fn q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (half(b[80], b[81]), half(b[82], b[83]));
    for (p, out) in y.iter_mut().enumerate() {
        let (h, r) = (p / 128, p % 128);
        let q = (qs[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
        let sc = scales[p / 16];
        let dl = d * f32::from(sc & 0xF);
        let ml = dmin * f32::from(sc >> 4);
        *out = dl * f32::from(q) - ml;
    }
}

fn q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
    let d = half(b[108], b[109]);
    // Sixteen 6-bit scales: low nibbles in bytes 0..8 (low then high halves), top two bits
    // in bytes 8..12 (two bits per scale, four scales per byte across the four bytes).
    let mut dl = [0.0f32; 16];
    for (k, dl) in dl.iter_mut().enumerate() {
        let low = if k < 8 {
            scales[k] & 0xF
        } else {
            scales[k - 8] >> 4
        };
        let high = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
        *dl = d * f32::from(i16::from(low | (high << 4)) - 32);
    }
    for (p, out) in y.iter_mut().enumerate() {
        let (h, r) = (p / 128, p % 128);
        let low = (qs[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
        // A set mask bit means no offset; a clear one subtracts 4.
        let high = (hmask[p % 32] >> (p / 32)) & 1;
        let q = i16::from(low) - if high == 0 { 4 } else { 0 };
        *out = dl[p / 16] * f32::from(q);
    }
}

fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let (d, dmin) = (half(b[0], b[1]), half(b[2], b[3]));
    let (sc, m) = scale_min_k4(&b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for (p, out) in y.iter_mut().enumerate() {
        let (c, r) = (p / 64, p % 64);
        let low = (qs[c * 32 + r % 32] >> (4 * (r / 32))) & 0xF;
        let high = (qh[p % 32] >> (p / 32)) & 1;
        let s = p / 32;
        let d1 = d * f32::from(sc[s]);
        let m1 = dmin * f32::from(m[s]);
        *out = d1 * f32::from(low | (high << 4)) - m1;
    }
}
