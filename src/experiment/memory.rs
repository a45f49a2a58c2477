//! How much memory one rank of a training job needs (`inspect memory`, docs/memory_plan.md):
//! the bytes of frozen weights, trained weights, gradients, optimiser state, activations and
//! the process's fixed overhead, for the config's micro-batch, sequence length, precision,
//! activation checkpointing, number of ranks and ZeRO stage.
//!
//! The parameters are counted from the modules themselves: the job's model is built from its
//! config with Burn's lazy parameters (no weight is allocated, so a 7B model costs nothing)
//! and visited for shapes and trainability, with the stage's own `set_trainable`. Activations
//! are what Burn's autodiff keeps per token of each layer kind, in multiples of the layer's
//! widths (`SavedPerToken`), counted from the layers' forward code; the README shows the
//! predictions beside the peak RSS of three CPU runs.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::ExperimentConfig;
use crate::distributed::ZeroStage;
use crate::io::architectures::ArchitectureError;
use crate::model::bert::BertConfig;
use crate::model::llama::LlamaConfig;
use crate::model::pretrain::{PretrainHeadsConfig, PretrainModel};
use crate::model::score_head::ScoreHead;
use crate::model::vision::VisionConfig;
use crate::train::config::Precision;
use crate::train::finetune::{LlmTraining, Trainable};

/// Which stage is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryJob {
    Pretrain,
    Finetune,
}

/// The architectures a job reads from checkpoints rather than from its config.
#[derive(Debug, Clone)]
pub struct Architectures {
    /// The cue encoder (pretraining).
    pub text_encoder: BertConfig,
    /// The LLM (fine-tuning).
    pub llm: LlamaConfig,
}

/// Floats Burn's autodiff keeps per token of one layer, as multiples of the layer's widths:
/// `hidden` x H + `intermediate` x F + `scores` x heads x keys. Counted from the forward code
/// of each layer kind (every linear output an element-wise op reads, the norms' normalised
/// values, the feed-forward's gate, up, activation and product, the attention's scores,
/// exponentials and probabilities), and checked against the growth of a process's resident
/// memory per added layer on Burn 0.22.1's CPU backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavedPerToken {
    pub hidden: f64,
    pub intermediate: f64,
    pub scores: f64,
}

impl SavedPerToken {
    /// A LLaMA decoder layer (`model::llama`): RMSNorm x2, q/k/v with rotary, attention,
    /// o_proj, SwiGLU.
    pub const LLAMA: Self = Self {
        hidden: 6.6,
        intermediate: 5.1,
        scores: 3.0,
    };
    /// A BERT/Q-Former layer (`model::bert`): attention with LayerNorm after, GELU feed-forward.
    pub const BERT: Self = Self {
        hidden: 8.0,
        intermediate: 3.0,
        scores: 3.0,
    };

    fn floats(&self, hidden: usize, intermediate: usize, heads: usize, keys: usize) -> f64 {
        self.hidden * hidden as f64
            + self.intermediate * intermediate as f64
            + self.scores * (heads * keys) as f64
    }
}

/// What the process holds besides the model: the program, Burn's CPU thread pool, the
/// tokenizer and the allocator's own structures; measured as the resident memory of a run
/// just before it loads a weight.
const FIXED_OVERHEAD: u64 = 96 << 20;

/// What to size: a job, its ranks and the data's longest answers.
#[derive(Debug, Clone, Copy)]
pub struct MemoryQuery {
    pub job: MemoryJob,
    /// Data-parallel ranks, one process per device.
    pub ranks: usize,
    /// Each device's memory, to say whether the job fits.
    pub device_memory: Option<u64>,
    /// Fine-tuning: the most supervised tokens of a row; `None` takes every token.
    pub supervised_tokens: Option<usize>,
}

