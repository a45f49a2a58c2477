//! Turns instruction samples into what `model::calm::Calm` reads: images cropped and run
//! through the frozen encoder, conversations tokenized with their labels
//! (`data::conversation`), rows right-padded into one batch. Fine-tuning and the task runners
//! of `runners::tasks` (used by `infer`) share it, so training and inference see identical inputs.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};
use image::RgbImage;
use rand::SeedableRng;

use crate::data::conversation::{
    ConversationError, TokenizedConversation, pack_branches, tokenize_conversation, truncate,
};
use crate::data::image::load_rgb;
use crate::data::instruct::{InstructSample, SampleImage, ScoreTarget, Task};
use crate::data::transform::Transform;
use crate::model::calm::{CalmBatch, ImageSlot, PackedLayout, ScoreBatch};
use crate::model::chat::{LlmTokenizer, Role};
use crate::model::score_head::{SCORE_BINS, SCORE_HALF_RANGE, SCORE_MID};
use crate::model::vision::frozen::FrozenEncoder;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{path}: {reason}")]
    Image { path: String, reason: String },
    #[error("sample {index} ({task}): {source}")]
    Conversation {
        index: usize,
        task: &'static str,
        source: ConversationError,
    },
    #[error("an empty batch")]
    Empty,
}

/// A batch prepared off the training thread: encoder states on the plain device, token rows
/// as plain vectors (tensors are made where they are used).
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    /// `[N, T_i, E_i]` per depth for the batch's N images, in row order.
    pub hidden_states: Vec<Tensor<3>>,
    pub rows: Vec<TokenizedConversation>,
    /// Per row: the task of each conversation packed in it (one unless it has branches).
    pub tasks: Vec<Vec<Task>>,
    /// The number of images of each row.
    pub images: Vec<usize>,
    /// Per row, when its first question asks for a score and the sample gives the score
    /// heads a target: the position of that answer's predecessor in the row, and the target.
    pub scores: Vec<Option<(usize, ScoreTarget)>>,
}

/// What a batch needs besides the samples.
pub struct Preparer<'a> {
    pub encoder: &'a FrozenEncoder,
    pub tokenizer: &'a LlmTokenizer,
    pub transform: &'a Transform,
    /// Tokens each image becomes.
    pub visual_tokens: usize,
    /// Longest conversation kept, in tokens; longer ones lose their end.
    pub max_length: usize,
}

impl Preparer<'_> {
    /// The image of a sample as the encoder sees it: files are resized and cropped (with
    /// `seed` when the transform crops at random); pixels a builder made at the encoder's size
    /// are used as they are.
    pub fn image(&self, image: &SampleImage, seed: u64) -> Result<Arc<RgbImage>, PrepareError> {
        let size = self.transform.size as u32;
        let err = |reason: String| PrepareError::Image {
            path: image.source().display().to_string(),
            reason,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        match image {
            SampleImage::Pixels { image, .. } if image.dimensions() == (size, size) => {
                Ok(image.clone())
            }
            SampleImage::Pixels { image, .. } => self
                .transform
                .crop(image, &mut rng)
                .map(Arc::new)
                .map_err(|e| err(e.to_string())),
            SampleImage::Path(path) => {
                let photo = load_rgb(path).map_err(|e| err(e.to_string()))?;
                self.transform
                    .crop(&photo, &mut rng)
                    .map(Arc::new)
                    .map_err(|e| err(e.to_string()))
            }
        }
    }

    /// Tokenizes `samples` (`open_reply`: as prompts awaiting the assistant's answer) and
    /// encodes their images, already made by `image`. `device`: where the encoder runs.
    pub fn prepare(
        &self,
        samples: &[(InstructSample, Vec<Arc<RgbImage>>)],
        open_reply: bool,
        device: &Device,
    ) -> Result<PreparedBatch, PrepareError> {
        if samples.is_empty() {
            return Err(PrepareError::Empty);
        }
        let mut rows = Vec::with_capacity(samples.len());
        let mut scores = Vec::with_capacity(samples.len());
        for (index, (sample, images)) in samples.iter().enumerate() {
            let conversation_error = |source| PrepareError::Conversation {
                index,
                task: sample.task.name(),
                source,
            };
            // Each conversation alone first; packing then checks they open alike.
            let tokenize = |turns: &[(Role, String)]| {
                let row = tokenize_conversation(
                    self.tokenizer,
                    turns,
                    images.len(),
                    self.visual_tokens,
                    open_reply,
                )?;
                if open_reply {
                    Ok(row)
                } else {
                    truncate(row, self.max_length)
                }
            };
            let row = if sample.branches.is_empty() {
                tokenize(&sample.turns)
            } else {
                std::iter::once(&sample.turns)
                    .chain(sample.branches.iter().map(|(_, turns)| turns))
                    .map(|turns| tokenize(turns))
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(pack_branches)
            }
            .map_err(conversation_error)?;
            let score = sample.score.filter(|_| !open_reply).and_then(|target| {
                let first = *row.answer_starts.first()?;
                Some((row.predecessor(first)?, target))
            });
            scores.push(score);
            rows.push(row);
        }
        let images: Vec<&Arc<RgbImage>> = samples.iter().flat_map(|(_, i)| i).collect();
        let hidden_states = if images.is_empty() {
            Vec::new()
        } else {
            let size = self.transform.size;
            let pixels: Vec<f32> = images
                .iter()
                .flat_map(|i| self.transform.normalize(i))
                .collect();
            let pixels = Tensor::<4>::from_data(
                TensorData::new(pixels, [images.len(), 3, size, size]),
                device,
            );
            self.encoder.forward(pixels)
        };
        Ok(PreparedBatch {
            hidden_states,
            rows,
            tasks: samples
                .iter()
                .map(|(s, _)| {
                    std::iter::once(s.task)
                        .chain(s.branches.iter().map(|b| b.0))
                        .collect()
                })
                .collect(),
            images: samples.iter().map(|(_, i)| i.len()).collect(),
            scores,
        })
    }
}

