//! Rank and linear correlations as `scipy.stats` computes them (Virtanen et al., "SciPy 1.0:
//! fundamental algorithms for scientific computing in Python", Nature Methods 2020), the
//! reference the literature's numbers come from: Pearson's r, Spearman's rho (Spearman, "The
//! proof and measurement of association between two things", 1904) and Kendall's tau-b (Kendall,
//! "The treatment of ties in ranking problems", Biometrika 1945) by Knight's O(n log n) algorithm
//! ("A computer method for calculating Kendall's tau with ungrouped data", JASA 1966).

use super::{MIN_ITEMS, MetricError, check_pair, is_constant, mean};

/// Inputs are checked finite before any sort, so no comparison here meets a NaN.
fn cmp_f64(a: f64, b: f64) -> std::cmp::Ordering {
    a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
}

/// Pearson's r of checked input, as `scipy.stats.pearsonr`: two-pass (centred sums), so a
/// large common offset (MOS around 5 with small spread) costs no precision; clipped to
/// [-1, 1] against rounding; NaN when either side is constant.
pub(super) fn pearson(x: &[f64], y: &[f64]) -> f64 {
    if is_constant(x) || is_constant(y) {
        return f64::NAN;
    }
    let (mx, my) = (mean(x), mean(y));
    let r = centred_r(x, y, mx, my, 1.0, 1.0);
    if r.is_finite() {
        return r;
    }
    // Squares or their product overflowed or underflowed (deviations beyond ~1e77 or below
    // ~1e-77): again with the deviations scaled to at most 1, which the ratio does not see.
    // Only this path pays the extra pass.
    let spread = |xs: &[f64], m: f64| xs.iter().fold(0.0f64, |a, &v| a.max((v - m).abs()));
    centred_r(x, y, mx, my, spread(x, mx), spread(y, my))
}

