//! A sweep spec (`experiments/<name>/sweep.yaml`) and its expansion into runs.
//!
//! The axes follow the usual vocabulary of sweep tools (Hydra's multirun, W&B sweeps): a grid
//! is the cartesian product of its keys' values, a zip walks its keys' lists in step, a list
//! names whole override sets, and seeds repeat every configuration. Axes of different kinds
//! combine as a cartesian product. Every run's overrides are applied as `--set KEY=VALUE`
//! after its base config, exactly as a researcher would type them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigError, Layers};
use crate::experiment::ExperimentConfig;
use crate::run::RunLayout;

/// What each run of a sweep executes: the code of the binary of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepCommand {
    Pretrain,
    Finetune,
    /// `evaluate task` with the fine-tuning run named by `checkpoint`; the base is an eval
    /// config (configs/eval/).
    Evaluate,
}

impl SweepCommand {
    pub fn name(self) -> &'static str {
        match self {
            SweepCommand::Pretrain => "pretrain",
            SweepCommand::Finetune => "finetune",
            SweepCommand::Evaluate => "evaluate",
        }
    }

    /// Top-level sections of a resolved config this command does not read: a run stays
    /// valid when only they change (a pretraining run is not made stale by a new fine-tuning
    /// default). `distributed` is among them for every command: how often replicas compare
    /// their parameters changes nothing a run computes.
    pub fn unread_sections(self) -> &'static [&'static str] {
        match self {
            SweepCommand::Pretrain => &["finetune", "infer", "distributed"],
            SweepCommand::Finetune | SweepCommand::Evaluate => &["distributed"],
        }
    }

    /// `resolved` (a resolved config's YAML) without the sections `unread_sections` names:
    /// each top-level key starts a line at column 0, and its section runs to the next one.
    pub fn read_part(self, resolved: &str) -> String {
        let unread = self.unread_sections();
        let mut keep = true;
        let mut out = String::with_capacity(resolved.len());
        for line in resolved.split_inclusive('\n') {
            let top = line
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && c != '#');
            if top {
                let key = line.split(':').next().unwrap_or_default().trim();
                keep = !unread.contains(&key);
            }
            if keep {
                out.push_str(line);
            }
        }
        out
    }

    /// The JSON file of a finished run that holds its metrics.
    pub fn metrics_file(self) -> &'static str {
        match self {
            SweepCommand::Pretrain | SweepCommand::Finetune => RunLayout::SUMMARY,
            SweepCommand::Evaluate => RunLayout::EVAL_METRICS,
        }
    }

    /// What the summary tabulates when the spec names no `metrics`.
    pub fn default_metrics(self) -> Vec<String> {
        let keys: &[&str] = match self {
            SweepCommand::Pretrain => &["degradations.pairwise_accuracy", "last_step.loss"],
            SweepCommand::Finetune => &[
                "held_out.pairwise_accuracy",
                "held_out.comments_naming_defect",
                "held_out.suggestions_naming_defect",
                "held_out.originals_comments_without_defect",
                "last_step.loss",
            ],
            SweepCommand::Evaluate => &["metrics.srcc", "metrics.plcc"],
        };
        keys.iter().map(|k| k.to_string()).collect()
    }
}

/// One base config or several; several become an axis of their own, `base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bases {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

/// `experiments/<name>/sweep.yaml`. Paths inside it are relative to the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// Names `results/<name>/`; the spec's folder name when absent.
    #[serde(default)]
    pub name: Option<String>,
    pub command: SweepCommand,
    /// The config file(s) each run starts from; the built-in defaults when absent.
    #[serde(default)]
    pub base: Option<Bases>,
    /// The fine-tuning run an `evaluate` sweep evaluates.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Overrides shared by every run (not swept, not part of the run ids).
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    /// Every combination of these keys' values.
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// These keys' lists, walked in step (all of one length).
    #[serde(default)]
    pub zip: BTreeMap<String, Vec<Value>>,
    /// Whole override sets, one configuration each (`{}` is the base as it is).
    #[serde(default)]
    pub list: Vec<BTreeMap<String, Value>>,
    /// Each configuration runs once per seed (the config key `seed`).
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Dotted paths into each run's metrics file to tabulate; per-command defaults.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// A scalar tag of the runs' event files to draw as learning curves.
    #[serde(default = "default_curve")]
    pub curve: String,
}

fn default_curve() -> String {
    "loss/total".to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read the sweep spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("run {id}: {source}")]
    Config { id: String, source: ConfigError },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A spec as read from its file, with the file's location for relative paths.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub spec: SweepSpec,
    pub path: PathBuf,
    pub name: String,
}

