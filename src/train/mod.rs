//! Training: losses, schedules, loops, checkpoints and logging.

pub mod batch;
pub mod checkpoints;
pub mod config;
pub mod finetune;
pub mod instruct_batch;
pub mod losses;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod pretrain;
pub mod progress;
pub mod projector_init;
pub mod replicas;
pub mod resident;
pub mod schedule;
pub mod tensorboard;
pub mod trainer;
