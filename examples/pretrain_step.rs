//! Times the pieces of one pretraining step on this machine, to size the main job: building a
//! batch (crop, degrade, attributes, cues, EfficientNet-Lite0, MiniLM) and a forward +
//! backward + Adam step of the MFAM with its heads.
//!
//!     cargo run --release --example pretrain_step -- [photos per batch] [steps] [image size]

use std::time::Instant;

use anyhow::Context;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use calm::data::DataConfig;
use calm::data::image::load_rgb;
use calm::data::selfsup::PairConfig;
use calm::io::hf::load_text_encoder;
use calm::io::models::{FetchedModel, model_dir};
use calm::io::pytorch::load_efficientnet_lite0;
use calm::model::MfamConfig;
use calm::model::pretrain::{PretrainHeadsConfig, PretrainModel};
use calm::model::vision::frozen::{Encoder, FrozenEncoder};
use calm::model::{EfficientNetLite0Config, VisionConfig};
use calm::train::batch::BatchBuilder;
use calm::train::objective::{LossConfig, losses};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments are numbers"))
        .collect::<anyhow::Result<_>>()?;
    let batch = args.first().copied().unwrap_or(4);
    let steps = args.get(1).copied().unwrap_or(3);
    let size = args.get(2).copied().unwrap_or(224);

    let plain = Device::flex();
    let device = plain.clone().autodiff();
    let config = EfficientNetLite0Config {
        image_size: size,
        ..EfficientNetLite0Config::default()
    };
    let vision = VisionConfig::EfficientnetLite0(config.clone());
    let encoder = FrozenEncoder::new(Encoder::EfficientnetLite0(
        load_efficientnet_lite0(
            &model_dir(FetchedModel::EfficientnetLite0)?,
            &config,
            &plain,
        )?
        .0,
    ));
    let minilm = model_dir(FetchedModel::Minilm)?;
    let (text, _) = load_text_encoder(&minilm, &plain)?;
    let (bert, _) = calm::io::hf::load_bert(&minilm, &device)?;
    let transform = DataConfig::default().transform(&vision);
    let pairs = PairConfig::default();
    let builder = BatchBuilder {
        encoder: &encoder,
        text: &text,
        transform: &transform,
        pairs: &pairs,
    };
    let mut paths = calm::data::formats::scan_folder(std::path::Path::new("data/samples"), false)?;
    paths.sort();
    let photos = paths
        .iter()
        .take(batch)
        .map(|p| load_rgb(p).with_context(|| p.display().to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let inputs: Vec<_> = photos.iter().map(|p| (p, None)).collect();

    let mfam = MfamConfig::default();
    let heads = PretrainHeadsConfig {
        text_dim: text.hidden_size(),
        low_attributes: 8,
        middle_attributes: 6,
    };
    let mut model = PretrainModel::init(
        mfam.init_from_bert(&vision, &bert, &device)?,
        &mfam,
        &heads,
        &device,
    );
    let mut optim = AdamConfig::new().init();
    let loss_config = LossConfig::default();
    for step in 0..steps {
        let t0 = Instant::now();
        let built = builder.build(&inputs, step as u64, &device)?;
        let t1 = Instant::now();
        let l = losses(&model, &built.batch, &loss_config);
        let total = l.total.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(l.total.backward(), &model);
        model = optim.step(1e-4, model, grads);
        let t2 = Instant::now();
        println!(
            "step {step}: batch of {} images built in {:.2} s, train step {:.2} s, loss {total:.4}",
            2 * batch,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64()
        );
    }
    Ok(())
}
