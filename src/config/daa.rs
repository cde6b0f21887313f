//! Direct alignment's part of an experiment (`[daa]`): which losses, at which β, on which
//! ensembles' pairs, for how long; its defaults and validation.

use serde::{Deserialize, Serialize};

use super::data::ProxySpec;
use super::fields::{count, distinct, limits, list, non_negative, rate, shown, steps, Bad};
use crate::error::Result;

/// The losses `daa.losses` may name.
pub const LOSSES: [&str; 3] = ["dpo", "ipo", "chipo"];

/// DPO, IPO and χPO from π_ref on the pairs of proxy ensembles: one run per (ensemble, loss,
/// β).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaaSpec {
    pub enabled: bool,
    /// Any of "dpo", "ipo", "chipo".
    pub losses: Vec<String>,
    /// β of each run (DPO and χPO: the implicit reward's scale; IPO: the margin's target is
    /// 1/(2β)).
    pub betas: Vec<f64>,
    /// Proxy sizes whose ensembles' pairs it learns from; empty: the first size (the pairs
    /// do not depend on the size, only on data size, noise and replicate).
    pub sizes: Vec<String>,
    /// Training-pair counts; empty: every data size.
    pub data_sizes: Vec<usize>,
    /// Label-noise levels; empty: every level.
    pub noise: Vec<f64>,
    /// Passes over the pairs.
    pub epochs: usize,
    /// Pairs per optimizer step.
    pub batch: usize,
    /// Learning rate of plain Adam, constant over the run.
    pub lr: f64,
    pub max_grad_norm: f64,
    /// Checkpoints per epoch (besides the one before training), evenly spaced in steps.
    pub evals_per_epoch: usize,
    /// χPO's clip of β·(φ(y_w) − φ(y_l)) (their 2R).
    pub chipo_clip: f64,
}

impl Default for DaaSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            losses: LOSSES.iter().map(|s| s.to_string()).collect(),
            betas: vec![0.05, 0.1, 0.5],
            sizes: vec![],
            data_sizes: vec![],
            noise: vec![],
            epochs: 2,
            batch: 32,
            lr: 3e-4,
            max_grad_norm: 1.0,
            evals_per_epoch: 4,
            chipo_clip: 10.0,
        }
    }
}

impl DaaSpec {
    /// Ensembles of one replicate the section selects.
    pub fn ensembles(&self, x: &ProxySpec) -> u64 {
        let sizes = if self.sizes.is_empty() { 1 } else { self.sizes.len() };
        let data = if self.data_sizes.is_empty() { x.data_sizes.len() } else { self.data_sizes.len() };
        let noise = if self.noise.is_empty() { x.noise.len() } else { self.noise.len() };
        (sizes as u64).saturating_mul(data as u64).saturating_mul(noise as u64)
    }

    /// Checks the section against the proxies it names; an error names its key (`daa.betas[1]`).
    pub fn validate(&self, bad: Bad, x: &ProxySpec) -> Result<()> {
        list(bad, "daa.losses", self.losses.len(), 1)?;
        for (i, l) in self.losses.iter().enumerate() {
            if !LOSSES.contains(&l.as_str()) {
                return Err(bad(&format!("daa.losses[{i}]"), format!("unknown loss {:?}; one of {LOSSES:?}", shown(l))));
            }
        }
        distinct(bad, "daa.losses", &self.losses)?;
        list(bad, "daa.betas", self.betas.len(), 1)?;
        for (i, &b) in self.betas.iter().enumerate() {
            non_negative(bad, &format!("daa.betas[{i}]"), b, "a finite β > 0")?;
            if b == 0.0 {
                return Err(bad(&format!("daa.betas[{i}]"), "must be a finite β > 0, got 0".into()));
            }
        }
        distinct(bad, "daa.betas", &self.betas)?;
        list(bad, "daa.sizes", self.sizes.len(), 0)?;
        for (i, name) in self.sizes.iter().enumerate() {
            if !x.sizes.iter().any(|s| &s.name == name) {
                return Err(bad(&format!("daa.sizes[{i}]"), format!("no proxy size named {:?} in proxy.sizes", shown(name))));
            }
        }
        distinct(bad, "daa.sizes", &self.sizes)?;
        list(bad, "daa.data_sizes", self.data_sizes.len(), 0)?;
        for (i, d) in self.data_sizes.iter().enumerate() {
            if !x.data_sizes.contains(d) {
                return Err(bad(&format!("daa.data_sizes[{i}]"), format!("{d} is not in proxy.data_sizes")));
            }
        }
        distinct(bad, "daa.data_sizes", &self.data_sizes)?;
        list(bad, "daa.noise", self.noise.len(), 0)?;
        for (i, n) in self.noise.iter().enumerate() {
            if !x.noise.contains(n) {
                return Err(bad(&format!("daa.noise[{i}]"), format!("{n} is not in proxy.noise")));
            }
        }
        distinct(bad, "daa.noise", &self.noise)?;
        steps(bad, "daa.epochs", self.epochs)?;
        count(bad, "daa.batch", self.batch, 1, limits::COUNT)?;
        rate(bad, "daa.lr", self.lr)?;
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return Err(bad("daa.max_grad_norm", format!("must be > 0, got {}", self.max_grad_norm)));
        }
        count(bad, "daa.evals_per_epoch", self.evals_per_epoch, 1, 1000)?;
        if !(self.chipo_clip.is_finite() && self.chipo_clip > 0.0) {
            return Err(bad("daa.chipo_clip", format!("must be a finite clip > 0, got {}", self.chipo_clip)));
        }
        if self.enabled && self.ensembles(x).saturating_mul(self.betas.len() as u64).saturating_mul(self.losses.len() as u64) > limits::MODELS as u64 {
            return Err(bad("daa.betas", format!("the direct-alignment sweep (ensembles × losses × β) must be at most {} runs", limits::MODELS)));
        }
        Ok(())
    }
}
