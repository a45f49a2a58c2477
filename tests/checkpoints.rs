//! Module checkpoints: a saved MFAM with its pretraining heads loads back bit for bit into a
//! freshly initialised one, in PyTorch's conventions; a checkpoint of another shape is refused
//! with the key named.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use calm::io::checkpoint::{CheckpointError, Tensors, load_module, save_module};
use calm::model::pretrain::PretrainModel;
use common::{param_bits as bits, tiny_pretrain_configs as configs};

#[test]
fn a_saved_model_loads_back_bit_for_bit() {
    let device = Device::flex();
    let (mfam, vision, heads) = configs();
    let model = PretrainModel::fresh(&mfam, &vision, &heads, &device);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mfam.safetensors");
    save_module(&model, &path).expect("saves");
    // PyTorch conventions: `weight` and `bias`, Linear weights [out, in].
    let saved = Tensors::read(&path).expect("reads");
    let key = "mfam.low.qformer.encoder.layer.0.crossattention.attention.key.weight";
    assert_eq!(
        saved.tensors.get(key).map(|t| t.0.clone()),
        Some(vec![16, 16])
    );
    let proj = saved
        .tensors
        .get("low_text_proj.weight")
        .map(|t| t.0.clone());
    assert_eq!(proj, Some(vec![8, 16]));
    assert!(
        saved
            .tensors
            .contains_key("mfam.low.qformer.layernorm.weight")
    );

    let mut fresh = PretrainModel::fresh(&mfam, &vision, &heads, &device);
    assert_ne!(bits(&fresh), bits(&model));
    let report = load_module(&mut fresh, &path).expect("loads");
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert_eq!(bits(&fresh), bits(&model));

    let states: Vec<Tensor<3>> = vision
        .hidden_state_shapes()
        .iter()
        .map(|&(t, w)| Tensor::random([2, t, w], Distribution::Default, &device))
        .collect();
    let a = model.forward(&states).quality;
    let b = fresh.forward(&states).quality;
    assert_eq!(
        (a - b).abs().max().into_scalar::<f32>(),
        0.0,
        "same outputs"
    );
}

#[test]
fn a_checkpoint_of_another_shape_is_refused_by_key() {
    let device = Device::flex();
    let (mfam, vision, heads) = configs();
    let mut ablated = mfam.clone();
    ablated.middle.enabled = false;
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("ablated.safetensors");
    save_module(
        &PretrainModel::fresh(&ablated, &vision, &heads, &device),
        &path,
    )
    .expect("saves");
    let mut full = PretrainModel::fresh(&mfam, &vision, &heads, &device);
    let err = load_module(&mut full, &path).expect_err("middle level missing");
    assert!(
        matches!(&err, CheckpointError::Missing { keys, .. } if keys.iter().any(|k| k.starts_with("mfam.middle."))),
        "{err}"
    );
    // The other way round loads, and reports the extra level as unexpected.
    let path2 = tmp.path().join("full.safetensors");
    save_module(&full, &path2).expect("saves");
    let mut small = PretrainModel::fresh(&ablated, &vision, &heads, &device);
    let report = load_module(&mut small, &path2).expect("loads");
    assert!(
        report
            .unexpected
            .iter()
            .any(|k| k.starts_with("mfam.middle."))
    );
}
