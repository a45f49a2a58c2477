//! A sweep's figures, PNG files beside its summaries, drawn with plotters on an in-memory
//! bitmap and encoded by `image`: learning curves from the runs' event files, each metric
//! per configuration and against each swept key, and for scoring runs (an `evaluate` sweep's
//! `predictions.csv` with a `mos` column) predicted against ground-truth scores.
//!
//! Text is set in DejaVu Sans, compiled in (`assets/fonts`), so that drawing needs no system
//! font library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::summary::{ConfigRow, RunOutcome, Summary};
use crate::train::tensorboard::read_curve;

/// A plotted point: x, the mean and the spread around it.
type Point = (f64, f64, f64);

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (960, 600);

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("the compiled-in font cannot be read")]
    Font,
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
}

fn font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    REGISTERED
        .get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok())
        .then_some(())
        .ok_or(PlotError::Font)
}

/// Draws into an RGB buffer with `draw`, then writes it to `path` as PNG.
fn png(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    font()?;
    let (w, h) = SIZE;
    let mut buffer = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        let fail = |message: String| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        };
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(w, h, buffer).ok_or_else(|| PlotError::Write {
        path: path.to_path_buf(),
        message: "buffer size".into(),
    })?;
    image.save(path).map_err(|e| PlotError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The `i`-th colour of plotters' 99-colour palette.
fn colour(i: usize) -> RGBColor {
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn text_error<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A file-name-safe form of a dotted key.
pub fn file_stem(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A dotted key's last two parts.
fn short_key(key: &str) -> String {
    let parts: Vec<&str> = key.split('.').collect();
    parts[parts.len().saturating_sub(2)..].join(".")
}

/// A configuration's label: its id without the hash.
fn label(config: &ConfigRow) -> String {
    match config.config_id.rsplit_once('-') {
        Some((slug, _)) => slug.to_string(),
        None => config.config_id.clone(),
    }
}

/// (min, max) with a margin, never empty.
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-6 * hi.abs().max(1.0));
    (lo - pad, hi + pad)
}

/// Every figure of a sweep; returns the files written.
pub fn draw_all(summary: &Summary, curve_tag: &str, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    let curves = learning_curves(summary, curve_tag, &dir.join("learning_curves.png"))?;
    written.extend(curves);
    for (m, metric) in summary.metrics.iter().enumerate() {
        if summary.configs.iter().all(|c| c.metrics[m].is_none()) {
            continue;
        }
        let path = dir.join(format!("{}_by_config.png", file_stem(metric)));
        by_config(summary, m, &path)?;
        written.push(path);
        for (k, key) in summary.keys.iter().enumerate() {
            if summary.followers.contains(key) {
                continue;
            }
            let path = dir.join(format!("{}_vs_{}.png", file_stem(metric), file_stem(key)));
            against_key(summary, m, k, &path)?;
            written.push(path);
        }
    }
    for config in &summary.configs {
        let files: Vec<PathBuf> = summary
            .runs
            .iter()
            .filter(|r| r.config_id == config.config_id && r.outcome == RunOutcome::Succeeded)
            .map(|r| r.dir.join("predictions.csv"))
            .filter(|p| p.is_file())
            .collect();
        let pairs: Vec<(f64, f64)> = files.iter().flat_map(|f| read_scored(f)).collect();
        if !pairs.is_empty() {
            let path = dir.join(format!("scatter_{}.png", file_stem(&config.config_id)));
            scatter(&label(config), &pairs, &path)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// `curve_tag` against step, a line per run (a configuration's seeds share a colour).
/// Nothing is drawn when no run has the tag.
fn learning_curves(
    summary: &Summary,
    tag: &str,
    path: &Path,
) -> Result<Option<PathBuf>, PlotError> {
    let mut series = Vec::new();
    for run in &summary.runs {
        // A run without readable events has no curve; the table still lists it.
        let points =
            read_curve(&crate::run::RunLayout::new(&run.dir).events(), tag).unwrap_or_default();
        if points.is_empty() {
            continue;
        }
        let colour = summary
            .configs
            .iter()
            .position(|c| c.config_id == run.config_id)
            .unwrap_or(0);
        series.push((run.id.clone(), colour, points));
    }
    if series.is_empty() {
        return Ok(None);
    }
    let max_step = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(s, _)| *s))
        .max()
        .unwrap_or(1)
        .max(1);
    let (lo, hi) = padded(
        series
            .iter()
            .flat_map(|(_, _, p)| p.iter().map(|(_, v)| f64::from(*v))),
    );
    png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{tag} per step"), ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max_step as f64, lo..hi)
            .map_err(text_error)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(tag)
            .draw()
            .map_err(text_error)?;
        let mut labelled = std::collections::BTreeSet::new();
        for (id, colour, points) in &series {
            let style = Palette99::pick(*colour).stroke_width(2);
            let drawn = chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(s, v)| (*s as f64, f64::from(*v))),
                    style,
                ))
                .map_err(text_error)?;
            // One legend entry per configuration, named by its first run.
            if labelled.insert(*colour) {
                let name = summary
                    .configs
                    .get(*colour)
                    .map(label)
                    .unwrap_or_else(|| id.clone());
                drawn.label(name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], Palette99::pick(*colour))
                });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(text_error)
    })?;
    Ok(Some(path.to_path_buf()))
}

