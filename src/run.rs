//! `goodhart run`: plan → execute → assemble.
//!
//! 1. [`Plan::new`]: every cell the experiment needs ([`crate::cell`]);
//! 2. [`Exec::make_all`]: each cell loaded from the store or made (all of them, or one
//!    shard's part with `--shard I/N`, optionally of one level with `--level L`);
//! 3. without a shard: [`crate::output::assemble`] writes the tables, figures, resolved
//!    config and manifest, and the report is written from those tables.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use tracing::info;

use crate::plan::exec::Exec;
use crate::plan::Shard;
use crate::cell::store::{Origin, Store};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::output::assemble;

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Results folder (tables, figures, manifest); not used with a shard.
    pub out: PathBuf,
    /// Store of made cells, shared across experiments, processes and hosts.
    pub store: PathBuf,
    pub device: Device,
    /// Overwrite a results folder that holds another config's results.
    pub force: bool,
    /// Make only this shard's cells (and write no tables).
    pub shard: Option<Shard>,
    /// With a shard: only cells of this level (a Slurm job array per level).
    pub level: Option<usize>,
    /// The most modelled CPU-hours the plan may take ([`crate::plan::check`]).
    pub max_cpu_hours: f64,
}

impl RunOptions {
    /// The whole experiment, results in `out`, cells in `store`, on the CPU.
    pub fn new(out: impl Into<PathBuf>, store: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            store: store.into(),
            device: Device::Cpu,
            force: false,
            shard: None,
            level: None,
            max_cpu_hours: crate::plan::MAX_CPU_HOURS,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    /// Cells made by this process (ids).
    pub trained: Vec<String>,
    /// Cells loaded from the store.
    pub reused: Vec<String>,
    /// The assembled rows (empty for a shard).
    pub rows: assemble::Rows,
    /// The results folder (`None` for a shard).
    pub out: Option<PathBuf>,
    /// The report's primary questions, one verdict line each (empty for a shard).
    pub answer: Vec<String>,
    /// Each group of cells this process worked through (timings, memory, progress).
    pub stages: Vec<crate::plan::exec::Stage>,
    /// The overall progress bar at its end: (position, length), in modelled milliseconds.
    pub progress: (u64, u64),
}

/// Runs `exp` (or one shard of it).
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let config_hash = exp.config_hash();
    if opts.level.is_some() && opts.shard.is_none() {
        return Err(Error::Invalid {
            path: "--level".into(),
            key: "--level".into(),
            msg: "goes with --shard I/N".into(),
        });
    }
    // Before any work: the plan is of a size that is meant, the machine can hold the study,
    // the results folder can take it.
    let (plan, _) = crate::plan::check(exp, opts.max_cpu_hours)?;
    crate::plan::resources::check_resources(exp, Some(&opts.store))?;
    if opts.shard.is_none() {
        assemble::check_out_dir(&opts.out, &config_hash, opts.force)?;
    }
    let store = Store::open(&opts.store)?;
    if let Some(l) = opts.level {
        if l >= plan.levels() {
            return Err(Error::Invalid {
                path: "--level".into(),
                key: "--level".into(),
                msg: format!("the plan has levels 0..{}, got {l}", plan.levels()),
            });
        }
    }
    let x = Exec::new(exp, &plan, &store, opts.device.clone());
    let cells: Vec<usize> = match opts.shard {
        Some(s) => plan.shard(s, opts.level),
        None => (0..plan.cells.len()).collect(),
    };
    if let Some(s) = opts.shard {
        info!("shard {s}: {} of the plan's {} cells", cells.len(), plan.cells.len());
    }
    x.make_all(&cells)?;
    let ids = |o: Origin| -> Vec<String> { x.events().iter().filter(|e| e.origin == o).map(|e| plan.cells[e.cell].id.clone()).collect() };
    let (trained, reused) = (ids(Origin::Made), ids(Origin::Reused));
    if opts.shard.is_some() {
        return Ok(RunSummary {
            trained,
            reused,
            rows: assemble::Rows::default(),
            out: None,
            answer: Vec::new(),
            stages: x.stages(),
            progress: x.overall_progress(),
        });
    }
    crate::release_free_memory();
    let mut rows = assemble::rows(&x)?;
    let ctx = assemble::Context {
        out: &opts.out,
        config_hash: &config_hash,
        started,
    };
    assemble::write(&x, &mut rows, &ctx)?;
    let (stages, progress) = (x.stages(), x.overall_progress());
    // The loaded cells are written out: free them (and what the run freed) before the report
    // reads the tables back.
    drop(x);
    crate::release_free_memory();
    let mut answer = Vec::new();
    if !rows.curves.is_empty() {
        // Fits, scaling, stopping rules, aggregator comparison and report.md, from the tables
        // just written (the same as `goodhart report DIR`).
        answer = crate::output::report::report(&opts.out, false)?.answer;
    }
    // The whole process's peak memory, the report included.
    let peak = crate::plan::exec::process_peak_rss();
    if let Some(peak) = peak {
        assemble::record_peak_rss(&opts.out, peak)?;
    }
    info!(
        "run {} finished in {:.1}s{}: {} cells made, {} reused; results in {}",
        exp.name,
        started.elapsed().as_secs_f64(),
        peak.map(|p| format!(", peak memory {}", crate::plan::resources::human(p))).unwrap_or_default(),
        trained.len(),
        reused.len(),
        opts.out.display()
    );
    Ok(RunSummary {
        trained,
        reused,
        rows,
        out: Some(opts.out.clone()),
        answer,
        stages,
        progress,
    })
}
