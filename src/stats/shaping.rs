//! Reward shaping: what a policy method (PPO, GRPO, RLOO) does to the aggregated proxy score
//! r of a response before it becomes the reward, whatever the aggregator
//! ([`super::aggregate`]). Scores are standardized (π_ref mean 0, sd 1):
//! - `none`: r;
//! - `par` (Fu et al. 2025, preference as reward): σ(r − r_ref), in (0, 1);
//! - `center`: r − r_ref;
//! - `clip`: clamp(r, −c, c);
//! - `length` (a length penalty, as ODIN's aim): r − α·L, L the response's content tokens.
//!
//! r_ref is the same aggregate's score (same members) of one π_ref response to the same
//! prompt. A shaped run's aggregator is labelled with its shaping after a `+` (`mean+par`,
//! `uwo(0.1)+par`, `member0+par`) in run ids, tables, claims and legends ([`Objective`]); an
//! unshaped one keeps its plain label, so nothing of an unshaped study changes.

use serde::{Deserialize, Serialize};

use super::aggregate::Aggregator;

/// Which shaping a run applies to its aggregated score (its parameters are `[ppo]`'s, see
/// [`Shaper`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shaping {
    None,
    Par,
    Center,
    Clip,
    Length,
}

impl Shaping {
    /// Every shaping, in the order labels sort by.
    pub const ALL: [Shaping; 5] = [Shaping::None, Shaping::Par, Shaping::Center, Shaping::Clip, Shaping::Length];

    /// Its name in `ppo.shaping` and after the `+` of a label.
    pub fn name(self) -> &'static str {
        match self {
            Shaping::None => "none",
            Shaping::Par => "par",
            Shaping::Center => "center",
            Shaping::Clip => "clip",
            Shaping::Length => "length",
        }
    }

    /// The shaping named `name` ([`Shaping::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether it reads r_ref (a π_ref response's score to the same prompt): `par`, `center`.
    pub fn reads_reference(self) -> bool {
        matches!(self, Shaping::Par | Shaping::Center)
    }

    /// `+par` after a shaped label; nothing for `none`.
    pub fn suffix(self) -> String {
        match self {
            Shaping::None => String::new(),
            s => format!("+{}", s.name()),
        }
    }
}

/// A shaping with its parameters (`ppo.shaping_clip`, `ppo.length_penalty`): what a run
/// applies to each response's aggregated score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shaper {
    pub shaping: Shaping,
    /// c of `clip`, standardized proxy units.
    pub clip: f64,
    /// α of `length`, standardized proxy units per content token.
    pub length_penalty: f64,
}

impl Shaper {
    /// The shaped score of a response whose aggregated score is `r` (standardized units),
    /// r_ref `r_ref` (read by `par` and `center` only) and `length` content tokens.
    pub fn apply(&self, r: f32, r_ref: f32, length: usize) -> f32 {
        let (r, r_ref) = (r as f64, r_ref as f64);
        (match self.shaping {
            Shaping::None => r,
            Shaping::Par => par(r, r_ref),
            Shaping::Center => center(r, r_ref),
            Shaping::Clip => clip(r, self.clip),
            Shaping::Length => length_penalized(r, self.length_penalty, length),
        }) as f32
    }
}

/// PAR: σ(r − r_ref), in (0, 1); r, r_ref in standardized units.
pub fn par(r: f64, r_ref: f64) -> f64 {
    1.0 / (1.0 + (r_ref - r).exp())
}

/// Centering: r − r_ref (standardized units).
pub fn center(r: f64, r_ref: f64) -> f64 {
    r - r_ref
}

/// Clipping: r clamped to [−c, c] (standardized units, c > 0).
pub fn clip(r: f64, c: f64) -> f64 {
    r.clamp(-c, c)
}

/// A length penalty: r − α·`length`, α in standardized units per content token.
pub fn length_penalized(r: f64, alpha: f64, length: usize) -> f64 {
    r - alpha * length as f64
}

pub use super::aggregate::split;

/// What a policy optimized: an aggregator of the ensemble's scores and the shaping of it. The
/// identity of a curve's aggregator in rows, lines, tables, claims and legends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    pub aggregator: Aggregator,
    pub shaping: Shaping,
}

impl From<Aggregator> for Objective {
    /// The aggregator unshaped (best-of-n's, and every run's without shaping).
    fn from(aggregator: Aggregator) -> Self {
        Objective { aggregator, shaping: Shaping::None }
    }
}

impl Objective {
    /// Its name in tables: the aggregator's with the shaping's suffix (`mean+par`; λ is a
    /// column of its own).
    pub fn name(&self) -> String {
        format!("{}{}", self.aggregator.name(), self.shaping.suffix())
    }

    /// Its label with λ where there is one: `uwo(0.1)+par` ([`super::aggregate::label`]).
    pub fn label(&self) -> String {
        super::aggregate::label(&self.name(), self.lambda())
    }

    /// The objective named `name` (as [`Objective::name`] writes it) with `lambda`.
    pub fn from_parts(name: &str, lambda: Option<f64>) -> Option<Self> {
        let (base, shaping) = split(name);
        let shaping = match shaping {
            Some(s) => Shaping::from_name(s).filter(|s| *s != Shaping::None)?,
            None => Shaping::None,
        };
        Some(Objective { aggregator: Aggregator::from_parts(base, lambda)?, shaping })
    }

    /// The aggregator's λ, where it has one.
    pub fn lambda(&self) -> Option<f64> {
        self.aggregator.lambda()
    }

    /// The member's index for an unshaped single member (the curves pooled as `single`);
    /// `None` otherwise, a shaped member included (its own line, `member0+par`).
    pub fn member(&self) -> Option<usize> {
        match self.shaping {
            Shaping::None => self.aggregator.member(),
            _ => None,
        }
    }

    /// The order of [`Aggregator::order`], each aggregator's shapings after it (`mean`,
    /// `mean+par`, `wco`, …).
    pub fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.aggregator.order(&other.aggregator).then(self.shaping.cmp(&other.shaping))
    }
}
