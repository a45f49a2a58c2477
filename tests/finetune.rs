//! The `finetune` and `infer` binaries on a tiny setup: a 2-layer, 16-wide random LLaMA with
//! the real LLaMA-2 vocabulary (`../shared/tokenizers/llama-2`) and the Vicuna v1 template,
//! the real EfficientNet-Lite0 at 64 px, a tiny MFAM pretrained for a few steps. A run killed
//! after a checkpoint and resumed computes exactly the losses and weights of a run never
//! stopped; checkpoints hold the trained parameters only; `infer` reports and skips a corrupt
//! image, writes the documented CSV and JSON lines, and its personalized score depends on the
//! rater's examples.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use burn::tensor::Device;

const STEPS: usize = 6;

/// The MFAM of both stages (it must be the pretraining run's), and the LLM.
/// What `infer` runs in these tests, beside `common::TINY_MODEL` (the MFAM of both stages,
/// which must be the pretraining run's, and the LLM).
const INFER: &str = "infer:
  batch_size: 2
  generation: {max_new_tokens: 4}
  score_max_new_tokens: 3
";

fn finetune_section(pretrained: &Path) -> String {
    format!(
        "
finetune:
  pretrained: {}
  batch_size: 2
  checkpoint_every: 2
  keep_checkpoints: 2
  max_length: 96
  lora: {{rank: 2, alpha: 4.0, dropout: 0.0}}
  projector_init: {{kind: least_squares, batches: 2, ridge: 0.1}}
  stages:
    - name: projector
      steps: 2
      schedule: {{peak_lr: 1.0e-3, warmup_steps: 0}}
      trainable: {{mfam: false, projector: true, llm: frozen}}
      mix:
        - ratio: 1.0
          task: {{kind: self_supervised, questions: 2}}
    - name: lora
      steps: {}
      schedule: {{peak_lr: 1.0e-3, warmup_steps: 1}}
      trainable: {{mfam: true, projector: true, llm: lora}}
      mfam_lr_scale: 0.5
      mix:
        - ratio: 1.0
          task: {{kind: self_supervised, turns: 2}}
        - ratio: 0.5
          task: {{kind: simulated_raters, max_shots: 2}}
",
        pretrained.display(),
        STEPS - 2
    )
}

fn bin(name: &str) -> Command {
    let path = match name {
        "pretrain" => env!("CARGO_BIN_EXE_pretrain"),
        "finetune" => env!("CARGO_BIN_EXE_finetune"),
        "evaluate" => env!("CARGO_BIN_EXE_evaluate"),
        _ => env!("CARGO_BIN_EXE_infer"),
    };
    let mut c = Command::new(path);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    /// A finished fine-tuning run, and what it printed.
    run: PathBuf,
    stdout: String,
}

/// One pretraining run and one finished fine-tuning run, shared by the tests.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let llm = common::tiny_llm(&root);
        let pretrain_config = root.join("pretrain.yaml");
        std::fs::write(&pretrain_config, format!("{}{INFER}", common::TINY_MODEL)).expect("write");
        let pretrained = root.join("pretrained");
        common::ok(
            bin("pretrain")
                .arg("--config")
                .arg(&pretrain_config)
                .arg("--output-dir")
                .arg(&pretrained)
                .output()
                .expect("runs"),
        );
        let config = root.join("finetune.yaml");
        let yaml = common::with_llm(&format!("{}{INFER}", common::TINY_MODEL), &llm)
            + &finetune_section(&pretrained);
        std::fs::write(&config, yaml).expect("write");
        let run = root.join("whole");
        let out = common::ok(
            bin("finetune")
                .arg("--config")
                .arg(&config)
                .arg("--output-dir")
                .arg(&run)
                .output()
                .expect("runs"),
        );
        Setup {
            _dir: dir,
            root,
            config,
            run,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    })
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v.as_object_mut()
                .expect("object")
                .remove("tokens_per_second");
            v
        })
        .collect()
}

fn tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    calm::io::checkpoint::Tensors::read(path)
        .expect("model")
        .tensors
}

