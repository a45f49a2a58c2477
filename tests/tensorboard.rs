//! TensorBoard event files: calm's writer gives the same bytes as TensorBoard's own writer for
//! the same events (fixture from scripts/fixtures/make_tensorboard_fixture.py, which also reads
//! it back with TensorBoard's `EventAccumulator`), and an independent reader (the `crc32c`
//! crate, a protobuf decoder written here) finds valid records and the scalars written.

use std::path::Path;

use calm::train::tensorboard::EventWriter;

#[derive(serde::Deserialize)]
struct Scalar {
    wall_time: f64,
    step: i64,
    tag: String,
    value: f32,
}

#[derive(serde::Deserialize)]
struct Fixture {
    file_version_wall_time: f64,
    events: Vec<Scalar>,
}

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tensorboard")
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(fixture_dir().join("scalars.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn write(path: &Path, f: &Fixture) {
    let mut w = EventWriter::create_at(path, f.file_version_wall_time).expect("create");
    for e in &f.events {
        w.scalar_at(&e.tag, e.step, e.value, e.wall_time)
            .expect("write");
    }
    w.flush().expect("flush");
}

#[test]
fn the_bytes_equal_tensorboards_own_writer() {
    let f = fixture();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("events.out.tfevents.test");
    write(&path, &f);
    let ours = std::fs::read(&path).expect("read");
    let theirs = std::fs::read(fixture_dir().join("events.out.tfevents.fixture")).expect("read");
    assert_eq!(ours, theirs);
}

/// Splits TFRecords, checking both masked CRCs of each with the `crc32c` crate.
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let masked = |b: &[u8]| {
        let c = crc32c::crc32c(b);
        ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
    };
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8")) as usize;
        assert_eq!(
            u32_at(bytes, at + 8),
            masked(len_bytes),
            "length CRC at {at}"
        );
        let payload = &bytes[at + 12..at + 12 + len];
        assert_eq!(
            u32_at(bytes, at + 12 + len),
            masked(payload),
            "payload CRC at {at}"
        );
        out.push(payload);
        at += 16 + len;
    }
    out
}

/// A minimal protobuf reader: (field, wire value) pairs.
enum Wire<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

fn fields(mut b: &[u8]) -> Vec<(u64, Wire<'_>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let wire = match key & 7 {
            0 => Wire::Varint(varint(&mut b)),
            1 => {
                let v = b[..8].try_into().expect("8");
                b = &b[8..];
                Wire::Fixed64(v)
            }
            5 => {
                let v = b[..4].try_into().expect("4");
                b = &b[4..];
                Wire::Fixed32(v)
            }
            2 => {
                let n = varint(&mut b) as usize;
                let v = &b[..n];
                b = &b[n..];
                Wire::Bytes(v)
            }
            other => panic!("wire type {other}"),
        };
        out.push((key >> 3, wire));
    }
    out
}

#[test]
fn an_independent_reader_finds_valid_records_and_the_scalars() {
    let f = fixture();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = EventWriter::create(tmp.path()).expect("create");
    for e in &f.events {
        w.scalar(&e.tag, e.step, e.value).expect("write");
    }
    let path = w.path().to_path_buf();
    drop(w);
    assert!(
        path.file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .contains("tfevents")
    );
    let bytes = std::fs::read(&path).expect("read");
    let recs = records(&bytes);
    assert_eq!(recs.len(), 1 + f.events.len());
    let version = fields(recs[0]);
    assert!(
        version
            .iter()
            .any(|(n, w)| *n == 3 && matches!(w, Wire::Bytes(b"brain.Event:2")))
    );
    for (rec, want) in recs[1..].iter().zip(&f.events) {
        let (mut wall, mut step, mut tag, mut value) = (0f64, 0i64, String::new(), 0f32);
        for (n, w) in fields(rec) {
            match (n, w) {
                (1, Wire::Fixed64(v)) => wall = f64::from_le_bytes(v),
                (2, Wire::Varint(v)) => step = v as i64,
                (5, Wire::Bytes(summary)) => {
                    for (_, value_msg) in fields(summary) {
                        let Wire::Bytes(value_msg) = value_msg else {
                            panic!("value")
                        };
                        for (m, x) in fields(value_msg) {
                            match (m, x) {
                                (1, Wire::Bytes(t)) => {
                                    tag = String::from_utf8(t.to_vec()).expect("utf8")
                                }
                                (2, Wire::Fixed32(v)) => value = f32::from_le_bytes(v),
                                _ => panic!("unexpected Value field {m}"),
                            }
                        }
                    }
                }
                _ => panic!("unexpected Event field {n}"),
            }
        }
        assert!(wall > 1.7e9, "a current wall time");
        assert_eq!(
            (step, tag.as_str(), value),
            (want.step, want.tag.as_str(), want.value)
        );
    }
}
