//! `inspect forward`: run one component on tensors from a safetensors file and write its
//! outputs, so that anyone can check a checkpoint against a reference implementation.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use super::checkpoint::{CheckpointError, LoadReport, Tensors};
use super::hf::{load_bert, load_clip_vision, load_qformer};
use super::pytorch::load_efficientnet_lite0;
use crate::model::EfficientNetLite0Config;
use crate::model::bert::padding_bias;

/// A tensor's values as f64 and its shape.
type Values<const D: usize> = (Vec<f64>, [usize; D]);

/// An inputs file with tensors of any numeric dtype: masks and ids come as integers, bools or
/// floats, depending on who wrote them.
struct Inputs {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl Inputs {
    fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes =
            crate::files::read_bytes(path, crate::files::MAX_WEIGHTS_BYTES).map_err(|source| {
                CheckpointError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let inputs = Self {
            path: path.to_path_buf(),
            bytes,
        };
        inputs.file()?;
        Ok(inputs)
    }

    fn error(&self, message: String) -> CheckpointError {
        CheckpointError::Format {
            path: self.path.clone(),
            message,
        }
    }

    fn file(&self) -> Result<SafeTensors<'_>, CheckpointError> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| self.error(e.to_string()))
    }

    /// `key`'s values as f64 with its shape, or `None` if absent; any other rank than `D` is
    /// an error.
    fn values<const D: usize>(&self, key: &str) -> Result<Option<Values<D>>, CheckpointError> {
        let file = self.file()?;
        let Ok(view) = file.tensor(key) else {
            return Ok(None);
        };
        let shape: [usize; D] = view.shape().try_into().map_err(|_| {
            self.error(format!(
                "`{key}` has shape {:?}; expected rank {D}",
                view.shape()
            ))
        })?;
        let data = view.data();
        fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
            data.chunks_exact(N)
                .map(|c| {
                    let mut b = [0u8; N];
                    b.copy_from_slice(c);
                    f(b)
                })
                .collect()
        }
        let values = match view.dtype() {
            Dtype::F32 => each(data, |b| f32::from_le_bytes(b) as f64),
            Dtype::F64 => each(data, f64::from_le_bytes),
            Dtype::F16 => each(data, |b| half::f16::from_le_bytes(b).to_f64()),
            Dtype::BF16 => each(data, |b| half::bf16::from_le_bytes(b).to_f64()),
            Dtype::I64 => each(data, |b| i64::from_le_bytes(b) as f64),
            Dtype::I32 => each(data, |b| i32::from_le_bytes(b) as f64),
            Dtype::I16 => each(data, |b| i16::from_le_bytes(b) as f64),
            Dtype::I8 => each(data, |b: [u8; 1]| b[0] as i8 as f64),
            Dtype::U8 | Dtype::BOOL => each(data, |b: [u8; 1]| b[0] as f64),
            other => return Err(self.error(format!("`{key}` has unsupported dtype {other:?}"))),
        };
        Ok(Some((values, shape)))
    }

    fn float<const D: usize>(
        &self,
        key: &str,
        device: &Device,
    ) -> Result<Option<Tensor<D>>, CheckpointError> {
        Ok(self.values::<D>(key)?.map(|(v, shape)| {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Tensor::from_data(TensorData::new(v, shape), device)
        }))
    }

    fn int<const D: usize>(
        &self,
        key: &str,
        device: &Device,
    ) -> Result<Option<Tensor<D, Int>>, CheckpointError> {
        let Some((v, shape)) = self.values::<D>(key)? else {
            return Ok(None);
        };
        if v.iter().any(|x| x.fract() != 0.0) {
            return Err(self.error(format!("`{key}` must hold integers")));
        }
        // Ids, types and lengths are 32-bit on some backends; a cast of 2^62 would panic.
        let range = f64::from(i32::MIN)..=f64::from(i32::MAX);
        if let Some(bad) = v.iter().find(|x| !range.contains(x)) {
            return Err(self.error(format!(
                "`{key}` holds {bad}, outside the 32-bit integers inputs may hold"
            )));
        }
        let v: Vec<i64> = v.into_iter().map(|x| x as i64).collect();
        Ok(Some(Tensor::from_data(TensorData::new(v, shape), device)))
    }

    fn required<T>(&self, key: &str, value: Option<T>) -> Result<T, CheckpointError> {
        value.ok_or_else(|| self.error(format!("no tensor `{key}`")))
    }
}

