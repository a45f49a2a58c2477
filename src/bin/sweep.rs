//! `sweep`: run a YAML experiment sweep (experiments/<name>/sweep.yaml) into
//! `results/<name>/`, one process per run, and tabulate and plot its results.
//!
//! Each run is this same executable started again as `sweep --run-as <command> ...`, which
//! runs the very code of the `pretrain`, `finetune` or `evaluate` binary (`calm::commands`),
//! with the flags a researcher would pass to it. So `cargo run --bin sweep` alone builds all a
//! sweep needs, and a run behaves exactly as the binary would.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use calm::commands::{evaluate, finetune, main_with, pretrain};
use calm::config::to_yaml;
use calm::device::DeviceSpec;
use calm::distributed::World;
use calm::run::RunLayout;
use calm::sweep::plots::draw_all;
use calm::sweep::runner::{RunState, Start, resumable, run_all, run_state};
use calm::sweep::summary::{RunOutcome, collect};
use calm::sweep::{PlannedRun, Sweep, SweepCommand};
use clap::Parser;

/// The hidden first argument of a run's process.
const RUN_AS: &str = "--run-as";

/// Run the runs of a sweep spec (skipping finished ones, resuming interrupted ones), then
/// write `summary.csv`, `summary.md`, `runs.csv` and PNG figures into `results/<name>/`.
/// The exit status is 0 only when every run has succeeded.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The sweep spec, e.g. experiments/mfam_levels/sweep.yaml.
    #[arg(value_name = "SPEC")]
    spec: PathBuf,
    /// List the runs (id, state, overrides) and run nothing.
    #[arg(long, conflicts_with = "summarize")]
    dry_run: bool,
    /// Rebuild the summaries and figures from the run directories; run nothing.
    #[arg(long)]
    summarize: bool,
    /// Runs at a time, each its own process.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Where `<name>/` goes.
    #[arg(long, default_value = "results", value_name = "DIR")]
    results_dir: PathBuf,
    /// Device of every run: cpu, wgpu or cuda:N.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    device: DeviceSpec,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == RUN_AS) {
        return run_as(&argv[2..]);
    }
    main_with("sweep", || run(Args::parse()))
}

