//! Where the cores go. candle's own per-op threading measured slower than one thread for
//! every model of the embedded world on 2 cores (its workers spin between tiny ops), so
//! goodhart runs candle single-threaded and spends the cores on independent work instead:
//! proxy models side by side, sampling blocks, and data-parallel shards of one batch.
//!
//! [`init`] must run before the first tensor op (it sets candle's thread variables unless
//! the user set them). Work then runs on one pool of `jobs` threads.

use std::sync::OnceLock;

static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

/// Makes candle single-threaded (unless `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` are set)
/// and builds the work pool with `jobs` threads (0: one per available core). Call once, at
/// start-up, before any other thread exists.
pub fn init(jobs: usize) {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let _ = pool_with(jobs);
}

fn pool_with(jobs: usize) -> &'static rayon::ThreadPool {
    POOL.get_or_init(|| {
        let n = if jobs == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            jobs
        };
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("goodhart-{i}"))
            .build()
            .expect("thread pool")
    })
}

/// The work pool (built with one thread per core if [`init`] was not called).
pub fn pool() -> &'static rayon::ThreadPool {
    pool_with(0)
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
