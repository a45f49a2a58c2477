//! Experiment sweeps: expansion of grid, zip, list and seed axes; ids that stay the same for
//! the same overrides; the runner skipping finished runs, resuming interrupted ones and not
//! letting a failing run stop the others (with stand-in processes); the tables and figures;
//! and the `sweep` binary end to end on tiny `pretrain` runs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use calm::sweep::runner::{RunState, STATUS, Start, Status, read_status, run_all, run_state};
use calm::sweep::summary::collect;
use calm::sweep::{PlannedRun, Sweep, config_id};
use serde_json::{Value, json};

fn spec(dir: &Path, text: &str) -> Sweep {
    let folder = dir.join("exp");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let path = folder.join("sweep.yaml");
    std::fs::write(&path, text).expect("write spec");
    Sweep::read(&path).expect("spec reads")
}

fn expand(text: &str) -> Result<Vec<PlannedRun>, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("exp");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let path = folder.join("sweep.yaml");
    std::fs::write(&path, text).expect("write spec");
    let sweep = Sweep::read(&path).map_err(|e| e.to_string())?;
    sweep.expand().map_err(|e| e.to_string())
}

fn sets(run: &PlannedRun) -> Vec<&str> {
    run.sets.iter().map(String::as_str).collect()
}

#[test]
fn grid_is_a_cartesian_product_zip_walks_in_step_list_and_seeds_multiply() {
    let runs = expand(
        "command: pretrain
set: {pretrain.steps: 10}
grid:
  pretrain.schedule.peak_lr: [1.0e-4, 3.0e-4]
  data.loader.batch_size: [2, 4, 8]
zip:
  model.mfam.low.num_query_tokens: [4, 8]
  model.mfam.high.num_query_tokens: [5, 9]
list:
  - {}
  - {model.mfam.thematic.enabled: false}
seeds: [1, 2]
",
    )
    .expect("expands");
    assert_eq!(runs.len(), 2 * 3 * 2 * 2 * 2);
    // Zipped keys always pair their i-th values, never 4 with 9.
    for run in &runs {
        let low = &run.swept["model.mfam.low.num_query_tokens"];
        let high = &run.swept["model.mfam.high.num_query_tokens"];
        assert!(
            (low, high) == (&json!(4), &json!(5)) || (low, high) == (&json!(8), &json!(9)),
            "{low} with {high}"
        );
    }
    // The first run: shared overrides, then the swept keys sorted, then the seed.
    assert_eq!(
        sets(&runs[0]),
        [
            "pretrain.steps=10",
            "data.loader.batch_size=2",
            "model.mfam.high.num_query_tokens=5",
            "model.mfam.low.num_query_tokens=4",
            "pretrain.schedule.peak_lr=0.0001",
            "seed=1"
        ]
    );
    // Seeds of one configuration are adjacent and share its config id.
    assert_eq!(runs[0].config_id, runs[1].config_id);
    assert_eq!((runs[0].seed, runs[1].seed), (Some(1), Some(2)));
    assert_eq!(runs[1].id, format!("{}-seed2", runs[1].config_id));
    assert_eq!(sets(&runs[2]).last(), Some(&"seed=1"));
    assert!(sets(&runs[2]).contains(&"model.mfam.thematic.enabled=false"));
    let configs: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.config_id.as_str()).collect();
    assert_eq!(configs.len(), 24);
}

#[test]
fn several_bases_become_an_axis_and_paths_are_relative_to_the_spec() {
    let runs = expand(
        "command: finetune
base: [../configs/a.yaml, b.yaml]
list: [{seed: 3}, {seed: 4}]
",
    )
    .expect("expands");
    assert_eq!(runs.len(), 4);
    let base = runs[0].base.as_ref().expect("a base");
    assert!(
        base.ends_with("exp/../configs/a.yaml"),
        "{}",
        base.display()
    );
    assert_eq!(runs[0].swept["base"], json!("a"));
    assert_eq!(runs[2].swept["base"], json!("b"));
    assert_eq!(sets(&runs[0]), ["seed=3"], "the base is no --set");
    assert_ne!(runs[0].config_id, runs[2].config_id);
}

