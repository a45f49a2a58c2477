//! HF `transformers` checkpoints as `save_pretrained` writes them: `config.json` and
//! `model.safetensors`, or shards listed in `model.safetensors.index.json` (read by
//! `checkpoint::Tensors::read_dir`).

use std::path::Path;

use burn::tensor::Device;
use serde::Deserialize;

use super::checkpoint::{
    CheckpointError, LoadReport, Tensors, apply, check_config, check_describes, read_json,
};

use crate::model::bert::Bert;
use crate::model::qformer::QFormer;
use crate::model::text::TextEncoder;
use crate::model::vision::clip::ClipVision;
use crate::model::{
    BertConfig, ClipVisionConfig, HiddenAct, QFormerConfig, limits, positive, size_within,
};

/// HF `CLIPVisionConfig` as written in `config.json`, with HF's defaults for absent keys;
/// other keys are ignored, as transformers does.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfClipVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for HfClipVision {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// HF's `hidden_act` names, as `transformers.activations.ACT2FN` reads them.
fn hidden_act(name: &str, path: &Path) -> Result<HiddenAct, CheckpointError> {
    Ok(match name {
        "quick_gelu" => HiddenAct::QuickGelu,
        "gelu" => HiddenAct::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => HiddenAct::GeluNew,
        "relu" => HiddenAct::Relu,
        other => {
            return Err(CheckpointError::Format {
                path: path.to_path_buf(),
                message: format!("unsupported hidden_act `{other}`"),
            });
        }
    })
}

/// As HF refuses it: attention splits `hidden_size` evenly over the heads.
fn heads_divide(hidden: usize, heads: usize, path: &Path) -> Result<(), CheckpointError> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            ),
        });
    }
    Ok(())
}

/// `config.json` as a JSON value, refused unless its `model_type` is one of `accepted`.
fn read_config(dir: &Path, accepted: &[&str]) -> Result<serde_json::Value, CheckpointError> {
    let path = dir.join("config.json");
    let value: serde_json::Value = read_json(&path)?;
    check_model_type(value, &path, accepted)
}

fn check_model_type(
    value: serde_json::Value,
    path: &Path,
    accepted: &[&str],
) -> Result<serde_json::Value, CheckpointError> {
    match value.get("model_type").and_then(|t| t.as_str()) {
        Some(t) if !accepted.contains(&t) => Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!("model_type `{t}` is not one of: {}", accepted.join(", ")),
        }),
        _ => Ok(value),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    dir: &Path,
) -> Result<T, CheckpointError> {
    serde_json::from_value(value).map_err(|e| CheckpointError::Format {
        path: dir.join("config.json"),
        message: e.to_string(),
    })
}

/// Reads the vision config of a `CLIPVisionModel` or `CLIPModel` checkpoint directory.
pub fn read_clip_vision_config(dir: &Path) -> Result<ClipVisionConfig, CheckpointError> {
    let path = dir.join("config.json");
    let mut value: serde_json::Value = read_json(&path)?;
    // Other ViT families (SigLIP, EVA, ...) differ in layers and keys: refuse them by name.
    match value.get("model_type").and_then(|t| t.as_str()) {
        None | Some("clip" | "clip_vision_model") => {}
        Some(other) => {
            return Err(CheckpointError::Format {
                path,
                message: format!("model_type `{other}` is not a CLIP checkpoint"),
            });
        }
    }
    if let Some(vision) = value.get_mut("vision_config") {
        value = vision.take();
    }
    let hf: HfClipVision = serde_json::from_value(value).map_err(|e| CheckpointError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let hidden_act = hidden_act(&hf.hidden_act, &path)?;
    Ok(ClipVisionConfig {
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        num_channels: hf.num_channels,
        image_size: hf.image_size,
        patch_size: hf.patch_size,
        hidden_act,
        layer_norm_eps: hf.layer_norm_eps,
    })
}

/// Loads a CLIP vision encoder from a HF checkpoint directory.
pub fn load_clip_vision(
    dir: &Path,
    device: &Device,
) -> Result<(ClipVision, LoadReport), CheckpointError> {
    let config = read_clip_vision_config(dir)?;
    let path = dir.join("config.json");
    check_config(&path, config.validate("config.json"))?;
    let (tensors, mut others) = Tensors::read_dir(dir)?.take_prefix("vision_model.");
    let patches = (config.image_size / config.patch_size).pow(2) as u128;
    let declared = config.num_hidden_layers as u128 * 4 * (config.hidden_size as u128).pow(2)
        + patches * config.hidden_size as u128;
    check_describes(&path, declared, tensors.element_count())?;
    let mut model = config.init(device);
    let mut report = apply(&mut model, tensors, dir)?;
    report.unexpected.append(&mut others);
    report.unexpected.sort();
    Ok((model, report))
}

/// HF `BertConfig` as written in `config.json`, with HF's defaults for absent keys.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfBert {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    pad_token_id: Option<usize>,
    position_embedding_type: String,
    is_decoder: bool,
}

