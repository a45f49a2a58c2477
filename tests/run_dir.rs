//! A run's directory: `--overwrite` empties a run and nothing else, a killed run's debris is
//! removed, and recording the git state leaves the source tree alone.

use std::path::Path;
use std::process::Command;

use calm::run::{RunDir, clear, git_state_of};
use calm::train::checkpoints::remove_debris;

fn touch(path: &Path) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, "x").expect("write");
}

#[test]
fn overwrite_empties_a_run_and_refuses_any_other_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    for f in [
        "run.json",
        "config.resolved.yaml",
        "metrics.jsonl",
        "events/a",
        "checkpoints/step-00000003/model.safetensors",
        "held_out/000_a.jpg",
    ] {
        touch(&run.join(f));
    }
    let outside = tmp.path().join("outside.txt");
    touch(&outside);
    std::os::unix::fs::symlink(&outside, run.join("link")).expect("symlink");
    let err = RunDir::create(&run, false).expect_err("a run is there");
    assert!(err.to_string().contains("--overwrite"), "{err}");
    RunDir::create(&run, true).expect("overwrite");
    let left: Vec<_> = std::fs::read_dir(&run)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["run.lock"], "only the (empty) lock file stays");
    assert!(outside.is_file(), "a link is removed, never followed");

    // A folder of other files is never emptied; an empty one or a new one is fine.
    let other = tmp.path().join("other");
    touch(&other.join("precious.txt"));
    let err = RunDir::create(&other, true).expect_err("not a run");
    assert!(err.to_string().contains("no run"), "{err}");
    assert!(other.join("precious.txt").is_file());
    RunDir::create(&tmp.path().join("new"), true).expect("new folder");

    // `clear` keeps what it is told to keep (a sweep's log).
    touch(&run.join("log.txt"));
    touch(&run.join("summary.json"));
    clear(&run, &["log.txt"]).expect("clear");
    let left: Vec<_> = std::fs::read_dir(&run)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["log.txt"]);
}

#[test]
fn the_debris_of_killed_writes_is_removed_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path();
    for f in [
        "checkpoints/.step-00000004.123.tmp/model.safetensors",
        "checkpoints/step-00000002/state.json",
        "checkpoints/latest",
        ".summary.json.456.tmp",
        "summary.json",
        ".hidden_but_mine",
    ] {
        touch(&run.join(f));
    }
    assert_eq!(remove_debris(run).expect("removed"), 2);
    assert!(!run.join("checkpoints/.step-00000004.123.tmp").exists());
    assert!(!run.join(".summary.json.456.tmp").exists());
    for kept in [
        "checkpoints/step-00000002/state.json",
        "checkpoints/latest",
        "summary.json",
        ".hidden_but_mine",
    ] {
        assert!(run.join(kept).exists(), "{kept}");
    }
}

/// Issue #19, item 8: recording a run's git state must not write `.git/index.lock` (nor the
/// index) in the source tree, where it would make a `git commit` running there fail.
#[test]
fn recording_the_git_state_leaves_the_index_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(repo)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("a.txt"), "a").expect("write");
    git(&["add", "a.txt"]);
    git(&["commit", "-qm", "a"]);
    // Same content, new mtime: the index's stat data is stale, which a plain `git status`
    // refreshes by rewriting the index under index.lock.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(repo.join("a.txt"), "a").expect("write");
    let index = repo.join(".git/index");
    let before = std::fs::read(&index).expect("index");
    let (commit, dirty) = git_state_of(repo);
    assert!(commit.is_some_and(|c| c.len() == 40));
    assert_eq!(dirty, Some(false));
    assert_eq!(
        std::fs::read(&index).expect("index"),
        before,
        "the index was rewritten"
    );
}
