//! The fused model kernels (src/model/ops.rs) against candle's composed ops: forward values
//! within 1e-5 and gradients (of a random linear functional of the output) within 1e-4, both
//! relative to the reference's largest magnitude, on random inputs of several shapes, with
//! masked (−∞) entries for softmax; and whole models on the same weights, fused on the CPU
//! against composed on the test device (`GOODHART_TEST_DEVICE`).

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use goodhart::model::{ops, seeded_init, Policy, RewardModel, TransformerConfig};
use rand::{Rng, SeedableRng};

fn randn(shape: &[usize], seed: u64, mean: f32, std: f32) -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let z: f32 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
            mean + std * z
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// max |got − want| ≤ tol · max |want|, same shape, and exact zeros where `want` is 0 with
/// `zeros_exact` (masked softmax entries).
fn assert_close(got: &Tensor, want: &Tensor, tol: f32, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let (g, w) = (values(got), values(want));
    assert!(g.iter().all(|v| v.is_finite()), "{what}: non-finite values {g:?}");
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let diff = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= tol * scale, "{what}: max diff {diff} > {tol} × {scale}");
}

#[test]
fn layer_norm_matches_the_composed_reference_with_gradients() {
    for (i, shape) in [vec![3, 8], vec![2, 5, 40], vec![4, 22, 64], vec![2, 3, 22, 48], vec![1, 1, 16], vec![3, 5, 13], vec![2, 3]]
        .into_iter()
        .enumerate()
    {
        let s = i as u64 * 10;
        let d = *shape.last().unwrap();
        // Inputs off-centre and wide, weights away from 1, biases away from 0.
        let x = Var::from_tensor(&randn(&shape, s + 1, 3.0, 2.5)).unwrap();
        let w = Var::from_tensor(&randn(&[d], s + 2, 1.0, 0.5)).unwrap();
        let b = Var::from_tensor(&randn(&[d], s + 3, 0.0, 1.0)).unwrap();
        let r = randn(&shape, s + 4, 0.0, 1.0);
        let fused = ops::fused_layer_norm(&x, &w, &b, 1e-5).unwrap();
        let composed = candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-5).unwrap();
        assert_close(&fused, &composed, 1e-5, &format!("layer norm {shape:?} forward"));
        let gf = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
            let (a, c) = (gf.get(v).expect("fused grad"), gc.get(v).expect("composed grad"));
            assert_close(a, c, 1e-4, &format!("layer norm {shape:?} d/d{name}"));
        }
        // The dispatching entry point takes the fused path on CPU.
        let dispatched = ops::layer_norm(&x, &w, &b, 1e-5).unwrap();
        assert_eq!(values(&dispatched), values(&fused));
    }
}

#[test]
fn layer_norm_of_a_constant_row_is_its_bias() {
    let x = Var::from_tensor(&Tensor::full(2.5f32, (3, 8), &Device::Cpu).unwrap()).unwrap();
    let w = Var::from_tensor(&randn(&[8], 1, 1.0, 0.5)).unwrap();
    let b = Var::from_tensor(&randn(&[8], 2, 0.0, 1.0)).unwrap();
    let y = ops::fused_layer_norm(&x, &w, &b, 1e-5).unwrap();
    let want = b.as_tensor().broadcast_as((3, 8)).unwrap().contiguous().unwrap();
    assert_close(&y, &want, 1e-6, "constant rows");
    let g = y.sum_all().unwrap().backward().unwrap();
    assert!(values(g.get(&x).unwrap()).iter().all(|v| v.is_finite()));
}

