//! CALM's multimodal model (Liu et al., AAAI 2025, section "Instruction tuning"): the MFAM's
//! four token groups `<low> <middle> <high> <thematic>` take the place of each `<image>` in the
//! LLM's input, LLaVA-style; the image encoder stays outside (frozen, run by the caller).

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::llama::LlamaForCausalLM;
use super::mfam::Mfam;
use super::precision::Precision;
use super::score_head::{ScoreHead, ScoreOutputs, emd_loss};

#[derive(Module, Debug)]
pub struct Calm {
    pub mfam: Mfam,
    pub llm: LlamaForCausalLM,
    /// Score readouts from the hidden state at a scoring answer; `None` where fine-tuning
    /// trains none.
    pub score_head: Option<ScoreHead>,
}

/// Where one image's visual tokens go: row `row` of the batch, positions `start..start + V`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSlot {
    pub row: usize,
    pub start: usize,
    /// Index of the image among the batch's images.
    pub image: usize,
}

/// A batch of tokenized conversations, right-padded to one length.
#[derive(Debug, Clone)]
pub struct CalmBatch {
    /// The frozen encoder's hidden states of the batch's images, `[N, T_i, E_i]` per depth.
    pub hidden_states: Vec<Tensor<3>>,
    /// `[B, T]`; visual slots and padding hold any valid id.
    pub ids: Tensor<2, Int>,
    /// `[B, T]`: 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor<2>,
    pub slots: Vec<ImageSlot>,
    /// Flat positions `row * T + t` whose logits predict a supervised token...
    pub predict_at: Vec<usize>,
    /// ...and those tokens.
    pub targets: Vec<u32>,
    /// For rows packing several conversations: who sees whom, and where each token sits.
    pub packed: Option<PackedLayout>,
    /// What the score heads learn, where the batch holds scoring answers with targets.
    pub scores: Option<ScoreBatch>,
}

/// The score heads' supervision of a batch: S scoring answers.
#[derive(Debug, Clone)]
pub struct ScoreBatch {
    /// Flat positions `row * T + t` of each answer's predecessor, whose hidden state the
    /// heads read.
    pub at: Vec<usize>,
    /// `[S, SCORE_BINS]`, rows summing to one.
    pub distribution: Tensor<2>,
    /// `[S]`, standardised as the regression predicts it (`score_head::SCORE_MID`).
    pub standardised: Tensor<1>,
}

/// The training losses of a batch.
#[derive(Debug, Clone)]
pub struct TrainLosses {
    /// `[N]`: the cross-entropy of each supervised token, in the order of `batch.targets`.
    pub tokens: Tensor<1>,
    /// `[S]` each: the distribution's EMD and the regression's squared error per scoring
    /// answer; `None` without heads or without scoring answers.
    pub scores: Option<(Tensor<1>, Tensor<1>)>,
}

/// The attention of packed rows (`data::conversation::pack_branches`).
#[derive(Debug, Clone)]
pub struct PackedLayout {
    /// `[B, 1, T, T]`: 0 where a token sees another, `f32::MIN` elsewhere (padding included).
    pub bias: Tensor<4>,
    /// `[B, T]`: each token's position in its own conversation.
    pub position_ids: Tensor<2, Int>,
}

impl Calm {
    /// The model with the LLM's decoder layers and the MFAM's Q-Former layers checkpointed
    /// (`on`) or not (`model::checkpoint`): gradients stay the same, activations shrink to
    /// one tensor per layer, each layer runs twice.
    pub fn with_activation_checkpointing(mut self, on: bool) -> Self {
        self.mfam = self.mfam.with_activation_checkpointing(on);
        self.llm = self.llm.with_activation_checkpointing(on);
        self
    }

