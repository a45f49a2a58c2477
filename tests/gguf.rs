//! The GGUF reader against gguf-py (fixtures: `scripts/fixtures/make_gguf_fixtures.py`):
//! a small file from `GGUFWriter` with a tensor of every dequantised type and metadata of
//! every value type, the real SmolLM2 Q4_1 file, and malformed files that must be errors.

use std::path::{Path, PathBuf};

use calm::io::gguf::{GgmlType, GgufError, GgufFile, MetadataValue, ValueType, dequantize};
use calm::io::models::{FetchedModel, model_dir};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture json");
    serde_json::from_str(&text).expect("fixture json parses")
}

fn tiny_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("tiny.gguf")).expect("tiny.gguf")
}

fn tiny() -> GgufFile {
    GgufFile::read(fixtures().join("tiny.gguf")).unwrap_or_else(|e| panic!("{e}"))
}

/// As the fixture script: sum((i + 1) * bits(v[i])) mod 2^64.
fn bit_checksum(values: &[f32]) -> u64 {
    values.iter().enumerate().fold(0u64, |acc, (i, v)| {
        acc.wrapping_add(u64::from(v.to_bits()).wrapping_mul(i as u64 + 1))
    })
}

fn shape_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect()
}

/// Metadata as the fixture script writes gguf-py's view of it, to compare whole.
fn metadata_json(value: &MetadataValue) -> Value {
    match value {
        MetadataValue::Array {
            element_type,
            values,
        } => serde_json::json!({
            "type": "ARRAY",
            "element_type": element_type.name(),
            "value": values.iter().map(|v| metadata_json(v)["value"].clone()).collect::<Vec<_>>(),
        }),
        other => {
            let value = match other {
                MetadataValue::U8(v) => Value::from(*v),
                MetadataValue::I8(v) => Value::from(*v),
                MetadataValue::U16(v) => Value::from(*v),
                MetadataValue::I16(v) => Value::from(*v),
                MetadataValue::U32(v) => Value::from(*v),
                MetadataValue::I32(v) => Value::from(*v),
                MetadataValue::U64(v) => Value::from(*v),
                MetadataValue::I64(v) => Value::from(*v),
                MetadataValue::F32(v) => Value::from(f64::from(*v)),
                MetadataValue::F64(v) => Value::from(*v),
                MetadataValue::Bool(v) => Value::from(*v),
                MetadataValue::String(v) => Value::from(v.as_str()),
                MetadataValue::Array { .. } => unreachable!(),
            };
            serde_json::json!({"type": other.value_type().name(), "value": value})
        }
    }
}

/// JSON equality, with floats compared in the precision they were stored in: serde_json
/// (without `float_roundtrip`) may parse a double one ulp off.
fn same_json(ours: &Value, theirs: &Value, float_type: Option<&str>) -> bool {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let ft = a
                .get("element_type")
                .or(a.get("type"))
                .and_then(Value::as_str);
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_json(v, w, ft)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same_json(v, w, float_type))
        }
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            match float_type {
                Some("FLOAT32") => a as f32 == b as f32,
                _ => a == b || (a - b).abs() <= 1e-15 * a.abs().max(b.abs()),
            }
        }
        _ => ours == theirs,
    }
}

#[test]
fn tiny_header_and_tensor_infos_match_gguf_py() {
    let file = tiny();
    let doc = json("tiny.json");
    assert_eq!(file.version, 3);
    assert_eq!(
        u64::from(file.alignment),
        doc["alignment"].as_u64().unwrap()
    );
    assert_eq!(file.data_offset, doc["data_offset"].as_u64().unwrap());
    let expected = doc["tensors"].as_array().unwrap();
    assert_eq!(file.tensors.len(), expected.len());
    for (info, want) in file.tensors.iter().zip(expected) {
        assert_eq!(info.name, want["name"].as_str().unwrap());
        assert_eq!(
            u64::from(info.ggml_type.0),
            want["type_id"].as_u64().unwrap()
        );
        assert_eq!(info.ggml_type.name(), want["type"].as_str());
        assert_eq!(info.shape(), shape_of(&want["shape"]), "{}", info.name);
        assert_eq!(
            file.data_offset + info.offset,
            want["file_offset"].as_u64().unwrap(),
            "{}",
            info.name
        );
    }
}