#[test]
fn ids_depend_on_the_overrides_only_and_never_change() {
    let id = |pairs: &[(&str, Value)]| {
        let map: BTreeMap<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        config_id(&map, &[])
    };
    // Fixed literals: an id that changed between versions would orphan every results folder.
    assert_eq!(id(&[]), "base-08f44b07");
    assert_eq!(
        id(&[("pretrain.schedule.peak_lr", json!(0.0001))]),
        "schedule.peak_lr=0.0001-ffc0cdf5"
    );
    assert_eq!(
        id(&[("model.mfam.low.enabled", json!(false))]),
        "low.enabled=false-9d7ddd59"
    );
    // The order a spec lists keys in does not matter; values and keys do.
    let a = expand("command: pretrain\ngrid: {a.x: [1], b.y: [2]}\n").expect("a");
    let b = expand("command: pretrain\ngrid: {b.y: [2]}\nzip: {a.x: [1]}\n").expect("b");
    assert_eq!(a[0].id, b[0].id);
    assert_ne!(id(&[("a.x", json!(1))]), id(&[("a.x", json!(2))]));
    assert_ne!(id(&[("a.x", json!(1))]), id(&[("a.y", json!(1))]));
    // Slugs stay short and file-name safe; the hash keeps long ones apart.
    let long = id(&[(
        "data.source.path",
        json!("/some folder/with spaces/".repeat(8)),
    )]);
    assert!(long.len() <= 64 + 9, "{long}");
    assert!(!long.contains(['/', ' ']), "{long}");
}

#[test]
fn malformed_specs_are_refused_with_the_reason() {
    let cases = [
        (
            "command: pretrain\nzip: {a.b: [1, 2], c.d: [1]}\n",
            "zip lists must have one length",
        ),
        (
            "command: pretrain\ngrid: {a.b: [1]}\nlist: [{a.b: 2}]\n",
            "`a.b` is in both grid and list",
        ),
        (
            "command: pretrain\nset: {a.b: 1}\ngrid: {a.b: [2]}\n",
            "in both set and grid",
        ),
        (
            "command: pretrain\ngrid: {seed: [1]}\nseeds: [1]\n",
            "`seeds` both set the seed",
        ),
        (
            "command: pretrain\ngrid: {a.b: []}\n",
            "grid key `a.b` has no values",
        ),
        (
            "command: pretrain\nlist: [{a.b: 1}, {a.b: 1}]\n",
            "expand to the same overrides",
        ),
        ("command: pretrain\nseeds: [1, 1]\n", "repeats a seed"),
        ("command: evaluate\nbase: e.yaml\n", "needs `checkpoint`"),
        (
            "command: pretrain\ncheckpoint: run\n",
            "evaluate sweeps only",
        ),
        ("command: pretrain\ngird: {a.b: [1]}\n", "gird"),
        ("command: train\n", "train"),
    ];
    for (text, wanted) in cases {
        let err = expand(text).expect_err(text);
        assert!(err.contains(wanted), "{text}: {err}");
    }
}

#[test]
fn a_bad_key_or_value_names_the_run_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = spec(
        tmp.path(),
        "command: pretrain\nlist: [{}, {model.mfam.low.num_querys: 4}]\n",
    );
    let runs = sweep.expand().expect("expands");
    assert!(sweep.resolve(&runs[0]).is_ok());
    let err = sweep
        .resolve(&runs[1])
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains(&runs[1].id), "{err}");
    assert!(
        err.contains("num_querys") && err.contains("num_query_tokens"),
        "{err}"
    );
}

/// A stand-in for a run's process: `sh -c SCRIPT` in the run directory, with the start mode in
/// `$START`.
fn shell(script: &'static str) -> impl Fn(&PlannedRun, &Path, Start) -> Command {
    move |run, dir, start| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("RUN", &run.id)
            .env("START", format!("{start:?}"));
        c
    }
}

