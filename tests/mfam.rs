//! The Multi-scale Feature Alignment Module: four token groups in the order low, middle, high,
//! thematic with the lengths the config predicts, for EfficientNet and CLIP encoders; the
//! ablation knobs (levels off, shared Q-Former weights, projector kind); initialisation from
//! BERT; and an optimiser step on the MFAM that leaves the frozen image encoder and the frozen
//! text encoder (real MiniLM weights) bit-for-bit unchanged.

mod common;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use calm::config::Validate;
use calm::io::hf::load_text_encoder;
use calm::io::models::{FetchedModel, model_dir};
use calm::io::pytorch::load_efficientnet_lite0;
use calm::model::mfam::{Mfam, MfamOutput};
use calm::model::vision::frozen::{Encoder, FrozenEncoder};
use calm::model::{
    BertConfig, ClipVisionConfig, EfficientNetLite0Config, Group, MfamConfig, ModelConfig,
    ProjectorKind, QFormerConfig, QFormerWeights, VisionConfig,
};
use common::param_bits as bits;

fn small_qformer() -> QFormerConfig {
    QFormerConfig {
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 48,
        ..QFormerConfig::default()
    }
}

fn efficientnet(size: usize) -> VisionConfig {
    VisionConfig::EfficientnetLite0(EfficientNetLite0Config {
        image_size: size,
        num_classes: 1000,
    })
}

fn config() -> MfamConfig {
    let mut c = MfamConfig {
        qformer: small_qformer(),
        llm_hidden_size: 24,
        ..MfamConfig::default()
    };
    c.low.num_query_tokens = 3;
    c.middle.num_query_tokens = 4;
    c.high.num_query_tokens = 5;
    // Every query a token, so that lengths show the query counts.
    for level in [&mut c.low, &mut c.middle, &mut c.high] {
        level.pool = None;
    }
    c
}

/// The real ImageNet EfficientNet-Lite0 (randomly initialised, its deep stages' activations
/// vanish to ~1e-8 and every image looks alike), or a random CLIP.
fn frozen(vision: &VisionConfig, device: &Device) -> FrozenEncoder {
    FrozenEncoder::new(match vision {
        VisionConfig::EfficientnetLite0(c) => {
            let dir = model_dir(FetchedModel::EfficientnetLite0).unwrap_or_else(|e| panic!("{e}"));
            Encoder::EfficientnetLite0(load_efficientnet_lite0(&dir, c, device).expect("loads").0)
        }
        VisionConfig::Clip(c) => Encoder::Clip(c.init(device)),
    })
}

