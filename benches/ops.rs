//! The model kernels on this CPU, on a work-pool thread as `goodhart run` runs them:
//! (a) layer norm, attention softmax and the whole attention alone, fused vs candle's
//! composed ops, forward + backward, at the default shapes; (b) one Bradley–Terry step
//! of the `m` proxy (2 layers, width 40, 4 heads, 64 pairs) and one SFT step of the policy (2 layers,
//! width 48, 4 heads, batch 64), each also with the fused kernels off (`_composed`).
//! Set-up and threads as every bench (benches/common: `GOODHART_BENCH_THREADS`, default 1;
//! `GOODHART_BENCH_SECS`, default 3 here). Run with `cargo bench --bench ops`; the machine
//! is noisy, so quote medians (criterion's estimates.json) with the machine named.

#[macro_use]
mod common;

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, BenchmarkGroup, Criterion};
use goodhart::model::ops;
use rand::SeedableRng;

/// This file's groups: criterion's defaults but `GOODHART_BENCH_SECS` of measurement.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let secs: f64 = std::env::var("GOODHART_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let mut g = c.benchmark_group(format!("{name}_t{}", common::threads()));
    g.measurement_time(std::time::Duration::from_secs_f64(secs));
    g
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn bench_ops(c: &mut Criterion) {
    let mut g = group(c, "ops_fwd_bwd");
    // Layer norm: (rows, width) of the SFT step, the m proxy's BT step, gold scoring.
    for (name, b, d) in [("policy_b64_d48", 64, 48), ("proxy_m_b128_d40", 128, 40), ("gold_b512_d64", 512, 64)] {
        let x = Var::from_tensor(&randn(&[b, 22, d], 1)).unwrap();
        let w = Var::from_tensor(&randn(&[d], 2).affine(0.1, 1.0).unwrap()).unwrap();
        let bias = Var::from_tensor(&randn(&[d], 3)).unwrap();
        let r = randn(&[b, 22, d], 4);
        let run = |fused: bool| {
            let y = if fused {
                ops::fused_layer_norm(&x, &w, &bias, 1e-5).unwrap()
            } else {
                candle_nn::ops::layer_norm_slow(&x, &w, &bias, 1e-5).unwrap()
            };
            (y * &r).unwrap().sum_all().unwrap().backward().unwrap()
        };
        g.bench_function(format!("layer_norm_{name}/composed"), |bn| bn.iter(|| run(false)));
        g.bench_function(format!("layer_norm_{name}/fused"), |bn| bn.iter(|| run(true)));
    }
    // Attention scores (b, heads, t, t) with the causal mask and 1/sqrt(head_dim).
    for (name, b, hd) in [("policy_b64", 64, 12), ("proxy_m_b128", 128, 10)] {
        let x = Var::from_tensor(&randn(&[b, 4, 22, 22], 5)).unwrap();
        let r = randn(&[b, 4, 22, 22], 6);
        let scale = 1.0 / (hd as f64).sqrt();
        let run = |fused: bool| {
            let y = if fused {
                ops::fused_causal_softmax(&x, scale).unwrap()
            } else {
                ops::composed_causal_softmax(&x, scale).unwrap()
            };
            (y * &r).unwrap().sum_all().unwrap().backward().unwrap()
        };
        g.bench_function(format!("causal_softmax_{name}/composed"), |bn| bn.iter(|| run(false)));
        g.bench_function(format!("causal_softmax_{name}/fused"), |bn| bn.iter(|| run(true)));
    }
    // Whole causal attention over qkv (b, t, 3 · width), heads 4.
    for (name, b, width) in [("policy_b64_d48", 64, 48), ("proxy_m_b128_d40", 128, 40)] {
        let qkv = Var::from_tensor(&randn(&[b, 22, 3 * width], 7)).unwrap();
        let r = randn(&[b, 22, width], 8);
        let run = |fused: bool| {
            let y = if fused {
                ops::fused_causal_attention(&qkv, 4).unwrap()
            } else {
                ops::composed_causal_attention(&qkv, 4).unwrap()
            };
            (y * &r).unwrap().sum_all().unwrap().backward().unwrap()
        };
        g.bench_function(format!("attention_{name}/composed"), |bn| bn.iter(|| run(false)));
        g.bench_function(format!("attention_{name}/fused"), |bn| bn.iter(|| run(true)));
    }
    g.finish();
}

fn bench_steps(c: &mut Criterion) {
    let exp = common::defaults();
    let world = exp.world_config(0);
    let set = common::demonstrations(&world, 128, 1);
    let mut g = group(c, "train_step");

    // Bradley–Terry step of the m proxy, 64 pairs (one forward over both sides).
    let m_size = exp.proxy.sizes.iter().find(|s| s.name == "m").expect("proxy size m").clone();
    let cfg = exp.proxy_arch(&m_size);
    let (varmap, m) = common::reward_model(&cfg, 1);
    let mut t = goodhart::train::optim::Trainer::new(&varmap, 1e-3, 1_000_000, 1.0, "bench").unwrap();
    let batch = 64;
    let idx: Vec<usize> = (0..2 * batch).collect();
    let mut step = 0;
    let mut bt_step = || {
        let s = m.raw_rows(&set, &idx).unwrap();
        let (a, r) = (s.narrow(0, 0, batch).unwrap(), s.narrow(0, batch, batch).unwrap());
        let loss = goodhart::train::rm::bt_loss(&a, &r).unwrap();
        t.step(&loss, step).unwrap();
        step += 1;
    };
    let name = format!("bt_proxy_{}x{}_pairs{batch}", cfg.layers, cfg.width);
    g.bench_function(&name, |b| b.iter(&mut bt_step));
    g.bench_function(format!("{name}_composed"), |b| b.iter(|| ops::with_composed(&mut bt_step)));

    // SFT step of the policy, batch 64.
    let cfg = exp.policy_arch();
    let (varmap, p) = common::policy(&cfg, &world, 1);
    let mut t = goodhart::train::optim::Trainer::new(&varmap, 1e-3, 1_000_000, 1.0, "bench").unwrap();
    let sub = set.select(&(0..64).collect::<Vec<_>>());
    let tokens = Tensor::from_slice(&sub.tokens, (sub.len(), sub.seq_len), &Device::Cpu).unwrap();
    let mut step = 0;
    let mut sft_step = || {
        let loss = goodhart::train::sft::sft_loss(&p, &tokens).unwrap();
        t.step(&loss, step).unwrap();
        step += 1;
    };
    let name = format!("sft_policy_{}x{}_batch64", cfg.layers, cfg.width);
    g.bench_function(&name, |b| b.iter(&mut sft_step));
    g.bench_function(format!("{name}_composed"), |b| b.iter(|| ops::with_composed(&mut sft_step)));
    g.finish();
}

criterion_group!(benches, bench_ops, bench_steps);
bench_main!(benches);
