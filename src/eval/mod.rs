//! Evaluation: pure metric functions (`scores`, `captions`, `degradations`), and the
//! configuration and reports of what `runners` runs (`tasks`, `protocols`, `raters`).

pub mod captions;
pub mod degradations;
pub mod protocols;
pub mod raters;
pub mod scores;
pub mod tasks;
