//! The hostile corpus (`tests/common/hostile.rs`) against the release-shaped binaries: each
//! file or input has its expected outcome, skipped with a reason or refused in one line naming
//! the file or key, never a panic, a hang or more than a stated amount of memory (peak RSS
//! read from the kernel). README "Robustness" and docs/robustness.md say what this guarantees.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::hostile::{self, Measured, measured};

fn bin(name: &str) -> Command {
    let path = match name {
        "pretrain" => env!("CARGO_BIN_EXE_pretrain"),
        "finetune" => env!("CARGO_BIN_EXE_finetune"),
        "evaluate" => env!("CARGO_BIN_EXE_evaluate"),
        "infer" => env!("CARGO_BIN_EXE_infer"),
        "sweep" => env!("CARGO_BIN_EXE_sweep"),
        _ => env!("CARGO_BIN_EXE_inspect"),
    };
    let mut c = Command::new(path);
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// A command that must fail with one line on stderr containing every one of `needles`.
fn refused(m: &Measured, needles: &[&str]) {
    let lines: Vec<&str> = m.stderr.lines().collect();
    assert!(
        !m.status.success() && m.status.code() == Some(1),
        "expected exit 1, got {:?}; stdout {}; stderr {}",
        m.status,
        m.stdout,
        m.stderr
    );
    assert_eq!(lines.len(), 1, "not one line: {}", m.stderr);
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in: {}", lines[0]);
    }
}

/// A command that must succeed without a panic.
fn succeeded(m: &Measured) {
    assert!(
        m.status.success(),
        "exit {:?}; stdout {}; stderr {}",
        m.status,
        m.stdout,
        m.stderr
    );
    assert!(!m.stderr.contains("panicked"), "{}", m.stderr);
}

/// Every bad image of the corpus with the reason it must be skipped for, beside two good
/// photos. Names are what `scan_folder` lists; `dir.jpg`, a folder, is not an image at all.
fn bad_image_folder(dir: &Path) -> Vec<(&'static str, &'static str)> {
    use hostile::*;
    write(&dir.join("good_a.jpg"), &jpeg(&small_rgb(96, 80)));
    write(&dir.join("good_b.png"), &png(&small_rgb(80, 96)));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bomb_65000.jpg", jpeg_bomb(65000, 65000), "pixel limit"),
        ("bomb_60000.png", png_bomb(60000, 60000), "pixel limit"),
        ("bomb_30000.png", png_bomb(30000, 30000), "pixel limit"),
        ("bomb_16383.webp", webp_bomb(), "pixel limit"),
        ("strip.png", png(&small_rgb(20000, 10)), "aspect ratio"),
        (
            "truncated.jpg",
            {
                let full = jpeg(&small_rgb(64, 64));
                full[..full.len() / 2].to_vec()
            },
            "truncated JPEG",
        ),
        (
            "forged.jpg",
            [&[0xFF, 0xD8, 0xFF, 0xD9][..], &[0u8; 64]].concat(),
            "cannot decode",
        ),
        ("empty.jpg", Vec::new(), "not a JPEG, PNG or WebP"),
        (
            "text.png",
            b"not an image at all\n".to_vec(),
            "not a JPEG, PNG or WebP",
        ),
        (
            "gif.png",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            "unsupported format",
        ),
    ];
    let mut expected: Vec<(&str, &str)> = Vec::new();
    for (name, bytes, reason) in cases {
        write(&dir.join(name), &bytes);
        expected.push((name, reason));
    }
    std::fs::create_dir(dir.join("dir.jpg")).expect("mkdir");
    fifo(&dir.join("fifo.jpg"));
    expected.push(("fifo.jpg", "a FIFO, not a regular file"));
    symlink(Path::new("/dev/zero"), &dir.join("zero.jpg"));
    expected.push(("zero.jpg", "a character device, not a regular file"));
    symlink(&dir.join("gone.jpg.missing"), &dir.join("dangling.jpg"));
    expected.push(("dangling.jpg", "a link to a missing file"));
    symlink(&dir.join("loop_b.jpg"), &dir.join("loop_a.jpg"));
    symlink(&dir.join("loop_a.jpg"), &dir.join("loop_b.jpg"));
    expected.push(("loop_a.jpg", "symbolic links"));
    expected.push(("loop_b.jpg", "symbolic links"));
    sparse(&dir.join("huge.jpg"), 300 << 20);
    expected.push(("huge.jpg", "larger than"));
    expected
}

