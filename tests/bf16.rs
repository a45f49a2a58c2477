//! `train.precision: bf16` (issue #23, item 1; `model::precision`): in f32 the helpers are
//! `Linear::forward` and `matmul` to the bit; in bf16 the products round their operands and
//! the gradients reaching f32 parameters are f32. A tiny pretraining of 50 steps in bf16 logs
//! losses within 1% of the f32 run's (measured: 2.5e-4 at most) but not equal to them, and
//! saves f32 weights; a tiny LoRA fine-tuning in bf16 trains as the f32 one does.
//!
//! Why 1%: bf16 keeps 8 significant bits (a relative rounding of 2^-9, 0.2%, per operand);
//! products accumulate in f32 and everything else stays f32, so a step's loss moves by far
//! less, and 50 steps of Adam on a tiny model let the runs drift apart only slowly. A
//! broken bf16 path (garbage reads, bf16 accumulation of gradients, a lost bias) misses it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{DType, Device, Distribution, Tensor};
use calm::model::precision::{Precision, lin, mm};
use clap::Parser;

const TOLERANCE: f64 = 1e-2;

fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
    t.into_data().iter::<f32>().map(f32::to_bits).collect()
}

fn max_relative<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let a: Vec<f32> = a.into_data().iter::<f32>().collect();
    let b: Vec<f32> = b.into_data().iter::<f32>().collect();
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// In f32 `lin` and `mm` are the plain operations, to the bit; in bf16 they differ from them
/// by bf16's rounding only, return f32, and give f32 parameters f32 gradients.
#[test]
fn helpers_are_exact_in_f32_and_round_in_bf16() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let linear = LinearConfig::new(24, 16).init(&device);
    let x = Tensor::<3>::random([2, 5, 24], Distribution::Normal(0.0, 1.0), &device);
    let plain = linear.forward(x.clone());
    assert_eq!(
        bits(lin(&linear, x.clone(), Precision::F32)),
        bits(plain.clone())
    );
    let rounded = lin(&linear, x.clone(), Precision::Bf16);
    assert_eq!(rounded.dtype(), DType::F32);
    let error = max_relative(plain.clone(), rounded.clone());
    assert!(error > 0.0 && error < 1e-2, "bf16 linear error {error}");

    let a = Tensor::<4>::random([2, 3, 5, 8], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<4>::random([2, 3, 8, 7], Distribution::Normal(0.0, 1.0), &device);
    let exact = a.clone().matmul(b.clone());
    assert_eq!(
        bits(mm(a.clone(), b.clone(), Precision::F32)),
        bits(exact.clone())
    );
    let error = max_relative(exact, mm(a, b, Precision::Bf16));
    assert!(error > 0.0 && error < 1e-2, "bf16 matmul error {error}");

    let grads = (rounded * plain.detach()).sum().backward();
    let weight = linear.weight.val().grad(&grads).expect("weight gradient");
    let bias = linear
        .bias
        .as_ref()
        .and_then(|b| b.val().grad(&grads))
        .expect("bias gradient");
    assert_eq!(weight.dtype(), DType::F32);
    assert_eq!(bias.dtype(), DType::F32);
    assert!(weight.abs().sum().into_scalar::<f32>() > 0.0);
}

/// The CPU backend has bf16; wgpu's WGSL shaders do not, and the run is refused there.
#[test]
fn devices_without_bf16_are_refused() {
    let config = calm::train::config::TrainConfig {
        precision: Precision::Bf16,
        ..Default::default()
    };
    assert!(config.validate_on(&Device::flex()).is_ok());
    #[cfg(feature = "wgpu")]
    if let Some(device) = common::wgpu_adapter() {
        let err = config.validate_on(&device).expect_err("wgpu has no bf16");
        eprintln!("{err}");
        assert_eq!(err.key, "train.precision");
        assert!(err.message.contains("bf16"), "{}", err.message);
        let f32 = calm::train::config::TrainConfig::default();
        assert!(f32.validate_on(&device).is_ok());
    }
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["loss"].as_f64().expect("loss")
        })
        .collect()
}

/// The dtypes of a safetensors file's tensors, from its header.
fn stored_dtypes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).expect("model");
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes[..8]);
    let length = u64::from_le_bytes(length) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + length]).expect("header json");
    header
        .as_object()
        .expect("object")
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().expect("dtype").to_string())
        .collect()
}

/// Every step's loss of the two runs within `TOLERANCE` of each other, relatively, and at
/// least one of them different (the bf16 path is really taken); returns the largest
/// relative difference.
fn compare(f32: &[f64], bf16: &[f64]) -> f64 {
    assert_eq!(f32.len(), bf16.len());
    let mut worst = 0f64;
    for (step, (a, b)) in f32.iter().zip(bf16).enumerate() {
        assert!(b.is_finite(), "step {step}: bf16 loss {b}");
        let relative = (a - b).abs() / a.abs().max(1e-6);
        assert!(
            relative <= TOLERANCE,
            "step {step}: f32 loss {a}, bf16 {b} ({relative} relative)"
        );
        worst = worst.max(relative);
    }
    assert!(
        f32 != bf16,
        "bf16 logged the f32 losses: its path was not taken"
    );
    worst
}

