//! A port of MINPACK-1's lmdif, fdjac2, qrfac, lmpar, qrsolv and enorm (Moré, Garbow, Hillstrom,
//! "User guide for MINPACK-1", Argonne 1980; the method: Moré, "The Levenberg-Marquardt
//! algorithm: implementation and theory", 1978), the code under scipy.optimize.leastsq and
//! curve_fit's default method. The structure, constants and operation order are the Fortran's,
//! so that the iterates, and so the fitted parameters, are scipy's to rounding rather than merely
//! "a" minimum: a different optimiser stops elsewhere within the tolerance, ~1e-6 away. Matrices
//! are column-major with `m` rows, as in Fortran.

pub(super) struct LmOptions {
    ftol: f64,
    xtol: f64,
    gtol: f64,
    maxfev: usize,
    epsfcn: f64,
    factor: f64,
}

impl LmOptions {
    /// `scipy.optimize.leastsq`'s defaults, which curve_fit passes on: tolerances
    /// 1.49012e-8, epsfcn machine epsilon (so the difference step is sqrt(eps) |x|), step bound
    /// factor 100, automatic variable scaling (mode 1).
    pub(super) fn curve_fit(maxfev: usize) -> Self {
        Self {
            ftol: 1.49012e-8,
            xtol: 1.49012e-8,
            gtol: 0.0,
            maxfev,
            epsfcn: f64::EPSILON,
            factor: 100.0,
        }
    }
}

pub(super) struct LmOutcome {
    pub(super) info: u8,
    pub(super) nfev: usize,
}

pub(super) fn lm_message(info: u8) -> &'static str {
    match info {
        0 => "improper input: fewer items than parameters",
        1 => "relative reduction of the sum of squares is at most ftol",
        2 => "relative change between iterates is at most xtol",
        3 => "both ftol and xtol conditions hold",
        4 => "the residuals are orthogonal to the Jacobian's columns",
        5 => "the evaluation budget ran out",
        6 => "ftol is too small: no further reduction is possible",
        7 => "xtol is too small: no further improvement of the parameters is possible",
        _ => {
            "gtol is too small: the residuals are orthogonal to the Jacobian's columns to machine precision"
        }
    }
}

/// The Euclidean norm, MINPACK's way: sums of squares split into small, intermediate and
/// large components so that neither underflow nor overflow can spoil it.
fn enorm(x: &[f64]) -> f64 {
    const RDWARF: f64 = 3.834e-20;
    const RGIANT: f64 = 1.304e19;
    let (mut s1, mut s2, mut s3, mut x1max, mut x3max) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let agiant = RGIANT / x.len() as f64;
    for &xi in x {
        let xabs = xi.abs();
        if xabs > RDWARF && xabs < agiant {
            s2 += xabs * xabs;
        } else if xabs > RDWARF {
            if xabs > x1max {
                let q = x1max / xabs;
                s1 = 1.0 + s1 * (q * q);
                x1max = xabs;
            } else {
                let q = xabs / x1max;
                s1 += q * q;
            }
        } else if xabs > x3max {
            let q = x3max / xabs;
            s3 = 1.0 + s3 * (q * q);
            x3max = xabs;
        } else if xabs != 0.0 {
            let q = xabs / x3max;
            s3 += q * q;
        }
    }
    if s1 != 0.0 {
        x1max * (s1 + (s2 / x1max) / x1max).sqrt()
    } else if s2 != 0.0 {
        if s2 >= x3max {
            (s2 * (1.0 + (x3max / s2) * (x3max * s3))).sqrt()
        } else {
            (x3max * ((s2 / x3max) + (x3max * s3))).sqrt()
        }
    } else {
        x3max * s3.sqrt()
    }
}

/// Forward-difference Jacobian into `fjac` (m x n), `fvec` being f(x); `x` is restored.
fn fdjac2(
    fcn: &mut dyn FnMut(&[f64], &mut [f64]),
    m: usize,
    x: &mut [f64],
    fvec: &[f64],
    fjac: &mut [f64],
    epsfcn: f64,
    wa: &mut [f64],
) {
    let eps = epsfcn.max(f64::EPSILON).sqrt();
    for j in 0..x.len() {
        let temp = x[j];
        let mut h = eps * temp.abs();
        if h == 0.0 {
            h = eps;
        }
        x[j] = temp + h;
        fcn(x, wa);
        x[j] = temp;
        for i in 0..m {
            fjac[i + j * m] = (wa[i] - fvec[i]) / h;
        }
    }
}

