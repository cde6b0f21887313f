//! `sft_step`: one supervised fine-tuning step of the reference policy at the
//! default sizes (src/config/; batch 64, cross-entropy on response tokens, sharded as `sft::train`).
//! Run with `GOODHART_BENCH_THREADS=1 cargo bench --bench sft`.

#[macro_use]
mod common;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, Criterion};
use goodhart::train::optim::Trainer;

fn sft_step(c: &mut Criterion) {
    let exp = common::defaults();
    let world = exp.world_config(0);
    let p = &exp.policy;
    let train = common::demonstrations(&world, p.sft_batch, 4);
    common::export("sft_step", &train);
    let (varmap, policy) = common::policy(&exp.policy_arch(), &world, 1);
    let device = Device::Cpu;
    let shards = goodhart::cell::make::shards(&device);
    let mut trainer = Trainer::new(&varmap, p.sft_lr, p.sft_steps, 1.0, "bench").unwrap();
    let batch: Vec<usize> = (0..p.sft_batch).collect();
    let mut step = 0;
    let mut g = common::group(c);
    g.bench_function("sft_step", |bencher| {
        bencher.iter(|| {
            // The body of sft::train's loop.
            let sub = train.select(&batch);
            let st = trainer
                .step_sharded(sub.len(), shards, step, |r| {
                    let part = sub.select(&r.collect::<Vec<_>>());
                    let tokens = Tensor::from_slice(&part.tokens, (part.len(), part.seq_len), &device)?;
                    goodhart::train::sft::sft_loss(&policy, &tokens)
                })
                .unwrap();
            step += 1;
            st
        })
    });
    g.finish();
}

criterion_group!(benches, sft_step);
bench_main!(benches);