#[test]
fn tiny_tensors_dequantise_as_gguf_py() {
    let file = tiny();
    let reference = std::fs::read(fixtures().join("tiny_reference.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&reference).unwrap();
    let mut types = Vec::new();
    for info in &file.tensors {
        if info.ggml_type == GgmlType(20) {
            continue; // IQ4_NL: the unsupported-type test below
        }
        let (shape, values) = file
            .tensor_f32(&info.name)
            .unwrap_or_else(|e| panic!("{e}"));
        let want = reference.tensor(&info.name).unwrap();
        assert_eq!(want.dtype(), Dtype::F32);
        assert_eq!(shape, want.shape(), "{}", info.name);
        let want: Vec<f32> = want
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(values.len(), want.len(), "{}", info.name);
        let max_err = values
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let differing = values
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        eprintln!(
            "{:>8} {:>5} values: max abs error {max_err:e}, {differing} differ in bits",
            info.name,
            values.len()
        );
        // Same f32 operations in the same order as gguf.quants: equal bit for bit.
        assert_eq!(differing, 0, "{}: max abs error {max_err:e}", info.name);
        types.push(info.ggml_type);
    }
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        assert!(types.contains(&ty), "fixture lacks a {ty} tensor");
        assert!(ty.can_dequantize());
    }
}

#[test]
fn an_unsupported_type_is_an_error_naming_tensor_and_type() {
    let file = tiny();
    let err = file.tensor_f32("iq4_nl").unwrap_err();
    assert!(
        matches!(&err, GgufError::UnsupportedType { name, type_id: 20, .. } if name == "iq4_nl"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("`iq4_nl`") && msg.contains("IQ4_NL") && msg.contains("20"),
        "{msg}"
    );
    // Its raw bytes are still there.
    let (_, data) = file.tensor_data("iq4_nl").unwrap();
    assert_eq!(data.len(), 18);
    assert!(dequantize(GgmlType(20), data).is_none());
    // A partial block is refused, not read past.
    assert!(dequantize(GgmlType::Q4_K, &[0u8; 143]).is_none());

    let err = file.tensor_f32("nowhere").unwrap_err();
    assert!(err.to_string().contains("no tensor `nowhere`"), "{err}");
}

#[test]
fn tiny_metadata_matches_gguf_py() {
    let file = tiny();
    let doc = json("tiny.json");
    let expected = doc["metadata"].as_object().unwrap();
    assert_eq!(file.metadata.len(), expected.len());
    for (key, want) in expected {
        let ours = metadata_json(file.get(key).unwrap_or_else(|| panic!("no {key}")));
        assert!(same_json(&ours, want, None), "{key}: {ours} != {want}");
    }
}

#[test]
fn typed_getters_and_their_errors() {
    let file = tiny();
    assert_eq!(file.get_str("general.architecture").unwrap(), "calm-test");
    assert_eq!(file.get_u32("general.alignment").unwrap(), 64);
    assert_eq!(file.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(file.get_u32("test.u8").unwrap(), 200); // widened
    assert_eq!(file.get_i32("test.i16").unwrap(), -30000);
    assert_eq!(file.get_i64("test.i64").unwrap(), -(1i64 << 62) - 3);
    assert_eq!(file.get_u64("test.u64").unwrap(), (1u64 << 63) + 5);
    assert_eq!(file.get_f32("test.f32").unwrap(), 0.1f32);
    assert_eq!(file.get_f64("test.f64").unwrap(), std::f64::consts::E);
    assert_eq!(file.get_f64("test.f32").unwrap(), f64::from(0.1f32));
    assert!(file.get_bool("test.true").unwrap());
    assert!(!file.get_bool("test.false").unwrap());
    assert_eq!(file.get_str("test.string").unwrap(), "héllo, GGUF ✓");
    assert_eq!(file.get_str("test.empty_string").unwrap(), "");
    assert_eq!(
        file.get_str_array("test.str_array").unwrap(),
        ["alpha", "", "γάμμα", "with space"]
    );
    assert_eq!(
        file.get_i32_array("test.i32_array").unwrap(),
        [1, -2, 2_000_000_000]
    );
    assert_eq!(
        file.get_f32_array("test.f32_array").unwrap(),
        [0.5, -1.25, 1e-7]
    );
    let (ty, values) = file.get_array("test.u8_array").unwrap();
    assert_eq!(ty, ValueType::U8);
    assert_eq!(values, [0u8, 255, 7].map(MetadataValue::U8));

    let msg = |e: GgufError| e.to_string();
    let e = msg(file.get_u32("test.nope").unwrap_err());
    assert!(e.contains("no metadata key `test.nope`"), "{e}");
    let e = msg(file.get_str("test.u32").unwrap_err());
    assert!(e.contains("`test.u32` is UINT32, expected STRING"), "{e}");
    let e = msg(file.get_u32("test.i8").unwrap_err());
    assert!(e.contains("`test.i8`") && e.contains("out of range"), "{e}");
    let e = msg(file.get_u32("test.u64").unwrap_err());
    assert!(
        e.contains("`test.u64`") && e.contains("out of range"),
        "{e}"
    );
    let e = msg(file.get_f32("test.f64").unwrap_err());
    assert!(e.contains("`test.f64` is FLOAT64, expected FLOAT32"), "{e}");
    let e = msg(file.get_str_array("test.i32_array").unwrap_err());
    assert!(
        e.contains("`test.i32_array` is ARRAY of INT32, expected ARRAY of STRING"),
        "{e}"
    );
    let e = msg(file.get_bool("test.str_array").unwrap_err());
    assert!(e.contains("ARRAY of STRING, expected BOOL"), "{e}");
}

#[test]
fn version_2_reads_the_same_and_others_are_refused() {
    let bytes = tiny_bytes();
    let v3 = tiny();
    let mut v2 = bytes.clone();
    v2[4] = 2;
    let v2 = GgufFile::from_bytes(v2, "v2.gguf").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v2.version, 2);
    assert_eq!(v2.tensors, v3.tensors);
    assert_eq!(v2.metadata, v3.metadata);
    assert_eq!(
        v2.tensor_f32("q6_k").unwrap(),
        v3.tensor_f32("q6_k").unwrap()
    );

    for version in [0u32, 1, 4, 0x0100_0000] {
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&version.to_le_bytes());
        let err = GgufFile::from_bytes(b, "v.gguf").unwrap_err();
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: v, .. } if v == version),
            "{err:?}"
        );
    }
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    let err = GgufFile::from_bytes(b, "be.gguf").unwrap_err().to_string();
    assert!(err.contains("big-endian"), "{err}");
}

