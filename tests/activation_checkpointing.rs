//! Activation checkpointing per transformer layer (issue #23, item 2; `model::checkpoint`):
//! a LLaMA with LoRA adapters, a fully trained LLaMA and the MFAM's Q-Formers give the
//! gradients they give without it, bit for bit, except where three or more checkpointed
//! layers read one input (its gradient is summed in another order); a tiny pretraining and
//! fine-tuning with `train.activation_checkpointing` log the same metrics and end with the
//! same weights. Each test checks that layers were checkpointed and recomputed, from the
//! process-wide counters: the tests take a lock so that no other test moves them meanwhile.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Gradients, Int, Tensor, TensorData};
use calm::model::checkpoint::{checkpointed_layers, recomputed_layers};
use calm::model::llama::{KvCache, LlamaConfig, LlamaForCausalLM};
use calm::model::lora::LoraConfig;
use calm::model::pretrain::PretrainModel;
use clap::Parser;

/// Held by every test: the counters are process-wide.
static COUNTERS: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    COUNTERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on its own thread and fails if it has not finished within `limit`: a
/// recomputation that touched the outer graph would wait on that graph's lock forever.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match receive.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("not finished within {limit:?}: a deadlock?"),
    }
}

/// `(checkpointed, recomputed)` layer calls while `f` runs.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (recorded, recomputed) = (checkpointed_layers(), recomputed_layers());
    let value = f();
    (
        value,
        checkpointed_layers() - recorded,
        recomputed_layers() - recomputed,
    )
}

/// Every trainable parameter's gradient bits, by parameter path.
fn param_grads<M: Module>(module: &M, grads: &Gradients) -> BTreeMap<String, Vec<u32>> {
    struct Collect<'a> {
        grads: &'a Gradients,
        path: Vec<String>,
        found: BTreeMap<String, Vec<u32>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if !value.is_require_grad() {
                return;
            }
            let grad = value.grad(self.grads).map_or_else(Vec::new, bits);
            self.found.insert(self.path.join("."), grad);
        }
    }
    let mut c = Collect {
        grads,
        path: Vec::new(),
        found: BTreeMap::new(),
    };
    module.visit(&mut c);
    c.found
}

fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Every parameter drawn anew (keeping its id and whether it trains): LoRA's B starts at
/// zero, which would leave A's gradient zero whatever the backward does.
fn redraw<M: Module>(module: M, seed: u64, device: &Device) -> M {
    struct Redraw;
    impl ModuleMapper for Redraw {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| {
                let trains = t.is_require_grad();
                let fresh = t.random_like(Distribution::Normal(0.0, 0.3));
                if trains { fresh.require_grad() } else { fresh }
            })
        }
    }
    device.seed(seed);
    module.map(&mut Redraw)
}

fn tiny_llama(layers: usize, device: &Device) -> LlamaForCausalLM {
    device.seed(5);
    LlamaConfig {
        vocab_size: 64,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
        ..LlamaConfig::default()
    }
    .init(device)
}

/// Two rows of 7 tokens, the second right-padded by 2, and a target for each position.
fn llm_batch(device: &Device) -> (Tensor<2, Int>, Tensor<2>, Tensor<1, Int>) {
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            vec![3i64, 17, 42, 8, 60, 11, 9, 5, 33, 21, 7, 50, 0, 0],
            [2, 7],
        ),
        device,
    );
    let mask = Tensor::<2>::from_data(
        TensorData::new(
            vec![1.0f32, 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0.],
            [2, 7],
        ),
        device,
    );
    let targets = Tensor::<1, Int>::from_data(
        TensorData::new((0..14).map(|i| (i * 7 % 64) as i64).collect(), [14]),
        device,
    );
    (ids, mask, targets)
}

fn llm_loss(logits: Tensor<3>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    burn::nn::loss::CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.reshape([b * t, v]), targets)
}

/// LoRA on every linear layer of a 3-layer LLaMA, base and embeddings frozen (no input of
/// the first layer is tracked: the node hangs on a stand-in leaf): the adapters' gradients
/// are those of the run without checkpointing, to the bit.
#[test]
fn lora_gradients_are_bit_identical() {
    let _guard = lock();
    within(Duration::from_secs(120), || {
        let device = Device::flex().autodiff();
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            ..LoraConfig::default()
        };
        let model = tiny_llama(3, &device).with_lora(&lora, &device);
        let model = redraw(model, 9, &device);
        let (ids, mask, targets) = llm_batch(&device);
        let grads = |on: bool| {
            let model = model.clone().with_activation_checkpointing(on);
            let (logits, recorded, _) = counted(|| model.forward(ids.clone(), Some(mask.clone())));
            let loss = llm_loss(logits, targets.clone());
            let (grads, _, recomputed) = counted(|| loss.backward());
            (
                loss.into_scalar::<f32>().to_bits(),
                param_grads(&model, &grads),
                recorded,
                recomputed,
            )
        };
        let (loss, plain, recorded, recomputed) = grads(false);
        assert_eq!((recorded, recomputed), (0, 0));
        let (loss_ckpt, checkpointed, recorded, recomputed) = grads(true);
        assert_eq!((recorded, recomputed), (3, 3), "every layer checkpointed");
        assert_eq!(loss, loss_ckpt);
        // 3 layers x 7 adapters x (A, B), each with a non-zero gradient.
        assert_eq!(plain.len(), 42);
        assert!(
            plain
                .values()
                .all(|g| g.iter().any(|&b| f32::from_bits(b) != 0.0))
        );
        assert_eq!(
            plain.keys().collect::<Vec<_>>(),
            checkpointed.keys().collect::<Vec<_>>()
        );
        for (name, grad) in &plain {
            assert!(grad == &checkpointed[name], "{name} differs");
        }
    });
}

