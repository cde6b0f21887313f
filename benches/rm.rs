//! Reward-model workloads at the default sizes (src/config/), each the body of the loop that runs it:
//! - `bt_step_xs`, `bt_step_m`: one Bradley–Terry step of a proxy (64 pairs, one forward
//!   over both sides, as `rm::train_proxy` does);
//! - `score_proxy`, `score_gold`: the m proxy and gold scoring 2,048 pool sequences in
//!   batches of 512 (`raw_set` of a frozen model, as best-of-n does), throughput in forward
//!   FLOPs;
//! - `gold_step`: one gold distillation step (batch 64, MSE, sharded as `rm::train_gold`).
//!
//! Weights are seeded, not trained: the cost of a step does not depend on them. Run with
//! `GOODHART_BENCH_THREADS=1 cargo bench --bench rm`; `benches/compare` sets it for you.

#[macro_use]
mod common;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, Criterion, Throughput};
use goodhart::train::optim::Trainer;
use goodhart::world::SeqSet;
use rand::Rng;

fn bt_steps(c: &mut Criterion) {
    let exp = common::defaults();
    let world = exp.world_config(0);
    let batch = exp.proxy.batch;
    // Pairs of π_ref-like responses; rows [0, b) the a sides, [b, 2b) the b sides.
    let a = common::demonstrations(&world, batch, 1);
    let b = common::demonstrations(&world, batch, 2);
    let chunk: Vec<usize> = (0..batch).collect();
    let mut rng = goodhart::seed::rng(1, "bench/labels");
    let labels: Vec<bool> = (0..batch).map(|_| rng.random::<bool>()).collect();
    {
        let mut both = a.select(&chunk);
        both.tokens.extend_from_slice(&b.tokens);
        both.ends.extend_from_slice(&b.ends);
        common::export("bt_step", &both);
    }
    let total = exp.proxy.data_sizes.iter().max().unwrap().div_ceil(batch) * exp.proxy.epochs;
    let mut g = common::group(c);
    for size in ["xs", "m"] {
        let spec = exp.proxy.sizes.iter().find(|s| s.name == size).expect("the defaults have xs and m proxies");
        let (varmap, rm) = common::reward_model(&exp.proxy_arch(spec), 1);
        let mut trainer = Trainer::new(&varmap, exp.proxy.lr, total, 1.0, "bench").unwrap();
        let mut step = 0;
        g.bench_function(format!("bt_step_{size}"), |bencher| {
            bencher.iter(|| {
                // The body of rm::train_proxy's loop.
                let mut both = a.select(&chunk);
                let other = b.select(&chunk);
                both.tokens.extend_from_slice(&other.tokens);
                both.ends.extend_from_slice(&other.ends);
                let s = rm.raw_batch(&both).unwrap();
                let n = chunk.len();
                let (sa, sb) = (s.narrow(0, 0, n).unwrap(), s.narrow(0, n, n).unwrap());
                let sign: Vec<f32> = chunk.iter().map(|&i| if labels[i] { 1.0 } else { -1.0 }).collect();
                let sign = Tensor::from_vec(sign, n, sa.device()).unwrap();
                let margin = ((sa - sb).unwrap() * sign).unwrap();
                let loss = goodhart::train::rm::bt_loss(&margin, &margin.zeros_like().unwrap()).unwrap();
                let st = trainer.step(&loss, step).unwrap();
                step += 1;
                st
            })
        });
    }
    g.finish();
}

fn scoring(c: &mut Criterion) {
    let exp = common::defaults();
    let world = exp.world_config(0);
    // A slice of a best-of-n pool: four batches of 512 (INFER_BATCH), which a run scores
    // side by side on the work pool (a best-of-n cell scores 32,768 rows per model).
    let batch = 512;
    let set: SeqSet = common::demonstrations(&world, 4 * batch, 3);
    common::export("score", &set);
    let m = exp.proxy.sizes.iter().find(|s| s.name == "m").expect("the defaults have an m proxy");
    for (name, cfg) in [("score_proxy", exp.proxy_arch(m)), ("score_gold", exp.gold_arch())] {
        let rm = common::frozen_reward_model(&cfg, 1);
        let mut g = common::group(c);
        // Elements = forward FLOPs: criterion's throughput is then FLOP/s.
        g.throughput(Throughput::Elements(common::set_forward_flops(&cfg, &set, batch)));
        g.bench_function(name, |bencher| bencher.iter(|| rm.raw_set(&set, batch).unwrap()));
        g.finish();
    }
}

fn gold_step(c: &mut Criterion) {
    let exp = common::defaults();
    let world = exp.world_config(0);
    let batch = exp.gold.batch;
    let mut rng = goodhart::seed::rng(1, "bench/gold");
    let (set, utility) = goodhart::train::rm::gold_dataset(&world, batch, &mut rng);
    let (mean, std) = goodhart::train::rm::gold_target_stats(&utility);
    let z: Vec<f32> = utility.iter().map(|&u| goodhart::train::rm::gold_target(u, mean, std)).collect();
    common::export("gold_step", &set);
    let (varmap, gold) = common::reward_model(&exp.gold_arch(), 2);
    let device = Device::Cpu;
    let shards = goodhart::cell::make::shards(&device);
    let mut trainer = Trainer::new(&varmap, exp.gold.lr, exp.gold.steps, 1.0, "bench").unwrap();
    let idx: Vec<usize> = (0..batch).collect();
    let mut step = 0;
    let mut g = common::group(c);
    g.bench_function("gold_step", |bencher| {
        bencher.iter(|| {
            // The body of rm::train_gold's loop.
            let st = trainer
                .step_sharded(idx.len(), shards, step, |r| {
                    let part = &idx[r];
                    let pred = gold.raw_rows(&set, part)?;
                    let y: Vec<f32> = part.iter().map(|&i| z[i]).collect();
                    let y = Tensor::from_vec(y, part.len(), &device)?;
                    Ok((pred - y)?.sqr()?.mean_all()?)
                })
                .unwrap();
            step += 1;
            st
        })
    });
    g.finish();
}

criterion_group!(benches, bt_steps, scoring, gold_step);
bench_main!(benches);
