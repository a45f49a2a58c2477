//! Frozen image encoders. Which one is used is a closed choice (`kind` in YAML); every encoder
//! returns a list of hidden states, one per depth, which the MFAM's three Q-Formers read.
//! Full scale follows HF `CLIPVisionModel`; offline and on CPU, EfficientNet-Lite0 (docs/design.md §2).

pub mod clip;
pub mod efficientnet;
pub mod frozen;

use serde::{Deserialize, Serialize};

use crate::config::tagged;

/// Per-channel statistics an encoder was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// OpenAI CLIP's statistics.
    Clip,
    /// torchvision's ImageNet statistics.
    Imagenet,
    /// mean 0.5, std 0.5: pixels in [-1, 1], as TensorFlow's EfficientNet-Lite and Inception.
    Inception,
}

impl Normalization {
    pub fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Self::Clip => (
                [0.481_454_66, 0.457_827_5, 0.408_210_73],
                [0.268_629_54, 0.261_302_6, 0.275_777_1],
            ),
            Self::Imagenet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Self::Inception => ([0.5; 3], [0.5; 3]),
        }
    }
}

/// Which encoder, with its hyper-parameters. Field names follow the HF `config.json` keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VisionConfig {
    EfficientnetLite0(EfficientNetLite0Config),
    Clip(ClipVisionConfig),
}

impl<'de> Deserialize<'de> for VisionConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match tagged::split(deserializer, &["efficientnet_lite0", "clip"])? {
            (0, rest) => tagged::fields(rest).map(Self::EfficientnetLite0),
            (_, rest) => tagged::fields(rest).map(Self::Clip),
        }
    }
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self::EfficientnetLite0(EfficientNetLite0Config::default())
    }
}

impl VisionConfig {
    /// How many hidden states the encoder returns: valid level ids are `0..num_hidden_states()`.
    pub fn num_hidden_states(&self) -> usize {
        match self {
            Self::EfficientnetLite0(_) => EfficientNetLite0Config::NUM_STAGES,
            // The embeddings output, then one per layer (HF `output_hidden_states`).
            Self::Clip(c) => c.num_hidden_layers + 1,
        }
    }

    /// `(tokens, width)` of each hidden state for square images of the configured size.
    pub fn hidden_state_shapes(&self) -> Vec<(usize, usize)> {
        match self {
            Self::EfficientnetLite0(c) => c
                .stage_shapes()
                .into_iter()
                .map(|(channels, side)| (side * side, channels))
                .collect(),
            Self::Clip(c) => {
                let grid = c.image_size / c.patch_size.max(1);
                vec![(grid * grid + 1, c.hidden_size); c.num_hidden_layers + 1]
            }
        }
    }

    /// The pixel statistics the encoder was trained with.
    pub fn normalization(&self) -> Normalization {
        match self {
            Self::EfficientnetLite0(_) => Normalization::Imagenet,
            Self::Clip(_) => Normalization::Clip,
        }
    }

    pub fn image_size(&self) -> usize {
        match self {
            Self::EfficientnetLite0(c) => c.image_size,
            Self::Clip(c) => c.image_size,
        }
    }
}

/// EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation and use ReLU6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EfficientNetLite0Config {
    pub image_size: usize,
    pub num_classes: usize,
}

impl EfficientNetLite0Config {
    /// The seven MBConv stages; stage `i`'s output is hidden state `i`.
    pub const NUM_STAGES: usize = 7;

    /// `(channels, side)` of each stage's output for a square input of `image_size`.
    pub fn stage_shapes(&self) -> [(usize, usize); Self::NUM_STAGES] {
        efficientnet::stage_shapes(self.image_size)
    }
}

impl Default for EfficientNetLite0Config {
    fn default() -> Self {
        Self {
            image_size: 224,
            num_classes: 1000,
        }
    }
}

/// Activation named by HF's `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    QuickGelu,
    Gelu,
    GeluNew,
    Relu,
}

/// HF `CLIPVisionConfig`; the default is ViT-L/14 at 336 px, the encoder of LLaVA-1.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// Sizes within `model::limits`, before anything is built; `key` is where the config
    /// sits (`model.vision`, or a checkpoint's `config.json`).
    pub fn validate(&self, key: &str) -> Result<(), crate::config::Invalid> {
        use crate::model::{limits, parameters_within, positive, size_within};
        let k = |f: &str| format!("{key}.{f}");
        size_within(&k("hidden_size"), self.hidden_size, limits::WIDTH)?;
        size_within(
            &k("intermediate_size"),
            self.intermediate_size,
            limits::INTERMEDIATE,
        )?;
        size_within(
            &k("num_hidden_layers"),
            self.num_hidden_layers,
            limits::LAYERS,
        )?;
        size_within(
            &k("num_attention_heads"),
            self.num_attention_heads,
            limits::HEADS,
        )?;
        size_within(&k("num_channels"), self.num_channels, 4)?;
        size_within(
            &k("image_size"),
            self.image_size,
            crate::model::MAX_IMAGE_SIZE,
        )?;
        size_within(&k("patch_size"), self.patch_size, self.image_size)?;
        positive(&k("layer_norm_eps"), self.layer_norm_eps)?;
        let (h, i) = (self.hidden_size as u128, self.intermediate_size as u128);
        let patches = (self.image_size / self.patch_size).pow(2) as u128;
        let patch = (self.num_channels * self.patch_size * self.patch_size) as u128;
        let count =
            self.num_hidden_layers as u128 * (4 * h * h + 2 * h * i) + (patch + patches) * h;
        parameters_within(key, count)
    }
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 336,
            patch_size: 14,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}