#[test]
fn a_bad_magic_is_an_error() {
    let mut bytes = tiny_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let err = GgufFile::from_bytes(bytes, "x.gguf").unwrap_err();
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err:?}");
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
    for short in [&b""[..], b"G", b"GGU"] {
        let err = GgufFile::from_bytes(short.to_vec(), "short.gguf").unwrap_err();
        assert!(matches!(err, GgufError::BadMagic { .. }), "{err:?}");
    }
    let err = GgufFile::read(fixtures().join("no-such.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err:?}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = tiny_bytes();
    let full = tiny();
    // The end of the last tensor's data; the padding after it may go.
    let needed = full
        .tensors
        .iter()
        .map(|t| full.data_offset + t.offset + t.n_bytes().unwrap())
        .max()
        .unwrap() as usize;
    assert!(needed <= bytes.len());
    for len in 0..bytes.len() {
        match GgufFile::from_bytes(bytes[..len].to_vec(), "cut.gguf") {
            Err(e) => {
                assert!(len < needed, "{len} bytes of {}: {e}", bytes.len());
                let _ = e.to_string();
            }
            Ok(file) => {
                assert!(len >= needed, "{len} bytes of {} read", bytes.len());
                assert_eq!(
                    file.tensor_f32("q5_k").unwrap(),
                    full.tensor_f32("q5_k").unwrap()
                );
            }
        }
    }
    let err = GgufFile::from_bytes(bytes[..200].to_vec(), "cut.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn corrupted_headers_never_panic() {
    let bytes = tiny_bytes();
    let header = tiny().data_offset as usize;
    // xorshift64: deterministic without a dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut read = 0;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = 4 + (next() as usize) % (header - 4);
            b[at] = match next() % 3 {
                0 => 0xFF,
                1 => 0,
                _ => next() as u8,
            };
        }
        if let Ok(file) = GgufFile::from_bytes(b, "fuzz.gguf") {
            read += 1;
            for t in &file.tensors {
                let _ = file.tensor_f32(&t.name);
            }
            for key in file.metadata.keys() {
                let _ = file.get_u32(key);
                let _ = file.get_str_array(key);
            }
        }
    }
    eprintln!("{read} of 3000 corrupted headers still parsed");
}

