//! Cells: a run is a plan of cells, each made once into the store and reused everywhere.
//!
//! A cell is one unit of work whose result is stored: the reference policy π_ref (SFT),
//! the gold RM, the preference pairs, each proxy ensemble member, the held-out proxy, the
//! best-of-n pools with their scores and curves, each PPO run. Tables, figures and the report
//! are not cells: they are assembled from cells ([`crate::output::assemble`]).
//!
//! - [`plan`]: the DAG of an experiment's cells, their levels, cost estimates and shards;
//! - [`store`]: the folder of made cells, safe for many processes and hosts at once;
//! - [`kind`]: what every kind of cell provides ([`CellKind`]); each kind implements it in its
//!   own file of [`make`] (recipe, code version, cost, make from its inputs, load);
//! - [`exec`]: makes (or loads) a set of cells in dependency order, on this process's cores;
//! - [`slurm`]: sbatch scripts that make a plan's levels as job arrays on a cluster.
//!
//! # What goes into a cell's key
//!
//! A cell's key is the SHA-256 (first 20 hex digits) of its recipe and the store
//! [`store::FORMAT`]. The recipe holds exactly what decides the cell's bytes:
//! - the slice of the experiment the make reads (shapes, sizes, rates, the seed) — not the
//!   whole file, so unrelated edits (another best-of-n pool size) reuse a model;
//! - the keys of the cells it depends on (so a new gold retrains every proxy);
//! - the code version of its kind: a hash of the source files its make runs, comment and
//!   blank lines left out, computed at build time by `build.rs` ([`code_version`]). Editing
//!   the training code changes the key, so a model made by older code is never reused;
//!   editing a comment does not.
//!
//! Not in the key: the device, `--jobs`, the store or results paths (results do not depend
//! on them), and the run's name.

pub mod cost;
pub mod exec;
pub mod kind;
pub mod make;
pub mod plan;
pub mod slurm;
pub mod store;

use serde_json::Value;

pub use kind::CellKind;
pub use make::bon::BonCell;
pub use make::gold::GoldCell;
pub use make::pairs::PairsCell;
pub use make::policy::PolicyCell;
use crate::sweep::{PpoCell, ProxyCell};

/// The kinds of cell, each implemented in its own file behind [`CellKind`]: the one list
/// of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// π_ref of a world: SFT on demonstrations (and the duplicate fraction of its samples).
    Policy(PolicyCell),
    /// The gold RM of a world, distilled from the labeler utility and standardized on π_ref
    /// samples.
    Gold(GoldCell),
    /// The preference pairs of a replicate, labelled by gold: training, validation and the
    /// held-out proxy's own.
    Pairs(PairsCell),
    /// One proxy RM (an ensemble member, or the held-out proxy).
    Proxy(ProxyCell),
    /// Best-of-n for a range of held-out prompts of one replicate: their pools, scored once
    /// by gold and every proxy, and every ensemble × aggregator's best-of-n per prompt.
    Bon(BonCell),
    /// One PPO run (ensemble, aggregator, β).
    Ppo(PpoCell),
}

impl Kind {
    /// What this kind of cell does (see [`CellKind`]).
    pub fn spec(&self) -> &dyn CellKind {
        match self {
            Kind::Policy(c) => c,
            Kind::Gold(c) => c,
            Kind::Pairs(c) => c,
            Kind::Proxy(c) => c,
            Kind::Bon(c) => c,
            Kind::Ppo(c) => c,
        }
    }

    /// The folder prefix in the store and the name in plans.
    pub fn name(&self) -> &'static str {
        self.spec().name()
    }

    /// The stage this kind belongs to, for timings and progress.
    pub fn stage(&self) -> &'static str {
        self.spec().stage()
    }

    /// The replicate this cell belongs to (a world's cells: the replicate that draws it).
    pub fn replicate(&self) -> usize {
        self.spec().replicate()
    }

    /// The world this cell runs in (see [`crate::config::Experiment::world_index`]).
    pub fn world(&self, exp: &crate::config::Experiment) -> usize {
        self.spec().world(exp)
    }
}

/// The code version of a kind of cell (see the module doc).
pub fn code_version(kind: &Kind) -> &'static str {
    kind.spec().code_version()
}

/// One cell of a plan.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Readable and unique within a plan: `policy`, `gold`, `pairs`,
    /// `proxy/xs/d2000/n0.00/k1`, `heldout/m/d8000/n0.00`, `bon`, `ppo/xs/d2000/n0.00/mean/b0`;
    /// cells of replicate R > 0 end in `/rR` (`bon/r1`, and `policy/r1` when worlds are
    /// redrawn).
    pub id: String,
    pub kind: Kind,
    /// What decides the cell's bytes (see the module doc); `key` is its hash.
    pub recipe: Value,
    pub key: String,
    /// Indices (into the plan's cells) of the cells this one reads.
    pub deps: Vec<usize>,
    /// 0 for cells without dependencies, else 1 + the deepest dependency's level.
    pub level: usize,
    /// The work it does ([`plan::work`]) and its modelled cost in CPU-seconds on one core.
    pub work: plan::Work,
    pub cost_cpu_s: f64,
}

impl Cell {
    /// The store reference of this cell.
    pub fn store_ref(&self) -> store::CellRef<'_> {
        store::CellRef {
            kind: self.kind.name(),
            key: &self.key,
            id: &self.id,
            recipe: &self.recipe,
        }
    }
}