/// Householder QR with column pivoting of `a` (m x n, m >= n): R's strict upper triangle in
/// `a`, its diagonal in `rdiag`, the Householder vectors below; `acnorm` the original column
/// norms; `ipvt[j]` the original index of column j.
fn qrfac(
    m: usize,
    n: usize,
    a: &mut [f64],
    ipvt: &mut [usize],
    rdiag: &mut [f64],
    acnorm: &mut [f64],
    wa: &mut [f64],
) {
    for j in 0..n {
        acnorm[j] = enorm(&a[j * m..(j + 1) * m]);
        rdiag[j] = acnorm[j];
        wa[j] = rdiag[j];
        ipvt[j] = j;
    }
    for j in 0..m.min(n) {
        let mut kmax = j;
        for k in j..n {
            if rdiag[k] > rdiag[kmax] {
                kmax = k;
            }
        }
        if kmax != j {
            for i in 0..m {
                a.swap(i + j * m, i + kmax * m);
            }
            rdiag[kmax] = rdiag[j];
            wa[kmax] = wa[j];
            ipvt.swap(j, kmax);
        }
        let mut ajnorm = enorm(&a[j + j * m..(j + 1) * m]);
        if ajnorm != 0.0 {
            if a[j + j * m] < 0.0 {
                ajnorm = -ajnorm;
            }
            for i in j..m {
                a[i + j * m] /= ajnorm;
            }
            a[j + j * m] += 1.0;
            for k in j + 1..n {
                let mut sum = 0.0;
                for i in j..m {
                    sum += a[i + j * m] * a[i + k * m];
                }
                let temp = sum / a[j + j * m];
                for i in j..m {
                    a[i + k * m] -= temp * a[i + j * m];
                }
                if rdiag[k] != 0.0 {
                    let temp = a[j + k * m] / rdiag[k];
                    rdiag[k] *= 0.0f64.max(1.0 - temp * temp).sqrt();
                    let q = rdiag[k] / wa[k];
                    // The downdated norm has lost too many digits: recompute it.
                    if 0.05 * (q * q) <= f64::EPSILON {
                        rdiag[k] = enorm(&a[j + 1 + k * m..(k + 1) * m]);
                        wa[k] = rdiag[k];
                    }
                }
            }
        }
        rdiag[j] = -ajnorm;
    }
}

/// Solves `(A; D) x ≈ (b; 0)` in the least-squares sense given A's QR (R upper triangle of
/// `r`, leading dimension `ldr`, pivots `ipvt`) and `qtb` = Qᵀb, for diagonal D = `diag`;
/// leaves S (with Sᵀ S = Pᵀ(AᵀA + DD)P) in `sdiag` and the strict lower triangle of `r`.
#[allow(clippy::too_many_arguments)]
fn qrsolv(
    n: usize,
    r: &mut [f64],
    ldr: usize,
    ipvt: &[usize],
    diag: &[f64],
    qtb: &[f64],
    x: &mut [f64],
    sdiag: &mut [f64],
    wa: &mut [f64],
) {
    for j in 0..n {
        for i in j..n {
            r[i + j * ldr] = r[j + i * ldr];
        }
        x[j] = r[j + j * ldr];
        wa[j] = qtb[j];
    }
    for j in 0..n {
        let l = ipvt[j];
        if diag[l] != 0.0 {
            for s in &mut sdiag[j..n] {
                *s = 0.0;
            }
            sdiag[j] = diag[l];
            let mut qtbpj = 0.0;
            for k in j..n {
                if sdiag[k] == 0.0 {
                    continue;
                }
                let rkk = r[k + k * ldr];
                let (sin, cos) = if rkk.abs() < sdiag[k].abs() {
                    let cotan = rkk / sdiag[k];
                    let sin = 0.5 / (0.25 + 0.25 * (cotan * cotan)).sqrt();
                    (sin, sin * cotan)
                } else {
                    let tan = sdiag[k] / rkk;
                    let cos = 0.5 / (0.25 + 0.25 * (tan * tan)).sqrt();
                    (cos * tan, cos)
                };
                r[k + k * ldr] = cos * rkk + sin * sdiag[k];
                let temp = cos * wa[k] + sin * qtbpj;
                qtbpj = -sin * wa[k] + cos * qtbpj;
                wa[k] = temp;
                for i in k + 1..n {
                    let temp = cos * r[i + k * ldr] + sin * sdiag[i];
                    sdiag[i] = -sin * r[i + k * ldr] + cos * sdiag[i];
                    r[i + k * ldr] = temp;
                }
            }
        }
        sdiag[j] = r[j + j * ldr];
        r[j + j * ldr] = x[j];
    }
    let mut nsing = n;
    for j in 0..n {
        if sdiag[j] == 0.0 && nsing == n {
            nsing = j;
        }
        if nsing < n {
            wa[j] = 0.0;
        }
    }
    for j in (0..nsing).rev() {
        let mut sum = 0.0;
        for i in j + 1..nsing {
            sum += r[i + j * ldr] * wa[i];
        }
        wa[j] = (wa[j] - sum) / sdiag[j];
    }
    for j in 0..n {
        x[ipvt[j]] = wa[j];
    }
}

