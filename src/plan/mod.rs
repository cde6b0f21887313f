//! The plan of an experiment: every cell with its recipe, key, dependencies, level and
//! modelled cost, in dependency order (a cell comes after every cell it reads).
//!
//! Levels: π_ref 0; gold 1; pairs 2; proxies 3; best-of-n and PPO runs 4. Replicates add
//! proxies, best-of-n pools and PPO runs; they share π_ref, gold, the pairs and the
//! held-out proxy, unless `preferences.per_replicate` (pairs) or `world.per_replicate`
//! (π_ref, gold, pairs and held-out proxy) gives each its own. A level's cells
//! are independent of each other, which is what a shard or a Slurm job array splits.
//!
//! This folder is the layer above the methods that runs cells:
//! - [`kinds`]: the registry, the one list of the kinds a plan can hold, and the cell record;
//! - this file: the plan, its levels, shards, cost and the check that refuses one too large;
//! - [`resources`]: the memory and disk a run needs, checked before any work;
//! - [`exec`]: makes (or loads) a set of cells in dependency order, on this process's cores;
//! - [`slurm`]: sbatch scripts that make a plan's levels as job arrays on a cluster.

pub mod exec;
pub mod kinds;
pub mod resources;
pub mod slurm;

use std::collections::HashMap;

use serde_json::{json, Value};

pub use crate::cell::cost::{Work, RATES};
use crate::cell::store::key_of;
use crate::config::Experiment;
use crate::stats::curve::replicate_suffix;
use crate::train::gold::GoldCell;
use crate::train::pairs::PairsCell;
use crate::train::policy::PolicyCell;
use crate::config::Source;
use crate::train::multihead::MultiHeadCell;
use crate::train::proxy::{heldout_cell, proxy_cells, ProxyCell};
use crate::train::trunk::TrunkCell;
pub use kinds::{Cell, Kind};

/// The id of replicate `r`'s preference-pairs cell: `pairs`, or `pairs/rR` for R > 0 when
/// `preferences.per_replicate` or `world.per_replicate` redraws them.
pub fn pairs_id(exp: &Experiment, r: usize) -> String {
    if r > 0 && (exp.preferences.per_replicate || exp.world.per_replicate) {
        format!("pairs{}", replicate_suffix(r))
    } else {
        "pairs".to_string()
    }
}

/// An experiment's cells in dependency order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub cells: Vec<Cell>,
}

/// `--shard I/N`: the I-th (0-based) of N disjoint parts of a set of cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard must be I/N with 0 ≤ I < N (e.g. 0/2), got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count || count > 1_000_000 {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

struct Builder<'a> {
    exp: &'a Experiment,
    cells: Vec<Cell>,
}

impl Builder<'_> {
    /// Adds a cell; its key covers its kind's recipe, its dependencies' keys and its code
    /// version.
    fn add(&mut self, id: String, kind: Kind, deps: Vec<usize>) -> usize {
        let mut recipe = kind.spec().recipe(self.exp);
        let obj = recipe.as_object_mut().expect("a recipe is a JSON object");
        obj.insert("code".into(), json!(kind.spec().code_version()));
        obj.insert(
            "deps".into(),
            json!(deps.iter().map(|&d| format!("{}-{}", self.cells[d].kind.name(), self.cells[d].key)).collect::<Vec<_>>()),
        );
        let key = key_of(&recipe);
        let level = deps.iter().map(|&d| self.cells[d].level + 1).max().unwrap_or(0);
        let work = kind.spec().work(self.exp);
        let cost_cpu_s = work.seconds();
        self.cells.push(Cell {
            id,
            kind,
            recipe,
            key,
            deps,
            level,
            work,
            cost_cpu_s,
        });
        self.cells.len() - 1
    }
}

