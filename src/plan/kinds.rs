//! The registry of kinds: the one list of the kinds of cell a plan can hold, and the cell
//! record a plan keeps for each.

use serde_json::Value;

use crate::cell::cost::Work;
use crate::cell::store;
use crate::cell::CellKind;
use crate::methods::bon::cell::BonCell;
use crate::methods::ppo::cell::PpoCell;
use crate::train::gold::GoldCell;
use crate::train::pairs::PairsCell;
use crate::train::policy::PolicyCell;
use crate::train::proxy::ProxyCell;

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
    /// The work it does ([`super::work`]) and its modelled cost in CPU-seconds on one core.
    pub work: Work,
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