impl PreparedBatch {
    /// The longest row, the batch's padded length.
    pub fn width(&self) -> usize {
        self.rows
            .iter()
            .map(TokenizedConversation::len)
            .max()
            .unwrap_or(0)
    }

    /// The batch on `device` (`autodiff`: an autodiff device, for training): rows
    /// right-padded with id 0 and mask 0; the logits at a token's predecessor (the token
    /// before it in its own conversation) predict its supervised label.
    pub fn to_device(&self, device: &Device, autodiff: bool) -> CalmBatch {
        let t = self.width();
        let b = self.rows.len();
        let mut ids = vec![0i64; b * t];
        let mut mask = vec![0f32; b * t];
        let mut slots = Vec::new();
        let mut predict_at = Vec::new();
        let mut targets = Vec::new();
        let mut image = 0;
        for (r, row) in self.rows.iter().enumerate() {
            for (i, &id) in row.ids.iter().enumerate() {
                ids[r * t + i] = i64::from(id);
                mask[r * t + i] = 1.0;
            }
            for &start in &row.image_starts {
                slots.push(ImageSlot {
                    row: r,
                    start,
                    image,
                });
                image += 1;
            }
            for (_, p, label) in row.targets() {
                predict_at.push(r * t + p);
                targets.push(label);
            }
        }
        let packed = self
            .rows
            .iter()
            .any(|r| !r.branches.is_empty())
            .then(|| self.packed_layout(t, device));
        let scored: Vec<(usize, &ScoreTarget)> = self
            .scores
            .iter()
            .enumerate()
            .filter_map(|(r, s)| s.as_ref().map(|(p, target)| (r * t + p, target)))
            .collect();
        let scores = (!scored.is_empty()).then(|| {
            let n = scored.len();
            let distribution: Vec<f32> = scored
                .iter()
                .flat_map(|(_, target)| target.distribution)
                .collect();
            let standardised: Vec<f32> = scored
                .iter()
                .map(|(_, target)| ((target.mean - SCORE_MID) / SCORE_HALF_RANGE) as f32)
                .collect();
            ScoreBatch {
                at: scored.iter().map(|(p, _)| *p).collect(),
                distribution: Tensor::<2>::from_data(
                    TensorData::new(distribution, [n, SCORE_BINS]),
                    device,
                ),
                standardised: Tensor::<1>::from_data(TensorData::new(standardised, [n]), device),
            }
        });
        CalmBatch {
            hidden_states: self
                .hidden_states
                .iter()
                .map(|h| {
                    if autodiff {
                        h.clone().autodiff()
                    } else {
                        h.clone().to_device(device)
                    }
                })
                .collect(),
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device),
            attention_mask: Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device),
            slots,
            predict_at,
            targets,
            packed,
            scores,
        }
    }

    /// Who sees whom in rows padded to `t`. A padding position sees the row's first token
    /// only, so that its (unused) attention stays finite.
    fn packed_layout(&self, t: usize, device: &Device) -> PackedLayout {
        let b = self.rows.len();
        let mut bias = vec![f32::MIN; b * t * t];
        let mut positions = vec![0i64; b * t];
        for (r, row) in self.rows.iter().enumerate() {
            let n = row.len();
            for q in 0..t {
                let base = (r * t + q) * t;
                if q >= n {
                    bias[base] = 0.0;
                    continue;
                }
                for k in 0..=q {
                    if row.sees(q, k) {
                        bias[base + k] = 0.0;
                    }
                }
            }
            for (i, p) in row.positions().into_iter().enumerate() {
                positions[r * t + i] = p as i64;
            }
        }
        PackedLayout {
            bias: Tensor::<4>::from_data(TensorData::new(bias, [b, 1, t, t]), device),
            position_ids: Tensor::<2, Int>::from_data(TensorData::new(positions, [b, t]), device),
        }
    }

    /// The task of every supervised token, in the order of `CalmBatch::targets`.
    pub fn target_tasks(&self) -> Vec<Task> {
        let mut out = Vec::new();
        for (row, tasks) in self.rows.iter().zip(&self.tasks) {
            for (i, _, _) in row.targets() {
                let branch = usize::from(row.branch(i)).max(1);
                out.push(tasks.get(branch - 1).copied().unwrap_or(Task::Conversation));
            }
        }
        out
    }
}