/// Hand-written GGUF bytes for what GGUFWriter cannot write.
#[derive(Default)]
struct Builder(Vec<u8>);

impl Builder {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut b = Self::default();
        b.0.extend_from_slice(b"GGUF");
        b.u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self) -> &mut Self {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self
    }
    fn read(&self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0.clone(), "built.gguf")
    }
    fn err(&self) -> String {
        match self.read() {
            Ok(_) => panic!("read"),
            Err(e) => e.to_string(),
        }
    }
}

#[test]
fn absurd_counts_and_lengths_are_refused() {
    let e = Builder::header(3, u64::MAX, 0).err();
    assert!(
        e.contains("truncated") && e.contains("tensor info(s)"),
        "{e}"
    );
    let e = Builder::header(3, 0, u64::MAX).err();
    assert!(
        e.contains("truncated") && e.contains("metadata entry(s)"),
        "{e}"
    );
    let e = Builder::header(3, 0, 1).u64(u64::MAX).u64(0).err();
    assert!(
        e.contains("truncated") && e.contains("metadata entry #0"),
        "{e}"
    );
    let e = Builder::header(3, 0, 1).str("k").u32(8).u64(1 << 40).err();
    assert!(e.contains("truncated") && e.contains("metadata `k`"), "{e}");
    let e = Builder::header(3, 0, 1)
        .str("k")
        .u32(9)
        .u32(10)
        .u64(u64::MAX / 2)
        .err();
    assert!(
        e.contains("truncated: metadata `k`: 9223372036854775807 UINT64(s)"),
        "{e}"
    );
    let e = Builder::header(3, 0, 1).str("k").u32(13).u32(0).err();
    assert!(e.contains("unknown metadata value type 13"), "{e}");
    let e = Builder::header(3, 0, 1)
        .str("k")
        .u32(9)
        .u32(99)
        .u64(0)
        .err();
    assert!(e.contains("unknown metadata value type 99"), "{e}");
    let mut b = Builder::header(3, 0, 1);
    b.str("k").u32(8).u64(2);
    b.0.extend_from_slice(&[0xC3, 0x28]);
    let e = b.err();
    assert!(e.contains("`k`") && e.contains("UTF-8"), "{e}");
    let e = Builder::header(3, 0, 2)
        .str("k")
        .u32(4)
        .u32(1)
        .str("k")
        .u32(4)
        .u32(2)
        .err();
    assert!(e.contains("duplicate metadata key `k`"), "{e}");

    // Arrays of arrays: read, to a bounded depth.
    let mut b = Builder::header(3, 0, 1);
    b.str("nested").u32(9).u32(9).u64(2);
    b.u32(5).u64(2).u32(1).u32(2);
    b.u32(5).u64(1).u32(3);
    let file = b.read().unwrap_or_else(|e| panic!("{e}"));
    let (ty, outer) = file.get_array("nested").unwrap();
    assert_eq!(ty, ValueType::Array);
    assert_eq!(outer.len(), 2);
    assert_eq!(
        outer[1],
        MetadataValue::Array {
            element_type: ValueType::I32,
            values: vec![MetadataValue::I32(3)]
        }
    );
    let mut b = Builder::header(3, 0, 1);
    b.str("deep").u32(9);
    for _ in 0..20 {
        b.u32(9).u64(1);
    }
    b.u32(4).u64(0);
    let e = b.err();
    assert!(e.contains("nested deeper"), "{e}");
}