/// Adds replicate `r`'s proxy grid (and the pretrained trunks and multi-head models its
/// sources read, each once) after `base` (π_ref, gold, the pairs); returns each proxy's cell.
fn proxy_grid(b: &mut Builder, grid: &[ProxyCell], base: [usize; 3], r: usize) -> Vec<usize> {
    let mut trunks: HashMap<(String, usize), usize> = HashMap::new();
    let mut trunk = |b: &mut Builder, size: &crate::config::ProxySizeSpec, seed: usize| -> usize {
        *trunks.entry((size.name.clone(), seed)).or_insert_with(|| {
            let cell = TrunkCell { size: size.clone(), seed, replicate: r };
            b.add(cell.id(), Kind::new(cell), vec![])
        })
    };
    let mut multi: HashMap<String, usize> = HashMap::new();
    let mut members: Vec<usize> = Vec::with_capacity(grid.len());
    for cell in grid {
        let mut deps = base.to_vec();
        // A text study's proxies start from the trunk checkpoint, not a pretrained trunk cell.
        if let Some(seed) = cell.trunk_seed().filter(|_| b.exp.text().is_none()) {
            deps.push(trunk(b, &cell.size, seed));
        }
        match cell.source {
            Source::Multihead => {
                let shared = trunk(b, &cell.size, 0);
                let m = *multi.entry(cell.ensemble_id()).or_insert_with(|| {
                    let mh = MultiHeadCell { size: cell.size.clone(), data_size: cell.data_size, noise: cell.noise, replicate: r };
                    let mut d = base.to_vec();
                    d.push(shared);
                    b.add(mh.id(), Kind::new(mh), d)
                });
                deps.push(m);
            }
            Source::Warm => {
                // WARM averages the finetune ensemble of the same size, data and noise.
                let averaged = ProxyCell { source: Source::Finetune, member: 0, ..cell.clone() }.ensemble_id();
                deps.extend(grid.iter().zip(&members).filter(|(c, _)| c.ensemble_id() == averaged).map(|(_, &i)| i));
            }
            _ => {}
        }
        members.push(b.add(cell.id(), Kind::new(cell.clone()), deps));
    }
    members
}

impl Plan {
    /// Every cell `exp` needs, in dependency order.
    pub fn new(exp: &Experiment) -> Plan {
        let mut b = Builder { exp, cells: Vec::new() };
        // The cells of world `w`'s own: π_ref and gold, in the world's seed.
        let world_cells = |b: &mut Builder, w: usize| -> (usize, usize) {
            let policy = b.add(format!("policy{}", replicate_suffix(w)), Kind::new(PolicyCell { world: w }), vec![]);
            let gold = b.add(format!("gold{}", replicate_suffix(w)), Kind::new(GoldCell { world: w }), vec![policy]);
            (policy, gold)
        };
        // World 0's π_ref, gold, pairs and held-out proxy; replicates share them unless they
        // redraw them.
        let (mut policy, mut gold) = world_cells(&mut b, 0);
        let pairs0 = b.add(pairs_id(exp, 0), Kind::new(PairsCell { replicate: 0 }), vec![policy, gold]);
        let per_replicate = exp.proxy.heldout_per_replicate;
        let mut heldout_id = heldout_cell(exp, 0)
            .map(|cell| b.add(cell.id(), Kind::new(cell.clone()), vec![policy, gold, pairs0]));
        // Each replicate: its proxies, its best-of-n pools, its PPO runs (and, when it
        // redraws them, its own world's cells and pairs).
        for r in 0..exp.replicates {
            let grid = proxy_cells(exp, r);
            if r > 0 && exp.world_index(r) == r {
                (policy, gold) = world_cells(&mut b, r);
            }
            let pairs = if r > 0 && pairs_id(exp, r) != pairs_id(exp, 0) {
                let own = b.add(pairs_id(exp, r), Kind::new(PairsCell { replicate: r }), vec![policy, gold]);
                if exp.world_index(r) == r && !per_replicate {
                    heldout_id = heldout_cell(exp, r)
                        .map(|cell| b.add(cell.id(), Kind::new(cell.clone()), vec![policy, gold, own]));
                }
                own
            } else {
                pairs0
            };
            if r > 0 && per_replicate {
                heldout_id = heldout_cell(exp, r)
                    .map(|cell| b.add(cell.id(), Kind::new(cell.clone()), vec![policy, gold, pairs]));
            }
            let members = proxy_grid(&mut b, &grid, [policy, gold, pairs], r);
            let reads = |extra: &[usize]| -> Vec<usize> {
                let mut d = vec![policy, gold];
                d.extend_from_slice(extra);
                d.extend(heldout_id);
                d
            };
            for method in kinds::METHODS {
                for planned in method.cells(exp, r, &grid) {
                    let mut own: Vec<usize> = planned.pairs.then_some(pairs).into_iter().collect();
                    own.extend(planned.members.iter().map(|&i| members[i]));
                    b.add(planned.id, Kind::from_box(planned.cell), reads(&own));
                }
            }
        }
        Plan { cells: b.cells }
    }

