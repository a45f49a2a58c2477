//! LLaMA checkpoints in HF's layout (`config.json` and safetensors, sharded or not; f32, f16 or
//! bf16 widened to f32) onto `LlamaForCausalLM`. Reads the config as transformers 4 writes it
//! (`rope_theta`, `rope_scaling` with `type` or `rope_type`) and as transformers 5 does
//! (`rope_parameters`). Also GGUF files (llama.cpp): `llama.*` metadata, tensors renamed from
//! llama.cpp's names and dequantised, q/k rows permuted back.

use std::path::Path;

use burn::tensor::Device;
use serde::Deserialize;

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{Shape, Tensor, TensorData};

use super::checkpoint::{
    CheckpointError, LoadReport, Tensors, apply, apply_except, check_describes, read_json,
};
use super::gguf::GgmlType;
use super::gguf::{GgufError, GgufFile};
use super::tokenizer::{load_gguf_tokenizer, load_tokenizer_json};
use crate::model::chat::LlmTokenizer;
use crate::model::llama::{
    LlamaConfig, LlamaForCausalLM, QuantizedLayer, QuantizedLlama, RopeScaling,
};
use crate::model::quant::{BlockFormat, QMatrix};

/// How the matrices of a GGUF file are held once loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgufWeights {
    /// Every tensor in f32, as a checkpoint folder's: what training the LLM needs.
    #[default]
    Dequantized,
    /// Matrices in Q4_0, Q4_1, Q8_0, Q4_K or Q6_K stay in their blocks, read by the products
    /// directly (`model::quant`); the rest in f32. For inference and a frozen LLM.
    Quantized,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfLlama {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: String,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    rope_parameters: Option<serde_json::Value>,
    tie_word_embeddings: bool,
    attention_bias: bool,
    mlp_bias: bool,
    model_type: Option<String>,
}

impl Default for HfLlama {
    /// transformers' `LlamaConfig` defaults (LLaMA-7B).
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: "silu".into(),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            model_type: None,
        }
    }
}

/// The rotary base and scaling of a `rope_parameters` / `rope_scaling` object.
fn rope(value: &serde_json::Value) -> Result<(Option<f64>, Option<RopeScaling>), String> {
    let theta = value.get("rope_theta").and_then(|v| v.as_f64());
    let kind = value
        .get("rope_type")
        .or_else(|| value.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let num = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("rope type `{kind}` needs `{key}`"))
    };
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        }),
        other => {
            return Err(format!(
                "rope type `{other}` is not supported (default, linear, llama3)"
            ));
        }
    };
    Ok((theta, scaling))
}

/// Reads a `LlamaForCausalLM` checkpoint's config.
pub fn read_llama_config(dir: &Path) -> Result<LlamaConfig, CheckpointError> {
    let path = dir.join("config.json");
    llama_config_from(read_json(&path)?, &path)
}

/// A LLaMA config from the text of the `config.json` at `path`.
pub fn llama_config_from_json(text: &str, path: &Path) -> Result<LlamaConfig, CheckpointError> {
    let hf = serde_json::from_str(text).map_err(|e| CheckpointError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    llama_config_from(hf, path)
}

fn llama_config_from(hf: HfLlama, path: &Path) -> Result<LlamaConfig, CheckpointError> {
    let path = path.to_path_buf();
    let format = |message: String| CheckpointError::Format {
        path: path.clone(),
        message,
    };
    if let Some(kind) = hf.model_type.as_deref().filter(|k| *k != "llama") {
        return Err(format(format!("model_type `{kind}` is not llama")));
    }
    if hf.hidden_act != "silu" {
        return Err(format(format!(
            "hidden_act `{}`: LLaMA uses silu",
            hf.hidden_act
        )));
    }
    let (theta, scaling) = match hf.rope_parameters.as_ref().or(hf.rope_scaling.as_ref()) {
        Some(v) if !v.is_null() => rope(v).map_err(format)?,
        _ => (None, None),
    };
    let config = LlamaConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf.head_dim,
        max_position_embeddings: hf.max_position_embeddings,
        rms_norm_eps: hf.rms_norm_eps,
        rope_theta: theta.or(hf.rope_theta).unwrap_or(10_000.0),
        rope_scaling: scaling,
        tie_word_embeddings: hf.tie_word_embeddings,
        attention_bias: hf.attention_bias,
        mlp_bias: hf.mlp_bias,
    };
    config.check().map_err(|e| format(e.to_string()))?;
    Ok(config)
}

