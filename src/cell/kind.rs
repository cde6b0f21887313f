//! What the plan, the executor and the store ask of one kind of cell. Each kind implements
//! it in its own file (`make/<kind>.rs`): its name and stage, whose replicate and world it
//! is, its code version, its cost model, its progress units, its make and its load.
//! `crate::plan::Kind` holds a cell of any kind.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use serde_json::Value;

use super::cost::Work;
use super::store::Meta;
use crate::config::Experiment;
use crate::error::Result;
use crate::model::{Policy, RewardModel};
use crate::world::{SeqSet, WorldConfig};

/// A cell of any kind as [`Any`], so that a make can read the kind of a dependency.
pub trait AsAny {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub trait CellKind: AsAny + Send + Sync + std::fmt::Debug {
    /// The folder prefix in the store and the name in plans (`policy`, `bon`, …).
    fn name(&self) -> &'static str;
    /// The stage it belongs to, for timings and progress.
    fn stage(&self) -> &'static str;
    /// The replicate it belongs to (a world's cells: the replicate that draws the world).
    fn replicate(&self) -> usize;
    /// The world it runs in.
    fn world_index(&self, exp: &Experiment) -> usize {
        exp.world_index(self.replicate())
    }
    /// What decides its bytes, besides its dependencies' keys and its code version: the
    /// slice of the experiment its make reads (see the module doc of [`super`]).
    fn recipe(&self, exp: &Experiment) -> Value;
    /// Its code version (see the module doc of [`super`]).
    fn code_version(&self) -> &'static str;
    /// The work it does, which the cost model prices.
    fn work(&self, exp: &Experiment) -> Work;
    /// Progress units of its make (training steps, updates; one for the short ones).
    fn units(&self, _exp: &Experiment) -> u64 {
        1
    }
    /// It standardizes a reward model on its world's reference set.
    fn standardizes(&self) -> bool {
        false
    }
    /// Its stage runs per replicate (best-of-n, PPO, proxies), not once per world.
    fn per_replicate(&self) -> bool {
        false
    }
    /// Makes it into `dir` from `inputs`; returns its `info`.
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value>;
    /// Reads it back from `dir` (a cell of `world`).
    fn load(&self, exp: &Experiment, world: &WorldConfig, device: &Device, dir: &Path, meta: &Meta) -> Result<Loaded>;
}

/// A cell read back from the store: its meta and its value, of the type its kind loads
/// (π_ref: [`Policy`]; gold and proxies: [`RewardModel`]; pairs, best-of-n and PPO: their
/// kind's own type).
pub struct Loaded {
    pub meta: Meta,
    value: Box<dyn Any + Send + Sync>,
}

impl Loaded {
    pub fn new<T: Any + Send + Sync>(value: T, meta: &Meta) -> Self {
        Self {
            meta: meta.clone(),
            value: Box::new(value),
        }
    }

    /// The value as `T`; the plan wires each cell to the kinds it reads, so another type is
    /// a bug.
    pub fn get<T: 'static>(&self) -> &T {
        self.value
            .downcast_ref()
            .unwrap_or_else(|| panic!("cell {} is not a {}", self.meta.id, std::any::type_name::<T>()))
    }

    pub fn policy(&self) -> &Policy {
        self.get()
    }

    pub fn reward(&self) -> &RewardModel {
        self.get()
    }
}

/// What a make reads, handed to it already loaded: the experiment, the cell's world, the
/// device, and the cell's dependencies (a make never asks the executor for more).
pub struct Inputs<'a> {
    pub exp: &'a Experiment,
    /// The cell's id in the plan, for messages.
    pub id: &'a str,
    pub world: &'a WorldConfig,
    /// The index of `world` in the experiment (see [`Experiment::world_index`]).
    pub world_index: usize,
    pub device: &'a Device,
    /// The cells it depends on, in the plan's order, each loaded.
    pub deps: Vec<Dep<'a>>,
    /// The world's reference set, for the kinds that standardize on it.
    pub reference: Option<Arc<SeqSet>>,
}

/// One dependency of a cell: its kind's name, the cell itself (to read which one it is),
/// its folder in the store and its loaded form.
pub struct Dep<'a> {
    pub name: &'static str,
    pub cell: &'a dyn CellKind,
    pub dir: PathBuf,
    pub loaded: Arc<Loaded>,
}

impl Inputs<'_> {
    fn dep_of(&self, kind: &str) -> &Dep<'_> {
        self.deps.iter().find(|d| d.name == kind).unwrap_or_else(|| panic!("the plan wires a {kind} cell into {}", self.id))
    }

    /// The world's π_ref.
    pub fn policy(&self) -> &Policy {
        self.dep_of("policy").loaded.policy()
    }

    /// The folder of the world's π_ref (its weights, for a trainable copy).
    pub fn policy_dir(&self) -> &Path {
        &self.dep_of("policy").dir
    }

    /// The world's gold RM.
    pub fn gold(&self) -> &RewardModel {
        self.dep_of("gold").loaded.reward()
    }

    /// The loaded value of the cell's dependency of kind `kind` (e.g. its pairs).
    pub fn dep<T: 'static>(&self, kind: &str) -> &T {
        self.dep_of(kind).loaded.get()
    }

    /// The reference set of the cell's world.
    pub fn reference(&self) -> &SeqSet {
        self.reference.as_deref().unwrap_or_else(|| panic!("{} reads no reference set", self.id))
    }
}
