//! Configuration core: layered YAML files and `--set` overrides over a typed tree's Rust
//! defaults, validation, and tagged sections. Each section's type lives with the module it
//! configures; the whole tree is `experiment::ExperimentConfig`.

mod layered;
pub mod tagged;

pub use layered::{ConfigError, Invalid, Layers, Source, Validate, load, to_yaml, yaml_error_line};
