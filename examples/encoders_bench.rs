//! Forward speed of the two small pretrained encoders calm runs on a CPU, with their real
//! weights (scripts/fetch_models.sh): EfficientNet-Lite0 at 224 px, batch 8, and MiniLM-L6
//! (BERT) on 16 sequences of 128 tokens. `scripts/bench/encoders_torch.py` is the PyTorch
//! twin; `scripts/bench/compare.sh` runs both.
//!
//!     cargo run --release --example encoders_bench -- [iterations]

use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use calm::io::hf::load_bert;
use calm::io::models::{FetchedModel, model_dir};
use calm::io::pytorch::load_efficientnet_lite0;
use calm::model::vision::EfficientNetLite0Config;

fn main() -> anyhow::Result<()> {
    let iters: usize = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "5".into())
        .parse()
        .context("iterations")?;
    let device = Device::flex();

    let (cnn, _) = load_efficientnet_lite0(
        &model_dir(FetchedModel::EfficientnetLite0)?,
        &EfficientNetLite0Config::default(),
        &device,
    )?;
    let images = 8;
    let x = Tensor::<4>::random(
        [images, 3, 224, 224],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    // Reading a value back waits for the computation, so the timing covers the whole pass.
    let run = || cnn.forward(x.clone()).logits.sum().into_scalar::<f32>();
    let per_second = timed(iters, run) * images as f64;
    println!("calm: EfficientNet-Lite0 {per_second:.2} images/s ({images} x 224 px)");
    bench("efficientnet_lite0_forward", "images/s", per_second);

    let (bert, _) = load_bert(&model_dir(FetchedModel::Minilm)?, &device)?;
    let (batch, tokens) = (16, 128);
    // Ordinary word-piece ids, the same as the twin's.
    let ids: Vec<i64> = (0..(batch * tokens) as i64)
        .map(|i| 1000 + (i * 7919) % 20000)
        .collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, tokens]), &device);
    let run = || {
        bert.forward(ids.clone(), None, None)
            .last_hidden_state
            .sum()
            .into_scalar::<f32>()
    };
    let per_second = timed(iters, run) * batch as f64;
    println!("calm: MiniLM-L6 {per_second:.2} sequences/s ({batch} x {tokens} tokens)");
    bench("minilm_forward", "sequences/s", per_second);
    Ok(())
}

/// Passes per second of `run` over `iters` passes, after one to warm up.
fn timed(iters: usize, run: impl Fn() -> f32) -> f64 {
    run();
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    iters as f64 / start.elapsed().as_secs_f64()
}

/// A line for scripts/bench/compare.py.
fn bench(workload: &str, unit: &str, value: f64) {
    println!(
        "bench {}",
        serde_json::json!({"workload": workload, "unit": unit, "value": value})
    );
}