/// Loads a HF LLaMA checkpoint directory. A tied model's `lm_head.weight`, when a checkpoint
/// stores it anyway, is reported unexpected.
pub fn load_llama(
    dir: &Path,
    device: &Device,
) -> Result<(LlamaForCausalLM, LlamaConfig, LoadReport), CheckpointError> {
    let config = read_llama_config(dir)?;
    let tensors = Tensors::read_dir(dir)?;
    check_describes(
        &dir.join("config.json"),
        config.parameter_count(),
        tensors.element_count(),
    )?;
    let mut model = config.init(device);
    let report = apply(&mut model, tensors, dir)?;
    Ok((model, config, report))
}

/// A LLaMA from an HF checkpoint folder or a GGUF file (by its `.gguf` extension).
pub fn load_llm(
    path: &Path,
    device: &Device,
) -> Result<(LlamaForCausalLM, LlamaConfig, LoadReport), CheckpointError> {
    if is_gguf(path) {
        let file = GgufFile::read(path).map_err(|e| gguf_error(path, e))?;
        return load_llama_gguf(&file, device);
    }
    load_llama(path, device)
}

/// A LLaMA and its tokenizer, for chat: from a GGUF file (read once for both) or an HF folder
/// with its `tokenizer.json`.
pub fn load_chat_model(
    path: &Path,
    device: &Device,
) -> Result<(LlamaForCausalLM, LlmTokenizer), CheckpointError> {
    load_chat_model_with(path, device, GgufWeights::Dequantized)
}

/// `load_chat_model` holding a GGUF file's matrices as `weights` says (an HF folder is
/// always f32).
pub fn load_chat_model_with(
    path: &Path,
    device: &Device,
    weights: GgufWeights,
) -> Result<(LlamaForCausalLM, LlmTokenizer), CheckpointError> {
    if is_gguf(path) {
        let file = GgufFile::read(path).map_err(|e| gguf_error(path, e))?;
        let tokenizer = load_gguf_tokenizer(&file)?;
        return Ok((load_llama_gguf_with(&file, device, weights)?.0, tokenizer));
    }
    let tokenizer = load_tokenizer_json(path)?;
    Ok((load_llama(path, device)?.0, tokenizer))
}

pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn gguf_error(path: &Path, e: GgufError) -> CheckpointError {
    CheckpointError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The LLaMA config a GGUF file's `llama.*` metadata describes. A file without `output.weight`
/// shares the embedding matrix with the head.
pub fn read_llama_gguf_config(file: &GgufFile) -> Result<LlamaConfig, CheckpointError> {
    let err = |e: GgufError| gguf_error(&file.path, e);
    let format = |message: String| CheckpointError::Format {
        path: file.path.clone(),
        message,
    };
    let arch = file.get_str("general.architecture").map_err(err)?;
    if arch != "llama" {
        return Err(format(format!(
            "general.architecture is `{arch}`, not llama"
        )));
    }
    if file.tensor("rope_freqs.weight").is_some() {
        // Llama 3.1 files carry their rotary scaling as per-frequency factors; reading them
        // without applying them would silently change every position's rotation.
        return Err(format(
            "rope_freqs.weight (llama3 rope scaling) is not supported from GGUF; load the HF checkpoint".into(),
        ));
    }
    let u = |k: &str| file.get_u64(k).map(|v| v as usize).map_err(err);
    let heads = u("llama.attention.head_count")?;
    let hidden = u("llama.embedding_length")?;
    let vocab = match file.get_u64("llama.vocab_size") {
        Ok(v) => v as usize,
        Err(_) => file
            .get_str_array("tokenizer.ggml.tokens")
            .map_err(err)?
            .len(),
    };
    let head_dim = file
        .get_u64("llama.attention.key_length")
        .ok()
        .map(|d| d as usize)
        .filter(|&d| d != hidden / heads.max(1));
    let rope_scaling = match file.get_str("llama.rope.scaling.type") {
        Ok("linear") => Some(RopeScaling::Linear {
            factor: file.get_f64("llama.rope.scaling.factor").map_err(err)?,
        }),
        Ok("none") | Err(_) => None,
        Ok(other) => {
            return Err(format(format!(
                "llama.rope.scaling.type `{other}` is not supported"
            )));
        }
    };
    let config = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: u("llama.feed_forward_length")?,
        num_hidden_layers: u("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: file
            .get_u64("llama.attention.head_count_kv")
            .map_or(heads, |v| v as usize),
        head_dim,
        max_position_embeddings: u("llama.context_length")?,
        rms_norm_eps: file
            .get_f64("llama.attention.layer_norm_rms_epsilon")
            .map_err(err)?,
        rope_theta: file.get_f64("llama.rope.freq_base").unwrap_or(10_000.0),
        rope_scaling,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        attention_bias: file.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
    };
    config.check().map_err(|e| format(e.to_string()))?;
    // Only tensors the model reads, of a type whose size the parser checked against the file:
    // an unused tensor of unknown type could declare any size.
    let held = file
        .tensors
        .iter()
        .filter(|t| t.ggml_type.block().is_some() && hf_name(&t.name).is_some())
        .map(|t| t.dims.iter().map(|&d| u128::from(d)).product::<u128>())
        .sum();
    check_describes(&file.path, config.parameter_count(), held)?;
    Ok(config)
}

/// The HF name of a GGUF LLaMA tensor (llama.cpp's `convert_hf_to_gguf` mapping, reversed).
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = tail.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undoes `convert_hf_to_gguf`'s row permutation of q/k projections. It reorders each head's
/// rows from HF's rotate-half layout (first halves, then second halves) into interleaved
/// pairs for llama.cpp's rotary kernel: GGUF row `(h, i, j)` is HF row `(h, j, i)` over
/// `(heads, head_dim / 2, 2)`.
pub fn unpermute_rows(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = values.len() / rows.max(1);
    let half = rows / heads.max(1) / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let hf_row = (h * 2 + j) * half + i;
                let gguf_row = (h * half + i) * 2 + j;
                out[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&values[gguf_row * cols..(gguf_row + 1) * cols]);
            }
        }
    }
    out
}

