//! Cells: a run is a plan of cells, each made once into the store and reused everywhere.
//!
//! A cell is one unit of work whose result is stored: the reference policy π_ref (SFT),
//! the gold RM, the preference pairs, each proxy ensemble member, the held-out proxy, the
//! best-of-n pools with their scores and curves, each PPO run. Tables, figures and the report
//! are not cells: they are assembled from cells (by the output layer).
//!
//! This folder is the cells' contract, below the training and the methods that implement it:
//! - [`kind`]: what every kind of cell provides ([`CellKind`]: name, stage, recipe, code
//!   version, cost, make from already-loaded inputs, load); each kind implements it beside
//!   its code (`train/`, `methods/<method>/`);
//! - [`cost`]: the work a cell does and the rates that price it;
//! - [`store`]: the folder of made cells, safe for many processes and hosts at once;
//! - [`make`]: what several makes share (block sampling, weights files).
//!
//! The plan of an experiment's cells, their execution and Slurm arrays are the layer above
//! the methods (`crate::plan`), which lists the kinds.
//!
//! # What goes into a cell's key
//!
//! A cell's key is the SHA-256 (first 20 hex digits) of its recipe and the store
//! [`store::FORMAT`]. The recipe holds exactly what decides the cell's bytes:
//! - the slice of the experiment the make reads (shapes, sizes, rates, the seed) — not the
//!   whole file, so unrelated edits (another best-of-n pool size) reuse a model;
//! - the keys of the cells it depends on (so a new gold retrains every proxy);
//! - the code version of its kind: a hash of every source file its make can reach through
//!   the imports (comment and blank lines left out), of `Cargo.lock` and of the target's
//!   vector extensions, derived at build time (`build/code_version.rs`; the files the walk
//!   stops at are listed there with why). Editing the training code or a kernel changes the
//!   key, so a model made by older code is never reused; editing a comment or the report
//!   does not.
//!
//! Not in the key: the device, `--jobs`, the store or results paths (results do not depend
//! on them), and the run's name.

pub mod cost;
pub mod kind;
pub mod make;
pub mod store;

pub use kind::{CellKind, Loaded};