    /// The model computing the MFAM's and the LLM's products in `precision`
    /// (`model::precision`); the score head, the softmaxes and the losses stay f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.mfam = self.mfam.with_precision(precision);
        self.llm = self.llm.with_precision(precision);
        self
    }

    /// The visual tokens of images whose encoder states are `hidden_states`:
    /// `[N, V, D]`, V = low + middle + high + thematic.
    pub fn visual_tokens(&self, hidden_states: &[Tensor<3>]) -> Tensor<3> {
        self.mfam.forward(hidden_states).tokens()
    }

    /// Token embeddings of `ids` `[B, T]` with `visual` `[N, V, D]` written over the slots:
    /// `[B, T, D]`.
    pub fn embed(&self, ids: Tensor<2, Int>, visual: Tensor<3>, slots: &[ImageSlot]) -> Tensor<3> {
        let mut embeds = self.llm.embed(ids);
        let [_, v, d] = visual.dims();
        for slot in slots {
            let tokens = visual.clone().narrow(0, slot.image, 1).reshape([1, v, d]);
            embeds = embeds.slice_assign(
                [slot.row..slot.row + 1, slot.start..slot.start + v, 0..d],
                tokens,
            );
        }
        embeds
    }

    /// Cross-entropy of every supervised token, `[N]` in the order of `batch.targets`: the
    /// LM head runs at those positions only.
    pub fn token_losses(&self, batch: &CalmBatch) -> Tensor<1> {
        self.losses(batch, true).tokens
    }

    /// The token losses and, with score heads, the score losses of a batch, from one pass.
    /// `detach_heads`: the heads learn from the hidden states without changing what
    /// produces them (a probe trained alongside); else their gradients reach the LLM's
    /// adapters, the projections and the MFAM as the words' do.
    pub fn losses(&self, batch: &CalmBatch, detach_heads: bool) -> TrainLosses {
        let device = batch.ids.device();
        let visual = self.visual_tokens(&batch.hidden_states);
        let embeds = self.embed(batch.ids.clone(), visual, &batch.slots);
        let [b, t, d] = embeds.dims();
        let hidden = match &batch.packed {
            Some(p) => {
                self.llm
                    .hidden_states_with_bias(embeds, p.bias.clone(), p.position_ids.clone())
            }
            None => self
                .llm
                .hidden_states(embeds, Some(batch.attention_mask.clone()), None, None),
        }
        .reshape([b * t, d]);
        let scores = match (&self.score_head, &batch.scores) {
            (Some(head), Some(s)) if !s.at.is_empty() => {
                let picked = hidden.clone().select(0, int_tensor(&s.at, &device));
                let picked = if detach_heads {
                    picked.detach()
                } else {
                    picked
                };
                let out = head.forward(picked);
                let emd = emd_loss(out.logits, s.distribution.clone());
                let squared = (out.standardised - s.standardised.clone()).powi_scalar(2);
                Some((emd, squared))
            }
            _ => None,
        };
        let n = batch.predict_at.len();
        let at = int_tensor(&batch.predict_at, &device);
        let picked = hidden.select(0, at).reshape([1, n, d]);
        let logits = self.llm.logits(picked);
        let vocab = logits.dims()[2];
        let logp = log_softmax(logits.reshape([n, vocab]), 1);
        let targets = int_tensor(&batch.targets, &device).reshape([n, 1]);
        TrainLosses {
            tokens: logp.gather(1, targets).reshape([n]).neg(),
            scores,
        }
    }

    /// Logits of the next token after each prompt, at the last real position of each row:
    /// `[B, vocab]`; rows are right-padded and `lengths` are their real lengths. With
    /// `heads_at` and a model with heads, also the score heads' outputs `[B, ...]` read at
    /// each row's position `heads_at[row]` (the last token of a scoring prompt).
    pub fn next_token_outputs(
        &self,
        ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
        hidden_states: &[Tensor<3>],
        slots: &[ImageSlot],
        lengths: &[usize],
        heads_at: Option<&[usize]>,
    ) -> (Tensor<2>, Option<ScoreOutputs>) {
        let device = ids.device();
        let visual = self.visual_tokens(hidden_states);
        let embeds = self.embed(ids, visual, slots);
        let [b, t, d] = embeds.dims();
        let hidden = self
            .llm
            .hidden_states(embeds, Some(attention_mask), None, None)
            .reshape([b * t, d]);
        let flat = |positions: &[usize]| -> Vec<usize> {
            positions
                .iter()
                .enumerate()
                .map(|(row, &p)| row * t + p.min(t.saturating_sub(1)))
                .collect()
        };
        let scores = match (&self.score_head, heads_at) {
            (Some(head), Some(at)) => {
                Some(head.forward(hidden.clone().select(0, int_tensor(&flat(at), &device))))
            }
            _ => None,
        };
        let last: Vec<usize> = lengths.iter().map(|&len| len.max(1) - 1).collect();
        let picked = hidden
            .select(0, int_tensor(&flat(&last), &device))
            .reshape([1, b, d]);
        let logits = self.llm.logits(picked);
        let vocab = logits.dims()[2];
        (logits.reshape([b, vocab]), scores)
    }
}

fn int_tensor<T: Copy + TryInto<i64>>(values: &[T], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = values
        .iter()
        .map(|&v| v.try_into().unwrap_or(i64::MAX))
        .collect();
    Tensor::from_data(TensorData::new(data, [values.len()]), device)
}
