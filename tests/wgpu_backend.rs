//! The GPU kernels' path: a small forward pass on the wgpu backend equals the same pass on the
//! CPU backend. Built only with `--features wgpu`; on a machine without a Vulkan (or other
//! wgpu) adapter it reports and returns, except in CI, which installs software Vulkan.
#![cfg(feature = "wgpu")]

mod common;

use burn::module::Module;
use burn::nn::{LayerNormConfig, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Distribution, Tensor};

/// The adapter, or `None` (after saying so) on a machine without one; CI must have one.
fn adapter_outside_ci() -> Option<Device> {
    let found = common::wgpu_adapter();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs software Vulkan, yet no wgpu adapter was found"
        );
        eprintln!("no wgpu adapter on this machine; nothing to compare");
    }
    found
}

#[test]
fn forward_pass_on_wgpu_matches_flex() {
    let Some(gpu) = adapter_outside_ci() else {
        return;
    };
    let cpu = Device::flex();
    let linear = LinearConfig::new(32, 48).init(&cpu);
    let norm = LayerNormConfig::new(48).init(&cpu);
    let x = Tensor::<3>::random([2, 5, 32], Distribution::Normal(0.0, 1.0), &cpu);

    let forward = |x: Tensor<3>, linear: &burn::nn::Linear, norm: &burn::nn::LayerNorm| {
        softmax(norm.forward(gelu(linear.forward(x))), 2)
    };
    let expected = forward(x.clone(), &linear, &norm).into_data();
    let got = forward(
        x.to_device(&gpu),
        &linear.clone().to_device(&gpu),
        &norm.clone().to_device(&gpu),
    )
    .into_data();
    let (e, g): (Vec<f32>, Vec<f32>) = (
        expected.try_to_vec().expect("f32"),
        got.try_to_vec().expect("f32"),
    );
    assert_eq!(e.len(), g.len());
    let max = e
        .iter()
        .zip(&g)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-5, "max abs difference {max}");
}

/// The Q-Former's masked cross-attention (scores plus f32::MIN at padded keys) on the GPU
/// kernels' path equals transformers' output.
#[test]
fn masked_q_former_on_wgpu_matches_the_reference() {
    let Some(gpu) = adapter_outside_ci() else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/qformer/a_queries_mask");
    let (model, _) = calm::io::hf::load_qformer(&dir, &gpu).expect("loads");
    let inputs = calm::io::checkpoint::Tensors::read(&dir.join("inputs.safetensors")).expect("in");
    let expected =
        calm::io::checkpoint::Tensors::read(&dir.join("outputs.safetensors")).expect("out");
    let q: Tensor<3> = inputs.tensor("query_embeds", &gpu).expect("queries");
    let enc: Tensor<3> = inputs.tensor("encoder_hidden_states", &gpu).expect("enc");
    let mask = Tensor::<2>::from_data(
        burn::tensor::TensorData::new([[1f32; 7], [1., 1., 1., 1., 0., 0., 0.]].concat(), [2, 7]),
        &gpu,
    );
    let got = model.forward(q, enc, Some(mask));
    let want: Tensor<3> = expected.tensor("last_hidden_state", &gpu).expect("ref");
    let max = (got - want).abs().max().into_scalar::<f32>();
    eprintln!("Q-Former on wgpu: max abs error {max:e}");
    assert!(max <= 1e-4, "max abs error {max}");
}
