//! Evaluation: pure metric functions (`scores`, `captions`), the task runners that feed them
//! (`tasks`), and the paper's protocols built from both (`protocols`).

pub mod captions;
pub mod degradations;
pub mod held_out;
pub mod protocols;
pub mod raters;
pub mod scores;
pub mod tasks;