    /// Number of levels (1 + the deepest level).
    pub fn levels(&self) -> usize {
        self.cells.iter().map(|c| c.level + 1).max().unwrap_or(0)
    }

    /// Cells of `level`, in plan order.
    pub fn level(&self, level: usize) -> Vec<usize> {
        (0..self.cells.len()).filter(|&i| self.cells[i].level == level).collect()
    }

    /// The index of the cell `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.cells.iter().position(|c| c.id == id)
    }

    /// Proxy cells (ensemble members in grid order, then the held-out proxy if any).
    pub fn proxies(&self) -> Vec<(usize, &ProxyCell)> {
        self.cells
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.kind.get::<ProxyCell>().map(|p| (i, p)))
            .collect()
    }

    /// The cells of `shard` among `candidates` (all cells, or one level's): each level's
    /// cells are dealt to the shards by modelled cost, largest first, to the least-loaded
    /// shard (ties: the lowest index), so every shard gets a fair share of every level and
    /// the same plan gives the same split on every host. Plan order within the shard.
    pub fn shard(&self, shard: Shard, level: Option<usize>) -> Vec<usize> {
        let mut mine = Vec::new();
        let levels: Vec<usize> = match level {
            Some(l) => vec![l],
            None => (0..self.levels()).collect(),
        };
        for l in levels {
            mine.extend(self.deal(l, shard.count).into_iter().filter(|&(_, s)| s == shard.index).map(|(i, _)| i));
        }
        mine.sort_unstable();
        mine
    }

    /// Level `l`'s cells dealt to `count` shards: the costliest first, each to the least
    /// loaded shard (ties: the lower index). (cell, shard) pairs.
    fn deal(&self, l: usize, count: usize) -> Vec<(usize, usize)> {
        let mut cells = self.level(l);
        cells.sort_by(|&a, &b| self.cells[b].cost_cpu_s.total_cmp(&self.cells[a].cost_cpu_s).then(a.cmp(&b)));
        let mut load = vec![0f64; count.max(1)];
        cells
            .into_iter()
            .map(|i| {
                let s = (0..load.len()).min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b))).expect("at least one shard");
                load[s] += self.cells[i].cost_cpu_s.max(1e-3);
                (i, s)
            })
            .collect()
    }

    /// The modelled CPU-seconds of each of `count` shards of level `l`.
    pub fn shard_costs(&self, l: usize, count: usize) -> Vec<f64> {
        let mut cost = vec![0f64; count.max(1)];
        for (i, s) in self.deal(l, count) {
            cost[s] += self.cells[i].cost_cpu_s;
        }
        cost
    }

    /// Modelled wall seconds of the plan's cells `todo` on `cores` cores: level by level,
    /// each level's cells spread over the cores (its CPU-seconds / cores), but never less
    /// than its costliest cell.
    pub fn wall_seconds(&self, todo: &[usize], cores: usize) -> f64 {
        (0..self.levels())
            .map(|l| {
                let costs: Vec<f64> = todo.iter().filter(|&&i| self.cells[i].level == l).map(|&i| self.cells[i].cost_cpu_s).collect();
                let max = costs.iter().copied().fold(0.0, f64::max);
                (costs.iter().sum::<f64>() / cores.max(1) as f64).max(max)
            })
            .sum()
    }
}

/// Default of `--max-cpu-hours`: the most modelled CPU-hours a plan may take before a flag
/// says it is meant (a year of one core is 8,766).
pub const MAX_CPU_HOURS: f64 = 10_000.0;

/// The most cells a plan may have: past it, even listing the plan takes long.
pub const MAX_CELLS: u64 = 1_000_000;

/// How large a plan is, before any work.
#[derive(Debug, Clone, PartialEq)]
pub struct Size {
    pub cells: usize,
    /// Modelled CPU-hours of every cell (none counted as stored).
    pub cpu_hours: f64,
    /// Rows of the unit tables (`bon_units`, `ppo_units`) and their bytes on disk (CSV and
    /// parquet).
    pub unit_rows: u64,
    pub table_bytes: u64,
}

