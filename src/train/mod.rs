//! Training: losses, schedules, loops, checkpoints and logging.

pub mod losses;
pub mod tensorboard;
