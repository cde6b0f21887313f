//! The statistics the conclusions rest on, as pure functions: Student's t (tail
//! probabilities, quantiles), two-sided p-values, the Holm and Benjamini–Hochberg
//! adjustments, and the power of a one-sample t test with the replicates it needs.
//!
//! Everything is computed, not tabulated: t's tail from the regularized incomplete beta
//! function (a continued fraction), the normal's from `erfc`, the noncentral t's upper tail
//! by integrating the normal's over the χ² density of the variance estimate. The test suite
//! pins each against independently computed values (`tests/stats.rs`).

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9: about 15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=10_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1].
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if !(a > 0.0 && b > 0.0) || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// P(|T| ≥ |t|) for Student's t with `df` degrees of freedom (df > 0): the two-sided
/// p-value of the statistic `t`. NaN for a NaN statistic or df ≤ 0.
pub fn t_two_sided(t: f64, df: f64) -> f64 {
    if t.is_nan() || !(df > 0.0) {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * t_two_sided(t, df);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The two-sided critical value `c` with P(|T| ≥ c) = `alpha` for Student's t with `df`
/// degrees of freedom (the 1 − alpha/2 quantile), by bisection on [`t_two_sided`].
pub fn t_critical(alpha: f64, df: f64) -> f64 {
    if !(alpha > 0.0 && alpha < 1.0) || !(df > 0.0) {
        return f64::NAN;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while t_two_sided(hi, df) > alpha {
        hi *= 2.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_two_sided(mid, df) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7
/// relative).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * (-z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
        .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// P(Z > z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Power of the two-sided one-sample t test at level `alpha` with `n` ≥ 2 observations when
/// the true mean is `effect` and the standard deviation `sd`: P(|T'| ≥ c) where T' is
/// noncentral t with n − 1 degrees of freedom and noncentrality effect·√n/sd, c the test's
/// critical value. Computed as E_V[P(Z ≥ c·√(V/ν) − δ) + P(Z ≤ −c·√(V/ν) − δ)] over the
/// χ²_ν density of V (Simpson's rule on a fine grid).
pub fn t_test_power(effect: f64, sd: f64, n: usize, alpha: f64) -> f64 {
    if n < 2 || !(sd > 0.0) || !effect.is_finite() {
        return f64::NAN;
    }
    let nu = (n - 1) as f64;
    let delta = effect.abs() * (n as f64).sqrt() / sd;
    let c = t_critical(alpha, nu);
    // χ²_ν density, in logs.
    let ln_norm = -(nu / 2.0) * 2f64.ln() - ln_gamma(nu / 2.0);
    let density = |v: f64| if v <= 0.0 { 0.0 } else { (ln_norm + (nu / 2.0 - 1.0) * v.ln() - v / 2.0).exp() };
    let reject = |v: f64| {
        let s = (v / nu).sqrt();
        normal_sf(c * s - delta) + normal_sf(c * s + delta)
    };
    // The χ² mass lies within ν ± 12·√(2ν) (+ a margin for small ν); near 0 the density of
    // ν = 1 is singular, handled by substituting v = u².
    let hi = nu + 12.0 * (2.0 * nu).sqrt() + 40.0;
    let steps = 4000usize;
    let h = hi.sqrt() / steps as f64;
    let mut sum = 0.0;
    for i in 0..=steps {
        let u = i as f64 * h;
        let v = u * u;
        // dv = 2u du.
        let f = density(v) * 2.0 * u * reject(v);
        let w = if i == 0 || i == steps {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        sum += w * f;
    }
    (sum * h / 3.0).clamp(0.0, 1.0)
}

/// The fewest observations (at least 2) for which [`t_test_power`] reaches `power`, or
/// `None` if even `max` do not (or the effect is 0).
pub fn replicates_needed(effect: f64, sd: f64, alpha: f64, power: f64, max: usize) -> Option<usize> {
    if !(effect.abs() > 0.0) || !(sd > 0.0) {
        return None;
    }
    let ok = |n: usize| t_test_power(effect, sd, n, alpha) >= power;
    if !ok(max) {
        return None;
    }
    // Power grows with n: bisect.
    let (mut lo, mut hi) = (2usize, max);
    if ok(lo) {
        return Some(lo);
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Holm's step-down adjustment of `p` (family-wise error): with the p-values sorted
/// ascending, p_(i) becomes max over j ≤ i of min(1, (m − j + 1)·p_(j)). NaN stays NaN and
/// does not count toward m.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_finite()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let m = idx.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running: f64 = 0.0;
    for (j, &i) in idx.iter().enumerate() {
        running = running.max(((m - j) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Benjamini–Hochberg q-values of `p` (false discovery rate): with the p-values sorted
/// ascending, q_(i) = min over j ≥ i of min(1, m·p_(j)/j). NaN stays NaN and does not count
/// toward m.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_finite()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let m = idx.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running: f64 = 1.0;
    for (j, &i) in idx.iter().enumerate().rev() {
        running = running.min((m as f64 * p[i] / (j + 1) as f64).min(1.0));
        out[i] = running;
    }
    out
}

/// Mean and sample standard deviation (n − 1); the deviation is NaN for fewer than two.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, f64::NAN);
    }
    (m, (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt())
}

/// Mean and standard error of the mean (sample std / sqrt(n); 0 for a single value).
pub fn mean_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (m, 0.0);
    }
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}