#[test]
fn inspect_data_skips_every_bad_image_with_its_reason_within_300_mib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).expect("mkdir");
    let expected = bad_image_folder(&photos);
    let m = measured(
        {
            let mut c = bin("inspect");
            c.args(["data", "--set"])
                .arg(format!("data.source.path={}", photos.display()))
                .args(["--set", "data.loader.batch_size=4"]);
            c
        },
        Duration::from_secs(60),
    );
    succeeded(&m);
    for (name, reason) in &expected {
        let line = m
            .stdout
            .lines()
            .find(|l| l.starts_with("skipped ") && l.contains(&format!("/{name}:")))
            .unwrap_or_else(|| panic!("{name} not reported skipped:\n{}", m.stdout));
        assert!(line.contains(reason), "{name}: {line}");
    }
    let summary = m.stdout.lines().last().unwrap_or_default();
    let images = expected.len() + 2;
    assert!(
        summary.starts_with(&format!("{images} images, 2 loaded"))
            && summary.ends_with(&format!("{} skipped", expected.len())),
        "{summary}"
    );
    println!(
        "inspect data: peak {:.0} MiB in {:.2} s",
        m.peak_mib, m.seconds
    );
    assert!(m.peak_mib < 300.0, "peak {:.0} MiB", m.peak_mib);
}

#[test]
fn bad_files_named_as_configs_or_annotations_are_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let fifo = hostile::fifo(&d.join("config.yaml"));
    let zero = Path::new("/dev/zero");
    let big = hostile::sparse(&d.join("big.yaml"), 64 << 20);
    for (config, reason) in [
        (zero, "a character device, not a regular file"),
        (fifo.as_path(), "a FIFO, not a regular file"),
        (big.as_path(), "larger than"),
        (d, "a directory, not a regular file"),
    ] {
        let m = measured(
            {
                let mut c = bin("inspect");
                c.args(["config", "--config"]).arg(config);
                c
            },
            Duration::from_secs(20),
        );
        refused(&m, &[&config.display().to_string(), reason]);
        assert!(
            m.peak_mib < 100.0,
            "{}: {:.0} MiB",
            config.display(),
            m.peak_mib
        );
    }
    // A YAML error is one line naming the file, however long the snippet serde prints.
    let broken = hostile::write(
        &d.join("broken.yaml"),
        b"seed: 1\ndata:\n  loader: [1, 2\n  x: }\n",
    );
    let m = measured(
        {
            let mut c = bin("inspect");
            c.args(["config", "--config"]).arg(&broken);
            c
        },
        Duration::from_secs(20),
    );
    refused(&m, &["broken.yaml", "not valid YAML"]);

    // Annotation files: each kind of source, malformed or not a file.
    let images = d.join("images");
    std::fs::create_dir(&images).expect("mkdir");
    hostile::write(
        &d.join("ava.txt"),
        b"1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396\nnot a row\n",
    );
    hostile::write(
        &d.join("captions.json"),
        b"{\"images\": [{\"filename\": 3}]}",
    );
    hostile::write(&d.join("flickr.csv"), b"");
    hostile::write(
        &d.join("llava.json"),
        b"[{\"id\": 1, \"conversations\": \"no\"}]",
    );
    hostile::symlink(zero, &d.join("list.txt"));
    for (sets, file) in [
        (
            vec![
                "data.source.kind=ava".to_string(),
                format!("data.source.ava_txt={}", d.join("ava.txt").display()),
                format!("data.source.images={}", images.display()),
            ],
            "ava.txt",
        ),
        (
            vec![
                "data.source.kind=ava_captions".to_string(),
                format!("data.source.json={}", d.join("captions.json").display()),
                format!("data.source.images={}", images.display()),
            ],
            "captions.json",
        ),
        (
            vec![
                "data.source.kind=flickr_aes".to_string(),
                format!("data.source.csv={}", d.join("flickr.csv").display()),
                format!("data.source.images={}", images.display()),
            ],
            "flickr.csv",
        ),
        (
            vec![
                "data.source.kind=llava".to_string(),
                format!("data.source.json={}", d.join("llava.json").display()),
                format!("data.source.images={}", images.display()),
            ],
            "llava.json",
        ),
        (
            vec![
                "data.source.kind=list".to_string(),
                format!("data.source.path={}", d.join("list.txt").display()),
            ],
            "list.txt",
        ),
    ] {
        let m = measured(
            {
                let mut c = bin("inspect");
                c.arg("data");
                for s in &sets {
                    c.arg("--set").arg(s);
                }
                c
            },
            Duration::from_secs(20),
        );
        refused(&m, &[file]);
        assert!(m.peak_mib < 100.0, "{file}: {:.0} MiB", m.peak_mib);
    }
}

