//! The `pretrain` binary on a tiny configuration (real EfficientNet-Lite0 at 64 px and the real
//! MiniLM, fetched by scripts/fetch_models.sh; 2-layer 32-wide Q-Formers): a run that is
//! killed after a checkpoint and resumed computes exactly the losses and weights of a run
//! never stopped; the run directory holds what the issue lists; its event files read back
//! with an independent reader; and `evaluate degradations` reproduces the summary.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::tfrecord;

const STEPS: usize = 24;

fn pretrain(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretrain"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
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
    common::ok(pretrain(&args).output().expect("runs"));
    (dir, run)
}

/// `evaluate degradations`' JSON for a run (or checkpoint) on the run's held-out photos.
fn evaluate(checkpoint: &Path, run: &Path) -> serde_json::Value {
    let out = common::ok(
        Command::new(env!("CARGO_BIN_EXE_evaluate"))
            .args(["degradations", "--checkpoint"])
            .arg(checkpoint)
            .arg("--images")
            .arg(run.join("held_out"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("runs"),
    );
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

#[test]
fn a_killed_run_resumes_to_the_same_losses_and_weights() {
    let (dir, config) = setup();
    let config = config.to_str().expect("utf8");
    let whole = dir.path().join("whole");
    let killed = dir.path().join("killed");
    common::ok(
        pretrain(&[
            "--config",
            config,
            "--output-dir",
            whole.to_str().expect("utf8"),
        ])
        .output()
        .expect("runs"),
    );

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

    let out = common::ok(
        pretrain(&["--resume", killed.to_str().expect("utf8")])
            .output()
            .expect("runs"),
    );
    let summary = json(&killed.join("summary.json"));
    let from = summary["resumed_from"].as_u64().expect("resumed_from") as usize;
    assert!(
        from > 0 && from < STEPS && from.is_multiple_of(3),
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
    // Resuming needs a run (its resolved config), and keeps the run's own config.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let err = pretrain(&["--resume", empty.to_str().expect("utf8")])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success()
            && text.contains("not a pretraining run")
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

/// Issue #19, item 2: with the default config (Q-Formers copied from MiniLM's BERT), every
/// parameter has Adam state after the first step: each took part in the loss and got its
/// gradient. Before, only 97 of 165 had.
#[test]
fn after_one_default_step_every_parameter_has_optimizer_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = dir.path().join("run");
    common::ok(
        pretrain(&[
            "--output-dir",
            run.to_str().expect("utf8"),
            "--set",
            "pretrain.steps=1",
            "--set",
            "pretrain.schedule.warmup_steps=0",
            "--set",
            "pretrain.evaluation.severities=[1.0]",
        ])
        .output()
        .expect("runs"),
    );
    let found = calm::experiment::pretrain::find_run(&run).expect("run");
    assert_eq!(
        found.config.pretrain.qformer_init,
        calm::train::pretrain::QFormerInit::Bert
    );
    let device = burn::tensor::Device::flex();
    let frozen =
        calm::train::pretrain::Frozen::load(&found.config.model, &device).expect("encoders");
    let model =
        calm::experiment::pretrain::initial_model(&found.config, &frozen, &device).expect("model");
    let bytes = std::fs::read(run.join("checkpoints/step-00000001/optimizer.bpk")).expect("bpk");
    let record =
        burn::optim::OptimizerRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .expect("optimizer state");
    let parameters = burn::module::Module::num_params(&model);
    let tensors = common::param_bits(&model).len();
    assert!(tensors > 100 && parameters > 1_000_000, "{tensors} tensors");
    // Adam keeps two moments per parameter tensor that has had a gradient.
    assert_eq!(
        record.len(),
        2 * tensors,
        "{} of {tensors} parameter tensors have optimizer state after step 1",
        record.len() / 2
    );
}

/// The photos of a tiny run's data folder: `n` sample photos.
fn sample_folder(dir: &Path, n: usize) -> PathBuf {
    let folder = dir.join("photos");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for photo in common::sample_photo_paths().iter().take(n) {
        std::fs::copy(photo, folder.join(photo.file_name().expect("name"))).expect("copy");
    }
    folder
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Issue #19, item 4: `--overwrite` leaves nothing of the earlier run: its metrics, events,
/// checkpoints and held-out photos are gone; a folder that is not a run is never emptied.
#[test]
fn overwrite_replaces_every_file_of_the_earlier_run() {
    let (dir, config) = setup();
    let run = dir.path().join("run");
    let folder = sample_folder(dir.path(), 8);
    let first = [
        "--config",
        config.to_str().expect("utf8"),
        "--output-dir",
        run.to_str().expect("utf8"),
        "--set",
        "pretrain.steps=4",
        "--set",
        "seed=1",
        "--set",
    ];
    let data = format!("data.source.path={}", folder.display());
    let mut args = first.to_vec();
    args.push(&data);
    common::ok(pretrain(&args).output().expect("runs"));
    let old_held = entries(&run.join("held_out"));
    std::fs::write(run.join("notes.txt"), "a file of the old run").expect("write");
    let mut args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "seed=1" { "seed=2" } else { *a })
        .collect();
    args.extend(["--set", "pretrain.steps=2", "--overwrite"]);
    common::ok(pretrain(&args).output().expect("runs"));
    assert_eq!(metrics(&run).len(), 2, "metrics of one run only");
    assert_eq!(entries(&run.join("events")).len(), 1);
    assert_eq!(
        entries(&run.join("checkpoints")),
        ["latest", "step-00000002"]
    );
    assert!(!run.join("notes.txt").exists());
    let summary = json(&run.join("summary.json"));
    let held: Vec<String> = summary["held_out"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p.as_str().expect("path").to_string())
        .collect();
    let split = json(&run.join("split.json"));
    assert_eq!(
        split["held_out"].as_array().expect("list").len(),
        held.len()
    );
    let new_held = entries(&run.join("held_out"));
    assert_eq!(new_held.len(), 2);
    assert_ne!(old_held, new_held, "seed 2 holds out other photos");
    for (name, path) in new_held.iter().zip(&held) {
        assert!(
            name.ends_with(
                Path::new(path)
                    .file_name()
                    .expect("name")
                    .to_str()
                    .expect("utf8")
            )
        );
    }
    // Not a run: refused, and nothing deleted.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("precious.txt"), "keep").expect("write");
    let out = pretrain(&["--output-dir", other.to_str().expect("utf8"), "--overwrite"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("holds files but no run"),
        "{err}"
    );
    assert!(other.join("precious.txt").is_file());
}

/// Issue #19, items 5 and 8: a resumed run keeps the split it recorded although its data
/// folder changed, and says so; the debris of a killed run (temporary files and checkpoint
/// folders) is removed; `checkpoints/latest` cannot name a folder outside the run.
#[test]
fn a_resumed_run_keeps_its_split_and_removes_the_debris_of_killed_ones() {
    let (dir, config) = setup();
    let run = dir.path().join("run");
    let folder = sample_folder(dir.path(), 8);
    let data = format!("data.source.path={}", folder.display());
    common::ok(
        pretrain(&[
            "--config",
            config.to_str().expect("utf8"),
            "--output-dir",
            run.to_str().expect("utf8"),
            "--set",
            "pretrain.steps=3",
            "--set",
            &data,
        ])
        .output()
        .expect("runs"),
    );
    let split = json(&run.join("split.json"));
    let held = entries(&run.join("held_out"));
    // Four more photos: a fresh draw over 12 photos would hold out others.
    for photo in common::sample_photo_paths().iter().skip(8).take(4) {
        std::fs::copy(photo, folder.join(photo.file_name().expect("name"))).expect("copy");
    }
    let debris = [
        run.join("checkpoints/.step-00000002.99999.tmp"),
        run.join(".summary.json.99999.tmp"),
    ];
    std::fs::create_dir(&debris[0]).expect("mkdir");
    std::fs::write(debris[0].join("model.safetensors"), [0u8; 1000]).expect("write");
    std::fs::write(&debris[1], "{").expect("write");
    let out = common::ok(
        pretrain(&["--resume", run.to_str().expect("utf8")])
            .output()
            .expect("runs"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the data changed since this run started (4 photos added, 0 gone)"),
        "{err}"
    );
    assert_eq!(json(&run.join("split.json")), split);
    assert_eq!(entries(&run.join("held_out")), held);
    assert_eq!(json(&run.join("summary.json"))["train_photos"], 6);
    for d in &debris {
        assert!(!d.exists(), "{} left", d.display());
    }
    // A `latest` naming a folder elsewhere is refused, not followed.
    std::fs::write(run.join("checkpoints/latest"), "../../elsewhere\n").expect("write");
    let out = pretrain(&["--resume", run.to_str().expect("utf8")])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert!(
        !out.status.success()
            && errors.len() == 1
            && errors[0].contains("not a checkpoint folder of this run"),
        "{err}"
    );
}

/// Issue #19, item 3: bad photos among the training and the held-out photos are skipped
/// wherever they are read (training batches, the held-out copy, the evaluation after
/// training, `evaluate degradations`), and the run writes its results.
#[test]
fn bad_photos_are_skipped_in_training_held_out_and_evaluation() {
    let (dir, config) = setup();
    let folder = sample_folder(dir.path(), 6);
    for (name, bytes) in [
        (
            "zz_strip.png",
            common::hostile::png(&common::hostile::small_rgb(20000, 10)),
        ),
        ("zz_bomb.jpg", common::hostile::jpeg_bomb(65000, 65000)),
        ("zz_text.jpg", b"not a photo".to_vec()),
    ] {
        common::hostile::write(&folder.join(name), &bytes);
    }
    common::hostile::symlink(&folder.join("nowhere.jpg"), &folder.join("zz_dangling.jpg"));
    common::hostile::fifo(&folder.join("zz_fifo.jpg"));
    let paths = calm::data::formats::scan_folder(&folder, false).expect("scan");
    let bad = |p: &PathBuf| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("zz_"))
    };
    // A seed whose draw holds out two bad photos and one good one.
    let seed = (0..1000)
        .find(|&seed| {
            let split = calm::train::pretrain::split_photos(
                paths.clone(),
                calm::train::pretrain::HoldOut::Count(3),
                seed,
            )
            .expect("split");
            split.held_out.iter().filter(|p| bad(p)).count() == 2
        })
        .expect("a seed");
    let run = dir.path().join("run");
    let seed_set = format!("seed={seed}");
    let data = format!("data.source.path={}", folder.display());
    let out = common::ok(
        pretrain(&[
            "--config",
            config.to_str().expect("utf8"),
            "--output-dir",
            run.to_str().expect("utf8"),
            "--set",
            &seed_set,
            "--set",
            &data,
            "--set",
            "pretrain.hold_out=3",
            // One photo a step for a whole epoch of the 8 training photos (5 good, 3 bad): every
            // bad one is met, and each is replaced by the next good one.
            "--set",
            "pretrain.steps=8",
            "--set",
            "pretrain.schedule.warmup_steps=1",
            "--set",
            "data.loader.batch_size=1",
        ])
        .output()
        .expect("runs"),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pairwise accuracy"));
    let summary = json(&run.join("summary.json"));
    let skipped: Vec<&str> = summary["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    let split = calm::train::pretrain::split_photos(
        paths.clone(),
        calm::train::pretrain::HoldOut::Count(3),
        seed,
    )
    .expect("split");
    for p in split.held_out.iter().filter(|p| bad(p)) {
        let name = p.display().to_string();
        assert!(
            skipped
                .iter()
                .any(|s| s.starts_with(&name) && s.ends_with("(held out)")),
            "{name} not in {skipped:?}"
        );
    }
    let bad_training: Vec<&PathBuf> = split.train.iter().filter(|p| bad(p)).collect();
    assert_eq!(bad_training.len(), 3);
    for p in bad_training {
        let name = p.display().to_string();
        assert!(
            skipped
                .iter()
                .any(|s| s.starts_with(&name) && !s.ends_with("(held out)")),
            "{name} not skipped in training: {skipped:?}"
        );
    }
    // Every step still trained on one photo.
    assert_eq!(summary["images_seen"], 8 * 2);
    assert_eq!(
        summary["degradations"]["photos"]
            .as_array()
            .expect("photos")
            .len(),
        1
    );
    assert_eq!(entries(&run.join("held_out")).len(), 1);
    // `evaluate degradations` on the whole folder: the good photos, each bad one skipped.
    let out = common::ok(
        Command::new(env!("CARGO_BIN_EXE_evaluate"))
            .args(["degradations", "--checkpoint"])
            .arg(&run)
            .arg("--images")
            .arg(&folder)
            .output()
            .expect("runs"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["photos"].as_array().expect("photos").len(), 6);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("evaluate: skipping"))
            .count(),
        5,
        "{err}"
    );
}

/// Issue #19: a run killed at random moments (right after its first checkpoint, then at
/// random points of each resumption: while loading, training, writing a checkpoint or
/// evaluating), and resumed each time, ends bit-identical to a run never stopped.
#[test]
fn killed_at_random_moments_and_resumed_each_time_a_run_ends_as_if_never_stopped() {
    let (dir, config) = setup();
    let config = config.to_str().expect("utf8");
    let whole = dir.path().join("whole");
    let start = Instant::now();
    common::ok(
        pretrain(&[
            "--config",
            config,
            "--output-dir",
            whole.to_str().expect("utf8"),
        ])
        .output()
        .expect("runs"),
    );
    let full = start.elapsed();
    let killed = dir.path().join("killed");
    let spawn = |args: &[&str]| {
        pretrain(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawns")
    };
    let killed_str = killed.to_str().expect("utf8");
    let kills = common::kill_at_random_until_done(
        &killed,
        || spawn(&["--config", config, "--output-dir", killed_str]),
        || spawn(&["--resume", killed_str]),
        full.mul_f64(0.5),
    );
    println!("{kills} kills");
    assert!(kills >= 3, "only {kills} kills");
    assert_eq!(metrics(&whole), metrics(&killed));
    let model = |run: &Path| {
        calm::io::checkpoint::Tensors::read(&run.join("model.safetensors"))
            .expect("model")
            .tensors
    };
    assert!(model(&whole) == model(&killed), "final weights differ");
    assert_eq!(
        json(&whole.join("summary.json"))["degradations"],
        json(&killed.join("summary.json"))["degradations"]
    );
    assert!(
        entries(&killed.join("checkpoints"))
            .iter()
            .all(|n| !n.ends_with(".tmp")),
        "debris left"
    );
}
