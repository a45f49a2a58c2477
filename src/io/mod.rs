//! Everything that touches files of models: where fetched weights live, and (in later modules)
//! the mapping of checkpoints onto modules with missing and unexpected keys reported.

pub mod checkpoint;
pub mod forward;
pub mod hf;
pub mod models;
pub mod pytorch;