#[test]
fn a_finished_run_has_its_files_and_trained_parameters_only() {
    let s = setup();
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.run.join("summary.json")).expect("summary"),
    )
    .expect("json");
    assert_eq!(summary["steps"], STEPS);
    let held = &summary["held_out"];
    let pairs = held["pairs"].as_u64().expect("pairs");
    assert_eq!(pairs, 2 * 8, "2 held-out photos x 8 kinds x 1 severity");
    for key in ["pairwise_accuracy", "before_pairwise_accuracy"] {
        let a = held[key].as_f64().expect(key);
        assert!((0.0..=1.0).contains(&a), "{key} {a}");
    }
    assert_eq!(held["described"].as_array().expect("described").len(), 16);
    // Each held-out original is described too, with the defect its words state, if any, and
    // the share without one agrees with those records.
    let originals = held["described_originals"].as_array().expect("originals");
    assert_eq!(originals.len(), 2);
    for (key, field) in [
        ("originals_comments_without_defect", "comment_states"),
        ("originals_suggestions_without_defect", "suggestion_states"),
    ] {
        let clean = originals.iter().filter(|o| o[field].is_null()).count();
        assert_eq!(held[key].as_f64(), Some(clean as f64 / 2.0), "{key}");
    }
    // The projections started from the least-squares fit, on 2 micro-batches of 2 images.
    assert!(
        s.stdout
            .contains("level projections fitted by least squares on 4 images: low R²"),
        "{}",
        s.stdout
    );
    let m = metrics(&s.run);
    assert_eq!(m.len(), STEPS);
    assert_eq!(m[0]["stage"], "projector");
    assert_eq!(m[STEPS - 1]["stage"], "lora");
    assert!(
        m.iter()
            .all(|l| l["loss"].as_f64().expect("loss").is_finite())
    );
    // The LLM's base stays frozen, so neither the final model nor a checkpoint holds it.
    let saved = tensors(&s.run.join("model.safetensors"));
    assert!(saved.keys().any(|k| k.starts_with("llm.lora.")));
    assert!(saved.keys().any(|k| k.starts_with("mfam.")));
    // The score heads are saved, and trained from the first step on scoring answers.
    for key in [
        "score_head.distribution.weight",
        "score_head.regression.weight",
    ] {
        assert!(saved.contains_key(key), "{key} not saved");
    }
    for line in &m {
        for key in ["score_emd", "score_regression"] {
            if let Some(v) = line["losses"].get(key) {
                assert!(v.as_f64().is_some_and(f64::is_finite), "{line}");
            }
        }
    }
    assert!(
        m.iter().any(|l| l["losses"].get("score_emd").is_some()),
        "no step trained the score heads"
    );
    let held_readouts = held["readout_accuracy"].as_object().expect("readouts");
    for key in ["levels", "numeric", "distribution", "regression"] {
        assert!(held_readouts.contains_key(key), "{key} in {held}");
    }
    for key in [
        "originals_mean_score",
        "originals_score_spread",
        "score_gap",
    ] {
        assert!(held[key].is_f64(), "{key} in {held}");
    }
    assert!(
        !saved
            .keys()
            .any(|k| k.starts_with("llm.model.") || k.starts_with("llm.lm_head")),
        "frozen LLM weights were saved"
    );
    let checkpoints: Vec<_> = std::fs::read_dir(s.run.join("checkpoints"))
        .expect("checkpoints")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert_eq!(checkpoints.len(), 2, "{checkpoints:?}");
    let events = std::fs::read_dir(s.run.join("events"))
        .expect("events")
        .count();
    assert_eq!(events, 1);
    // Trained parameters moved: the first stage's projections differ from the pretraining
    // run's (where they are never trained).
    let pretrained = tensors(&s.root.join("pretrained/model.safetensors"));
    let key = saved
        .keys()
        .find(|k| k.contains("language_projection.weight"))
        .expect("a projection")
        .clone();
    let stripped = key.trim_start_matches("mfam.").to_string();
    let before = pretrained
        .iter()
        .find(|(k, _)| k.ends_with(&stripped))
        .map(|(_, v)| v)
        .expect("in the pretraining run");
    assert!(before != &saved[&key], "{key} did not train");
}

