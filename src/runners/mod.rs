//! Runners: what runs a fine-tuned model over images and datasets and hands the answers to
//! `eval`'s metrics: the task runners (`tasks`), the paper's protocols (`protocols`), the
//! held-out check (`held_out`) and the simulated raters (`raters`).

pub mod held_out;
pub mod protocols;
pub mod raters;
pub mod tasks;
