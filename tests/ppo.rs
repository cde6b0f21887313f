//! PPO: GAE, the clipped losses and the KL estimators against hand values; a few updates
//! on tiny models raise the proxy reward, change the parameters, start at KL 0 and are
//! reproducible; a NaN names its run and step; the KL budget stops a run.

mod common;

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use goodhart::stats::aggregate::Aggregator;
use goodhart::stats::shaping::Shaping;
use goodhart::config::PpoSpec;
use goodhart::model::{seeded_init, Policy, RewardModel, TransformerConfig};
use goodhart::methods::ppo::{self, gae, kl, loss};
use goodhart::world::WorldConfig;
use rand::SeedableRng;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn gae_matches_a_hand_computed_example() {
    // rewards [0, 0, 1], values [0.5, 0.4, 0.3], V after the end = 0.
    // γ = 1, λ = 0.95: δ2 = 1 − 0.3 = 0.7 → A2 = 0.7
    //                  δ1 = 0.3 − 0.4 = −0.1 → A1 = −0.1 + 0.95·0.7 = 0.565
    //                  δ0 = 0.4 − 0.5 = −0.1 → A0 = −0.1 + 0.95·0.565 = 0.43675
    // returns = A + V = [0.93675, 0.965, 1.0]
    let (a, r) = gae::gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 1.0, 0.95);
    for (x, y) in a.iter().zip([0.43675, 0.565, 0.7]) {
        assert!(close(*x as f64, y, 1e-6), "{a:?}");
    }
    for (x, y) in r.iter().zip([0.93675, 0.965, 1.0]) {
        assert!(close(*x as f64, y, 1e-6), "{r:?}");
    }
    // γ = 0.9, λ = 0.95: δ1 = 0.9·0.3 − 0.4 = −0.13 → A1 = −0.13 + 0.855·0.7 = 0.4685
    //                    δ0 = 0.9·0.4 − 0.5 = −0.14 → A0 = −0.14 + 0.855·0.4685 = 0.2605675
    let (a, _) = gae::gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 0.9, 0.95);
    for (x, y) in a.iter().zip([0.2605675, 0.4685, 0.7]) {
        assert!(close(*x as f64, y, 1e-6), "{a:?}");
    }
}

#[test]
fn whitening_uses_response_tokens_only() {
    let mut x = vec![1.0, 3.0, 100.0];
    gae::whiten(&mut x, &[1.0, 1.0, 0.0]);
    assert_eq!(x, vec![-1.0, 1.0, 0.0]);
}

#[test]
fn clipped_losses_match_a_hand_example() {
    let d = common::device();
    let t = |v: [f32; 3]| Tensor::from_slice(&v, (1, 3), &d).unwrap();
    let ln = |x: f32| x.ln();
    let targets = loss::Targets {
        old_logp: t([ln(0.5), ln(0.5), 0.0]),
        old_values: t([0.0, 0.0, 0.0]),
        advantages: t([1.0, -1.0, 7.0]),
        returns: t([1.0, 0.0, 9.0]),
        mask: t([1.0, 1.0, 0.0]),
    };
    let new_logp = t([ln(0.6), ln(0.3), 5.0]);
    let new_values = t([0.5, -0.05, 9.0]);
    let entropy = t([1.0, 2.0, 100.0]);
    let cfg = loss::LossConfig {
        clip: 0.1,
        value_clip: 0.2,
        value_coef: 0.5,
        entropy_coef: 0.01,
    };
    let l = loss::ppo_loss(&targets, &new_logp, &new_values, &entropy, cfg).unwrap();
    // Ratios 1.2 and 0.6 (the third token is padding and must not count).
    // token 0: A = 1,  max(−1.2, −1.1) = −1.1;  token 1: A = −1, max(0.6, 0.9) = 0.9
    assert!(close(l.policy as f64, (-1.1 + 0.9) / 2.0, 1e-6), "policy {}", l.policy);
    // value: token 0 v = 0.5 clipped to 0.2: max((0.5−1)², (0.2−1)²) = 0.64;
    //        token 1 v = −0.05 inside the clip: 0.0025;  ½·mean = 0.160625
    assert!(close(l.value as f64, 0.160625, 1e-6), "value {}", l.value);
    assert!(close(l.entropy as f64, 1.5, 1e-6));
    // both ratios lie outside [0.9, 1.1]
    assert!(close(l.clipfrac as f64, 1.0, 1e-6));
    // approx_kl: ((0.2 − ln 1.2) + (−0.4 − ln 0.6)) / 2 = (0.0176784 + 0.1108256) / 2
    assert!(close(l.approx_kl as f64, 0.064252, 1e-5), "approx_kl {}", l.approx_kl);
    let total = l.total.to_scalar::<f32>().unwrap() as f64;
    assert!(close(total, -0.1 + 0.5 * 0.160625 - 0.01 * 1.5, 1e-6), "total {total}");
}