fn input<const D: usize>(
    inputs: &Tensors,
    key: &str,
    path: &Path,
    device: &Device,
) -> Result<Tensor<D>, CheckpointError> {
    inputs
        .tensor(key, device)
        .ok_or_else(|| CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!("no f32 tensor `{key}` of rank {D}"),
        })
}

/// Pixels `[B, channels, H, W]` with B at least 1, the channels the encoder reads and a side
/// `side` allows; anything else would fail inside the model, far from the file at fault.
fn check_pixels(
    pixels: &Tensor<4>,
    channels: usize,
    side: impl Fn(usize) -> bool,
    expected: &str,
    path: &Path,
) -> Result<(), CheckpointError> {
    let [b, c, h, w] = pixels.dims();
    if b == 0 || c != channels || !side(h) || !side(w) {
        return Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!(
                "`pixel_values` has shape [{b}, {c}, {h}, {w}]; expected [B >= 1, {channels}, {expected}]"
            ),
        });
    }
    Ok(())
}

/// Every dimension of an input must be at least 1: an empty batch, sequence or query set
/// has no output to compare.
fn check_nonempty(dims: &[usize], key: &str, path: &Path) -> Result<(), CheckpointError> {
    if dims.contains(&0) {
        return Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!("`{key}` has shape {dims:?}; every dimension must be at least 1"),
        });
    }
    Ok(())
}

/// The attention scores of one layer, `batch x heads x queries x keys` f32 values, must fit
/// in a quarter of physical memory (the softmax keeps a copy, the model its weights): a
/// 2000 x 2000 image asked 62 GB of a CLIP encoder and aborted.
fn check_attention(shape: [usize; 4], what: &str, path: &Path) -> Result<(), CheckpointError> {
    let bytes = shape.iter().try_fold(4u64, |n, &d| n.checked_mul(d as u64));
    let budget = crate::files::physical_memory().unwrap_or(u64::MAX) / 4;
    match bytes {
        Some(bytes) if bytes <= budget => Ok(()),
        _ => Err(CheckpointError::Format {
            path: path.to_path_buf(),
            message: format!(
                "{what} make attention scores of {shape:?} (batch, heads, queries, keys), over the {} a layer may take here",
                crate::files::bytes(budget)
            ),
        }),
    }
}

fn put<const D: usize>(
    out: &mut Tensors,
    key: &str,
    tensor: Tensor<D>,
    path: &Path,
) -> Result<(), CheckpointError> {
    out.insert(key, tensor)
        .map_err(|message| CheckpointError::Format {
            path: path.to_path_buf(),
            message,
        })
}

/// Reads `pixel_values` `[B, 3, H, W]`; writes `last_hidden_state`, `pooler_output` and
/// `hidden_states.0` .. `hidden_states.L`.
pub fn clip_vision(
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
    device: &Device,
) -> Result<LoadReport, CheckpointError> {
    let config = super::hf::read_clip_vision_config(checkpoint)?;
    let (model, report) = load_clip_vision(checkpoint, device)?;
    let pixels = input::<4>(&Tensors::read(inputs)?, "pixel_values", inputs, device)?;
    // Other sides than the checkpoint's interpolate the position embeddings, as HF's
    // `interpolate_pos_encoding=True`.
    let (patch, max) = (config.patch_size, crate::model::MAX_IMAGE_SIZE);
    check_pixels(
        &pixels,
        config.num_channels,
        |s| (patch..=max).contains(&s),
        &format!("H, W in {patch}..={max}"),
        inputs,
    )?;
    let [b, _, h, w] = pixels.dims();
    let tokens = (h / patch) * (w / patch) + 1;
    check_attention(
        [b, config.num_attention_heads, tokens, tokens],
        "these pixels",
        inputs,
    )?;
    let result = model.forward(pixels);
    let mut out = Tensors::default();
    put(
        &mut out,
        "last_hidden_state",
        result.last_hidden_state,
        output,
    )?;
    put(&mut out, "pooler_output", result.pooler_output, output)?;
    for (i, h) in result.hidden_states.into_iter().enumerate() {
        put(&mut out, &format!("hidden_states.{i}"), h, output)?;
    }
    out.write(output)?;
    Ok(report)
}