/// One rank's memory, by part.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryEstimate {
    pub job: MemoryJob,
    pub ranks: usize,
    pub precision: Precision,
    pub activation_checkpointing: bool,
    pub zero: ZeroStage,
    pub frozen_parameters: u64,
    pub trained_parameters: u64,
    pub frozen_weights_bytes: u64,
    pub trained_weights_bytes: u64,
    pub gradients_bytes: u64,
    pub optimizer_state_bytes: u64,
    pub activations_bytes: u64,
    pub overhead_bytes: u64,
    /// A training step's peak: the sum of the parts above.
    pub step_bytes: u64,
    /// The peak while a checkpoint is written: the weights, the optimiser state and the copy
    /// of it that Burn's optimiser record makes before writing it, and the overhead (the
    /// gradients and activations are gone by then).
    pub checkpoint_write_bytes: u64,
    /// The predicted peak of one rank's process: the larger of the two.
    pub per_device_bytes: u64,
    pub device_memory_bytes: Option<u64>,
    pub fits: Option<bool>,
    /// Tokens (fine-tuning) or images (pretraining) of one micro-batch.
    pub micro_batch: String,
    /// What the estimate takes for granted.
    pub assumptions: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("--ranks {ranks} does not divide {key} = {value}")]
    Ranks {
        ranks: usize,
        key: &'static str,
        value: usize,
    },
    #[error("--ranks must be at least 1")]
    NoRanks,
}

impl Architectures {
    /// The architectures `config`'s weights name, with where each was read.
    pub fn of(config: &ExperimentConfig) -> Result<(Self, Vec<String>), ArchitectureError> {
        let text = crate::io::architectures::text_encoder(&config.model.weights)?;
        let llm = crate::io::architectures::llm(&config.model.weights)?;
        Ok((
            Self {
                text_encoder: text.config,
                llm: llm.config,
            },
            vec![
                format!("text encoder from {}", text.source),
                format!("LLM from {}", llm.source),
            ],
        ))
    }
}

/// A fine-tuning model's parameters by the switch of `Trainable` that trains them.
#[derive(Debug, Default, Clone, Copy)]
struct FinetuneParts {
    mfam: u64,
    projector: u64,
    llm: u64,
    lora: u64,
}

impl FinetuneParts {
    /// Frozen and trained counts when `trainable` (the score heads, `heads`, always train).
    fn split(&self, trainable: &Trainable, heads: u64) -> Counts {
        let mut c = Counts {
            frozen: 0,
            trained: heads,
        };
        for (n, on) in [
            (self.mfam, trainable.mfam),
            (self.projector, trainable.projector),
            (self.llm, trainable.llm == LlmTraining::Full),
            (self.lora, trainable.llm == LlmTraining::Lora),
        ] {
            if on {
                c.trained += n;
            } else {
                c.frozen += n;
            }
        }
        c
    }
}

/// The parameters `train::finetune::set_trainable` switches, by its rule: the projections into
/// the LLM (`language_projection`, `thematic`) are the projector; the rest of the MFAM (queries,
/// adapters, Q-Formers) is `mfam`; LoRA adapters (rank r on each targeted linear of the LLM,
/// r x (in + out) values) are counted from the LLM's linears without building them.
fn finetune_parts(
    mfam: &crate::model::mfam::Mfam,
    llm: &crate::model::llama::LlamaForCausalLM,
    lora: &crate::model::lora::LoraConfig,
    uses_lora: bool,
) -> FinetuneParts {
    struct Mfam {
        path: Vec<String>,
        parts: FinetuneParts,
    }
    impl ModuleVisitor for Mfam {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements() as u64;
            let projector = self
                .path
                .iter()
                .any(|p| p == "language_projection" || p == "thematic");
            if projector {
                self.parts.projector += n;
            } else {
                self.parts.mfam += n;
            }
        }
    }
    struct Llm<'a> {
        path: Vec<String>,
        lora: &'a crate::model::lora::LoraConfig,
        uses_lora: bool,
        parts: FinetuneParts,
    }
    impl ModuleVisitor for Llm<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let shape = param.lazy_shape();
            self.parts.llm += shape.num_elements() as u64;
            // The linear's name is the innermost module (or the one outside `weight`).
            let targeted = self.path.iter().rev().take(2).any(|linear| {
                self.lora.target_modules.iter().any(|t| {
                    serde_json::to_value(t)
                        .ok()
                        .is_some_and(|v| v.as_str() == Some(linear.as_str()))
                })
            });
            let weight = D == 2 && self.path.iter().any(|p| p == "layers");
            if self.uses_lora && targeted && weight {
                let dims = shape.as_slice();
                self.parts.lora += (self.lora.rank * (dims[0] + dims[1])) as u64;
            }
        }
    }
    let mut m = Mfam {
        path: Vec::new(),
        parts: FinetuneParts::default(),
    };
    mfam.visit(&mut m);
    let mut l = Llm {
        path: Vec::new(),
        lora,
        uses_lora,
        parts: m.parts,
    };
    llm.visit(&mut l);
    l.parts
}

