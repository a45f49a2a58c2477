//! Training steps per second of a small transformer on one device: 4 pre-LN layers, d = 256,
//! 8 heads, FFN 1024, batch 8 x 64 tokens; forward, backward and an Adam step. The README's
//! backend figures come from this program:
//!
//!     cargo run --release --example backend_step -- cpu 30
//!     cargo run --release --features wgpu --example backend_step -- wgpu 10

use std::time::Instant;

use anyhow::Context;
use burn::module::Module;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor};
use calm::device::DeviceSpec;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let spec: DeviceSpec = args.next().unwrap_or_else(|| "cpu".into()).parse()?;
    let steps: usize = args
        .next()
        .unwrap_or_else(|| "30".into())
        .parse()
        .context("steps")?;
    let device = spec.device()?.autodiff();
    let mut model: TransformerEncoder = TransformerEncoderConfig::new(256, 1024, 8, 4)
        .with_norm_first(true)
        .init(&device);
    let mut optim = AdamConfig::new().init();
    let x = Tensor::<3>::random([8, 64, 256], Distribution::Normal(0.0, 1.0), &device);
    let mut step = |model: TransformerEncoder| {
        let out = model.forward(TransformerEncoderInput::new(x.clone()));
        let loss = out.powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(1e-4, model, grads);
        // Reading the loss waits for the device, so the timing covers the whole step.
        (model, loss.into_scalar::<f32>())
    };
    for _ in 0..3 {
        model = step(model).0;
    }
    let start = Instant::now();
    for _ in 0..steps {
        model = step(model).0;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{spec}: {steps} steps in {secs:.2} s = {:.2} steps/s ({} parameters)",
        steps as f64 / secs,
        model.num_params()
    );
    // For scripts/bench/compare.py (scripts/bench/transformer_step_torch.py is the twin).
    println!(
        "bench {}",
        serde_json::json!({
            "workload": "transformer_train_step",
            "unit": "steps/s",
            "value": steps as f64 / secs,
        })
    );
    Ok(())
}