/// Loads a GGUF LLaMA: every tensor dequantised to f32, renamed to HF's keys, q/k rows put
/// back in HF's order. Tensors with no HF counterpart are reported.
pub fn load_llama_gguf(
    file: &GgufFile,
    device: &Device,
) -> Result<(LlamaForCausalLM, LlamaConfig, LoadReport), CheckpointError> {
    load_llama_gguf_with(file, device, GgufWeights::Dequantized)
}

/// The block format a GGUF type keeps in memory, if the products can read it.
fn block_format(ggml_type: GgmlType) -> Option<BlockFormat> {
    match ggml_type {
        GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
        GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
        GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
        GgmlType::Q4_K => Some(BlockFormat::Q4_K),
        GgmlType::Q6_K => Some(BlockFormat::Q6_K),
        _ => None,
    }
}

/// HF rows of a q/k projection in GGUF's stored order (the inverse of `convert_hf_to_gguf`'s
/// permutation, as `unpermute_rows` applies it to values).
fn unpermuted_order(rows: usize, heads: usize) -> Vec<u32> {
    let half = rows / heads.max(1) / 2;
    let mut order = vec![0u32; rows];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                order[(h * 2 + j) * half + i] = ((h * half + i) * 2 + j) as u32;
            }
        }
    }
    order
}

/// A lazy parameter holding `w` in f32 as Burn stores it (`[in, out]` for a linear layer,
/// `transpose`; `[rows, cols]` for an embedding table), dequantised only if read.
fn lazy_weight(w: &Arc<QMatrix>, device: &Device, transpose: bool) -> Param<Tensor<2>> {
    let shape = if transpose {
        [w.cols, w.rows]
    } else {
        [w.rows, w.cols]
    };
    let w = Arc::clone(w);
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| {
            let t =
                Tensor::<2>::from_data(TensorData::new(w.dequantize(), [w.rows, w.cols]), device);
            let t = if transpose { t.transpose() } else { t };
            t.set_require_grad(require_grad)
        },
        device.clone(),
        false,
        Shape::new(shape),
    )
}