#[test]
fn k1_and_k3_estimate_the_kl_of_two_known_categoricals() {
    // KL(p‖q) = .5 ln 2 + .3 ln 1.2 + .2 ln .4 = 0.2180119 (python: sum(a*log(a/b) for a, b in zip(p, q)))
    let p = [0.5, 0.3, 0.2];
    let q = [0.25, 0.25, 0.5];
    let exact = kl::categorical_kl(&p, &q);
    assert!(close(exact, 0.2180119, 1e-6), "{exact}");
    // Exact expectations under p: both estimators are unbiased.
    let lp = |x: f64| x.ln() as f32;
    let e1: f64 = (0..3).map(|i| p[i] * kl::k1(lp(p[i]), lp(q[i]))).sum();
    let e3: f64 = (0..3).map(|i| p[i] * kl::k3(lp(p[i]), lp(q[i]))).sum();
    assert!(close(e1, exact, 1e-6), "E[k1] = {e1}");
    assert!(close(e3, exact, 1e-6), "E[k3] = {e3}");
    // k3 is never negative, k1 is on the token where π < π_ref.
    assert!((0..3).all(|i| kl::k3(lp(p[i]), lp(q[i])) >= 0.0));
    assert!(kl::k1(lp(p[2]), lp(q[2])) < 0.0);
    // Monte Carlo from p, as PPO uses them: within 4 standard errors.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let n = 200_000;
    let (mut s1, mut s3) = (0.0, 0.0);
    for _ in 0..n {
        let u: f64 = rand::Rng::random(&mut rng);
        let i = if u < 0.5 { 0 } else if u < 0.8 { 1 } else { 2 };
        s1 += kl::k1(lp(p[i]), lp(q[i]));
        s3 += kl::k3(lp(p[i]), lp(q[i]));
    }
    assert!(close(s1 / n as f64, exact, 4.0 * 0.7 / (n as f64).sqrt()), "k1 MC {}", s1 / n as f64);
    assert!(close(s3 / n as f64, exact, 4.0 * 0.5 / (n as f64).sqrt()), "k3 MC {}", s3 / n as f64);
}

#[test]
fn explained_variance_of_perfect_and_constant_predictions() {
    let y = [1.0, 2.0, 3.0, 50.0];
    let mask = [1.0, 1.0, 1.0, 0.0];
    assert!(close(ppo::explained_variance(&[1.0, 2.0, 3.0, 0.0], &y, &mask), 1.0, 1e-12));
    assert!(close(ppo::explained_variance(&[2.0, 2.0, 2.0, 0.0], &y, &mask), 0.0, 1e-12));
}

/// π_ref (random, seeded), a trainable copy, and two random proxies: enough for PPO to
/// have something to climb.
struct Setup {
    world: WorldConfig,
    reference: Policy,
    gold: RewardModel,
    proxies: Vec<RewardModel>,
    eval_prompts: Vec<Vec<u32>>,
}

