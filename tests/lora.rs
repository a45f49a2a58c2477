//! LoRA on the LLaMA: a fresh adapter changes nothing; training only the adapters changes the
//! output and leaves every base weight bit for bit; merged weights give the logits of base +
//! adapters; the adapters save and load on their own.

mod common;

use std::path::Path;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use calm::io::checkpoint::{load_module, save_module};
use calm::io::llama::load_llama;
use calm::model::lora::{LoraConfig, LoraTarget};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/gqa_untied")
}

fn ids(device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(vec![3i64, 17, 42, 8, 60, 11], [1, 6]),
        device,
    )
}

fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn adapters_train_alone_save_alone_and_merge_to_the_same_logits() {
    let device = Device::flex().autodiff();
    let (base, _, _) = load_llama(&fixture(), &device).expect("loads");
    let base_bits = common::param_bits(&base);
    let before = base.forward(ids(&device), None);
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: vec![LoraTarget::QProj, LoraTarget::VProj, LoraTarget::DownProj],
    };
    let mut model = base.with_lora(&config, &device);
    // B starts at zero: the adapted model is the base model.
    assert_eq!(
        max_abs_diff(model.forward(ids(&device), None), before.clone()),
        0.0
    );

    // A few Adam steps on "predict token 5 everywhere".
    let mut optim = AdamConfig::new().init();
    let target = Tensor::<2, Int>::from_data(TensorData::new(vec![5i64; 6], [1, 6]), &device);
    for _ in 0..5 {
        let logits = model.forward(ids(&device), None);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits.reshape([6, 96]), target.clone().reshape([6]));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let after = model.forward(ids(&device), None);
    assert!(
        max_abs_diff(after.clone(), before) > 1e-3,
        "training changed nothing"
    );
    // The base weights did not move: the model's parameters minus the adapters.
    let mut frozen = model.clone();
    let adapters = frozen.lora.take().expect("adapters");
    assert_eq!(common::param_bits(&frozen), base_bits);
    // 2 layers x 3 targets x (A, B).
    assert_eq!(common::param_bits(&adapters).len(), 12);

    // Merged weights give base + adapters.
    let merged = model.merged();
    assert!(merged.lora.is_none());
    let err = max_abs_diff(merged.forward(ids(&device), None), after.clone());
    assert!(err <= 1e-5, "merged differs by {err}");

    // The adapters alone round-trip through a file, onto a fresh set.
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("adapters.safetensors");
    save_module(&adapters, &path).expect("save");
    let (base, _, _) = load_llama(&fixture(), &device).expect("loads");
    let mut fresh = base.with_lora(&config, &device);
    let mut lora = fresh.lora.take().expect("adapters");
    let report = load_module(&mut lora, &path).expect("load");
    assert!(report.unexpected.is_empty());
    fresh.lora = Some(lora);
    assert_eq!(max_abs_diff(fresh.forward(ids(&device), None), after), 0.0);
    let keys = calm::io::checkpoint::Tensors::read(&path).expect("read");
    assert!(
        keys.tensors
            .contains_key("layers.1.self_attn.q_proj.lora_A.weight"),
        "{:?}",
        keys.tensors.keys().collect::<Vec<_>>()
    );
}