/// What each kind of cell is made of, for an error that names the keys to change: the
/// training kinds' here, a method's from its [`crate::methods::Method::size_keys`].
fn kind_keys(kind: &str) -> &'static str {
    match kind {
        "policy" => "policy.sft_steps × policy.sft_batch, reference.diversity_pool",
        "gold" => "gold.steps × gold.batch, gold.samples",
        "pairs" => "proxy.data_sizes, preferences.val_pairs",
        "proxy" => "replicates × proxy.sizes × proxy.data_sizes × proxy.noise × proxy.sources × proxy.members × proxy.epochs",
        "trunk" => "replicates × proxy.sizes × (proxy.members with \"pretrain\" in proxy.sources) × proxy.pretrain.steps × proxy.pretrain.batch",
        "multihead" => "replicates × proxy.sizes × proxy.data_sizes × proxy.noise × proxy.epochs (\"multihead\" in proxy.sources)",
        method => kinds::METHODS.iter().find(|m| m.name() == method).map_or("", |m| m.size_keys()),
    }
}

/// CPU-hours as a person reads them: two decimals below 10, whole hours below a million,
/// then powers of ten.
pub fn hours(h: f64) -> String {
    if h < 10.0 {
        format!("{h:.2}")
    } else if h < 1e6 {
        format!("{h:.0}")
    } else {
        format!("{h:.2e}")
    }
}

/// Bytes on disk per value of a unit table: measured on the quick default, 14 in CSV and 4.4
/// in parquet.
const TABLE_VALUE_BYTES: u64 = 19;

/// The plan of `exp` and its size, or the one-line error of a plan too large: more than
/// [`MAX_CELLS`] cells (counted before the plan is built) or more than `max_cpu_hours`
/// modelled CPU-hours, naming the kind of cell that makes it large and its keys.
pub fn check(exp: &Experiment, max_cpu_hours: f64) -> crate::error::Result<(Plan, Size)> {
    if max_cpu_hours.is_nan() || max_cpu_hours <= 0.0 {
        return Err(crate::error::Error::Invalid {
            path: "--max-cpu-hours".into(),
            key: max_cpu_hours.to_string(),
            msg: "must be a positive number of hours".into(),
        });
    }
    let too_large = |what: String, limit: String, kind: &str, share: f64| crate::error::Error::PlanTooLarge {
        what,
        limit,
        detail: format!("{:.0}% of it in {kind} cells ({})", 100.0 * share, kind_keys(kind)),
    };
    let u = |n: usize| n as u64;
    let reps = u(exp.replicates);
    let worlds = u(exp.worlds());
    let pairs = if exp.preferences.per_replicate || exp.world.per_replicate { reps } else { 1 };
    let heldouts = match (exp.proxy.heldout, exp.proxy.heldout_per_replicate) {
        (false, _) => 0,
        (true, true) => reps,
        (true, false) => worlds,
    };
    let proxies = reps.saturating_mul(u(proxy_cells(exp, 0).len())).saturating_add(heldouts);
    let x = &exp.proxy;
    let has = |s: Source| x.sources.contains(&s);
    let seeds = if has(Source::Pretrain) { x.members } else { usize::from(x.sources.iter().any(|s| s.pretrained())) };
    let trunks = reps.saturating_mul(u(x.sizes.len() * seeds));
    let heads = if has(Source::Multihead) { reps.saturating_mul(u(x.sizes.len() * x.data_sizes.len() * x.noise.len())) } else { 0 };
    let mut counts = vec![("policy", worlds), ("gold", worlds), ("pairs", pairs), ("trunk", trunks), ("multihead", heads), ("proxy", proxies)];
    counts.extend(kinds::METHODS.iter().map(|m| (m.name(), reps.saturating_mul(m.cells_per_replicate(exp)))));
    let cells = counts.iter().fold(0u64, |a, c| a.saturating_add(c.1));
    if cells > MAX_CELLS {
        let (kind, n) = counts.iter().max_by_key(|c| c.1).expect("at least the training kinds");
        return Err(too_large(format!("has {cells} cells"), format!("{MAX_CELLS} cells"), kind, *n as f64 / cells as f64));
    }
    let plan = Plan::new(exp);
    let seconds: f64 = plan.cells.iter().map(|c| c.cost_cpu_s).sum();
    let cpu_hours = seconds / 3600.0;
    if cpu_hours > max_cpu_hours {
        let mut per_kind: Vec<(&str, f64)> = Vec::new();
        for c in &plan.cells {
            match per_kind.iter_mut().find(|k| k.0 == c.kind.name()) {
                Some(k) => k.1 += c.cost_cpu_s,
                None => per_kind.push((c.kind.name(), c.cost_cpu_s)),
            }
        }
        let (kind, s) = per_kind.iter().copied().fold(("", 0.0), |a, k| if k.1 > a.1 { k } else { a });
        return Err(too_large(
            format!("models {} CPU-hours ({} of one core)", hours(cpu_hours), duration(seconds)),
            format!("{} CPU-hours (--max-cpu-hours raises it)", hours(max_cpu_hours)),
            kind,
            s / seconds,
        ));
    }
    let (rows, values) = crate::plan::resources::unit_rows(exp);
    let size = Size {
        cells: plan.cells.len(),
        cpu_hours,
        unit_rows: rows,
        table_bytes: values.saturating_mul(TABLE_VALUE_BYTES),
    };
    Ok((plan, size))
}

