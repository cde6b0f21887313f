//! The checks every section of an experiment uses on its values ([`limits`], counts, lists,
//! rates): each error names its key. A method's section validates itself with them
//! (`crate::methods::*::spec`).

use crate::error::{Error, Result};

/// Upper bounds [`Experiment::validate`] enforces. They are far above any study the
/// embedded world is meant for; they exist so that a typo (an extra digit, 2^40) is an
/// error naming the key instead of an allocation failure hours into a run.
pub mod limits {
    /// Characters of the experiment name and of a proxy size name.
    pub const NAME_LEN: usize = 64;
    /// `world.content_tokens` (the labeler's affinity matrix is quadratic in it).
    pub const CONTENT_TOKENS: usize = 4096;
    /// `world.prompt_len`.
    pub const PROMPT_LEN: usize = 256;
    /// `world.max_response`.
    pub const MAX_RESPONSE: usize = 512;
    /// Layers of any transformer.
    pub const LAYERS: usize = 64;
    /// Width of any transformer.
    pub const WIDTH: usize = 4096;
    /// Attention heads of any transformer.
    pub const HEADS: usize = 64;
    /// Any count of samples, pairs, prompts, demonstrations or a batch size.
    pub const COUNT: usize = 100_000_000;
    /// Training steps, PPO updates and epochs, and the optimizer steps of one model.
    pub const STEPS: usize = 10_000_000;
    /// `proxy.members`.
    pub const MEMBERS: usize = 256;
    /// Entries of any list.
    pub const LIST: usize = 64;
    /// Proxy models of the grid, and PPO runs of the sweep.
    pub const MODELS: usize = 10_000;
    /// Size of a labeler-bias weight (`preferences.bias.*`), standardized gold units per
    /// unit of its feature: gold is soft-clipped at ±3, so a weight beyond this is a typo.
    pub const LABELER_BIAS: f64 = 1000.0;
}

/// Builds the one-line error of a key.
pub type Bad<'a> = &'a dyn Fn(&str, String) -> Error;

pub fn count(bad: Bad, key: &str, v: usize, min: usize, max: usize) -> Result<()> {
    if v < min {
        return Err(bad(key, format!("must be at least {min}, got {v}")));
    }
    if v > max {
        return Err(bad(key, format!("must be at most {max} (goodhart's limit), got {v}")));
    }
    Ok(())
}

pub fn steps(bad: Bad, key: &str, v: usize) -> Result<()> {
    count(bad, key, v, 1, limits::STEPS)
}

pub fn list(bad: Bad, key: &str, len: usize, min: usize) -> Result<()> {
    if len < min {
        return Err(bad(key, format!("needs at least {min} entr{}, got {len}", if min == 1 { "y" } else { "ies" })));
    }
    if len > limits::LIST {
        return Err(bad(key, format!("must have at most {} entries, got {len}", limits::LIST)));
    }
    Ok(())
}

/// Every entry of `items` differs from the ones before it.
pub fn distinct<T: PartialEq + std::fmt::Debug>(bad: Bad, key: &str, items: &[T]) -> Result<()> {
    for (i, v) in items.iter().enumerate() {
        if let Some(j) = items[..i].iter().position(|u| u == v) {
            return Err(bad(&format!("{key}[{i}]"), format!("{v:?} repeats {key}[{j}]; entries must be distinct")));
        }
    }
    Ok(())
}

/// A value in [0, max] (negative zero excluded: it would print as `-0`).
pub fn probability(bad: Bad, key: &str, v: f64, max: f64) -> Result<()> {
    if !(v.is_finite() && (0.0..=max).contains(&v) && v.is_sign_positive()) {
        return Err(bad(key, format!("must be in [0, {max}], got {v}")));
    }
    Ok(())
}

/// A finite value ≥ 0 (negative zero excluded: it would print as `-0` in run ids).
pub fn non_negative(bad: Bad, key: &str, v: f64, what: &str) -> Result<()> {
    if !(v.is_finite() && v >= 0.0 && v.is_sign_positive()) {
        return Err(bad(key, format!("must be {what}, got {v}")));
    }
    Ok(())
}

/// A finite value of at most `max` in size, either sign.
pub fn signed(bad: Bad, key: &str, v: f64, max: f64, what: &str) -> Result<()> {
    if !(v.is_finite() && v.abs() <= max) {
        return Err(bad(key, format!("must be {what}, finite and in [-{max}, {max}], got {v}")));
    }
    Ok(())
}

pub fn rate(bad: Bad, key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return Err(bad(key, format!("learning rate must be in (0, 1), got {v}")));
    }
    Ok(())
}

/// `s`, cut to its first 40 characters for an error message.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
