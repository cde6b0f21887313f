//! Methods: the optimizers studied against the proxies, one folder each with its cells.
//!
//! - [`bon`]: best-of-n from a pool, the unbiased estimator and its KL;
//! - [`ppo`]: PPO against an aggregated ensemble;
//!
//! Each folder: `mod.rs` (the maths), `cell.rs` (its kind of cell: recipe, make, load; what
//! its code version hashes) and `method.rs` (its [`Method`]: the plan's cells and their
//! assembly into rows and tables).
//! - [`Method`]: what a method adds to a study: its cells of each replicate, and what its
//!   made cells become (curve points, its tables);
//! - [`eval`]: what every method shares: scoring samples by gold, every proxy member and the
//!   held-out proxy, and the per-sample measures.

pub mod bon;
pub mod eval;
pub mod ppo;

use std::path::Path;

use polars::prelude::DataFrame;

use crate::cell::{CellKind, Loaded};
use crate::config::Experiment;
use crate::error::Result;
use crate::stats::curve::CurveRow;
use crate::train::proxy::ProxyCell;

/// What a method adds to a study: its cells of each replicate, and what its made cells
/// become — curve points, its own tables, the fate of its runs. Every cell of a method
/// reads its world's π_ref and gold, the proxies it names, and the held-out proxy where
/// there is one. The plan and the assembly ask every method of the registry
/// (`crate::plan::kinds::METHODS`), in its order.
pub trait Method: Sync {
    /// Its name in the tables and the curve rows (`bon`, `ppo`).
    fn name(&self) -> &'static str;
    /// The cells of replicate `r`, whose proxy grid is `grid` (in grid order).
    fn cells(&self, exp: &Experiment, r: usize, grid: &[ProxyCell]) -> Vec<Planned>;
    /// What its cells among `cells` (every cell of the plan, in plan order) become; `proxies`
    /// are the plan's proxy cells, `store` the store's folder (for errors).
    fn assemble(&self, exp: &Experiment, proxies: &[&ProxyCell], cells: &[Made], store: &Path) -> Result<Assembled>;
}

/// A cell of the plan, made or reused, for [`Method::assemble`].
pub struct Made<'a> {
    pub cell: &'a dyn CellKind,
    pub loaded: &'a Loaded,
    /// Made by this run (not reused from the store).
    pub made: bool,
}

/// What a method's cells become.
#[derive(Debug, Clone, Default)]
pub struct Assembled {
    /// Its curve points, in the curve table's order.
    pub curves: Vec<CurveRow>,
    /// Its own tables (stem, frame), written beside the curve table; an empty one is left out.
    pub tables: Vec<(&'static str, DataFrame)>,
    /// For methods whose runs can fail and go on without them: each run with `trained`,
    /// `reused` or `failed`, and the failed ones' errors (`NAME_runs`, `NAME_failures` in
    /// the manifest).
    pub runs: Option<Runs>,
}

/// The runs of a method and the ones that failed.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    pub status: Vec<(String, &'static str)>,
    pub failures: Vec<(String, String)>,
}

/// One cell a method plans.
pub struct Planned {
    /// Its id in the plan (unique; `…/rR` for replicate R > 0).
    pub id: String,
    pub cell: Box<dyn CellKind>,
    /// The proxies it reads: indices into the replicate's grid.
    pub members: Vec<usize>,
}
