//! Batching with worker threads that decode and transform ahead of the consumer, in the manner
//! of PyTorch's `DataLoader` (`num_workers`, `prefetch_factor`): a bounded number of batches is
//! in flight, and batches come out in order whatever the workers' timing.
//!
//! Randomness (shuffling, random crops) is derived from (seed, epoch, sample index), so a run is
//! reproducible for any number of workers.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::DataError;
use crate::streams::Stream;

/// What to do with an image that cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadImagePolicy {
    /// Leave it out of its batch and count it (`Loader::skipped`).
    #[default]
    Skip,
    /// Stop with an error naming the file.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Decoding threads; 0 decodes on the caller's thread.
    pub num_workers: usize,
    /// Batches each worker may prepare ahead of the consumer.
    pub prefetch_batches: usize,
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    pub bad_images: BadImagePolicy,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            num_workers: 2,
            prefetch_batches: 2,
            shuffle: true,
            drop_last: false,
            bad_images: BadImagePolicy::Skip,
        }
    }
}

/// One sample that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub index: usize,
    pub what: String,
    pub reason: String,
}

/// Loads one sample: given its index and an RNG seeded for (seed, epoch, index), returns the
/// sample or why it is unusable (`what` names it, e.g. its path).
pub trait SampleSource: Send + Sync + 'static {
    type Item: Send + 'static;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn load(&self, index: usize, rng: &mut StdRng) -> Result<Self::Item, Skipped>;
    /// Names a sample in reports, e.g. by its path.
    fn describe(&self, index: usize) -> String {
        format!("sample {index}")
    }
}

/// The samples of one batch that loaded, with their dataset indices.
#[derive(Debug)]
pub struct Batch<T> {
    pub indices: Vec<usize>,
    pub items: Vec<T>,
    /// The batch's samples that could not be loaded (under `BadImagePolicy::Skip`).
    pub skipped: Vec<Skipped>,
}

/// Upper bounds that keep a mistyped config from exhausting threads or memory.
pub const MAX_WORKERS: usize = 256;
pub const MAX_PREFETCH_BATCHES: usize = 64;
/// Images (or conversations) a batch may hold.
pub const MAX_BATCH_SIZE: usize = 4_096;

/// Splits a dataset into batches and loads them on worker threads.
pub struct Loader<S: SampleSource> {
    source: Arc<S>,
    config: LoaderConfig,
    seed: u64,
    skipped: Arc<Mutex<Vec<Skipped>>>,
}

