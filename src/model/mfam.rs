//! Multi-scale Feature Alignment Module (CALM, Liu et al., AAAI 2025): three Q-Formers with
//! low-, middle- and high-level queries, each reading its own encoder depths, plus a thematic
//! branch that projects the final layer. The LLM sees the groups as `<low> <middle> <high>
//! <thematic>`.
//!
//! Our choices where the paper is silent (docs/design.md §2): each level concatenates the tokens of
//! the encoder depths it reads along the sequence axis; depths narrower or wider than the
//! encoder's final layer first pass through a linear adapter to that width, so one
//! cross-attention shape serves every level (and weights can be shared across levels). Each
//! level has its own learnable queries (BLIP-2's N(0, 0.02)) and its own projection into the
//! LLM width (BLIP-2's `language_projection`); the thematic branch projects every token of
//! the final layer, as LLaVA's `mm_projector`.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::gelu;
use burn::tensor::module::{adaptive_avg_pool1d, adaptive_avg_pool2d};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use super::bert::{Bert, bert_linear};
use super::precision::{Precision, lin};
use super::qformer::{QFormer, QFormerConfig, QFormerError};
use super::vision::VisionConfig;
use super::{divisible, limits, parameters_within, size_within};
use crate::config::Invalid;

/// One aesthetic level: which encoder hidden states it reads and how many queries it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LevelConfig {
    pub enabled: bool,
    pub layers: Vec<usize>,
    pub num_query_tokens: usize,
    /// Average the queries down to `pool` visual tokens before the projection into the LLM,
    /// as PyTorch's `AdaptiveAvgPool1d` does (token i averages queries `floor(i Q / P)` to
    /// `ceil((i + 1) Q / P)`); `null`, or a `pool` of at least `num_query_tokens`, gives the
    /// LLM every query, as BLIP-2 does. Pretraining reads the queries themselves, so this
    /// changes no weight: it sets the fine-tuning's price per image, every LLM token costing
    /// the same.
    pub pool: Option<usize>,
}

impl LevelConfig {
    fn with_layers(layers: &[usize]) -> Self {
        Self {
            enabled: true,
            layers: layers.to_vec(),
            num_query_tokens: 16,
            pool: None,
        }
    }

    /// Visual tokens the level gives the LLM (0 when disabled).
    pub fn tokens(&self) -> usize {
        match (self.enabled, self.pool) {
            (false, _) => 0,
            (true, Some(pool)) => pool.min(self.num_query_tokens),
            (true, None) => self.num_query_tokens,
        }
    }
}

impl Default for LevelConfig {
    fn default() -> Self {
        Self::with_layers(&[])
    }
}

/// How the thematic branch maps the final encoder layer into the LLM width (LLaVA's
/// `mm_projector_type`: `linear` in LLaVA-1, `mlp2x_gelu` in LLaVA-1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorKind {
    Linear,
    Mlp2xGelu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThematicConfig {
    pub enabled: bool,
    pub projector: ProjectorKind,
    /// Average-pool the final layer's token grid to `pool` x `pool` tokens before projecting
    /// (a leading CLS token is dropped); `null` projects every token, as LLaVA does. The
    /// default keeps the LLM's input short on a CPU: 4 tokens instead of EfficientNet's 49.
    pub pool: Option<usize>,
}

impl Default for ThematicConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            projector: ProjectorKind::Mlp2xGelu,
            pool: Some(2),
        }
    }
}

/// The side of a square token grid of `tokens` tokens, and how many leading tokens (a CLS)
/// precede it.
pub fn token_grid(tokens: usize) -> Option<(usize, usize)> {
    let side = |n: usize| {
        let s = (n as f64).sqrt().round() as usize;
        (s * s == n && s > 0).then_some(s)
    };
    side(tokens)
        .map(|s| (0, s))
        .or_else(|| tokens.checked_sub(1).and_then(side).map(|s| (1, s)))
}

/// Whether the three levels run one Q-Former (each with its own queries) or one each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QFormerWeights {
    Separate,
    Shared,
}

/// The defaults are the CPU-sized model of the main job: they read EfficientNet-Lite0's
/// stages (0..7), shallow (stage 2, 28x28 at 224 px), middle and deep, with 16 queries a
/// level (averaged to 4 tokens each for the LLM) and two-layer Q-Formers initialised from
/// MiniLM's first layers. Stage 1 (56x56) would make the low level's cross-attention 4x
/// costlier. Full-scale configs set BLIP-2's sizes (32 queries, 12 layers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfamConfig {
    pub low: LevelConfig,
    pub middle: LevelConfig,
    pub high: LevelConfig,
    pub thematic: ThematicConfig,
    pub qformer: QFormerConfig,
    pub qformer_weights: QFormerWeights,
    /// Width of the LLM's token embeddings, the output width of every branch. The default is
    /// SmolLM2-135M's (576), the LLM that runs here; Vicuna-7B's is 4096.
    pub llm_hidden_size: usize,
}

