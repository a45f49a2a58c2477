//! A sweep's results tables, rebuilt from the run directories alone: `runs.csv` (one row per
//! run), `summary.csv` and `summary.md` (one row per configuration, each metric as the mean and
//! the sample standard deviation, n - 1 in the denominator as numpy's `std(ddof=1)` and pandas'
//! `std()`, over the configuration's succeeded runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::runner::{Status, read_status};
use super::spec::{BASE_KEY, PlannedRun, Sweep, SweepError};
use crate::data::formats::csv_field;
use crate::run::RunLayout;

pub const SUMMARY_CSV: &str = "summary.csv";
pub const SUMMARY_MD: &str = "summary.md";
pub const RUNS_CSV: &str = "runs.csv";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed,
    /// Not run yet, or interrupted.
    Pending,
}

impl RunOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Pending => "pending",
        }
    }
}

/// One run as its directory shows it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub config_id: String,
    pub seed: Option<u64>,
    pub dir: PathBuf,
    pub outcome: RunOutcome,
    pub error: Option<String>,
    /// The swept keys' values as the run resolved them (so `{}` in a list shows the base's
    /// value, not a blank).
    pub values: Vec<String>,
    /// One per metric; `None` when the run has not succeeded or its file lacks the key.
    pub metrics: Vec<Option<f64>>,
}

/// One configuration: its runs' metrics pooled.
#[derive(Debug, Clone)]
pub struct ConfigRow {
    pub config_id: String,
    pub values: Vec<String>,
    pub runs: usize,
    pub failed: usize,
    /// Mean and sample std per metric over the runs that have it; std is `None` below 2.
    pub metrics: Vec<Option<(f64, Option<f64>)>>,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub keys: Vec<String>,
    /// Zipped keys after the first, which move with it (nothing to plot them against).
    pub followers: Vec<String>,
    pub metrics: Vec<String>,
    pub runs: Vec<RunRow>,
    pub configs: Vec<ConfigRow>,
}

/// Reads every planned run's directory under `results`.
pub fn collect(sweep: &Sweep, plan: &[PlannedRun], results: &Path) -> Summary {
    let keys = sweep.swept_keys();
    let metrics = sweep.metrics();
    let file = sweep.spec.command.metrics_file();
    let runs: Vec<RunRow> = plan
        .iter()
        .map(|run| {
            let dir = results.join(&run.id);
            let status = read_status(&dir);
            let outcome = match status.as_ref().map(|s| s.status) {
                Some(Status::Succeeded) => RunOutcome::Succeeded,
                Some(Status::Failed) => RunOutcome::Failed,
                None => RunOutcome::Pending,
            };
            let resolved = read_yaml(&dir.join(RunLayout::RESOLVED_CONFIG));
            let values = keys
                .iter()
                .map(|key| {
                    let value = run.swept.get(key).cloned().or_else(|| {
                        (key != BASE_KEY)
                            .then(|| resolved.as_ref().and_then(|r| lookup(r, key)).cloned())
                            .flatten()
                    });
                    value.map(|v| display(&v)).unwrap_or_default()
                })
                .collect();
            let json = (outcome == RunOutcome::Succeeded)
                .then(|| read_json(&dir.join(file)))
                .flatten();
            let metrics = metrics
                .iter()
                .map(|m| {
                    json.as_ref()
                        .and_then(|j| lookup(j, m))
                        .and_then(Value::as_f64)
                })
                .collect();
            RunRow {
                id: run.id.clone(),
                config_id: run.config_id.clone(),
                seed: run.seed,
                dir,
                outcome,
                error: status.and_then(|s| s.error),
                values,
                metrics,
            }
        })
        .collect();
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&RunRow>> = BTreeMap::new();
    for row in &runs {
        if !groups.contains_key(row.config_id.as_str()) {
            order.push(&row.config_id);
        }
        groups.entry(&row.config_id).or_default().push(row);
    }
    let configs = order
        .iter()
        .map(|id| {
            let rows = &groups[id];
            // The first run that resolved its config names the values (seeds share them).
            let values = rows
                .iter()
                .find(|r| r.values.iter().all(|v| !v.is_empty()))
                .unwrap_or(&rows[0])
                .values
                .clone();
            ConfigRow {
                config_id: id.to_string(),
                values,
                runs: rows
                    .iter()
                    .filter(|r| r.outcome == RunOutcome::Succeeded)
                    .count(),
                failed: rows
                    .iter()
                    .filter(|r| r.outcome == RunOutcome::Failed)
                    .count(),
                metrics: (0..metrics.len())
                    .map(|m| {
                        let xs: Vec<f64> = rows.iter().filter_map(|r| r.metrics[m]).collect();
                        mean_std(&xs)
                    })
                    .collect(),
            }
        })
        .collect();
    Summary {
        keys,
        followers: sweep.spec.zip.keys().skip(1).cloned().collect(),
        metrics,
        runs,
        configs,
    }
}

/// Mean and sample standard deviation (n - 1); `None` for no values, std `None` for one.
pub fn mean_std(xs: &[f64]) -> Option<(f64, Option<f64>)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, std))
}

