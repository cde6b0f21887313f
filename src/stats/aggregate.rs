//! The one aggregator of an ensemble's scores, shared by best-of-n and PPO.
//!
//! Input: the k standardized member scores `r_1..r_k` of one sample. `mean`; `wco`, the
//! worst case (min); `uwo(λ)` = mean − λ·Var with Var the population variance (divide by
//! k) and λ = 0 meaning no penalty; extras: `median`, `mean_std(λ)` = mean − λ·std, and a
//! single member.

use serde::{Deserialize, Serialize};

/// How k member scores of one sample become one score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Aggregator {
    /// One member alone (0-based index).
    Member(usize),
    Mean,
    /// Worst-case optimization: the minimum.
    Wco,
    /// Uncertainty-weighted optimization: mean − λ·population variance.
    Uwo(f64),
    Median,
    /// mean − λ·population standard deviation.
    MeanStd(f64),
    /// No aggregate was optimized: the policy learnt from the preference pairs directly
    /// (direct alignment). Its score of a sample is the members' mean, as a measurement only.
    Direct,
}

impl Aggregator {
    /// Stable name used in tables and figures: `member0`, `mean`, `wco`, `uwo`, `median`,
    /// `mean_std` (λ is a column of its own).
    pub fn name(&self) -> String {
        match self {
            Aggregator::Member(i) => format!("member{i}"),
            Aggregator::Mean => "mean".into(),
            Aggregator::Wco => "wco".into(),
            Aggregator::Uwo(_) => "uwo".into(),
            Aggregator::Median => "median".into(),
            Aggregator::MeanStd(_) => "mean_std".into(),
            Aggregator::Direct => "direct".into(),
        }
    }

    /// Name with λ where there is one, as every table, claim and legend writes it:
    /// `uwo(0.5)` ([`label`]).
    pub fn label(&self) -> String {
        label(&self.name(), self.lambda())
    }

    /// The aggregator named `name` (as [`Aggregator::name`] writes it) with `lambda`.
    pub fn from_parts(name: &str, lambda: Option<f64>) -> Option<Self> {
        Some(match (name, lambda) {
            ("mean", None) => Aggregator::Mean,
            ("wco", None) => Aggregator::Wco,
            ("median", None) => Aggregator::Median,
            ("direct", None) => Aggregator::Direct,
            ("uwo", Some(l)) => Aggregator::Uwo(l),
            ("mean_std", Some(l)) => Aggregator::MeanStd(l),
            (m, None) => Aggregator::Member(member_index(m)?),
            _ => return None,
        })
    }

    /// The member's index, for a single member.
    pub fn member(&self) -> Option<usize> {
        match self {
            Aggregator::Member(i) => Some(*i),
            _ => None,
        }
    }

    /// The order aggregators are listed in: the single members (by index), then mean,
    /// median, wco, uwo, mean_std, each by λ ([`order`]).
    pub fn order(&self, other: &Self) -> std::cmp::Ordering {
        let lambda = |a: &Self| a.lambda().unwrap_or(f64::NEG_INFINITY);
        order(&self.name()).cmp(&order(&other.name())).then(lambda(self).total_cmp(&lambda(other)))
    }

    /// The penalty weight, for the aggregators that have one.
    pub fn lambda(&self) -> Option<f64> {
        match self {
            Aggregator::Uwo(l) | Aggregator::MeanStd(l) => Some(*l),
            _ => None,
        }
    }

    /// Aggregates the member scores of one sample.
    pub fn apply(&self, scores: &[f32]) -> f32 {
        assert!(!scores.is_empty(), "an ensemble has at least one member");
        match *self {
            Aggregator::Member(i) => scores[i],
            Aggregator::Mean | Aggregator::Direct => mean(scores) as f32,
            Aggregator::Wco => scores.iter().copied().fold(f32::INFINITY, f32::min),
            Aggregator::Uwo(l) => (mean(scores) - l * population_variance(scores)) as f32,
            Aggregator::Median => {
                let mut s = scores.to_vec();
                s.sort_by(f32::total_cmp);
                let k = s.len();
                if k % 2 == 1 {
                    s[k / 2]
                } else {
                    (s[k / 2 - 1] + s[k / 2]) / 2.0
                }
            }
            Aggregator::MeanStd(l) => (mean(scores) - l * population_variance(scores).sqrt()) as f32,
        }
    }

    /// Aggregates every sample: `members[j][i]` is member j's score of sample i → (n,).
    pub fn apply_all(&self, members: &[Vec<f32>]) -> Vec<f32> {
        let n = members.first().map_or(0, |m| m.len());
        let mut buf = vec![0f32; members.len()];
        (0..n)
            .map(|i| {
                for (b, m) in buf.iter_mut().zip(members) {
                    *b = m[i];
                }
                self.apply(&buf)
            })
            .collect()
    }
}

/// Arithmetic mean.
pub fn mean(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64
}

/// Population variance (divides by k, not k − 1).
pub fn population_variance(x: &[f32]) -> f64 {
    let m = mean(x);
    x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / x.len() as f64
}

/// `uwo(0.5)` for an aggregator named `name` with λ, the bare name otherwise, and a shaped
/// one's suffix after it (`uwo+par` → `uwo(0.5)+par`, [`super::shaping`]): the one label of
/// an aggregator in tables, claims and legends.
pub fn label(name: &str, lambda: Option<f64>) -> String {
    let (base, shaping) = split(name);
    let shaped = shaping.map(|s| format!("+{s}")).unwrap_or_default();
    match lambda {
        Some(l) => format!("{base}({l}){shaped}"),
        None => format!("{base}{shaped}"),
    }
}

/// A label split at its shaping: `mean+par` → (`mean`, Some(`par`)), `uwo(0.1)` →
/// (`uwo(0.1)`, None). The shaping's name is not checked
/// ([`super::shaping::Shaping::from_name`] does).
pub fn split(label: &str) -> (&str, Option<&str>) {
    match label.split_once('+') {
        Some((base, shaping)) => (base, Some(shaping)),
        None => (label, None),
    }
}

/// The member index of a single member's name (`member3` → 3); `None` for every other
/// aggregator.
pub fn member_index(name: &str) -> Option<usize> {
    name.strip_prefix("member")?.parse().ok()
}

/// The order aggregators are listed in, by name: the single members (by index), then mean,
/// median, wco, uwo, mean_std, then others by name.
pub fn order(name: &str) -> (u8, usize, String) {
    if let Some(k) = member_index(name) {
        return (0, k, String::new());
    }
    let rank = match name {
        "mean" => 1,
        "median" => 2,
        "wco" => 3,
        "uwo" => 4,
        "mean_std" => 5,
        _ => 6,
    };
    (rank, 0, name.to_string())
}
