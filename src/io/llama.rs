//! LLaMA checkpoints in HF's layout (`config.json` and safetensors, sharded or not; f32, f16 or
//! bf16 widened to f32) onto `LlamaForCausalLM`. Reads the config as transformers 4 writes it
//! (`rope_theta`, `rope_scaling` with `type` or `rope_type`) and as transformers 5 does
//! (`rope_parameters`).

use std::path::Path;

use burn::tensor::Device;
use serde::Deserialize;

use super::checkpoint::{CheckpointError, LoadReport, Tensors, apply, read_json};
use crate::model::llama::{LlamaConfig, LlamaForCausalLM, RopeScaling};

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
    let hf: HfLlama = read_json(&path)?;
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
    let mut model = config.init(device);
    let report = apply(&mut model, &tensors, dir)?;
    Ok((model, config, report))
}

/// A LLaMA from an HF checkpoint folder or a GGUF file (by its `.gguf` extension).
pub fn load_llm(
    path: &Path,
    device: &Device,
) -> Result<(LlamaForCausalLM, LlamaConfig, LoadReport), CheckpointError> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: "GGUF checkpoints are not readable yet (issue #6)".into(),
        });
    }
    load_llama(path, device)
}
