//! The pretraining objective: every loss is reported by name, the weights decide the total,
//! and Adam steps on the MFAM and its heads drive the total down on a fixed batch.

mod common;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use calm::model::pretrain::{PretrainHeadsConfig, PretrainModel};
use calm::model::vision::frozen::{Encoder, FrozenEncoder};
use calm::model::{MfamConfig, VisionConfig};
use calm::train::objective::{LossConfig, PretrainBatch, losses};
use common::tiny_pretrain_configs;

fn setup(device: &Device) -> (MfamConfig, VisionConfig, PretrainBatch) {
    let (mfam, vision, _) = tiny_pretrain_configs();
    let VisionConfig::Clip(clip) = &vision else {
        unreachable!("a CLIP config")
    };
    let plain = Device::flex();
    let encoder = FrozenEncoder::new(Encoder::Clip(clip.init(&plain)));
    let pixels = Tensor::<4>::random([4, 3, 16, 16], Distribution::Normal(0.0, 1.0), device);
    let cue = || Tensor::<2>::random([4, 8], Distribution::Normal(0.0, 1.0), device);
    let batch = PretrainBatch {
        hidden_states: encoder.forward(pixels),
        cues: [cue(), cue(), cue()],
        low_attributes: Tensor::random([4, 3], Distribution::Normal(0.0, 1.0), device),
        middle_attributes: Tensor::random([4, 2], Distribution::Normal(0.0, 1.0), device),
        pairs: vec![(0, 2), (1, 3)],
    };
    (mfam, vision, batch)
}

fn heads() -> PretrainHeadsConfig {
    tiny_pretrain_configs().2
}

#[test]
fn losses_are_named_and_weighted() {
    let device = Device::flex();
    let (mfam, vision, batch) = setup(&device);
    let model = PretrainModel::fresh(&mfam, &vision, &heads(), &device);
    let all = losses(&model, &batch, &LossConfig::default());
    let names: Vec<&str> = all.named.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["itc_low", "itc_middle", "itc_high", "attributes", "ranking"]
    );
    let value = |t: &Tensor<1>| t.clone().into_scalar::<f32>();
    let sum: f32 = all.named.iter().map(|(_, l)| value(l)).sum();
    assert!((value(&all.total) - sum).abs() < 1e-4);
    let config = LossConfig {
        ranking: 0.0,
        itc_high: 2.0,
        ..LossConfig::default()
    };
    let some = losses(&model, &batch, &config);
    let get = |n: &str| value(&some.named.iter().find(|(m, _)| *m == n).expect("named").1);
    let want = get("itc_low") + get("itc_middle") + 2.0 * get("itc_high") + get("attributes");
    assert!((value(&some.total) - want).abs() < 1e-4);
}

#[test]
fn adam_steps_drive_the_objective_down_on_a_fixed_batch() {
    let device = Device::flex().autodiff();
    let (mfam, vision, batch) = setup(&device);
    let mut model = PretrainModel::fresh(&mfam, &vision, &heads(), &device);
    let mut optim = AdamConfig::new().init();
    let config = LossConfig::default();
    let first = losses(&model, &batch, &config).total.into_scalar::<f32>();
    let mut last = first;
    for _ in 0..40 {
        let l = losses(&model, &batch, &config);
        last = l.total.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(l.total.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    assert!(last < 0.5 * first, "{first} -> {last}");
    let ranking = losses(&model, &batch, &config)
        .named
        .into_iter()
        .find(|(n, _)| *n == "ranking")
        .expect("ranking")
        .1
        .into_scalar::<f32>();
    assert!(
        ranking < 0.05,
        "originals ranked above their copies: {ranking}"
    );
}
