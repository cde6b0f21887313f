//! Where the cores go. candle's own per-op threading measured slower than one thread for
//! every model of the embedded world on 2 cores (its workers spin between tiny ops), so
//! goodhart runs candle single-threaded and spends the cores on independent work instead:
//! proxy models side by side, sampling blocks, and data-parallel shards of one batch.
//!
//! [`init`] must run before the first tensor op (it sets candle's thread variables unless
//! the user set them). Work then runs on one pool of `jobs` threads.

use std::sync::OnceLock;

use crate::error::{Error, Result};

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// Most threads `--jobs` may ask for, whatever the machine.
pub const MAX_JOBS: usize = 1024;
/// Most threads per available core `--jobs` may ask for.
pub const MAX_JOBS_PER_CORE: usize = 64;

/// Makes candle single-threaded (unless `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` are set)
/// and builds the work pool with `jobs` threads (0: one per available core). Call once, at
/// start-up, before any other thread exists. More than [`MAX_JOBS`] threads, or more than
/// [`MAX_JOBS_PER_CORE`] per core, is an error, as is a pool the OS refuses to start.
pub fn init(jobs: usize) -> Result<()> {
    let cores = cores();
    let max = MAX_JOBS.min(MAX_JOBS_PER_CORE * cores);
    if jobs > max {
        return Err(Error::Jobs {
            jobs,
            reason: format!("at most {max} threads ({MAX_JOBS}, and {MAX_JOBS_PER_CORE} per core on these {cores} cores); 0 is one per core"),
        });
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let pool = build(if jobs == 0 { cores } else { jobs }).map_err(|e| Error::Jobs {
        jobs,
        reason: format!("cannot start the thread pool: {e}"),
    })?;
    // A pool that already exists (init called twice) stays; the new one is dropped.
    let _ = POOL.set(pool);
    Ok(())
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn build(threads: usize) -> std::result::Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("goodhart-{i}"))
        .build()
}

/// The work pool (built with one thread per core if [`init`] was not called).
pub fn pool() -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| build(cores()).expect("a thread pool of one thread per core"))
}

/// Number of threads of the work pool.
pub fn jobs() -> usize {
    pool().current_num_threads()
}

/// Maps `f` over `items` on the work pool, results in input order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    pool().install(|| items.par_iter().map(f).collect())
}
