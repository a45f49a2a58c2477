//! Crash-safe writes: the target is the old file or the new one, never a torn one.

use calm::io::atomic::{temporary_path, write_atomic};

#[test]
fn a_write_replaces_the_file_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latest.safetensors");
    write_atomic(&path, b"first").expect("writes");
    write_atomic(&path, b"second, longer").expect("replaces");
    assert_eq!(std::fs::read(&path).expect("read"), b"second, longer");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["latest.safetensors"], "no temporary file left");
}

#[test]
fn a_crash_mid_write_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latest.json");
    write_atomic(&path, b"{\"step\": 10}").expect("writes");
    // A process killed while writing leaves a partial temporary file, and nothing else.
    std::fs::write(temporary_path(&path), b"{\"step\": 2").expect("partial");
    assert_eq!(std::fs::read(&path).expect("read"), b"{\"step\": 10}");
    // The next write goes through regardless.
    write_atomic(&path, b"{\"step\": 20}").expect("writes");
    assert_eq!(std::fs::read(&path).expect("read"), b"{\"step\": 20}");
}

#[test]
fn a_failed_write_names_the_target_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no/such/dir/x.bin");
    let err = write_atomic(&missing, b"x").expect_err("fails").to_string();
    assert!(err.contains("x.bin"), "{err}");
    let path = dir.path().join("keep.bin");
    write_atomic(&path, b"old").expect("writes");
    // A directory where the temporary file would go makes the write fail.
    std::fs::create_dir(temporary_path(&path)).expect("blocker");
    assert!(write_atomic(&path, b"new").is_err());
    assert_eq!(std::fs::read(&path).expect("read"), b"old");
}
