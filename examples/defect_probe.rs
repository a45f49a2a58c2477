//! How well a pretraining run's features tell the degradations apart: a softmax-regression
//! probe, trained on degraded copies of the run's training photos and scored on copies of its
//! held-out photos, over (a) the frozen encoder's mean-pooled stage outputs and (b) the MFAM's
//! mean-pooled Q-Former queries. It tells whether the visual tokens carry what a comment must
//! name before fine-tuning is blamed for not naming it.
//!
//!     cargo run --release --example defect_probe -- runs/pretrain/RUN

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::{Tensor, TensorData};
use calm::data::degrade::Degradation;
use calm::data::image::load_rgb;
use calm::experiment::pretrain::{find_run, load_pretrained};
use calm::train::pretrain::{Frozen, split_photos};
use rand::{Rng, SeedableRng};

struct Features {
    encoder: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
    labels: Vec<usize>,
    /// Index into the severities of a degraded copy; `None` for an original.
    severity: Vec<Option<usize>>,
}

fn mean_tokens(t: Tensor<3>) -> Vec<Vec<f32>> {
    let [b, _, d] = t.dims();
    let m: Vec<f32> = t.mean_dim(1).into_data().iter::<f32>().collect();
    (0..b).map(|i| m[i * d..(i + 1) * d].to_vec()).collect()
}

fn main() -> anyhow::Result<()> {
    let run_dir = PathBuf::from(std::env::args().nth(1).context("usage: defect_probe RUN")?);
    let severities: Vec<f32> = vec![0.3, 0.5, 0.75, 1.0];
    let device = calm::device::DeviceSpec::Cpu.device()?;
    let run = find_run(&run_dir)?;
    let config = &run.config;
    let frozen = Frozen::load(&config.model, &device)?;
    let model = load_pretrained(&run, &frozen, &device)?;
    let split = split_photos(
        config.data.image_paths()?,
        config.pretrain.hold_out,
        config.seed,
    )?;
    let transform = config.data.transform(&config.model.vision);
    let size = transform.size;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut extract = |photos: &[PathBuf]| -> anyhow::Result<Features> {
        let mut f = Features {
            encoder: vec![],
            queries: vec![],
            labels: vec![],
            severity: vec![],
        };
        for p in photos {
            let photo = load_rgb(p)?;
            let crop = transform.crop(&photo, &mut rng)?;
            let mut images = vec![(crop.clone(), 0, None)];
            for (k, kind) in Degradation::ALL.iter().enumerate() {
                for (j, &s) in severities.iter().enumerate() {
                    images.push((kind.apply(&crop, s, rng.random())?, k + 1, Some(j)));
                }
            }
            for chunk in images.chunks(11) {
                let pixels: Vec<f32> = chunk
                    .iter()
                    .flat_map(|(i, _, _)| transform.normalize(i))
                    .collect();
                let pixels = Tensor::<4>::from_data(
                    TensorData::new(pixels, [chunk.len(), 3, size, size]),
                    &device,
                );
                let hidden = frozen.encoder.forward(pixels);
                let mut enc = vec![vec![]; chunk.len()];
                for h in &hidden[1..] {
                    for (e, m) in enc.iter_mut().zip(mean_tokens(h.clone())) {
                        e.extend(m);
                    }
                }
                let out = model.mfam.forward(&hidden);
                let mut q = vec![vec![]; chunk.len()];
                for level in [&out.low, &out.middle, &out.high].into_iter().flatten() {
                    for (e, m) in q.iter_mut().zip(mean_tokens(level.queries.clone())) {
                        e.extend(m);
                    }
                }
                f.encoder.extend(enc);
                f.queries.extend(q);
                f.labels.extend(chunk.iter().map(|(_, l, _)| *l));
                f.severity.extend(chunk.iter().map(|(_, _, s)| *s));
            }
            eprintln!("{}", p.display());
        }
        Ok(f)
    };
    let train = extract(&split.train)?;
    let test = extract(&split.held_out)?;
    for (name, tr, te) in [
        ("encoder", &train.encoder, &test.encoder),
        ("mfam queries", &train.queries, &test.queries),
    ] {
        let predicted = probe(
            tr,
            &train.labels,
            te,
            &test.labels,
            Degradation::ALL.len() + 1,
        );
        let right = |keep: &dyn Fn(Option<usize>) -> bool| {
            let hits: Vec<bool> = (0..test.labels.len())
                .filter(|&i| keep(test.severity[i]))
                .map(|i| predicted[i] == test.labels[i])
                .collect();
            (hits.iter().filter(|&&h| h).count(), hits.len())
        };
        let (r, n) = right(&|_| true);
        println!(
            "{name}: {} dims, held-out accuracy {:.3}",
            tr[0].len(),
            r as f32 / n as f32
        );
        for (j, s) in severities.iter().enumerate() {
            let (r, n) = right(&|sev| sev == Some(j));
            println!("  copies of severity {s}: {r} of {n}");
        }
    }
    Ok(())
}

/// Softmax regression on standardised features, full-batch gradient descent; prints the
/// held-out confusion matrix and gives back the class predicted for each held-out row.
fn probe(x: &[Vec<f32>], y: &[usize], tx: &[Vec<f32>], ty: &[usize], classes: usize) -> Vec<usize> {
    let d = x[0].len();
    let n = x.len() as f32;
    let mean: Vec<f32> = (0..d)
        .map(|j| x.iter().map(|r| r[j]).sum::<f32>() / n)
        .collect();
    let std: Vec<f32> = (0..d)
        .map(|j| (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f32>() / n).sqrt() + 1e-6)
        .collect();
    let norm = |r: &Vec<f32>| -> Vec<f32> { (0..d).map(|j| (r[j] - mean[j]) / std[j]).collect() };
    let xs: Vec<Vec<f32>> = x.iter().map(norm).collect();
    let txs: Vec<Vec<f32>> = tx.iter().map(norm).collect();
    let mut w = vec![vec![0f32; d + 1]; classes];
    let logits = |w: &Vec<Vec<f32>>, r: &Vec<f32>| -> Vec<f32> {
        w.iter()
            .map(|wc| wc[d] + wc[..d].iter().zip(r).map(|(a, b)| a * b).sum::<f32>())
            .collect()
    };
    for _ in 0..300 {
        let mut g = vec![vec![0f32; d + 1]; classes];
        for (r, &label) in xs.iter().zip(y) {
            let l = logits(&w, r);
            let m = l.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = l.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            for c in 0..classes {
                let p = e[c] / s - if c == label { 1.0 } else { 0.0 };
                for j in 0..d {
                    g[c][j] += p * r[j];
                }
                g[c][d] += p;
            }
        }
        for c in 0..classes {
            for j in 0..=d {
                w[c][j] -= 0.5 * (g[c][j] / n + if j < d { 1e-3 * w[c][j] } else { 0.0 });
            }
        }
    }
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut predicted = Vec::with_capacity(ty.len());
    for (r, &l) in txs.iter().zip(ty) {
        let lg = logits(&w, r);
        let best = (0..classes)
            .max_by(|&a, &b| lg[a].total_cmp(&lg[b]))
            .unwrap_or(0);
        confusion[l][best] += 1;
        predicted.push(best);
    }
    for (c, row) in confusion.iter().enumerate() {
        let name = if c == 0 {
            "original"
        } else {
            Degradation::ALL[c - 1].name()
        };
        println!("{name:>14} {row:?}");
    }
    predicted
}
