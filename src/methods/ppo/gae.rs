//! Generalized advantage estimation (Schulman et al. 2016) over one response.
//!
//! `δ_t = r_t + γ·V_{t+1} − V_t` with `V_T = 0` after the last token (the episode ends), and
//! `A_t = δ_t + γλ·A_{t+1}`; the value target is `A_t + V_t`.

/// rewards, values: one entry per response token of one sequence (length T) → (advantages,
/// returns), both length T.
pub fn gae(rewards: &[f32], values: &[f32], gamma: f64, lambda: f64) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut adv = vec![0f32; n];
    let mut next_value = 0f64;
    let mut next_adv = 0f64;
    for t in (0..n).rev() {
        let delta = rewards[t] as f64 + gamma * next_value - values[t] as f64;
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv as f32;
        next_value = values[t] as f64;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Whitens `x` in place over the entries where `mask` is 1 (mean 0, population std 1);
/// masked-out entries become 0.
pub fn whiten(x: &mut [f32], mask: &[f32]) {
    let n: f64 = mask.iter().map(|&m| m as f64).sum();
    if n < 2.0 {
        return;
    }
    let mean = x.iter().zip(mask).map(|(&v, &m)| v as f64 * m as f64).sum::<f64>() / n;
    let var = x.iter().zip(mask).map(|(&v, &m)| m as f64 * (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt().max(1e-8);
    for (v, &m) in x.iter_mut().zip(mask) {
        *v = if m > 0.0 { ((*v as f64 - mean) / std) as f32 } else { 0.0 };
    }
}