/// Writes `summary.json` from the seed; the run of `seed: 2` in the `bad` configuration fails.
/// Its output (the run's log) says how it started and which files it found.
const SCRIPT: &str = r#"
echo "start $START"
echo "found $(ls | tr '\n' ' ')"
echo '{}' > config.resolved.yaml
case "$RUN" in
  bad*) echo "pretrain: error: reading data/nowhere: No such file or directory" >&2; exit 3 ;;
esac
seed=${RUN##*seed}
echo "{\"score\": {\"value\": 0.$seed}, \"loss\": $seed}" > summary.json
"#;

fn fake_plan(tmp: &Path) -> (Sweep, Vec<PlannedRun>) {
    let sweep = spec(
        tmp,
        "command: pretrain\nlist: [{}, {x.y: 1}]\nseeds: [1, 2, 3]\nmetrics: [score.value, loss, absent]\n",
    );
    let mut plan = sweep.expand().expect("expands");
    // Name the second configuration so the script can fail it.
    for run in plan.iter_mut().filter(|r| r.swept.contains_key("x.y")) {
        run.id = format!("bad-{}", run.id);
    }
    (sweep, plan)
}

/// The `start` lines of a run's log: one per attempt, kept across restarts.
fn starts(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log.txt"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("start "))
        .map(String::from)
        .collect()
}

/// The files each attempt found when it started.
fn found(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("found "))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn a_failing_run_is_recorded_and_the_others_still_run_at_any_job_count() {
    for jobs in [1, 2, 4] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_, plan) = fake_plan(tmp.path());
        let results = tmp.path().join("results");
        let mut progress = Vec::new();
        let outcomes = run_all(&plan, &results, jobs, &shell(SCRIPT), &mut progress).expect("runs");
        assert_eq!(outcomes.len(), 6);
        for (outcome, run) in outcomes.iter().zip(&plan) {
            assert_eq!(outcome.id, run.id, "outcomes in plan order");
            let status = outcome.status.as_ref().expect("ran");
            let on_disk = read_status(&results.join(&run.id)).expect("status file");
            assert_eq!(&on_disk, status);
            if run.id.starts_with("bad") {
                assert_eq!(status.status, Status::Failed);
                assert_eq!(status.exit_code, Some(3));
                assert_eq!(
                    status.error.as_deref(),
                    Some("pretrain: error: reading data/nowhere: No such file or directory")
                );
            } else {
                assert_eq!(status.status, Status::Succeeded, "{}", run.id);
                assert_eq!(status.error, None);
            }
        }
        let log = String::from_utf8(progress).expect("utf8");
        assert_eq!(log.matches("FAILED bad-").count(), 3, "{log}");
    }
}

