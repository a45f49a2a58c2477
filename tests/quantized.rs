//! The quantised LLM (`GgufWeights::Quantized`: SmolLM2-135M-Instruct's Q4_1 blocks read by
//! `model::quant`'s kernels) against the same file dequantised to f32, the path that
//! tests/smollm2.rs holds to transformers:
//! - a prompt's logits (the `gemm` panel kernel) agree to rounding;
//! - each decoded step (llama.cpp's 8-bit input kernel) picks the same token, its logits
//!   within the input's rounding;
//! - nothing is dequantised on the way, and the blocks are the file's, not a copy;
//! - gradients pass through a quantised layer to its input as through the dense one.

use std::sync::Arc;

use burn::nn::LinearConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use calm::io::gguf::GgufFile;
use calm::io::llama::{GgufWeights, load_llama_gguf_with};
use calm::io::models::{FetchedModel, model_dir};
use calm::model::llama::{KvCache, LlamaForCausalLM};
use calm::model::qlinear::qlinear;
use calm::model::quant::{BlockFormat, QMatrix};

fn gguf() -> GgufFile {
    let dir = model_dir(FetchedModel::Smollm2).expect("run scripts/fetch_models.sh smollm2");
    GgufFile::read(dir.join(FetchedModel::Smollm2.main_file())).expect("gguf")
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().expect("f32")
}

/// The largest difference between `got` and `want`, and `want`'s largest magnitude.
fn worst_and_scale(got: &[f32], want: &[f32]) -> (f32, f32) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    (worst, scale)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn ids(tokens: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(tokens.to_vec(), [1, tokens.len()]), device)
}

#[test]
fn quantised_smollm2_matches_the_dequantised_one() {
    let file = gguf();
    let device = Device::flex();
    let (dense, _, dense_report) =
        load_llama_gguf_with(&file, &device, GgufWeights::Dequantized).expect("dense");
    let (quant, config, report) =
        load_llama_gguf_with(&file, &device, GgufWeights::Quantized).expect("quantised");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(report.applied), sorted(dense_report.applied));
    assert_eq!(report.unexpected, dense_report.unexpected);

    // Every matrix stays in blocks that live in the file's own buffer.
    let q = quant.quantized.as_ref().expect("quantised matrices");
    assert_eq!(q.layers.len(), config.num_hidden_layers);
    assert!(
        q.layers
            .iter()
            .all(|l| l.q_proj.is_some() && l.down_proj.is_some())
    );
    let file_bytes = file.bytes().len();
    assert!(q.byte_len() > file_bytes * 9 / 10 && q.byte_len() <= file_bytes);

    // A prompt of 24 tokens: the panel kernel.
    let prompt: Vec<i64> = (0..24).map(|i| 1000 + (i * 7919) % 40000).collect();
    let want = values(dense.forward(ids(&prompt, &device), None));
    let got = values(quant.forward(ids(&prompt, &device), None));
    let (worst, scale) = worst_and_scale(&got, &want);
    assert!(
        worst <= 1e-4 * scale,
        "prompt logits differ by {worst} (scale {scale})"
    );

    // Ten greedy steps of the reference's chat prompt through the KV cache, one token each:
    // the 8-bit kernel. Both models are fed the dense model's choices, so that one
    // difference cannot hide the next.
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/smollm2/reference.json"),
        )
        .expect("read"),
    )
    .expect("json");
    let chat: Vec<i64> = reference["prompt_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_i64().expect("an id"))
        .collect();
    let (mut dense_cache, mut quant_cache) = (KvCache::new(), KvCache::new());
    let step = |model: &LlamaForCausalLM, cache: &mut KvCache, tokens: &[i64]| {
        let embeds = model.embed(ids(tokens, &device));
        let logits = values(model.forward_embeds(embeds, None, None, Some(cache)));
        logits[logits.len() - config.vocab_size..].to_vec()
    };
    let mut next = chat;
    let mut same = 0;
    for i in 0..10 {
        let want = step(&dense, &mut dense_cache, &next);
        let got = step(&quant, &mut quant_cache, &next);
        let (worst, scale) = worst_and_scale(&got, &want);
        // Rounding the inputs of 211 products to 8 bits moves the logits by about 1%.
        assert!(
            worst <= 0.05 * scale,
            "step {i}: logits differ by {worst} (scale {scale})"
        );
        // Another pick only where the dense model's top two are closer than that.
        let (top, pick) = (argmax(&want), argmax(&got));
        assert!(
            want[pick] >= want[top] - 2.0 * worst,
            "step {i}: picks {pick} ({}) over {top} ({})",
            want[pick],
            want[top]
        );
        same += usize::from(pick == top);
        next = vec![top as i64];
    }
    assert!(
        same >= 8,
        "only {same} of 10 steps pick the dense model's token"
    );

    // Nothing read a matrix as f32.
    let layer = &quant.model.layers[0];
    assert!(!layer.self_attn.q_proj.weight.is_initialized());
    assert!(!layer.mlp.down_proj.weight.is_initialized());
    assert!(!quant.model.embed_tokens.weight.is_initialized());
}

#[test]
fn a_merged_or_read_weight_is_the_dequantised_matrix() {
    let file = gguf();
    let device = Device::flex();
    let (dense, _, _) =
        load_llama_gguf_with(&file, &device, GgufWeights::Dequantized).expect("dense");
    let (quant, _, _) = load_llama_gguf_with(&file, &device, GgufWeights::Quantized).expect("q");
    // The lazy parameter (what a save or a merge reads) is the dequantised, unpermuted
    // matrix: q_proj's rows put back in HF's order.
    let a = values(quant.model.layers[3].self_attn.q_proj.weight.val());
    let b = values(dense.model.layers[3].self_attn.q_proj.weight.val());
    assert_eq!(a, b);
    let a = values(quant.model.embed_tokens.weight.val());
    let b = values(dense.model.embed_tokens.weight.val());
    assert_eq!(a, b);
}

