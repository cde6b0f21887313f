//! Methods: the optimizers studied against the proxies, one folder each with its cells.
//!
//! - [`bon`]: best-of-n from a pool, the unbiased estimator and its KL;
//! - [`ppo`]: PPO against an aggregated ensemble;
//! - [`eval`]: what every method shares: scoring samples by gold, every proxy member and the
//!   held-out proxy, and the per-sample measures.

pub mod bon;
pub mod eval;
pub mod ppo;