#[test]
fn finished_runs_are_skipped_failed_ones_restarted_interrupted_ones_resumed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, plan) = fake_plan(tmp.path());
    let results = tmp.path().join("results");
    run_all(&plan, &results, 2, &shell(SCRIPT), &mut Vec::new()).expect("first pass");
    let dir = |i: usize| results.join(&plan[i].id);
    assert_eq!(run_state(&dir(0)), RunState::Succeeded);
    assert!(matches!(run_state(&dir(3)), RunState::Failed(e) if e.contains("nowhere")));
    // Run 1 was killed after a checkpoint, run 2 before its first one.
    for i in [1, 2] {
        std::fs::remove_file(dir(i).join(STATUS)).expect("rm status");
        std::fs::write(dir(i).join("run.json"), "{}").expect("run.json");
    }
    // Runs 1 (interrupted) and 4 (failed, say killed for memory) have a checkpoint.
    for i in [1, 4] {
        let step = dir(i).join("checkpoints/step-00000002");
        std::fs::create_dir_all(&step).expect("mkdir");
        std::fs::write(step.join("state.json"), "{}").expect("state");
        std::fs::write(dir(i).join("checkpoints/latest"), "step-00000002").expect("latest");
    }
    assert!(matches!(run_state(&dir(4)), RunState::Failed(_)));
    assert_eq!(
        run_state(&dir(1)),
        RunState::Interrupted { resumable: true }
    );
    assert_eq!(
        run_state(&dir(2)),
        RunState::Interrupted { resumable: false }
    );

    let outcomes = run_all(&plan, &results, 2, &shell(SCRIPT), &mut Vec::new()).expect("again");
    assert_eq!(outcomes[0].status, None, "finished: skipped");
    assert_eq!(starts(&dir(0)), ["start Fresh"]);
    assert_eq!(starts(&dir(1)), ["start Fresh", "start Resume"]);
    assert_eq!(starts(&dir(2)), ["start Fresh", "start Restart"]);
    assert_eq!(starts(&dir(3)), ["start Fresh", "start Restart"]);
    // A failed run with a checkpoint resumes: a restart would delete its checkpoints.
    assert_eq!(starts(&dir(4)), ["start Fresh", "start Resume"]);
    assert!(found(&dir(4))[1].contains("checkpoints"));
    // Issue #19, item 4: a restart finds nothing of the earlier attempt but its log; a
    // resumption finds its checkpoint.
    assert_eq!(found(&dir(2))[1], "log.txt");
    assert_eq!(found(&dir(3))[1], "log.txt");
    assert!(
        found(&dir(1))[1].contains("checkpoints"),
        "{:?}",
        found(&dir(1))
    );
    assert!(outcomes[1].status.as_ref().expect("ran").resumed);
    assert_eq!(run_state(&dir(1)), RunState::Succeeded);
}

#[test]
fn a_run_that_cannot_start_fails_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, plan) = fake_plan(tmp.path());
    let results = tmp.path().join("results");
    let command = |run: &PlannedRun, dir: &Path, start: Start| {
        if run.id.starts_with("bad") {
            Command::new(tmp.path().join("no-such-program"))
        } else {
            shell(SCRIPT)(run, dir, start)
        }
    };
    let outcomes = run_all(&plan, &results, 1, &command, &mut Vec::new()).expect("runs");
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| {
            o.status
                .as_ref()
                .is_some_and(|s| s.status == Status::Failed)
        })
        .map(|o| o.id.as_str())
        .collect();
    assert_eq!(failed.len(), 3);
    let error = read_status(&results.join(failed[0]))
        .and_then(|s| s.error)
        .expect("error");
    assert!(error.starts_with("cannot start"), "{error}");
}

#[test]
fn the_summary_pools_seeds_into_mean_and_sample_std() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sweep, plan) = fake_plan(tmp.path());
    let results = tmp.path().join("results");
    run_all(&plan, &results, 2, &shell(SCRIPT), &mut Vec::new()).expect("runs");
    let summary = collect(&sweep, &plan, &results);
    let csv = summary.summary_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "config,x.y,runs,failed,score.value_mean,score.value_std,loss_mean,loss_std,absent_mean,absent_std"
    );
    // Seeds 1, 2, 3: score 0.1, 0.2, 0.3 (numpy: mean 0.2, std(ddof=1) 0.1); loss 1, 2, 3.
    let good: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(
        good[1], "",
        "x.y is not in the base config, so no value resolves"
    );
    assert_eq!(&good[2..4], ["3", "0"]);
    let mean: f64 = good[4].parse().expect("mean");
    let std: f64 = good[5].parse().expect("std");
    assert!(
        (mean - 0.2).abs() < 1e-12 && (std - 0.1).abs() < 1e-12,
        "{mean} {std}"
    );
    assert_eq!(&good[6..], ["2", "1", "", ""]);
    let bad: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(&bad[1..], ["1", "0", "3", "", "", "", "", "", ""]);
    let runs = summary.runs_csv();
    assert!(runs.starts_with("run_id,config,seed,status,x.y,score.value,loss,absent,error\n"));
    assert_eq!(runs.matches(",failed,").count(), 3);
    let md = summary.summary_md("test");
    assert!(
        md.contains("| 0.2000 ± 0.1000 | 2.0000 ± 1.0000 | – |"),
        "{md}"
    );
    assert!(md.contains("3 failed"), "{md}");
}

