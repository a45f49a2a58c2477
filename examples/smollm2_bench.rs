//! Prefill and decode speed of SmolLM2-135M-Instruct in f32 (the Q4_1 GGUF dequantised) on
//! the flex CPU backend: a 128-token prompt in one forward, then 64 greedy tokens through the
//! KV cache. `scripts/bench/smollm2.sh` runs it next to PyTorch on the same weights, and
//! `scripts/bench/compare.sh` next to PyTorch and llama.cpp.
//!
//!     cargo run --release --example smollm2_bench -- [prompt tokens] [new tokens] [repeats]

use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Device, Int, Tensor, TensorData};
use calm::io::llama::load_llm;
use calm::io::models::{FetchedModel, model_dir};
use calm::model::generate::{GenerationConfig, generate};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments are numbers"))
        .collect::<anyhow::Result<_>>()?;
    let prompt = args.first().copied().unwrap_or(128);
    let new = args.get(1).copied().unwrap_or(64);
    let repeats = args.get(2).copied().unwrap_or(3);
    let device = Device::flex();
    let path = model_dir(FetchedModel::Smollm2)?.join(FetchedModel::Smollm2.main_file());
    let (model, config, _) = load_llm(&path, &device)?;
    // A fixed prompt of ordinary token ids (not special ones).
    let ids: Vec<i64> = (0..prompt as i64)
        .map(|i| 1000 + (i * 7919) % 40000)
        .collect();
    let tensor = || Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, prompt]), &device);
    let _ = model.forward(tensor(), None).into_data();
    let mut prefill = f64::MAX;
    let mut decode = f64::MAX;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let _ = model.forward(tensor(), None).into_data();
        prefill = prefill.min(t0.elapsed().as_secs_f64());
        let settings = GenerationConfig {
            max_new_tokens: new + 1,
            ..GenerationConfig::default()
        };
        let prompt_ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let mut first = None;
        let t0 = Instant::now();
        let replies = generate(
            &model,
            &[prompt_ids],
            &[],
            &settings,
            |_, _| false,
            |_, _| {
                first.get_or_insert_with(Instant::now);
            },
        )?;
        // Decode time: from the first new token (after the prefill) to the last.
        let start = first.unwrap_or(t0);
        decode = decode.min(start.elapsed().as_secs_f64() / (replies[0].len() - 1).max(1) as f64);
    }
    println!(
        "calm (burn 0.22.1, flex, {} layers, f32): prefill {:.1} tokens/s ({prompt} tokens), decode {:.1} tokens/s ({new} tokens), best of {repeats}",
        config.num_hidden_layers,
        prompt as f64 / prefill,
        1.0 / decode
    );
    // For scripts/bench/compare.py. calm runs the Q4_1 file dequantised to f32, so the same
    // figures stand for both of its rows until the quantised path exists.
    for precision in ["f32", "q4_1"] {
        bench(
            &format!("smollm2_{precision}_prefill"),
            prompt as f64 / prefill,
        );
        bench(&format!("smollm2_{precision}_decode"), 1.0 / decode);
    }
    Ok(())
}

fn bench(workload: &str, tokens_per_second: f64) {
    println!(
        "bench {}",
        serde_json::json!({"workload": workload, "unit": "tokens/s", "value": tokens_per_second})
    );
}
