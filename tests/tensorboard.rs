//! TensorBoard event files: calm's writer gives the same bytes as TensorBoard's own writer for
//! the same events (fixture from scripts/fixtures/make_tensorboard_fixture.py, which also reads
//! it back with TensorBoard's `EventAccumulator`), and an independent reader (the `crc32c`
//! crate, a protobuf decoder written here) finds valid records and the scalars written. calm's
//! reader (used for the sweeps' learning curves) reads TensorBoard's own file back exactly,
//! stops at a record cut short, refuses a corrupted one, and merges a resumed run's files.

mod common;

use std::path::Path;

use common::tfrecord;

use calm::train::tensorboard::{EventWriter, read_curve, read_scalars};

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
    let (version, scalars) = tfrecord::read_events(&bytes);
    assert_eq!(version, "brain.Event:2");
    assert_eq!(scalars.len(), f.events.len());
    for (got, want) in scalars.iter().zip(&f.events) {
        assert!(got.wall_time > 1.7e9, "a current wall time");
        assert_eq!(
            (got.step, got.tag.as_str(), got.value),
            (want.step, want.tag.as_str(), want.value)
        );
    }
}

#[test]
fn calms_reader_reads_tensorboards_own_file() {
    let f = fixture();
    let got = read_scalars(&fixture_dir().join("events.out.tfevents.fixture")).expect("read");
    assert_eq!(got.len(), f.events.len());
    for (got, want) in got.iter().zip(&f.events) {
        assert_eq!(
            (got.step, got.tag.as_str(), got.value.to_bits()),
            (want.step, want.tag.as_str(), want.value.to_bits())
        );
    }
}

#[test]
fn a_record_cut_short_ends_the_reading_and_a_flipped_byte_is_an_error() {
    let bytes = std::fs::read(fixture_dir().join("events.out.tfevents.fixture")).expect("read");
    let all = read_scalars(&fixture_dir().join("events.out.tfevents.fixture")).expect("read");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cut = tmp.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).expect("write");
    assert_eq!(read_scalars(&cut).expect("read"), all[..all.len() - 1]);
    let flipped = tmp.path().join("flipped");
    let mut corrupt = bytes.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x40;
    std::fs::write(&flipped, &corrupt).expect("write");
    let err = read_scalars(&flipped).expect_err("a CRC must catch the flip");
    assert!(err.to_string().contains("CRC"), "{err}");
}

#[test]
fn a_resumed_runs_later_file_replaces_the_steps_it_repeats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut first =
        EventWriter::create_at(&tmp.path().join("events.out.tfevents.1000.calm"), 1000.0)
            .expect("create");
    for step in 0..5 {
        first
            .scalar("loss/total", step, step as f32)
            .expect("write");
        first.scalar("lr", step, 0.5).expect("write");
    }
    drop(first);
    let mut second =
        EventWriter::create_at(&tmp.path().join("events.out.tfevents.2000.calm"), 2000.0)
            .expect("create");
    for step in 3..7 {
        second
            .scalar("loss/total", step, 10.0 + step as f32)
            .expect("write");
    }
    drop(second);
    let curve = read_curve(tmp.path(), "loss/total").expect("read");
    assert_eq!(
        curve,
        vec![
            (0, 0.0),
            (1, 1.0),
            (2, 2.0),
            (3, 13.0),
            (4, 14.0),
            (5, 15.0),
            (6, 16.0)
        ]
    );
    assert!(
        read_curve(&tmp.path().join("absent"), "loss/total")
            .expect("no dir")
            .is_empty()
    );
}
