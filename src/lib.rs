//! `calm`: comprehensive aesthetic multimodal models in the style of CALM (Liu et al., "Advancing
//! Comprehensive Aesthetic Insight with Multi-Scale Text-Guided Self-Supervised Learning",
//! AAAI 2025), on Burn.
//!
//! Layout: `config` (layered YAML), `data` (datasets, transforms, loaders, self-supervision
//! signals), `model` (modules, no file access), `io` (checkpoints and other files), `train`
//! (losses, schedules, logging), `eval` (metrics), `device` (backend choice), `files` (bounded reads of regular files), `console` (terminal output that never panics), `run` (output directories), `sweep`
//! (experiment sweeps), `cli` (what the binaries share).

pub mod cli;
pub mod config;
pub mod console;
pub mod data;
pub mod device;
pub mod eval;
pub mod files;
pub mod io;
pub mod model;
pub mod run;
pub mod streams;
pub mod sweep;
pub mod train;