/// Reads `pixel_values` `[B, 3, H, W]`; writes `logits` and `features.0` .. `features.6`.
pub fn efficientnet_lite0(
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
    device: &Device,
) -> Result<LoadReport, CheckpointError> {
    let (model, report) =
        load_efficientnet_lite0(checkpoint, &EfficientNetLite0Config::default(), device)?;
    let pixels = input::<4>(&Tensors::read(inputs)?, "pixel_values", inputs, device)?;
    let max = crate::model::MAX_IMAGE_SIZE;
    check_pixels(
        &pixels,
        3,
        |s| (32..=max).contains(&s),
        &format!("H, W in 32..={max}"),
        inputs,
    )?;
    let result = model.forward(pixels);
    let mut out = Tensors::default();
    put(&mut out, "logits", result.logits, output)?;
    for (i, f) in result.features.into_iter().enumerate() {
        put(&mut out, &format!("features.{i}"), f, output)?;
    }
    out.write(output)?;
    Ok(report)
}

/// Reads `query_embeds` `[B, Q, H]`, `encoder_hidden_states` `[B, N, E]` and optionally
/// `encoder_attention_mask` `[B, N]` (any numeric dtype, non-zero = attend); writes
/// `last_hidden_state` `[B, Q, H]`. Beyond HF's plain call: an optional `query_length` (one
/// integer) marks the tokens after it as text, and an optional `attention_mask` `[B, Q + T]`
/// masks the self-attention, as `Blip2QFormerModel(query_embeds, query_length,
/// attention_mask, ...)`.
pub fn qformer(
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
    device: &Device,
) -> Result<LoadReport, CheckpointError> {
    let (model, report) = load_qformer(checkpoint, device)?;
    let input = Inputs::read(inputs)?;
    let embeds = input.required("query_embeds", input.float::<3>("query_embeds", device)?)?;
    let mut encoder = input.required(
        "encoder_hidden_states",
        input.float::<3>("encoder_hidden_states", device)?,
    )?;
    let mut encoder_mask = input.float::<2>("encoder_attention_mask", device)?;
    check_nonempty(&embeds.dims(), "query_embeds", inputs)?;
    check_nonempty(&encoder.dims(), "encoder_hidden_states", inputs)?;
    let [b, length, width] = embeds.dims();
    let [eb, n, ew] = encoder.dims();
    let hidden = model.layernorm.gamma.dims()[0];
    let heads = model
        .encoder
        .layer
        .first()
        .map_or(1, |l| l.attention.attention.num_attention_heads);
    check_attention([b, heads, length, length.max(n)], "these inputs", inputs)?;
    if width != hidden {
        return Err(input.error(format!(
            "`query_embeds` has width {width}; the checkpoint's hidden_size is {hidden}"
        )));
    }
    if let Some(expected) = model.encoder_hidden_size()
        && ew != expected
    {
        return Err(input.error(format!(
            "`encoder_hidden_states` has width {ew}; the checkpoint's encoder_hidden_size is {expected}"
        )));
    }
    if eb != b && eb != 1 {
        return Err(input.error(format!(
            "`encoder_hidden_states` has batch {eb}; `query_embeds` has {b}"
        )));
    }
    if let Some(mask) = &encoder_mask
        && mask.dims() != [eb, n]
    {
        return Err(input.error(format!(
            "`encoder_attention_mask` has shape {:?}; expected [{eb}, {n}]",
            mask.dims()
        )));
    }
    // One image's features serve every query batch, as PyTorch's broadcasting does for HF.
    if eb == 1 && b > 1 {
        encoder = encoder.expand([b, n, ew]);
        encoder_mask = encoder_mask.map(|m| m.expand([b, n]));
    }
    let query_length = match input.values::<1>("query_length")? {
        Some((v, [1])) if v[0] >= 0.0 && v[0].fract() == 0.0 => v[0] as usize,
        Some(_) => {
            return Err(input.error("`query_length` must hold one non-negative integer".into()));
        }
        None => length,
    };
    let attention_mask = input.float::<2>("attention_mask", device)?;
    if let Some(mask) = &attention_mask
        && mask.dims() != [b, length]
    {
        return Err(input.error(format!(
            "`attention_mask` has shape {:?}; expected [{b}, {length}]",
            mask.dims()
        )));
    }
    let hidden = model
        .forward_multimodal(
            embeds,
            query_length,
            attention_mask.map(padding_bias),
            encoder,
            encoder_mask,
        )
        .map_err(|e| input.error(e.to_string()))?;
    let mut out = Tensors::default();
    put(&mut out, "last_hidden_state", hidden, output)?;
    out.write(output)?;
    Ok(report)
}

