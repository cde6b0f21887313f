//! KL(π‖π_ref) estimators from samples of π, per response token (DESIGN: "PPO KL").
//!
//! With `logp = log π(y_t|·)` and `logp_ref = log π_ref(y_t|·)` for a token sampled from π:
//! - `k1 = logp − logp_ref`: unbiased, can be negative on a single token; the reward penalty;
//! - `k3 = (ρ − 1) − ln ρ` with `ρ = π_ref/π`: unbiased, never negative, lower variance.
//!
//! Summed over the response tokens of a sequence, each estimates the sequence-level KL.

/// k1 of one token (nats).
pub fn k1(logp: f32, logp_ref: f32) -> f64 {
    logp as f64 - logp_ref as f64
}

/// k3 of one token (nats).
pub fn k3(logp: f32, logp_ref: f32) -> f64 {
    let log_rho = logp_ref as f64 - logp as f64;
    log_rho.exp_m1() - log_rho
}

/// Sequence-level (k1, k3) sums over the response tokens of each row. `logp`, `logp_ref`
/// and `mask` are `(rows, width)` row-major.
pub fn sequence_kl(logp: &[f32], logp_ref: &[f32], mask: &[f32], width: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = logp.len() / width.max(1);
    let (mut a, mut b) = (vec![0f64; rows], vec![0f64; rows]);
    for i in 0..rows {
        for t in i * width..(i + 1) * width {
            if mask[t] > 0.0 {
                a[i] += k1(logp[t], logp_ref[t]);
                b[i] += k3(logp[t], logp_ref[t]);
            }
        }
    }
    (a, b)
}

/// Exact KL(p‖q) = Σ p ln(p/q) of two categorical distributions (terms with p = 0 add 0).
pub fn categorical_kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).filter(|(a, _)| **a > 0.0).map(|(a, b)| a * (a / b).ln()).sum()
}