impl Default for MfamConfig {
    fn default() -> Self {
        // 4 tokens a level: an image is then 16 LLM tokens instead of 52, so the built-in
        // fine-tuning sees twice the conversations in its CPU budget (README, built-in job).
        let level = |layers: &[usize]| LevelConfig {
            pool: Some(4),
            ..LevelConfig::with_layers(layers)
        };
        Self {
            low: level(&[2]),
            middle: level(&[3, 4]),
            high: level(&[5, 6]),
            thematic: ThematicConfig::default(),
            qformer: QFormerConfig {
                num_hidden_layers: 2,
                ..QFormerConfig::default()
            },
            qformer_weights: QFormerWeights::Separate,
            llm_hidden_size: 576,
        }
    }
}

/// The four token groups, in the order the LLM sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Low,
    Middle,
    High,
    Thematic,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Low, Group::Middle, Group::High, Group::Thematic];

    /// Its key in configs and reports, as serde writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Middle => "middle",
            Self::High => "high",
            Self::Thematic => "thematic",
        }
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl MfamConfig {
    /// The three depth levels with their groups (whose `name` is their config key).
    pub fn levels(&self) -> [(Group, &LevelConfig); 3] {
        [
            (Group::Low, &self.low),
            (Group::Middle, &self.middle),
            (Group::High, &self.high),
        ]
    }

    /// The same configuration without its token pooling (`pool` of the levels and of the
    /// thematic branch): two MFAMs whose configs agree on this hold the same weights.
    pub fn without_pooling(&self) -> Self {
        let mut c = self.clone();
        for level in [&mut c.low, &mut c.middle, &mut c.high] {
            level.pool = None;
        }
        c.thematic.pool = None;
        c
    }

    /// Tokens per group (0 for a disabled one) for images of the encoder's configured size, in
    /// the order low, middle, high, thematic.
    pub fn group_lengths(&self, vision: &VisionConfig) -> [(Group, usize); 4] {
        let shapes = vision.hidden_state_shapes();
        let level = LevelConfig::tokens;
        let thematic = match (self.thematic.enabled, shapes.last(), self.thematic.pool) {
            (true, Some(_), Some(side)) => side * side,
            (true, Some(&(tokens, _)), None) => tokens,
            _ => 0,
        };
        [
            (Group::Low, level(&self.low)),
            (Group::Middle, level(&self.middle)),
            (Group::High, level(&self.high)),
            (Group::Thematic, thematic),
        ]
    }

    /// A freshly initialised MFAM for `vision`'s hidden states: Q-Formers with BERT's init,
    /// queries from N(0, 0.02).
    pub fn init(&self, vision: &VisionConfig, device: &Device) -> Mfam {
        self.build(vision, device, |width| {
            Ok::<_, std::convert::Infallible>(self.qformer.init(width, device))
        })
        .unwrap_or_else(|never: std::convert::Infallible| match never {})
    }

    /// As `init`, with every Q-Former initialised from `bert` as BLIP-2 does (see
    /// `QFormerConfig::init_from_bert`).
    pub fn init_from_bert(
        &self,
        vision: &VisionConfig,
        bert: &Bert,
        device: &Device,
    ) -> Result<Mfam, QFormerError> {
        self.build(vision, device, |width| {
            self.qformer.init_from_bert(bert, width, device)
        })
    }

    fn build<E>(
        &self,
        vision: &VisionConfig,
        device: &Device,
        mut qformer: impl FnMut(usize) -> Result<QFormer, E>,
    ) -> Result<Mfam, E> {
        let shapes = vision.hidden_state_shapes();
        let memory = shapes.last().map(|&(_, w)| w).unwrap_or(0);
        let h = self.qformer.hidden_size;
        let shared = match self.qformer_weights {
            QFormerWeights::Shared => Some(qformer(memory)?),
            QFormerWeights::Separate => None,
        };
        let mut branch = |level: &LevelConfig| -> Result<Option<Branch>, E> {
            if !level.enabled {
                return Ok(None);
            }
            let adapters = level
                .layers
                .iter()
                .map(|&id| {
                    let width = shapes.get(id).map(|&(_, w)| w).unwrap_or(memory);
                    (width != memory).then(|| bert_linear(width, memory, device))
                })
                .collect();
            Ok(Some(Branch {
                query_tokens: Param::from_tensor(Tensor::random(
                    [1, level.num_query_tokens, h],
                    Distribution::Normal(0.0, 0.02),
                    device,
                )),
                adapters,
                qformer: match shared {
                    Some(_) => None,
                    None => Some(qformer(memory)?),
                },
                language_projection: bert_linear(h, self.llm_hidden_size, device),
                layers: level.layers.clone(),
                pool: level.pool,
            }))
        };
        let low = branch(&self.low)?;
        let middle = branch(&self.middle)?;
        let high = branch(&self.high)?;
        let d = self.llm_hidden_size;
        let thematic = self.thematic.enabled.then(|| Projector {
            linear_1: bert_linear(memory, d, device),
            linear_2: match self.thematic.projector {
                ProjectorKind::Linear => None,
                ProjectorKind::Mlp2xGelu => Some(bert_linear(d, d, device)),
            },
            pool: self.thematic.pool,
        });
        Ok(Mfam {
            low,
            middle,
            high,
            qformer: shared,
            thematic,
            precision: Precision::F32,
        })
    }

    /// About how many parameters `init` makes for `vision`: the matrices, not the biases and
    /// norms, which is what `validate` needs to refuse sizes no machine could hold.
    pub fn parameter_count(&self, vision: &VisionConfig) -> u128 {
        let shapes = vision.hidden_state_shapes();
        let memory = shapes.last().map_or(0, |&(_, w)| w) as u128;
        let (h, d) = (
            self.qformer.hidden_size as u128,
            self.llm_hidden_size as u128,
        );
        let qformer = self.qformer.parameter_count(memory as usize);
        let mut count = match self.qformer_weights {
            QFormerWeights::Shared => qformer,
            QFormerWeights::Separate => 0,
        };
        for (_, level) in self.levels().into_iter().filter(|(_, l)| l.enabled) {
            count += level.num_query_tokens as u128 * h + h * d;
            count += level
                .layers
                .iter()
                .map(|&id| shapes.get(id).map_or(0, |&(_, w)| w as u128) * memory)
                .sum::<u128>();
            if self.qformer_weights == QFormerWeights::Separate {
                count += qformer;
            }
        }
        if self.thematic.enabled {
            count += memory * d + d * d;
        }
        count
    }

    pub(crate) fn validate_against(&self, vision: &VisionConfig) -> Result<(), Invalid> {
        let q = &self.qformer;
        q.validate("model.mfam.qformer")?;
        size_within(
            "model.mfam.llm_hidden_size",
            self.llm_hidden_size,
            limits::WIDTH,
        )?;
        for (group, level) in self.levels() {
            if level.enabled {
                size_within(
                    &format!("model.mfam.{}.num_query_tokens", group.name()),
                    level.num_query_tokens,
                    limits::QUERY_TOKENS,
                )?;
            }
        }
        parameters_within("model.mfam", self.parameter_count(vision))?;
        divisible(
            "model.mfam.qformer.hidden_size",
            q.hidden_size,
            "model.mfam.qformer.num_attention_heads",
            q.num_attention_heads,
        )?;
        if self.llm_hidden_size == 0 {
            return Err(Invalid::new(
                "model.mfam.llm_hidden_size",
                "must be at least 1",
            ));
        }
        if q.num_hidden_layers == 0 {
            return Err(Invalid::new(
                "model.mfam.qformer.num_hidden_layers",
                "must be at least 1",
            ));
        }
        if q.cross_attention_frequency == 0 {
            return Err(Invalid::new(
                "model.mfam.qformer.cross_attention_frequency",
                "must be at least 1 (1 = cross-attention in every layer)",
            ));
        }
        let depth = vision.num_hidden_states();
        for (group, level) in self.levels() {
            let name = group.name();
            if !level.enabled {
                continue;
            }
            if level.layers.is_empty() {
                return Err(Invalid::new(
                    format!("model.mfam.{name}.layers"),
                    "an enabled level must read at least one encoder layer",
                ));
            }
            if let Some(bad) = level.layers.iter().find(|&&id| id >= depth) {
                return Err(Invalid::new(
                    format!("model.mfam.{name}.layers"),
                    format!(
                        "layer id {bad} is out of range: the encoder has {depth} hidden states (0..={})",
                        depth - 1
                    ),
                ));
            }
            if level.num_query_tokens == 0 {
                return Err(Invalid::new(
                    format!("model.mfam.{name}.num_query_tokens"),
                    "an enabled level needs at least one query token",
                ));
            }
            if level.pool == Some(0) {
                return Err(Invalid::new(
                    format!("model.mfam.{name}.pool"),
                    "must be at least 1 (or null: every query)",
                ));
            }
        }
        if let (true, Some(pool)) = (self.thematic.enabled, self.thematic.pool) {
            let tokens = vision.hidden_state_shapes().last().map_or(0, |&(t, _)| t);
            match token_grid(tokens) {
                Some((_, side)) if (1..=side).contains(&pool) => {}
                _ => {
                    return Err(Invalid::new(
                        "model.mfam.thematic.pool",
                        format!(
                            "{pool} does not fit the final layer's {tokens} tokens (a square grid of side >= {pool}, after an optional CLS)"
                        ),
                    ));
                }
            }
        }
        if !self.thematic.enabled && self.levels().iter().all(|(_, l)| !l.enabled) {
            return Err(Invalid::new(
                "model.mfam",
                "every branch is disabled: enable at least one level or the thematic branch",
            ));
        }
        Ok(())
    }
}