fn setup() -> Setup {
    let world = common::tiny().world_config(0);
    let cfg = TransformerConfig::new(&world, 1, 16, 2);
    let vm = VarMap::new();
    let reference = Policy::new(&cfg, &world, VarBuilder::from_varmap(&vm, DType::F32, &common::device())).unwrap();
    seeded_init(&vm, 11, 1).unwrap();
    let rm = |seed: u64| {
        let rcfg = TransformerConfig::new(&world, 1, 8, 2);
        let vm = VarMap::new();
        let m = RewardModel::new(&rcfg, VarBuilder::from_varmap(&vm, DType::F32, &common::device())).unwrap();
        seeded_init(&vm, seed, 1).unwrap();
        m
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let eval_prompts = (0..48).map(|_| world.sample_prompt(&mut rng)).collect();
    Setup {
        gold: rm(21),
        proxies: vec![rm(22), rm(23)],
        world,
        reference,
        eval_prompts,
    }
}

fn spec() -> PpoSpec {
    PpoSpec {
        updates: 12,
        rollout: 32,
        minibatch: 16,
        epochs: 2,
        lr: 3e-3,
        eval_every: 6,
        eval_prompts: 48,
        ..PpoSpec::default()
    }
}

/// A trainable policy with π_ref's weights (copied through safetensors, as the run does).
fn trainable(s: &Setup) -> (VarMap, Policy) {
    let cfg = s.reference.config().expect("a world policy").clone();
    let mut vm = VarMap::new();
    let p = Policy::new(&cfg, &s.world, VarBuilder::from_varmap(&vm, DType::F32, &common::device())).unwrap();
    seeded_init(&vm, 11, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.safetensors");
    vm.save(&f).unwrap();
    vm.load(&f).unwrap();
    (vm, p)
}

fn context<'a>(s: &'a Setup, spec: &'a PpoSpec) -> ppo::Context<'a> {
    ppo::Context {
        world: &s.world,
        reference: &s.reference,
        gold: &s.gold,
        members: s.proxies.iter().collect(),
        heldout: None,
        spec,
        seed: 9,
        eval_prompts: &s.eval_prompts,
    }
}

fn train(s: &Setup, spec: &PpoSpec, agg: Aggregator) -> (ppo::Outcome, VarMap) {
    let (vm, policy) = trainable(s);
    let ctx = context(s, spec);
    let run = ppo::RunSpec {
        id: "ppo/test/run".into(),
        aggregator: agg,
        shaping: Shaping::None,
        beta: 0.0,
    };
    let o = ppo::train(&ctx, &run, &policy, &vm, &indicatif::ProgressBar::hidden()).unwrap();
    (o, vm)
}

fn values(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
    let data = vm.data().lock().unwrap();
    let mut v: Vec<_> = data
        .iter()
        .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_few_updates_raise_the_proxy_change_parameters_and_start_at_kl_zero() {
    let s = setup();
    let (o, vm) = train(&s, &spec(), Aggregator::Mean);
    let first = &o.evaluations[0];
    let last = o.evaluations.last().unwrap();
    // The policy starts as π_ref exactly: every token's log-ratio is 0.
    assert_eq!(first.step, 0);
    assert_eq!(first.kl_k1, 0.0);
    assert_eq!(first.kl_k3, 0.0);
    assert_eq!(o.evaluations.iter().map(|e| e.step).collect::<Vec<_>>(), vec![0, 6, 12]);
    assert_eq!(o.updates.len(), 12);
    // The optimized score rises, by far more than the evaluation noise (48 prompts).
    assert!(last.measures.proxy > first.measures.proxy + 0.2, "proxy {} → {}", first.measures.proxy, last.measures.proxy);
    assert!(last.kl_k1 > 0.01 && last.kl_k3 > 0.01, "KL {} / {}", last.kl_k1, last.kl_k3);
    let (before, _) = trainable(&s);
    let changed = values(&before).iter().zip(values(&vm)).filter(|(a, b)| a.1 != b.1).count();
    assert!(changed > values(&vm).len() / 2, "only {changed} tensors changed");
    for u in &o.updates {
        assert!(u.approx_kl.is_finite() && u.clipfrac >= 0.0 && u.clipfrac <= 1.0 && u.entropy > 0.0);
    }
}

#[test]
fn same_seed_same_run() {
    let s = setup();
    let sp = PpoSpec {
        updates: 3,
        eval_every: 3,
        ..spec()
    };
    let (a, va) = train(&s, &sp, Aggregator::Wco);
    let (b, vb) = train(&s, &sp, Aggregator::Wco);
    assert_eq!(a, b);
    assert_eq!(values(&va), values(&vb));
}

#[test]
fn kl_budget_stops_a_run_at_the_first_checkpoint_past_it() {
    let s = setup();
    let sp = PpoSpec {
        kl_budget: Some(1e-6),
        eval_every: 2,
        ..spec()
    };
    let (o, _) = train(&s, &sp, Aggregator::Member(0));
    assert!(o.stopped_at_budget);
    assert_eq!(o.updates.len(), 2);
    assert_eq!(o.evaluations.len(), 2);
    assert!(o.evaluations[1].kl_k1 > 1e-6);
}

#[test]
fn a_non_finite_score_stops_the_run_naming_run_and_step() {
    let mut s = setup();
    s.proxies[1].scale = f32::NAN;
    let (vm, policy) = trainable(&s);
    let sp = spec();
    let ctx = context(&s, &sp);
    let bad = ppo::RunSpec {
        id: "ppo/bad/mean".into(),
        aggregator: Aggregator::Mean,
        shaping: Shaping::None,
        beta: 0.0,
    };
    let err = ppo::train(&ctx, &bad, &policy, &vm, &indicatif::ProgressBar::hidden()).unwrap_err().to_string();
    assert!(err.contains("ppo/bad/mean") && err.contains("step 0"), "{err}");
    assert!(!err.contains('\n'));
}

/// Peer-code slip: UWO's variance divided by k in best-of-n but by k − 1 in PPO, and a UWO
/// weight of 0 became 1. PPO's rollout reward must be mean − λ·(population variance).
#[test]
fn ppo_uwo_divides_the_variance_by_k_and_lambda_zero_is_the_mean() {
    let s = setup();
    let members: Vec<&RewardModel> = s.proxies.iter().collect();
    let prompts: Vec<Vec<u32>> = s.eval_prompts[..16].to_vec();
    for lambda in [0.0, 1.0] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let ro = ppo::rollout::collect(&s.world, &s.reference, &s.reference, &members, Aggregator::Uwo(lambda), &prompts, &mut rng)
            .unwrap();
        let a = s.proxies[0].score_set(&ro.set, 64).unwrap();
        let b = s.proxies[1].score_set(&ro.set, 64).unwrap();
        for i in 0..ro.len() {
            let (x, y) = (a[i] as f64, b[i] as f64);
            let mean = (x + y) / 2.0;
            let var_k = ((x - mean).powi(2) + (y - mean).powi(2)) / 2.0;
            let want = mean - lambda * var_k;
            assert!(close(ro.score[i] as f64, want, 1e-5), "λ={lambda}: {} vs {want}", ro.score[i]);
        }
    }
}

/// Rewards by hand: −β·k1 on every response token, the score added on the last one, and
/// nothing past a response's end. Row 0 is a 2-token response (mask 1 1 1 0: two tokens and
/// the end token), row 1 an unfinished one filling the width (mask 1 1 1 1).
#[test]
fn rewards_match_a_hand_example() {
    let world = common::tiny().world_config(0);
    let width = 4;
    let ro = ppo::rollout::Rollout {
        responses: vec![
            goodhart::world::Response { tokens: vec![4, 5], finished: true },
            goodhart::world::Response { tokens: vec![6, 7, 8, 9], finished: false },
        ],
        set: goodhart::world::SeqSet::new(world.seq_len()),
        width,
        logp: vec![-1.0, -2.0, -0.5, -9.0, -1.0, -1.0, -1.0, -1.0],
        ref_logp: vec![-1.5, -1.0, -0.5, -3.0, -2.0, -1.0, -0.25, -1.0],
        values: vec![0.0; 8],
        mask: vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        score: vec![2.0, -1.0],
    };
    assert_eq!((ro.tokens_of(0), ro.tokens_of(1)), (3, 4));
    // k1 = logp − ref_logp: row 0 (0.5, −1, 0), row 1 (1, 0, −0.75, 0); β = 0.5.
    let want = [-0.25, 0.5, 0.0 + 2.0, 0.0, -0.5, 0.0, 0.375, 0.0 - 1.0];
    let got = ppo::rollout::rewards(&ro, &ro.score, 0.5);
    assert_eq!(got.len(), 8);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g as f64, w, 1e-7), "reward[{i}] = {g}, want {w}");
    }
    // β = 0: only the score, on the last response token.
    assert_eq!(ppo::rollout::rewards(&ro, &ro.score, 0.0), vec![0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, -1.0]);
}