#[test]
fn bad_tensor_infos_are_refused() {
    let one = |dims: &[u64], ty: u32, offset: u64, data: usize| {
        let mut b = Builder::header(3, 1, 0);
        b.tensor("t", dims, ty, offset).pad();
        b.0.extend(std::iter::repeat_n(0u8, data));
        b
    };
    // A good one first: 2 x 32 Q8_0 = 2 blocks of 34 bytes.
    let file = one(&[32, 2], 8, 0, 68)
        .read()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.tensor_f32("t").unwrap(), (vec![2, 32], vec![0.0; 64]));
    assert_eq!(file.data_offset % 32, 0);

    let e = one(&[32, 2], 8, 0, 67).err();
    assert!(e.contains("truncated") && e.contains("tensor `t`"), "{e}");
    let e = one(&[32, 2], 8, 32, 68).err();
    assert!(e.contains("truncated"), "{e}");
    let e = one(&[32, 2], 8, 3, 200).err();
    assert!(e.contains("not a multiple of the alignment 32"), "{e}");
    let e = one(&[31, 2], 8, 0, 200).err();
    assert!(e.contains("not a multiple of the block size 32"), "{e}");
    let e = one(&[1, 1, 1, 1, 1], 0, 0, 200).err();
    assert!(e.contains("5 dimensions"), "{e}");
    let e = one(&[u64::MAX, 4], 0, 0, 200).err();
    assert!(e.contains("too many elements"), "{e}");
    let e = one(&[1 << 62], 0, 0, 200).err();
    assert!(e.contains("too large"), "{e}");
    let e = one(&[1 << 40], 0, 0, 200).err();
    assert!(e.contains("truncated"), "{e}");
    let e = one(&[32], 0, u64::MAX - 31, 200).err();
    assert!(e.contains("truncated"), "{e}");
    let mut b = Builder::header(3, 2, 0);
    b.tensor("t", &[1], 0, 0).tensor("t", &[1], 0, 32).pad();
    b.0.extend([0u8; 64]);
    let e = b.err();
    assert!(e.contains("duplicate tensor `t`"), "{e}");

    // An id newer than this reader: the file opens, the tensor is refused by name and id.
    let file = one(&[32], 99, 0, 0)
        .read()
        .unwrap_or_else(|e| panic!("{e}"));
    let e = file.tensor_f32("t").unwrap_err();
    assert!(
        matches!(&e, GgufError::UnsupportedType { name, type_id: 99, .. } if name == "t"),
        "{e:?}"
    );
    assert!(e.to_string().contains("(id 99)"), "{e}");

    // general.alignment must be a power-of-two UINT32.
    for (ty, value, want) in [
        (4u32, 0u32, "not a power of two"),
        (4, 48, "not a power of two"),
        (5, 64, "expected UINT32"),
    ] {
        let mut b = Builder::header(3, 0, 1);
        b.str("general.alignment").u32(ty).u32(value);
        let e = b.err();
        assert!(e.contains(want), "{e}");
    }
    // A file with no tensors needs no data section.
    let mut b = Builder::header(3, 0, 1);
    b.str("general.alignment").u32(4).u32(256);
    let file = b.read().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((file.alignment, file.data_offset), (256, 256));
}

