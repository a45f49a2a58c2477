//! Training: losses, schedules, loops, checkpoints and logging.

pub mod batch;
pub mod losses;
pub mod objective;
pub mod schedule;
pub mod tensorboard;