fn centred_r(x: &[f64], y: &[f64], mx: f64, my: f64, sx: f64, sy: f64) -> f64 {
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = ((a - mx) / sx, (b - my) / sy);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    // One square root of the product: a perfectly linear pair gives exactly ±1.
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Ranks from 1, tied values sharing the mean of the ranks they span (`rankdata`'s
/// "average"). The averages are half-integers, exact in f64.
pub fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| cmp_f64(xs[a], xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && xs[order[end]] == xs[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation (SRCC), as `scipy.stats.spearmanr`. NaN when either side is
/// constant.
pub fn srcc(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("SRCC", pred, gt, MIN_ITEMS)?;
    Ok(pearson(&average_ranks(pred), &average_ranks(gt)))
}

/// Pearson's linear correlation (PLCC) of the raw scores, as `scipy.stats.pearsonr`. NaN when
/// either side is constant.
pub fn plcc(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("PLCC", pred, gt, MIN_ITEMS)?;
    Ok(pearson(pred, gt))
}

/// Dense ranks from 0 (equal values share one, no gaps): Kendall's tau only compares.
fn dense_ranks(xs: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| cmp_f64(xs[a], xs[b]));
    let mut ranks = vec![0; xs.len()];
    let mut rank = 0;
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && xs[i] != xs[order[k - 1]] {
            rank += 1;
        }
        ranks[i] = rank;
    }
    ranks
}

/// Pairs within groups of equal ranks: sum of c(c-1)/2 over group sizes c.
fn tied_pairs(ranks: &[usize]) -> u64 {
    let mut counts = vec![0u64; ranks.len()];
    for &r in ranks {
        counts[r] += 1;
    }
    counts.iter().map(|&c| c * c.saturating_sub(1) / 2).sum()
}

/// Pairs i < j with `xs[i] > xs[j]`, by merge sort (`xs` is left sorted).
fn inversions(xs: &mut [usize]) -> u64 {
    let mut buf = xs.to_vec();
    let mut count = 0u64;
    let mut width = 1;
    // Bottom-up merge: no recursion depth to think about for large sets.
    while width < xs.len() {
        let mut lo = 0;
        while lo < xs.len() {
            let mid = (lo + width).min(xs.len());
            let hi = (lo + 2 * width).min(xs.len());
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                // Equal values are not inverted: take the left one first.
                if xs[j] < xs[i] {
                    buf[k] = xs[j];
                    count += (mid - i) as u64;
                    j += 1;
                } else {
                    buf[k] = xs[i];
                    i += 1;
                }
                k += 1;
            }
            buf[k..k + (mid - i)].copy_from_slice(&xs[i..mid]);
            k += mid - i;
            buf[k..k + (hi - j)].copy_from_slice(&xs[j..hi]);
            lo = hi;
        }
        xs.copy_from_slice(&buf);
        width *= 2;
    }
    count
}

/// Kendall's rank correlation (KRCC), tau-b, as `scipy.stats.kendalltau` (Knight's
/// O(n log n) algorithm, the same pair counts and the same closing formula, so the result is
/// scipy's to the last bits). NaN when either side is constant.
pub fn krcc(pred: &[f64], gt: &[f64]) -> Result<f64, MetricError> {
    check_pair("KRCC", pred, gt, MIN_ITEMS)?;
    let n = pred.len();
    let (x, y) = (dense_ranks(pred), dense_ranks(gt));
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| (x[i], y[i]));
    // Pairs tied in both.
    let mut joint = 0u64;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && (x[order[end]], y[order[end]]) == (x[order[start]], y[order[start]]) {
            end += 1;
        }
        let c = (end - start) as u64;
        joint += c * (c - 1) / 2;
        start = end;
    }
    // Sorted by (x, y), a pair is discordant exactly when its y values are inverted: pairs tied
    // in x have ascending y and so never count.
    let mut ys: Vec<usize> = order.iter().map(|&i| y[i]).collect();
    let discordant = inversions(&mut ys);
    let (xtie, ytie) = (tied_pairs(&x), tied_pairs(&y));
    let total = n as u64 * (n as u64 - 1) / 2;
    if xtie == total || ytie == total {
        return Ok(f64::NAN);
    }
    // total = concordant + discordant + (xtie - joint) + (ytie - joint) + joint.
    let con_minus_dis =
        total as i64 - xtie as i64 - ytie as i64 + joint as i64 - 2 * discordant as i64;
    let tau =
        con_minus_dis as f64 / ((total - xtie) as f64).sqrt() / ((total - ytie) as f64).sqrt();
    Ok(tau.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::scores::close;

    #[test]
    fn monotone_is_perfect_and_reversed_is_minus_one() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 8.0, 16.0, 32.0];
        let rev: Vec<f64> = y.iter().rev().copied().collect();
        assert_eq!(srcc(&x, &y), Ok(1.0));
        assert_eq!(srcc(&x, &rev), Ok(-1.0));
        // scipy's closing division, 10 / sqrt(10) / sqrt(10), gives 0.9999999999999999 here
        // and so do we.
        assert!(close(krcc(&x, &y).unwrap_or(0.0), 1.0, 1e-15));
        assert!(close(krcc(&x, &rev).unwrap_or(0.0), -1.0, 1e-15));
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0, 3.0]),
            vec![4.0, 1.0, 4.0, 2.0, 4.0]
        );
    }

    #[test]
    fn ties_by_hand() {
        // Ranks of x: 1, 2.5, 2.5, 4; centred: -1.5, 0, 0, 1.5 against -1.5, -0.5, 0.5, 1.5,
        // so r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
        let (x, y) = ([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]);
        assert!(close(srcc(&x, &y).unwrap_or(0.0), 0.9f64.sqrt(), 1e-15));
        // 6 pairs, 1 tied in x, none discordant: tau_b = 5 / sqrt(5 * 6).
        assert!(close(
            krcc(&x, &y).unwrap_or(0.0),
            (5.0f64 / 6.0).sqrt(),
            1e-15
        ));
        // Two discordant pairs of ten: (8 - 2) / 10.
        let tau = krcc(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 1.0, 4.0, 3.0, 5.0]);
        assert!(close(tau.unwrap_or(0.0), 0.6, 1e-15));
        // Ties on both sides, one pair tied in both: x = 1,1,2,2 and y = 1,2,2,3.
        // Pairs: (0,1) x-tie; (0,2),(0,3),(1,3) concordant; (1,2) y-tie; (2,3) x-tie.
        // tau_b = 3 / sqrt((6 - 2)(6 - 1)).
        let tau = krcc(&[1.0, 1.0, 2.0, 2.0], &[1.0, 2.0, 2.0, 3.0]);
        assert!(close(tau.unwrap_or(0.0), 3.0 / 20.0f64.sqrt(), 1e-15));
    }

    #[test]
    fn plcc_by_hand() {
        // Centred: (-1, 0, 1) and (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84).
        let r = plcc(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert!(close(r.unwrap_or(0.0), 9.0 / 84.0f64.sqrt(), 1e-15));
    }

    #[test]
    fn inversions_match_the_quadratic_count() {
        let xs: Vec<usize> = (0..257u64)
            .map(|i| ((i * 7919 + 13) % 31) as usize)
            .collect();
        let mut slow = 0u64;
        for i in 0..xs.len() {
            for j in i + 1..xs.len() {
                slow += u64::from(xs[i] > xs[j]);
            }
        }
        let mut sorted = xs.clone();
        assert_eq!(inversions(&mut sorted), slow);
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn krcc_matches_the_pairwise_definition() {
        let x: Vec<f64> = (0..200u64).map(|i| ((i * 37) % 11) as f64).collect();
        let y: Vec<f64> = (0..200u64)
            .map(|i| ((i * 53 + 7) % 13) as f64 * 0.5)
            .collect();
        let (mut s, mut tx, mut ty) = (0i64, 0i64, 0i64);
        for i in 0..x.len() {
            for j in i + 1..x.len() {
                let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
                s +=
                    (dx.signum() as i64) * (dy.signum() as i64) * i64::from(dx != 0.0 && dy != 0.0);
                tx += i64::from(dx != 0.0);
                ty += i64::from(dy != 0.0);
            }
        }
        let expected = s as f64 / ((tx as f64) * (ty as f64)).sqrt();
        assert!(close(krcc(&x, &y).unwrap_or(0.0), expected, 1e-14));
    }
}