/// Counts of a module's parameters by trainability (lazy parameters are not initialised).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    frozen: u64,
    trained: u64,
}

fn count<M: Module>(module: &M) -> Counts {
    struct Visit(Counts);
    impl ModuleVisitor for Visit {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements() as u64;
            if param.is_require_grad() {
                self.0.trained += n;
            } else {
                self.0.frozen += n;
            }
        }
    }
    let mut visit = Visit(Counts::default());
    module.visit(&mut visit);
    visit.0
}

fn frozen<M: Module>(module: &M) -> u64 {
    let c = count(module);
    c.frozen + c.trained
}

fn vision_parameters(vision: &VisionConfig, device: &Device) -> u64 {
    match vision {
        VisionConfig::EfficientnetLite0(c) => frozen(&c.init(device)),
        VisionConfig::Clip(c) => frozen(&c.init(device)),
    }
}

/// The estimate for `job` under `config` on `ranks` ranks of `device_memory` bytes each.
pub fn estimate(
    config: &ExperimentConfig,
    architectures: &Architectures,
    query: &MemoryQuery,
) -> Result<MemoryEstimate, MemoryError> {
    let MemoryQuery {
        job,
        ranks,
        device_memory,
        supervised_tokens,
    } = *query;
    if ranks == 0 {
        return Err(MemoryError::NoRanks);
    }
    // Lazy parameters: shapes without storage.
    let device = crate::device::DeviceSpec::Cpu
        .device()
        .unwrap_or_default()
        .autodiff();
    let train = &config.train;
    let zero = config.distributed.zero;
    let (accumulation, key) = match job {
        MemoryJob::Pretrain => (
            config.pretrain.gradient_accumulation,
            "pretrain.gradient_accumulation",
        ),
        MemoryJob::Finetune => (
            config.finetune.gradient_accumulation,
            "finetune.gradient_accumulation",
        ),
    };
    if !accumulation.is_multiple_of(ranks) {
        return Err(MemoryError::Ranks {
            ranks,
            key,
            value: accumulation,
        });
    }
    let mut assumptions = Vec::new();
    let vision = vision_parameters(&config.model.vision, &device);
    let mfam = config.model.mfam.init(&config.model.vision, &device);
    let qf = &config.model.mfam.qformer;
    let shapes = config.model.vision.hidden_state_shapes();
    let levels: Vec<(usize, usize)> = config
        .model
        .mfam
        .levels()
        .into_iter()
        .filter(|(_, l)| l.enabled)
        .map(|(_, l)| {
            // Image tokens the level's Q-Former cross-attends to: its layers' states
            // concatenated.
            let tokens = l
                .layers
                .iter()
                .filter_map(|&i| shapes.get(i).map(|s| s.0))
                .sum::<usize>();
            (l.num_query_tokens, tokens)
        })
        .collect();
    let cross_layers = qf
        .num_hidden_layers
        .div_ceil(qf.cross_attention_frequency.max(1));
    // Per image: the Q-Formers' query tokens, their cross-attention's keys and values over the
    // image tokens, and the encoder states they read.
    let mfam_floats_per_image: f64 = levels
        .iter()
        .map(|&(queries, tokens)| {
            let per_query = SavedPerToken::BERT.floats(
                qf.hidden_size,
                qf.intermediate_size,
                qf.num_attention_heads,
                queries,
            );
            let cross = SavedPerToken::BERT.scores * (qf.num_attention_heads * tokens) as f64
                + 2.0 * qf.hidden_size as f64;
            let layers = if train.activation_checkpointing {
                qf.hidden_size as f64 * qf.num_hidden_layers as f64 + per_query + cross
            } else {
                per_query * qf.num_hidden_layers as f64 + cross * cross_layers as f64
            };
            queries as f64 * layers
                + (cross_layers as f64 * 2.0 * qf.hidden_size as f64) * tokens as f64
        })
        .sum();
    let encoder_floats_per_image: f64 = shapes
        .iter()
        .map(|&(tokens, width)| (tokens * width) as f64)
        .sum();

    let (frozen_params, trained_params, activations, micro_batch, encoders) = match job {
        MemoryJob::Pretrain => {
            let text = frozen(&architectures.text_encoder.init(false, &device));
            let heads = PretrainHeadsConfig {
                text_dim: architectures.text_encoder.hidden_size,
                low_attributes: crate::data::attributes::LOW_NAMES.len(),
                middle_attributes: crate::data::attributes::MIDDLE_NAMES.len(),
            };
            let model = PretrainModel::init(mfam, &config.model.mfam, &heads, &device);
            let c = count(&model);
            // Each photo and its degraded copy.
            let images = 2 * config.data.loader.batch_size;
            let floats = images as f64 * (mfam_floats_per_image + encoder_floats_per_image);
            assumptions.push(format!(
                "each micro-batch: {} photos and their degraded copies through the MFAM",
                config.data.loader.batch_size
            ));
            (
                vision + text + c.frozen,
                c.trained,
                floats,
                format!("{images} images"),
                vision + text,
            )
        }
        MemoryJob::Finetune => {
            let f = &config.finetune;
            let llm_config = &architectures.llm;
            // Adam's state outlives a stage: what any stage trains is held to the end.
            let mut union = Trainable {
                mfam: false,
                projector: false,
                llm: LlmTraining::Frozen,
            };
            for stage in &f.stages {
                let t = &stage.trainable;
                union.mfam |= t.mfam;
                union.projector |= t.projector;
                union.llm = match (union.llm, t.llm) {
                    (LlmTraining::Full, _) | (_, LlmTraining::Full) => LlmTraining::Full,
                    (LlmTraining::Lora, _) | (_, LlmTraining::Lora) => LlmTraining::Lora,
                    _ => LlmTraining::Frozen,
                };
            }
            let parts = finetune_parts(&mfam, &llm_config.init(&device), &f.lora, f.uses_lora());
            let heads = if f.score_heads.enabled() {
                frozen(&ScoreHead::new(config.model.mfam.llm_hidden_size, &device))
            } else {
                0
            };
            let c = parts.split(&union, heads);
            let visual: usize = config
                .model
                .mfam
                .group_lengths(&config.model.vision)
                .iter()
                .map(|(_, n)| n)
                .sum();
            let b = f.batch_size;
            let t = f.max_length;
            let tokens = (b * t) as f64;
            let l = llm_config;
            let per_layer = SavedPerToken::LLAMA.floats(
                l.hidden_size,
                l.intermediate_size,
                l.num_attention_heads,
                t,
            ) + if union.llm == LlmTraining::Lora {
                7.0 * f.lora.rank as f64
            } else {
                0.0
            };
            let layers = l.num_hidden_layers as f64;
            let llm_floats = if train.activation_checkpointing {
                tokens * (l.hidden_size as f64 * layers + per_layer)
            } else {
                tokens * per_layer * layers
            };
            // The head runs at supervised positions only: logits and log-probabilities.
            let supervised = supervised_tokens.unwrap_or(t).min(t);
            let head = (b * supervised) as f64 * 2.0 * l.vocab_size as f64;
            // One image per conversation at most, in the built-in tasks.
            let images = b as f64;
            let mfam_floats = images * (mfam_floats_per_image + encoder_floats_per_image);
            let embeds = tokens * 2.0 * l.hidden_size as f64;
            assumptions.push(match supervised_tokens {
                None => format!(
                    "every row {t} tokens long (finetune.max_length; {visual} of them visual) and every token supervised: an upper bound"
                ),
                Some(_) => format!(
                    "every row {t} tokens long (finetune.max_length; {visual} of them visual), {supervised} of them supervised"
                ),
            });
            (
                vision + c.frozen,
                c.trained,
                llm_floats + head + mfam_floats + embeds,
                format!("{b} x {t} tokens"),
                vision,
            )
        }
    };

    let bf16 = train.precision == Precision::Bf16;
    // bf16 keeps the matrix products' inputs at 2 bytes; about half the saved tensors are.
    let activation_bytes_per_float = if bf16 { 3.0 } else { 4.0 };
    let activations_bytes = (activations * activation_bytes_per_float) as u64;
    let trained_weights = trained_params * 4;
    // In bf16 each micro-batch multiplies by a bf16 copy of every weight it uses, frozen ones
    // included (the frozen encoders stay f32), held until its backward pass.
    let bf16_copies = if bf16 {
        (trained_params + frozen_params.saturating_sub(encoders)) * 2
    } else {
        0
    };
    let activations_bytes = activations_bytes + bf16_copies;
    let sharded = ranks > 1 && zero != ZeroStage::None;
    let shards = if sharded { ranks as u64 } else { 1 };
    let gradients = gradient_bytes(trained_params * 4, accumulation / ranks, ranks, zero);
    let optimizer = trained_params * 8 / shards;
    let frozen_weights = frozen_params * 4;
    let loader = {
        // Micro-batches built ahead (their encoder states) and one being built.
        let per_image = encoder_floats_per_image * 4.0;
        let images = match job {
            MemoryJob::Pretrain => 2 * config.data.loader.batch_size,
            MemoryJob::Finetune => config.finetune.batch_size,
        };
        (per_image * images as f64 * (config.data.loader.prefetch_batches.max(1) + 1) as f64) as u64
    };
    let overhead = FIXED_OVERHEAD + loader;
    let step =
        frozen_weights + trained_weights + gradients + optimizer + activations_bytes + overhead;
    let checkpoint_write = frozen_weights + trained_weights + 2 * optimizer + overhead;
    let per_device = step.max(checkpoint_write);
    if bf16 {
        assumptions.push(
            "bf16: f32 master weights, gradients and Adam state, and a bf16 copy of every weight a micro-batch multiplies (counted with the activations)".into(),
        );
    }
    Ok(MemoryEstimate {
        job,
        ranks,
        precision: train.precision,
        activation_checkpointing: train.activation_checkpointing,
        zero,
        frozen_parameters: frozen_params,
        trained_parameters: trained_params,
        frozen_weights_bytes: frozen_weights,
        trained_weights_bytes: trained_weights,
        gradients_bytes: gradients,
        optimizer_state_bytes: optimizer,
        activations_bytes,
        overhead_bytes: overhead,
        step_bytes: step,
        checkpoint_write_bytes: checkpoint_write,
        per_device_bytes: per_device,
        device_memory_bytes: device_memory,
        fits: device_memory.map(|m| per_device <= m),
        micro_batch,
        assumptions,
    })
}

