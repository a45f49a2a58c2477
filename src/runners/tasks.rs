//! Task runners over a fine-tuned CALM model: aesthetic scoring (numeric text and Q-Align's
//! level-word readout, Wu et al. 2023), commenting, zero-shot suggesting and personalized
//! assessment with k rated examples in the prompt. They ask with the instructions training
//! used (`data::instruct::prompts`) and read answers the way training wrote them.

use std::sync::Arc;

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;

use crate::data::conversation::{ConversationError, tokenize_conversation};
use crate::data::instruct::{
    InstructSample, LEVELS, SampleImage, Task, expected_level_score, parse_score, prompts,
};
use crate::data::raters::rated_turns;
use crate::data::transform::Transform;
use crate::eval::tasks::{InferConfig, PersonalScore, Score, ScoreReadout};
use crate::model::chat::Role;
use crate::model::generate::{EmbeddedPrompt, GenerateError, GenerationConfig, generate_embedded};
use crate::train::finetune::Loaded;
use crate::train::instruct_batch::{PrepareError, PreparedBatch};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "the answers {0:?} do not start with distinct tokens under this tokenizer, so they cannot be read out"
    )]
    Ambiguous(Vec<String>),
}

/// Images read, each with its path, and the files that could not be, each with the reason.
pub type Readable = (
    Vec<(std::path::PathBuf, Arc<RgbImage>)>,
    Vec<(std::path::PathBuf, String)>,
);

/// Each prompt's answer probabilities, and the score heads' (distribution expectation,
/// regression) per prompt where the model has heads.
type ProbabilitiesAndHeads = (Vec<Vec<f64>>, Option<Vec<(f64, f64)>>);

/// A conversation ending with the user's turn: user and assistant turns, the user's holding
/// one `<image>` an image, in order.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub turns: Vec<(Role, String)>,
    pub images: Vec<Arc<RgbImage>>,
}

/// The runners' shared state.
pub struct Runner<'a> {
    pub loaded: &'a Loaded,
    pub transform: &'a Transform,
    pub config: &'a InferConfig,
}

fn ask(task: Task, turns: Vec<(Role, String)>, images: usize) -> InstructSample {
    InstructSample {
        task,
        images: (0..images)
            .map(|i| SampleImage::Path(format!("image {i}").into()))
            .collect(),
        turns,
        branches: Vec::new(),
        score: None,
    }
}

