//! Training: losses, schedules, loops, checkpoints and logging.

pub mod tensorboard;