/// The most gradient bytes one rank holds at once, `whole` being one f32 gradient of every
/// trained parameter and `local` the micro-batches it computes per step (`trainer::Pairwise`,
/// `train::replicas`).
fn gradient_bytes(whole: u64, local: usize, ranks: usize, zero: ZeroStage) -> u64 {
    let ranks = ranks.max(1) as u64;
    if ranks > 1 && zero == ZeroStage::Gradients {
        // A micro-batch's gradients, then the reduction's buffer that replaces them, beside
        // the running sum of this rank's share.
        return whole + whole / ranks;
    }
    // The partial sums of the step's micro-batches (a binary counter keeps one per set bit of
    // the micro-batches added so far) and the newest micro-batch's gradients.
    let partials = (0..local).map(|k| k.count_ones()).max().unwrap_or(0) as u64 + 1;
    let reduction = match (ranks > 1, zero) {
        (false, _) => 0,
        // The buffer replaces the gradients as they are packed; the summed gradients are then
        // rebuilt from it: two wholes.
        (true, ZeroStage::None) => 2 * whole,
        // The buffer, then this rank's segment of it rebuilt as gradients.
        (true, _) => whole + whole / ranks,
    };
    (partials * whole).max(reduction)
}

/// `80GB`, `24GiB`, `512MB` or a number of bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 80GB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, MB, GB, GiB, ...)"
            ));
        }
    };
    let bytes = value * scale;
    if !(1.0..=1e18).contains(&bytes) {
        return Err(format!("{text:?}: out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::{FinetuneParts, count, finetune_parts, parse_bytes};
    use crate::model::calm::Calm;
    use crate::model::llama::LlamaConfig;
    use crate::model::lora::LoraConfig;
    use crate::model::score_head::ScoreHead;
    use crate::train::finetune::{LlmTraining, Trainable, set_trainable};

    /// The estimator's rule for what each `Trainable` switch trains is `set_trainable`'s: on a
    /// small model, the counts it derives without building adapters equal those of the model
    /// built with them and switched by `set_trainable`.
    #[test]
    fn trainable_counts_follow_set_trainable() {
        let device = crate::device::DeviceSpec::Cpu
            .device()
            .unwrap_or_default()
            .autodiff();
        let vision = crate::model::VisionConfig::default();
        let mfam_config = crate::model::MfamConfig {
            llm_hidden_size: 32,
            ..Default::default()
        };
        let llm_config = LlamaConfig {
            vocab_size: 100,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            ..LlamaConfig::default()
        };
        let lora = LoraConfig::default();
        let mfam = mfam_config.init(&vision, &device);
        let llm = llm_config.init(&device);
        let parts: FinetuneParts = finetune_parts(&mfam, &llm, &lora, true);
        let head = ScoreHead::new(32, &device);
        let heads = count(&head).trained + count(&head).frozen;
        let model = Calm {
            mfam,
            llm: llm.with_lora(&lora, &device),
            score_head: Some(head),
        };
        for (mfam, projector) in [(false, false), (true, false), (false, true), (true, true)] {
            for llm in [LlmTraining::Frozen, LlmTraining::Lora, LlmTraining::Full] {
                let t = Trainable {
                    mfam,
                    projector,
                    llm,
                };
                let built = count(&set_trainable(model.clone(), &t));
                let derived = parts.split(&t, heads);
                assert_eq!(
                    (derived.frozen, derived.trained),
                    (built.frozen, built.trained),
                    "{t:?}"
                );
            }
        }
    }

    #[test]
    fn sizes_read_in_decimal_and_binary_units() {
        assert_eq!(parse_bytes("80GB"), Ok(80_000_000_000));
        assert_eq!(parse_bytes("24GiB"), Ok(24 << 30));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("80 parsecs").is_err());
        assert!(parse_bytes("-1GB").is_err());
    }
}
