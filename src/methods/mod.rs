//! Methods: the optimizers studied against the proxies, one folder each with its cells.
//!
//! - [`bon`]: best-of-n from a pool, the unbiased estimator and its KL;
//! - [`ppo`]: PPO against an aggregated ensemble;
//! - [`group`]: GRPO and RLOO, critic-free group-relative RL on PPO's sweep;
//! - [`daa`]: DPO, IPO and χPO, direct alignment on an ensemble's own preference pairs;
//!
//! Each folder: `mod.rs` (the maths), `cell.rs` (its kind of cell: recipe, make, load; what
//! its code version hashes) and `method.rs` (its [`Method`]: the plan's cells, their assembly into
//! rows and tables, its traits for the statistics, its needs for the estimate).
//! - [`Method`]: what a method adds to a study: its cells of each replicate, and what its
//!   made cells become (curve points, its tables);
//! - [`eval`]: what every method shares: scoring samples by gold, every proxy member and the
//!   held-out proxy, and the per-sample measures.

pub mod bon;
pub mod daa;
pub mod eval;
pub mod group;
pub mod ppo;

use std::path::Path;

use polars::prelude::DataFrame;

use crate::cell::{CellKind, Loaded};
use crate::config::Experiment;
use crate::error::Result;
use crate::stats::curve::{CurveRow, Traits};
use crate::train::proxy::ProxyCell;

/// What a method adds to a study: its cells of each replicate, and what its made cells
/// become — curve points, its own tables, the fate of its runs. Every cell of a method
/// reads its world's π_ref and gold, the proxies it names, and the held-out proxy where
/// there is one. The plan and the assembly ask every method of the registry
/// (`crate::plan::kinds::METHODS`), in its order.
pub trait Method: Sync {
    /// Its name in the tables and the curve rows (`bon`, `ppo`).
    fn name(&self) -> &'static str;
    /// What the statistics and the report read of it: its label, Gao form, and whether its
    /// points' KL is measured or set by design.
    fn traits(&self) -> Traits;
    /// The cells of replicate `r`, whose proxy grid is `grid` (in grid order).
    fn cells(&self, exp: &Experiment, r: usize, grid: &[ProxyCell]) -> Vec<Planned>;
    /// How many cells [`Method::cells`] plans for one replicate, counted without planning
    /// them (the plan's size is checked before it is built), saturating.
    fn cells_per_replicate(&self, exp: &Experiment) -> u64;
    /// The keys that make its cells many or costly, for an error about a plan too large.
    fn size_keys(&self) -> &'static str;
    /// What its cells among `cells` (every cell of the plan, in plan order) become; `proxies`
    /// are the plan's proxy cells, `store` the store's folder (for errors).
    fn assemble(&self, exp: &Experiment, proxies: &[&ProxyCell], cells: &[Made], store: &Path) -> Result<Assembled>;
    /// Its per-unit table, which the conclusions are recomputed from, and how it reads back.
    fn unit_table(&self) -> UnitTable;
    /// What its cells hold, for the run's memory and disk estimate
    /// (`crate::plan::resources`), counted without planning them.
    fn needs(&self, exp: &Experiment) -> Needs;
    /// What `goodhart validate` says of it, one line each (empty when it is off).
    fn outline(&self, exp: &Experiment, grid: &[ProxyCell]) -> Vec<String>;
    /// The report's phrase for it under "what was studied", from its curve rows:
    /// `best-of-n (n up to 4096)`.
    fn in_brief(&self, rows: &[&CurveRow]) -> String;
    /// The report's sentence on what its points are and how its KL is had, from its curve
    /// rows: `**Best-of-n**: n = 1…4096 from a pool of …`.
    fn measured(&self, rows: &[&CurveRow]) -> String;
}

/// What a method's cells hold, in counts the estimate turns into bytes
/// (`crate::plan::resources`). Each part names what it is and the key that sets it, for the
/// estimate's "largest part" and its errors.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Policies it trains and stores per replicate (each of π_ref's size, one resident at a
    /// time while training).
    pub policies: u64,
    /// Sequences of its largest training batch through the policy (activations and logits).
    pub batch: Option<Part>,
    /// Sequences it holds while it trains, each with its response's per-token statistics
    /// (rollouts, evaluation samples).
    pub rollouts: Option<Part>,
    /// Samples one of its cells scores and holds at once, each with one score per scoring
    /// model (a best-of-n pool), and how many cells a replicate has.
    pub pools: Option<(Part, u64)>,
    /// The largest set it scores in one call (sets the scoring batch).
    pub scored: u64,
    /// Rows of its unit table over the whole study, and its values (rows × columns),
    /// saturating; with the keys that make them many.
    pub unit_rows: u64,
    pub unit_values: u64,
    pub unit_keys: &'static str,
}

/// A part of a method's needs: what it is, the key that sets it, and how many.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub what: &'static str,
    pub key: &'static str,
    pub count: u64,
}

