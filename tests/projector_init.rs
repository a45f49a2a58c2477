//! The least-squares start of the level projections (`train::projector_init`): the dual ridge
//! solution equals the primal one computed independently, recovers an exact linear map, and
//! refuses a system that is not positive definite.

use calm::train::projector_init::{FitError, dual_ridge};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rows: usize, cols: usize, rng: &mut StdRng) -> Vec<Vec<f64>> {
    (0..rows)
        .map(|_| (0..cols).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect())
        .collect()
}

fn centred(m: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = m.len() as f64;
    let cols = m[0].len();
    let mean: Vec<f64> = (0..cols)
        .map(|j| m.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    m.into_iter()
        .map(|r| r.iter().zip(&mean).map(|(v, c)| v - c).collect())
        .collect()
}

/// Gauss-Jordan elimination with partial pivoting: `a^-1 b`.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let n = a.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .expect("rows");
        a.swap(c, p);
        b.swap(c, p);
        for r in 0..n {
            if r != c {
                let f = a[r][c] / a[c][c];
                let (ac, bc) = (a[c].clone(), b[c].clone());
                for (x, y) in a[r].iter_mut().zip(&ac) {
                    *x -= f * y;
                }
                for (x, y) in b[r].iter_mut().zip(&bc) {
                    *x -= f * y;
                }
            }
        }
    }
    (0..n)
        .map(|r| b[r].iter().map(|v| v / a[r][r]).collect())
        .collect()
}

#[test]
fn the_dual_solution_equals_the_primal_ridge_solution() {
    let mut rng = StdRng::seed_from_u64(3);
    // More features than images, as in the fit (256 images, 768 features).
    let (n, d_in, d_out) = (7, 12, 5);
    let z = centred(random(n, d_in, &mut rng));
    let t = centred(random(n, d_out, &mut rng));
    let ridge = 0.3;
    let (w, r2) = dual_ridge(&z, &t, ridge).expect("positive definite");
    let lambda = ridge
        * z.iter()
            .map(|r| r.iter().map(|v| v * v).sum::<f64>())
            .sum::<f64>()
        / n as f64;
    // Primal: (Z^T Z + lambda I) W = Z^T T.
    let gram: Vec<Vec<f64>> = (0..d_in)
        .map(|i| {
            (0..d_in)
                .map(|j| {
                    z.iter().map(|r| r[i] * r[j]).sum::<f64>() + if i == j { lambda } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let rhs: Vec<Vec<f64>> = (0..d_in)
        .map(|i| {
            (0..d_out)
                .map(|j| z.iter().zip(&t).map(|(zr, tr)| zr[i] * tr[j]).sum())
                .collect()
        })
        .collect();
    let primal = solve(gram, rhs);
    assert_eq!(w.len(), d_in);
    for (a, b) in w.iter().flatten().zip(primal.iter().flatten()) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    assert!(r2 > 0.0 && r2 < 1.0, "{r2}");
}

#[test]
fn a_tiny_ridge_recovers_an_exact_linear_map() {
    let mut rng = StdRng::seed_from_u64(5);
    let (n, d_in, d_out) = (40, 6, 3);
    let truth = random(d_in, d_out, &mut rng);
    let z = centred(random(n, d_in, &mut rng));
    let t: Vec<Vec<f64>> = z
        .iter()
        .map(|r| {
            (0..d_out)
                .map(|j| r.iter().zip(&truth).map(|(v, w)| v * w[j]).sum())
                .collect()
        })
        .collect();
    let (w, r2) = dual_ridge(&z, &t, 1e-12).expect("positive definite");
    for (a, b) in w.iter().flatten().zip(truth.iter().flatten()) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert!((r2 - 1.0).abs() < 1e-9, "{r2}");
}

#[test]
fn a_negative_ridge_that_breaks_positive_definiteness_is_refused() {
    let z = vec![vec![1.0, 0.0], vec![-1.0, 0.0]];
    let t = vec![vec![1.0], vec![-1.0]];
    assert!(matches!(
        dual_ridge(&z, &t, -2.0),
        Err(FitError::Singular(r)) if r == -2.0
    ));
}