/// One run's process: `argv` is the binary's own command line, its name first.
fn run_as(argv: &[OsString]) -> ExitCode {
    match argv.first().and_then(|a| a.to_str()) {
        Some("pretrain") => main_with("pretrain", || {
            pretrain::run(pretrain::Args::parse_from(argv), &World::single())
        }),
        Some("finetune") => main_with("finetune", || {
            finetune::run(finetune::Args::parse_from(argv), &World::single())
        }),
        Some("evaluate") => main_with("evaluate", || {
            evaluate::run(evaluate::Args::parse_from(argv))
        }),
        other => {
            calm::errln!(
                "sweep: error: {RUN_AS} takes pretrain, finetune or evaluate, not {other:?}"
            );
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let sweep = Sweep::read(&args.spec)?;
    let plan = sweep.expand()?;
    let results = args.results_dir.join(&sweep.name);
    // Every run's config is checked before any starts, so a typo fails now, not hours in.
    let configs = plan
        .iter()
        .map(|run| sweep.resolve(run))
        .collect::<Result<Vec<_>, _>>()?;
    let resolved = configs.iter().map(to_yaml).collect::<Result<Vec<_>, _>>()?;
    if args.dry_run {
        calm::outln!(
            "{} runs of {} into {}:",
            plan.len(),
            args.spec.display(),
            results.display()
        )?;
        for (run, yaml) in plan.iter().zip(&resolved) {
            let dir = results.join(&run.id);
            let state = match stale(&dir, yaml, sweep.spec.command) {
                Some(_) => "stale (made with another config)",
                None => run_state(&dir).label(),
            };
            calm::outln!("{}\t{}\t{}", run.id, state, overrides(&sweep, run))?;
        }
        return Ok(());
    }
    for (run, yaml) in plan.iter().zip(&resolved) {
        let dir = results.join(&run.id);
        if let Some(state) = stale(&dir, yaml, sweep.spec.command) {
            anyhow::bail!(
                "{} holds a {} run made with another config than the spec now gives it (the \
                 spec, a base file or a default changed); move it away to run it again, or give \
                 the sweep another name (--dry-run lists every run's state)",
                dir.display(),
                if state == RunState::Succeeded {
                    "finished"
                } else {
                    "resumable"
                }
            );
        }
    }
    std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    if !args.summarize {
        std::fs::copy(&args.spec, results.join("sweep.yaml")).with_context(|| {
            format!("copying {} into {}", args.spec.display(), results.display())
        })?;
        let exe = std::env::current_exe().context("locating the sweep executable")?;
        let checkpoint = sweep.checkpoint();
        let command = |run: &PlannedRun, dir: &Path, start: Start| {
            child_command(
                &exe,
                &sweep,
                checkpoint.as_deref(),
                run,
                dir,
                start,
                &args.device,
            )
        };
        calm::errln!(
            "sweep {}: {} runs, {} at a time, into {}",
            sweep.name,
            plan.len(),
            args.jobs,
            results.display()
        );
        run_all(
            &plan,
            &results,
            usize::from(args.jobs),
            &command,
            &mut std::io::stderr(),
        )?;
    }
    let summary = collect(&sweep, &plan, &results);
    summary.write(&results, &format!("Sweep `{}`", sweep.name))?;
    let figures = draw_all(&summary, &sweep.spec.curve, &results)?;
    calm::outln!(
        "{} and {} figures in {}",
        ["summary.csv", "summary.md", "runs.csv"].join(", "),
        figures.len(),
        results.display()
    )?;
    let not_done: Vec<String> = summary
        .runs
        .iter()
        .filter(|r| r.outcome != RunOutcome::Succeeded)
        .map(|r| match (&r.outcome, &r.error) {
            (RunOutcome::Failed, Some(e)) => format!("{} ({e})", r.id),
            (o, _) => format!("{} ({})", r.id, o.label()),
        })
        .collect();
    anyhow::ensure!(
        not_done.is_empty(),
        "{} of {} runs have not succeeded: {}",
        not_done.len(),
        summary.runs.len(),
        not_done.join("; ")
    );
    Ok(())
}

/// The state of a run directory made with another config than `resolved` (the spec, a base
/// file or a default changed), when it holds something worth keeping (a success or a
/// checkpoint): a sweep must not tabulate or resume it under the new config.
fn stale(dir: &Path, resolved: &str, command: SweepCommand) -> Option<RunState> {
    let path = dir.join(RunLayout::RESOLVED_CONFIG);
    let raw = calm::files::read_string(&path, calm::files::MAX_CONFIG_BYTES).ok()?;
    // Read back through today's config, so that a setting added since (at its default, which
    // is the behaviour the run had) does not make it stale.
    let existing = calm::config::load::<calm::experiment::ExperimentConfig>(Some(&path), &[])
        .ok()
        .and_then(|c| calm::config::to_yaml(&c).ok())
        .unwrap_or(raw);
    if command.read_part(&existing) == command.read_part(resolved) {
        return None;
    }
    let state = run_state(dir);
    // A run with nothing worth keeping (no checkpoint, no success) is simply started again.
    match state {
        RunState::Succeeded | RunState::Interrupted { resumable: true } => Some(state),
        RunState::Failed(_) if resumable(dir) => Some(state),
        _ => None,
    }
}

fn overrides(sweep: &Sweep, run: &PlannedRun) -> String {
    let base = run
        .base
        .as_ref()
        .map(|b| format!("--config {} ", b.display()))
        .unwrap_or_default();
    let shared = sweep.spec.set.len();
    let sets: Vec<String> = run.sets[shared..]
        .iter()
        .map(|s| format!("--set {s}"))
        .collect();
    format!("{base}{}", sets.join(" "))
}

fn child_command(
    exe: &Path,
    sweep: &Sweep,
    checkpoint: Option<&Path>,
    run: &PlannedRun,
    dir: &Path,
    start: Start,
    device: &DeviceSpec,
) -> Command {
    let mut command = Command::new(exe);
    command.arg(RUN_AS).arg(sweep.spec.command.name());
    match (sweep.spec.command, start) {
        (SweepCommand::Pretrain | SweepCommand::Finetune, Start::Resume) => {
            command.arg("--resume").arg(dir);
        }
        (SweepCommand::Pretrain | SweepCommand::Finetune, _) => {
            if let Some(base) = &run.base {
                command.arg("--config").arg(base);
            }
            for set in &run.sets {
                command.arg("--set").arg(set);
            }
            command.arg("--output-dir").arg(dir);
        }
        (SweepCommand::Evaluate, _) => {
            command.arg("task");
            if let Some(base) = &run.base {
                command.arg("--config").arg(base);
            }
            if let Some(checkpoint) = checkpoint {
                command.arg("--checkpoint").arg(checkpoint);
            }
            for set in &run.sets {
                command.arg("--set").arg(set);
            }
            command.arg("--output-dir").arg(dir);
        }
    }
    command.arg("--device").arg(device.to_string());
    command
}
