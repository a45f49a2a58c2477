//! The binaries as a user meets them: `--help`, the run record, one-line errors.

use std::path::Path;
use std::process::{Command, Output};

const BINARIES: [(&str, &str); 6] = [
    ("pretrain", env!("CARGO_BIN_EXE_pretrain")),
    ("finetune", env!("CARGO_BIN_EXE_finetune")),
    ("evaluate", env!("CARGO_BIN_EXE_evaluate")),
    ("infer", env!("CARGO_BIN_EXE_infer")),
    ("sweep", env!("CARGO_BIN_EXE_sweep")),
    ("inspect", env!("CARGO_BIN_EXE_inspect")),
];

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_binary_has_help_with_the_common_flags() {
    for (name, bin) in BINARIES {
        let out = run(bin, &["--help"]);
        assert!(out.status.success(), "{name} --help: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        // `evaluate` and `infer` read their config from the run they use, `sweep` from its spec.
        if name == "sweep" {
            for flag in [
                "--dry-run",
                "--summarize",
                "--jobs",
                "--results-dir",
                "--device",
            ] {
                assert!(text.contains(flag), "sweep --help lacks {flag}:\n{text}");
            }
        } else if !["inspect", "evaluate", "infer"].contains(&name) {
            for flag in ["--config", "--set", "--output-dir", "--device"] {
                assert!(text.contains(flag), "{name} --help lacks {flag}:\n{text}");
            }
        }
    }
    let out = run(env!("CARGO_BIN_EXE_inspect"), &["data", "--help"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--set"));
    for sub in ["score", "comment", "suggest", "personalize"] {
        let out = run(env!("CARGO_BIN_EXE_infer"), &[sub, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in [
            "--checkpoint",
            "--output",
            "--list",
            "--strict",
            "--set",
            "--device",
        ] {
            assert!(
                text.contains(flag),
                "infer {sub} --help lacks {flag}:\n{text}"
            );
        }
        assert_eq!(text.contains("--examples"), sub == "personalize", "{text}");
    }
    let out = run(env!("CARGO_BIN_EXE_evaluate"), &["degradations", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--checkpoint", "--images", "--device"] {
        assert!(
            text.contains(flag),
            "evaluate degradations --help lacks {flag}:\n{text}"
        );
    }
}

#[test]
fn a_missing_sweep_spec_is_one_line_naming_it() {
    let out = run(
        env!("CARGO_BIN_EXE_sweep"),
        &["experiments/nowhere/sweep.yaml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("sweep: error: cannot read the sweep spec experiments/nowhere/sweep.yaml")
            && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn pretrain_records_the_run_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("run");
    let out_str = out_dir.to_str().expect("utf8");
    let args = [
        "--output-dir",
        out_str,
        "--set",
        "seed=11",
        "--set",
        "data.loader.batch_size=5",
        "--set",
        "pretrain.hold_out=28",
    ];
    let out = run(env!("CARGO_BIN_EXE_pretrain"), &args);
    // Holding back 28 of the 29 sample photos leaves too few to train on: a one-line error,
    // after the run was recorded.
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("29 photos found") && err.trim_end().lines().count() == 1,
        "{err}"
    );

    let resolved =
        std::fs::read_to_string(out_dir.join("config.resolved.yaml")).expect("resolved config");
    assert!(
        resolved.contains("seed: 11") && resolved.contains("batch_size: 5"),
        "{resolved}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json")).expect("run.json"))
            .expect("json");
    assert_eq!(record["seed"], 11);
    assert_eq!(record["command"], "pretrain");
    let line: Vec<&str> = record["command_line"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(&line[1..], &args);
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        assert_eq!(
            record["git_commit"],
            String::from_utf8_lossy(&head.stdout).trim()
        );
    }
    // A second run into the same directory would lose the first: refused unless --overwrite.
    let again = run(env!("CARGO_BIN_EXE_pretrain"), &args);
    assert!(stderr(&again).contains("--overwrite"), "{}", stderr(&again));
}

#[test]
fn config_errors_are_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.yaml");
    std::fs::write(&file, "data:\n  loader:\n    shufle: true\n").expect("write");
    let out = run(
        env!("CARGO_BIN_EXE_inspect"),
        &["config", "--config", file.to_str().expect("utf8")],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("data.loader.shufle")
            && err.contains("typo.yaml")
            && err.contains("`shuffle`"),
        "{err}"
    );
}

#[test]
fn inspect_config_prints_the_resolved_yaml() {
    let out = run(
        env!("CARGO_BIN_EXE_inspect"),
        &[
            "config",
            "--config",
            "configs/pretrain/calm_vitl14.yaml",
            "--set",
            "model.mfam.low.num_query_tokens=12",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("kind: clip") && yaml.contains("num_query_tokens: 12"),
        "{yaml}"
    );
}

#[test]
fn unknown_or_missing_device_is_a_clear_error() {
    let out = run(
        env!("CARGO_BIN_EXE_inspect"),
        &["config", "--device", "tpu"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("expected cpu, wgpu, cuda:N or cuda:auto"),
        "{}",
        stderr(&out)
    );
    if cfg!(not(feature = "cuda")) {
        let out = run(
            env!("CARGO_BIN_EXE_inspect"),
            &["data", "--device", "cuda:0"],
        );
        assert!(stderr(&out).contains("--features cuda"), "{}", stderr(&out));
    }
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/samples/MANIFEST.csv")
            .exists()
    );
}

#[test]
fn inspect_data_lists_skipped_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/samples");
    std::fs::copy(
        samples.join("scikit-image__coins.jpg"),
        dir.path().join("coins.jpg"),
    )
    .expect("copy");
    std::fs::write(dir.path().join("fake.png"), "text").expect("write");
    let source = format!("data.source.path={}", dir.path().display());
    let out = run(env!("CARGO_BIN_EXE_inspect"), &["data", "--set", &source]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("skipped") && stdout.contains("fake.png: not a JPEG, PNG or WebP image"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 images, 1 loaded in 1 batches of shape [1, 3, 224, 224], 1 skipped"),
        "{stdout}"
    );
    let strict = run(
        env!("CARGO_BIN_EXE_inspect"),
        &[
            "data",
            "--set",
            &source,
            "--set",
            "data.loader.bad_images=fail",
        ],
    );
    assert!(!strict.status.success());
    assert!(stderr(&strict).contains("fake.png"), "{}", stderr(&strict));
}

#[test]
fn default_run_directories_never_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = calm::run::RunDir::create_unique(dir.path()).expect("first");
    let b = calm::run::RunDir::create_unique(dir.path()).expect("second");
    assert_ne!(a.path(), b.path());
    assert!(a.path().is_dir() && b.path().is_dir());
}
