//! The model's thread: it owns the loaded run and takes jobs in arrival order, running together
//! the jobs of one kind that wait together, up to `infer.batch_size` images (continuous
//! batching in the simple form llama.cpp's server and TGI started from: batches form at the
//! queue, not mid-generation). A job whose client has gone, or whose deadline has passed, is
//! dropped before it runs; generation stops early for the same reasons.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::RgbImage;
use tokio::sync::{mpsc, oneshot};

use crate::eval::tasks::{PersonalScore, Score};
use crate::model::generate::{GenerateError, GenerationConfig};
use crate::runners::tasks::{Conversation, Runner, TaskError};

/// Why a job produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// The request itself cannot be answered (a prompt beyond the context, say): a 400.
    Request(String),
    /// The model failed on a request that passed every check: a 500.
    Model(String),
    /// The deadline passed before the job ran or finished: a 504.
    Timeout,
}

impl From<TaskError> for JobError {
    fn from(e: TaskError) -> Self {
        let request = matches!(
            e,
            TaskError::Generate(GenerateError::TooLong { .. } | GenerateError::Invalid(_))
                | TaskError::Conversation(_)
                | TaskError::Prepare(_)
        );
        if request {
            Self::Request(e.to_string())
        } else {
            Self::Model(e.to_string())
        }
    }
}

/// What a generation job sends as it goes, one conversation (`row`) at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// More of the reply's text: deltas joined are a prefix of `Done`'s text.
    Delta {
        row: usize,
        text: String,
    },
    Done {
        row: usize,
        reply: Reply,
    },
    Failed(JobError),
}

/// A finished reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Trimmed, and cut before any stop string.
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish: Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The end-of-sequence token, a stop string, or a client gone.
    Stop,
    /// The token budget ran out.
    Length,
}

/// The work of one request.
pub enum Work {
    Score {
        images: Vec<Arc<RgbImage>>,
        reply: oneshot::Sender<Result<Vec<Score>, JobError>>,
    },
    Personalize {
        examples: Vec<(Arc<RgbImage>, f64)>,
        images: Vec<Arc<RgbImage>>,
        reply: oneshot::Sender<Result<Vec<PersonalScore>, JobError>>,
    },
    Generate {
        conversations: Vec<Conversation>,
        generation: GenerationConfig,
        stop: Vec<String>,
        events: mpsc::UnboundedSender<GenerationEvent>,
    },
}

pub struct Job {
    pub work: Work,
    pub deadline: Instant,
}

impl Job {
    /// Whether nobody waits for the answer any more.
    fn abandoned(&self) -> bool {
        match &self.work {
            Work::Score { reply, .. } => reply.is_closed(),
            Work::Personalize { reply, .. } => reply.is_closed(),
            Work::Generate { events, .. } => events.is_closed(),
        }
    }

    fn fail(self, error: JobError) {
        // A receiver gone has nobody to tell.
        match self.work {
            Work::Score { reply, .. } => drop(reply.send(Err(error))),
            Work::Personalize { reply, .. } => drop(reply.send(Err(error))),
            Work::Generate { events, .. } => drop(events.send(GenerationEvent::Failed(error))),
        }
    }

    /// Images the job runs through the model at once.
    fn images(&self) -> usize {
        match &self.work {
            Work::Score { images, .. } => images.len(),
            Work::Personalize { .. } => usize::MAX,
            Work::Generate { conversations, .. } => conversations.len(),
        }
    }

    /// Whether `self` can run in one batch with `other`.
    fn batches_with(&self, other: &Job) -> bool {
        match (&self.work, &other.work) {
            (Work::Score { .. }, Work::Score { .. }) => true,
            (
                Work::Generate {
                    generation: a,
                    stop: sa,
                    ..
                },
                Work::Generate {
                    generation: b,
                    stop: sb,
                    ..
                },
            ) => a == b && sa == sb,
            _ => false,
        }
    }
}

/// Takes jobs from `jobs` until every sender is gone, `waiting` counting those not started.
pub fn run(runner: &Runner<'_>, jobs: &Receiver<Job>, waiting: &AtomicUsize) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match jobs.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return,
            }
        }
        queue.extend(jobs.try_iter());
        let batch = take_batch(&mut queue, runner.config.batch_size.max(1));
        waiting.fetch_sub(batch.len(), Ordering::SeqCst);
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for job in batch {
            if job.abandoned() {
                continue;
            }
            if job.deadline <= now {
                job.fail(JobError::Timeout);
                continue;
            }
            live.push(job);
        }
        if !live.is_empty() {
            // A panic in the model (a shape nothing checked) drops the batch's senders, so its
            // clients get a 500; the thread goes on with the next jobs.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_batch(runner, live);
            }));
            if ran.is_err() {
                crate::errln!("serve: the model panicked on a batch; its requests got errors");
            }
        }
    }
}

