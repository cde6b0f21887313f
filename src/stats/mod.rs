//! Statistics: the layer that turns measurements into estimates with intervals. Below the
//! methods (which aggregate an ensemble's scores and write curve points) and above nothing
//! of the study's own: pure functions and records.
//!
//! - [`aggregate`]: the ensemble aggregators (mean, worst case, uncertainty-weighted, …);
//! - [`shaping`]: reward shaping of the aggregated score (PAR, centering, clipping, a
//!   length penalty) and the label of a shaped aggregator;
//! - [`curve`]: the curve point, the one record of a point of an optimization curve;
//! - [`fit`]: Gao's functional forms fitted against √KL;
//! - [`stopping`]: gold-free stopping rules and their regret;
//! - [`analysis`]: curves across replicates: peaks, falls, fits, stopping;
//! - [`claims`]: which claims a study makes (`[conclusions]`);
//! - [`conclusions`]: the claims measured: intervals, corrections and verdicts;
//! - [`inference`]: Student's t, p-values, Holm and Benjamini–Hochberg, power, mean ± s.e.
//!   (re-exported here: `stats::t_critical`, `stats::mean_se`, …).

pub mod aggregate;
pub mod analysis;
pub mod claims;
pub mod conclusions;
pub mod curve;
pub mod fit;
pub mod inference;
pub mod shaping;
pub mod stopping;

pub use inference::*;
