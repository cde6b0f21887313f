//! Gao et al. (2023) functional forms for gold reward versus KL, and the linear fits used
//! for scaling laws.
//!
//! With `d = sqrt(KL)` (KL in nats) and gold in standardized units (see the design's
//! "Scores"), the two forms are
//!
//! - best-of-n: `R(d) = d(α − βd)`, peak at `d* = α/(2β)`, predicted peak `R(d*) = α²/(4β)`;
//! - RL:        `R(d) = d(α − β ln d)`, peak at `d* = exp(α/β − 1)`, predicted peak
//!   `R(d*) = β·d*` (at the peak `α − β ln d* = β`).
//!
//! Both are linear in (α, β), so [`fit_form`] solves ordinary least squares **without an
//! intercept** on two regressors — best-of-n: `x1 = d`, `x2 = −d²`; RL: `x1 = d`,
//! `x2 = −d ln d` (taken as 0 at d = 0, its limit) — through the 2×2 normal equations in
//! f64. Gold improvement is measured against π_ref, so R(0) = 0 is part of the model.
//!
//! Contract: pure functions over slices; no panics on bad data. Points whose KL or value is
//! not finite, or whose KL is negative (a noisy k1 estimate can dip below 0; it has no
//! `d`), are skipped; too few usable points, mismatched lengths or a singular system give
//! `None`.

/// One of the Gao et al. functional forms of gold reward against `d = sqrt(KL)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// Best-of-n: `R(d) = d(α − βd)`.
    BestOfN,
    /// RL (PPO): `R(d) = d(α − β ln d)`.
    Rl,
}

impl Form {
    /// Both forms, best-of-n first.
    pub const ALL: [Form; 2] = [Form::BestOfN, Form::Rl];

    /// A stable, readable ASCII name for tables: `"bon_d(a-b*d)"` or `"rl_d(a-b*ln(d))"`.
    pub fn name(&self) -> &'static str {
        match self {
            Form::BestOfN => "bon_d(a-b*d)",
            Form::Rl => "rl_d(a-b*ln(d))",
        }
    }

    /// The form's value at `d = sqrt(KL)` (d ≥ 0, in sqrt-nats) for coefficients α, β
    /// (standardized gold per sqrt-nat). The RL form is 0 at d = 0 (its limit). NaN for
    /// d < 0 or non-finite d.
    pub fn predict(&self, alpha: f64, beta: f64, d: f64) -> f64 {
        if !d.is_finite() || d < 0.0 {
            return f64::NAN;
        }
        alpha * self.x1(d) + beta * self.x2(d)
    }

    /// The first regressor, the coefficient of α: `d` for both forms.
    fn x1(&self, d: f64) -> f64 {
        d
    }

    /// The second regressor, the coefficient of β: `−d²` (best-of-n) or `−d ln d`
    /// (RL; 0 at d = 0).
    fn x2(&self, d: f64) -> f64 {
        match self {
            Form::BestOfN => -d * d,
            Form::Rl => {
                if d == 0.0 {
                    0.0
                } else {
                    -d * d.ln()
                }
            }
        }
    }

    /// The interior peak `(d*, R(d*))` of the curve, or `None` when the curve has none
    /// in d > 0: β ≤ 0 (it never turns down), for best-of-n also α ≤ 0 (it never rises),
    /// and for RL when `exp(α/β − 1)` overflows.
    fn peak(&self, alpha: f64, beta: f64) -> Option<(f64, f64)> {
        if !alpha.is_finite() || !beta.is_finite() || beta <= 0.0 {
            return None;
        }
        let (d_star, r_star) = match self {
            Form::BestOfN => {
                if alpha <= 0.0 {
                    return None;
                }
                (alpha / (2.0 * beta), alpha * alpha / (4.0 * beta))
            }
            Form::Rl => {
                let d_star = (alpha / beta - 1.0).exp();
                (d_star, beta * d_star)
            }
        };
        (d_star.is_finite() && d_star > 0.0 && r_star.is_finite()).then_some((d_star, r_star))
    }
}

/// A fitted functional form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FormFit {
    pub form: Form,
    /// α, in standardized gold per sqrt-nat.
    pub alpha: f64,
    /// β, in standardized gold per nat (best-of-n) or per sqrt-nat (RL).
    pub beta: f64,
    /// `1 − SS_res/SS_tot` with SS_tot taken about the mean of y. The model has no
    /// intercept, so this is the conservative definition (the uncentred one, about 0, is
    /// never smaller); it can be negative for a bad fit, and is NaN when y has no variance.
    pub r2: f64,
    /// Points used (after skipping non-finite values and negative KL).
    pub points: usize,
    /// Peak location `d*` in sqrt-nats; `None` when the curve has no interior peak.
    pub d_star: Option<f64>,
    /// Peak location `KL* = d*²` in nats; `None` with `d_star` or when `d*²` overflows.
    pub kl_star: Option<f64>,
    /// Predicted peak gold `R(d*)`, standardized units; `None` with `d_star`.
    pub peak_pred: Option<f64>,
}

impl FormFit {
    /// The fitted curve at `kl` nats (NaN for negative or non-finite KL).
    pub fn at_kl(&self, kl: f64) -> f64 {
        self.form.predict(self.alpha, self.beta, kl.sqrt())
    }
}