/// The first job and those after it (in order, skipping others) that batch with it, until
/// `batch_size` images; a job bigger than that runs alone.
fn take_batch(queue: &mut VecDeque<Job>, batch_size: usize) -> Vec<Job> {
    let Some(first) = queue.pop_front() else {
        return Vec::new();
    };
    let mut images = first.images();
    let mut batch = vec![first];
    let mut i = 0;
    while i < queue.len() && images < batch_size {
        let fits = queue[i].batches_with(&batch[0])
            && images.saturating_add(queue[i].images()) <= batch_size;
        if fits {
            if let Some(job) = queue.remove(i) {
                images += job.images();
                batch.push(job);
            }
        } else {
            i += 1;
        }
    }
    batch
}

fn run_batch(runner: &Runner<'_>, batch: Vec<Job>) {
    let deadline = batch.iter().map(|j| j.deadline).max();
    match &batch[0].work {
        Work::Score { .. } => {
            let images: Vec<Arc<RgbImage>> = batch
                .iter()
                .flat_map(|job| match &job.work {
                    Work::Score { images, .. } => images.clone(),
                    _ => Vec::new(),
                })
                .collect();
            let mut scores = runner.score(&images).map_err(JobError::from);
            for job in batch {
                let Work::Score { images, reply } = job.work else {
                    continue;
                };
                let answer = match &mut scores {
                    Ok(all) => Ok(all.drain(..images.len().min(all.len())).collect()),
                    Err(e) => Err(e.clone()),
                };
                drop(reply.send(answer));
            }
        }
        Work::Personalize { .. } => {
            for job in batch {
                let Work::Personalize {
                    examples,
                    images,
                    reply,
                } = job.work
                else {
                    continue;
                };
                drop(reply.send(runner.personalize(&examples, &images).map_err(Into::into)));
            }
        }
        Work::Generate { .. } => generate(runner, batch, deadline.unwrap_or_else(Instant::now)),
    }
}

/// One reply being written: its tokens, and how much of its text has been sent.
struct Row {
    job: usize,
    conversation: usize,
    ids: Vec<u32>,
    sent: usize,
    stopped_by_string: bool,
}

