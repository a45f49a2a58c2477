//! LoRA (Hu et al., 2021) for the LLaMA's linear layers, as PEFT does it: `W x + (alpha / r)
//! B A dropout(x)`, `A` from Kaiming-uniform, `B` from zeros (so a fresh adapter changes
//! nothing). The adapters are a module of their own, keyed like PEFT's
//! (`layers.N.self_attn.q_proj.lora_A.weight`), so they train while the base weights stay
//! frozen, are saved alone, and can be merged into the base weights.

#![allow(non_snake_case)]

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::precision::{Precision, lin};
use serde::{Deserialize, Serialize};

/// The linear layers of a LLaMA block an adapter can attach to (PEFT's `target_modules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    /// The built-in fine-tuning's: rank 8, alpha 16, no dropout, every linear layer; sized for
    /// SmolLM2-135M on a CPU. LLaVA-1.5's recipe for a 7B LLM is rank 128, alpha 256, dropout
    /// 0.05.
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: vec![
                LoraTarget::QProj,
                LoraTarget::KProj,
                LoraTarget::VProj,
                LoraTarget::OProj,
                LoraTarget::GateProj,
                LoraTarget::UpProj,
                LoraTarget::DownProj,
            ],
        }
    }
}

#[derive(Module, Debug)]
pub struct LoraAdapter {
    pub lora_A: Linear,
    pub lora_B: Linear,
    pub dropout: Dropout,
    #[module(skip)]
    pub scaling: f64,
}

impl LoraAdapter {
    pub fn init(config: &LoraConfig, input: usize, output: usize, device: &Device) -> Self {
        Self {
            // PEFT: kaiming_uniform_(a = sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)).
            lora_A: LinearConfig::new(input, config.rank)
                .with_bias(false)
                .with_initializer(Initializer::KaimingUniform {
                    gain: 1.0 / 3f64.sqrt(),
                    fan_out_only: false,
                })
                .init(device),
            lora_B: LinearConfig::new(config.rank, output)
                .with_bias(false)
                .with_initializer(Initializer::Zeros)
                .init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            scaling: config.alpha / config.rank as f64,
        }
    }

    /// `x` `[B, T, in]` -> the adapter's addition `[B, T, out]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_in(x, Precision::F32)
    }

    /// `forward` with its two products in `precision`.
    pub fn forward_in(&self, x: Tensor<3>, precision: Precision) -> Tensor<3> {
        let down = lin(&self.lora_A, self.dropout.forward(x), precision);
        lin(&self.lora_B, down, precision) * self.scaling
    }

    /// `base` with the adapter folded into its weight (`[in, out]` in Burn's layout).
    pub fn merge_into(&self, base: &Linear) -> Linear {
        let delta = self.lora_A.weight.val().matmul(self.lora_B.weight.val()) * self.scaling;
        let mut merged = base.clone();
        // A new leaf: the sum must not stay tied to the adapters' graph.
        merged.weight = Param::from_tensor((base.weight.val() + delta).detach());
        merged
    }
}

#[derive(Module, Debug)]
pub struct AttentionLora {
    pub q_proj: Option<LoraAdapter>,
    pub k_proj: Option<LoraAdapter>,
    pub v_proj: Option<LoraAdapter>,
    pub o_proj: Option<LoraAdapter>,
}

#[derive(Module, Debug)]
pub struct MlpLora {
    pub gate_proj: Option<LoraAdapter>,
    pub up_proj: Option<LoraAdapter>,
    pub down_proj: Option<LoraAdapter>,
}

#[derive(Module, Debug)]
pub struct LayerLora {
    pub self_attn: AttentionLora,
    pub mlp: MlpLora,
}

impl LayerLora {
    /// Whether an adapter of the layer applies dropout when training, so that two runs of the
    /// layer differ.
    pub fn drops_out(&self) -> bool {
        let a = &self.self_attn;
        let m = &self.mlp;
        [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ]
        .into_iter()
        .flatten()
        .any(|adapter| adapter.dropout.prob > 0.0)
    }
}

/// Every adapter of a model, one entry per decoder layer.
#[derive(Module, Debug)]
pub struct LlamaLora {
    pub layers: Vec<LayerLora>,
}

/// `base(x)` plus the adapter's addition when there is one, products in `precision`.
pub(crate) fn adapted(
    base: &Linear,
    adapter: Option<&LoraAdapter>,
    x: Tensor<3>,
    precision: Precision,
) -> Tensor<3> {
    match adapter {
        Some(a) => lin(base, x.clone(), precision) + a.forward_in(x, precision),
        None => lin(base, x, precision),
    }
}
