//! Images per second of a ViT-B/16 CLIP vision encoder at 224 px (random weights, batch 8,
//! every hidden state returned) on one device. Run with scripts/bench/vit_b16.sh, which also
//! measures the same model in PyTorch, so both figures come from one run.
//!
//!     cargo run --release --example vit_b16 -- cpu 5

use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Distribution, Tensor};
use calm::device::DeviceSpec;
use calm::model::{ClipVisionConfig, HiddenAct};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let spec: DeviceSpec = args.next().unwrap_or_else(|| "cpu".into()).parse()?;
    let iters: usize = args
        .next()
        .unwrap_or_else(|| "5".into())
        .parse()
        .context("iterations")?;
    let device = spec.device()?;
    let config = ClipVisionConfig {
        hidden_size: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        num_channels: 3,
        image_size: 224,
        patch_size: 16,
        hidden_act: HiddenAct::QuickGelu,
        layer_norm_eps: 1e-5,
    };
    let model = config.init(&device);
    let batch = 8;
    let x = Tensor::<4>::random(
        [batch, 3, 224, 224],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    // Reading a value back waits for the device, so the timing covers the whole pass.
    let run = || {
        model
            .forward(x.clone())
            .pooler_output
            .sum()
            .into_scalar::<f32>()
    };
    run();
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "calm ({spec}): {:.2} images/s ({iters} x {batch} images in {secs:.2} s)",
        (iters * batch) as f64 / secs
    );
    // For scripts/bench/compare.py.
    println!(
        "bench {}",
        serde_json::json!({
            "workload": "vit_b16_forward",
            "unit": "images/s",
            "value": (iters * batch) as f64 / secs,
        })
    );
    Ok(())
}
