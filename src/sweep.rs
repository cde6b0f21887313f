//! Expands the experiment grid into cells: the proxy reward-model grid (sizes × data sizes
//! × label-noise levels × ensemble members), the ensembles it forms, and the PPO runs
//! (ensembles × aggregators × KL penalties).

use crate::config::{Experiment, ProxySizeSpec};

/// One proxy reward model to train.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyCell {
    pub size: ProxySizeSpec,
    /// Training pairs (the first `data_size` of the shared pair set).
    pub data_size: usize,
    /// Label-flip rate.
    pub noise: f64,
    /// Ensemble member index (0-based).
    pub member: usize,
    /// The held-out proxy (trained on its own pairs, never optimized against): each
    /// replicate's own (`proxy.heldout_per_replicate`), else one per world (replicate 0's,
    /// and each replicate's own when `world.per_replicate`).
    pub heldout: bool,
    /// The replicate this member belongs to.
    pub replicate: usize,
}

/// `/rR` for replicate R > 0, nothing for replicate 0 (whose ids do not depend on how many
/// replicates a study has).
pub fn replicate_suffix(r: usize) -> String {
    if r == 0 {
        String::new()
    } else {
        format!("/r{r}")
    }
}

impl ProxyCell {
    /// Stable display id, e.g. `proxy/m/d4000/n0.25/k1` (replicate 0) or
    /// `proxy/m/d4000/n0.25/k1/r2`.
    pub fn id(&self) -> String {
        if self.heldout {
            return format!(
                "heldout/{}/d{}/n{:.2}{}",
                self.size.name,
                self.data_size,
                self.noise,
                replicate_suffix(self.replicate)
            );
        }
        format!(
            "proxy/{}/d{}/n{:.2}/k{}{}",
            self.size.name,
            self.data_size,
            self.noise,
            self.member,
            replicate_suffix(self.replicate)
        )
    }

    /// The ensemble this member belongs to (the id without the member).
    pub fn ensemble_id(&self) -> String {
        format!("{}/d{}/n{:.2}", self.size.name, self.data_size, self.noise)
    }
}

/// Every proxy cell of replicate `r`, in a fixed order (size, data, noise, member).
pub fn proxy_cells(exp: &Experiment, replicate: usize) -> Vec<ProxyCell> {
    let mut cells = Vec::new();
    for size in &exp.proxy.sizes {
        for &data_size in &exp.proxy.data_sizes {
            for &noise in &exp.proxy.noise {
                for member in 0..exp.proxy.members {
                    cells.push(ProxyCell {
                        size: size.clone(),
                        data_size,
                        noise,
                        member,
                        heldout: false,
                        replicate,
                    });
                }
            }
        }
    }
    cells
}

/// The held-out proxy of replicate `r` (per replicate) or of world `r` (per world), if the
/// study has one: the largest size (by parameters), the largest data size, the lowest noise
/// level; with `proxy.heldout_like`, the first ensemble's size and data size at the lowest
/// noise level.
pub fn heldout_cell(exp: &Experiment, r: usize) -> Option<ProxyCell> {
    if !exp.proxy.heldout {
        return None;
    }
    let noise = exp.proxy.noise.iter().copied().fold(f64::INFINITY, f64::min);
    if exp.proxy.heldout_like {
        let (size, data_size, noise) = exp.first_ensemble();
        return Some(ProxyCell {
            size: size.clone(),
            data_size,
            noise,
            member: 0,
            heldout: true,
            replicate: r,
        });
    }
    let size = exp
        .proxy
        .sizes
        .iter()
        .max_by_key(|s| exp.proxy_arch(s).reward_params())
        .expect("validated non-empty")
        .clone();
    Some(ProxyCell {
        size,
        data_size: *exp.proxy.data_sizes.iter().max().expect("validated non-empty"),
        noise,
        member: 0,
        heldout: true,
        replicate: r,
    })
}

/// Ensembles of a proxy list: (ensemble id, indices of its members in `cells`), in order
/// of first appearance.
pub fn ensembles(cells: &[ProxyCell]) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, cell) in cells.iter().enumerate() {
        match out.iter_mut().find(|(id, _)| *id == cell.ensemble_id()) {
            Some((_, members)) => members.push(i),
            None => out.push((cell.ensemble_id(), vec![i])),
        }
    }
    out
}

/// One PPO run of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct PpoCell {
    pub ensemble: String,
    /// Indices of the ensemble's members in the proxy list.
    pub members: Vec<usize>,
    pub aggregator: crate::aggregate::Aggregator,
    /// KL-penalty coefficient β.
    pub beta: f64,
    pub replicate: usize,
}

impl PpoCell {
    /// Stable run id: `ppo/ENSEMBLE/AGGREGATOR[(λ)]/bBETA[/rR]`.
    pub fn id(&self) -> String {
        let lambda = self.aggregator.lambda().map(|l| format!("({l})")).unwrap_or_default();
        format!(
            "ppo/{}/{}{lambda}/b{}{}",
            self.ensemble,
            self.aggregator.name(),
            self.beta,
            replicate_suffix(self.replicate)
        )
    }
}

/// Every PPO run of one replicate's proxy list `cells` (from [`proxy_cells`]): the
/// ensembles `ppo.sizes` × `ppo.data_sizes` × `ppo.noise` select (in grid order), × the PPO
/// aggregators × `ppo.kl_penalties`.
pub fn ppo_cells(exp: &Experiment, cells: &[ProxyCell]) -> Vec<PpoCell> {
    let p = &exp.ppo;
    if !p.enabled {
        return Vec::new();
    }
    let first_size = &exp.proxy.sizes[0].name;
    let first_data = exp.proxy.data_sizes[0];
    let mut out = Vec::new();
    for (ensemble, members) in ensembles(cells) {
        let c = &cells[members[0]];
        let size_ok = if p.sizes.is_empty() { &c.size.name == first_size } else { p.sizes.contains(&c.size.name) };
        let data_ok = if p.data_sizes.is_empty() { c.data_size == first_data } else { p.data_sizes.contains(&c.data_size) };
        let noise_ok = p.noise.is_empty() || p.noise.contains(&c.noise);
        if !(size_ok && data_ok && noise_ok) {
            continue;
        }
        for aggregator in p.aggregator_list(members.len()) {
            for &beta in &p.kl_penalties {
                out.push(PpoCell {
                    ensemble: ensemble.clone(),
                    members: members.clone(),
                    aggregator,
                    beta,
                    replicate: c.replicate,
                });
            }
        }
    }
    out
}
