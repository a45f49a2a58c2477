//! YAML experiment sweeps (`experiments/<name>/sweep.yaml`): expansion into runs with stable
//! ids, running them as separate processes of the same code as `pretrain`, `finetune` and
//! `evaluate task`, and the results tables and figures under `results/<name>/`.

pub mod plots;
pub mod runner;
pub mod spec;
pub mod summary;

pub use spec::{Bases, PlannedRun, Sweep, SweepCommand, SweepError, SweepSpec, config_id};
