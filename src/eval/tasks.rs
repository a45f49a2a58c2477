//! Task runners over a fine-tuned CALM model: aesthetic scoring (numeric text and Q-Align's
//! level-word readout, Wu et al. 2023), commenting, zero-shot suggesting and personalized
//! assessment with k rated examples in the prompt. They ask with the instructions training
//! used (`data::instruct::prompts`) and read answers the way training wrote them.

use std::sync::Arc;

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::data::conversation::{ConversationError, tokenize_conversation};
use crate::data::degrade::Degradation;
use crate::data::instruct::{
    InstructSample, LEVELS, SampleImage, Task, expected_level_score, parse_score, prompts,
};
use crate::data::raters::rated_turns;
use crate::data::transform::Transform;
use crate::model::chat::Role;
use crate::model::generate::{EmbeddedPrompt, GenerateError, GenerationConfig, generate_embedded};
use crate::train::finetune::Loaded;
use crate::train::instruct_batch::{PrepareError, PreparedBatch};

/// Which number `infer score` reports as `score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreReadout {
    /// The number the model writes.
    Numeric,
    /// The expectation over the five level words, mapped to 1..10 (Q-Align).
    Levels,
    /// The expectation of the score head's 10-bin distribution (NIMA).
    Distribution,
    /// The score head's regression (ROC4MLLM).
    Regression,
}

/// The `infer:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferConfig {
    pub score_readout: ScoreReadout,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Decoding of comments and suggestions.
    pub generation: GenerationConfig,
    /// Tokens a numeric answer may take ("10.0" is 4 tokens where digits are split).
    pub score_max_new_tokens: usize,
}

impl Default for InferConfig {
    fn default() -> Self {
        Self {
            // The level readout is continuous, so it ranks photos a numeric answer would tie.
            score_readout: ScoreReadout::Levels,
            batch_size: 8,
            generation: GenerationConfig {
                max_new_tokens: 48,
                repetition_penalty: 1.1,
                ..GenerationConfig::default()
            },
            score_max_new_tokens: 5,
        }
    }
}

impl InferConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        crate::model::size_within(
            "infer.batch_size",
            self.batch_size,
            crate::data::loader::MAX_BATCH_SIZE,
        )?;
        if !(1..=crate::model::generate::MAX_NEW_TOKENS).contains(&self.score_max_new_tokens) {
            return Err(Invalid::new(
                "infer.score_max_new_tokens",
                format!(
                    "{} is outside 1..={}",
                    self.score_max_new_tokens,
                    crate::model::generate::MAX_NEW_TOKENS
                ),
            ));
        }
        self.generation.validate("infer.generation")
    }
}

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

/// One image's score by each readout; `score` is the configured one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub score: Option<f64>,
    pub score_numeric: Option<f64>,
    pub score_levels: f64,
    /// The five level words' probabilities, worst first.
    pub level_probabilities: [f64; 5],
    /// The score heads' readouts; `None` for a model fine-tuned without them.
    pub score_distribution: Option<f64>,
    pub score_regression: Option<f64>,
}

/// Images read, each with its path, and the files that could not be, each with the reason.
pub type Readable = (
    Vec<(std::path::PathBuf, Arc<RgbImage>)>,
    Vec<(std::path::PathBuf, String)>,
);

/// Each prompt's answer probabilities, and the score heads' (distribution expectation,
/// regression) per prompt where the model has heads.
type ProbabilitiesAndHeads = (Vec<Vec<f64>>, Option<Vec<(f64, f64)>>);

/// Each readout's values over `scores`, by name: `levels`, `numeric`, and the score heads'
/// `distribution` and `regression` where the model has them. NaN where a readout gave no value
/// (an answer without a number), so that a pair it cannot rank counts as wrong.
pub fn readouts(scores: &[Score]) -> Vec<(&'static str, Vec<f64>)> {
    type Pick = fn(&Score) -> Option<f64>;
    let all: [(&str, Pick); 4] = [
        ("levels", |s| Some(s.score_levels)),
        ("numeric", |s| s.score_numeric),
        ("distribution", |s| s.score_distribution),
        ("regression", |s| s.score_regression),
    ];
    let heads = scores.iter().any(|s| s.score_distribution.is_some());
    all.into_iter()
        .filter(|(name, _)| heads || !matches!(*name, "distribution" | "regression"))
        .map(|(name, pick)| {
            let values = scores.iter().map(|s| pick(s).unwrap_or(f64::NAN)).collect();
            (name, values)
        })
        .collect()
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
        let device = self.loaded.model.llm.model.embed_tokens.weight.device();
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
        let device = self.loaded.model.llm.model.embed_tokens.weight.device();
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
        let device = self.loaded.model.llm.model.embed_tokens.weight.device();
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
        let tokenizer = &self.loaded.tokenizer;
        let replies = generate_embedded(
            &model.llm,
            &prompts,
            &tokenizer.eos,
            generation,
            |_, _| false,
            |_, _| {},
        )?;
        replies
            .iter()
            .map(|ids| {
                tokenizer
                    .decode(ids)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| TaskError::Tokenizer(e.to_string()))
            })
            .collect()
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonalScore {
    /// The written number, else the expectation.
    pub score: f64,
    pub score_numeric: Option<f64>,
    /// The expected first digit of the answer, over 1..9.
    pub score_expected: f64,
}

/// Words that name each degradation's defect, to count how often a comment or suggestion
/// about a degraded copy names what was done to it.
pub fn defect_words(kind: Degradation) -> &'static [&'static str] {
    match kind {
        Degradation::Blur => &["blur", "focus", "soft", "sharp"],
        Degradation::Noise => &["noise", "noisy", "grain", "iso"],
        Degradation::Jpeg => &["compress", "artefact", "artifact", "blocky", "jpeg"],
        Degradation::Overexposure => &["overexposed", "too bright", "highlight", "blown"],
        Degradation::Underexposure => &["dark", "underexposed", "shadow"],
        Degradation::Desaturation => &["colour", "color", "saturat", "washed", "faded", "dull"],
        Degradation::Tilt => &["tilt", "level", "horizon", "rotate"],
        Degradation::BadCrop => &["crop", "frame", "cut"],
        // Kinds kept for evaluation: the words of the training defects they resemble count, as
        // a model can only have learnt those.
        Degradation::Brighter => &["overexposed", "too bright", "highlight", "blown"],
        Degradation::LowContrast => &["contrast", "flat", "washed", "faded", "dull", "hazy"],
        Degradation::GaussianBlur => &["blur", "focus", "soft", "sharp"],
        Degradation::ColourCast => &["colour", "color", "cast", "tint", "white balance"],
        Degradation::Vignette => &["vignett", "corner", "dark", "edge"],
        Degradation::Rotation => &["tilt", "level", "horizon", "rotate", "crooked", "straight"],
    }
}

/// The first training defect that `text` states in one of the wordings fine-tuning teaches
/// for it ("is blurred", "is too dark", ...), if any: what a comment on a good photo must not
/// say. Wordings, not `defect_words`: those words also serve praise ("has sharp detail",
/// "vivid colours").
pub fn states_defect(text: &str) -> Option<Degradation> {
    let lower = text.to_lowercase();
    Degradation::ALL.into_iter().find(|&kind| {
        crate::data::cues::degradation_phrase(kind)
            .iter()
            .any(|phrase| lower.contains(&phrase.to_lowercase()))
    })
}

/// Whether `text` names `kind`'s defect.
pub fn names_defect(text: &str, kind: Degradation) -> bool {
    let lower = text.to_lowercase();
    defect_words(kind).iter().any(|w| lower.contains(w))
}
