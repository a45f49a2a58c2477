//! Module checkpoints: a saved MFAM with its pretraining heads loads back bit for bit into a
//! freshly initialised one, in PyTorch's conventions; a checkpoint of another shape is refused
//! with the key named.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor};
use calm::io::checkpoint::{CheckpointError, Tensors, load_module, save_module};
use calm::model::pretrain::{PretrainHeadsConfig, PretrainModel};
use calm::model::{ClipVisionConfig, MfamConfig, QFormerConfig, VisionConfig};

fn configs() -> (MfamConfig, VisionConfig, PretrainHeadsConfig) {
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

fn bits<M: Module>(module: &M) -> Vec<Vec<u32>> {
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
