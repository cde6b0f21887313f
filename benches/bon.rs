//! The best-of-n estimator on a 10⁶-sample pool over the whole n grid (gold and proxy),
//! sort included, on a work-pool thread set up as `goodhart run` does (see benches/common).
//! Run with `cargo bench --bench bon`; quote results with the machine named.

#[macro_use]
mod common;

use criterion::{criterion_group, Criterion};
use goodhart::methods::bon::{ascending_order, expect, n_grid, weights, LogFactorials};
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let pool = 1_000_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let proxy: Vec<f32> = (0..pool).map(|_| rng.random::<f32>()).collect();
    let gold: Vec<f32> = proxy.iter().map(|p| p + rng.random::<f32>()).collect();
    let lf = LogFactorials::new(pool);
    let ns = n_grid(pool);
    let mut g = c.benchmark_group("bon_estimator");
    g.sample_size(10);
    g.bench_function("pool_1e6_full_n_grid", |b| {
        b.iter(|| {
            let order = ascending_order(&proxy);
            ns.iter()
                .map(|&n| {
                    let w = weights(pool, n, &lf);
                    (expect(&order, &w, &gold), expect(&order, &w, &proxy))
                })
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
bench_main!(benches);