#[test]
fn absurd_sizes_and_sampling_values_are_refused_before_anything_is_built() {
    for (sets, key) in [
        (
            vec![
                "model.mfam.qformer.hidden_size=0",
                "pretrain.qformer_init=random",
            ],
            "model.mfam.qformer.hidden_size",
        ),
        (
            vec!["model.mfam.high.num_query_tokens=100000000"],
            "model.mfam.high.num_query_tokens",
        ),
        (
            vec![
                "model.mfam.qformer.num_hidden_layers=1000",
                "model.mfam.qformer.intermediate_size=200000",
            ],
            "model.mfam",
        ),
        (
            vec!["pretrain.evaluation.severities=[]"],
            "pretrain.evaluation.severities",
        ),
        (
            vec!["pretrain.losses.temperature=.inf"],
            "pretrain.losses.temperature",
        ),
        (
            vec!["data.loader.batch_size=100000000"],
            "data.loader.batch_size",
        ),
        (
            vec!["infer.generation.temperature=.nan"],
            "infer.generation.temperature",
        ),
        (
            vec!["infer.generation.repetition_penalty=0"],
            "infer.generation.repetition_penalty",
        ),
        (vec!["infer.generation.top_p=5"], "infer.generation.top_p"),
        (vec!["infer.generation.top_k=0"], "infer.generation.top_k"),
        (vec!["finetune.lora.alpha=-1"], "finetune.lora.alpha"),
    ] {
        let m = measured(
            {
                let mut c = bin("pretrain");
                for s in &sets {
                    c.arg("--set").arg(s);
                }
                c.args(["--output-dir", "/nonexistent/never-created"]);
                c
            },
            Duration::from_secs(20),
        );
        refused(&m, &[key]);
        println!("{key}: peak {:.0} MiB", m.peak_mib);
        assert!(m.peak_mib < 100.0, "{key}: {:.0} MiB", m.peak_mib);
    }
    // The same checks guard `inspect generate`'s flags.
    for (flag, value) in [
        ("--temperature", "NaN"),
        ("--top-p", "5"),
        ("--repetition-penalty", "0"),
        ("--top-k", "0"),
    ] {
        let m = measured(
            {
                let mut c = bin("inspect");
                c.args(["generate", "--checkpoint"])
                    .arg(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("tests/fixtures/llama/gqa_untied"),
                    )
                    .args(["--prompt", "hi", flag, value]);
                c
            },
            Duration::from_secs(30),
        );
        refused(&m, &[flag]);
    }
}

