//! TensorBoard event files: calm's writer gives the same bytes as TensorBoard's own writer for
//! the same events (fixture from scripts/fixtures/make_tensorboard_fixture.py, which also reads
//! it back with TensorBoard's `EventAccumulator`), and an independent reader (the `crc32c`
//! crate, a protobuf decoder written here) finds valid records and the scalars written.

mod common;

use std::path::Path;

use common::tfrecord;

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