/// Issue #20, item 1: heads that do not train the model (the default) leave every other
/// weight and every token loss exactly as a run without heads makes them; heads that do
/// train it change them.
#[test]
fn detached_score_heads_leave_the_words_as_a_run_without_heads_learns_them() {
    let s = setup();
    let run = |name: &str, sets: &[&str]| {
        let dir = s.root.join(name);
        let mut command = bin("finetune");
        command
            .arg("--config")
            .arg(&s.config)
            .arg("--output-dir")
            .arg(&dir);
        for set in sets {
            command.args(["--set", set]);
        }
        common::ok(command.output().expect("runs"));
        dir
    };
    let without = run(
        "no_heads",
        &[
            "finetune.score_heads.distribution_weight=0",
            "finetune.score_heads.regression_weight=0",
        ],
    );
    let joint = run("joint_heads", &["finetune.score_heads.train_model=true"]);
    let with = tensors(&s.run.join("model.safetensors"));
    let plain = tensors(&without.join("model.safetensors"));
    assert!(!plain.keys().any(|k| k.starts_with("score_head.")));
    let others: Vec<&String> = with
        .keys()
        .filter(|k| !k.starts_with("score_head."))
        .collect();
    assert_eq!(others.len(), plain.len());
    for key in others {
        assert!(with[key] == plain[key], "{key} differs");
    }
    let tokens_only = |run: &Path| -> Vec<serde_json::Value> {
        metrics(run)
            .into_iter()
            .map(|mut line| {
                let losses = line["losses"].as_object_mut().expect("losses");
                losses.remove("score_emd");
                losses.remove("score_regression");
                line
            })
            .collect()
    };
    assert_eq!(tokens_only(&s.run), tokens_only(&without));
    let trained = tensors(&joint.join("model.safetensors"));
    assert!(
        trained
            .iter()
            .any(|(k, v)| k.starts_with("llm.lora.") && plain.get(k) != Some(v)),
        "heads that train the model left its adapters alone"
    );
}