#[test]
fn gguf_headers_that_lie_are_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = hostile::write(
        &dir.path().join("ids.safetensors"),
        &hostile::safetensors(&[("input_ids", vec![1, 3], vec![1.0, 2.0, 3.0])]),
    );
    let run = |name: &str, bytes: Vec<u8>| {
        let gguf = hostile::write(&dir.path().join(name), &bytes);
        measured(
            {
                let mut c = bin("inspect");
                c.args(["forward", "--arch", "llama", "--checkpoint"])
                    .arg(&gguf)
                    .arg("--inputs")
                    .arg(&ids)
                    .arg("--output")
                    .arg(dir.path().join("out.safetensors"));
                c
            },
            Duration::from_secs(30),
        )
    };
    // The writer's own valid model runs, so the refusals below are the header's doing.
    succeeded(&run("valid.gguf", hostile::gguf_llama(2, 2, 1e-5)));
    for (name, bytes, needles) in [
        (
            "zero.gguf",
            hostile::gguf_llama(2, 0, 1e-5),
            vec!["num_hidden_layers", "outside"],
        ),
        (
            "billion.gguf",
            hostile::gguf_llama(2, 1_000_000_000, 1e-5),
            vec!["num_hidden_layers"],
        ),
        (
            "thousand.gguf",
            hostile::gguf_llama(2, 1000, 1e-5),
            vec!["does not belong to these weights"],
        ),
        (
            "eps.gguf",
            hostile::gguf_llama(2, 2, -1e-5),
            vec!["rms_norm_eps"],
        ),
        (
            "mystery.gguf",
            hostile::gguf_llama_with(2, 1000, 1e-5, true),
            vec!["does not belong to these weights"],
        ),
        (
            "cut.gguf",
            hostile::gguf_llama(2, 2, 1e-5)[..300].to_vec(),
            vec!["cut.gguf"],
        ),
    ] {
        let m = run(name, bytes);
        let mut all = vec![name];
        all.extend(needles.iter().copied());
        refused(&m, &all);
        println!("{name}: peak {:.0} MiB", m.peak_mib);
        assert!(m.peak_mib < 200.0, "{name}: {:.0} MiB", m.peak_mib);
    }
}

