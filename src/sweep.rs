//! Expands the experiment grid into cells. For now: the proxy reward-model grid
//! (sizes × data sizes × label-noise levels × ensemble members).

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
}

impl ProxyCell {
    /// Stable display id, e.g. `proxy/m/d4000/n0.25/k1`.
    pub fn id(&self) -> String {
        format!("proxy/{}/d{}/n{:.2}/k{}", self.size.name, self.data_size, self.noise, self.member)
    }

    /// The ensemble this member belongs to (the id without the member).
    pub fn ensemble_id(&self) -> String {
        format!("{}/d{}/n{:.2}", self.size.name, self.data_size, self.noise)
    }
}

/// Every proxy cell of the experiment, in a fixed order (size, data, noise, member).
pub fn proxy_cells(exp: &Experiment) -> Vec<ProxyCell> {
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
                    });
                }
            }
        }
    }
    cells
}
