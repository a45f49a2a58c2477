//! Multi-scale Feature Alignment Module (CALM, Liu et al., AAAI 2025): three Q-Formers with
//! low-, middle- and high-level queries, each reading its own encoder depths, plus a thematic
//! branch that projects the final layer. The LLM sees the groups as `<low> <middle> <high>
//! <thematic>`. Q-Former hyper-parameters follow HF `Blip2QFormerConfig`.

use serde::{Deserialize, Serialize};

use super::divisible;
use super::vision::VisionConfig;
use crate::config::Invalid;

/// HF `Blip2QFormerConfig` fields; the defaults are MiniLM-L6's width (384) so that the
/// Q-Formers can start from the real text encoder's weights, as BLIP-2 starts from BERT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QFormerConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub cross_attention_frequency: usize,
    pub layer_norm_eps: f64,
}

impl Default for QFormerConfig {
    fn default() -> Self {
        Self {
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            cross_attention_frequency: 2,
            layer_norm_eps: 1e-12,
        }
    }
}

/// One aesthetic level: which encoder hidden states it reads and how many queries it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LevelConfig {
    pub enabled: bool,
    pub layers: Vec<usize>,
    pub num_query_tokens: usize,
}

impl LevelConfig {
    fn with_layers(layers: &[usize]) -> Self {
        Self {
            enabled: true,
            layers: layers.to_vec(),
            num_query_tokens: 32,
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
}

impl Default for ThematicConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            projector: ProjectorKind::Mlp2xGelu,
        }
    }
}

/// The defaults read EfficientNet-Lite0's stages (0..7): shallow, middle and deep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfamConfig {
    pub low: LevelConfig,
    pub middle: LevelConfig,
    pub high: LevelConfig,
    pub thematic: ThematicConfig,
    pub qformer: QFormerConfig,
}

impl Default for MfamConfig {
    fn default() -> Self {
        Self {
            low: LevelConfig::with_layers(&[1, 2]),
            middle: LevelConfig::with_layers(&[3, 4]),
            high: LevelConfig::with_layers(&[5, 6]),
            thematic: ThematicConfig::default(),
            qformer: QFormerConfig::default(),
        }
    }
}

impl MfamConfig {
    pub fn levels(&self) -> [(&'static str, &LevelConfig); 3] {
        [
            ("low", &self.low),
            ("middle", &self.middle),
            ("high", &self.high),
        ]
    }

    pub(crate) fn validate_against(&self, vision: &VisionConfig) -> Result<(), Invalid> {
        let q = &self.qformer;
        divisible(
            "model.mfam.qformer.hidden_size",
            q.hidden_size,
            "model.mfam.qformer.num_attention_heads",
            q.num_attention_heads,
        )?;
        if q.cross_attention_frequency == 0 {
            return Err(Invalid::new(
                "model.mfam.qformer.cross_attention_frequency",
                "must be at least 1 (1 = cross-attention in every layer)",
            ));
        }
        let depth = vision.num_hidden_states();
        for (name, level) in self.levels() {
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