/// One level: its queries, the adapters of the depths it reads, its Q-Former (absent when the
/// levels share one) and its projection into the LLM width.
#[derive(Module, Debug)]
pub struct Branch {
    /// `[1, Q, H]`.
    pub query_tokens: Param<Tensor<3>>,
    /// One per depth read; `None` where the depth already has the final layer's width.
    pub adapters: Vec<Option<Linear>>,
    pub qformer: Option<QFormer>,
    pub language_projection: Linear,
    #[module(skip)]
    pub layers: Vec<usize>,
    #[module(skip)]
    pub pool: Option<usize>,
}

/// LLaVA's `mm_projector`: `linear_1`, then GELU and `linear_2` for `mlp2x_gelu`.
#[derive(Module, Debug)]
pub struct Projector {
    pub linear_1: Linear,
    pub linear_2: Option<Linear>,
    #[module(skip)]
    pub pool: Option<usize>,
}

impl Projector {
    /// `[B, N, E]` -> `[B, N', D]`: N' = `pool`² with pooling, else N.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_in(x, Precision::F32)
    }

    /// `forward` with its products in `precision` (GELU in f32).
    pub fn forward_in(&self, x: Tensor<3>, precision: Precision) -> Tensor<3> {
        let x = match (self.pool, token_grid(x.dims()[1])) {
            (Some(pool), Some((skip, side))) => {
                let [b, n, e] = x.dims();
                let grid = x
                    .narrow(1, skip, n - skip)
                    .swap_dims(1, 2)
                    .reshape([b, e, side, side]);
                adaptive_avg_pool2d(grid, [pool, pool])
                    .reshape([b, e, pool * pool])
                    .swap_dims(1, 2)
            }
            _ => x,
        };
        self.project(x, precision)
    }

    fn project(&self, x: Tensor<3>, precision: Precision) -> Tensor<3> {
        let x = lin(&self.linear_1, x, precision);
        match &self.linear_2 {
            Some(l) => lin(l, gelu(x), precision),
            None => x,
        }
    }
}