/// The Levenberg–Marquardt parameter `par` for which the step `x` solving
/// `(A; sqrt(par) D) x ≈ (b; 0)` has `|D x|` within 10% of `delta` (or `par = 0` when the
/// Gauss–Newton step already fits).
#[allow(clippy::too_many_arguments)]
fn lmpar(
    n: usize,
    r: &mut [f64],
    ldr: usize,
    ipvt: &[usize],
    diag: &[f64],
    qtb: &[f64],
    delta: f64,
    par: &mut f64,
    x: &mut [f64],
    sdiag: &mut [f64],
    wa1: &mut [f64],
    wa2: &mut [f64],
) {
    let dwarf = f64::MIN_POSITIVE;
    // The Gauss–Newton direction; a least-squares one when R is singular.
    let mut nsing = n;
    for j in 0..n {
        wa1[j] = qtb[j];
        if r[j + j * ldr] == 0.0 && nsing == n {
            nsing = j;
        }
        if nsing < n {
            wa1[j] = 0.0;
        }
    }
    for j in (0..nsing).rev() {
        wa1[j] /= r[j + j * ldr];
        let temp = wa1[j];
        for i in 0..j {
            wa1[i] -= r[i + j * ldr] * temp;
        }
    }
    for j in 0..n {
        x[ipvt[j]] = wa1[j];
    }
    for j in 0..n {
        wa2[j] = diag[j] * x[j];
    }
    let mut dxnorm = enorm(&wa2[..n]);
    let mut fp = dxnorm - delta;
    if fp <= 0.1 * delta {
        *par = 0.0;
        return;
    }
    // A lower bound for the zero of |D x(par)| - delta, from the Newton step when R has full
    // rank.
    let mut parl = 0.0;
    if nsing >= n {
        for j in 0..n {
            let l = ipvt[j];
            wa1[j] = diag[l] * (wa2[l] / dxnorm);
        }
        for j in 0..n {
            let mut sum = 0.0;
            for i in 0..j {
                sum += r[i + j * ldr] * wa1[i];
            }
            wa1[j] = (wa1[j] - sum) / r[j + j * ldr];
        }
        let temp = enorm(&wa1[..n]);
        parl = ((fp / delta) / temp) / temp;
    }
    // And an upper bound.
    for j in 0..n {
        let mut sum = 0.0;
        for i in 0..=j {
            sum += r[i + j * ldr] * qtb[i];
        }
        wa1[j] = sum / diag[ipvt[j]];
    }
    let gnorm = enorm(&wa1[..n]);
    let mut paru = gnorm / delta;
    if paru == 0.0 {
        paru = dwarf / delta.min(0.1);
    }
    *par = par.max(parl).min(paru);
    if *par == 0.0 {
        *par = gnorm / dxnorm;
    }
    let mut iter = 0;
    loop {
        iter += 1;
        if *par == 0.0 {
            *par = dwarf.max(0.001 * paru);
        }
        let temp = par.sqrt();
        for j in 0..n {
            wa1[j] = temp * diag[j];
        }
        qrsolv(n, r, ldr, ipvt, wa1, qtb, x, sdiag, wa2);
        for j in 0..n {
            wa2[j] = diag[j] * x[j];
        }
        dxnorm = enorm(&wa2[..n]);
        let previous = fp;
        fp = dxnorm - delta;
        if fp.abs() <= 0.1 * delta
            || (parl == 0.0 && fp <= previous && previous < 0.0)
            || iter == 10
        {
            return;
        }
        // Newton's correction.
        for j in 0..n {
            let l = ipvt[j];
            wa1[j] = diag[l] * (wa2[l] / dxnorm);
        }
        for j in 0..n {
            wa1[j] /= sdiag[j];
            let temp = wa1[j];
            for i in j + 1..n {
                wa1[i] -= r[i + j * ldr] * temp;
            }
        }
        let temp = enorm(&wa1[..n]);
        let parc = ((fp / delta) / temp) / temp;
        if fp > 0.0 {
            parl = parl.max(*par);
        }
        if fp < 0.0 {
            paru = paru.min(*par);
        }
        *par = parl.max(*par + parc);
    }
}

