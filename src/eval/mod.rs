//! Evaluation: pure metric functions, and (later) the task runners that feed them.

pub mod captions;
pub mod degradations;
pub mod held_out;
pub mod scores;
pub mod tasks;
