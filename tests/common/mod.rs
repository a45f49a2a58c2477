//! Helpers shared by several test targets (each target compiles this module on its own, so
//! not every target uses every helper).
#![allow(dead_code)]

pub mod hostile;
pub mod tfrecord;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use calm::data::formats::scan_folder;
use calm::model::pretrain::PretrainHeadsConfig;
use calm::model::{ClipVisionConfig, MfamConfig, QFormerConfig, VisionConfig};

/// The tiny pretraining config of the binary tests (real EfficientNet-Lite0 at 64 px and
/// MiniLM, 2-layer 32-wide Q-Formers, 24 steps with a checkpoint every 3).
pub const TINY_PRETRAIN: &str = "
seed: 7
model:
  vision:
    kind: efficientnet_lite0
    image_size: 64
  mfam:
    low: {layers: [2], num_query_tokens: 2}
    middle: {layers: [3], num_query_tokens: 2}
    high: {layers: [5], num_query_tokens: 2}
    qformer: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 48}
    llm_hidden_size: 16
data:
  image: {resize_shorter: 72, crop: random}
  loader: {batch_size: 2}
pretrain:
  steps: 24
  checkpoint_every: 3
  keep_checkpoints: 2
  hold_out: 2
  qformer_init: random
  schedule: {peak_lr: 1.0e-3, warmup_steps: 2}
  evaluation: {severities: [1.0]}
";

/// `out`, after checking its process succeeded (else its stdout and stderr are the message).
pub fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The sample photos shipped in `data/samples`, sorted.
pub fn sample_photo_paths() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/samples");
    let mut paths = scan_folder(&dir, false).expect("sample photos");
    paths.sort();
    paths
}

/// Every float parameter's bits, in visiting order.
pub fn param_bits<M: Module>(module: &M) -> Vec<Vec<u32>> {
    struct Collect(Vec<Vec<u32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = param
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32");
            self.0.push(v.into_iter().map(f32::to_bits).collect());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// A 4-layer 16-wide CLIP at 16 px and an MFAM of 2-layer Q-Formers reading it (two queries
/// a level), with heads for 8-d text and 3 / 2 attributes: fast enough for training tests.
pub fn tiny_pretrain_configs() -> (MfamConfig, VisionConfig, PretrainHeadsConfig) {
    let vision = VisionConfig::Clip(ClipVisionConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 4,
        num_attention_heads: 2,
        image_size: 16,
        patch_size: 8,
        ..ClipVisionConfig::default()
    });
    let mut mfam = MfamConfig {
        qformer: QFormerConfig {
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 24,
            ..QFormerConfig::default()
        },
        llm_hidden_size: 12,
        ..MfamConfig::default()
    };
    for (level, layers) in [
        (&mut mfam.low, [1, 2]),
        (&mut mfam.middle, [2, 3]),
        (&mut mfam.high, [3, 4]),
    ] {
        level.layers = layers.to_vec();
        level.num_query_tokens = 2;
    }
    let heads = PretrainHeadsConfig {
        text_dim: 8,
        low_attributes: 3,
        middle_attributes: 2,
    };
    (mfam, vision, heads)
}

/// `inspect forward --arch ARCH` on a checkpoint and an inputs file, as a user runs it.
pub fn inspect_forward(
    arch: &str,
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(["forward", "--arch", arch, "--checkpoint"])
        .arg(checkpoint)
        .arg("--inputs")
        .arg(inputs)
        .arg("--output")
        .arg(output)
        .output()
        .expect("runs")
}

/// Kills a training run at random moments until an attempt finishes on its own: first as soon
/// as the run is recorded (`run.json`, before any checkpoint: it resumes from step 0), then
/// right after its first checkpoint appears, then, each resumption, either after a random
/// delay of up to `early` (while it loads, or in its first steps) or a random few milliseconds
/// after its next checkpoint appears (mid-step, or while the following checkpoint is
/// written). The draws come from a fixed generator; where each kill lands depends on the
/// machine. Returns how many times the run was killed. Every attempt that ends on its own
/// must succeed.
pub fn kill_at_random_until_done(
    run: &Path,
    first: impl Fn() -> std::process::Child,
    resume: impl Fn() -> std::process::Child,
    early: std::time::Duration,
) -> usize {
    use std::time::{Duration, Instant};
    let latest = run.join("checkpoints/latest");
    let read_latest = || std::fs::read_to_string(&latest).unwrap_or_default();
    let started = Instant::now();
    let mut child = first();
    while !run.join("run.json").is_file() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run was not recorded"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    assert!(read_latest().is_empty(), "a checkpoint before any training");
    let mut child = resume();
    while read_latest().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        if child.try_wait().expect("wait").is_some() {
            panic!("the run ended before its first checkpoint could be awaited");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let mut kills = 2;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut draw = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1_000_000) as f64 / 1_000_000.0
    };
    for _ in 0..100 {
        let before = read_latest();
        let mut child = resume();
        let deadline = if draw() < 0.3 {
            Some(Instant::now() + early.mul_f64(draw()))
        } else {
            None
        };
        let mut checkpointed_at = None;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            let now = Instant::now();
            if checkpointed_at.is_none() && deadline.is_none() && read_latest() != before {
                checkpointed_at = Some(now + Duration::from_micros((draw() * 30_000.0) as u64));
            }
            if deadline.is_some_and(|d| now >= d) || checkpointed_at.is_some_and(|d| now >= d) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        match status {
            Some(status) => {
                assert!(status.success(), "a resumption failed: {status:?}");
                return kills;
            }
            None => {
                child.kill().expect("kill");
                child.wait().expect("reaped");
                kills += 1;
            }
        }
    }
    panic!("never finished after {kills} kills");
}

