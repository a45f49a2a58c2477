//! Evaluation: pure metric functions, and (later) the task runners that feed them.

pub mod degradations;