/// Loads a GGUF LLaMA, its matrices held as `weights` says: renamed to HF's keys, q/k rows
/// put back in HF's order (by reading them in that order when they stay quantised). Tensors
/// with no HF counterpart are reported.
pub fn load_llama_gguf_with(
    file: &GgufFile,
    device: &Device,
    weights: GgufWeights,
) -> Result<(LlamaForCausalLM, LlamaConfig, LoadReport), CheckpointError> {
    let config = read_llama_gguf_config(file)?;
    let mut tensors = Tensors::default();
    let mut others = Vec::new();
    let mut blocks: BTreeMap<String, Arc<QMatrix>> = BTreeMap::new();
    for info in &file.tensors {
        let Some(name) = hf_name(&info.name) else {
            others.push(info.name.clone());
            continue;
        };
        let heads = if name.contains("q_proj.") {
            Some(config.num_attention_heads)
        } else if name.contains("k_proj.") {
            Some(config.num_key_value_heads)
        } else {
            None
        };
        let format = block_format(info.ggml_type).filter(|_| {
            weights == GgufWeights::Quantized && name.ends_with(".weight") && info.dims.len() == 2
        });
        if let Some(format) = format {
            let shape = info.shape();
            let (_, data, offset) = file
                .tensor_blocks(&info.name)
                .map_err(|e| gguf_error(&file.path, e))?;
            let matrix = QMatrix::new(format, shape[0], shape[1], data, offset)
                .and_then(|m| match heads {
                    Some(h) => m.with_row_order(unpermuted_order(shape[0], h)),
                    None => Ok(m),
                })
                .map_err(|e| CheckpointError::Format {
                    path: file.path.clone(),
                    message: format!("{}: {e}", info.name),
                })?;
            blocks.insert(name, Arc::new(matrix));
            continue;
        }
        let (shape, mut values) = file
            .tensor_f32(&info.name)
            .map_err(|e| gguf_error(&file.path, e))?;
        if let Some(heads) = heads {
            values = unpermute_rows(&values, shape.first().copied().unwrap_or(0), heads);
        }
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.tensors.insert(name, (shape, bytes));
    }
    let mut model = config.init(device);
    let mut report = apply_except(&mut model, tensors, &file.path, |path| {
        blocks.contains_key(path)
    })?;
    if !blocks.is_empty() {
        let names: Vec<String> = blocks.keys().cloned().collect();
        let homeless = quantize(&mut model, &mut blocks, &config, device, &file.path)?;
        report
            .applied
            .extend(names.into_iter().filter(|n| !homeless.contains(n)));
        report.applied.sort();
        others.extend(homeless);
    }
    report.unexpected.extend(others);
    report.unexpected.sort();
    Ok((model, config, report))
}

/// Hands `blocks` (by HF name) to `model`, replacing the parameters they stand for with lazy
/// dequantisations; a matrix must have the shape of its place. Returns the names of those
/// that have no place.
fn quantize(
    model: &mut LlamaForCausalLM,
    blocks: &mut BTreeMap<String, Arc<QMatrix>>,
    config: &LlamaConfig,
    device: &Device,
    path: &Path,
) -> Result<Vec<String>, CheckpointError> {
    let mismatch = |name: &str, expected: [usize; 2], w: &QMatrix| CheckpointError::Mismatch {
        dir: path.to_path_buf(),
        message: format!(
            "`{name}` is {} x {} in the file; the config makes it {} x {}",
            w.rows, w.cols, expected[0], expected[1]
        ),
    };
    // Takes the named matrix for `linear` (`[in, out]` in Burn), checking it is `[out, in]`.
    let mut take =
        |name: String, linear: &mut Linear| -> Result<Option<Arc<QMatrix>>, CheckpointError> {
            let Some(w) = blocks.remove(&name) else {
                return Ok(None);
            };
            let dims = linear.weight.lazy_shape().dims::<2>();
            if [w.cols, w.rows] != [dims[0], dims[1]] {
                return Err(mismatch(&name, [dims[1], dims[0]], &w));
            }
            linear.weight = lazy_weight(&w, device, true);
            Ok(Some(w))
        };
    let mut quantized = QuantizedLlama::default();
    for (i, layer) in model.model.layers.iter_mut().enumerate() {
        let p = |part: &str| format!("model.layers.{i}.{part}.weight");
        let (attn, mlp) = (&mut layer.self_attn, &mut layer.mlp);
        quantized.layers.push(QuantizedLayer {
            q_proj: take(p("self_attn.q_proj"), &mut attn.q_proj)?,
            k_proj: take(p("self_attn.k_proj"), &mut attn.k_proj)?,
            v_proj: take(p("self_attn.v_proj"), &mut attn.v_proj)?,
            o_proj: take(p("self_attn.o_proj"), &mut attn.o_proj)?,
            gate_proj: take(p("mlp.gate_proj"), &mut mlp.gate_proj)?,
            up_proj: take(p("mlp.up_proj"), &mut mlp.up_proj)?,
            down_proj: take(p("mlp.down_proj"), &mut mlp.down_proj)?,
        });
    }
    if let Some(head) = model.lm_head.as_mut() {
        quantized.lm_head = take("lm_head.weight".into(), head)?;
    }
    if let Some(w) = blocks.remove("model.embed_tokens.weight") {
        let expected = [config.vocab_size, config.hidden_size];
        if [w.rows, w.cols] != expected {
            return Err(mismatch("model.embed_tokens.weight", expected, &w));
        }
        model.model.embed_tokens.weight = lazy_weight(&w, device, false);
        if config.tie_word_embeddings {
            quantized.lm_head = Some(Arc::clone(&w));
        }
        quantized.embed_tokens = Some(w);
    }
    model.quantized = Some(Arc::new(quantized));
    // Matrices with no place (a layer past `block_count`) are unexpected, as in f32.
    Ok(std::mem::take(blocks).into_keys().collect())
}