#[test]
fn figures_are_pngs_with_something_drawn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (sweep, plan) = fake_plan(tmp.path());
    let results = tmp.path().join("results");
    run_all(&plan, &results, 2, &shell(SCRIPT), &mut Vec::new()).expect("runs");
    // Event files for two runs, and a scoring run's predictions.
    for (i, run) in plan.iter().take(2).enumerate() {
        let events = results.join(&run.id).join("events");
        std::fs::create_dir_all(&events).expect("mkdir");
        let mut w = calm::train::tensorboard::EventWriter::create(&events).expect("events");
        for step in 0..20 {
            w.scalar("loss/total", step, 5.0 / (1.0 + step as f32) + i as f32)
                .expect("scalar");
        }
    }
    std::fs::write(
        results.join(&plan[0].id).join("predictions.csv"),
        "image,score,score_numeric,score_levels,mos\na.jpg,5.1,5,5.1,5.5\nb.jpg,6.2,6,6.2,6.0\nc.jpg,4.0,4,4.0,3.9\n",
    )
    .expect("predictions");
    let summary = collect(&sweep, &plan, &results);
    let written = calm::sweep::plots::draw_all(&summary, "loss/total", &results).expect("plots");
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "learning_curves.png",
        "score_value_by_config.png",
        "score_value_vs_x_y.png",
        "loss_vs_x_y.png",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("scatter_base-")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("absent")),
        "no figure without values"
    );
    for path in &written {
        let image = image::open(path).expect("a PNG").to_rgb8();
        assert_eq!(image.dimensions(), (960, 600));
        let coloured = image
            .pixels()
            .filter(|p| p.0.iter().max() != p.0.iter().min())
            .count();
        // Three scatter points are the smallest figure: ~130 pixels.
        assert!(
            coloured > 100,
            "{}: {coloured} coloured pixels",
            path.display()
        );
    }
}

// The binary end to end, on tiny pretraining runs (the configuration of tests/pretrain.rs).