/// Reads `input_ids` `[B, T]` and optionally `attention_mask` and `token_type_ids` `[B, T]`;
/// writes `last_hidden_state` `[B, T, H]` and, when the checkpoint has a pooler,
/// `pooler_output` `[B, H]`.
pub fn bert(
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
    device: &Device,
) -> Result<LoadReport, CheckpointError> {
    let (model, report) = load_bert(checkpoint, device)?;
    let input = Inputs::read(inputs)?;
    let ids = input.required("input_ids", input.int::<2>("input_ids", device)?)?;
    let dims = ids.dims();
    check_nonempty(&dims, "input_ids", inputs)?;
    let mask = input.float::<2>("attention_mask", device)?;
    let types = input.int::<2>("token_type_ids", device)?;
    for (key, shape) in [
        ("attention_mask", mask.as_ref().map(|m| m.dims())),
        ("token_type_ids", types.as_ref().map(|t| t.dims())),
    ] {
        if let Some(shape) = shape
            && shape != dims
        {
            return Err(input.error(format!("`{key}` has shape {shape:?}; expected {dims:?}")));
        }
    }
    let positions = model.embeddings.position_embeddings.weight.dims()[0];
    if dims[1] > positions {
        return Err(input.error(format!(
            "{} tokens exceed the checkpoint's {positions} positions",
            dims[1]
        )));
    }
    let heads = model
        .encoder
        .layer
        .first()
        .map_or(1, |l| l.attention.attention.num_attention_heads);
    check_attention([dims[0], heads, dims[1], dims[1]], "these ids", inputs)?;
    let vocab = model.embeddings.word_embeddings.weight.dims()[0];
    check_ids(&input, "input_ids", &ids, vocab)?;
    if let Some(t) = &types {
        let types = model.embeddings.token_type_embeddings.weight.dims()[0];
        check_ids(&input, "token_type_ids", t, types)?;
    }
    let result = model.forward(ids, mask, types);
    let mut out = Tensors::default();
    put(
        &mut out,
        "last_hidden_state",
        result.last_hidden_state,
        output,
    )?;
    if let Some(pooled) = result.pooler_output {
        put(&mut out, "pooler_output", pooled, output)?;
    }
    out.write(output)?;
    Ok(report)
}

/// An id outside the embedding table would index out of bounds.
fn check_ids(
    input: &Inputs,
    key: &str,
    ids: &Tensor<2, Int>,
    size: usize,
) -> Result<(), CheckpointError> {
    let values = ids
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| input.error(format!("{e:?}")))?;
    match values.iter().find(|&&v| v < 0 || v as usize >= size) {
        Some(bad) => Err(input.error(format!("`{key}` holds {bad}, outside 0..{size}"))),
        None => Ok(()),
    }
}

/// Reads `input_ids` `[B, T]` and optionally `attention_mask` `[B, T]` (non-zero = a real
/// token); writes `logits` `[B, T, V]`. `checkpoint` is an HF folder or a `.gguf` file.
pub fn llama(
    checkpoint: &Path,
    inputs: &Path,
    output: &Path,
    device: &Device,
) -> Result<LoadReport, CheckpointError> {
    let (model, config, report) = super::llama::load_llm(checkpoint, device)?;
    let input = Inputs::read(inputs)?;
    let ids = input.required("input_ids", input.int::<2>("input_ids", device)?)?;
    let dims = ids.dims();
    check_nonempty(&dims, "input_ids", inputs)?;
    if dims[1] > config.max_position_embeddings {
        return Err(input.error(format!(
            "{} tokens exceed the checkpoint's {} positions",
            dims[1], config.max_position_embeddings
        )));
    }
    let mask = input.float::<2>("attention_mask", device)?;
    if let Some(shape) = mask.as_ref().map(|m| m.dims())
        && shape != dims
    {
        return Err(input.error(format!(
            "`attention_mask` has shape {shape:?}; expected {dims:?}"
        )));
    }
    check_attention(
        [dims[0], config.num_attention_heads, dims[1], dims[1]],
        "these ids",
        inputs,
    )?;
    let vocab = model.model.embed_tokens.weight.dims()[0];
    check_ids(&input, "input_ids", &ids, vocab)?;
    let mut out = Tensors::default();
    put(&mut out, "logits", model.forward(ids, mask), output)?;
    out.write(output)?;
    Ok(report)
}