/// Issue #20, item 2: `evaluate degradations` on a fine-tuning run ranks the pairs by every
/// readout of `infer score`, on kinds no training uses.
#[test]
fn evaluate_degradations_ranks_a_finetuned_models_readouts_on_shifted_kinds() {
    let s = setup();
    let out = common::ok(
        bin("evaluate")
            .args(["degradations", "--kinds", "shifted", "--checkpoint"])
            .arg(&s.run)
            .arg("--images")
            .arg(s.root.join("pretrained/held_out"))
            .output()
            .expect("runs"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    // 2 held-out photos x 6 shifted kinds x 1 severity.
    assert_eq!(report["pairs"], 12, "{report}");
    let kinds = report["per_kind"].as_object().expect("per_kind");
    assert_eq!(kinds.len(), 6);
    assert!(kinds.contains_key("colour_cast") && !kinds.contains_key("blur"));
    for readout in ["levels", "numeric", "distribution", "regression"] {
        let a = report["readouts"][readout]["pairwise_accuracy"]
            .as_f64()
            .expect(readout);
        assert!((0.0..=1.0).contains(&a), "{readout}: {a}");
    }
    // The default readout is the level word's.
    assert_eq!(
        report["pairwise_accuracy"],
        report["readouts"]["levels"]["pairwise_accuracy"]
    );
}

/// Issue #20, item 3: `evaluate raters` puts each simulated rater's ratings of the training
/// photos in context and scores the held-out photos; too few held-out photos for a rank
/// correlation is a clear error.
#[test]
fn evaluate_raters_scores_held_out_photos_for_two_opposite_raters() {
    let s = setup();
    let too_few = bin("evaluate")
        .args(["raters", "--shots", "2", "--checkpoint"])
        .arg(&s.run)
        .output()
        .expect("runs");
    assert!(!too_few.status.success());
    let stderr = String::from_utf8_lossy(&too_few.stderr);
    assert!(stderr.contains("2 query photos; at least 3"), "{stderr}");
    // A pretraining run that holds out 3 photos, and a fine-tuning run from it.
    let pretrained = s.root.join("pretrained_3");
    common::ok(
        bin("pretrain")
            .arg("--config")
            .arg(&s.config)
            .args(["--set", "pretrain.hold_out=3", "--output-dir"])
            .arg(&pretrained)
            .output()
            .expect("runs"),
    );
    let run = s.root.join("raters_run");
    common::ok(
        bin("finetune")
            .arg("--config")
            .arg(&s.config)
            .args(["--set", "pretrain.hold_out=3", "--set"])
            .arg(format!("finetune.pretrained={}", pretrained.display()))
            .arg("--output-dir")
            .arg(&run)
            .output()
            .expect("runs"),
    );
    let out = common::ok(
        bin("evaluate")
            .args(["raters", "--shots", "3", "--checkpoint"])
            .arg(&run)
            .output()
            .expect("runs"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["shots"], 3);
    assert_eq!(report["queries"], 3);
    let raters = report["raters"].as_array().expect("raters");
    assert_eq!(raters.len(), 2);
    assert_eq!(raters[0]["rater"], "bright_colourful");
    assert_eq!(raters[1]["rater"], "dark_muted");
    for r in raters {
        assert_eq!(r["examples"].as_array().map(Vec::len), Some(3));
        assert_eq!(r["scores"].as_array().map(Vec::len), Some(3));
        // Opposite tastes: where the SRCC is defined, the other rater's is its negation.
        if let (Some(own), Some(other)) = (r["srcc_own"].as_f64(), r["srcc_other"].as_f64()) {
            assert!((own + other).abs() < 1e-9, "{r}");
        }
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_losses_and_weights() {
    let s = setup();
    let killed = s.root.join("killed");
    let mut child = bin("finetune")
        .arg("--config")
        .arg(&s.config)
        .arg("--output-dir")
        .arg(&killed)
        .arg("--no-eval")
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
        !killed.join("model.safetensors").exists(),
        "the run finished before it could be killed"
    );
    common::ok(
        bin("finetune")
            .arg("--resume")
            .arg(&killed)
            .arg("--no-eval")
            .output()
            .expect("runs"),
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(killed.join("summary.json")).expect("summary"),
    )
    .expect("json");
    let from = summary["resumed_from"].as_u64().expect("resumed_from");
    assert!(
        from > 0 && (from as usize) < STEPS && from.is_multiple_of(2),
        "{from}"
    );
    assert_eq!(metrics(&s.run), metrics(&killed));
    let (a, b) = (
        tensors(&s.run.join("model.safetensors")),
        tensors(&killed.join("model.safetensors")),
    );
    assert!(a.len() > 20);
    assert!(a == b, "final weights differ");
}

#[test]
fn a_run_saved_before_levels_could_pool_keeps_every_query() {
    let s = setup();
    let found = calm::experiment::finetune::find_run(&s.run).expect("the run");
    assert_eq!(found.config.model.mfam.low.pool, Some(4), "today's default");
    // The same run as one saved before the `pool` key existed: its levels read every query.
    let old = s.root.join("old_run");
    std::fs::create_dir_all(&old).expect("mkdir");
    for name in [
        "config.resolved.yaml",
        "pretrained.json",
        "model.safetensors",
    ] {
        std::fs::copy(s.run.join(name), old.join(name)).expect("copy");
    }
    let path = old.join("config.resolved.yaml");
    let yaml = std::fs::read_to_string(&path).expect("config");
    let without: Vec<&str> = yaml.lines().filter(|l| l.trim() != "pool: 4").collect();
    assert_eq!(
        yaml.lines().count() - without.len(),
        3,
        "one pool key a level"
    );
    std::fs::write(&path, without.join("\n")).expect("write");
    let found = calm::experiment::finetune::find_run(&old).expect("the old run");
    let mfam = &found.config.model.mfam;
    assert_eq!([mfam.low.pool, mfam.middle.pool, mfam.high.pool], [None; 3]);
    assert_eq!(mfam.thematic.pool, Some(1), "other keys are read as saved");
}

fn sample_photos(n: usize) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/samples");
    let mut photos = calm::data::formats::scan_folder(&dir, false).expect("samples");
    photos.truncate(n);
    photos
}

#[test]
fn infer_score_skips_a_corrupt_image_and_writes_the_csv() {
    let s = setup();
    let photos = sample_photos(2);
    let corrupt = s.root.join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8 not really a jpeg").expect("write");
    let out = common::ok(
        bin("infer")
            .args(["score", "--checkpoint"])
            .arg(&s.run)
            .arg(&photos[0])
            .arg(&corrupt)
            .arg(&photos[1])
            .output()
            .expect("runs"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&corrupt.display().to_string()), "{stderr}");
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "image,score,score_numeric,score_levels,score_distribution,score_regression"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    for (line, photo) in lines[1..].iter().zip(&photos) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], photo.display().to_string());
        let levels: f64 = fields[3].parse().expect("score_levels");
        assert!((1.0..=10.0).contains(&levels), "{line}");
        // The default readout is the level expectation.
        assert_eq!(fields[1], fields[3]);
        // The run trained score heads: both readouts are there, the distribution's an
        // expectation over 1..10.
        let distribution: f64 = fields[4].parse().expect("score_distribution");
        assert!((1.0..=10.0).contains(&distribution), "{line}");
        let regression: f64 = fields[5].parse().expect("score_regression");
        assert!(regression.is_finite(), "{line}");
    }
    // --strict makes the bad file fatal, naming it.
    let strict = bin("infer")
        .args(["score", "--strict", "--checkpoint"])
        .arg(&s.run)
        .arg(&photos[0])
        .arg(&corrupt)
        .output()
        .expect("runs");
    assert!(!strict.status.success());
    assert!(String::from_utf8_lossy(&strict.stderr).contains("corrupt.jpg"));
}