fn encoder_states(vision: &VisionConfig, batch: usize, device: &Device) -> Vec<Tensor<3>> {
    let size = vision.image_size();
    let pixels = Tensor::<4>::random(
        [batch, 3, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    frozen(vision, device).forward(pixels)
}

fn check_groups(config: &MfamConfig, vision: &VisionConfig, out: &MfamOutput, batch: usize) {
    let expected = config.group_lengths(vision);
    assert_eq!(out.lengths(), expected);
    let tokens = out.tokens();
    let total: usize = expected.iter().map(|(_, n)| n).sum();
    assert_eq!(tokens.dims(), [batch, total, config.llm_hidden_size]);
    // The concatenation is in the order low, middle, high, thematic.
    let mut at = 0;
    for (group, n) in expected {
        let Some(part) = out.group(group) else {
            assert_eq!(n, 0, "{group:?}");
            continue;
        };
        let d = config.llm_hidden_size;
        let slice = tokens.clone().slice([0..batch, at..at + n, 0..d]);
        assert_eq!(
            (slice - part).abs().max().into_scalar::<f32>(),
            0.0,
            "{group:?}"
        );
        at += n;
    }
}

#[test]
fn efficientnet_levels_give_four_groups_in_order_with_the_predicted_lengths() {
    let device = Device::flex();
    let vision = efficientnet(64);
    let config = config();
    let states = encoder_states(&vision, 2, &device);
    // The shapes the config predicts are the encoder's.
    let shapes: Vec<(usize, usize)> = states.iter().map(|s| (s.dims()[1], s.dims()[2])).collect();
    assert_eq!(shapes, vision.hidden_state_shapes());
    let mfam = config.init(&vision, &device);
    // Stages narrower than the last (320 channels) get adapters; stage 6 itself does not.
    let low = mfam.low.as_ref().expect("low");
    assert_eq!(low.layers, [2]);
    assert!(low.adapters.iter().all(Option::is_some));
    let high = mfam.high.as_ref().expect("high");
    assert_eq!(
        high.adapters
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        [true, false]
    );
    let out = mfam.forward(&states);
    check_groups(&config, &vision, &out, 2);
    assert_eq!(
        config.group_lengths(&vision),
        [
            (Group::Low, 3),
            (Group::Middle, 4),
            (Group::High, 5),
            (Group::Thematic, 4)
        ]
    );
    let low = out.low.as_ref().expect("low");
    assert_eq!(low.queries.dims(), [2, 3, 32]);
    // Different images give different tokens.
    let t = out.tokens();
    let d = (t.clone().slice([0..1, 0..16, 0..24]) - t.slice([1..2, 0..16, 0..24]))
        .abs()
        .max();
    assert!(d.into_scalar::<f32>() > 1e-3);
}

#[test]
fn clip_levels_read_hidden_states_of_one_width_without_adapters() {
    let device = Device::flex();
    let vision = VisionConfig::Clip(ClipVisionConfig {
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 6,
        num_attention_heads: 2,
        image_size: 32,
        patch_size: 8,
        ..ClipVisionConfig::default()
    });
    let mut config = config();
    config.thematic.projector = ProjectorKind::Linear;
    let mfam = config.init(&vision, &device);
    for branch in [&mfam.low, &mfam.middle, &mfam.high] {
        assert!(
            branch
                .as_ref()
                .expect("on")
                .adapters
                .iter()
                .all(Option::is_none)
        );
    }
    assert!(mfam.thematic.as_ref().expect("thematic").linear_2.is_none());
    let out = mfam.forward(&encoder_states(&vision, 1, &device));
    check_groups(&config, &vision, &out, 1);
    // 4 x 4 patches + the class token: the grid pooled to 2 x 2 by default, the class token
    // dropped; every token without pooling, as LLaVA.
    assert_eq!(out.lengths()[3], (Group::Thematic, 4));
    config.thematic.pool = None;
    let mfam = config.init(&vision, &device);
    let out = mfam.forward(&encoder_states(&vision, 1, &device));
    check_groups(&config, &vision, &out, 1);
    assert_eq!(out.lengths()[3], (Group::Thematic, 17));
}

fn param_count<M: Module>(m: &M) -> usize {
    m.num_params()
}

#[test]
fn levels_can_be_turned_off_and_q_former_weights_shared() {
    let device = Device::flex();
    let vision = efficientnet(64);
    let states = encoder_states(&vision, 1, &device);

    let mut ablated = config();
    ablated.middle.enabled = false;
    ablated.thematic.enabled = false;
    let mfam = ablated.init(&vision, &device);
    assert!(mfam.middle.is_none() && mfam.thematic.is_none());
    let out = mfam.forward(&states);
    assert_eq!(
        out.lengths(),
        [
            (Group::Low, 3),
            (Group::Middle, 0),
            (Group::High, 5),
            (Group::Thematic, 0)
        ]
    );
    check_groups(&ablated, &vision, &out, 1);

    let separate = config().init(&vision, &device);
    let mut shared_config = config();
    shared_config.qformer_weights = QFormerWeights::Shared;
    let shared = shared_config.init(&vision, &device);
    assert!(shared.qformer.is_some() && separate.qformer.is_none());
    for b in [&shared.low, &shared.middle, &shared.high] {
        assert!(b.as_ref().expect("on").qformer.is_none());
    }
    let one = param_count(shared.qformer.as_ref().expect("shared"));
    assert_eq!(param_count(&separate), param_count(&shared) + 2 * one);
    check_groups(&shared_config, &vision, &shared.forward(&states), 1);

    // The configured cross-attention frequency reaches every Q-Former.
    let mut every = config();
    every.qformer.cross_attention_frequency = 1;
    let m = every.init(&vision, &device);
    let q = m
        .low
        .as_ref()
        .and_then(|b| b.qformer.as_ref())
        .expect("qformer");
    assert!(q.encoder.layer.iter().all(|l| l.crossattention.is_some()));
}

#[test]
fn every_q_former_starts_from_bert() {
    let device = Device::flex();
    let vision = efficientnet(64);
    let bert = BertConfig {
        vocab_size: 40,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 48,
        max_position_embeddings: 8,
        ..BertConfig::default()
    }
    .init(true, &device);
    let mfam = config()
        .init_from_bert(&vision, &bert, &device)
        .expect("inits");
    let theirs = bert.encoder.layer[1].attention.attention.query.weight.val();
    for b in [&mfam.low, &mfam.middle, &mfam.high] {
        let q = b
            .as_ref()
            .and_then(|b| b.qformer.as_ref())
            .expect("qformer");
        let ours = q.encoder.layer[1].attention.attention.query.weight.val();
        assert_eq!(
            (ours - theirs.clone()).abs().max().into_scalar::<f32>(),
            0.0
        );
    }
    let mut wide = config();
    wide.qformer.hidden_size = 64;
    assert!(wide.init_from_bert(&vision, &bert, &device).is_err());
}

fn encoder_bits(e: &FrozenEncoder) -> Vec<Vec<u32>> {
    match e.encoder() {
        Encoder::EfficientnetLite0(m) => bits(m),
        Encoder::Clip(m) => bits(m),
    }
}

#[test]
fn an_optimiser_step_on_the_mfam_leaves_both_frozen_encoders_bit_identical() {
    let plain = Device::flex();
    let device = plain.clone().autodiff();
    let vision = efficientnet(64);
    let encoder = frozen(&vision, &plain);
    let dir = model_dir(FetchedModel::Minilm).unwrap_or_else(|e| panic!("{e}"));
    let (text, _) = load_text_encoder(&dir, &plain).expect("MiniLM");
    let mut config = config();
    config.qformer.hidden_size = 384;
    config.qformer.num_attention_heads = 12;
    let mfam: Mfam = config.init(&vision, &device);

    let encoder_before = encoder_bits(&encoder);
    let text_before = bits(text.bert());
    let mfam_before = bits(&mfam);

    let pixels = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let out = mfam.forward(&encoder.forward(pixels));
    let cues = text
        .embed(
            &[
                "The photo is underexposed.",
                "The colours are vivid and the subject is sharp.",
            ],
            true,
        )
        .expect("embeds");
    // An ITC-like pull of each image's mean low-level query towards its cue, plus a term on
    // the LLM tokens so that every branch receives gradient.
    let q = out
        .low
        .as_ref()
        .expect("low")
        .queries
        .clone()
        .mean_dim(1)
        .reshape([2, 384]);
    let loss = (q * cues).sum().neg() + out.tokens().powf_scalar(2.0).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &mfam);
    let mut optim = AdamConfig::new().init();
    let mfam = optim.step(1e-2, mfam, grads);

    assert_eq!(
        encoder_bits(&encoder),
        encoder_before,
        "image encoder changed"
    );
    assert_eq!(bits(text.bert()), text_before, "text encoder changed");
    let after = bits(&mfam);
    assert_eq!(after.len(), mfam_before.len());
    let changed = after
        .iter()
        .zip(&mfam_before)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, after.len(), "every MFAM parameter took a step");
}