#[test]
fn inspect_forward_refuses_inputs_of_the_wrong_shape_in_one_line() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.safetensors");
    let write = |name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]| {
        hostile::write(&dir.path().join(name), &hostile::safetensors(tensors))
    };
    let clip_side = 48;
    let four_channels = write(
        "rgba.safetensors",
        &[(
            "pixel_values",
            vec![1, 4, clip_side, clip_side],
            vec![0.1; 4 * clip_side * clip_side],
        )],
    );
    let batch_zero = write(
        "empty_batch.safetensors",
        &[("pixel_values", vec![0, 3, 64, 64], vec![])],
    );
    let no_ids = write("no_ids.safetensors", &[("input_ids", vec![1, 0], vec![])]);
    let no_queries = write(
        "no_queries.safetensors",
        &[
            ("query_embeds", vec![1, 0, 32], vec![]),
            ("encoder_hidden_states", vec![1, 4, 48], vec![0.0; 4 * 48]),
        ],
    );
    // Shapes that pass the checks above but whose attention would not fit: 62 GB of scores
    // for a 2000 x 2000 image, 26 GB for 40000 queries.
    let huge_image = write(
        "huge.safetensors",
        &[(
            "pixel_values",
            vec![1, 3, 2000, 2000],
            vec![0.0; 3 * 2000 * 2000],
        )],
    );
    let many_queries = write(
        "many_queries.safetensors",
        &[
            ("query_embeds", vec![1, 40_000, 32], vec![0.0; 40_000 * 32]),
            ("encoder_hidden_states", vec![1, 4, 24], vec![0.0; 4 * 24]),
        ],
    );
    // An integer-valued id beyond 32 bits panicked in the backend's cast.
    let huge_id = write(
        "huge_id.safetensors",
        &[("input_ids", vec![1, 2], vec![3.0, 1e30])],
    );
    let cases: Vec<(&str, PathBuf, &PathBuf, &str)> = vec![
        (
            "clip-vision",
            fixtures.join("clip/a_quick_gelu_f32"),
            &four_channels,
            "pixel_values",
        ),
        (
            "clip-vision",
            fixtures.join("clip/a_quick_gelu_f32"),
            &huge_image,
            "attention scores of [1, 4, 62501, 62501]",
        ),
        (
            "qformer",
            fixtures.join("qformer/a_queries_mask"),
            &many_queries,
            "attention scores of [1, 4, 40000, 40000]",
        ),
        (
            "bert",
            fixtures.join("bert/a_padding"),
            &huge_id,
            "`input_ids` holds",
        ),
        (
            "llama",
            fixtures.join("llama/gqa_untied"),
            &huge_id,
            "outside the 32-bit integers",
        ),
        (
            "efficientnet-lite0",
            calm::io::models::model_dir(calm::io::models::FetchedModel::EfficientnetLite0)
                .expect("scripts/fetch_models.sh has fetched EfficientNet-Lite0"),
            &batch_zero,
            "pixel_values",
        ),
        (
            "bert",
            fixtures.join("bert/a_padding"),
            &no_ids,
            "input_ids",
        ),
        (
            "llama",
            fixtures.join("llama/gqa_untied"),
            &no_ids,
            "input_ids",
        ),
        (
            "qformer",
            fixtures.join("qformer/a_queries_mask"),
            &no_queries,
            "query_embeds",
        ),
    ];
    for (arch, checkpoint, inputs, key) in cases {
        let m = measured(
            {
                let mut c = bin("inspect");
                c.args(["forward", "--arch", arch, "--checkpoint"])
                    .arg(&checkpoint)
                    .arg("--inputs")
                    .arg(inputs)
                    .arg("--output")
                    .arg(&out);
                c
            },
            Duration::from_secs(60),
        );
        refused(&m, &[key]);
        assert!(m.peak_mib < 1024.0, "{arch} {key}: {:.0} MiB", m.peak_mib);
    }
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/finetune/calm_vicuna7b.yaml");
    let mut commands = vec![
        {
            let mut c = bin("inspect");
            c.args(["config", "--config"]).arg(&config);
            c
        },
        {
            let mut c = bin("sweep");
            c.args(["experiments/mfam_levels/sweep.yaml", "--dry-run"]);
            c
        },
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = hostile::write(&dir.path().join("s.csv"), b"image,score\na,1\nb,2\nc,3\n");
    commands.push({
        let mut c = bin("evaluate");
        c.args(["scores", "--pred"]).arg(&csv).arg("--gt").arg(&csv);
        c
    });
    for mut command in commands {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = command
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "{command:?}: {:?} {stderr}",
            out.status
        );
    }
}