/// The mask of a real rollout covers exactly each response's tokens and its end token (an
/// unfinished response: `max_response` tokens, no end token), and the reward sits there.
#[test]
fn rollout_mask_covers_each_response_and_its_end_token() {
    let s = setup();
    let members: Vec<&RewardModel> = s.proxies.iter().collect();
    let prompts: Vec<Vec<u32>> = s.eval_prompts[..16].to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let ro = ppo::rollout::collect(&s.world, &s.reference, &s.reference, &members, Aggregator::Mean, &prompts, &mut rng).unwrap();
    assert_eq!(ro.width, s.world.max_response);
    let rewards = ppo::rollout::rewards(&ro, &ro.score, 0.0);
    for (i, r) in ro.responses.iter().enumerate() {
        let n = r.tokens.len() + usize::from(r.finished);
        assert_eq!(n.min(ro.width), n, "a response longer than the width");
        let row = &ro.mask[i * ro.width..(i + 1) * ro.width];
        let want: Vec<f32> = (0..ro.width).map(|t| if t < n { 1.0 } else { 0.0 }).collect();
        assert_eq!(row, want.as_slice(), "response {i}: {r:?}");
        let rrow = &rewards[i * ro.width..(i + 1) * ro.width];
        for (t, &v) in rrow.iter().enumerate() {
            let w = if t + 1 == n { ro.score[i] } else { 0.0 };
            assert_eq!(v, w, "response {i}, token {t}");
        }
    }
    assert!(ro.responses.iter().any(|r| r.finished), "no finished response to check");
}