fn sweep_cmd(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("sweep runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

#[test]
fn the_binary_runs_skips_resumes_summarizes_and_reports_failures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let exp = tmp.path().join("exp");
    std::fs::create_dir_all(&exp).expect("mkdir");
    std::fs::write(exp.join("tiny.yaml"), common::TINY_PRETRAIN).expect("base");
    let spec_text = "command: pretrain
base: tiny.yaml
set: {pretrain.steps: 4, pretrain.checkpoint_every: 2, pretrain.schedule.warmup_steps: 1}
list:
  - {}
  - {data.source.path: /nonexistent/photos}
seeds: [1, 2]
";
    let spec = exp.join("sweep.yaml");
    std::fs::write(&spec, spec_text).expect("spec");
    let results_root = tmp.path().join("results");
    let flag = |s: &str| PathBuf::from(s);
    let args = |extra: &[&str]| -> Vec<PathBuf> {
        let mut a = vec![spec.clone(), flag("--results-dir"), results_root.clone()];
        a.extend(extra.iter().map(|s| flag(s)));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        sweep_cmd(&a.iter().map(PathBuf::as_path).collect::<Vec<_>>())
    };

    let dry = run(&["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let listed = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(listed.contains("4 runs"), "{listed}");
    assert!(
        !results_root.join("exp").exists(),
        "a dry run writes nothing"
    );

    let first = run(&["--jobs", "2"]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "two runs fail: {}",
        text(&first)
    );
    let out = text(&first);
    assert!(out.contains("2 of 4 runs have not succeeded"), "{out}");
    assert!(
        out.contains("/nonexistent/photos"),
        "the error names the cause: {out}"
    );
    let results = results_root.join("exp");
    let runs_csv = std::fs::read_to_string(results.join("runs.csv")).expect("runs.csv");
    assert_eq!(runs_csv.matches(",succeeded,").count(), 2, "{runs_csv}");
    assert_eq!(runs_csv.matches(",failed,").count(), 2, "{runs_csv}");
    let good: Vec<PathBuf> = ["base-08f44b07-seed1", "base-08f44b07-seed2"]
        .iter()
        .map(|id| results.join(id))
        .collect();
    // Each run directory is a `pretrain` run of its own config: the seed and steps applied.
    for (dir, seed) in good.iter().zip([1, 2]) {
        let config = std::fs::read_to_string(dir.join("config.resolved.yaml")).expect("config");
        assert!(config.contains(&format!("seed: {seed}\n")), "{config}");
        assert!(read_json(&dir.join("run.json"))["command"] == "pretrain");
        assert_eq!(read_json(&dir.join("summary.json"))["steps"], 4);
    }
    // The table's mean and std are those of the two runs' own summaries.
    let accs: Vec<f64> = good
        .iter()
        .map(|d| {
            read_json(&d.join("summary.json"))["degradations"]["pairwise_accuracy"]
                .as_f64()
                .expect("accuracy")
        })
        .collect();
    let mean = (accs[0] + accs[1]) / 2.0;
    let std = (accs[0] - accs[1]).abs() / 2f64.sqrt();
    let summary = std::fs::read_to_string(results.join("summary.csv")).expect("summary");
    let row: Vec<&str> = summary.lines().nth(1).expect("row").split(',').collect();
    assert_eq!(row[0], "base-08f44b07");
    let (got_mean, got_std): (f64, f64) = (row[4].parse().expect("m"), row[5].parse().expect("s"));
    assert!(
        (got_mean - mean).abs() < 1e-12 && (got_std - std).abs() < 1e-12,
        "{summary}"
    );
    assert!(results.join("learning_curves.png").is_file());
    assert!(results.join("summary.md").is_file());

    // Seed 1 is stopped after its step-2 checkpoint; seed 2 finished.
    let interrupted = &good[0];
    std::fs::remove_file(interrupted.join(STATUS)).expect("rm status");
    std::fs::write(interrupted.join("checkpoints/latest"), "step-00000002").expect("latest");
    let dry = run(&["--dry-run"]);
    let listed = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        listed.contains("base-08f44b07-seed1\tinterrupted, resumes"),
        "{listed}"
    );
    assert!(listed.contains("base-08f44b07-seed2\tdone"), "{listed}");
    assert!(listed.contains("failed before"), "{listed}");
    let log_before = std::fs::read_to_string(good[1].join("log.txt")).expect("log");
    let second = run(&[]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert_eq!(
        std::fs::read_to_string(good[1].join("log.txt")).expect("log"),
        log_before,
        "a finished run is not run again"
    );
    assert_eq!(
        read_json(&interrupted.join("summary.json"))["resumed_from"],
        2
    );
    assert!(read_status(interrupted).expect("status").resumed);

    // --summarize rebuilds the tables and figures from the folders alone.
    for f in [
        "summary.csv",
        "summary.md",
        "runs.csv",
        "learning_curves.png",
    ] {
        std::fs::remove_file(results.join(f)).expect("rm");
    }
    let logs: Vec<String> = good
        .iter()
        .map(|d| std::fs::read_to_string(d.join("log.txt")).expect("log"))
        .collect();
    let summarized = run(&["--summarize"]);
    assert_eq!(summarized.status.code(), Some(1), "still two failed runs");
    for f in [
        "summary.csv",
        "summary.md",
        "runs.csv",
        "learning_curves.png",
    ] {
        assert!(results.join(f).is_file(), "{f}");
    }
    for (d, log) in good.iter().zip(&logs) {
        assert_eq!(
            &std::fs::read_to_string(d.join("log.txt")).expect("log"),
            log
        );
    }

    // A spec whose shared overrides changed would mix configs in one table: --dry-run lists
    // the finished runs as stale; running is refused.
    std::fs::write(&spec, spec_text.replace("steps: 4", "steps: 5")).expect("spec");
    let changed = run(&["--dry-run"]);
    assert!(changed.status.success(), "{}", text(&changed));
    let listed = String::from_utf8_lossy(&changed.stdout).to_string();
    assert!(
        listed.contains("base-08f44b07-seed2\tstale (made with another config)"),
        "{listed}"
    );
    let refused = run(&[]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("made with another config"),
        "{}",
        text(&refused)
    );
}

/// Issue #19, item 9: on a fresh clone every committed experiment lists its runs, and none is
/// stale: the committed results are what the code as it now is makes of each spec.
#[test]
fn every_committed_experiment_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root.join("experiments"))
        .expect("experiments")
        .map(|e| e.expect("entry").path().join("sweep.yaml"))
        .filter(|p| p.is_file())
        .collect();
    specs.sort();
    assert!(specs.len() >= 2, "{specs:?}");
    for spec in specs {
        let out = sweep_cmd(&[&spec, Path::new("--dry-run")]);
        let listed = text(&out);
        assert!(out.status.success(), "{listed}");
        let rows: Vec<&str> = listed.lines().filter(|l| l.contains('\t')).collect();
        assert!(!rows.is_empty(), "{listed}");
        for row in rows {
            assert!(
                row.split('\t').nth(1) == Some("done"),
                "{}: {row}",
                spec.display()
            );
        }
    }
}

#[test]
fn a_sweep_named_dots_or_planning_too_many_runs_is_refused() {
    for name in [".", ".."] {
        let err =
            expand(&format!("name: \"{name}\"\ncommand: pretrain\n")).expect_err("a name of dots");
        assert!(err.contains("name"), "{err}");
    }
    // 8 keys of 40 values: 6.5 x 10^12 runs from a few hundred bytes.
    let values: Vec<String> = (1..=40).map(|v| v.to_string()).collect();
    let grid: String = (0..8)
        .map(|k| format!("  pretrain.k{k}: [{}]\n", values.join(", ")))
        .collect();
    let start = std::time::Instant::now();
    let err = expand(&format!("command: pretrain\ngrid:\n{grid}")).expect_err("too many runs");
    assert!(err.contains("more than 10000 runs"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    let grid: String = (0..2)
        .map(|k| format!("  pretrain.k{k}: [{}]\n", values.join(", ")))
        .collect();
    assert_eq!(
        expand(&format!("command: pretrain\ngrid:\n{grid}"))
            .expect("1600 runs")
            .len(),
        1600
    );
}

/// A pretraining run does not read the `finetune:` and `infer:` sections, so a change there
/// (a new fine-tuning default) leaves it current; a change to any section it reads does not.
#[test]
fn a_pretraining_run_is_stale_only_when_a_section_it_reads_changes() {
    use calm::sweep::SweepCommand;
    let base = "seed: 1\nmodel:\n  a: 1\npretrain:\n  steps: 2\nfinetune:\n  lr: 1\ninfer:\n  x: 2\neval:\n  k: 3\n";
    let finetune_changed = base.replace("  lr: 1\n", "  lr: 2\n  new: true\n");
    let infer_changed = base.replace("  x: 2\n", "  x: 5\n");
    let pretrain_changed = base.replace("  steps: 2\n", "  steps: 3\n");
    let eval_changed = base.replace("  k: 3\n", "  k: 4\n");
    let p = SweepCommand::Pretrain;
    assert_eq!(p.read_part(base), p.read_part(&finetune_changed));
    assert_eq!(p.read_part(base), p.read_part(&infer_changed));
    assert_ne!(p.read_part(base), p.read_part(&pretrain_changed));
    assert_ne!(p.read_part(base), p.read_part(&eval_changed));
    assert!(p.read_part(base).contains("eval:\n  k: 3\n"));
    // Fine-tuning reads everything.
    let f = SweepCommand::Finetune;
    assert_ne!(f.read_part(base), f.read_part(&finetune_changed));
}