/// The distinct β of `rows`, ascending, comma-separated (for the report's sentences).
pub fn betas(rows: &[&CurveRow]) -> String {
    let mut betas: Vec<f64> = rows.iter().filter_map(|r| r.kl_penalty).collect();
    betas.sort_by(f64::total_cmp);
    betas.dedup();
    betas.iter().map(f64::to_string).collect::<Vec<_>>().join(", ")
}

/// The report's sentence on the shaped runs among `rows` (each shaping's label suffix and
/// formula), nothing when no run is shaped.
pub fn shaped_sentence(rows: &[&CurveRow]) -> String {
    use crate::stats::shaping::Shaping;
    let mut used: Vec<Shaping> = rows.iter().map(|r| r.aggregator.shaping).filter(|s| *s != Shaping::None).collect();
    used.sort();
    used.dedup();
    let formula = |s: Shaping| match s {
        Shaping::Par => "σ(r − r_ref)",
        Shaping::Center => "r − r_ref",
        Shaping::Clip => "clamp(r, ±ppo.shaping_clip)",
        Shaping::Length => "r − ppo.length_penalty·tokens",
        Shaping::None => "r",
    };
    let each: Vec<String> = used.iter().map(|&s| format!("`{}` {}", s.suffix(), formula(s))).collect();
    if each.is_empty() {
        return String::new();
    }
    format!(" Shaped runs are rewarded {} of the aggregated score r (r_ref: a π_ref response's r).", each.join(", "))
}

/// The distinct values of `v`, ascending, comma-separated (for the report's sentences).
pub fn listed(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    v.dedup();
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// How a method's per-unit table reads back into curves of units: one row per unit (prompt)
/// of a point of a curve, with the columns `replicate`, `ensemble`, `aggregator`, `lambda`,
/// `prompt`, `gold`, `proxy`, `member_M`, `heldout`, and the ones below.
pub struct UnitTable {
    /// The method's traits, carried by every curve read back.
    pub traits: Traits,
    /// The table's stem in a results folder (`bon_units`).
    pub stem: &'static str,
    /// The column that orders a curve's points (`n`, `step`).
    pub point: &'static str,
    /// A point's name in claims (`n=4`, `step 5`).
    pub at: fn(u64) -> String,
    /// A point's KL (nats): read from a column, or computed from the point.
    pub kl: PointKl,
    /// Whether the table has a `kl_penalty` column (β of each row).
    pub kl_penalty: bool,
    /// Whether the table has a `disagreement` column; without one it is recomputed from
    /// the members.
    pub disagreement: bool,
}

/// Where a unit table's KL comes from.
pub enum PointKl {
    Column(&'static str),
    Of(fn(u64) -> f64),
}

/// A cell of the plan, made or reused, for [`Method::assemble`].
pub struct Made<'a> {
    pub cell: &'a dyn CellKind,
    pub loaded: &'a Loaded,
    /// Made by this run (not reused from the store).
    pub made: bool,
}

/// What a method's cells become.
#[derive(Debug, Default)]
pub struct Assembled {
    /// Its curve points, in the curve table's order.
    pub curves: Vec<CurveRow>,
    /// Its own tables, written beside the curve table; an empty one is left out.
    pub tables: Vec<Table>,
    /// For methods whose runs can fail and go on without them: each run with `trained`,
    /// `reused` or `failed`, and the failed ones' errors (`NAME_runs`, `NAME_failures` in
    /// the manifest).
    pub runs: Option<Runs>,
}

/// One of a method's own tables: its stem in a results folder, and how its frame is built —
/// when it is written, one table at a time, so that no two tables' frames are held at once.
pub struct Table {
    pub stem: &'static str,
    pub build: Box<dyn FnOnce() -> Result<DataFrame> + Send>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({})", self.stem)
    }
}

/// The runs of a method and the ones that failed.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    pub status: Vec<(String, &'static str)>,
    pub failures: Vec<(String, String)>,
}

impl Runs {
    /// Records run `id`: `trained` (made by this run) or `reused`, or `failed` with its error;
    /// returns its outcome when it finished.
    pub fn record<'a, T>(&mut self, id: String, outcome: &'a std::result::Result<T, String>, made: bool) -> Option<&'a T> {
        match outcome {
            Ok(o) => {
                self.status.push((id, if made { "trained" } else { "reused" }));
                Some(o)
            }
            Err(msg) => {
                self.status.push((id.clone(), "failed"));
                self.failures.push((id, msg.clone()));
                None
            }
        }
    }
}

/// One cell a method plans.
pub struct Planned {
    /// Its id in the plan (unique; `…/rR` for replicate R > 0).
    pub id: String,
    pub cell: Box<dyn CellKind>,
    /// The proxies it reads: indices into the replicate's grid.
    pub members: Vec<usize>,
    /// Whether it reads the replicate's preference pairs (direct alignment learns from them).
    pub pairs: bool,
}