fn smollm2() -> GgufFile {
    let dir = model_dir(FetchedModel::Smollm2).unwrap_or_else(|e| panic!("{e}"));
    GgufFile::read(dir.join(FetchedModel::Smollm2.main_file())).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn smollm2_metadata_matches_gguf_py() {
    let file = smollm2();
    let doc = json("smollm2.json");
    assert_eq!(file.bytes().len() as u64, doc["file_len"].as_u64().unwrap());
    assert_eq!(u64::from(file.version), doc["version"].as_u64().unwrap());
    assert_eq!(
        u64::from(file.alignment),
        doc["alignment"].as_u64().unwrap()
    );
    assert_eq!(file.data_offset, doc["data_offset"].as_u64().unwrap());
    assert_eq!(
        file.metadata.len() as u64,
        doc["metadata_count"].as_u64().unwrap()
    );

    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    for (key, want) in doc["scalars"].as_object().unwrap() {
        let ours = metadata_json(file.get(key).unwrap_or_else(|| panic!("no {key}")));
        assert!(same_json(&ours, want, None), "{key}: {ours} != {want}");
    }

    let arrays = &doc["arrays"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    let want = &arrays["tokenizer.ggml.tokens"];
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens.len() as u64, want["len"].as_u64().unwrap());
    assert_eq!(tokens[..5], strings(&want["first"]));
    assert_eq!(tokens[tokens.len() - 3..], strings(&want["last"]));
    for (i, token) in want["sample"].as_object().unwrap() {
        assert_eq!(tokens[i.parse::<usize>().unwrap()], token.as_str().unwrap());
    }
    let merges = file.get_str_array("tokenizer.ggml.merges").unwrap();
    let want = &arrays["tokenizer.ggml.merges"];
    assert_eq!(merges.len() as u64, want["len"].as_u64().unwrap());
    assert_eq!(merges[..3], strings(&want["first"]));
    assert_eq!(merges[merges.len() - 2..], strings(&want["last"]));
    let token_type = file.get_i32_array("tokenizer.ggml.token_type").unwrap();
    let want = &arrays["tokenizer.ggml.token_type"];
    assert_eq!(token_type.len() as u64, want["len"].as_u64().unwrap());
    assert_eq!(
        token_type.iter().map(|&t| i64::from(t)).sum::<i64>(),
        want["sum"].as_i64().unwrap()
    );
    let first: Vec<i64> = want["first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(
        token_type[..20]
            .iter()
            .map(|&t| i64::from(t))
            .collect::<Vec<_>>(),
        first
    );
    assert_eq!(
        file.get_str_array("general.languages").unwrap(),
        strings(&arrays["general.languages"]["first"])
    );
    assert_eq!(
        file.get_str("tokenizer.chat_template").unwrap().len() as u64,
        doc["chat_template_len"].as_u64().unwrap()
    );
}

#[test]
fn smollm2_tensors_dequantise_as_gguf_py() {
    let file = smollm2();
    let doc = json("smollm2.json");
    let expected = doc["tensors"].as_array().unwrap();
    assert_eq!(file.tensors.len(), expected.len());
    for (info, want) in file.tensors.iter().zip(expected) {
        let name = want["name"].as_str().unwrap();
        assert_eq!(info.name, name);
        assert_eq!(info.ggml_type.name(), want["type"].as_str(), "{name}");
        let (shape, values) = file.tensor_f32(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shape, shape_of(&want["shape"]), "{name}");
        assert_eq!(
            bit_checksum(&values),
            want["checksum"].as_u64().unwrap(),
            "{name}: dequantised values differ from gguf-py's"
        );
    }

    for (name, ty) in [
        ("token_embd.weight", GgmlType::Q8_0),
        ("blk.0.attn_q.weight", GgmlType::Q4_1),
    ] {
        let want = &doc["detail"][name];
        let (shape, values) = file.tensor_f32(name).unwrap();
        assert_eq!(file.tensor(name).unwrap().ggml_type, ty);
        let mut max_err = 0.0f32;
        for (i, v) in want["indices"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["values"].as_array().unwrap())
        {
            let (i, v) = (i.as_u64().unwrap() as usize, v.as_f64().unwrap() as f32);
            max_err = max_err.max((values[i] - v).abs());
            assert_eq!(values[i], v, "{name}[{i}]");
        }
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let min = values.iter().copied().fold(f32::INFINITY, f32::min);
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
        assert!(
            close(mean, want["mean"].as_f64().unwrap()),
            "{name} mean {mean} vs {}",
            want["mean"]
        );
        assert!(
            close(var.sqrt(), want["std"].as_f64().unwrap()),
            "{name} std {} vs {}",
            var.sqrt(),
            want["std"]
        );
        assert_eq!(min, want["min"].as_f64().unwrap() as f32);
        assert_eq!(max, want["max"].as_f64().unwrap() as f32);
        eprintln!(
            "{name} {shape:?}: samples max abs error {max_err:e}, mean {mean:.6e}, std {:.6}",
            var.sqrt()
        );
    }
}