impl Default for HfBert {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: Some(0),
            position_embedding_type: "absolute".into(),
            is_decoder: false,
        }
    }
}

/// Reads a `BertModel` (or `Bert*` head model) checkpoint's config.
pub fn read_bert_config(dir: &Path) -> Result<BertConfig, CheckpointError> {
    bert_config_from(read_config(dir, &["bert"])?, dir)
}

/// A BERT config from the text of a `config.json` that belongs in `dir`.
pub fn bert_config_from_json(text: &str, dir: &Path) -> Result<BertConfig, CheckpointError> {
    let path = dir.join("config.json");
    let value = serde_json::from_str(text).map_err(|e| CheckpointError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    bert_config_from(check_model_type(value, &path, &["bert"])?, dir)
}

fn bert_config_from(value: serde_json::Value, dir: &Path) -> Result<BertConfig, CheckpointError> {
    let path = dir.join("config.json");
    let hf: HfBert = parse(value, dir)?;
    // Relative position schemes change the attention scores; only BERT's default is built.
    if hf.position_embedding_type != "absolute" {
        return Err(CheckpointError::Format {
            path,
            message: format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                hf.position_embedding_type
            ),
        });
    }
    heads_divide(hf.hidden_size, hf.num_attention_heads, &path)?;
    let sizes = [
        ("vocab_size", hf.vocab_size, limits::VOCAB),
        ("hidden_size", hf.hidden_size, limits::WIDTH),
        ("num_hidden_layers", hf.num_hidden_layers, limits::LAYERS),
        ("num_attention_heads", hf.num_attention_heads, limits::HEADS),
        (
            "intermediate_size",
            hf.intermediate_size,
            limits::INTERMEDIATE,
        ),
        (
            "max_position_embeddings",
            hf.max_position_embeddings,
            limits::POSITIONS,
        ),
        ("type_vocab_size", hf.type_vocab_size, limits::VOCAB),
    ];
    for (key, value, max) in sizes {
        check_config(&path, size_within(key, value, max))?;
    }
    check_config(&path, positive("layer_norm_eps", hf.layer_norm_eps))?;
    // A decoder BERT attends causally; only the bidirectional encoder is built.
    if hf.is_decoder {
        return Err(CheckpointError::Format {
            path,
            message: "is_decoder = true (a causal BERT) is not supported".into(),
        });
    }
    Ok(BertConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        num_hidden_layers: hf.num_hidden_layers,
        num_attention_heads: hf.num_attention_heads,
        intermediate_size: hf.intermediate_size,
        hidden_act: hidden_act(&hf.hidden_act, &path)?,
        max_position_embeddings: hf.max_position_embeddings,
        type_vocab_size: hf.type_vocab_size,
        layer_norm_eps: hf.layer_norm_eps,
        pad_token_id: hf.pad_token_id.unwrap_or(0),
    })
}

/// BERT's `attention.self.*` is `attention.attention.*` in our modules (a Rust field cannot
/// be called `self`); the Q-Former's LAVIS / older-HF layout uses it too.
fn self_attention_keys(key: &str) -> String {
    key.replace(".attention.self.", ".attention.attention.")
        .replace(".crossattention.self.", ".crossattention.attention.")
}

/// Loads a BERT from a HF checkpoint directory. Keys under `bert.` (head models such as
/// `BertForMaskedLM`) are used and the heads reported unexpected; a checkpoint without a
/// pooler gives a model without one.
pub fn load_bert(dir: &Path, device: &Device) -> Result<(Bert, LoadReport), CheckpointError> {
    let config = read_bert_config(dir)?;
    let (tensors, mut others) = Tensors::read_dir(dir)?.take_prefix("bert.");
    check_describes(
        &dir.join("config.json"),
        config.parameter_count(),
        tensors.element_count(),
    )?;
    let tensors = tensors.rename(self_attention_keys);
    let with_pooler = tensors.tensors.contains_key("pooler.dense.weight");
    let mut model = config.init(with_pooler, device);
    let mut report = apply(&mut model, tensors, dir)?;
    report.unexpected.append(&mut others);
    report.unexpected.sort();
    Ok((model, report))
}