/// Minimises the sum of squares of `fcn`'s `m` outputs over `x` (MINPACK's lmdif, mode 1).
pub(super) fn lmdif(
    fcn: &mut dyn FnMut(&[f64], &mut [f64]),
    m: usize,
    x: &mut [f64],
    opts: &LmOptions,
) -> LmOutcome {
    let n = x.len();
    let epsmch = f64::EPSILON;
    if n == 0 || m < n || opts.maxfev == 0 {
        return LmOutcome { info: 0, nfev: 0 };
    }
    let mut fvec = vec![0.0; m];
    let mut fjac = vec![0.0; m * n];
    let (mut diag, mut qtf, mut ipvt) = (vec![0.0; n], vec![0.0; n], vec![0usize; n]);
    let (mut wa1, mut wa2, mut wa3, mut wa4) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; m]);
    fcn(x, &mut fvec);
    let mut nfev = 1;
    let mut fnorm = enorm(&fvec);
    let (mut par, mut delta, mut xnorm) = (0.0, 0.0, 0.0);
    let mut iter = 1;
    loop {
        fdjac2(fcn, m, x, &fvec, &mut fjac, opts.epsfcn, &mut wa4);
        nfev += n;
        qrfac(m, n, &mut fjac, &mut ipvt, &mut wa1, &mut wa2, &mut wa3);
        if iter == 1 {
            // Scale each parameter by its Jacobian column's norm, and bound the first step
            // by `factor` times the scaled starting point.
            for j in 0..n {
                diag[j] = if wa2[j] == 0.0 { 1.0 } else { wa2[j] };
                wa3[j] = diag[j] * x[j];
            }
            xnorm = enorm(&wa3);
            delta = opts.factor * xnorm;
            if delta == 0.0 {
                delta = opts.factor;
            }
        }
        // Qᵀ fvec, its first n entries into qtf; R's diagonal back into fjac.
        wa4.copy_from_slice(&fvec);
        for j in 0..n {
            let ajj = fjac[j + j * m];
            if ajj != 0.0 {
                let mut sum = 0.0;
                for i in j..m {
                    sum += fjac[i + j * m] * wa4[i];
                }
                let temp = -sum / ajj;
                for i in j..m {
                    wa4[i] += fjac[i + j * m] * temp;
                }
            }
            fjac[j + j * m] = wa1[j];
            qtf[j] = wa4[j];
        }
        // The scaled gradient's largest cosine with the residuals.
        let mut gnorm: f64 = 0.0;
        if fnorm != 0.0 {
            for j in 0..n {
                let l = ipvt[j];
                if wa2[l] != 0.0 {
                    let mut sum = 0.0;
                    for i in 0..=j {
                        sum += fjac[i + j * m] * (qtf[i] / fnorm);
                    }
                    gnorm = gnorm.max((sum / wa2[l]).abs());
                }
            }
        }
        if gnorm <= opts.gtol {
            return LmOutcome { info: 4, nfev };
        }
        for j in 0..n {
            diag[j] = diag[j].max(wa2[j]);
        }
        loop {
            lmpar(
                n, &mut fjac, m, &ipvt, &diag, &qtf, delta, &mut par, &mut wa1, &mut wa2, &mut wa3,
                &mut wa4,
            );
            for j in 0..n {
                wa1[j] = -wa1[j];
                wa2[j] = x[j] + wa1[j];
                wa3[j] = diag[j] * wa1[j];
            }
            let pnorm = enorm(&wa3);
            if iter == 1 {
                delta = delta.min(pnorm);
            }
            fcn(&wa2, &mut wa4);
            nfev += 1;
            let fnorm1 = enorm(&wa4);
            let actred = if 0.1 * fnorm1 < fnorm {
                let q = fnorm1 / fnorm;
                1.0 - q * q
            } else {
                -1.0
            };
            // The reduction the linear model predicted, and the directional derivative.
            for j in 0..n {
                wa3[j] = 0.0;
                let temp = wa1[ipvt[j]];
                for i in 0..=j {
                    wa3[i] += fjac[i + j * m] * temp;
                }
            }
            let temp1 = enorm(&wa3) / fnorm;
            let temp2 = (par.sqrt() * pnorm) / fnorm;
            let prered = temp1 * temp1 + temp2 * temp2 / 0.5;
            let dirder = -(temp1 * temp1 + temp2 * temp2);
            let ratio = if prered != 0.0 { actred / prered } else { 0.0 };
            if ratio <= 0.25 {
                let mut temp = if actred >= 0.0 {
                    0.5
                } else {
                    0.5 * dirder / (dirder + 0.5 * actred)
                };
                if 0.1 * fnorm1 >= fnorm || temp < 0.1 {
                    temp = 0.1;
                }
                delta = temp * delta.min(pnorm / 0.1);
                par /= temp;
            } else if par == 0.0 || ratio >= 0.75 {
                delta = pnorm / 0.5;
                par *= 0.5;
            }
            if ratio >= 1e-4 {
                for j in 0..n {
                    x[j] = wa2[j];
                    wa2[j] = diag[j] * x[j];
                }
                fvec.copy_from_slice(&wa4);
                xnorm = enorm(&wa2);
                fnorm = fnorm1;
                iter += 1;
            }
            let ftol_met = actred.abs() <= opts.ftol && prered <= opts.ftol && 0.5 * ratio <= 1.0;
            let xtol_met = delta <= opts.xtol * xnorm;
            let info = match (ftol_met, xtol_met) {
                (true, true) => 3,
                (false, true) => 2,
                (true, false) => 1,
                (false, false) => 0,
            };
            if info != 0 {
                return LmOutcome { info, nfev };
            }
            let mut info = 0;
            if nfev >= opts.maxfev {
                info = 5;
            }
            if actred.abs() <= epsmch && prered <= epsmch && 0.5 * ratio <= 1.0 {
                info = 6;
            }
            if delta <= epsmch * xnorm {
                info = 7;
            }
            if gnorm <= epsmch {
                info = 8;
            }
            if info != 0 {
                return LmOutcome { info, nfev };
            }
            if ratio >= 1e-4 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::scores::close;

    #[test]
    fn lmdif_solves_rosenbrock() {
        // Residuals (10 (x2 - x1²), 1 - x1): zero at (1, 1), from MINPACK's start (-1.2, 1).
        let mut f = |x: &[f64], out: &mut [f64]| {
            out[0] = 10.0 * (x[1] - x[0] * x[0]);
            out[1] = 1.0 - x[0];
        };
        let mut x = [-1.2, 1.0];
        let out = lmdif(&mut f, 2, &mut x, &LmOptions::curve_fit(600));
        assert!((1..=4).contains(&out.info), "info {}", out.info);
        assert!(close(x[0], 1.0, 1e-7) && close(x[1], 1.0, 1e-7), "{x:?}");
    }
}