#[test]
fn infer_comment_and_suggest_write_json_lines() {
    let s = setup();
    let photos = sample_photos(2);
    let list = s.root.join("list.txt");
    std::fs::write(
        &list,
        photos
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect::<String>(),
    )
    .expect("list");
    for (task, key) in [("comment", "comment"), ("suggest", "suggestion")] {
        let output = s.root.join(format!("{task}.jsonl"));
        common::ok(
            bin("infer")
                .args([task, "--checkpoint"])
                .arg(&s.run)
                .arg("--list")
                .arg(&list)
                .arg("--output")
                .arg(&output)
                .output()
                .expect("runs"),
        );
        let text = std::fs::read_to_string(&output).expect("output");
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["image"], photos[0].display().to_string());
        assert!(rows[0][key].is_string(), "{}", rows[0]);
    }
}

#[test]
fn infer_personalize_depends_on_the_raters_examples() {
    let s = setup();
    let photos = sample_photos(5);
    let (examples, query) = (&photos[..4], &photos[4]);
    // Two raters who disagree on every example.
    let rater = |name: &str, high_first: bool| {
        let path = s.root.join(format!("{name}.csv"));
        let rows: String = examples
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let liked = (i < 2) == high_first;
                format!("{},{}\n", p.display(), if liked { 5 } else { 1 })
            })
            .collect();
        std::fs::write(&path, format!("image,score\n{rows}")).expect("write");
        path
    };
    let score = |examples: &Path| {
        let out = common::ok(
            bin("infer")
                .args(["personalize", "--checkpoint"])
                .arg(&s.run)
                .arg("--examples")
                .arg(examples)
                .arg(query)
                .output()
                .expect("runs"),
        );
        let csv = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "image,score,score_numeric,score_expected");
        let fields: Vec<String> = lines[1].split(',').map(str::to_string).collect();
        let expected: f64 = fields[3].parse().expect("score_expected");
        assert!((1.0..=9.0).contains(&expected), "{csv}");
        expected
    };
    let (a, b) = (score(&rater("a", true)), score(&rater("b", false)));
    assert!(
        (a - b).abs() > 1e-6,
        "the same expected score {a} for opposite raters"
    );
}