#[test]
fn pooled_levels_give_the_projection_of_averaged_queries_and_keep_the_weights() {
    let device = Device::flex();
    let vision = efficientnet(64);
    let plain = config();
    let mut pooled = plain.clone();
    pooled.low.pool = Some(2);
    pooled.middle.pool = Some(2);
    pooled.high.pool = Some(1);
    assert_eq!(
        pooled.group_lengths(&vision),
        [
            (Group::Low, 2),
            (Group::Middle, 2),
            (Group::High, 1),
            (Group::Thematic, 4)
        ]
    );
    // Pooling holds no weights: a pooled MFAM loads an unpooled one's parameters.
    assert_eq!(pooled.without_pooling(), plain.without_pooling());
    let states = encoder_states(&vision, 2, &device);
    let mut mfam = plain.init(&vision, &device);
    let before = mfam.forward(&states);
    mfam.set_pooling(&pooled);
    let out = mfam.forward(&states);
    check_groups(&pooled, &vision, &out, 2);
    let middle = out.middle.as_ref().expect("middle");
    // The queries themselves (what pretraining aligns) are not pooled.
    assert_eq!(middle.queries.dims(), [2, 4, 32]);
    let projection = &mfam.middle.as_ref().expect("middle").language_projection;
    let q = middle.queries.clone();
    for (token, range) in [(0, 0..2), (1, 2..4)] {
        let mean = q.clone().slice([0..2, range, 0..32]).mean_dim(1);
        let expected = projection.forward(mean);
        let got = middle.tokens.clone().slice([0..2, token..token + 1, 0..24]);
        let d = (got - expected).abs().max().into_scalar::<f32>();
        assert!(d < 1e-5, "middle token {token} differs by {d}");
    }
    let high = out.high.as_ref().expect("high");
    let expected = mfam
        .high
        .as_ref()
        .expect("high")
        .language_projection
        .forward(high.queries.clone().mean_dim(1));
    let d = (high.tokens.clone() - expected)
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(d < 1e-5, "high token differs by {d}");
    // Three queries to two tokens overlap, as AdaptiveAvgPool1d: queries 0..2 and 1..3.
    let low = out.low.as_ref().expect("low");
    let projection = &mfam.low.as_ref().expect("low").language_projection;
    for (token, range) in [(0, 0..2), (1, 1..3)] {
        let mean = low.queries.clone().slice([0..2, range, 0..32]).mean_dim(1);
        let expected = projection.forward(mean);
        let got = low.tokens.clone().slice([0..2, token..token + 1, 0..24]);
        let d = (got - expected).abs().max().into_scalar::<f32>();
        assert!(d < 1e-5, "low token {token} differs by {d}");
    }
    // Without pooling, the tokens are the projected queries themselves.
    mfam.set_pooling(&plain);
    let again = mfam.forward(&states);
    let d = (again.tokens() - before.tokens())
        .abs()
        .max()
        .into_scalar::<f32>();
    assert_eq!(d, 0.0);
}

#[test]
fn a_level_pool_is_at_least_one_and_caps_the_tokens() {
    let mut c = ModelConfig::default();
    c.mfam.middle.num_query_tokens = 16;
    c.mfam.middle.pool = Some(0);
    let err = c.validate().expect_err("a pool of 0 tokens");
    assert_eq!(err.key, "model.mfam.middle.pool", "{err:?}");
    for (pool, tokens) in [(1, 1), (3, 3), (16, 16), (40, 16)] {
        c.mfam.middle.pool = Some(pool);
        c.validate().expect("any pool of at least 1");
        assert_eq!(c.mfam.group_lengths(&c.vision)[1], (Group::Middle, tokens));
    }
}
