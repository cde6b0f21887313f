//! One PPO update at the quick default's sizes on this CPU (one thread): the rollout alone
//! (sampling `ppo.rollout` responses with the KV cache, π_ref log-probs, scoring by an
//! ensemble of the smallest proxy) and the whole update (rollout + `ppo.epochs` passes of
//! minibatches). Run with `cargo bench --bench ppo`; quote results with the machine named.
//! Weights are seeded, not trained: the cost of an update does not depend on them.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use goodhart::aggregate::Aggregator;
use goodhart::model::{seeded_init, Policy, RewardModel};

fn bench(c: &mut Criterion) {
    goodhart::parallel::init(1).expect("one thread");
    let exp = goodhart::Experiment::load(Path::new("experiments/quick.toml")).expect("quick config");
    let world = exp.world();
    let cfg = exp.policy_arch();
    let policy_of = |vm: &VarMap| {
        let p = Policy::new(&cfg, &world, VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu)).unwrap();
        seeded_init(vm, 1, cfg.layers).unwrap();
        p
    };
    let reference = policy_of(&VarMap::new());
    let varmap = VarMap::new();
    let policy = policy_of(&varmap);
    let rm_of = |c: &goodhart::model::TransformerConfig, seed: u64| {
        let vm = VarMap::new();
        let m = RewardModel::new(c, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        seeded_init(&vm, seed, c.layers).unwrap();
        m
    };
    let small = exp.proxy_arch(&exp.proxy.sizes[0]);
    let members: Vec<RewardModel> = (0..exp.proxy.members as u64).map(|i| rm_of(&small, 10 + i)).collect();
    let gold = rm_of(&exp.gold_arch(), 2);
    let ctx = goodhart::ppo::Context {
        world: &world,
        reference: &reference,
        gold: &gold,
        members: members.iter().collect(),
        heldout: None,
        spec: &exp.ppo,
        seed: 1,
        eval_prompts: &[],
    };
    let run = goodhart::ppo::RunSpec {
        id: "bench".into(),
        aggregator: Aggregator::Mean,
        beta: 0.1,
    };
    let mut g = c.benchmark_group(format!(
        "ppo_{}x{}_rollout{}_epochs{}_minibatch{}",
        cfg.layers, cfg.width, exp.ppo.rollout, exp.ppo.epochs, exp.ppo.minibatch
    ));
    g.sample_size(10);
    let mut rng = goodhart::seed::rng(1, "bench");
    let prompts: Vec<Vec<u32>> = (0..exp.ppo.rollout).map(|_| world.sample_prompt(&mut rng)).collect();
    g.bench_function("rollout", |b| {
        b.iter(|| {
            goodhart::ppo::rollout::collect(&world, &policy, &reference, &ctx.members, run.aggregator, &prompts, &mut rng)
                .unwrap()
        })
    });
    let mut trainer = goodhart::optim::Trainer::constant(&varmap, 1e-5, 1.0, "bench").unwrap();
    let mut u = 0;
    g.bench_function("update", |b| {
        b.iter(|| {
            u += 1;
            goodhart::ppo::update(&ctx, &run, &policy, &mut trainer, u).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