/// Three questions about one photo packed into one row (`InstructSample::branches`) give
/// every supervised token the loss it has when each question is its own row.
#[test]
fn packed_questions_train_exactly_as_separate_conversations() {
    use calm::data::conversation::ConversationError;
    use calm::data::instruct::{InstructSample, SampleImage, Task, prompts};
    use calm::model::chat::Role;
    use calm::train::instruct_batch::PrepareError;

    let s = setup();
    let device = Device::flex();
    let run = calm::experiment::finetune::find_run(&s.run).expect("run");
    let loaded = calm::experiment::finetune::load_finetuned(&run, &device).expect("load");
    let transform = run.config.data.transform(&run.config.model.vision);
    let preparer = loaded.preparer(&transform, 512);
    let image = SampleImage::Path(sample_photos(1).remove(0));
    let pixels = preparer.image(&image, 0).expect("image");
    let conversation = |question: &str, answer: &str| {
        vec![
            (Role::User, question.to_string()),
            (Role::Assistant, answer.to_string()),
        ]
    };
    let questions = [
        (
            Task::Commenting,
            conversation(prompts::COMMENT, "The photo is blurred."),
        ),
        (Task::Scoring, conversation(prompts::SCORE, "4.5")),
        (
            Task::Suggesting,
            conversation(prompts::SUGGEST, "Hold the camera steady."),
        ),
    ];
    let sample = |(task, turns): &(Task, Vec<(Role, String)>)| InstructSample {
        task: *task,
        images: vec![image.clone()],
        turns: turns.clone(),
        branches: Vec::new(),
        score: None,
    };
    let packed = InstructSample {
        branches: questions[1..].to_vec(),
        ..sample(&questions[0])
    };
    let separate: Vec<_> = questions
        .iter()
        .map(|q| (sample(q), vec![pixels.clone()]))
        .collect();
    let one = preparer
        .prepare(&[(packed.clone(), vec![pixels.clone()])], false, &device)
        .expect("packed");
    let three = preparer
        .prepare(&separate, false, &device)
        .expect("separate");
    let shared = one.rows[0].branches.iter().filter(|&&b| b == 0).count();
    assert!(shared > loaded.visual_tokens);
    assert_eq!(
        one.rows[0].len() + 2 * shared,
        three.rows.iter().map(|r| r.len()).sum::<usize>(),
        "the opening up to the image once instead of three times"
    );
    assert_eq!(one.target_tasks(), three.target_tasks());
    let losses = |p: &calm::train::instruct_batch::PreparedBatch| -> Vec<f32> {
        loaded
            .model
            .token_losses(&p.to_device(&device, false))
            .into_data()
            .iter::<f32>()
            .collect()
    };
    let (a, b) = (losses(&one), losses(&three));
    assert_eq!(a.len(), b.len());
    assert!(a.len() > 10);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4 * y.abs().max(1.0), "{a:?}\nvs\n{b:?}");
    }
    // A packed row beside a plain one (a mix of packed and single-question tasks): the plain
    // row keeps its causal layout, padded to the packed row's width or not.
    let plain = sample(&(
        Task::ScoringLevels,
        conversation(prompts::SCORE_LEVELS, "good"),
    ));
    let mixed = preparer
        .prepare(
            &[
                (packed.clone(), vec![pixels.clone()]),
                (plain.clone(), vec![pixels.clone()]),
            ],
            false,
            &device,
        )
        .expect("mixed");
    let four = preparer
        .prepare(
            &separate
                .iter()
                .cloned()
                .chain([(plain, vec![pixels.clone()])])
                .collect::<Vec<_>>(),
            false,
            &device,
        )
        .expect("four separate");
    assert!(!mixed.rows[0].branches.is_empty() && mixed.rows[1].branches.is_empty());
    let (a, b) = (losses(&mixed), losses(&four));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4 * y.abs().max(1.0), "{a:?}\nvs\n{b:?}");
    }
    // A branch that does not open with the same image is refused, not misaligned.
    let mut bad = packed;
    bad.branches[0].1[0].1 = format!("Look: {}", prompts::SCORE);
    let err = preparer
        .prepare(&[(bad, vec![pixels])], false, &device)
        .expect_err("different opening");
    assert!(
        matches!(
            err,
            PrepareError::Conversation {
                source: ConversationError::NoSharedPrefix(2),
                ..
            }
        ),
        "{err}"
    );
}

