//! Autoregressive generation with a LLaMA, as HF `generate` does it: prompts left-padded into
//! one batch with positions counting real tokens only; per step the repetition penalty, then
//! temperature, top-k and top-p, then greedy choice or a seeded draw; stop tokens, stop
//! strings (through a caller's check on the decoded text) and a token budget. With the KV
//! cache each step feeds one token; without it the whole sequence is run again (the
//! reference the cache is tested against).

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::llama::{KvCache, LlamaForCausalLM};
use crate::config::Invalid;

/// The longest reply `validate` accepts; the KV cache grows with it.
pub const MAX_NEW_TOKENS: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// 0 decodes greedily; above 0, samples from the softened distribution.
    pub temperature: f32,
    /// Keep only the k most likely tokens when sampling (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p when sampling.
    pub top_p: Option<f32>,
    /// > 1 discourages tokens already in the prompt or the reply (CTRL's penalty, as HF).
    pub repetition_penalty: f32,
    pub seed: u64,
    pub use_cache: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
            use_cache: true,
        }
    }
}

impl GenerationConfig {
    /// Refuses what would make `choose` meaningless or unbounded: a NaN or negative
    /// temperature, top-k of 0, top-p outside (0, 1], a penalty that is not a positive number.
    /// `key` is where the config sits, e.g. `infer.generation`.
    pub fn validate(&self, key: &str) -> Result<(), Invalid> {
        let bad =
            |field: &str, message: String| Err(Invalid::new(format!("{key}.{field}"), message));
        if !(1..=MAX_NEW_TOKENS).contains(&self.max_new_tokens) {
            return bad(
                "max_new_tokens",
                format!("{} is outside 1..={MAX_NEW_TOKENS}", self.max_new_tokens),
            );
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!(
                    "{} is not a finite number >= 0 (0 = greedy)",
                    self.temperature
                ),
            );
        }
        if self.top_k == Some(0) {
            return bad("top_k", "must be at least 1 (or null: every token)".into());
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p", format!("{p} is outside (0, 1]"));
        }
        let penalty = self.repetition_penalty;
        if !(penalty > 0.0 && penalty.is_finite()) {
            return bad(
                "repetition_penalty",
                format!("{penalty} is not a positive number (1 = no penalty)"),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerateError {
    #[error("prompt {0} is empty")]
    EmptyPrompt(usize),
    #[error("no prompts")]
    NoPrompts,
    #[error("prompt {row} has {tokens} tokens; the model's context holds {context}")]
    TooLong {
        row: usize,
        tokens: usize,
        context: usize,
    },
    #[error("invalid generation setting `{}`: {}", .0.key, .0.message)]
    Invalid(Invalid),
}

/// Applies the penalty, temperature, top-k and top-p to one row of logits and picks a token.
pub fn choose(
    logits: &mut [f32],
    seen: &[u32],
    config: &GenerationConfig,
    rng: &mut impl Rng,
) -> u32 {
    if config.repetition_penalty != 1.0 {
        let mut done = std::collections::HashSet::new();
        for &t in seen {
            if let Some(l) = logits.get_mut(t as usize)
                && done.insert(t)
            {
                *l = if *l < 0.0 {
                    *l * config.repetition_penalty
                } else {
                    *l / config.repetition_penalty
                };
            }
        }
    }
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0 as u32
    };
    if config.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let keep = config.top_k.unwrap_or(order.len()).clamp(1, order.len());
    order.truncate(keep);
    let max = logits[order[0]];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (f64::from(logits[i] - max) / f64::from(config.temperature)).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = config.top_p {
        // The smallest prefix reaching top_p, at least one token.
        let mut sum = 0.0;
        let cut = probs
            .iter()
            .position(|p| {
                sum += p;
                sum >= f64::from(top_p)
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(cut);
        order.truncate(cut);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut draw: f64 = rng.random();
    for (&i, p) in order.iter().zip(&probs) {
        if draw < *p {
            return i as u32;
        }
        draw -= p;
    }
    order[order.len() - 1] as u32
}

fn last_logits(logits: Tensor<3>) -> Vec<Vec<f32>> {
    let [b, t, v] = logits.dims();
    let last: Vec<f32> = logits
        .narrow(1, t - 1, 1)
        .reshape([b * v])
        .into_data()
        .iter::<f32>()
        .collect();
    last.chunks(v).map(<[f32]>::to_vec).collect()
}

/// Generates a reply to each prompt (token ids, BOS included where the model wants it).
/// `stop_tokens` end a row (and are not returned); `stop(row, reply)` lets the caller end a row
/// on decoded text; `on_token(row, token)` sees each kept token as it is chosen. Returns the
/// reply ids of each row.
pub fn generate(
    model: &LlamaForCausalLM,
    prompts: &[Vec<u32>],
    stop_tokens: &[u32],
    config: &GenerationConfig,
    stop: impl FnMut(usize, &[u32]) -> bool + Send,
    on_token: impl FnMut(usize, u32) + Send,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(GenerateError::EmptyPrompt(i));
    }
    let device: Device = model.device();
    let prompts: Vec<EmbeddedPrompt> = prompts
        .iter()
        .map(|ids| {
            let data: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
            let ids_tensor =
                Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), &device);
            let h = model.hidden_size();
            EmbeddedPrompt {
                embeds: model.embed(ids_tensor).reshape([ids.len(), h]),
                seen: ids.clone(),
            }
        })
        .collect();
    generate_embedded(model, &prompts, stop_tokens, config, stop, on_token)
}

/// A prompt given as embeddings (token embeddings with visual tokens spliced in), with the
/// token ids it holds for the repetition penalty.
#[derive(Debug, Clone)]
pub struct EmbeddedPrompt {
    /// `[T, H]`.
    pub embeds: Tensor<2>,
    pub seen: Vec<u32>,
}

/// `generate` for prompts given as embeddings: multimodal prompts.
///
/// The loop runs on a thread of rayon's pool, where the products' own parallel loops
/// (`model::quant`, the flex backend's) split their work without waking a pool from outside
/// at each of them: a token of a 4-bit model is about 200 such products.
pub fn generate_embedded(
    model: &LlamaForCausalLM,
    prompts: &[EmbeddedPrompt],
    stop_tokens: &[u32],
    config: &GenerationConfig,
    stop: impl FnMut(usize, &[u32]) -> bool + Send,
    on_token: impl FnMut(usize, u32) + Send,
) -> Result<Vec<Vec<u32>>, GenerateError> {
    rayon::scope(|_| decode(model, prompts, stop_tokens, config, stop, on_token))
}

fn decode(
    model: &LlamaForCausalLM,
    prompts: &[EmbeddedPrompt],
    stop_tokens: &[u32],
    config: &GenerationConfig,
    mut stop: impl FnMut(usize, &[u32]) -> bool,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Vec<Vec<u32>>, GenerateError> {
    if prompts.is_empty() {
        return Err(GenerateError::NoPrompts);
    }
    config
        .validate("generation")
        .map_err(GenerateError::Invalid)?;
    if let Some(i) = prompts.iter().position(|p| p.embeds.dims()[0] == 0) {
        return Err(GenerateError::EmptyPrompt(i));
    }
    // A prompt beyond the context would still run (rotary positions have no end) but its
    // attention grows with the square of its length: 20k words took 24 GB.
    let context = model.max_position_embeddings;
    if let Some((row, p)) = prompts
        .iter()
        .enumerate()
        .find(|(_, p)| p.embeds.dims()[0] > context)
    {
        return Err(GenerateError::TooLong {
            row,
            tokens: p.embeds.dims()[0],
            context,
        });
    }
    let device: Device = model.device();
    let b = prompts.len();
    let h = model.hidden_size();
    let lengths: Vec<usize> = prompts.iter().map(|p| p.embeds.dims()[0]).collect();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    // Left padding: every row's next token is at the same column.
    let rows: Vec<Tensor<3>> = prompts
        .iter()
        .zip(&lengths)
        .map(|(p, &len)| {
            let row = if len < longest {
                Tensor::cat(
                    vec![
                        Tensor::<2>::zeros([longest - len, h], &device),
                        p.embeds.clone(),
                    ],
                    0,
                )
            } else {
                p.embeds.clone()
            };
            row.reshape([1, longest, h])
        })
        .collect();
    let mut embeds = Tensor::cat(rows, 0);
    let mut mask: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&len| {
            let mut row = vec![0.0; longest - len];
            row.extend(std::iter::repeat_n(1.0, len));
            row
        })
        .collect();
    let int = |rows: &[Vec<i64>]| {
        let t = rows[0].len();
        Tensor::<2, Int>::from_data(TensorData::new(rows.concat(), [rows.len(), t]), &device)
    };
    let positions = |mask: &[Vec<f32>], from: usize| -> Vec<Vec<i64>> {
        mask.iter()
            .map(|row| {
                let mut count = -1i64;
                row.iter()
                    .map(|&m| {
                        count += i64::from(m > 0.0);
                        count.max(0)
                    })
                    .skip(from)
                    .collect()
            })
            .collect()
    };
    let float = |rows: &[Vec<f32>]| {
        let t = rows[0].len();
        Tensor::<2>::from_data(TensorData::new(rows.concat(), [rows.len(), t]), &device)
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let mut cache = KvCache::new();
    let mut replies: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut fed = 0;
    for _ in 0..config.max_new_tokens.min(context - longest) {
        let total = embeds.dims()[1];
        let (from, cache_ref) = if config.use_cache {
            (fed, Some(&mut cache))
        } else {
            (0, None)
        };
        let hidden = model.hidden_states(
            embeds.clone().narrow(1, from, total - from),
            Some(float(&mask)),
            Some(int(&positions(&mask, from))),
            cache_ref,
        );
        fed = total;
        let t = hidden.dims()[1];
        let rows = last_logits(model.logits(hidden.narrow(1, t - 1, 1)));
        let mut chosen = Vec::with_capacity(b);
        for (row, mut logits) in rows.into_iter().enumerate() {
            let token = if done[row] {
                0
            } else {
                let seen: Vec<u32> = prompts[row]
                    .seen
                    .iter()
                    .chain(&replies[row])
                    .copied()
                    .collect();
                choose(&mut logits, &seen, config, &mut rng)
            };
            chosen.push(i64::from(token));
            mask[row].push(1.0);
            if done[row] {
                continue;
            }
            if stop_tokens.contains(&token) {
                done[row] = true;
                continue;
            }
            replies[row].push(token);
            on_token(row, token);
            if stop(row, &replies[row]) {
                done[row] = true;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        let next = model.embed(int(&chosen.iter().map(|&t| vec![t]).collect::<Vec<_>>()));
        embeds = Tensor::cat(vec![embeds, next], 1);
    }
    Ok(replies)
}