#[derive(Module, Debug)]
pub struct Mfam {
    pub low: Option<Branch>,
    pub middle: Option<Branch>,
    pub high: Option<Branch>,
    /// The one Q-Former of `qformer_weights: shared`.
    pub qformer: Option<QFormer>,
    pub thematic: Option<Projector>,
    /// The arithmetic of the products (`with_precision`). A runtime setting, not a weight.
    #[module(skip)]
    pub precision: Precision,
}

/// One level's result.
#[derive(Debug, Clone)]
pub struct LevelOutput {
    /// The Q-Former's `last_hidden_state` `[B, Q, H]`, what pretraining aligns with text.
    pub queries: Tensor<3>,
    /// `[B, P, D]` in the LLM width: the queries, averaged to `P = pool` when pooled.
    pub tokens: Tensor<3>,
}

#[derive(Debug, Clone)]
pub struct MfamOutput {
    pub low: Option<LevelOutput>,
    pub middle: Option<LevelOutput>,
    pub high: Option<LevelOutput>,
    /// `[B, N, D]`: the final encoder layer's N tokens, projected.
    pub thematic: Option<Tensor<3>>,
}

impl MfamOutput {
    pub fn group(&self, group: Group) -> Option<Tensor<3>> {
        match group {
            Group::Low => self.low.as_ref().map(|l| l.tokens.clone()),
            Group::Middle => self.middle.as_ref().map(|l| l.tokens.clone()),
            Group::High => self.high.as_ref().map(|l| l.tokens.clone()),
            Group::Thematic => self.thematic.clone(),
        }
    }