/// `evaluate task` runs each of the paper's protocols end to end on fixture data in the real
/// annotation formats (tests/fixtures/eval: AVA.txt with the official-split list layout,
/// AVA-Captions JSON, FLICKR-AES's per-worker CSV), writing predictions and metrics.json.
#[test]
fn evaluate_task_runs_the_three_protocols_on_fixture_data() {
    let s = setup();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval");
    let read_json = |path: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
    };
    let run = |name: &str| -> (PathBuf, serde_json::Value, String) {
        // Inside the run, as the README shows: clearing it touches nothing the command reads.
        let out_dir = s.run.join("eval").join(name);
        let out = common::ok(
            bin("evaluate")
                .args(["task", "--config"])
                .arg(root.join(format!("{name}.yaml")))
                .arg("--checkpoint")
                .arg(&s.run)
                .arg("--output-dir")
                .arg(&out_dir)
                .output()
                .expect("runs"),
        );
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout JSON");
        let written = read_json(&out_dir.join("metrics.json"));
        assert_eq!(printed, written);
        assert_eq!(written["protocol"], name);
        assert!(out_dir.join("config.resolved.yaml").is_file());
        (
            out_dir,
            written["metrics"].clone(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // AVA: 9 ids on the test list, one without an image file: reported, the 8 others scored.
    let (dir, m, stderr) = run("ava_scoring");
    assert!(stderr.contains("900171.jpg"), "{stderr}");
    assert_eq!(m["n"], 8);
    assert_eq!(m["skipped"].as_array().map(Vec::len), Some(1));
    for key in ["srcc", "plcc", "krcc", "acc", "mae", "rmse"] {
        assert!(m.get(key).is_some(), "{key} in {m}");
    }
    assert_eq!(m["readout"], "levels");
    let csv = std::fs::read_to_string(dir.join("predictions.csv")).expect("predictions");
    assert!(csv.starts_with(
        "image,score,score_numeric,score_levels,score_distribution,score_regression,mos\n"
    ));
    for readout in ["levels", "distribution", "regression"] {
        assert!(m[readout]["srcc"].is_f64(), "{readout} in {m}");
    }
    assert_eq!(csv.lines().count(), 9);

    // AVA-Captions: the 8 test images of the fixture, the coco-caption metrics.
    let (dir, m, _) = run("ava_captions");
    assert_eq!(m["n"], 8);
    for key in [
        "bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider",
    ] {
        assert!(m["scores"][key].is_f64(), "{key} in {m}");
    }
    let comments = read_json(&dir.join("predictions.json"));
    assert_eq!(comments.as_object().map(|c| c.len()), Some(8));

    // FLICKR-AES: k = 1 and 2, two draws each; the rater with 3 photos is too few for either.
    let (dir, m, _) = run("flickr_aes");
    let results = m["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for (r, k) in results.iter().zip([1, 2]) {
        assert_eq!(r["shots"], k);
        assert_eq!(r["raters"], 2);
        assert_eq!(r["srcc_per_seed"].as_array().map(Vec::len), Some(2));
    }
    assert_eq!(m["too_few"].as_array().map(Vec::len), Some(2));
    let rows = std::fs::read_to_string(dir.join("predictions.csv")).expect("predictions");
    // 2 shots x 2 seeds x 2 raters x 5 queries (eval.max_images).
    assert_eq!(rows.lines().count(), 1 + 2 * 2 * 2 * 5);

    // Issue #19, item 4: into a directory that holds an evaluation, refused without
    // --overwrite; with it, the old files go (no old predictions beside a new config).
    let again = |extra: &[&str]| {
        bin("evaluate")
            .args(["task", "--config"])
            .arg(root.join("ava_captions.yaml"))
            .arg("--checkpoint")
            .arg(&s.run)
            .arg("--output-dir")
            .arg(&dir)
            .args(extra)
            .output()
            .expect("runs")
    };
    let out = again(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--overwrite"),
        "{err}"
    );
    common::ok(again(&["--overwrite"]));
    assert!(
        !dir.join("predictions.csv").exists(),
        "the old protocol's predictions stayed"
    );
    assert!(dir.join("predictions.json").is_file());

    // A config that names no protocol is refused in one line.
    let none = s.root.join("no_protocol.yaml");
    std::fs::write(&none, "eval:\n  max_images: 3\n").expect("write");
    let out = bin("evaluate")
        .args(["task", "--config"])
        .arg(&none)
        .arg("--checkpoint")
        .arg(&s.run)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no eval.protocol"));
}

/// Issue #19: a fine-tuning run killed at random moments (right after its first checkpoint,
/// then at random points of each resumption) and resumed each time ends bit-identical to the
/// run never stopped; `--overwrite` over a finished run leaves one run's metrics and events.
#[test]
fn killed_at_random_moments_and_resumed_each_time_a_run_ends_as_if_never_stopped() {
    let s = setup();
    let killed = s.root.join("killed_randomly");
    let spawn = |args: &[&std::ffi::OsStr]| {
        bin("finetune")
            .args(args)
            .arg("--no-eval")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawns")
    };
    let kills = common::kill_at_random_until_done(
        &killed,
        || {
            spawn(&[
                "--config".as_ref(),
                s.config.as_os_str(),
                "--output-dir".as_ref(),
                killed.as_os_str(),
            ])
        },
        || spawn(&["--resume".as_ref(), killed.as_os_str()]),
        Duration::from_secs(3),
    );
    println!("{kills} kills");
    assert!(kills >= 2, "only {kills} kills");
    assert_eq!(metrics(&s.run), metrics(&killed));
    assert!(
        tensors(&s.run.join("model.safetensors")) == tensors(&killed.join("model.safetensors")),
        "final weights differ"
    );
    // Over the finished run, --overwrite starts clean: one run's metrics, one event file.
    common::ok(
        bin("finetune")
            .arg("--config")
            .arg(&s.config)
            .arg("--output-dir")
            .arg(&killed)
            .args(["--overwrite", "--no-eval"])
            .output()
            .expect("runs"),
    );
    assert_eq!(metrics(&killed), metrics(&s.run));
    assert_eq!(
        std::fs::read_dir(killed.join("events"))
            .expect("events")
            .count(),
        1
    );
}

/// `--overwrite` never deletes a run the command reads, and `--resume` refuses a run another
/// command made.
#[test]
fn overwrite_and_resume_refuse_the_runs_they_would_destroy() {
    let s = setup();
    let model = s.run.join("model.safetensors");
    let before = std::fs::read(&model).expect("model");
    let eval_config =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/ava_captions.yaml");
    let refused = |out: Output, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains(needle) && err.lines().count() == 1,
            "{err}"
        );
    };
    // The run itself, and the folder that holds it.
    for output in [s.run.clone(), s.root.clone()] {
        refused(
            bin("evaluate")
                .args(["task", "--config"])
                .arg(&eval_config)
                .arg("--checkpoint")
                .arg(&s.run)
                .arg("--output-dir")
                .arg(&output)
                .arg("--overwrite")
                .output()
                .expect("runs"),
            "which this command reads",
        );
    }
    let pretrained = s.root.join("pretrained");
    refused(
        bin("finetune")
            .arg("--config")
            .arg(&s.config)
            .arg("--output-dir")
            .arg(&pretrained)
            .arg("--overwrite")
            .output()
            .expect("runs"),
        "which this command reads",
    );
    refused(
        bin("pretrain")
            .arg("--resume")
            .arg(&s.run)
            .output()
            .expect("runs"),
        "says `finetune` made it",
    );
    refused(
        bin("finetune")
            .arg("--resume")
            .arg(&pretrained)
            .output()
            .expect("runs"),
        "says `pretrain` made it",
    );
    assert_eq!(std::fs::read(&model).expect("model"), before);
    assert!(pretrained.join("model.safetensors").is_file());
}