/// The plan as data for `goodhart plan`: every cell with its dependencies, modelled cost,
/// measured cost where the store holds it, and whether it does; totals per kind and level.
pub fn describe(plan: &Plan, store: &crate::cell::store::Store) -> crate::error::Result<Value> {
    let mut cells: Vec<Value> = Vec::new();
    let (mut total, mut missing) = (0f64, 0f64);
    let mut earlier: std::collections::HashMap<&str, Vec<(crate::cell::store::Meta, std::time::SystemTime)>> = std::collections::HashMap::new();
    for c in &plan.cells {
        let stored = store.contains(c.kind.name(), &c.key);
        let why = if stored {
            None
        } else {
            let metas = earlier.entry(c.kind.name()).or_insert_with(|| store.metas_of(c.kind.name()));
            let (why, detail) = why_not_stored(&c.id, &c.recipe, metas);
            // Name the cells it reads that are not stored either (they come first in the plan).
            let unstored: Vec<&str> = c.deps.iter().filter(|&&d| cells[d]["stored"] != json!(true)).map(|&d| plan.cells[d].id.as_str()).collect();
            Some(match why {
                "deps" if !unstored.is_empty() => (why, format!("{detail}: {} not stored", unstored.join(", "))),
                _ => (why, detail),
            })
        };
        let measured = if stored { store.meta(c.kind.name(), &c.key).map(|m| m.make_seconds) } else { None };
        let cost = measured.unwrap_or(c.cost_cpu_s);
        total += cost;
        if !stored {
            missing += cost;
        }
        cells.push(json!({
            "id": c.id,
            "kind": c.kind.name(),
            "key": c.key,
            "level": c.level,
            "deps": c.deps.iter().map(|&d| plan.cells[d].id.clone()).collect::<Vec<_>>(),
            "cost_cpu_s": cost,
            "cost_source": if measured.is_some() { "measured" } else { "model" },
            "model_cost_cpu_s": c.cost_cpu_s,
            "work": c.work,
            "stored": stored,
            "why": why.as_ref().map(|w| w.0),
            "why_detail": why.map(|w| w.1),
        }));
    }
    let levels: Vec<Value> = (0..plan.levels())
        .map(|l| {
            let ids = plan.level(l);
            json!({ "level": l, "cells": ids.len(), "cost_cpu_s": ids.iter().map(|&i| plan.cells[i].cost_cpu_s).sum::<f64>() })
        })
        .collect();
    let cores = crate::parallel::cores();
    let todo: Vec<usize> = (0..plan.cells.len()).filter(|&i| cells[i]["stored"] != json!(true)).collect();
    Ok(json!({
        "store": std::path::absolute(store.root()).unwrap_or_else(|_| store.root().to_path_buf()),
        "cells": cells,
        "levels": levels,
        "total_cost_cpu_s": total,
        "missing_cost_cpu_s": missing,
        "cores_here": cores,
        "missing_wall_s_here": plan.wall_seconds(&todo, cores),
    }))
}