impl<S: SampleSource> Loader<S> {
    pub fn new(source: S, config: LoaderConfig, seed: u64) -> Self {
        Self {
            source: Arc::new(source),
            config,
            seed,
            skipped: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// Samples left out so far under `BadImagePolicy::Skip`, in the order their batches were
    /// consumed, across epochs.
    pub fn skipped(&self) -> Vec<Skipped> {
        self.skipped.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The batches of one epoch, as index lists, shuffled if configured.
    pub fn plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(
                Stream::LoaderOrder.seed(self.seed, epoch),
            ));
        }
        let size = self.config.batch_size.max(1);
        order
            .chunks(size)
            .filter(|chunk| !self.config.drop_last || chunk.len() == size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Iterates over one epoch. Batches in which every sample failed are left out.
    pub fn epoch(&self, epoch: u64) -> Epoch<S> {
        let plan = self.plan(epoch);
        let job = BatchJob {
            source: Arc::clone(&self.source),
            seed: self.seed,
            epoch,
            policy: self.config.bad_images,
        };
        let workers = self.config.num_workers.min(MAX_WORKERS);
        let prefetch = self.config.prefetch_batches.clamp(1, MAX_PREFETCH_BATCHES);
        let (job_tx, job_rx) = channel::<(usize, Vec<usize>)>();
        let (out_tx, out_rx) = sync_channel(workers * prefetch);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let cancel = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers {
            let (job, job_rx, out_tx, cancel) = (
                job.clone(),
                Arc::clone(&job_rx),
                out_tx.clone(),
                Arc::clone(&cancel),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("calm-loader-{n}"))
                .spawn(move || worker(job, job_rx, out_tx, cancel));
            // Fewer threads than asked for (the OS refused one) only makes loading slower.
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(_) => break,
            }
        }
        let log = Arc::clone(&self.skipped);
        if handles.is_empty() {
            return Epoch {
                plan,
                next: 0,
                log,
                mode: Mode::Inline(job),
            };
        }
        let in_flight = handles.len() * prefetch;
        let mut epoch = Epoch {
            plan,
            next: 0,
            log,
            mode: Mode::Threads(Threads {
                jobs: Some(job_tx),
                results: Some(out_rx),
                sent: 0,
                ready: BTreeMap::new(),
                workers: handles,
                cancel,
            }),
        };
        for _ in 0..in_flight {
            epoch.dispatch();
        }
        epoch
    }
}

type BatchResult<T> = Result<Batch<T>, DataError>;

struct BatchJob<S: SampleSource> {
    source: Arc<S>,
    seed: u64,
    epoch: u64,
    policy: BadImagePolicy,
}

impl<S: SampleSource> Clone for BatchJob<S> {
    fn clone(&self) -> Self {
        Self {
            source: Arc::clone(&self.source),
            seed: self.seed,
            epoch: self.epoch,
            policy: self.policy,
        }
    }
}

impl<S: SampleSource> BatchJob<S> {
    fn run(&self, indices: &[usize]) -> BatchResult<S::Item> {
        let mut batch = Batch {
            indices: Vec::with_capacity(indices.len()),
            items: Vec::with_capacity(indices.len()),
            skipped: Vec::new(),
        };
        for &index in indices {
            let mut rng = StdRng::seed_from_u64(
                Stream::LoaderSample { epoch: self.epoch }.seed(self.seed, index as u64),
            );
            // A decoder that panics on one hostile file costs that file, not the run.
            let loaded = catch_unwind(AssertUnwindSafe(|| self.source.load(index, &mut rng)))
                .unwrap_or_else(|_| {
                    Err(Skipped {
                        index,
                        what: self.source.describe(index),
                        reason: "its loader panicked".to_string(),
                    })
                });
            match loaded {
                Ok(item) => {
                    batch.indices.push(index);
                    batch.items.push(item);
                }
                Err(skip) => match self.policy {
                    BadImagePolicy::Fail => {
                        return Err(DataError::BadSample {
                            what: skip.what,
                            reason: skip.reason,
                        });
                    }
                    BadImagePolicy::Skip => batch.skipped.push(skip),
                },
            }
        }
        Ok(batch)
    }
}

/// The queue the workers share: each job is a batch's position and its sample indices.
type JobQueue = Arc<Mutex<Receiver<(usize, Vec<usize>)>>>;

fn worker<S: SampleSource>(
    job: BatchJob<S>,
    jobs: JobQueue,
    out: SyncSender<(usize, BatchResult<S::Item>)>,
    cancel: Arc<AtomicBool>,
) {
    loop {
        let next = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        // Jobs already queued are still delivered after the epoch is dropped; skip them.
        let Ok((number, indices)) = next else { return };
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        if out.send((number, job.run(&indices))).is_err() {
            return;
        }
    }
}

enum Mode<S: SampleSource> {
    Inline(BatchJob<S>),
    Threads(Threads<S::Item>),
}

struct Threads<T> {
    jobs: Option<Sender<(usize, Vec<usize>)>>,
    results: Option<Receiver<(usize, BatchResult<T>)>>,
    sent: usize,
    ready: BTreeMap<usize, BatchResult<T>>,
    workers: Vec<JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
}

/// One pass over the data; yields batches in plan order.
pub struct Epoch<S: SampleSource> {
    plan: Vec<Vec<usize>>,
    next: usize,
    log: Arc<Mutex<Vec<Skipped>>>,
    mode: Mode<S>,
}

impl<S: SampleSource> Epoch<S> {
    /// Number of batches planned (some may come out empty and be left out).
    pub fn planned(&self) -> usize {
        self.plan.len()
    }

    fn dispatch(&mut self) {
        if let Mode::Threads(t) = &mut self.mode
            && t.sent < self.plan.len()
        {
            if let Some(jobs) = &t.jobs {
                // A send fails only if every worker is gone, which `next` then reports.
                let _ = jobs.send((t.sent, self.plan[t.sent].clone()));
            }
            t.sent += 1;
        }
    }

    fn next_raw(&mut self) -> Option<BatchResult<S::Item>> {
        if self.next >= self.plan.len() {
            return None;
        }
        let number = self.next;
        self.next += 1;
        let result = match &mut self.mode {
            Mode::Inline(job) => job.run(&self.plan[number]),
            Mode::Threads(t) => loop {
                if let Some(done) = t.ready.remove(&number) {
                    break done;
                }
                match t.results.as_ref().map(Receiver::recv) {
                    Some(Ok((n, r))) => {
                        t.ready.insert(n, r);
                    }
                    _ => break Err(DataError::WorkerLost),
                }
            },
        };
        self.dispatch();
        // Logged as batches are consumed, so the log's order does not depend on the workers.
        if let (Ok(batch), Ok(mut log)) = (&result, self.log.lock()) {
            log.extend(batch.skipped.iter().cloned());
        }
        Some(result)
    }
}

impl<S: SampleSource> Iterator for Epoch<S> {
    type Item = BatchResult<S::Item>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_raw()? {
                Ok(batch) if batch.items.is_empty() => continue,
                other => return Some(other),
            }
        }
    }
}

impl<S: SampleSource> Drop for Epoch<S> {
    fn drop(&mut self) {
        if let Mode::Threads(t) = &mut self.mode {
            // Workers finish the batch in hand, then see the flag or the closed channels.
            t.cancel.store(true, Ordering::Relaxed);
            t.jobs.take();
            t.results.take();
            for handle in t.workers.drain(..) {
                let _ = handle.join();
            }
        }
    }
}