/// One expanded run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// The run's directory name under `results/<name>/`: `config_id`, plus `-seedN`.
    pub id: String,
    /// Shared by the seeds of one configuration.
    pub config_id: String,
    pub seed: Option<u64>,
    /// The base config file, resolved against the spec's folder.
    pub base: Option<PathBuf>,
    /// The swept keys and their values (with `base` when there are several bases).
    pub swept: BTreeMap<String, Value>,
    /// Every override as `KEY=VALUE`, in the order applied: shared, swept, seed.
    pub sets: Vec<String>,
}

/// The column that holds the base config's name when a sweep has several.
pub const BASE_KEY: &str = "base";
/// The most runs one sweep may plan.
pub const MAX_RUNS: usize = 10_000;

impl Sweep {
    pub fn read(path: &Path) -> Result<Self, SweepError> {
        let text =
            crate::files::read_string(path, crate::files::MAX_CONFIG_BYTES).map_err(|source| {
                SweepError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let spec: SweepSpec = serde_saphyr::from_str(&text).map_err(|e| SweepError::Parse {
            path: path.to_path_buf(),
            message: crate::config::yaml_error_line(&e.to_string()),
        })?;
        let name = match &spec.name {
            Some(name) => name.clone(),
            None => path
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned()))
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| SweepError::Invalid {
                    path: path.to_path_buf(),
                    message: "cannot name the sweep from its folder; give it a `name`".into(),
                })?,
        };
        // `.` and `..` are made of safe characters but name the results folder's own folder
        // or its parent, where the summaries would land.
        if name.is_empty() || name.chars().all(|c| c == '.') || !name.chars().all(safe_char) {
            return Err(SweepError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "name `{name}` may hold only letters, digits, `.`, `_`, `+` and `-`"
                ),
            });
        }
        Ok(Self {
            spec,
            path: path.to_path_buf(),
            name,
        })
    }

    fn invalid(&self, message: impl Into<String>) -> SweepError {
        SweepError::Invalid {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn relative(&self, path: &Path) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join(path)
    }

    /// The metrics the summary tabulates.
    pub fn metrics(&self) -> Vec<String> {
        if self.spec.metrics.is_empty() {
            self.spec.command.default_metrics()
        } else {
            self.spec.metrics.clone()
        }
    }

    /// The keys that vary between configurations, in column order.
    pub fn swept_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if matches!(&self.spec.base, Some(Bases::Many(_))) {
            keys.push(BASE_KEY.to_string());
        }
        let mut push = |k: &String| {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        };
        self.spec.grid.keys().for_each(&mut push);
        self.spec.zip.keys().for_each(&mut push);
        self.spec
            .list
            .iter()
            .flat_map(|set| set.keys())
            .for_each(&mut push);
        keys
    }

    /// Every run, in the order they start: bases, then grid, zip and list (outer to inner),
    /// the seeds of one configuration last so they run side by side.
    pub fn expand(&self) -> Result<Vec<PlannedRun>, SweepError> {
        self.check_axes()?;
        let spec = &self.spec;
        // Counted before anything is built: 8 keys of 40 values make 6.5 x 10^12 runs from a
        // few hundred bytes of spec.
        let count = [
            match &spec.base {
                Some(Bases::Many(paths)) => paths.len(),
                _ => 1,
            },
            spec.zip.values().next().map_or(1, Vec::len),
            spec.list.len().max(1),
            spec.seeds.len().max(1),
        ]
        .into_iter()
        .chain(spec.grid.values().map(Vec::len))
        .try_fold(1usize, |n, k| n.checked_mul(k))
        .filter(|&n| n <= MAX_RUNS);
        if count.is_none() {
            return Err(self.invalid(format!(
                "its axes make more than {MAX_RUNS} runs; split it into several sweeps"
            )));
        }
        let bases: Vec<(Option<PathBuf>, Option<String>)> = match &spec.base {
            None => vec![(None, None)],
            Some(Bases::One(path)) => vec![(Some(self.relative(path)), None)],
            Some(Bases::Many(paths)) => paths
                .iter()
                .map(|p| {
                    let label = p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (Some(self.relative(p)), Some(label))
                })
                .collect(),
        };
        let mut grid: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
        for (key, values) in &spec.grid {
            grid = grid
                .into_iter()
                .flat_map(|partial| {
                    values.iter().map(move |v| {
                        let mut next = partial.clone();
                        next.insert(key.clone(), v.clone());
                        next
                    })
                })
                .collect();
        }
        let zip_len = spec.zip.values().next().map_or(1, Vec::len);
        let zip: Vec<BTreeMap<String, Value>> = (0..zip_len)
            .map(|i| {
                spec.zip
                    .iter()
                    .map(|(k, values)| (k.clone(), values[i].clone()))
                    .collect()
            })
            .collect();
        let list = if spec.list.is_empty() {
            vec![BTreeMap::new()]
        } else {
            spec.list.clone()
        };
        let seeds: Vec<Option<u64>> = if spec.seeds.is_empty() {
            vec![None]
        } else {
            spec.seeds.iter().copied().map(Some).collect()
        };
        let shared: Vec<String> = spec.set.iter().map(|(k, v)| set_arg(k, v)).collect();
        // Zipped keys move together: the first names them in the slug.
        let zip_followers: Vec<String> = spec.zip.keys().skip(1).cloned().collect();
        let mut runs = Vec::new();
        for (base, label) in &bases {
            for g in &grid {
                for z in &zip {
                    for l in &list {
                        let mut swept: BTreeMap<String, Value> = BTreeMap::new();
                        if let Some(label) = label {
                            swept.insert(BASE_KEY.to_string(), Value::String(label.clone()));
                        }
                        for part in [g, z, l] {
                            swept.extend(part.iter().map(|(k, v)| (k.clone(), v.clone())));
                        }
                        let config_id = config_id(&swept, &zip_followers);
                        for seed in &seeds {
                            let mut sets = shared.clone();
                            sets.extend(
                                swept
                                    .iter()
                                    .filter(|(k, _)| label.is_none() || k.as_str() != BASE_KEY)
                                    .map(|(k, v)| set_arg(k, v)),
                            );
                            if let Some(seed) = seed {
                                sets.push(format!("seed={seed}"));
                            }
                            runs.push(PlannedRun {
                                id: match seed {
                                    Some(seed) => format!("{config_id}-seed{seed}"),
                                    None => config_id.clone(),
                                },
                                config_id: config_id.clone(),
                                seed: *seed,
                                base: base.clone(),
                                swept: swept.clone(),
                                sets,
                            });
                        }
                    }
                }
            }
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, run) in runs.iter().enumerate() {
            if let Some(first) = seen.insert(&run.id, i) {
                return Err(self.invalid(format!(
                    "runs {} and {} expand to the same overrides (id {})",
                    first + 1,
                    i + 1,
                    run.id
                )));
            }
        }
        Ok(runs)
    }

    fn check_axes(&self) -> Result<(), SweepError> {
        let spec = &self.spec;
        if spec.checkpoint.is_some() != (spec.command == SweepCommand::Evaluate) {
            return Err(self.invalid(match spec.command {
                SweepCommand::Evaluate => {
                    "an evaluate sweep needs `checkpoint` (a fine-tuning run)"
                }
                _ => "`checkpoint` belongs to evaluate sweeps only",
            }));
        }
        if spec.command == SweepCommand::Evaluate && spec.base.is_none() {
            return Err(self.invalid("an evaluate sweep needs `base`: an eval config"));
        }
        if let Some(Bases::Many(paths)) = &spec.base {
            if paths.is_empty() {
                return Err(self.invalid("`base` lists no files"));
            }
            let mut stems: Vec<_> = paths.iter().map(|p| p.file_stem()).collect();
            stems.sort();
            if stems.windows(2).any(|w| w[0] == w[1]) {
                return Err(self.invalid("the files of `base` must have distinct names"));
            }
        }
        for (key, values) in &spec.grid {
            if values.is_empty() {
                return Err(self.invalid(format!("grid key `{key}` has no values")));
            }
        }
        let mut lengths = spec.zip.iter().map(|(k, v)| (k, v.len()));
        if let Some((first_key, first_len)) = lengths.next() {
            if first_len == 0 {
                return Err(self.invalid(format!("zip key `{first_key}` has no values")));
            }
            if let Some((key, len)) = lengths.find(|(_, len)| *len != first_len) {
                return Err(self.invalid(format!(
                    "zip lists must have one length: `{first_key}` has {first_len}, `{key}` has {len}"
                )));
            }
        }
        let list_keys: std::collections::BTreeSet<&String> =
            spec.list.iter().flat_map(|s| s.keys()).collect();
        let places: [(&str, Vec<&String>); 4] = [
            ("set", spec.set.keys().collect()),
            ("grid", spec.grid.keys().collect()),
            ("zip", spec.zip.keys().collect()),
            ("list", list_keys.into_iter().collect()),
        ];
        for (i, (a, keys_a)) in places.iter().enumerate() {
            for key in keys_a {
                if key.split('.').any(str::is_empty) {
                    return Err(self.invalid(format!("`{key}` in {a} is not a dotted config key")));
                }
                if !spec.seeds.is_empty() && key.as_str() == "seed" {
                    return Err(self.invalid(format!(
                        "`seed` in {a} and `seeds` both set the seed; keep one"
                    )));
                }
                if key.as_str() == BASE_KEY && matches!(spec.base, Some(Bases::Many(_))) {
                    return Err(self.invalid("`base` names the axis of the base files"));
                }
                for (b, keys_b) in &places[i + 1..] {
                    if keys_b.contains(key) {
                        return Err(self.invalid(format!(
                            "`{key}` is in both {a} and {b}; a key belongs to one place"
                        )));
                    }
                }
            }
        }
        let mut seeds = spec.seeds.clone();
        seeds.sort_unstable();
        if seeds.windows(2).any(|w| w[0] == w[1]) {
            return Err(self.invalid("`seeds` repeats a seed"));
        }
        Ok(())
    }

    /// The config a run resolves to, as its binary will resolve it; for `evaluate`, the eval
    /// config and overrides layered over the checkpoint's own config.
    pub fn resolve(&self, run: &PlannedRun) -> Result<ExperimentConfig, SweepError> {
        let err = |source| SweepError::Config {
            id: run.id.clone(),
            source,
        };
        let mut layers = Layers::from_defaults::<ExperimentConfig>().map_err(err)?;
        if let Some(checkpoint) = self.checkpoint() {
            let run_dir = if checkpoint.join(RunLayout::RESOLVED_CONFIG).is_file() {
                checkpoint
            } else {
                // A checkpoint folder `RUN/checkpoints/step-N`.
                checkpoint
                    .ancestors()
                    .find(|d| d.join(RunLayout::RESOLVED_CONFIG).is_file())
                    .map(Path::to_path_buf)
                    .ok_or_else(|| {
                        self.invalid(format!(
                            "checkpoint {}: no {} in it or above it",
                            checkpoint.display(),
                            RunLayout::RESOLVED_CONFIG
                        ))
                    })?
            };
            layers
                .merge_file(&run_dir.join(RunLayout::RESOLVED_CONFIG))
                .map_err(err)?;
        }
        if let Some(base) = &run.base {
            layers.merge_file(base).map_err(err)?;
        }
        for arg in &run.sets {
            layers.merge_set(arg).map_err(err)?;
        }
        layers.resolve().map_err(err)
    }

    /// The checkpoint of an evaluate sweep, resolved against the spec's folder.
    pub fn checkpoint(&self) -> Option<PathBuf> {
        self.spec.checkpoint.as_deref().map(|p| self.relative(p))
    }
}

