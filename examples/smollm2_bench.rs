//! Prefill and decode speed of SmolLM2-135M-Instruct on the flex CPU backend, from its Q4_1
//! GGUF file held two ways: dequantised to f32, and in its 4-bit blocks (`model::quant`). A
//! 128-token prompt, then 64 greedy tokens through the KV cache.
//!
//! - f32: prefill is one forward over the prompt with logits at every position, as the
//!   PyTorch twin computes it (`scripts/bench/smollm2_torch.py`);
//! - Q4_1: prefill is the time to the first new token (the forward, the last position's
//!   logits, one greedy choice), as llama.cpp's `eval` and a greedy pick
//!   (`scripts/bench/smollm2_llamacpp.py`).
//!
//! `scripts/bench/smollm2.sh` runs it next to PyTorch, `scripts/bench/compare.sh` next to
//! PyTorch and llama.cpp. Also prints each way's peak resident memory so far.
//!
//!     cargo run --release --example smollm2_bench -- [prompt tokens] [new tokens] [repeats]

use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Device, Int, Tensor, TensorData};
use calm::io::gguf::GgufFile;
use calm::io::llama::{GgufWeights, load_llama_gguf_with};
use calm::io::models::{FetchedModel, model_dir};
use calm::model::generate::{GenerationConfig, generate};
use calm::model::llama::LlamaForCausalLM;

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
    // A fixed prompt of ordinary token ids (not special ones).
    let ids: Vec<i64> = (0..prompt as i64)
        .map(|i| 1000 + (i * 7919) % 40000)
        .collect();
    // The quantised model first, so that its peak is not the dequantised one's.
    for weights in [GgufWeights::Quantized, GgufWeights::Dequantized] {
        let file = GgufFile::read(&path)?;
        let (model, config, _) = load_llama_gguf_with(&file, &device, weights)?;
        drop(file);
        let label = match weights {
            GgufWeights::Quantized => "q4_1",
            GgufWeights::Dequantized => "f32",
        };
        let (prefill, decode) = measure(&model, &ids, new, repeats, weights, &device)?;
        println!(
            "calm (burn 0.22.1, flex, {} layers, {label}): prefill {:.1} tokens/s ({prompt} tokens), decode {:.1} tokens/s ({new} tokens), best of {repeats}, peak RSS {} MB",
            config.num_hidden_layers,
            prompt as f64 / prefill,
            1.0 / decode,
            calm::train::resident::peak_bytes().unwrap_or(0) / 1_000_000,
        );
        bench(&format!("smollm2_{label}_prefill"), prompt as f64 / prefill);
        bench(&format!("smollm2_{label}_decode"), 1.0 / decode);
    }
    Ok(())
}

/// The best prefill time and the best time per decoded token over `repeats`, after a warm-up.
fn measure(
    model: &LlamaForCausalLM,
    ids: &[i64],
    new: usize,
    repeats: usize,
    weights: GgufWeights,
    device: &Device,
) -> anyhow::Result<(f64, f64)> {
    let tensor =
        || Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device);
    let _ = model.forward(tensor(), None).into_data();
    let (mut prefill, mut decode) = (f64::MAX, f64::MAX);
    for _ in 0..repeats {
        if weights == GgufWeights::Dequantized {
            let t0 = Instant::now();
            let _ = model.forward(tensor(), None).into_data();
            prefill = prefill.min(t0.elapsed().as_secs_f64());
        }
        let settings = GenerationConfig {
            max_new_tokens: new + 1,
            ..GenerationConfig::default()
        };
        let prompt_ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let mut first = None;
        let t0 = Instant::now();
        let replies = generate(
            model,
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
        if weights == GgufWeights::Quantized {
            prefill = prefill.min((start - t0).as_secs_f64());
        }
        decode = decode.min(start.elapsed().as_secs_f64() / (replies[0].len() - 1).max(1) as f64);
    }
    Ok((prefill, decode))
}

fn bench(workload: &str, tokens_per_second: f64) {
    println!(
        "bench {}",
        serde_json::json!({"workload": workload, "unit": "tokens/s", "value": tokens_per_second})
    );
}
