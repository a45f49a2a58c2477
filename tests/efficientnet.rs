//! EfficientNet-Lite0 with the real ImageNet weights (fetched by scripts/fetch_models.sh):
//! equal to the reference forward pass (timm's `efficientnet_lite0`, fixture from
//! scripts/fixtures/make_efficientnet_fixtures.py), and it recognises the sample cat photo.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use calm::data::{DataConfig, image::load_rgb};
use calm::io::checkpoint::Tensors;
use calm::io::models::{FetchedModel, model_dir};
use calm::io::pytorch::load_efficientnet_lite0;
use calm::model::vision::efficientnet::EfficientNetLite0;
use calm::model::{EfficientNetLite0Config, VisionConfig};
use rand::SeedableRng;

fn weights() -> PathBuf {
    model_dir(FetchedModel::EfficientnetLite0).unwrap_or_else(|e| panic!("{e}"))
}

fn model(device: &Device) -> EfficientNetLite0 {
    let (model, report) =
        load_efficientnet_lite0(&weights(), &EfficientNetLite0Config::default(), device)
            .expect("loads");
    // 296 entries in the state dict: 49 `num_batches_tracked` counters are not weights.
    assert_eq!(report.applied.len(), 247, "{:?}", report.unexpected);
    assert!(
        report
            .unexpected
            .iter()
            .all(|k| k.ends_with("num_batches_tracked")),
        "{:?}",
        report.unexpected
    );
    model
}

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn matches_the_reference_forward_pass() {
    let device = Device::flex();
    let model = model(&device);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/efficientnet");
    let inputs = Tensors::read(&dir.join("inputs.safetensors")).expect("inputs");
    let expected = Tensors::read(&dir.join("outputs.safetensors")).expect("outputs");
    let out = model.forward(inputs.tensor("pixel_values", &device).expect("pixels"));
    assert_eq!(out.features.len(), 7);
    let mut worst = 0f32;
    for (i, f) in out.features.into_iter().enumerate() {
        let e: Tensor<4> = expected
            .tensor(&format!("features.{i}"), &device)
            .expect("feature");
        worst = worst.max(max_abs_diff(f, e));
    }
    let e: Tensor<2> = expected.tensor("logits", &device).expect("logits");
    worst = worst.max(max_abs_diff(out.logits, e));
    eprintln!("efficientnet-lite0: max abs error {worst:e}");
    assert!(worst <= 1e-4, "max abs error {worst}");
}

#[test]
fn chelsea_is_a_cat() {
    let device = Device::flex();
    let model = model(&device);
    let vision = VisionConfig::EfficientnetLite0(EfficientNetLite0Config::default());
    let transform = DataConfig::default().transform(&vision);
    let photo = load_rgb(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("data/samples/scikit-image__chelsea.jpg"),
    )
    .expect("photo");
    let pixels = transform
        .apply(&photo, &mut rand::rngs::StdRng::seed_from_u64(0))
        .expect("transform");
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [1, 3, 224, 224]), &device);
    let logits: Vec<f32> = model
        .forward(x)
        .logits
        .into_data()
        .try_to_vec()
        .expect("f32");
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    // ImageNet: 281 tabby, 282 tiger cat, 285 Egyptian cat.
    let top3 = &order[..3];
    assert!(
        top3.contains(&285) || top3.contains(&281),
        "top 3: {top3:?}"
    );
}

#[test]
fn inspect_forward_writes_logits_and_stage_features() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/efficientnet");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_path = tmp.path().join("out.safetensors");
    let out = common::inspect_forward(
        "efficientnet-lite0",
        &weights(),
        &dir.join("inputs.safetensors"),
        &out_path,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = Device::flex();
    let got = Tensors::read(&out_path).expect("written");
    let expected = Tensors::read(&dir.join("outputs.safetensors")).expect("reference");
    assert_eq!(
        got.tensors.keys().collect::<Vec<_>>(),
        expected.tensors.keys().collect::<Vec<_>>()
    );
    let a: Tensor<2> = got.tensor("logits", &device).expect("logits");
    let b: Tensor<2> = expected.tensor("logits", &device).expect("logits");
    assert!(max_abs_diff(a, b) <= 1e-4);
    let a: Tensor<4> = got.tensor("features.6", &device).expect("features.6");
    let b: Tensor<4> = expected.tensor("features.6", &device).expect("features.6");
    assert!(max_abs_diff(a, b) <= 1e-4);
}
