//! A pretraining batch built from sample photos with the real EfficientNet-Lite0 and MiniLM:
//! originals then their degraded copies, encoder states, cue embeddings and attributes in
//! matching rows, reproducible from the seed.

mod common;

use burn::tensor::{Device, Tensor};
use calm::data::DataConfig;
use calm::data::image::load_rgb;
use calm::data::selfsup::PairConfig;
use calm::io::hf::load_text_encoder;
use calm::io::models::{FetchedModel, model_dir};
use calm::io::pytorch::load_efficientnet_lite0;
use calm::model::vision::frozen::{Encoder, FrozenEncoder};
use calm::model::{EfficientNetLite0Config, VisionConfig};
use calm::train::batch::BatchBuilder;
use common::sample_photo_paths;

#[test]
fn a_batch_pairs_each_photo_with_its_degraded_copy() {
    let device = Device::flex();
    let config = EfficientNetLite0Config {
        image_size: 96,
        ..EfficientNetLite0Config::default()
    };
    let vision = VisionConfig::EfficientnetLite0(config.clone());
    let weights = model_dir(FetchedModel::EfficientnetLite0).unwrap_or_else(|e| panic!("{e}"));
    let encoder = FrozenEncoder::new(Encoder::EfficientnetLite0(
        load_efficientnet_lite0(&weights, &config, &device)
            .expect("loads")
            .0,
    ));
    let minilm = model_dir(FetchedModel::Minilm).unwrap_or_else(|e| panic!("{e}"));
    let (text, _) = load_text_encoder(&minilm, &device).expect("MiniLM");
    let transform = DataConfig::default().transform(&vision);
    let pairs = PairConfig::default();
    let builder = BatchBuilder {
        encoder: &encoder,
        text: &text,
        transform: &transform,
        pairs: &pairs,
    };
    let paths = sample_photo_paths();
    let photos: Vec<_> = paths[..3]
        .iter()
        .map(|p| load_rgb(p).expect("decodes"))
        .collect();
    let inputs: Vec<_> = photos.iter().map(|p| (p, None)).collect();
    let built = builder.build(&inputs, 5, &device).expect("builds");
    let b = &built.batch;
    assert_eq!(b.hidden_states.len(), 7);
    assert!(b.hidden_states.iter().all(|h| h.dims()[0] == 6));
    assert_eq!(
        b.hidden_states[6].dims(),
        [6, 9, 320],
        "3 x 3 final stage at 96 px"
    );
    for cue in &b.cues {
        assert_eq!(cue.dims(), [6, 384]);
    }
    assert_eq!(b.low_attributes.dims(), [6, 8]);
    assert_eq!(b.middle_attributes.dims(), [6, 6]);
    assert_eq!(b.pairs, [(0, 3), (1, 4), (2, 5)]);
    for (i, e) in built.examples.iter().enumerate() {
        assert_eq!(e.image.dimensions(), (96, 96));
        assert_eq!(e.degradation.is_some(), i >= 3);
    }
    // The cue rows are the embeddings of the examples' own sentences, and the same seed gives
    // the same batch.
    let again = text
        .embed(&[built.examples[0].cues.low.as_str()], false)
        .expect("embeds");
    let row: Tensor<2> = b.cues[0].clone().slice([0..1, 0..384]);
    assert!((row - again).abs().max().into_scalar::<f32>() < 1e-6);
    let same = builder.build(&inputs, 5, &device).expect("builds");
    assert!(
        same.examples
            .iter()
            .zip(&built.examples)
            .all(|(a, b)| a.image == b.image && a.cues == b.cues)
    );
}
