//! The curve point: the one record of a point of an optimization curve that the methods'
//! results become, the statistics read and the curve table writes.

use serde::{Deserialize, Serialize};

use super::shaping::Objective;
use super::fit::Form;

/// What the statistics need to know of a method, declared by the method
/// (`crate::methods::Method::traits`) and carried with its curves, so that no statistic
/// names a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits {
    /// How claims and the report name the method: `best-of-n`, `PPO`.
    pub label: &'static str,
    /// Gao's functional form of its gold curve against d = √KL.
    pub form: Form,
    /// Whether a point's KL is measured (a trained policy's checkpoint: each run reaches its
    /// own KL, so two runs are also compared at a KL both reach) rather than set by the
    /// design (best-of-n: the bound of its n, the same for every aggregator).
    pub kl_measured: bool,
}

/// What is measured of the samples a policy gives at one point of an optimization curve
/// besides gold, averaged over the evaluation prompts — best-of-n's expected selection, PPO's
/// fresh samples at a checkpoint: the one record the methods fill and every curve row carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    /// The aggregated proxy score (what is optimized; standardized units).
    pub proxy: f64,
    /// Each member's score (standardized units).
    pub members: Vec<f64>,
    /// Mean population variance of the member scores of a sample.
    pub disagreement: f64,
    /// Response length (content tokens) and distinct-token ratio: what the optimizer exploits.
    pub length: f64,
    pub distinct_ratio: f64,
    /// The held-out proxy's score (standardized units), where the experiment has one: trained
    /// on independently sampled pairs and never optimized against, so a gold-free signal.
    pub heldout: Option<f64>,
}

/// One point of an optimization curve, best-of-n or PPO: a row of `results/NAME/curves.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveRow {
    /// `bon` (or `ppo`).
    pub method: String,
    /// The aggregator and its shaping (written as its name, `member0`, `mean`, `wco`, `uwo`,
    /// `median`, `mean_std`, a shaped one's with its suffix, `mean+par`, and its λ where it
    /// has one).
    pub aggregator: Objective,
    pub proxy_size: String,
    pub proxy_params: u64,
    /// Training pairs of the ensemble's proxies.
    pub data_size: u64,
    pub label_noise: f64,
    /// `SIZE/dDATA/nNOISE`.
    pub ensemble: String,
    /// Best-of-n: n.
    pub n: Option<u64>,
    /// PPO: updates done at this checkpoint, and the run's KL-penalty coefficient β.
    pub step: Option<u64>,
    pub kl_penalty: Option<f64>,
    /// The KL (nats) the curve is drawn against, and what it is (`bon_bound`: ln n − (n−1)/n,
    /// an upper bound on the true KL; `ppo_k1`: KL(π‖π_ref) of the sequence, the mean of the
    /// summed per-token k1 over fresh samples, which can dip below 0 by sampling noise).
    pub kl: f64,
    pub kl_kind: String,
    /// PPO: the same KL by the k3 estimator (never negative).
    pub kl_k3: Option<f64>,
    /// Best-of-n: the analytic bound and the exact KL of the pool's discrete best-of-n
    /// distribution (equal to the bound when the pool has no repeated response).
    pub kl_bound: Option<f64>,
    pub kl_exact: Option<f64>,
    /// sqrt(max(kl, 0)), nats^½.
    pub sqrt_kl: f64,
    /// Gold (standardized: π_ref mean 0, π_ref std 1): mean over prompts and its standard error.
    pub gold: f64,
    pub gold_se: f64,
    /// What is measured of the selected samples besides gold.
    pub measures: Measures,
    /// Gold at the curve's peak minus gold here (standardized units), and its standard error
    /// paired over prompts. A fall is significant when this exceeds a few of its s.e.
    pub gold_below_peak: f64,
    pub gold_below_peak_se: f64,
    pub prompts: u64,
    /// Best-of-n: samples per prompt.
    pub pool: Option<u64>,
    /// The replicate (0 in a study of one).
    pub replicate: u64,
}

/// What a curve is of: the method, the ensemble optimized against (and its proxies' size,
/// data and noise), the aggregator and β — the same for every point of a curve and for the
/// curve of every replicate. The identity of a line across replicates and of a replicate's
/// curve alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub method: String,
    /// `SIZE/dDATA/nNOISE`.
    pub ensemble: String,
    /// The aggregator and its shaping.
    pub aggregator: Objective,
    /// PPO's KL-penalty coefficient β (none for best-of-n).
    pub kl_penalty: Option<f64>,
    pub proxy_size: String,
    pub proxy_params: u64,
    /// Training pairs of the ensemble's proxies.
    pub data_size: u64,
    pub label_noise: f64,
}

impl CurveRow {
    /// The line this point is on.
    pub fn line(&self) -> Line {
        Line {
            method: self.method.clone(),
            ensemble: self.ensemble.clone(),
            aggregator: self.aggregator,
            kl_penalty: self.kl_penalty,
            proxy_size: self.proxy_size.clone(),
            proxy_params: self.proxy_params,
            data_size: self.data_size,
            label_noise: self.label_noise,
        }
    }

    /// Identifies the curve this point belongs to: method, ensemble, aggregator with λ, β.
    pub fn curve_key(&self) -> String {
        format!("{}{}", self.line_key(), replicate_suffix(self.replicate as usize))
    }

    /// The line this row belongs to across replicates: [`CurveRow::curve_key`] without the
    /// replicate, `METHOD/ENSEMBLE/AGGREGATOR[(λ)][/bβ]` (the ensemble id holds the noise).
    pub fn line_key(&self) -> String {
        let beta = self.kl_penalty.map(|b| format!("/b{b}")).unwrap_or_default();
        format!("{}/{}/{}{beta}", self.method, self.ensemble, self.aggregator.label())
    }
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