/// The same on the wgpu backend (the node's `Cube` path; software Vulkan on a CPU-only
/// machine, skipped without an adapter outside CI): the node records and recomputes there
/// too, and the adapters' gradients agree within 1e-5 of their largest magnitude (they are
/// bit-identical on software Vulkan; a GPU kernel chosen by autotuning may sum in another
/// order when the layer runs again).
#[cfg(feature = "wgpu")]
#[test]
fn lora_gradients_agree_on_wgpu() {
    let _guard = lock();
    let Some(gpu) = wgpu_adapter() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs software Vulkan, yet no wgpu adapter was found"
        );
        eprintln!("no wgpu adapter on this machine; nothing to compare");
        return;
    };
    within(Duration::from_secs(300), move || {
        let device = gpu.autodiff();
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            ..LoraConfig::default()
        };
        let model = tiny_llama(3, &device).with_lora(&lora, &device);
        let model = redraw(model, 9, &device);
        let (ids, mask, targets) = llm_batch(&device);
        let grads = |on: bool| {
            let model = model.clone().with_activation_checkpointing(on);
            let (logits, recorded, _) = counted(|| model.forward(ids.clone(), Some(mask.clone())));
            let loss = llm_loss(logits, targets.clone());
            let (grads, _, recomputed) = counted(|| loss.backward());
            (param_grads(&model, &grads), recorded, recomputed)
        };
        let (plain, r0, c0) = grads(false);
        let (checkpointed, r1, c1) = grads(true);
        assert_eq!((r0, c0, r1, c1), (0, 0, 3, 3));
        assert_eq!(plain.len(), 42);
        for (name, grad) in &plain {
            let floats = |g: &[u32]| g.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>();
            let (a, b) = (floats(grad), floats(&checkpointed[name]));
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                scale > 0.0 && worst <= 1e-5 * scale,
                "{name}: {worst} against {scale}"
            );
        }
    });
}

