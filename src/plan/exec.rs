//! Executing cells: each one loaded from the store, waited for, or made — once per process,
//! once across every process sharing the store.
//!
//! [`Exec::make_all`] takes a set of cells (a whole plan, or one shard's part) and works
//! through it in groups of one level and one kind (π_ref, gold, pairs, proxies, best-of-n,
//! PPO runs): first it loads every dependency of the group on this thread (waiting for, or
//! making, those another shard owns), then it makes the group's cells side by side on the
//! work pool. Dependencies are therefore always loaded before a cell's make starts, so a make
//! never waits on a lock while it holds one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::Device;
use tracing::info;

use super::Plan;
use crate::cell::kind::{Dep, Inputs, Loaded};
use crate::cell::store::{Origin, Store};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::progress::bar;
use crate::world::{SeqSet, WorldConfig};

/// What happened to one cell in this process.
#[derive(Debug, Clone)]
pub struct Event {
    pub cell: usize,
    pub origin: Origin,
    /// Seconds the make took (made here), or took when it was made (reused).
    pub make_seconds: f64,
}

/// One group of cells this process worked through (one level, one kind).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    pub stage: String,
    /// The replicate every cell of the group belongs to, when they share one and the study
    /// has several.
    pub replicate: Option<usize>,
    pub cells: usize,
    pub seconds: f64,
    /// Peak resident memory of the process during the group, bytes (Linux; None elsewhere).
    pub peak_rss_bytes: Option<u64>,
    /// The group's progress bar at its end: (position, length). Not in the manifest.
    #[serde(skip)]
    pub progress: (u64, u64),
}