/// The value at a dotted path of a JSON tree.
pub fn lookup<'a>(tree: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(tree, |node, part| node.get(part))
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&crate::files::read_string(path, crate::files::MAX_CONFIG_BYTES).ok()?)
        .ok()
}

fn read_yaml(path: &Path) -> Option<Value> {
    serde_saphyr::from_str(&crate::files::read_string(path, crate::files::MAX_CONFIG_BYTES).ok()?)
        .ok()
}

fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// Shortest round-trip text of a number, as Rust prints it (what pandas reads back exactly).
fn number(x: f64) -> String {
    format!("{x}")
}

impl Summary {
    /// `summary.csv`: `config`, the swept keys, `runs`, `failed`, then `<metric>_mean` and
    /// `<metric>_std` per metric (empty where there is nothing to average).
    pub fn summary_csv(&self) -> String {
        let mut header: Vec<String> = vec!["config".into()];
        header.extend(self.keys.iter().cloned());
        header.extend(["runs".into(), "failed".into()]);
        for m in &self.metrics {
            header.push(format!("{m}_mean"));
            header.push(format!("{m}_std"));
        }
        let mut out = line(&header);
        for c in &self.configs {
            let mut row = vec![c.config_id.clone()];
            row.extend(c.values.iter().cloned());
            row.extend([c.runs.to_string(), c.failed.to_string()]);
            for m in &c.metrics {
                let (mean, std) = match m {
                    Some((mean, std)) => (number(*mean), std.map(number).unwrap_or_default()),
                    None => (String::new(), String::new()),
                };
                row.extend([mean, std]);
            }
            out.push_str(&line(&row));
        }
        out
    }

    /// `runs.csv`: `run_id`, `config`, `seed`, `status`, the swept keys, each metric, `error`.
    pub fn runs_csv(&self) -> String {
        let mut header: Vec<String> = ["run_id", "config", "seed", "status"]
            .map(String::from)
            .to_vec();
        header.extend(self.keys.iter().cloned());
        header.extend(self.metrics.iter().cloned());
        header.push("error".into());
        let mut out = line(&header);
        for r in &self.runs {
            let mut row = vec![
                r.id.clone(),
                r.config_id.clone(),
                r.seed.map(|s| s.to_string()).unwrap_or_default(),
                r.outcome.label().to_string(),
            ];
            row.extend(r.values.iter().cloned());
            row.extend(r.metrics.iter().map(|m| m.map(number).unwrap_or_default()));
            row.push(r.error.clone().unwrap_or_default());
            out.push_str(&line(&row));
        }
        out
    }

    /// `summary.md`: the same table for reading, `mean ± std (n)`, and the failed runs' errors.
    pub fn summary_md(&self, title: &str) -> String {
        let mut out = format!("# {title}\n\n");
        let mut header: Vec<String> = self.keys.iter().map(|k| format!("`{k}`")).collect();
        header.push("runs".into());
        header.extend(self.metrics.iter().map(|m| format!("`{m}`")));
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for c in &self.configs {
            let mut row: Vec<String> = c.values.iter().map(|v| md_cell(v)).collect();
            row.push(if c.failed > 0 {
                format!("{} ({} failed)", c.runs, c.failed)
            } else {
                c.runs.to_string()
            });
            row.extend(c.metrics.iter().map(|m| match m {
                Some((mean, Some(std))) => format!("{mean:.4} ± {std:.4}"),
                Some((mean, None)) => format!("{mean:.4}"),
                None => "–".to_string(),
            }));
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        let failed: Vec<&RunRow> = self
            .runs
            .iter()
            .filter(|r| r.outcome == RunOutcome::Failed)
            .collect();
        let pending = self
            .runs
            .iter()
            .filter(|r| r.outcome == RunOutcome::Pending)
            .count();
        out.push_str(&format!(
            "\nMean ± sample std (n - 1) over each configuration's succeeded runs ({} runs: {} succeeded, {} failed, {} pending).\n",
            self.runs.len(),
            self.runs.len() - failed.len() - pending,
            failed.len(),
            pending
        ));
        if !failed.is_empty() {
            out.push_str("\nFailed runs:\n\n");
            for r in failed {
                out.push_str(&format!(
                    "- `{}`: {}\n",
                    r.id,
                    md_cell(r.error.as_deref().unwrap_or("no error recorded"))
                ));
            }
        }
        out
    }

    /// Writes the three tables into `dir`.
    pub fn write(&self, dir: &Path, title: &str) -> Result<(), SweepError> {
        for (name, text) in [
            (SUMMARY_CSV, self.summary_csv()),
            (RUNS_CSV, self.runs_csv()),
            (SUMMARY_MD, self.summary_md(title)),
        ] {
            crate::io::atomic::write_atomic(&dir.join(name), text.as_bytes()).map_err(|e| {
                SweepError::Io {
                    path: e.path,
                    source: e.source,
                }
            })?;
        }
        Ok(())
    }
}

fn line(fields: &[String]) -> String {
    let mut out = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    out
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
