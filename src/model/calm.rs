//! CALM's multimodal model (Liu et al., AAAI 2025, section "Instruction tuning"): the MFAM's
//! four token groups `<low> <middle> <high> <thematic>` take the place of each `<image>` in the
//! LLM's input, LLaVA-style; the image encoder stays outside (frozen, run by the caller).

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::llama::LlamaForCausalLM;
use super::mfam::Mfam;

#[derive(Module, Debug)]
pub struct Calm {
    pub mfam: Mfam,
    pub llm: LlamaForCausalLM,
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
        };
        let n = batch.predict_at.len();
        let at = int_tensor(&batch.predict_at, &device);
        let picked = hidden.reshape([b * t, d]).select(0, at).reshape([1, n, d]);
        let logits = self.llm.logits(picked);
        let vocab = logits.dims()[2];
        let logp = log_softmax(logits.reshape([n, vocab]), 1);
        let targets = int_tensor(&batch.targets, &device).reshape([n, 1]);
        logp.gather(1, targets).reshape([n]).neg()
    }

    /// Logits of the next token after each prompt, at the last real position of each row:
    /// `[B, vocab]`. Rows are right-padded; `lengths` are their real lengths.
    pub fn next_token_logits(
        &self,
        ids: Tensor<2, Int>,
        attention_mask: Tensor<2>,
        hidden_states: &[Tensor<3>],
        slots: &[ImageSlot],
        lengths: &[usize],
    ) -> Tensor<2> {
        let device = ids.device();
        let visual = self.visual_tokens(hidden_states);
        let embeds = self.embed(ids, visual, slots);
        let [b, t, d] = embeds.dims();
        let hidden = self
            .llm
            .hidden_states(embeds, Some(attention_mask), None, None);
        let last: Vec<usize> = lengths
            .iter()
            .enumerate()
            .map(|(row, &len)| row * t + len.max(1) - 1)
            .collect();
        let picked = hidden
            .reshape([b * t, d])
            .select(0, int_tensor(&last, &device))
            .reshape([1, b, d]);
        let logits = self.llm.logits(picked);
        let vocab = logits.dims()[2];
        logits.reshape([b, vocab])
    }
}

fn int_tensor<T: Copy + TryInto<i64>>(values: &[T], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = values
        .iter()
        .map(|&v| v.try_into().unwrap_or(i64::MAX))
        .collect();
    Tensor::from_data(TensorData::new(data, [values.len()]), device)
}