/// A shaped run's rewards differ from the unshaped run's by the shaping alone, on the last
/// token of each response: `clip` never lets a reward past c, `length` takes α per content
/// token, `par` is σ(score − r_ref) with r_ref the run's aggregate of a π_ref response from
/// the stream it names; unshaped, `shape` gives the scores themselves.
#[test]
fn shaped_rewards_differ_from_unshaped_ones_by_the_shaping_alone() {
    let s = setup();
    let sp = PpoSpec {
        shaping_clip: 0.05,
        length_penalty: 0.1,
        ..spec()
    };
    let ctx = context(&s, &sp);
    let prompts: Vec<Vec<u32>> = s.eval_prompts[..16].to_vec();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let ro = ppo::rollout::collect(&s.world, &s.reference, &s.reference, &ctx.members, Aggregator::Mean, &prompts, &mut rng).unwrap();
    let run = |shaping| ppo::RunSpec { id: "ppo/test/shaped".into(), aggregator: Aggregator::Mean, shaping, beta: 0.1 };
    let shape = |shaping| ppo::rollout::shape(&ctx, &run(shaping), &ro, &prompts, 1, "test/reference").unwrap();
    assert_eq!(shape(Shaping::None), ro.score);
    let plain = ppo::rollout::rewards(&ro, &ro.score, 0.1);
    let last = |i: usize| i * ro.width + ro.tokens_of(i) - 1;
    let check = |shaping, want: &dyn Fn(usize) -> f64| {
        let shaped = shape(shaping);
        let rewards = ppo::rollout::rewards(&ro, &shaped, 0.1);
        for (i, &v) in shaped.iter().enumerate() {
            assert!(close(v as f64, want(i), 1e-6), "{shaping:?} response {i}: {v} vs {}", want(i));
            for t in i * ro.width..(i + 1) * ro.width {
                let diff = if t == last(i) { v - ro.score[i] } else { 0.0 };
                assert!(close((rewards[t] - plain[t]) as f64, diff as f64, 1e-6), "{shaping:?} token {t}");
            }
        }
        shaped
    };
    let clipped = check(Shaping::Clip, &|i| (ro.score[i] as f64).clamp(-0.05, 0.05));
    assert!(clipped.iter().all(|v| v.abs() <= 0.05) && ro.score.iter().any(|v| v.abs() > 0.05), "the clip binds somewhere");
    let at_beta_zero = ppo::rollout::rewards(&ro, &clipped, 0.0);
    assert!(at_beta_zero.iter().all(|v| v.abs() <= 0.05));
    check(Shaping::Length, &|i| ro.score[i] as f64 - 0.1 * ro.responses[i].tokens.len() as f64);
    let mut stream = goodhart::seed::rng(ctx.seed, "test/reference");
    let r_ref = ppo::rollout::reference_scores(&s.world, &s.reference, &ctx.members, Aggregator::Mean, &prompts, 1, &mut stream).unwrap();
    assert_eq!(r_ref.len(), ro.len());
    let par = check(Shaping::Par, &|i| 1.0 / (1.0 + (r_ref[i] as f64 - ro.score[i] as f64).exp()));
    assert!(par.iter().all(|&v| v > 0.0 && v < 1.0));
    check(Shaping::Center, &|i| ro.score[i] as f64 - r_ref[i] as f64);
}

/// The group-relative methods score one π_ref response per prompt, shared by its group.
#[test]
fn a_group_shares_one_reference_response_per_prompt() {
    let s = setup();
    let members: Vec<&RewardModel> = s.proxies.iter().collect();
    let prompts: Vec<Vec<u32>> = s.eval_prompts[..6].iter().flat_map(|p| std::iter::repeat_n(p.clone(), 4)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let r_ref = ppo::rollout::reference_scores(&s.world, &s.reference, &members, Aggregator::Wco, &prompts, 4, &mut rng).unwrap();
    assert_eq!(r_ref.len(), 24);
    for g in r_ref.chunks(4) {
        assert!(g.iter().all(|&v| v == g[0]), "{g:?}");
    }
    assert!(r_ref.chunks(4).any(|g| g[0] != r_ref[0]), "every prompt got the same score: {r_ref:?}");
}