/// Random scores with about a third of the entries −∞ (never a whole row).
fn masked_scores(shape: &[usize], seed: u64) -> Tensor {
    let n = *shape.last().unwrap();
    let mut v = values(&randn(shape, seed, 0.5, 3.0));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 100);
    for row in v.chunks_mut(n) {
        let keep = rng.random_range(0..n);
        for (j, x) in row.iter_mut().enumerate() {
            if j != keep && rng.random_bool(0.35) {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn softmax_matches_the_composed_reference_with_masked_entries_and_gradients() {
    for (i, shape) in [vec![5, 8], vec![3, 4, 40], vec![2, 3, 7, 64], vec![4, 1], vec![2, 4, 22, 22]].into_iter().enumerate() {
        let s = 100 + i as u64 * 10;
        let x = Var::from_tensor(&masked_scores(&shape, s)).unwrap();
        let r = randn(&shape, s + 1, 0.0, 1.0);
        let fused = ops::fused_softmax_last_dim(&x).unwrap();
        let composed = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        assert_close(&fused, &composed, 1e-5, &format!("softmax {shape:?} forward"));
        let (xf, yf) = (values(&x), values(&fused));
        assert!(xf.iter().zip(&yf).all(|(x, y)| x.is_finite() || *y == 0.0), "masked entries must be exactly 0");
        let gf = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(gf.get(&x).unwrap(), gc.get(&x).unwrap(), 1e-4, &format!("softmax {shape:?} d/dx"));
        assert_eq!(values(&ops::softmax_last_dim(&x).unwrap()), yf);
    }
}

#[test]
fn causal_softmax_matches_scale_mask_and_softmax_with_gradients() {
    // (…, t, t_total): full causal blocks, a cache offset (t < t_total), one query row, width 8.
    for (i, (shape, head_dim)) in [
        (vec![2, 4, 22, 22], 10usize),
        (vec![3, 2, 5, 9], 12),
        (vec![2, 2, 1, 7], 16),
        (vec![1, 1, 8, 8], 2),
        (vec![64, 4, 22, 22], 12),
    ]
    .into_iter()
    .enumerate()
    {
        let s = 200 + i as u64 * 10;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let x = Var::from_tensor(&randn(&shape, s, 0.0, 4.0)).unwrap();
        let r = randn(&shape, s + 1, 0.0, 1.0);
        let fused = ops::fused_causal_softmax(&x, scale).unwrap();
        let composed = ops::composed_causal_softmax(&x, scale).unwrap();
        assert_close(&fused, &composed, 1e-5, &format!("causal softmax {shape:?} forward"));
        // Exactly 0 above the diagonal (offset by t_total − t).
        let (t, total) = (shape[2], shape[3]);
        for (row, y) in values(&fused).chunks(total).enumerate() {
            let visible = total - t + row % t + 1;
            assert!(y[visible..].iter().all(|&v| v == 0.0), "row {row} sees the future: {y:?}");
        }
        let gf = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(gf.get(&x).unwrap(), gc.get(&x).unwrap(), 1e-4, &format!("causal softmax {shape:?} d/dx"));
    }
}

#[test]
fn add_bias_matches_broadcast_add_with_gradients() {
    for (i, (shape, bias)) in
        [(vec![6, 40], vec![40]), (vec![2, 22, 48], vec![48]), (vec![3, 22, 8], vec![22, 8]), (vec![4, 1], vec![1])]
            .into_iter()
            .enumerate()
    {
        let s = 300 + i as u64 * 10;
        let x = Var::from_tensor(&randn(&shape, s, 0.0, 1.0)).unwrap();
        let b = Var::from_tensor(&randn(&bias, s + 1, 0.0, 1.0)).unwrap();
        let r = randn(&shape, s + 2, 0.0, 1.0);
        let fused = ops::fused_add_bias(&x, &b).unwrap();
        let composed = x.broadcast_add(&b).unwrap();
        assert_eq!(values(&fused), values(&composed), "add_bias {shape:?} forward");
        let gf = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("bias", &b)] {
            assert_close(gf.get(v).unwrap(), gc.get(v).unwrap(), 1e-5, &format!("add_bias {shape:?} d/d{name}"));
        }
    }
    let x = randn(&[2, 3], 1, 0.0, 1.0);
    assert!(ops::fused_add_bias(&x, &randn(&[2], 2, 0.0, 1.0)).is_err(), "a bias of the wrong width is refused");
}

#[test]
fn linear_matches_candle_nn_linear_and_relu_with_gradients() {
    for (i, (shape, out)) in [(vec![5, 8], 40), (vec![3, 22, 48], 192), (vec![2, 22, 40], 1), (vec![4, 1, 16], 24), (vec![2, 3, 5, 8], 8)]
        .into_iter()
        .enumerate()
    {
        let k = *shape.last().unwrap();
        for relu in [false, true] {
            let s = 400 + i as u64 * 10;
            let x = Var::from_tensor(&randn(&shape, s, 0.0, 1.0)).unwrap();
            let w = Var::from_tensor(&randn(&[out, k], s + 1, 0.0, 0.3)).unwrap();
            let b = Var::from_tensor(&randn(&[out], s + 2, 0.0, 0.5)).unwrap();
            let fused = ops::fused_linear(&x, &w, &b, relu).unwrap();
            let composed = ops::composed_linear(&x, &w, &b, relu).unwrap();
            let what = format!("linear {shape:?}→{out} relu={relu}");
            assert_close(&fused, &composed, 1e-5, &format!("{what} forward"));
            let r = randn(fused.dims(), s + 3, 0.0, 1.0);
            let gf = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
                assert_close(gf.get(v).unwrap(), gc.get(v).unwrap(), 1e-4, &format!("{what} d/d{name}"));
            }
        }
    }
}

#[test]
fn causal_attention_matches_the_composed_heads_with_gradients() {
    // qkv (b, t, 3 · width), heads: the run's shapes (head_dim 10, 12, 16), odd lengths, one
    // position, head_dim 4 (the xs proxy).
    for (i, (b, t, width, heads)) in
        [(2, 22, 40, 4), (3, 22, 48, 4), (2, 22, 64, 4), (3, 7, 8, 2), (2, 1, 16, 2), (2, 9, 24, 1), (1, 17, 40, 4)]
            .into_iter()
            .enumerate()
    {
        let s = 500 + i as u64 * 10;
        let qkv = Var::from_tensor(&randn(&[b, t, 3 * width], s, 0.0, 1.5)).unwrap();
        let r = randn(&[b, t, width], s + 1, 0.0, 1.0);
        let fused = ops::fused_causal_attention(&qkv, heads).unwrap();
        let composed = ops::composed_causal_attention(&qkv, heads).unwrap();
        let what = format!("attention b{b} t{t} width{width} heads{heads}");
        assert_close(&fused, &composed, 1e-5, &format!("{what} forward"));
        let gf = (&fused * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(gf.get(&qkv).unwrap(), gc.get(&qkv).unwrap(), 1e-4, &format!("{what} d/dqkv"));
    }
    let qkv = randn(&[2, 3, 30], 1, 0.0, 1.0);
    assert!(ops::fused_causal_attention(&qkv, 4).is_err(), "a width that heads do not divide is refused");
}

/// Every parameter's gradient under the fused and the composed path, by name.
fn grads_by_name(vm: &VarMap, loss: &Tensor) -> Vec<(String, Tensor)> {
    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap();
    let mut out: Vec<(String, Tensor)> =
        data.iter().map(|(k, v)| (k.clone(), grads.get(v).unwrap_or_else(|| panic!("{k}: no gradient")).clone())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whole models on the same seeded weights: the fused kernels on the CPU against candle's
/// composed ops on the test device (`GOODHART_TEST_DEVICE`: the CPU by default, so the two
/// paths of one machine; a GPU under scripts/gpu-run, whose models always take the composed
/// path). The kernel tests above stay on the CPU: the fused kernels exist only there.
#[test]
fn models_on_the_fused_path_match_the_composed_path_with_gradients() {
    let dev = common::device();
    let exp = common::tiny();
    let world = exp.world_config(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (prompts, responses) = goodhart::train::sft::demonstrations(&world, 24, &mut rng);
    let set = goodhart::model::policy::encode_all(&world, &prompts, &responses);
    let tokens_on = |d: &Device| Tensor::from_slice(&set.tokens, (set.len(), set.seq_len), d).unwrap();

    // The policy at the run's shape: logits, values, and every parameter's gradient.
    let cfg = TransformerConfig::new(&world, 2, 48, 4);
    let run = |d: &Device| {
        let vm = VarMap::new();
        let p = Policy::new(&cfg, &world, VarBuilder::from_varmap(&vm, DType::F32, d)).unwrap();
        seeded_init(&vm, 3, cfg.layers).unwrap();
        let tokens = tokens_on(d);
        let (logits, values) = p.forward(&tokens, None).unwrap();
        let loss = (goodhart::train::sft::sft_loss(&p, &tokens).unwrap() + values.sqr().unwrap().mean_all().unwrap()).unwrap();
        (logits, values, grads_by_name(&vm, &loss))
    };
    let (lf, vf, gf) = run(&Device::Cpu);
    let (lc, vc, gc) = ops::with_composed(|| run(&dev));
    // Masked logits are −1e9: compare the allowed ones through log-softmax.
    let lsm = |l: &Tensor| candle_nn::ops::log_softmax(l, D::Minus1).unwrap();
    assert_close(&lsm(&lf), &lsm(&lc), 1e-5, "policy log-probs");
    assert_close(&vf, &vc, 1e-5, "policy values");
    assert_eq!(gf.len(), gc.len());
    for ((name, a), (_, b)) in gf.iter().zip(&gc) {
        assert_close(a, b, 1e-4, &format!("policy d/d{name}"));
    }

    // A reward model (width 40) on a regression loss: scores and gradients.
    let cfg = TransformerConfig::new(&world, 2, 40, 4);
    let run = |d: &Device| {
        let vm = VarMap::new();
        let m = RewardModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, d)).unwrap();
        seeded_init(&vm, 4, cfg.layers).unwrap();
        let target = Tensor::arange(0f32, set.len() as f32, d).unwrap();
        let s = m.raw_batch(&set).unwrap();
        let loss = (&s - &target).unwrap().sqr().unwrap().mean_all().unwrap();
        (s, grads_by_name(&vm, &loss))
    };
    let (sf, gf) = run(&Device::Cpu);
    let (sc, gc) = ops::with_composed(|| run(&dev));
    assert_close(&sf, &sc, 1e-5, "reward scores");
    assert_eq!(gf.len(), gc.len());
    for ((name, a), (_, b)) in gf.iter().zip(&gc) {
        assert_close(a, b, 1e-4, &format!("reward d/d{name}"));
    }
}