/// The tiny data-parallel pretraining, 50 steps of one micro-batch, in f32 and in bf16.
#[test]
fn tiny_pretraining_in_bf16_follows_f32() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |precision: &str| -> PathBuf {
        let out = dir.path().join(precision);
        let status = Command::new(env!("CARGO_BIN_EXE_pretrain"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--config", "configs/pretrain/tiny_data_parallel.yaml"])
            .arg("--output-dir")
            .arg(&out)
            .args(["--set", "pretrain.steps=50"])
            .args(["--set", "pretrain.gradient_accumulation=1"])
            .args(["--set", &format!("train.precision={precision}")])
            .output()
            .expect("runs");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        out
    };
    let (f32, bf16) = (run("f32"), run("bf16"));
    let (a, b) = (losses(&f32), losses(&bf16));
    assert_eq!(a.len(), 50);
    let worst = compare(&a, &b);
    eprintln!("pretraining: largest relative loss difference {worst:e} over 50 steps");
    let dtypes = stored_dtypes(&bf16.join("model.safetensors"));
    assert!(!dtypes.is_empty());
    assert!(dtypes.iter().all(|d| d == "F32"), "{dtypes:?}");
}

fn finetune_section(pretrained: &Path) -> String {
    format!(
        "
finetune:
  pretrained: {}
  batch_size: 2
  gradient_accumulation: 1
  max_length: 96
  lora: {{rank: 2, alpha: 4.0, dropout: 0.0}}
  projector_init: {{kind: least_squares, batches: 1, ridge: 0.1}}
  stages:
    - name: lora
      steps: 6
      schedule: {{peak_lr: 1.0e-3, warmup_steps: 1}}
      trainable: {{mfam: true, projector: true, llm: lora}}
      mix:
        - ratio: 1.0
          task: {{kind: self_supervised, turns: 2}}
",
        pretrained.display()
    )
}

/// `command` run in this process with `sets`, as its binary would run it.
fn run_in_process(command: &str, config: &Path, out: &Path, sets: &[String]) {
    let mut args: Vec<String> = vec![command.into(), "--config".into()];
    args.push(config.display().to_string());
    args.extend(["--output-dir".into(), out.display().to_string()]);
    for set in sets {
        args.extend(["--set".into(), set.clone()]);
    }
    let world = calm::distributed::World::single();
    let result = match command {
        "pretrain" => {
            calm::commands::pretrain::run(calm::commands::pretrain::Args::parse_from(&args), &world)
        }
        _ => {
            args.push("--no-eval".into());
            calm::commands::finetune::run(calm::commands::finetune::Args::parse_from(&args), &world)
        }
    };
    if let Err(e) = result {
        panic!("{command}: {e:#}");
    }
}

/// A tiny LoRA fine-tuning (the LLM's adapters, the MFAM and the projections training) in
/// bf16, with and without activation checkpointing, against f32: every step's loss within
/// `TOLERANCE`; the recomputed layers round as the forward did (the same losses and weights
/// as bf16 without checkpointing).
#[test]
fn tiny_lora_finetuning_in_bf16_follows_f32() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let llm = common::tiny_llm(root);
    let pretrain_config = root.join("pretrain.yaml");
    std::fs::write(&pretrain_config, common::TINY_MODEL).expect("write");
    let pretrained = root.join("pretrained");
    run_in_process("pretrain", &pretrain_config, &pretrained, &[]);

    let config = root.join("finetune.yaml");
    let yaml = common::with_llm(common::TINY_MODEL, &llm) + &finetune_section(&pretrained);
    std::fs::write(&config, yaml).expect("write");
    let run = |name: &str, precision: &str, checkpointing: bool| {
        let out = root.join(name);
        run_in_process(
            "finetune",
            &config,
            &out,
            &[
                format!("train.precision={precision}"),
                format!("train.activation_checkpointing={checkpointing}"),
            ],
        );
        out
    };
    let f32 = run("f32", "f32", false);
    let bf16 = run("bf16", "bf16", false);
    let bf16_ckpt = run("bf16_ckpt", "bf16", true);
    let (a, b) = (losses(&f32), losses(&bf16));
    assert_eq!(a.len(), 6);
    let worst = compare(&a, &b);
    eprintln!("LoRA fine-tuning: largest relative loss difference {worst:e} over 6 steps");
    assert_eq!(
        losses(&bf16_ckpt),
        b,
        "checkpointed bf16 layers recompute otherwise"
    );
    let dtypes = stored_dtypes(&bf16.join("model.safetensors"));
    assert!(dtypes.iter().all(|d| d == "F32"), "{dtypes:?}");
    let weights = |run: &Path| {
        calm::io::checkpoint::Tensors::read(&run.join("model.safetensors"))
            .expect("model")
            .tensors
    };
    assert!(
        weights(&bf16) == weights(&bf16_ckpt),
        "checkpointed bf16 weights differ"
    );
    assert!(weights(&bf16) != weights(&f32));
}

/// The model keeps the precision it was given through `Module` traversals (a runtime
/// setting, not a record): a mapped copy still computes in bf16.
#[test]
fn precision_survives_a_module_copy() {
    let device = Device::flex();
    let (mfam, vision, heads) = common::tiny_pretrain_configs();
    let model = calm::model::pretrain::PretrainModel::fresh(&mfam, &vision, &heads, &device)
        .with_precision(Precision::Bf16);
    let copy = model.clone().no_grad();
    assert_eq!(copy.mfam.precision, Precision::Bf16);
    let q = copy
        .mfam
        .qformer
        .as_ref()
        .or(copy.mfam.low.as_ref().and_then(|b| b.qformer.as_ref()));
    assert_eq!(q.map(|q| q.precision), Some(Precision::Bf16));
}
