//! Everything that touches files of models: where fetched weights live, the mapping of
//! checkpoints onto modules with missing and unexpected keys reported, `inspect forward`, and
//! crash-safe writes.

pub mod architectures;
pub mod atomic;
pub mod checkpoint;
pub mod encoders;
pub mod forward;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod models;
pub mod pytorch;
pub mod tokenizer;