impl Runner<'_> {
    /// Reads and crops image files as the encoder sees them; the first failure is returned
    /// with its path.
    pub fn load_images(
        &self,
        paths: &[std::path::PathBuf],
    ) -> Result<Vec<Arc<RgbImage>>, (std::path::PathBuf, String)> {
        let preparer = self.loaded.preparer(self.transform, usize::MAX);
        paths
            .iter()
            .map(|p| {
                preparer
                    .image(&SampleImage::Path(p.clone()), 0)
                    .map_err(|e| (p.clone(), e.to_string()))
            })
            .collect()
    }

    /// As `load_images`, one file at a time: the readable ones with their paths, and each
    /// unreadable one with the reason (which names it), in the order given.
    pub fn load_readable(&self, paths: &[std::path::PathBuf]) -> Readable {
        let mut read = Vec::with_capacity(paths.len());
        let mut skipped = Vec::new();
        for path in paths {
            match self.load_images(std::slice::from_ref(path)) {
                Ok(mut one) => read.extend(one.pop().map(|image| (path.clone(), image))),
                Err(failure) => skipped.push(failure),
            }
        }
        (read, skipped)
    }

    fn prepare(
        &self,
        samples: Vec<(InstructSample, Vec<Arc<RgbImage>>)>,
    ) -> Result<PreparedBatch, TaskError> {
        let device = self.loaded.model.llm.device();
        let preparer = self.loaded.preparer(self.transform, usize::MAX);
        Ok(preparer.prepare(&samples, true, &device)?)
    }

    /// The probability of each of `answers` as the reply to each prompt, from the logits
    /// where the answers' first distinct token is chosen (after any tokens all of them share,
    /// which are fed as given).
    pub fn answer_probabilities(
        &self,
        prepared: &PreparedBatch,
        answers: &[&str],
    ) -> Result<Vec<Vec<f64>>, TaskError> {
        Ok(self.answer_probabilities_and_heads(prepared, answers)?.0)
    }

    /// As `answer_probabilities`, with the score heads' (distribution, regression) readouts
    /// at each prompt's last token, where fine-tuning trained them to read a scoring answer.
    fn answer_probabilities_and_heads(
        &self,
        prepared: &PreparedBatch,
        answers: &[&str],
    ) -> Result<ProbabilitiesAndHeads, TaskError> {
        let (prefix, firsts) = self.answer_tokens(answers)?;
        let heads_at: Vec<usize> = prepared
            .rows
            .iter()
            .map(|r| r.len().saturating_sub(1))
            .collect();
        let device = self.loaded.model.llm.device();
        let mut prepared = prepared.clone();
        let mut lengths = Vec::with_capacity(prepared.rows.len());
        for row in &mut prepared.rows {
            row.ids.extend(&prefix);
            row.labels.extend(std::iter::repeat_n(
                crate::data::conversation::IGNORE_INDEX,
                prefix.len(),
            ));
            lengths.push(row.ids.len());
        }
        let batch = prepared.to_device(&device, false);
        let (logits, heads) = self.loaded.model.next_token_outputs(
            batch.ids,
            batch.attention_mask,
            &batch.hidden_states,
            &batch.slots,
            &lengths,
            Some(&heads_at),
        );
        let [b, _] = logits.dims();
        let k = firsts.len();
        let index: Vec<i64> = (0..b)
            .flat_map(|_| firsts.iter().map(|&t| i64::from(t)))
            .collect();
        let index = Tensor::<2, Int>::from_data(TensorData::new(index, [b, k]), &device);
        let p = softmax(logits.gather(1, index), 1);
        let values: Vec<f64> = p.into_data().iter::<f32>().map(f64::from).collect();
        Ok((
            values.chunks(k).map(<[f64]>::to_vec).collect(),
            heads.map(|h| h.scores()),
        ))
    }

    /// The tokens every answer starts with, and the first token where each differs.
    fn answer_tokens(&self, answers: &[&str]) -> Result<(Vec<u32>, Vec<u32>), TaskError> {
        let mut sequences = Vec::with_capacity(answers.len());
        for answer in answers {
            let turns = vec![
                (Role::User, "?".to_string()),
                (Role::Assistant, (*answer).to_string()),
            ];
            let t = tokenize_conversation(&self.loaded.tokenizer, &turns, 0, 0, false)?;
            let start = t.answer_starts.first().copied().unwrap_or(t.ids.len());
            sequences.push(t.ids[start..].to_vec());
        }
        let shortest = sequences.iter().map(Vec::len).min().unwrap_or(0);
        let shared = (0..shortest)
            .take_while(|&i| sequences.iter().all(|s| s[i] == sequences[0][i]))
            .count();
        let firsts: Vec<u32> = sequences
            .iter()
            .filter_map(|s| s.get(shared).copied())
            .collect();
        let distinct: std::collections::HashSet<u32> = firsts.iter().copied().collect();
        if firsts.len() != answers.len() || distinct.len() != answers.len() {
            return Err(TaskError::Ambiguous(
                answers.iter().map(|a| (*a).to_string()).collect(),
            ));
        }
        Ok((sequences[0][..shared].to_vec(), firsts))
    }

    /// Greedy (or configured) replies to prepared prompts.
    pub fn generate(
        &self,
        prepared: &PreparedBatch,
        generation: &GenerationConfig,
    ) -> Result<Vec<String>, TaskError> {
        let replies = self.generate_tokens(prepared, generation, |_, _| false, |_, _| {})?;
        replies.iter().map(|ids| self.decode(ids)).collect()
    }

    /// The reply tokens to prepared prompts, each row's tokens passed to `on_token(row, id)`
    /// as it is chosen; `stop(row, reply so far)` ends a row early (a stop string, a client
    /// gone). The end-of-sequence token is not part of a reply.
    pub fn generate_tokens(
        &self,
        prepared: &PreparedBatch,
        generation: &GenerationConfig,
        stop: impl FnMut(usize, &[u32]) -> bool + Send,
        on_token: impl FnMut(usize, u32) + Send,
    ) -> Result<Vec<Vec<u32>>, TaskError> {
        let device = self.loaded.model.llm.device();
        let batch = prepared.to_device(&device, false);
        let model = &self.loaded.model;
        let visual = model.visual_tokens(&batch.hidden_states);
        let [b, t] = batch.ids.dims();
        let embeds = model.embed(batch.ids, visual, &batch.slots);
        let h = embeds.dims()[2];
        let prompts: Vec<EmbeddedPrompt> = prepared
            .rows
            .iter()
            .enumerate()
            .map(|(r, row)| EmbeddedPrompt {
                embeds: embeds
                    .clone()
                    .narrow(0, r, 1)
                    .narrow(1, 0, row.len())
                    .reshape([row.len(), h]),
                seen: row.ids.clone(),
            })
            .collect();
        debug_assert_eq!((b, t), (prompts.len(), prepared.width()));
        Ok(generate_embedded(
            &model.llm,
            &prompts,
            &self.loaded.tokenizer.eos,
            generation,
            stop,
            on_token,
        )?)
    }

    /// The text of reply tokens, trimmed as every task writes it.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TaskError> {
        self.loaded
            .tokenizer
            .decode(ids)
            .map(|s| s.trim().to_string())
            .map_err(|e| TaskError::Tokenizer(e.to_string()))
    }

    /// Conversations tokenized as prompts awaiting the assistant's reply, their images
    /// encoded.
    pub fn prepare_conversations(
        &self,
        conversations: Vec<Conversation>,
    ) -> Result<PreparedBatch, TaskError> {
        self.prepare(
            conversations
                .into_iter()
                .map(|c| (ask(Task::Commenting, c.turns, c.images.len()), c.images))
                .collect(),
        )
    }

    /// Scores of `images` (as the encoder sees them), `config.batch_size` at a time.
    pub fn score(&self, images: &[Arc<RgbImage>]) -> Result<Vec<Score>, TaskError> {
        let mut scores = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.config.batch_size) {
            let samples = |prompt: &str| {
                chunk
                    .iter()
                    .map(|image| {
                        (
                            ask(Task::Scoring, vec![(Role::User, prompt.to_string())], 1),
                            vec![image.clone()],
                        )
                    })
                    .collect::<Vec<_>>()
            };
            let levels = self.prepare(samples(prompts::SCORE_LEVELS))?;
            let (probabilities, heads) = self.answer_probabilities_and_heads(&levels, &LEVELS)?;
            let numeric = self.prepare(samples(prompts::SCORE))?;
            let generation = GenerationConfig {
                max_new_tokens: self.config.score_max_new_tokens,
                ..GenerationConfig::default()
            };
            let written = self.generate(&numeric, &generation)?;
            for (i, (p, text)) in probabilities.iter().zip(&written).enumerate() {
                let p: [f64; 5] = [p[0], p[1], p[2], p[3], p[4]];
                let score_levels = expected_level_score(&p);
                let score_numeric = parse_score(text);
                let head = heads.as_ref().and_then(|h| h.get(i)).copied();
                let score_distribution = head.map(|h| h.0);
                let score_regression = head.map(|h| h.1);
                scores.push(Score {
                    score: match self.config.score_readout {
                        ScoreReadout::Levels => Some(score_levels),
                        ScoreReadout::Numeric => score_numeric,
                        ScoreReadout::Distribution => score_distribution,
                        ScoreReadout::Regression => score_regression,
                    },
                    score_numeric,
                    score_levels,
                    level_probabilities: p,
                    score_distribution,
                    score_regression,
                });
            }
        }
        Ok(scores)
    }

    /// The reply to `prompt` (holding one `<image>`) for each image.
    pub fn describe(
        &self,
        images: &[Arc<RgbImage>],
        prompt: &str,
    ) -> Result<Vec<String>, TaskError> {
        let mut texts = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.config.batch_size) {
            let samples = chunk
                .iter()
                .map(|image| {
                    (
                        ask(Task::Commenting, vec![(Role::User, prompt.to_string())], 1),
                        vec![image.clone()],
                    )
                })
                .collect();
            let prepared = self.prepare(samples)?;
            texts.extend(self.generate(&prepared, &self.config.generation)?);
        }
        Ok(texts)
    }

    /// Personalized assessment: `examples` (an image and the user's score each) as earlier
    /// turns of the conversation, then each query image. Returns what the model writes and the
    /// expectation of the first digit it would write.
    pub fn personalize(
        &self,
        examples: &[(Arc<RgbImage>, f64)],
        queries: &[Arc<RgbImage>],
    ) -> Result<Vec<PersonalScore>, TaskError> {
        let mut turns = rated_turns(examples.iter().map(|(_, score)| *score));
        turns.push((Role::User, prompts::PERSONAL_EXAMPLE.to_string()));
        let digits: Vec<String> = (1..=9).map(|d| d.to_string()).collect();
        let digits: Vec<&str> = digits.iter().map(String::as_str).collect();
        let generation = GenerationConfig {
            max_new_tokens: self.config.score_max_new_tokens,
            ..GenerationConfig::default()
        };
        let mut out = Vec::with_capacity(queries.len());
        // One query at a time: the k example images dominate the prompt's length.
        for query in queries {
            let mut images: Vec<Arc<RgbImage>> = examples.iter().map(|(i, _)| i.clone()).collect();
            images.push(query.clone());
            let sample = ask(Task::Personalized, turns.clone(), images.len());
            let prepared = self.prepare(vec![(sample, images)])?;
            let p = self.answer_probabilities(&prepared, &digits)?;
            let expected = p[0]
                .iter()
                .enumerate()
                .map(|(i, p)| p * (i + 1) as f64)
                .sum::<f64>();
            let written = self.generate(&prepared, &generation)?;
            let score_numeric = written.first().and_then(|t| parse_score(t));
            out.push(PersonalScore {
                score: score_numeric.unwrap_or(expected),
                score_numeric,
                score_expected: expected,
            });
        }
        Ok(out)
    }
}