/// Corrupt checkpoints and run records: `--resume` and `evaluate degradations` refuse each in
/// one line naming the file, within 1 GiB.
#[test]
fn corrupt_checkpoints_are_refused_in_one_line_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = hostile::write(
        &dir.path().join("tiny.yaml"),
        common::TINY_PRETRAIN.as_bytes(),
    );
    let good = dir.path().join("good");
    let m = measured(
        {
            let mut c = bin("pretrain");
            c.arg("--config")
                .arg(&config)
                .arg("--output-dir")
                .arg(&good)
                .args([
                    "--set",
                    "pretrain.steps=1",
                    "--set",
                    "pretrain.checkpoint_every=1",
                ])
                .args(["--set", "pretrain.schedule.warmup_steps=0"]);
            c
        },
        Duration::from_secs(300),
    );
    succeeded(&m);
    let step = "checkpoints/step-00000001";
    let truncate = |path: &Path| {
        let bytes = std::fs::read(path).expect("read");
        std::fs::write(path, &bytes[..bytes.len() / 2]).expect("write");
    };
    let header_lies = |path: &Path| {
        let mut bytes = std::fs::read(path).expect("read");
        bytes[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        std::fs::write(path, bytes).expect("write");
    };
    let garbage = |path: &Path| std::fs::write(path, [0x9Au8; 777]).expect("write");
    type Corrupt<'a> = (&'a str, &'a str, Box<dyn Fn(&Path) + 'a>);
    let resumed: Vec<Corrupt> = vec![
        ("model_truncated", "model.safetensors", Box::new(truncate)),
        ("model_header", "model.safetensors", Box::new(header_lies)),
        ("optimizer", "optimizer.bpk", Box::new(garbage)),
        (
            "state",
            "state.json",
            Box::new(|p: &Path| std::fs::write(p, "{").expect("write")),
        ),
    ];
    for (name, file, corrupt) in &resumed {
        let run = dir.path().join(name);
        common::copy_dir(&good, &run);
        corrupt(&run.join(step).join(file));
        let m = measured(
            {
                let mut c = bin("pretrain");
                c.arg("--resume").arg(&run);
                c
            },
            Duration::from_secs(120),
        );
        refused(&m, &[file]);
        assert!(m.peak_mib < 1024.0, "{name}: {:.0} MiB", m.peak_mib);
    }
    // The run's own config and `latest`.
    let run = dir.path().join("config");
    common::copy_dir(&good, &run);
    std::fs::write(run.join("config.resolved.yaml"), "model: [").expect("write");
    let m = measured(
        {
            let mut c = bin("pretrain");
            c.arg("--resume").arg(&run);
            c
        },
        Duration::from_secs(60),
    );
    refused(&m, &["config.resolved.yaml"]);
    let run = dir.path().join("latest");
    common::copy_dir(&good, &run);
    std::fs::write(run.join("checkpoints/latest"), "/etc\n").expect("write");
    let m = measured(
        {
            let mut c = bin("pretrain");
            c.arg("--resume").arg(&run);
            c
        },
        Duration::from_secs(120),
    );
    refused(&m, &["latest", "not a checkpoint folder of this run"]);
    // The final model read by `evaluate degradations`.
    let run = dir.path().join("final");
    common::copy_dir(&good, &run);
    truncate(&run.join("model.safetensors"));
    let m = measured(
        {
            let mut c = bin("evaluate");
            c.args(["degradations", "--checkpoint"])
                .arg(&run)
                .arg("--images")
                .arg(run.join("held_out"));
            c
        },
        Duration::from_secs(120),
    );
    refused(&m, &["model.safetensors"]);
}

