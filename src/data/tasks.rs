//! CALM's fine-tuning data from annotated sets (docs/design.md §2), one builder a task:
//! aesthetic scoring from AVA's votes (the mean opinion score as "6.5", and Q-Align's level
//! word), commenting from AVA-Captions, personalized assessment from FLICKR-AES (k of one
//! rater's scored photos in the conversation, then the query), and LLaVA conversations as
//! they are. A stage's `mix` draws from them by ratio; every sample is a function of its index
//! and the seed, so a micro-batch can be made again on resumption.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::formats::ava::{read_ava_txt, read_id_list};
use super::formats::ava_captions::read_ava_captions;
use super::formats::flickr_aes::read_flickr_aes;
use super::formats::llava::{self, read_llava};
use super::instruct::{
    InstructSample, LEVELS, SampleImage, ScoreTarget, Task, format_score, level_of, prompts,
};
use super::raters::{SimulatedRatersConfig, rated_turns};
use super::selfsup_instruct::SelfSupervisedConfig;
use super::{CaptionSplit, DataError};
use crate::config::{Invalid, tagged};
use crate::model::chat::Role;
use crate::streams::Stream;

/// Makes the samples of one task.
pub trait TaskBuilder: Send + Sync {
    fn name(&self) -> &str;
    /// Distinct items (images, conversations, a rater's queries).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Item `index % len()` as a sample; `seed` draws any choices (a comment among several,
    /// the in-context examples).
    fn sample(&self, index: usize, seed: u64) -> Result<InstructSample, DataError>;
}