/// A tiny random LLaMA checkpoint folder with the LLaMA-2 vocabulary and tokenizer.
pub fn tiny_llm(dir: &Path) -> PathBuf {
    let llm = dir.join("llm");
    std::fs::create_dir_all(&llm).expect("mkdir");
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "vocab_size": 32000,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2
    });
    std::fs::write(llm.join("config.json"), config.to_string()).expect("config");
    let parsed = calm::io::llama::read_llama_config(&llm).expect("llama config");
    let device = burn::tensor::Device::flex();
    device.seed(11);
    calm::io::checkpoint::save_module(&parsed.init(&device), &llm.join("model.safetensors"))
        .expect("save");
    let tokenizer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tokenizers/llama-2/tokenizer.json");
    std::fs::copy(tokenizer, llm.join("tokenizer.json")).expect("tokenizer");
    llm
}

/// Copies a run directory (files and folders, no links).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The tiny model, data and pretraining section that the fine-tuning tests share: the real
/// EfficientNet-Lite0 at 64 px, 2-layer 32-wide Q-Formers, two pretraining steps.
pub const TINY_MODEL: &str = "
seed: 3
model:
  vision:
    kind: efficientnet_lite0
    image_size: 64
  mfam:
    low: {layers: [2], num_query_tokens: 2}
    middle: {layers: [3], num_query_tokens: 2}
    high: {layers: [5], num_query_tokens: 2}
    qformer: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 48}
    thematic: {pool: 1}
    llm_hidden_size: 16
  llm:
    system_prompt: Judge photos.
data:
  image: {resize_shorter: 72, crop: random}
  loader: {batch_size: 2}
pretrain:
  steps: 2
  hold_out: 2
  qformer_init: random
  schedule: {peak_lr: 1.0e-3, warmup_steps: 1}
  evaluation: {severities: [1.0]}
";

/// `model` (a config holding `TINY_MODEL`'s `model:` section) with `llm` as its LLM.
pub fn with_llm(model: &str, llm: &Path) -> String {
    model.replacen(
        "  llm:\n",
        &format!("  weights:\n    llm: {}\n  llm:\n", llm.display()),
        1,
    )
}

/// The default wgpu adapter, if this machine has one that runs a kernel.
#[cfg(feature = "wgpu")]
pub fn wgpu_adapter() -> Option<burn::tensor::Device> {
    let device = calm::device::DeviceSpec::Wgpu.device().ok()?;
    let probe = device.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        Tensor::<1>::from_floats([1.0, 2.0], &probe)
            .sum()
            .into_scalar::<f32>()
    }))
    .ok()
    .filter(|&s| s == 3.0)
    .map(|_| device)
}