#[test]
fn prompts_captions_and_ratings_beyond_what_is_meaningful_are_refused_in_one_line() {
    use calm::io::models::{FetchedModel, model_dir};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // A prompt longer than the LLM's context: attention grew with its square (24 GB).
    let gguf = model_dir(FetchedModel::Smollm2)
        .expect("scripts/fetch_models.sh has fetched SmolLM2")
        .join(FetchedModel::Smollm2.main_file());
    let generate = |prompt: String| {
        let mut c = bin("inspect");
        c.args(["generate", "--raw", "--max-new-tokens", "1", "--checkpoint"])
            .arg(&gguf)
            .arg("--prompt")
            .arg(prompt);
        measured(c, Duration::from_secs(60))
    };
    let short = generate("hello".into());
    succeeded(&short);
    let m = generate("hello ".repeat(9_000));
    refused(&m, &["tokens; the model's context holds 8192"]);
    // The model's own memory, not the prompt's.
    assert!(
        m.peak_mib < short.peak_mib + 256.0,
        "generate: {:.0} MiB, {:.0} MiB for a short prompt",
        m.peak_mib,
        short.peak_mib
    );

    // A caption of more words than any dataset's: ROUGE-L and METEOR are quadratic in it.
    let pred = hostile::write(
        &d.join("pred.json"),
        serde_json::json!({"a": "word ".repeat(1_001)})
            .to_string()
            .as_bytes(),
    );
    let refs = hostile::write(&d.join("refs.json"), br#"{"a": ["a short reference"]}"#);
    let m = measured(
        {
            let mut c = bin("evaluate");
            c.args(["captions", "--pred"])
                .arg(&pred)
                .arg("--refs")
                .arg(&refs);
            c
        },
        Duration::from_secs(20),
    );
    refused(&m, &["image a: a caption of 1001 words", "at most 1000"]);

    // A rating that is not a number, read before any model.
    let rated = hostile::write(&d.join("rated.csv"), b"image,score\nx.jpg,7\ny.jpg,NaN\n");
    let m = measured(
        {
            let mut c = bin("infer");
            c.args(["personalize", "--checkpoint"])
                .arg(d.join("no_run"))
                .arg("--examples")
                .arg(&rated)
                .arg("photo.jpg");
            c
        },
        Duration::from_secs(20),
    );
    refused(&m, &["rated.csv line 3", "not a finite number"]);
}

#[test]
fn a_byte_order_mark_is_read_past_and_a_name_that_is_not_utf8_is_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).expect("mkdir");
    let image = hostile::jpeg(&hostile::small_rgb(96, 80));
    hostile::write(&photos.join("a.jpg"), &image);
    hostile::write(&photos.join("b.jpg"), &image);
    hostile::write(
        &photos.join(std::ffi::OsStr::from_bytes(b"caf\xe9.jpg")),
        &image,
    );
    let list = hostile::write(
        &dir.path().join("list.txt"),
        b"\xef\xbb\xbfphotos/a.jpg\nphotos/b.jpg\n",
    );
    for (sets, stderr) in [
        (
            vec![
                "data.source.kind=list".to_string(),
                format!("data.source.path={}", list.display()),
            ],
            None,
        ),
        (
            vec![format!("data.source.path={}", photos.display())],
            Some("its name is not UTF-8"),
        ),
    ] {
        let m = measured(
            {
                let mut c = bin("inspect");
                c.arg("data");
                for s in &sets {
                    c.arg("--set").arg(s);
                }
                c
            },
            Duration::from_secs(60),
        );
        succeeded(&m);
        let summary = m.stdout.lines().last().unwrap_or_default();
        assert!(summary.starts_with("2 images, 2 loaded"), "{summary}");
        match stderr {
            Some(reason) => assert!(
                m.stderr.contains("caf") && m.stderr.contains(reason),
                "{}",
                m.stderr
            ),
            None => assert!(!m.stderr.contains("warning"), "{}", m.stderr),
        }
    }
}

#[test]
fn an_output_dir_that_holds_or_sits_in_the_data_is_refused_before_anything_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).expect("mkdir");
    let image = hostile::jpeg(&hostile::small_rgb(96, 80));
    for name in ["a.jpg", "b.jpg"] {
        hostile::write(&photos.join(name), &image);
    }
    // A finished-looking run around the data: --overwrite would have emptied it.
    hostile::write(&dir.path().join("run.json"), b"{\"command\": \"pretrain\"}");
    for output in [dir.path().to_path_buf(), photos.join("run")] {
        let m = measured(
            {
                let mut c = bin("pretrain");
                c.arg("--set")
                    .arg(format!("data.source.path={}", photos.display()))
                    .arg("--output-dir")
                    .arg(&output)
                    .arg("--overwrite");
                c
            },
            Duration::from_secs(60),
        );
        refused(&m, &["overlaps", "which this command reads"]);
        assert!(photos.join("a.jpg").is_file() && photos.join("b.jpg").is_file());
        assert!(!photos.join("run").exists());
    }
}