/// The default wgpu adapter, if it runs a kernel.
#[cfg(feature = "wgpu")]
fn wgpu_adapter() -> Option<Device> {
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

/// Every weight of the LLaMA trains and its input embeddings are a tracked leaf (visual
/// tokens from trained projections): their gradients too are bit-identical. Generation (a
/// KV cache) and a forward outside autodiff are never checkpointed.
#[test]
fn full_model_and_input_gradients_are_bit_identical() {
    let _guard = lock();
    within(Duration::from_secs(120), || {
        let device = Device::flex().autodiff();
        let model = redraw(tiny_llama(3, &device), 4, &device);
        let (ids, mask, targets) = llm_batch(&device);
        device.seed(8);
        let embeds = Tensor::<3>::random([2, 7, 16], Distribution::Normal(0.0, 1.0), &device);
        let grads = |on: bool| {
            let model = model.clone().with_activation_checkpointing(on);
            let embeds = embeds.clone().require_grad();
            let (hidden, recorded, _) =
                counted(|| model.hidden_states(embeds.clone(), Some(mask.clone()), None, None));
            let loss = llm_loss(model.logits(hidden), targets.clone());
            let (grads, _, recomputed) = counted(|| loss.backward());
            let mut found = param_grads(&model, &grads);
            let input = embeds.grad(&grads).map_or_else(Vec::new, bits);
            found.insert("input embeddings".into(), input);
            (found, recorded, recomputed)
        };
        let (plain, recorded, recomputed) = grads(false);
        assert_eq!((recorded, recomputed), (0, 0));
        let (checkpointed, recorded, recomputed) = grads(true);
        assert_eq!((recorded, recomputed), (3, 3));
        assert!(!plain["input embeddings"].is_empty());
        assert_eq!(
            plain.keys().collect::<Vec<_>>(),
            checkpointed.keys().collect::<Vec<_>>()
        );
        for (name, grad) in &plain {
            assert!(grad == &checkpointed[name], "{name} differs");
        }

        let model = model.with_activation_checkpointing(true);
        let (_, recorded, _) = counted(|| {
            let mut cache = KvCache::new();
            model.forward_embeds(embeds.clone(), None, None, Some(&mut cache));
            assert_eq!(cache.len(), 7, "the cache is filled");
            model.valid().forward(ids.clone().inner(), None)
        });
        assert_eq!(recorded, 0, "generation and inference run plainly");
    });
}

/// The MFAM of pretraining (`PretrainModel`) on tracked encoder states, so that the
/// gradient also flows into the image features the cross-attention reads.
fn mfam_grads(
    layers: usize,
    cross_every: usize,
) -> [(BTreeMap<String, Vec<u32>>, usize, usize); 2] {
    let device = Device::flex().autodiff();
    let (mut mfam, vision, heads) = common::tiny_pretrain_configs();
    mfam.qformer.num_hidden_layers = layers;
    mfam.qformer.cross_attention_frequency = cross_every;
    device.seed(3);
    let model = PretrainModel::fresh(&mfam, &vision, &heads, &device);
    let model = redraw(model, 6, &device);
    device.seed(12);
    // CLIP at 16 px with 8 px patches: a CLS and 4 patch tokens, 16 wide, at every depth.
    let states: Vec<Tensor<3>> = (0..5)
        .map(|_| Tensor::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    let weights: Vec<Tensor<3>> = (0..3)
        .map(|_| Tensor::random([2, 2, 8], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    [false, true].map(|on| {
        let model = model.clone().with_activation_checkpointing(on);
        let states: Vec<Tensor<3>> = states.iter().map(|s| s.clone().require_grad()).collect();
        let (out, recorded, _) = counted(|| model.forward(&states));
        let mut loss = out.quality.sum();
        for (level, w) in [&out.low, &out.middle, &out.high].into_iter().zip(&weights) {
            let level = level.as_ref().expect("every level is on");
            loss = loss + (level.text_queries.clone() * w.clone()).sum();
            if let Some(a) = &level.attributes {
                loss = loss + a.clone().powi_scalar(2).sum();
            }
        }
        let (grads, _, recomputed) = counted(|| loss.backward());
        let mut found = param_grads(&model, &grads);
        // Depth 0 (the embeddings) is read by no level.
        for (i, s) in states.iter().enumerate().skip(1) {
            found.insert(
                format!("states {i}"),
                s.grad(&grads).map_or_else(Vec::new, bits),
            );
        }
        (found, recorded, recomputed)
    })
}

/// Two-layer Q-Formers whose first layer cross-attends (the built-in shape): every
/// parameter's gradient and the encoder states' are bit-identical.
#[test]
fn qformer_gradients_are_bit_identical() {
    let _guard = lock();
    within(Duration::from_secs(120), || {
        let [(plain, r0, c0), (checkpointed, r1, c1)] = mfam_grads(2, 2);
        assert_eq!((r0, c0), (0, 0));
        // Three levels of two layers each.
        assert_eq!((r1, c1), (6, 6));
        assert!(plain.keys().any(|k| k.contains("crossattention")));
        assert_eq!(
            plain.keys().collect::<Vec<_>>(),
            checkpointed.keys().collect::<Vec<_>>()
        );
        for (name, grad) in &plain {
            assert!(!grad.is_empty(), "{name} has no gradient");
            assert!(grad == &checkpointed[name], "{name} differs");
        }
    });
}

/// Three layers that all cross-attend: the parameters' gradients are bit-identical; the
/// encoder states, read by the three layers' keys and values, get their six terms summed
/// in another order (three per-layer sums), within 1e-6 of their largest magnitude.
#[test]
fn qformer_cross_attention_in_every_layer() {
    let _guard = lock();
    within(Duration::from_secs(120), || {
        let [(plain, _, _), (checkpointed, recorded, recomputed)] = mfam_grads(3, 1);
        assert_eq!((recorded, recomputed), (9, 9));
        for (name, grad) in &plain {
            let other = &checkpointed[name];
            if !name.starts_with("states") {
                assert!(grad == other, "{name} differs");
                continue;
            }
            let floats = |g: &[u32]| g.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>();
            let (a, b) = (floats(grad), floats(other));
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(scale > 0.0, "{name} has no gradient");
            assert!(worst <= 1e-6 * scale, "{name}: {worst} against {scale}");
        }
    });
}

fn finetune_section(pretrained: &Path) -> String {
    format!(
        "
finetune:
  pretrained: {}
  batch_size: 2
  gradient_accumulation: 2
  max_length: 96
  lora: {{rank: 2, alpha: 4.0, dropout: 0.0}}
  projector_init: {{kind: least_squares, batches: 1, ridge: 0.1}}
  stages:
    - name: projector
      steps: 1
      schedule: {{peak_lr: 1.0e-3, warmup_steps: 0}}
      trainable: {{mfam: false, projector: true, llm: frozen}}
      mix:
        - ratio: 1.0
          task: {{kind: self_supervised, questions: 2}}
    - name: lora
      steps: 2
      schedule: {{peak_lr: 1.0e-3, warmup_steps: 1}}
      trainable: {{mfam: true, projector: true, llm: lora}}
      mix:
        - ratio: 1.0
          task: {{kind: self_supervised, turns: 2}}
",
        pretrained.display()
    )
}

/// `metrics.jsonl` without its throughput, which is the only field timing may change.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let line = v.as_object_mut().expect("object");
            line.remove("tokens_per_second");
            line.remove("images_per_second");
            v
        })
        .collect()
}

fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    calm::io::checkpoint::Tensors::read(path)
        .expect("model")
        .tensors
}

