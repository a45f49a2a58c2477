//! CLIP vision encoder against HF `transformers`' `CLIPVisionModel` on tiny random
//! checkpoints (fixtures from scripts/fixtures/make_clip_fixtures.py): every hidden state, the
//! last hidden state and the pooled output within 1e-4, for f32, f16 and sharded bf16
//! checkpoints, at the checkpoint's size and with interpolated position embeddings.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use calm::io::checkpoint::{Tensors, apply};
use calm::io::hf::{load_clip_vision, read_clip_vision_config};
use calm::model::HiddenAct;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip")
        .join(name)
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar::<f32>()
}

/// Runs the checkpoint in `dir` on `inputs{suffix}` and compares with `outputs{suffix}`.
fn check(dir: &Path, suffix: &str, layers: usize) {
    let device = Device::flex();
    let (model, report) = load_clip_vision(dir, &device).expect("loads");
    assert!(!report.applied.is_empty());
    let inputs = Tensors::read(&dir.join(format!("inputs{suffix}.safetensors"))).expect("inputs");
    let expected =
        Tensors::read(&dir.join(format!("outputs{suffix}.safetensors"))).expect("outputs");
    let pixels: Tensor<4> = inputs
        .tensor("pixel_values", &device)
        .expect("pixel_values");
    let out = model.forward(pixels);
    assert_eq!(out.hidden_states.len(), layers + 1);
    let mut worst = 0f32;
    for (i, h) in out.hidden_states.into_iter().enumerate() {
        let e: Tensor<3> = expected
            .tensor(&format!("hidden_states.{i}"), &device)
            .expect("hidden state");
        worst = worst.max(max_abs_diff(h, e));
    }
    let e: Tensor<3> = expected.tensor("last_hidden_state", &device).expect("last");
    worst = worst.max(max_abs_diff(out.last_hidden_state, e));
    let e: Tensor<2> = expected.tensor("pooler_output", &device).expect("pooled");
    worst = worst.max(max_abs_diff(out.pooler_output, e));
    assert!(
        worst <= 1e-4,
        "{} {suffix}: max abs error {worst}",
        dir.display()
    );
    eprintln!("{} {suffix}: max abs error {worst:e}", dir.display());
}

#[test]
fn quick_gelu_f32_matches_the_reference() {
    check(&case("a_quick_gelu_f32"), "", 2);
}

#[test]
fn gelu_f16_matches_the_reference() {
    check(&case("b_gelu_f16"), "", 3);
}

#[test]
fn interpolated_positions_match_interpolate_pos_encoding() {
    check(&case("a_quick_gelu_f32"), "_48x40", 2);
    check(&case("b_gelu_f16"), "_36x30", 3);
}

#[test]
fn vision_tower_of_a_sharded_bf16_clip_model_loads() {
    let dir = case("c_full_clip_bf16_sharded");
    check(&dir, "", 2);
    let (_, report) = load_clip_vision(&dir, &Device::flex()).expect("loads");
    assert!(
        report
            .unexpected
            .iter()
            .any(|k| k.starts_with("text_model.")),
        "{:?}",
        report.unexpected
    );
    assert!(
        report
            .unexpected
            .iter()
            .all(|k| !k.starts_with("vision_model.")),
        "{:?}",
        report.unexpected
    );
}

#[test]
fn the_comparison_can_fail() {
    // The same weights under the wrong activation must miss the reference by far more than
    // the tolerance, or the parity tests above would prove nothing.
    let dir = case("a_quick_gelu_f32");
    let device = Device::flex();
    let mut config = read_clip_vision_config(&dir).expect("config");
    assert_eq!(config.hidden_act, HiddenAct::QuickGelu);
    config.hidden_act = HiddenAct::Gelu;
    let mut model = config.init(&device);
    apply(&mut model, Tensors::read_dir(&dir).expect("weights"), &dir).expect("applies");
    let inputs = Tensors::read(&dir.join("inputs.safetensors")).expect("inputs");
    let expected = Tensors::read(&dir.join("outputs.safetensors")).expect("outputs");
    let out = model.forward(inputs.tensor("pixel_values", &device).expect("pixels"));
    let e: Tensor<3> = expected.tensor("last_hidden_state", &device).expect("last");
    assert!(max_abs_diff(out.last_hidden_state, e) > 1e-3);
}

#[test]
fn missing_and_misshapen_weights_are_errors_naming_the_key() {
    let dir = case("a_quick_gelu_f32");
    let device = Device::flex();
    let config = read_clip_vision_config(&dir).expect("config");
    let mut tensors = Tensors::read_dir(&dir).expect("weights");
    tensors.tensors.remove("encoder.layers.1.mlp.fc2.bias");
    tensors.tensors.remove("post_layernorm.weight");
    let err = apply(&mut config.init(&device), tensors, &dir)
        .expect_err("missing")
        .to_string();
    assert!(
        err.contains("encoder.layers.1.mlp.fc2.bias") && err.contains("post_layernorm.weight"),
        "{err}"
    );

    let mut tensors = Tensors::read_dir(&dir).expect("weights");
    let (shape, bytes) = tensors
        .tensors
        .remove("encoder.layers.0.self_attn.q_proj.weight")
        .expect("q");
    tensors.tensors.insert(
        "encoder.layers.0.self_attn.q_proj.weight".into(),
        (vec![shape[0] / 2, shape[1] * 2], bytes),
    );
    let err = apply(&mut config.init(&device), tensors, &dir)
        .expect_err("shape")
        .to_string();
    assert!(
        err.contains("encoder.layers.0.self_attn.q_proj.weight"),
        "{err}"
    );
}

#[test]
fn inspect_forward_writes_the_reference_outputs() {
    let dir = case("b_gelu_f16");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_path = tmp.path().join("out.safetensors");
    let status = common::inspect_forward(
        "clip-vision",
        &dir,
        &dir.join("inputs_36x30.safetensors"),
        &out_path,
    );
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let device = Device::flex();
    let got = Tensors::read(&out_path).expect("written");
    let expected = Tensors::read(&dir.join("outputs_36x30.safetensors")).expect("reference");
    let mut keys: Vec<&String> = got.tensors.keys().collect();
    keys.sort();
    let mut want: Vec<&String> = expected.tensors.keys().collect();
    want.sort();
    assert_eq!(keys, want, "same output names as the reference");
    for key in ["last_hidden_state", "hidden_states.0", "hidden_states.3"] {
        let a: Tensor<3> = got.tensor(key, &device).expect("got");
        let b: Tensor<3> = expected.tensor(key, &device).expect("expected");
        assert!(max_abs_diff(a, b) <= 1e-4, "{key}");
    }
    let a: Tensor<2> = got.tensor("pooler_output", &device).expect("got");
    let b: Tensor<2> = expected.tensor("pooler_output", &device).expect("expected");
    assert!(max_abs_diff(a, b) <= 1e-4);

    let bad = common::inspect_forward(
        "clip-vision",
        &dir,
        &dir.join("outputs.safetensors"),
        &tmp.path().join("x.safetensors"),
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("pixel_values"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_another_family_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"model_type": "siglip_vision_model", "hidden_size": 32}"#,
    )
    .expect("write");
    let err = read_clip_vision_config(tmp.path())
        .expect_err("not clip")
        .to_string();
    assert!(err.contains("siglip_vision_model"), "{err}");
}