fn generate(runner: &Runner<'_>, batch: Vec<Job>, deadline: Instant) {
    let mut senders = Vec::with_capacity(batch.len());
    let mut conversations = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut settings = None;
    for (j, job) in batch.into_iter().enumerate() {
        let Work::Generate {
            conversations: c,
            generation,
            stop,
            events,
        } = job.work
        else {
            continue;
        };
        for (i, conversation) in c.into_iter().enumerate() {
            rows.push(Row {
                job: j,
                conversation: i,
                ids: Vec::new(),
                sent: 0,
                stopped_by_string: false,
            });
            conversations.push(conversation);
        }
        settings.get_or_insert((generation, stop));
        senders.push(events);
    }
    let Some((generation, stop)) = settings else {
        return;
    };
    let fail_all = |error: JobError| {
        for s in &senders {
            drop(s.send(GenerationEvent::Failed(error.clone())));
        }
    };
    let prepared = match runner.prepare_conversations(conversations.clone()) {
        Ok(p) => p,
        Err(e) => return fail_all(e.into()),
    };
    // A prompt that leaves no room for a reply fails its own request, not its batch's.
    let context = runner.loaded.model.llm.max_position_embeddings;
    let mut refused = vec![false; senders.len()];
    for (row, prepared_row) in rows.iter().zip(&prepared.rows) {
        let tokens = prepared_row.len();
        if tokens >= context && !refused[row.job] {
            refused[row.job] = true;
            drop(senders[row.job].send(GenerationEvent::Failed(JobError::Request(format!(
                "the prompt has {tokens} tokens (images included); the model's context holds {context}, its reply included"
            )))));
        }
    }
    let prepared = if refused.iter().any(|&r| r) {
        let kept: Vec<bool> = rows.iter().map(|row| !refused[row.job]).collect();
        rows = rows
            .into_iter()
            .zip(&kept)
            .filter_map(|(row, &k)| k.then_some(row))
            .collect();
        let conversations: Vec<Conversation> = conversations
            .into_iter()
            .zip(&kept)
            .filter_map(|(c, &k)| k.then_some(c))
            .collect();
        if conversations.is_empty() {
            return;
        }
        match runner.prepare_conversations(conversations) {
            Ok(p) => p,
            Err(e) => return fail_all(e.into()),
        }
    } else {
        prepared
    };
    let prompt_tokens: Vec<usize> = prepared.rows.iter().map(|r| r.len()).collect();
    let tokenizer = &runner.loaded.tokenizer;
    let state = Mutex::new(rows);
    let on_token = |r: usize, token: u32| {
        let Ok(mut rows) = state.lock() else {
            return;
        };
        let row = &mut rows[r];
        row.ids.push(token);
        let Ok(text) = tokenizer.decode(&row.ids) else {
            return;
        };
        let text = text.trim_start();
        let (text, found) = cut_at_stop(text, &stop);
        row.stopped_by_string = found;
        let end = if found {
            text.trim_end().len()
        } else {
            sendable(text, &stop)
        };
        if end > row.sent && !text[..end].ends_with('\u{FFFD}') {
            let delta = text[row.sent..end].to_string();
            row.sent = end;
            drop(senders[row.job].send(GenerationEvent::Delta {
                row: row.conversation,
                text: delta,
            }));
        }
    };
    let should_stop = |r: usize, _: &[u32]| {
        let Ok(rows) = state.lock() else {
            return true;
        };
        let row = &rows[r];
        row.stopped_by_string || senders[row.job].is_closed() || Instant::now() >= deadline
    };
    let replies = runner.generate_tokens(&prepared, &generation, should_stop, on_token);
    let replies = match replies {
        Ok(r) => r,
        Err(e) => return fail_all(e.into()),
    };
    let rows = state.into_inner().unwrap_or_else(|e| e.into_inner());
    // Generation stops for every row where the longest prompt fills the context.
    let longest = prompt_tokens.iter().copied().max().unwrap_or(0);
    let budget = generation
        .max_new_tokens
        .min(context.saturating_sub(longest));
    for (r, (row, ids)) in rows.iter().zip(&replies).enumerate() {
        let text = match runner.decode(ids) {
            Ok(t) => t,
            Err(e) => {
                drop(senders[row.job].send(GenerationEvent::Failed(e.into())));
                continue;
            }
        };
        let (text, _) = cut_at_stop(&text, &stop);
        let finish = if !row.stopped_by_string && ids.len() >= budget {
            Finish::Length
        } else {
            Finish::Stop
        };
        if Instant::now() >= deadline && finish == Finish::Stop && !row.stopped_by_string {
            // Cut short by the deadline, not finished: the client is told so.
            drop(senders[row.job].send(GenerationEvent::Failed(JobError::Timeout)));
            continue;
        }
        drop(senders[row.job].send(GenerationEvent::Done {
            row: row.conversation,
            reply: Reply {
                text: text.trim_end().to_string(),
                prompt_tokens: prompt_tokens[r],
                completion_tokens: ids.len(),
                finish,
            },
        }));
    }
}

/// `text` up to the first stop string, and whether there was one.
fn cut_at_stop<'t>(text: &'t str, stop: &[String]) -> (&'t str, bool) {
    match stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

/// How much of `text` can be sent now: not trailing whitespace (the final text is trimmed)
/// nor an ending that may grow into a stop string.
fn sendable(text: &str, stop: &[String]) -> usize {
    let text = text.trim_end();
    let mut end = text.len();
    for s in stop {
        for (k, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..k]) {
                end = end.min(text.len() - k);
            }
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_the_text_and_hold_back_what_may_become_one() {
        let stop = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(
            cut_at_stop("a nice photo END more", &stop),
            ("a nice photo ", true)
        );
        assert_eq!(cut_at_stop("no stop here", &stop), ("no stop here", false));
        assert_eq!(cut_at_stop("x\n\ny END", &stop), ("x", true));
        // "EN" may become "END": it waits; trailing spaces wait for the trim.
        assert_eq!(sendable("a nice photo EN", &stop), "a nice photo ".len());
        assert_eq!(sendable("a nice photo  ", &stop), "a nice photo".len());
        assert_eq!(sendable("a nice photo", &[]), "a nice photo".len());
        assert_eq!(sendable("é", &["éa".to_string()]), 0);
    }
}