/// A mean ± std bar per configuration: configurations down the side, the metric across.
fn by_config(summary: &Summary, m: usize, path: &Path) -> Result<(), PlotError> {
    let metric = &summary.metrics[m];
    let rows: Vec<(String, f64, f64)> = summary
        .configs
        .iter()
        .filter_map(|c| c.metrics[m].map(|(mean, std)| (label(c), mean, std.unwrap_or(0.0))))
        .collect();
    let n = rows.len();
    let (lo, hi) = padded(
        rows.iter()
            .flat_map(|(_, mean, std)| [mean - std, mean + std]),
    );
    let labels: Vec<String> = rows.iter().map(|(l, _, _)| l.clone()).collect();
    png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{metric}: mean ± std per configuration"),
                ("sans-serif", 22),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(300)
            .build_cartesian_2d(lo..hi, -0.5f64..n as f64 - 0.5)
            .map_err(text_error)?;
        chart
            .configure_mesh()
            .y_labels(n.max(1))
            .y_label_formatter(&|y| category(&labels, *y))
            .x_desc(metric.as_str())
            .disable_y_mesh()
            .draw()
            .map_err(text_error)?;
        draw_bars(
            &mut chart,
            rows.iter()
                .enumerate()
                .map(|(i, (_, mean, std))| (i as f64, *mean, *std)),
            &colour(0),
            true,
        )
    })
}

/// The label of category `i` at axis position `y`, blank between categories.
fn category(labels: &[String], y: f64) -> String {
    let i = y.round();
    if (y - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    labels.get(i as usize).cloned().unwrap_or_default()
}

/// Points with error bars; `horizontal` when the category axis is vertical.
fn draw_bars<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    points: impl Iterator<Item = (f64, f64, f64)> + Clone,
    colour: &RGBColor,
    horizontal: bool,
) -> Result<(), String> {
    let at = move |pos: f64, value: f64| {
        if horizontal {
            (value, pos)
        } else {
            (pos, value)
        }
    };
    let colour = *colour;
    chart
        .draw_series(points.clone().flat_map(move |(pos, mean, std)| {
            let cap = 0.12;
            [
                PathElement::new(
                    vec![at(pos, mean - std), at(pos, mean + std)],
                    colour.stroke_width(2),
                ),
                PathElement::new(
                    vec![at(pos - cap, mean - std), at(pos + cap, mean - std)],
                    colour.stroke_width(2),
                ),
                PathElement::new(
                    vec![at(pos - cap, mean + std), at(pos + cap, mean + std)],
                    colour.stroke_width(2),
                ),
            ]
        }))
        .map_err(text_error)?;
    chart
        .draw_series(
            points.map(move |(pos, mean, _)| Circle::new(at(pos, mean), 5, colour.filled())),
        )
        .map_err(text_error)?;
    Ok(())
}