/// The sentence-transformers `sentence_bert_config.json` field we use.
#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// Loads the frozen text encoder: the BERT of `dir`, its `tokenizer.json`, and the maximum
/// sentence length from `sentence_bert_config.json` (sentence-transformers' own limit;
/// without that file, the position table's size).
pub fn load_text_encoder(
    dir: &Path,
    device: &Device,
) -> Result<(TextEncoder, LoadReport), CheckpointError> {
    let config = read_bert_config(dir)?;
    let (bert, report) = load_bert(dir, device)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let bytes = crate::files::read_bytes(&tokenizer_path, crate::files::MAX_ANNOTATION_BYTES)
        .map_err(|source| CheckpointError::Io {
            path: tokenizer_path.clone(),
            source,
        })?;
    let tokenizer =
        tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| CheckpointError::Format {
            path: tokenizer_path.clone(),
            message: e.to_string(),
        })?;
    let st = dir.join("sentence_bert_config.json");
    let max_length = if st.is_file() {
        read_json::<SentenceBertConfig>(&st)?.max_seq_length
    } else {
        None
    }
    .unwrap_or(config.max_position_embeddings);
    let encoder = TextEncoder::new(bert, tokenizer, max_length, config.pad_token_id as u32)
        .map_err(|e| CheckpointError::Format {
            path: tokenizer_path,
            message: e.to_string(),
        })?;
    Ok((encoder, report))
}

/// HF `Blip2QFormerConfig` as written in `config.json`, with HF's defaults for absent keys.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct HfQFormer {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    cross_attention_frequency: usize,
    encoder_hidden_size: usize,
    use_qformer_text_input: bool,
}

impl Default for HfQFormer {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            cross_attention_frequency: 2,
            encoder_hidden_size: 1408,
            use_qformer_text_input: false,
        }
    }
}

/// Reads the Q-Former config of a `Blip2QFormerModel` checkpoint, or the `qformer_config`
/// of a full BLIP-2 one; returns it with the image-feature width it cross-attends to.
pub fn read_qformer_config(dir: &Path) -> Result<(QFormerConfig, usize), CheckpointError> {
    let path = dir.join("config.json");
    let mut value = read_config(dir, &["blip_2_qformer", "blip-2"])?;
    if let Some(q) = value.get_mut("qformer_config") {
        value = q.take();
    }
    let hf: HfQFormer = parse(value, dir)?;
    heads_divide(hf.hidden_size, hf.num_attention_heads, &path)?;
    check_config(
        &path,
        size_within("encoder_hidden_size", hf.encoder_hidden_size, limits::WIDTH),
    )?;
    if hf.cross_attention_frequency == 0 {
        return Err(CheckpointError::Format {
            path,
            message: "cross_attention_frequency 0 is invalid".into(),
        });
    }
    Ok((
        QFormerConfig {
            hidden_size: hf.hidden_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            intermediate_size: hf.intermediate_size,
            hidden_act: hidden_act(&hf.hidden_act, &path)?,
            cross_attention_frequency: hf.cross_attention_frequency,
            layer_norm_eps: hf.layer_norm_eps,
            use_qformer_text_input: hf.use_qformer_text_input,
        },
        hf.encoder_hidden_size,
    ))
}

/// Loads a Q-Former from a HF checkpoint directory. Accepts the transformers 5 layout
/// (`encoder.layer.N.attention.attention.query`), the LAVIS / older layout
/// (`attention.self.query`), and the `qformer.` prefix of a full BLIP-2 checkpoint (whose
/// vision tower, query tokens and language model are reported unexpected).
pub fn load_qformer(dir: &Path, device: &Device) -> Result<(QFormer, LoadReport), CheckpointError> {
    let (config, encoder_hidden_size) = read_qformer_config(dir)?;
    let path = dir.join("config.json");
    check_config(&path, config.validate("config.json"))?;
    let (tensors, mut others) = Tensors::read_dir(dir)?.take_prefix("qformer.");
    check_describes(
        &path,
        config.parameter_count(encoder_hidden_size),
        tensors.element_count(),
    )?;
    let tensors = tensors.rename(|k| {
        // LAVIS keeps the input LayerNorm in BERT's embeddings.
        let k = self_attention_keys(k);
        match k.strip_prefix("embeddings.LayerNorm.") {
            Some(rest) => format!("layernorm.{rest}"),
            None => k,
        }
    });
    let mut model = config.init(encoder_hidden_size, device);
    let mut report = apply(&mut model, tensors, dir)?;
    report.unexpected.append(&mut others);
    report.unexpected.sort();
    Ok((model, report))
}
