//! `calm`: comprehensive aesthetic multimodal models in the style of CALM (Liu et al., "Advancing
//! Comprehensive Aesthetic Insight with Multi-Scale Text-Guided Self-Supervised Learning",
//! AAAI 2025), on Burn.
//!
//! Layout, lowest first; a module uses only those before it (`scripts/check_module_cycles.py`):
//! `files` (bounded reads of regular files), `console` (terminal output that never panics),
//! `device` (backend choice), `distributed` (the processes of a data-parallel job), `config` (layered YAML, validation), `model` (modules, no file
//! access), `data` (datasets, transforms, loaders, self-supervision signals), `io` (checkpoints
//! and other files), `run` (output directories), `eval` (metrics, the runners' configs and
//! reports), `train` (losses, schedules, the training loop and its jobs, logging), `experiment`
//! (the whole config; pretraining and fine-tuning runs from it), `runners` (models run over
//! images and datasets), `serve` (the HTTP server of `infer serve`), `cli` (what the binaries share), `commands` (what the binaries run),
//! `sweep` (experiment sweeps).

pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod data;
pub mod device;
pub mod distributed;
pub mod eval;
pub mod experiment;
pub mod files;
pub mod io;
pub mod model;
pub mod run;
pub mod runners;
pub mod serve;
pub mod streams;
pub mod sweep;
pub mod train;