/// Why a cell the store lacks is not there, as cargo says why it rebuilds: against the
/// stored cell of the same id that differs least (the latest of those), `new` (none of
/// that id), `code` (its kind's code version changed), `deps` (a dependency's key
/// changed) or `recipe` (its settings changed); with the recipe keys that differ.
fn why_not_stored(id: &str, recipe: &Value, stored: &[(crate::cell::store::Meta, std::time::SystemTime)]) -> (&'static str, String) {
    fn flatten(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, Value>) {
        match v.as_object() {
            Some(o) => o.iter().for_each(|(k, v)| flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out)),
            None => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    let mut mine = std::collections::BTreeMap::new();
    flatten("", recipe, &mut mine);
    let closest = stored
        .iter()
        .filter(|(m, _)| m.id == id)
        .map(|(m, t)| {
            let mut theirs = std::collections::BTreeMap::new();
            flatten("", &m.recipe, &mut theirs);
            let keys: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
            let differ: Vec<String> = keys.into_iter().filter(|k| mine.get(*k) != theirs.get(*k)).cloned().collect();
            (differ, *t)
        })
        .min_by(|a, b| a.0.len().cmp(&b.0.len()).then(b.1.cmp(&a.1)));
    let Some((differ, _)) = closest else {
        return ("new", format!("no stored cell {id}"));
    };
    let settings: Vec<&String> = differ.iter().filter(|k| *k != "code" && !k.starts_with("deps")).collect();
    let list = |v: &[&String]| v.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
    if differ.iter().any(|k| k == "code") {
        let also = if settings.is_empty() { String::new() } else { format!("; settings too: {}", list(&settings)) };
        ("code", format!("the code of its kind changed since the stored {id}{also}"))
    } else if !settings.is_empty() {
        ("recipe", format!("its settings differ from the stored {id}: {}", list(&settings)))
    } else {
        ("deps", format!("a cell it reads changed since the stored {id}"))
    }
}

/// A cell's dependencies in a few words: each kind once, with a count where there are
/// several (`policy, gold, 5 proxies, heldout`); the ids are in `goodhart plan --json`.
fn deps_summary(deps: &[&str]) -> String {
    if deps.is_empty() {
        return "-".to_string();
    }
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for d in deps {
        let kind = d.split('/').next().unwrap_or(d);
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    kinds
        .iter()
        .map(|&(k, n)| match (k, n) {
            (k, 1) => k.to_string(),
            ("proxy", n) => format!("{n} proxies"),
            (k, n) => format!("{n} {k}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds as a short duration: `45 s`, `12 min`, `3.4 h`, `6.6 days`.
pub fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 48.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}

/// [`describe`]'s data as a text table.
pub fn table(d: &Value) -> String {
    use std::fmt::Write as _;
    let cells: Vec<&Value> = d["cells"].as_array().into_iter().flatten().collect();
    // The id column as wide as the longest id (the kind is the id's first part).
    let w = cells.iter().filter_map(|c| c["id"].as_str()).map(|id| id.chars().count()).max().unwrap_or(4).max(4);
    let mut s = String::new();
    let _ = writeln!(s, "{:<3} {:<w$} {:>8} {:<6} depends on", "lvl", "cell", "cpu-s", "stored");
    for c in &cells {
        let deps: Vec<&str> = c["deps"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let measured = c["cost_source"].as_str() == Some("measured");
        let _ = writeln!(
            s,
            "{:<3} {:<w$} {:>7.1}{} {:<6} {}",
            c["level"].as_u64().unwrap_or(0),
            c["id"].as_str().unwrap_or(""),
            c["cost_cpu_s"].as_f64().unwrap_or(f64::NAN),
            if measured { "*" } else { " " },
            c["why"].as_str().unwrap_or("yes"),
            deps_summary(&deps)
        );
    }
    let stored = cells.iter().filter(|c| c["stored"].as_bool() == Some(true)).count();
    let _ = writeln!(s, "cpu-s: the cost model's CPU-seconds; * the measured make time of a stored cell.");
    let _ = writeln!(s, "stored: yes, or why not, against the stored cell of the same id: new (none of that id),");
    let _ = writeln!(s, "  code (its code changed), recipe (its settings), deps (a cell it reads); --json says which.");
    let _ = writeln!(s, "{} cells, {stored} stored in {}", cells.len(), d["store"].as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "{:.0} CPU-s in all, {:.0} still to make: about {} on these {} cores (cost model).",
        d["total_cost_cpu_s"].as_f64().unwrap_or(0.0),
        d["missing_cost_cpu_s"].as_f64().unwrap_or(0.0),
        duration(d["missing_wall_s_here"].as_f64().unwrap_or(0.0)),
        d["cores_here"].as_u64().unwrap_or(1)
    );
    s
}
