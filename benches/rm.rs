//! Reward-model throughput on this CPU: scoring (samples per second per model) for the
//! quick default's largest proxy and its gold, and one Bradley–Terry training step of that
//! proxy. Run with `cargo bench --bench rm`; quote results with the machine named.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use goodhart::model::{seeded_init, RewardModel, TransformerConfig};
use goodhart::world::SeqSet;
use rand::SeedableRng;

fn quick() -> goodhart::Experiment {
    goodhart::Experiment::load(Path::new("experiments/quick.toml")).expect("quick config")
}

fn model(cfg: &TransformerConfig) -> (VarMap, RewardModel) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let m = RewardModel::new(cfg, vb).unwrap();
    seeded_init(&varmap, 1, cfg.layers).unwrap();
    (varmap, m)
}

fn samples(n: usize) -> SeqSet {
    let w = quick().world();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut set = SeqSet::new(w.seq_len());
    for _ in 0..n {
        let p = w.sample_prompt(&mut rng);
        let r = w.demonstrate(&p, &mut rng);
        set.push(&w, &p, &r);
    }
    set
}

fn bench(c: &mut Criterion) {
    goodhart::parallel::init(1).expect("one thread");
    let exp = quick();
    let set = samples(2048);
    let largest = exp.proxy.sizes.iter().max_by_key(|s| s.width * s.layers).unwrap().clone();
    let mut g = c.benchmark_group("rm_scoring");
    g.throughput(Throughput::Elements(set.len() as u64));
    g.sample_size(10);
    for (name, cfg) in [(format!("proxy_{}", largest.name), exp.proxy_arch(&largest)), ("gold".into(), exp.gold_arch())] {
        let (_, m) = model(&cfg);
        g.bench_function(name, |b| b.iter(|| m.raw_set(&set, 512).unwrap()));
    }
    g.finish();

    let (varmap, m) = model(&exp.proxy_arch(&largest));
    let mut t = goodhart::optim::Trainer::new(&varmap, 1e-3, 1000, 1.0, "bench").unwrap();
    let batch = exp.proxy.batch;
    let idx: Vec<usize> = (0..2 * batch).collect();
    let mut step = 0;
    c.bench_function(&format!("proxy_{}_bt_step_batch{batch}", largest.name), |b| {
        b.iter(|| {
            let s = m.raw_rows(&set, &idx).unwrap();
            let (a, r) = (s.narrow(0, 0, batch).unwrap(), s.narrow(0, batch, batch).unwrap());
            let loss = goodhart::rm::bt_loss(&a, &r).unwrap();
            t.step(&loss, step).unwrap();
            step += 1;
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
