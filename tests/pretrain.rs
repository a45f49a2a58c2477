//! The `pretrain` binary on a tiny configuration (real EfficientNet-Lite0 at 64 px and the real
//! MiniLM, fetched by scripts/fetch_models.sh; 2-layer 32-wide Q-Formers): a run that is
//! killed after a checkpoint and resumed computes exactly the losses and weights of a run
//! never stopped; the run directory holds what the issue lists; its event files read back
//! with an independent reader; and `evaluate degradations` reproduces the summary.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::tfrecord;

const STEPS: usize = 24;

fn pretrain(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretrain"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("json")
}

/// `metrics.jsonl` without the timing, which differs between runs.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v.as_object_mut()
                .expect("object")
                .remove("images_per_second");
            v
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tiny.yaml");
    std::fs::write(&config, common::TINY_PRETRAIN).expect("write config");
    (dir, config)
}

/// A finished tiny run with `extra` flags: its temporary folder and run directory.
fn tiny_run(extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let (dir, config) = setup();
    let run = dir.path().join("run");
    let mut args = vec![
        "--config",
        config.to_str().expect("utf8"),
        "--output-dir",
        run.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    ok(pretrain(&args).output().expect("runs"));
    (dir, run)
}

/// `evaluate degradations`' JSON for a run (or checkpoint) on the run's held-out photos.
fn evaluate(checkpoint: &Path, run: &Path) -> serde_json::Value {
    let out = ok(Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .args(["degradations", "--checkpoint"])
        .arg(checkpoint)
        .arg("--images")
        .arg(run.join("held_out"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs"));
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

#[test]
fn a_killed_run_resumes_to_the_same_losses_and_weights() {
    let (dir, config) = setup();
    let config = config.to_str().expect("utf8");
    let whole = dir.path().join("whole");
    let killed = dir.path().join("killed");
    ok(pretrain(&[
        "--config",
        config,
        "--output-dir",
        whole.to_str().expect("utf8"),
    ])
    .output()
    .expect("runs"));

    let mut child = pretrain(&[
        "--config",
        config,
        "--output-dir",
        killed.to_str().expect("utf8"),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawns");
    let latest = killed.join("checkpoints/latest");
    let start = Instant::now();
    while !latest.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    assert!(
        !killed.join("summary.json").exists(),
        "the run finished before it could be killed; make the tiny run longer"
    );
    let before = metrics(&killed).len();
    assert!(before < STEPS, "{before} steps logged before the kill");

    let out = ok(pretrain(&["--resume", killed.to_str().expect("utf8")])
        .output()
        .expect("runs"));
    let summary = json(&killed.join("summary.json"));
    let from = summary["resumed_from"].as_u64().expect("resumed_from") as usize;
    assert!(
        from > 0 && from < STEPS && from % 3 == 0,
        "resumed from {from}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pairwise accuracy"));

    // Every step, before and after the kill, equals the uninterrupted run's, bit for bit.
    let (a, b) = (metrics(&whole), metrics(&killed));
    assert_eq!(a.len(), STEPS);
    assert_eq!(a, b);
    for name in ["itc_low", "itc_middle", "itc_high", "attributes", "ranking"] {
        assert!(a[0]["losses"][name].as_f64().expect(name).is_finite());
    }
    // Tensor by tensor (the files' metadata order is not fixed).
    let model = |run: &Path| {
        calm::io::checkpoint::Tensors::read(&run.join("model.safetensors"))
            .expect("model")
            .tensors
    };
    let (wa, wb) = (model(&whole), model(&killed));
    assert!(wa.len() > 100);
    assert!(wa == wb, "final weights differ");
    // The resumed run's evaluation equals the uninterrupted run's too.
    assert_eq!(
        json(&whole.join("summary.json"))["degradations"],
        summary["degradations"]
    );
    // Resuming needs a checkpoint, and keeps the run's own config.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = pretrain(&["--resume", empty.to_str().expect("utf8")])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success()
            && text.contains("no checkpoints/latest")
            && text.lines().count() == 1,
        "{text}"
    );
    let err = pretrain(&["--resume", "x", "--set", "seed=1"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&err.stderr).contains("cannot be used with"));
}

#[test]
fn the_run_directory_holds_checkpoint_config_events_and_summary() {
    let (_dir, run) = tiny_run(&[]);
    for file in [
        "config.resolved.yaml",
        "run.json",
        "model.safetensors",
        "summary.json",
    ] {
        assert!(run.join(file).is_file(), "{file}");
    }
    // Checkpoints every 3 steps, the newest two kept, `latest` naming the last.
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).expect("latest");
    assert_eq!(latest.trim(), format!("step-{STEPS:08}"));
    let mut kept: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["latest", "step-00000021", "step-00000024"]);
    for file in ["model.safetensors", "optimizer.bpk", "state.json"] {
        assert!(run.join("checkpoints/step-00000024").join(file).is_file());
    }

    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["steps"], STEPS);
    assert_eq!(summary["held_out"].as_array().expect("list").len(), 2);
    assert_eq!(summary["train_photos"], 27);
    let d = &summary["degradations"];
    for key in ["pairwise_accuracy", "random_init_pairwise_accuracy"] {
        let v = d[key].as_f64().expect(key);
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    // 2 photos x 8 kinds x 1 severity.
    assert_eq!(d["pairs"], 16);
    assert_eq!(d["per_kind"].as_object().expect("per_kind").len(), 8);
    let held: Vec<PathBuf> = std::fs::read_dir(run.join("held_out"))
        .expect("held_out")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(held.len(), 2);

    // The event files: valid records, and every loss, the learning rate and the throughput
    // of every step, equal to metrics.jsonl.
    let events: Vec<PathBuf> = std::fs::read_dir(run.join("events"))
        .expect("events")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(events.len(), 1);
    let (version, scalars) = tfrecord::read_events(&std::fs::read(&events[0]).expect("read"));
    assert_eq!(version, "brain.Event:2");
    let mut by_tag: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for s in scalars {
        by_tag.entry(s.tag).or_default().push((s.step, s.value));
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let expect = |tag: &str, pick: &dyn Fn(&serde_json::Value) -> f64| {
        let got = by_tag
            .get(tag)
            .unwrap_or_else(|| panic!("no {tag} in {by_tag:?}"));
        let want: Vec<(i64, f32)> = lines
            .iter()
            .map(|l| (l["step"].as_i64().expect("step"), pick(l) as f32))
            .collect();
        assert_eq!(got, &want, "{tag}");
    };
    expect("loss/total", &|l| l["loss"].as_f64().expect("loss"));
    for name in ["itc_low", "itc_middle", "itc_high", "attributes", "ranking"] {
        expect(&format!("loss/{name}"), &|l| {
            l["losses"][name].as_f64().expect("loss")
        });
    }
    expect("lr", &|l| l["lr"].as_f64().expect("lr"));
    expect("throughput/images_per_second", &|l| {
        l["images_per_second"].as_f64().expect("throughput")
    });
    // The schedule: warm-up from 0, the peak at step 2, decaying after.
    assert_eq!(by_tag["lr"][0].1, 0.0);
    assert_eq!(by_tag["lr"][2].1, 1e-3);

    // `evaluate degradations` on the held-out photos prints what the summary holds; a
    // checkpoint folder names its run too.
    assert_eq!(evaluate(&run, &run), summary["degradations"]);
    let step = evaluate(&run.join("checkpoints/step-00000024"), &run);
    assert_eq!(
        step["pairwise_accuracy"],
        summary["degradations"]["pairwise_accuracy"]
    );
}

#[test]
fn gradient_accumulation_feeds_several_micro_batches_to_each_step() {
    let (_dir, run) = tiny_run(&[
        "--set",
        "pretrain.steps=3",
        "--set",
        "pretrain.gradient_accumulation=2",
        "--set",
        "pretrain.schedule.warmup_steps=1",
        "--set",
        "pretrain.max_grad_norm=null",
    ]);
    let summary = json(&run.join("summary.json"));
    // 3 steps x 2 micro-batches x (2 photos + 2 copies).
    assert_eq!(summary["images_seen"], 24);
    let state = json(&run.join("checkpoints/step-00000003/state.json"));
    assert_eq!(
        (state["step"].clone(), state["micro_batches"].clone()),
        (3.into(), 6.into())
    );
    assert_eq!(metrics(&run).len(), 3);
}