/// `KEY=VALUE` with the value as JSON, which the config layer reads back as the same YAML value.
fn set_arg(key: &str, value: &Value) -> String {
    format!("{key}={value}")
}

fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
}

/// A configuration's id: a readable slug of its overrides (each key's last two parts; keys in
/// `unnamed` are left out of it) and eight hex digits of the FNV-1a 64 hash of all of them as
/// canonical JSON (keys sorted, compact), so that the id is the same on every machine and for
/// every order the spec lists them in.
pub fn config_id(swept: &BTreeMap<String, Value>, unnamed: &[String]) -> String {
    const MAX_SLUG: usize = 64;
    let slug: Vec<String> = swept
        .iter()
        .filter(|(key, _)| !unnamed.contains(key))
        .map(|(key, value)| {
            let parts: Vec<&str> = key.split('.').collect();
            let short = parts[parts.len().saturating_sub(2)..].join(".");
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{short}={value}")
        })
        .collect();
    let mut slug: String = slug
        .join(",")
        .chars()
        .map(|c| {
            if safe_char(c) || matches!(c, '=' | ',') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if slug.is_empty() {
        slug = "base".to_string();
    }
    if slug.len() > MAX_SLUG {
        slug.truncate(MAX_SLUG);
    }
    let canonical = serde_json::to_string(swept).unwrap_or_default();
    format!("{slug}-{:08x}", fnv1a64(canonical.as_bytes()) >> 32)
}

/// FNV-1a, 64-bit (Fowler, Noll, Vo): tiny, fixed and documented, so ids never change with a
/// library's hasher.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