/// The metric against one swept key's values (as categories, in the order the sweep lists
/// them), a line per combination of the other swept keys.
fn against_key(summary: &Summary, m: usize, k: usize, path: &Path) -> Result<(), PlotError> {
    let metric = &summary.metrics[m];
    let key = &summary.keys[k];
    let mut categories: Vec<String> = Vec::new();
    let mut groups: Vec<(String, Vec<Point>)> = Vec::new();
    for c in &summary.configs {
        let value = &c.values[k];
        if !categories.contains(value) {
            categories.push(value.clone());
        }
        let Some((mean, std)) = c.metrics[m] else {
            continue;
        };
        let others: Vec<String> = summary
            .keys
            .iter()
            .zip(&c.values)
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, (key, v))| format!("{}={v}", short_key(key)))
            .collect();
        let name = others.join(", ");
        let x = categories.iter().position(|v| v == value).unwrap_or(0) as f64;
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push((x, mean, std.unwrap_or(0.0))),
            None => groups.push((name, vec![(x, mean, std.unwrap_or(0.0))])),
        }
    }
    let n = categories.len();
    let (lo, hi) = padded(
        groups
            .iter()
            .flat_map(|(_, p)| p.iter().flat_map(|(_, mean, std)| [mean - std, mean + std])),
    );
    png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("{metric} against {key}"), ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, lo..hi)
            .map_err(text_error)?;
        chart
            .configure_mesh()
            .x_labels(n.max(1))
            .x_label_formatter(&|x| category(&categories, *x))
            .x_desc(key.as_str())
            .y_desc(metric.as_str())
            .disable_x_mesh()
            .draw()
            .map_err(text_error)?;
        for (i, (name, points)) in groups.iter().enumerate() {
            let rgb = colour(i);
            let mut sorted = points.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(
                    sorted.iter().map(|(x, mean, _)| (*x, *mean)),
                    rgb.stroke_width(1),
                ))
                .map_err(text_error)?
                .label(if name.is_empty() {
                    metric.clone()
                } else {
                    name.clone()
                })
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], rgb));
            draw_bars(&mut chart, sorted.into_iter(), &rgb, false)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(text_error)
    })
}

/// `(mos, score)` of every row of an `evaluate` predictions file that has both columns.
fn read_scored(path: &Path) -> Vec<(f64, f64)> {
    let Ok(mut reader) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    let Ok(header) = reader.headers().cloned() else {
        return Vec::new();
    };
    let column = |name: &str| header.iter().position(|h| h == name);
    let (Some(score), Some(mos)) = (column("score"), column("mos")) else {
        return Vec::new();
    };
    reader
        .records()
        .filter_map(Result::ok)
        .filter_map(|r| Some((r.get(mos)?.parse().ok()?, r.get(score)?.parse().ok()?)))
        .collect()
}

/// Predicted against ground-truth scores, with the identity line.
fn scatter(name: &str, pairs: &[(f64, f64)], path: &Path) -> Result<(), PlotError> {
    let (lo, hi) = padded(pairs.iter().flat_map(|(a, b)| [*a, *b]));
    png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "{name}: predicted against ground truth ({} images)",
                    pairs.len()
                ),
                ("sans-serif", 22),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(text_error)?;
        chart
            .configure_mesh()
            .x_desc("ground truth (MOS)")
            .y_desc("predicted score")
            .draw()
            .map_err(text_error)?;
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.4)))
            .map_err(text_error)?;
        chart
            .draw_series(
                pairs
                    .iter()
                    .map(|(x, y)| Circle::new((*x, *y), 3, Palette99::pick(0).mix(0.6).filled())),
            )
            .map_err(text_error)?;
        Ok(())
    })
}