/// The largest peak before the last [`reset_peak_rss`], bytes (0: none read yet).
static PEAK_BEFORE_RESET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Resets the process's peak resident memory (Linux: `/proc/self/clear_refs` ← 5), so the
/// next [`peak_rss`] reads the peak since; the peak so far is kept for [`process_peak_rss`].
fn reset_peak_rss() {
    if let Some(p) = peak_rss() {
        PEAK_BEFORE_RESET.fetch_max(p, std::sync::atomic::Ordering::Relaxed);
    }
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

/// Peak resident memory of this process since it started, across resets.
pub fn process_peak_rss() -> Option<u64> {
    peak_rss().map(|p| p.max(PEAK_BEFORE_RESET.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Peak resident memory of this process since start or the last [`reset_peak_rss`] (VmHWM).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The execution of (part of) a plan in this process.
pub struct Exec<'a> {
    pub exp: &'a Experiment,
    pub plan: &'a Plan,
    pub store: &'a Store,
    pub device: Device,
    /// The study's worlds (one, or one per replicate when `world.per_replicate`).
    worlds: Vec<WorldConfig>,
    loaded: Mutex<HashMap<usize, Arc<Loaded>>>,
    /// Each world's reference set, computed once.
    reference: Mutex<HashMap<usize, Arc<SeqSet>>>,
    events: Mutex<Vec<Event>>,
    /// Each group this process worked through.
    stages: Mutex<Vec<Stage>>,
    /// The overall bar at the end of the last [`Exec::make_all`]: (position, length).
    overall: Mutex<(u64, u64)>,
}

impl<'a> Exec<'a> {
    pub fn new(exp: &'a Experiment, plan: &'a Plan, store: &'a Store, device: Device) -> Self {
        Self {
            exp,
            plan,
            store,
            device,
            worlds: (0..exp.worlds()).map(|w| exp.world_config(w)).collect(),
            loaded: Mutex::new(HashMap::new()),
            reference: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            stages: Mutex::new(Vec::new()),
            overall: Mutex::new((0, 0)),
        }
    }

    /// World `w`.
    pub fn world(&self, w: usize) -> &WorldConfig {
        &self.worlds[w]
    }

    /// The folder of cell `i` in the store.
    pub fn cell_dir(&self, i: usize) -> PathBuf {
        let c = &self.plan.cells[i];
        self.store.dir(c.kind.name(), &c.key)
    }

    /// Cell `i`, loaded (from this process's cache, the store, another process, or made).
    pub fn get(&self, i: usize) -> Result<Arc<Loaded>> {
        if let Some(l) = self.cached(i) {
            return Ok(l);
        }
        for &d in &self.plan.cells[i].deps {
            self.get(d)?;
        }
        self.load_or_make(i, &indicatif::ProgressBar::hidden())
    }

    /// What cell `i`'s make reads: its dependencies, loaded (from this process's cache, the
    /// store, or made first), and its world's reference set where it standardizes on it.
    fn inputs(&self, i: usize) -> Result<Inputs<'_>> {
        let cell = &self.plan.cells[i];
        let w = cell.kind.world_index(self.exp);
        let deps = cell
            .deps
            .iter()
            .map(|&d| {
                let kind = &self.plan.cells[d].kind;
                Ok(Dep {
                    name: kind.name(),
                    cell: kind.spec(),
                    dir: self.cell_dir(d),
                    loaded: self.get(d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let reference = match cell.kind.spec().standardizes() {
            true => Some(self.reference_set(w)?),
            false => None,
        };
        Ok(Inputs {
            exp: self.exp,
            id: &cell.id,
            world: self.world(w),
            world_index: w,
            device: &self.device,
            deps,
            reference,
        })
    }

    fn cached(&self, i: usize) -> Option<Arc<Loaded>> {
        self.loaded.lock().expect("cache lock").get(&i).cloned()
    }

    /// The reference set every RM of world `w` is standardized against (π_ref samples),
    /// computed once.
    pub fn reference_set(&self, w: usize) -> Result<Arc<SeqSet>> {
        let mut guard = self.reference.lock().expect("reference lock");
        if let Some(r) = guard.get(&w) {
            return Ok(r.clone());
        }
        let cell = self.plan.cells.iter().position(|c| c.kind.get::<crate::train::policy::PolicyCell>().is_some_and(|p| p.world == w)).expect("every world has its π_ref");
        let policy = self.get(cell)?;
        let r = Arc::new(crate::cell::make::reference_set(policy.policy(), self.exp, self.world(w), w)?);
        guard.insert(w, r.clone());
        Ok(r)
    }

    fn load_or_make(&self, i: usize, pb: &indicatif::ProgressBar) -> Result<Arc<Loaded>> {
        let cell = &self.plan.cells[i];
        let w = cell.kind.world_index(self.exp);
        let (loaded, meta, origin) = self.store.get_or_make(
            cell.store_ref(),
            |dir| cell.kind.spec().make(&self.inputs(i)?, dir, pb),
            |dir, meta| cell.kind.spec().load(self.exp, self.world(w), &self.device, dir, meta),
        )?;
        if origin == Origin::Reused {
            pb.suspend(|| info!("{}: reused {}", cell.id, self.cell_dir(i).display()));
        }
        let loaded = Arc::new(loaded);
        self.loaded.lock().expect("cache lock").insert(i, loaded.clone());
        self.events.lock().expect("events lock").push(Event {
            cell: i,
            origin,
            make_seconds: meta.make_seconds,
        });
        Ok(loaded)
    }

    /// Loads or makes every cell of `cells` (plan indices), group by group (see the module
    /// doc). Every cell is attempted; the first error is returned after the others ran.
    pub fn make_all(&self, cells: &[usize]) -> Result<()> {
        // The overall bar: every cell still to load or make, weighted by its modelled cost.
        let left: Vec<usize> = cells.iter().copied().filter(|&i| self.cached(i).is_none()).collect();
        let cost_ms = |i: usize| (self.plan.cells[i].cost_cpu_s.max(0.0) * 1000.0).round() as u64 + 1;
        let jobs = crate::parallel::jobs();
        let overall = crate::progress::overall(
            left.iter().map(|&i| cost_ms(i)).sum(),
            &format!(
                "all {} cells (modelled {} on {jobs} core{})",
                left.len(),
                crate::plan::duration(self.plan.wall_seconds(&left, jobs)),
                if jobs == 1 { "" } else { "s" }
            ),
        );
        // Each of them once, when it is first found loaded.
        let uncounted = Mutex::new(left.iter().copied().collect::<std::collections::HashSet<usize>>());
        let count = |i: usize| {
            if uncounted.lock().expect("uncounted lock").remove(&i) {
                overall.inc(cost_ms(i));
            }
        };
        let result = self.make_groups(cells, &count, &overall);
        *self.overall.lock().expect("overall lock") = (overall.position(), overall.length().unwrap_or(0));
        overall.finish_and_clear();
        result
    }

    /// The overall bar at the end of the last [`Exec::make_all`]: (position, length).
    pub fn overall_progress(&self) -> (u64, u64) {
        *self.overall.lock().expect("overall lock")
    }

    fn make_groups(&self, cells: &[usize], count: &(dyn Fn(usize) + Sync), overall: &indicatif::ProgressBar) -> Result<()> {
        let mut groups: Vec<(usize, &'static str, Vec<usize>)> = Vec::new();
        let mut sorted = cells.to_vec();
        sorted.sort_by_key(|&i| (self.plan.cells[i].level, i));
        for i in sorted {
            let c = &self.plan.cells[i];
            match groups.last_mut() {
                Some((l, k, v)) if *l == c.level && *k == c.kind.name() => v.push(i),
                _ => groups.push((c.level, c.kind.name(), vec![i])),
            }
        }
        for (_, _, group) in groups {
            // A cell already loaded (a dependency of an earlier group) is done: counted, not made.
            let (done, todo): (Vec<usize>, Vec<usize>) = group.into_iter().partition(|&i| self.cached(i).is_some());
            done.into_iter().for_each(count);
            if todo.is_empty() {
                continue;
            }
            let stage = self.plan.cells[todo[0]].kind.stage();
            crate::release_free_memory();
            reset_peak_rss();
            let t = Instant::now();
            // Dependencies first, on this thread: loaded, waited for, or made.
            for &i in &todo {
                for &d in &self.plan.cells[i].deps {
                    self.get(d)?;
                }
            }
            let mut worlds: Vec<usize> = todo
                .iter()
                .filter(|&&i| self.plan.cells[i].kind.spec().standardizes())
                .map(|&i| self.plan.cells[i].kind.world_index(self.exp))
                .collect();
            worlds.dedup();
            for w in worlds {
                self.reference_set(w)?;
            }
            let units: u64 = todo.iter().map(|&i| self.units(i)).sum();
            let first = self.plan.cells[todo[0]].kind.replicate();
            // Best-of-n and PPO groups are per replicate (what they share, π_ref, gold and pairs,
            // is not).
            let per_replicate = self.plan.cells[todo[0]].kind.spec().per_replicate();
            let same = todo.iter().all(|&i| self.plan.cells[i].kind.replicate() == first);
            let replicate = (per_replicate && self.exp.replicates > 1 && same).then_some(first);
            let label = match replicate {
                Some(r) => format!("{stage}, r{r} of {}", self.exp.replicates),
                None => stage.to_string(),
            };
            let pb = bar(units, &format!("{label} ({} cells)", todo.len()));
            // Proxies and PPO runs advance the group's bar by training steps; the single-cell
            // groups (π_ref, gold, pairs, best-of-n) size it themselves.
            let run = |&i: &usize| -> Result<()> {
                let r = self.load_or_make(i, &pb).map(|_| ());
                count(i);
                r
            };
            let results: Vec<Result<()>> = if self.device.is_cpu() && todo.len() > 1 {
                crate::parallel::map(&todo, run)
            } else {
                todo.iter().map(run).collect()
            };
            let progress = (pb.position(), pb.length().unwrap_or(0));
            pb.finish_and_clear();
            let secs = t.elapsed().as_secs_f64();
            overall.suspend(|| info!("stage: {label}: {} cells in {secs:.1}s", todo.len()));
            self.stages.lock().expect("stages lock").push(Stage {
                stage: stage.to_string(),
                replicate,
                cells: todo.len(),
                seconds: secs,
                peak_rss_bytes: peak_rss(),
                progress,
            });
            if let Some(e) = results.into_iter().find_map(|r| r.err()) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Progress units of a cell (one for the short ones).
    fn units(&self, i: usize) -> u64 {
        self.plan.cells[i].kind.spec().units(self.exp)
    }

    /// Every cell this process loaded or made, in the order it happened.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// Each group this process worked through: wall seconds and peak memory.
    pub fn stages(&self) -> Vec<Stage> {
        self.stages.lock().expect("stages lock").clone()
    }

    /// Every cell of the plan, loaded: for assembling tables. Fails naming a missing one.
    pub fn all(&self) -> Result<Vec<Arc<Loaded>>> {
        (0..self.plan.cells.len())
            .map(|i| {
                self.cached(i).ok_or_else(|| Error::Artifact {
                    dir: self.cell_dir(i),
                    reason: format!("{} was not made", self.plan.cells[i].id),
                })
            })
            .collect()
    }
}