    /// Tokens per group, in the order low, middle, high, thematic (0 when disabled).
    pub fn lengths(&self) -> [(Group, usize); 4] {
        Group::ALL.map(|g| (g, self.group(g).map_or(0, |t| t.dims()[1])))
    }

    /// The visual tokens the LLM reads: `[B, low + middle + high + thematic, D]`.
    pub fn tokens(&self) -> Tensor<3> {
        Tensor::cat(
            Group::ALL.iter().filter_map(|&g| self.group(g)).collect(),
            1,
        )
    }
}

impl Mfam {
    /// `hidden_states`: the frozen encoder's outputs, one `[B, T_i, E_i]` per depth (as
    /// `FrozenEncoder::forward` returns them; the config was validated against that encoder)
    /// -> the four token groups.
    pub fn forward(&self, hidden_states: &[Tensor<3>]) -> MfamOutput {
        // Every branch has a Q-Former of its own or the shared one, by construction.
        let level = |branch: &Option<Branch>| {
            branch.as_ref().and_then(|b| {
                let qformer = b.qformer.as_ref().or(self.qformer.as_ref())?;
                Some(b.forward(hidden_states, qformer, self.precision))
            })
        };
        MfamOutput {
            low: level(&self.low),
            middle: level(&self.middle),
            high: level(&self.high),
            thematic: self.thematic.as_ref().and_then(|p| {
                hidden_states
                    .last()
                    .map(|last| p.forward_in(last.clone(), self.precision))
            }),
        }
    }

    /// The MFAM with every Q-Former's layers checkpointed (`on`) or not
    /// (`QFormer::with_activation_checkpointing`).
    pub fn with_activation_checkpointing(mut self, on: bool) -> Self {
        let set = |q: Option<QFormer>| q.map(|q| q.with_activation_checkpointing(on));
        for branch in [&mut self.low, &mut self.middle, &mut self.high]
            .into_iter()
            .flatten()
        {
            branch.qformer = set(branch.qformer.take());
        }
        self.qformer = set(self.qformer.take());
        self
    }

    /// The MFAM computing its products in `precision` (`model::precision`), its Q-Formers
    /// included.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        let set = |q: Option<QFormer>| q.map(|q| q.with_precision(precision));
        for branch in [&mut self.low, &mut self.middle, &mut self.high]
            .into_iter()
            .flatten()
        {
            branch.qformer = set(branch.qformer.take());
        }
        self.qformer = set(self.qformer.take());
        self.precision = precision;
        self
    }

    /// Takes `config`'s token pooling (levels and thematic branch), which holds no weights:
    /// a fine-tuning may pool the visual tokens of an MFAM pretrained without.
    pub fn set_pooling(&mut self, config: &MfamConfig) {
        for (branch, level) in [
            (&mut self.low, &config.low),
            (&mut self.middle, &config.middle),
            (&mut self.high, &config.high),
        ] {
            if let Some(b) = branch {
                b.pool = level.pool;
            }
        }
        if let Some(t) = &mut self.thematic {
            t.pool = config.thematic.pool;
        }
    }
}

impl Branch {
    fn forward(
        &self,
        hidden_states: &[Tensor<3>],
        qformer: &QFormer,
        precision: Precision,
    ) -> LevelOutput {
        let memory: Vec<Tensor<3>> = self
            .layers
            .iter()
            .zip(&self.adapters)
            .filter_map(|(&id, adapter)| {
                let states = hidden_states.get(id)?.clone();
                Some(match adapter {
                    Some(a) => lin(a, states, precision),
                    None => states,
                })
            })
            .collect();
        let memory = Tensor::cat(memory, 1);
        let b = memory.dims()[0];
        let [_, q, h] = self.query_tokens.dims();
        let queries = self.query_tokens.val().expand([b, q, h]);
        let queries = qformer.forward(queries, memory, None);
        let pooled = match self.pool {
            // Equal windows: a reshape and a mean, the arithmetic the built-in job's figures
            // were measured with.
            Some(p) if p < q && q % p == 0 => queries
                .clone()
                .reshape([b, p, q / p, h])
                .mean_dim(2)
                .reshape([b, p, h]),
            Some(p) if p < q => {
                adaptive_avg_pool1d(queries.clone().swap_dims(1, 2), p).swap_dims(1, 2)
            }
            _ => queries.clone(),
        };
        LevelOutput {
            tokens: lin(&self.language_projection, pooled, precision),
            queries,
        }
    }
}
