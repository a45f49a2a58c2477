//! The encoder is frozen in training: no graph through it, no gradients into it, and the
//! trainable part still gets its gradients.

use burn::tensor::{Device, Distribution, Tensor};
use calm::model::vision::frozen::{Encoder, FrozenEncoder};
use calm::model::{ClipVisionConfig, EfficientNetLite0Config, HiddenAct};

fn tiny_clip() -> ClipVisionConfig {
    ClipVisionConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_channels: 3,
        image_size: 16,
        patch_size: 8,
        hidden_act: HiddenAct::QuickGelu,
        layer_norm_eps: 1e-5,
    }
}

#[test]
fn gradients_reach_the_head_but_not_the_encoder() {
    let device = Device::flex().autodiff();
    let frozen = FrozenEncoder::new(Encoder::Clip(tiny_clip().init(&device)));
    let Encoder::Clip(clip) = frozen.encoder() else {
        panic!("clip")
    };
    let weight = clip.encoder.layers[0].mlp.fc1.weight.val();
    assert!(
        !weight.is_autodiff() && !weight.is_require_grad(),
        "encoder weights carry no autodiff"
    );

    let pixels = Tensor::<4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let states = frozen.forward(pixels);
    assert_eq!(states.len(), 3);
    let last = states[2].clone();
    assert!(
        last.is_autodiff(),
        "outputs re-enter the caller's autodiff context"
    );
    assert!(
        !last.is_require_grad() && !last.is_tracked(),
        "no graph behind the outputs"
    );

    let head = Tensor::<1>::random([16], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let loss = (last * head.clone().reshape([1, 1, 16])).sum();
    let grads = loss.backward();
    assert!(
        head.grad(&grads).is_some(),
        "the trainable head gets its gradient"
    );
}

#[test]
fn efficientnet_stages_come_out_as_token_sequences() {
    let device = Device::flex();
    let frozen = FrozenEncoder::new(Encoder::EfficientnetLite0(
        EfficientNetLite0Config::default().init(&device),
    ));
    let states = frozen.forward(Tensor::random(
        [1, 3, 64, 64],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    let dims: Vec<[usize; 3]> = states.iter().map(Tensor::dims).collect();
    assert_eq!(
        dims,
        vec![
            [1, 1024, 16],
            [1, 256, 24],
            [1, 64, 40],
            [1, 16, 80],
            [1, 16, 112],
            [1, 4, 192],
            [1, 4, 320]
        ]
    );
}