/// A command run in this process (so that the counters see it), as its binary would run it.
fn run_in_process(command: &str, config: &Path, out: &Path, checkpointing: bool) -> (usize, usize) {
    let mut args: Vec<String> = vec![command.into(), "--config".into()];
    args.push(config.display().to_string());
    args.extend(["--output-dir".into(), out.display().to_string()]);
    args.extend([
        "--set".into(),
        format!("train.activation_checkpointing={checkpointing}"),
    ]);
    let world = calm::distributed::World::single();
    let ((), recorded, recomputed) = counted(|| {
        let result = match command {
            "pretrain" => calm::commands::pretrain::run(
                calm::commands::pretrain::Args::parse_from(&args),
                &world,
            ),
            _ => {
                args.push("--no-eval".into());
                calm::commands::finetune::run(
                    calm::commands::finetune::Args::parse_from(&args),
                    &world,
                )
            }
        };
        if let Err(e) = result {
            panic!("{command}: {e:#}");
        }
    });
    (recorded, recomputed)
}

/// A tiny pretraining and fine-tuning (projector stage, then LoRA with the MFAM training
/// too, two micro-batches a step), each run with and without checkpointing: the same
/// metrics, the same final weights.
#[test]
fn training_runs_log_the_same_metrics_and_end_with_the_same_weights() {
    let _guard = lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let llm = common::tiny_llm(&root);
    let pretrain_config = root.join("pretrain.yaml");
    std::fs::write(&pretrain_config, common::TINY_MODEL).expect("write");
    let run = |command: &str, config: &PathBuf, name: &str, on: bool| {
        let out = root.join(name);
        let counts = run_in_process(command, config, &out, on);
        (out, counts)
    };

    let (pretrained, counts) = run("pretrain", &pretrain_config, "pretrain_plain", false);
    assert_eq!(counts, (0, 0));
    let (pretrained_ckpt, (recorded, recomputed)) =
        run("pretrain", &pretrain_config, "pretrain_ckpt", true);
    assert!(recorded > 0 && recomputed > 0, "{recorded} {recomputed}");
    assert_eq!(metrics(&pretrained), metrics(&pretrained_ckpt));
    assert_eq!(metrics(&pretrained).len(), 2);
    assert!(
        tensors(&pretrained.join("model.safetensors"))
            == tensors(&pretrained_ckpt.join("model.safetensors")),
        "pretrained weights differ"
    );

    let config = root.join("finetune.yaml");
    let yaml = common::with_llm(common::TINY_MODEL, &llm) + &finetune_section(&pretrained);
    std::fs::write(&config, yaml).expect("write");
    let (plain, counts) = run("finetune", &config, "finetune_plain", false);
    assert_eq!(counts, (0, 0));
    let (checkpointed, (recorded, recomputed)) = run("finetune", &config, "finetune_ckpt", true);
    // Every step's micro-batches run the LLM's 2 layers, the LoRA stage the Q-Formers' too.
    assert!(
        recorded >= 3 * 2 * 2 && recomputed >= 3 * 2 * 2,
        "{recorded} {recomputed}"
    );
    assert_eq!(metrics(&plain), metrics(&checkpointed));
    assert_eq!(metrics(&plain).len(), 3);
    let (a, b) = (
        tensors(&plain.join("model.safetensors")),
        tensors(&checkpointed.join("model.safetensors")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, value) in &a {
        assert!(value == &b[key], "{key} differs");
    }
}

/// LoRA dropout would draw another mask in the recomputation: the config refuses it.
#[test]
fn lora_dropout_with_checkpointing_is_refused() {
    use calm::config::Validate;
    let mut config = calm::experiment::ExperimentConfig::default();
    config.train.activation_checkpointing = true;
    config.finetune.lora.dropout = 0.05;
    let err = config.validate().expect_err("refused");
    assert_eq!(err.key, "train.activation_checkpointing");
    config.train.activation_checkpointing = false;
    assert!(config.validate().is_ok());
}
