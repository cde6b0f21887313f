//! The registry: the one list of the methods a plan can hold, the handle of a cell of any
//! kind, and the cell record a plan keeps for each.

use std::sync::Arc;

use serde_json::Value;

use crate::cell::cost::Work;
use crate::cell::store;
use crate::cell::CellKind;
use crate::methods::Method;

/// The methods a plan can hold, in the order their cells are planned: the one list of them.
/// A method is a folder of `methods/` (its maths, its cells, its [`Method`]); adding one is
/// one line here.
pub const METHODS: &[&dyn Method] = &[
    &crate::methods::bon::method::BestOfN,
    &crate::methods::ppo::method::Ppo,
    &crate::methods::group::method::GroupRl(crate::methods::group::Estimator::Grpo),
    &crate::methods::group::method::GroupRl(crate::methods::group::Estimator::Rloo),
    &crate::methods::daa::method::DirectAlignment(crate::methods::daa::Loss::Dpo),
    &crate::methods::daa::method::DirectAlignment(crate::methods::daa::Loss::Ipo),
    &crate::methods::daa::method::DirectAlignment(crate::methods::daa::Loss::Chipo),
];

/// The method of the registry named `name` (`bon`, `ppo`), if there is one.
pub fn method(name: &str) -> Option<&'static dyn Method> {
    METHODS.iter().copied().find(|m| m.name() == name)
}

/// The traits of the method named `name` ([`Method::traits`]); a name outside the registry
/// (the tables of a method since removed) reads as a policy method with measured KL, under
/// its own name.
pub fn traits(name: &str) -> crate::stats::curve::Traits {
    method(name).map(|m| m.traits()).unwrap_or(crate::stats::curve::Traits {
        label: "unregistered method",
        form: crate::stats::fit::Form::Rl,
        kl_measured: true,
    })
}

/// How claims and the report name the method `name`: its label, or the name itself.
pub fn label(name: &str) -> &str {
    method(name).map_or(name, |m| m.traits().label)
}

/// A cell of any kind: the kind's own type (in the folder of the code it runs: `train/`,
/// `methods/<method>/`) behind [`CellKind`]. [`Kind::get`] reads it back as its type.
#[derive(Clone)]
pub struct Kind(Arc<dyn CellKind>);

impl Kind {
    pub fn new(cell: impl CellKind + 'static) -> Self {
        Kind(Arc::new(cell))
    }

    /// The same, from a cell a method planned.
    pub fn from_box(cell: Box<dyn CellKind>) -> Self {
        Kind(Arc::from(cell))
    }

    /// What this kind of cell does (see [`CellKind`]).
    pub fn spec(&self) -> &dyn CellKind {
        &*self.0
    }

    /// The cell as its own type `T`, if it is one.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
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
    pub fn world_index(&self, exp: &crate::config::Experiment) -> usize {
        self.spec().world_index(exp)
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
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