/// Blocks of Q8_0 with modest scales for a `[rows, cols]` matrix.
fn q8_matrix(rows: usize, cols: usize) -> QMatrix {
    let mut data = Vec::new();
    for b in 0..rows * cols / 32 {
        let d = half::f16::from_f32(0.01 + (b % 5) as f32 * 0.002);
        data.extend_from_slice(&d.to_le_bytes());
        data.extend((0..32).map(|j| ((b * 31 + j * 17) % 255) as u8));
    }
    QMatrix::new(BlockFormat::Q8_0, rows, cols, Arc::new(data), 0).expect("fits")
}

#[test]
fn gradients_reach_the_input_of_a_quantised_layer() {
    let device = Device::flex().autodiff();
    let (rows, cols) = (48, 64);
    let w = Arc::new(q8_matrix(rows, cols));
    let mut dense = LinearConfig::new(cols, rows).with_bias(false).init(&device);
    let weight = Tensor::<2>::from_data(TensorData::new(w.dequantize(), [rows, cols]), &device);
    dense.weight = burn::module::Param::from_tensor(weight.transpose().set_require_grad(false));
    // 4 x 5 rows go through the panel kernel, 1 x 2 through the 8-bit one; the gradient
    // is the same transposed product in both.
    for [b, t] in [[4, 5], [1, 2]] {
        let x: Vec<f32> = (0..b * t * cols)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let input = || {
            Tensor::<3>::from_data(TensorData::new(x.clone(), [b, t, cols]), &device).require_grad()
        };
        let (xq, xd) = (input(), input());
        let yq = qlinear(xq.clone(), &w).expect("flex is named");
        let yd = dense.forward(xd.clone());
        let gq = values(
            xq.grad(&(yq.clone() * yq).sum().backward())
                .expect("a gradient"),
        );
        let gd = values(
            xd.grad(&(yd.clone() * yd).sum().backward())
                .expect("a gradient"),
        );
        let (worst, scale) = worst_and_scale(&gq, &gd);
        // d(sum y^2)/dx = 2 y W: y itself carries the 8-bit kernel's rounding up to 16 rows.
        let allowed = if b * t <= 16 { 0.02 } else { 1e-5 };
        assert!(
            worst <= allowed * scale,
            "{b}x{t}: gradients differ by {worst} ({scale})"
        );
    }
}

#[test]
fn lora_adapters_on_the_quantised_llm_get_the_dense_models_gradients() {
    let file = gguf();
    let device = Device::flex().autodiff();
    let config = calm::model::lora::LoraConfig::default();
    let with_lora = |weights| {
        let (model, _, _) = load_llama_gguf_with(&file, &device, weights).expect("loads");
        device.seed(5);
        // Numbered as fine-tuning numbers them: the adapters drawn here, the quantised
        // matrices left lazy.
        let lazy = model.quantized_param_ids();
        calm::train::optim::numbered_params_keeping(model.with_lora(&config, &device), &lazy)
    };
    let (dense, quant) = (
        with_lora(GgufWeights::Dequantized),
        with_lora(GgufWeights::Quantized),
    );
    // 24 tokens: the exact panel kernel, so the two gradients differ by rounding only.
    let prompt: Vec<i64> = (0..24).map(|i| 2000 + (i * 104_729) % 40000).collect();
    let grad = |model: &LlamaForCausalLM| {
        let embeds = model.embed(ids(&prompt, &device));
        let hidden = model.hidden_states(embeds, None, None, None);
        let grads = (hidden.clone() * hidden).sum().backward();
        let adapter = model.lora.as_ref().expect("adapters").layers[0]
            .self_attn
            .q_proj
            .as_ref()
            .expect("q_proj adapter");
        values(
            adapter
                .lora_B
                .weight
                .val()
                .grad(&grads)
                .expect("a gradient"),
        )
    };
    let (want, got) = (grad(&dense), grad(&quant));
    let (worst, scale) = worst_and_scale(&got, &want);
    assert!(scale > 0.0, "the adapter gets a gradient");
    assert!(
        worst <= 1e-3 * scale,
        "adapter gradients differ by {worst} (scale {scale})"
    );
    assert!(
        !quant.model.layers[0]
            .self_attn
            .q_proj
            .weight
            .is_initialized()
    );
}

#[test]
fn merging_adapters_leaves_the_quantised_model_as_it_was() {
    let file = gguf();
    let device = Device::flex();
    let (dense, _, _) =
        load_llama_gguf_with(&file, &device, GgufWeights::Dequantized).expect("dense");
    let (quant, _, _) = load_llama_gguf_with(&file, &device, GgufWeights::Quantized).expect("q");
    let adapted = quant.with_lora(&calm::model::lora::LoraConfig::default(), &device);
    let merged = adapted.merged();
    // The merged copy has dense weights of its own; the original still reads its blocks and
    // holds no f32 copy.
    assert!(
        !adapted.model.layers[2]
            .self_attn
            .q_proj
            .weight
            .is_initialized()
    );
    let held = merged.quantized.as_ref().expect("the rest stays quantised");
    assert!(held.layers[2].q_proj.is_none());
    // A fresh adapter adds nothing: the merged weight is the dequantised one.
    let a = values(merged.model.layers[2].self_attn.q_proj.weight.val());
    let b = values(dense.model.layers[2].self_attn.q_proj.weight.val());
    assert_eq!(a, b);
}