/// Fits `form` to gold `y` (standardized units) observed at `kl` (nats; converted to
/// `d = sqrt(KL)` here). `kl` and `y` are parallel: `(points,)` each.
///
/// Least squares without intercept on the form's two regressors, solved through the 2×2
/// normal equations. `None` when the lengths differ, fewer than 3 usable points remain
/// (finite, KL ≥ 0), or the system is singular: its determinant is at most 1e-12 of the
/// product of the diagonal (the regressors are collinear over the observed d, e.g. all
/// points at one KL or all at d = 0).
pub fn fit_form(form: Form, kl: &[f64], y: &[f64]) -> Option<FormFit> {
    if kl.len() != y.len() {
        return None;
    }
    let pts: Vec<(f64, f64)> = kl
        .iter()
        .zip(y)
        .filter(|(k, v)| k.is_finite() && v.is_finite() && **k >= 0.0)
        .map(|(k, v)| (k.sqrt(), *v))
        .collect();
    if pts.len() < 3 {
        return None;
    }
    // Normal equations: [a11 a12; a12 a22] [α; β] = [b1; b2].
    let (mut a11, mut a12, mut a22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(d, v) in &pts {
        let (x1, x2) = (form.x1(d), form.x2(d));
        a11 += x1 * x1;
        a12 += x1 * x2;
        a22 += x2 * x2;
        b1 += x1 * v;
        b2 += x2 * v;
    }
    let det = a11 * a22 - a12 * a12;
    // By Cauchy–Schwarz 0 ≤ det ≤ a11·a22; det/(a11·a22) = 1 − cos²(x1, x2).
    if !det.is_finite() || a11 <= 0.0 || a22 <= 0.0 || det <= 1e-12 * a11 * a22 {
        return None;
    }
    let alpha = (a22 * b1 - a12 * b2) / det;
    let beta = (a11 * b2 - a12 * b1) / det;
    if !alpha.is_finite() || !beta.is_finite() {
        return None;
    }
    let r2 = r_squared(pts.iter().map(|&(d, v)| (form.predict(alpha, beta, d), v)));
    let peak = form.peak(alpha, beta);
    let d_star = peak.map(|(d, _)| d);
    Some(FormFit {
        form,
        alpha,
        beta,
        r2,
        points: pts.len(),
        d_star,
        kl_star: d_star.map(|d| d * d).filter(|k| k.is_finite()),
        peak_pred: peak.map(|(_, r)| r),
    })
}

/// A fitted line `y = slope·x + intercept`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
    /// `1 − SS_res/SS_tot` about the mean of y (equals the squared correlation for OLS
    /// with intercept); NaN when y has no variance.
    pub r2: f64,
    /// Points used (pairs with both values finite).
    pub points: usize,
}

/// Ordinary least squares with intercept of `y` on `x` (parallel, `(points,)` each);
/// units are the caller's. Pairs with a non-finite value are skipped. `None` when the
/// lengths differ, fewer than 2 pairs remain, or x has no spread (its centred sum of
/// squares is at most 1e-24 of its raw sum of squares, i.e. a relative spread ≤ 1e-12).
///
/// For scaling laws in model or data size (e.g. α or β against proxy parameters, which
/// Gao et al. find roughly linear in the log), see [`log_linear_fit`].
pub fn linear_fit(x: &[f64], y: &[f64]) -> Option<LinearFit> {
    if x.len() != y.len() {
        return None;
    }
    let pts: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (*a, *b))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let raw: f64 = pts.iter().map(|p| p.0 * p.0).sum();
    if !sxx.is_finite() || sxx <= 1e-24 * raw {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    if !slope.is_finite() || !intercept.is_finite() {
        return None;
    }
    let r2 = r_squared(pts.iter().map(|&(a, b)| (slope * a + intercept, b)));
    Some(LinearFit {
        slope,
        intercept,
        r2,
        points: pts.len(),
    })
}

/// Scaling fit `y = slope·ln x + intercept` (e.g. a fitted α against proxy parameter
/// count): [`linear_fit`] on `ln x`. Pairs with x ≤ 0 are skipped along with non-finite
/// ones; `None` under the same conditions as [`linear_fit`].
pub fn log_linear_fit(x: &[f64], y: &[f64]) -> Option<LinearFit> {
    if x.len() != y.len() {
        return None;
    }
    let lx: Vec<f64> = x.iter().map(|&v| if v > 0.0 { v.ln() } else { f64::NAN }).collect();
    linear_fit(&lx, y)
}

/// `1 − SS_res/SS_tot` over (prediction, observation) pairs, SS_tot about the mean of the
/// observations; NaN when there are none or the observations have no variance (relative
/// spread ≤ 1e-12).
fn r_squared(pairs: impl Iterator<Item = (f64, f64)> + Clone) -> f64 {
    let (n, sum, raw) = pairs
        .clone()
        .fold((0usize, 0.0, 0.0), |(n, s, q), (_, v)| (n + 1, s + v, q + v * v));
    if n == 0 {
        return f64::NAN;
    }
    let mean = sum / n as f64;
    let (ss_res, ss_tot) = pairs.fold((0.0, 0.0), |(r, t), (p, v)| {
        (r + (v - p) * (v - p), t + (v - mean) * (v - mean))
    });
    // Constant observations leave only rounding in SS_tot: treat a relative spread ≤ 1e-12
    // as none, as linear_fit does for x.
    if ss_tot > 1e-24 * raw {
        1.0 - ss_res / ss_tot
    } else {
        f64::NAN
    }
}