/// Which score answers AVA gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreAnswers {
    Numeric,
    Levels,
    /// Alternately, so that both readouts are trained.
    #[default]
    Both,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvaScoresTask {
    pub ava_txt: PathBuf,
    pub images: PathBuf,
    /// An official split list of image ids; `null` uses every image.
    pub split_list: Option<PathBuf>,
    pub answers: ScoreAnswers,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvaCaptionsTask {
    pub json: PathBuf,
    pub images: PathBuf,
    pub split: Option<CaptionSplit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlickrAesTask {
    pub csv: PathBuf,
    pub images: PathBuf,
    /// Rated examples of the same rater before each query (CALM uses 10 and 100).
    pub shots: usize,
    /// Only these raters (FLICKR-AES's training workers); `null`: all.
    pub workers: Option<Vec<String>>,
}

impl Default for FlickrAesTask {
    fn default() -> Self {
        Self {
            csv: PathBuf::new(),
            images: PathBuf::new(),
            shots: 10,
            workers: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlavaTask {
    pub json: PathBuf,
    pub images: PathBuf,
}

/// One entry of a stage's data mix; `kind` selects the task.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSourceConfig {
    AvaScores(AvaScoresTask),
    AvaCaptions(AvaCaptionsTask),
    FlickrAes(FlickrAesTask),
    Llava(LlavaTask),
    /// The built-in data: instructions from the training photos' degradations and measured
    /// attributes (`data::selfsup_instruct`).
    SelfSupervised(SelfSupervisedConfig),
    /// The built-in personalized data: simulated raters of the training photos
    /// (`data::raters`).
    SimulatedRaters(SimulatedRatersConfig),
}

impl<'de> Deserialize<'de> for TaskSourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const KINDS: &[&str] = &[
            "ava_scores",
            "ava_captions",
            "flickr_aes",
            "llava",
            "self_supervised",
            "simulated_raters",
        ];
        let (kind, rest) = tagged::split(deserializer, KINDS)?;
        match kind {
            0 => tagged::fields(rest).map(Self::AvaScores),
            1 => tagged::fields(rest).map(Self::AvaCaptions),
            2 => tagged::fields(rest).map(Self::FlickrAes),
            3 => tagged::fields(rest).map(Self::Llava),
            4 => tagged::fields(rest).map(Self::SelfSupervised),
            _ => tagged::fields(rest).map(Self::SimulatedRaters),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    pub task: TaskSourceConfig,
    /// Relative share of the stage's samples.
    pub ratio: f64,
}

pub fn validate_mix(entries: &[MixEntry], key: &str) -> Result<(), Invalid> {
    if entries.is_empty() {
        return Err(Invalid::new(key, "needs at least one task"));
    }
    for (i, e) in entries.iter().enumerate() {
        if !(e.ratio > 0.0 && e.ratio.is_finite()) {
            return Err(Invalid::new(
                format!("{key}[{i}].ratio"),
                "must be positive",
            ));
        }
        if let TaskSourceConfig::FlickrAes(f) = &e.task
            && f.shots == 0
        {
            return Err(Invalid::new(
                format!("{key}[{i}].task.shots"),
                "must be at least 1",
            ));
        }
        if let TaskSourceConfig::SimulatedRaters(r) = &e.task
            && !((1..=12).contains(&r.max_shots) && (1..=5).contains(&r.max_attributes))
        {
            return Err(Invalid::new(
                format!("{key}[{i}].task"),
                format!(
                    "max_shots {} must be within 1..=12 (thirteen images fill the built-in 512 tokens) and max_attributes {} within 1..=5",
                    r.max_shots, r.max_attributes
                ),
            ));
        }
        if let TaskSourceConfig::SelfSupervised(s) = &e.task {
            if s.tasks.is_empty() || s.turns == 0 || s.questions == 0 {
                return Err(Invalid::new(
                    format!("{key}[{i}].task"),
                    "needs at least one task, one turn and one question",
                ));
            }
            if !(0.0 <= s.min_severity && s.min_severity <= s.max_severity && s.max_severity <= 1.0)
            {
                return Err(Invalid::new(
                    format!("{key}[{i}].task"),
                    "needs 0 <= min_severity <= max_severity <= 1",
                ));
            }
            if !(s.score_spread > 0.0 && s.score_spread <= 10.0) {
                return Err(Invalid::new(
                    format!("{key}[{i}].task.score_spread"),
                    format!("{} is outside (0, 10]", s.score_spread),
                ));
            }
        }
    }
    Ok(())
}

/// The builder of an annotated task; `None` for the built-in tasks (`self_supervised`,
/// `simulated_raters`), which the caller builds over its training photos.
pub fn build_task(config: &TaskSourceConfig) -> Result<Option<Box<dyn TaskBuilder>>, DataError> {
    Ok(Some(match config {
        TaskSourceConfig::AvaScores(c) => Box::new(AvaScores::new(c)?),
        TaskSourceConfig::AvaCaptions(c) => Box::new(AvaComments::new(c)?),
        TaskSourceConfig::FlickrAes(c) => Box::new(Personalized::new(c)?),
        TaskSourceConfig::Llava(c) => Box::new(Conversations::new(c)?),
        TaskSourceConfig::SelfSupervised(_) | TaskSourceConfig::SimulatedRaters(_) => {
            return Ok(None);
        }
    }))
}

fn empty(path: &std::path::Path, what: &str) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        message: format!("no {what} to train on"),
    }
}

fn one_turn(task: Task, image: PathBuf, question: &str, answer: String) -> InstructSample {
    InstructSample {
        task,
        images: vec![SampleImage::Path(image)],
        turns: vec![
            (Role::User, question.to_string()),
            (Role::Assistant, answer),
        ],
        branches: Vec::new(),
        score: None,
    }
}

/// AVA: the mean opinion score of each voted image.
pub struct AvaScores {
    items: Vec<(PathBuf, ScoreTarget)>,
    answers: ScoreAnswers,
}

impl AvaScores {
    pub fn new(c: &AvaScoresTask) -> Result<Self, DataError> {
        let mut records = read_ava_txt(&c.ava_txt)?;
        if let Some(list) = &c.split_list {
            let keep: std::collections::HashSet<u64> = read_id_list(list)?.into_iter().collect();
            records.retain(|r| keep.contains(&r.image_id));
        }
        // The score heads learn the whole vote distribution, as NIMA does.
        let items: Vec<(PathBuf, ScoreTarget)> = records
            .iter()
            .filter_map(|r| {
                let target = ScoreTarget::from_votes(r.distribution()?)?;
                Some((r.image_path(&c.images), target))
            })
            .collect();
        if items.is_empty() {
            return Err(empty(&c.ava_txt, "voted images"));
        }
        Ok(Self {
            items,
            answers: c.answers,
        })
    }
}

impl TaskBuilder for AvaScores {
    fn name(&self) -> &str {
        "ava_scores"
    }

    fn len(&self) -> usize {
        match self.answers {
            ScoreAnswers::Both => 2 * self.items.len(),
            _ => self.items.len(),
        }
    }

    fn sample(&self, index: usize, _seed: u64) -> Result<InstructSample, DataError> {
        let n = self.items.len();
        let index = index % self.len();
        let (path, target) = &self.items[index % n];
        let mos = &target.mean;
        // With both: the first pass over the images asks for numbers, the second for words.
        let levels = match self.answers {
            ScoreAnswers::Numeric => false,
            ScoreAnswers::Levels => true,
            ScoreAnswers::Both => index >= n,
        };
        let sample = if levels {
            one_turn(
                Task::ScoringLevels,
                path.clone(),
                prompts::SCORE_LEVELS,
                LEVELS[level_of(*mos)].to_string(),
            )
        } else {
            one_turn(
                Task::Scoring,
                path.clone(),
                prompts::SCORE,
                format_score(*mos),
            )
        };
        Ok(InstructSample {
            score: Some(*target),
            ..sample
        })
    }
}

/// AVA-Captions: one of the image's comments, drawn by the seed.
pub struct AvaComments {
    items: Vec<(PathBuf, Vec<String>)>,
}

impl AvaComments {
    pub fn new(c: &AvaCaptionsTask) -> Result<Self, DataError> {
        let items: Vec<(PathBuf, Vec<String>)> = read_ava_captions(&c.json)?
            .into_iter()
            .filter(|i| c.split.is_none_or(|s| i.split == s))
            .filter(|i| i.captions.iter().any(|t| !t.trim().is_empty()))
            .map(|i| (c.images.join(&i.filename), i.captions))
            .collect();
        if items.is_empty() {
            return Err(empty(&c.json, "commented images"));
        }
        Ok(Self { items })
    }
}

impl TaskBuilder for AvaComments {
    fn name(&self) -> &str {
        "ava_captions"
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn sample(&self, index: usize, seed: u64) -> Result<InstructSample, DataError> {
        let (path, comments) = &self.items[index % self.items.len()];
        let usable: Vec<&String> = comments.iter().filter(|t| !t.trim().is_empty()).collect();
        let mut rng = StdRng::seed_from_u64(Stream::CommentChoice.seed(seed, index as u64));
        let comment = usable
            .choose(&mut rng)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Ok(one_turn(
            Task::Commenting,
            path.clone(),
            prompts::COMMENT,
            comment,
        ))
    }
}

/// FLICKR-AES: each rating of a rater with at least `shots + 1` ratings is a query; `shots`
/// other photos the same rater scored come first, with their scores.
pub struct Personalized {
    /// Per rater, (image, score) in file order.
    raters: Vec<Vec<(PathBuf, f32)>>,
    /// (rater, rating) of every query.
    queries: Vec<(usize, usize)>,
    shots: usize,
}

impl Personalized {
    pub fn new(c: &FlickrAesTask) -> Result<Self, DataError> {
        let mut by_worker: BTreeMap<String, Vec<(PathBuf, f32)>> = BTreeMap::new();
        for r in read_flickr_aes(&c.csv)? {
            if c.workers.as_ref().is_none_or(|w| w.contains(&r.worker)) {
                by_worker
                    .entry(r.worker)
                    .or_default()
                    .push((c.images.join(&r.image), r.score));
            }
        }
        let raters: Vec<Vec<(PathBuf, f32)>> = by_worker
            .into_values()
            .filter(|r| r.len() > c.shots)
            .collect();
        let queries: Vec<(usize, usize)> = raters
            .iter()
            .enumerate()
            .flat_map(|(w, r)| (0..r.len()).map(move |i| (w, i)))
            .collect();
        if queries.is_empty() {
            return Err(DataError::Invalid {
                path: c.csv.clone(),
                message: format!(
                    "no rater has more than {} ratings (finetune task `shots`)",
                    c.shots
                ),
            });
        }
        Ok(Self {
            raters,
            queries,
            shots: c.shots,
        })
    }
}

impl TaskBuilder for Personalized {
    fn name(&self) -> &str {
        "flickr_aes"
    }

    fn len(&self) -> usize {
        self.queries.len()
    }

    fn sample(&self, index: usize, seed: u64) -> Result<InstructSample, DataError> {
        let (w, q) = self.queries[index % self.queries.len()];
        let ratings = &self.raters[w];
        let mut others: Vec<usize> = (0..ratings.len()).filter(|&i| i != q).collect();
        let mut rng = StdRng::seed_from_u64(Stream::PersonalShots.seed(seed, index as u64));
        others.shuffle(&mut rng);
        others.truncate(self.shots);
        others.push(q);
        Ok(InstructSample {
            task: Task::Personalized,
            images: others
                .iter()
                .map(|&i| SampleImage::Path(ratings[i].0.clone()))
                .collect(),
            turns: rated_turns(others.iter().map(|&i| f64::from(ratings[i].1))),
            branches: Vec::new(),
            score: None,
        })
    }
}

/// LLaVA-style conversations, as they are.
pub struct Conversations {
    items: Vec<InstructSample>,
}

impl Conversations {
    pub fn new(c: &LlavaTask) -> Result<Self, DataError> {
        let mut items = Vec::new();
        for (i, conv) in read_llava(&c.json)?.into_iter().enumerate() {
            let bad = |message: String| DataError::Invalid {
                path: c.json.clone(),
                message: format!("sample {i} (id `{}`): {message}", conv.id),
            };
            // A leading system turn is the dataset's own prompt; the model's template has one.
            let turns: Vec<(Role, String)> = conv
                .turns_with_images()
                .into_iter()
                .filter(|t| t.role != llava::Role::System)
                .map(|t| {
                    let role = match t.role {
                        llava::Role::Assistant => Role::Assistant,
                        _ => Role::User,
                    };
                    (role, t.text)
                })
                .collect();
            for (k, (role, _)) in turns.iter().enumerate() {
                let expected = if k % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                if *role != expected {
                    return Err(bad(format!(
                        "turn {k} breaks the user/assistant alternation"
                    )));
                }
            }
            if turns.last().is_none_or(|(r, _)| *r != Role::Assistant) {
                return Err(bad("does not end with an answer".into()));
            }
            items.push(InstructSample {
                task: Task::Conversation,
                images: conv
                    .images
                    .iter()
                    .map(|p| SampleImage::Path(c.images.join(p)))
                    .collect(),
                turns,
                branches: Vec::new(),
                score: None,
            });
        }
        if items.is_empty() {
            return Err(empty(&c.json, "conversations"));
        }
        Ok(Self { items })
    }
}

impl TaskBuilder for Conversations {
    fn name(&self) -> &str {
        "llava"
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn sample(&self, index: usize, _seed: u64) -> Result<InstructSample, DataError> {
        Ok(self.items[index % self.items.len()].clone())
    }
}

/// Builders drawn from by ratio.
pub struct Mix {
    builders: Vec<Box<dyn TaskBuilder>>,
    /// Cumulative shares, ending at 1.
    cumulative: Vec<f64>,
}

impl Mix {
    pub fn new(builders: Vec<(Box<dyn TaskBuilder>, f64)>) -> Result<Self, DataError> {
        let total: f64 = builders.iter().map(|(_, r)| r).sum();
        if builders.is_empty() || total.is_nan() || total <= 0.0 {
            return Err(DataError::BadSample {
                what: "a data mix".into(),
                reason: "has no tasks".into(),
            });
        }
        if let Some((b, _)) = builders.iter().find(|(b, _)| b.is_empty()) {
            return Err(DataError::BadSample {
                what: format!("task `{}`", b.name()),
                reason: "has no items".into(),
            });
        }
        let mut acc = 0.0;
        let cumulative = builders
            .iter()
            .map(|(_, r)| {
                acc += r / total;
                acc
            })
            .collect();
        Ok(Self {
            builders: builders.into_iter().map(|(b, _)| b).collect(),
            cumulative,
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.builders.iter().map(|b| b.name()).collect()
    }

    /// Distinct items over every task: one epoch's worth of samples.
    pub fn len(&self) -> usize {
        self.builders.iter().map(|b| b.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index` of the stream: its task drawn by ratio, the same for the `group`
    /// consecutive samples of one micro-batch, and its item uniformly from that task's items
    /// (with replacement, as LLaVA's sampler over a concatenated set is close to), all from
    /// `seed` and `index` alone. One task a micro-batch because a batch is padded to its
    /// longest conversation, and tasks differ in length several times over (a simulated
    /// rater's seven images against one): mixed, most batches would be padded to a rater's
    /// length (measured: three times the tokens of the built-in job's steps).
    pub fn sample(
        &self,
        index: usize,
        group: usize,
        seed: u64,
    ) -> Result<InstructSample, DataError> {
        let mut task_rng =
            StdRng::seed_from_u64(Stream::TaskChoice.seed(seed, (index / group.max(1)) as u64));
        let u: f64 = task_rng.random();
        let b = self
            .cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.builders.len() - 1);
        let builder = &self.builders[b];
        let mut rng = StdRng::seed_from_u64(Stream::ItemChoice.seed(seed, index as u64));
        let item = rng.random_range(0..builder.len());
        builder.sample(item, Stream::TaskSample.seed(seed, index as u64))
    }
}
