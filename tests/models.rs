//! Models and training loops on tiny shapes: parameter counts, gradients reaching every
//! parameter, the KV cache, reproducibility, standardization, non-finite losses.

mod common;

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use goodhart::model::{param_count, seeded_init, Policy, RewardModel, TransformerConfig};
use goodhart::train::rm::{self, Pairs};
use goodhart::world::{SeqSet, WorldConfig};
use rand::SeedableRng;

fn world() -> WorldConfig {
    common::tiny().world_config(0)
}

fn policy(seed: u64) -> (VarMap, Policy, TransformerConfig) {
    let w = world();
    let cfg = TransformerConfig::new(&w, 2, 16, 2);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &common::device());
    let p = Policy::new(&cfg, &w, vb).unwrap();
    seeded_init(&varmap, seed, cfg.layers).unwrap();
    (varmap, p, cfg)
}

fn reward(seed: u64, width: usize) -> (VarMap, RewardModel, TransformerConfig) {
    let w = world();
    let cfg = TransformerConfig::new(&w, 1, width, 2);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &common::device());
    let m = RewardModel::new(&cfg, vb).unwrap();
    seeded_init(&varmap, seed, cfg.layers).unwrap();
    (varmap, m, cfg)
}

fn demo_set(n: usize, seed: u64) -> (Vec<Vec<u32>>, SeqSet) {
    let w = world();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (prompts, responses) = goodhart::train::sft::demonstrations(&w, n, &mut rng);
    let set = goodhart::model::policy::encode_all(&w, &prompts, &responses);
    (prompts, set)
}

fn snapshot(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
    let data = varmap.data().lock().unwrap();
    let mut v: Vec<_> = data
        .iter()
        .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn changed(before: &[(String, Vec<f32>)], after: &[(String, Vec<f32>)]) -> Vec<String> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, _)| b.0.clone())
        .collect()
}

#[test]
fn parameter_counts_match_the_built_models() {
    let (vm, _, cfg) = policy(1);
    assert_eq!(param_count(&vm), cfg.policy_params());
    let (vm, _, cfg) = reward(1, 24);
    assert_eq!(param_count(&vm), cfg.reward_params());
}

#[test]
fn every_policy_parameter_receives_a_gradient() {
    let (vm, p, _) = policy(2);
    let (_, set) = demo_set(16, 1);
    let tokens = Tensor::from_slice(&set.tokens, (set.len(), set.seq_len), &common::device()).unwrap();
    let (_, values) = p.forward(&tokens, None).unwrap();
    let loss = (goodhart::train::sft::sft_loss(&p, &tokens).unwrap() + values.sqr().unwrap().mean_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap();
    for (name, var) in data.iter() {
        let g = grads.get(var).unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0, "{name}: zero gradient");
    }
}

#[test]
fn every_reward_parameter_receives_a_gradient() {
    let (vm, m, _) = reward(3, 16);
    let (_, set) = demo_set(32, 2);
    // A regression loss (as in gold distillation): the Bradley–Terry loss only sees score
    // differences, so it leaves ln_f.bias and score_head.bias without gradient by design.
    let s = m.raw_rows(&set, &(0..32).collect::<Vec<_>>()).unwrap();
    let target = Tensor::arange(0f32, 32f32, &common::device()).unwrap();
    let grads = (s - target).unwrap().sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let data = vm.data().lock().unwrap();
    for (name, var) in data.iter() {
        let g = grads.get(var).unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0, "{name}: zero gradient");
    }
}

#[test]
fn kv_cache_generation_matches_full_forward() {
    let (_, p, _) = policy(4);
    let w = world();
    let (_, set) = demo_set(3, 3);
    let tokens = Tensor::from_slice(&set.tokens, (3, set.seq_len), &common::device()).unwrap();
    let (full, _) = p.forward(&tokens, None).unwrap();
    let mut cache = goodhart::model::KvCache::new(2);
    let pre = w.prefix_len();
    let (first, _) = p.forward(&tokens.narrow(1, 0, pre).unwrap(), Some(&mut cache)).unwrap();
    let mut parts = vec![first];
    for t in pre..set.seq_len {
        let (step, _) = p.forward(&tokens.narrow(1, t, 1).unwrap(), Some(&mut cache)).unwrap();
        parts.push(step);
    }
    let inc = Tensor::cat(&parts, 1).unwrap();
    let diff = (full - inc).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "cached and full logits differ by {diff}");
}

#[test]
fn sampling_is_reproducible_and_never_emits_special_tokens() {
    let (_, p, _) = policy(5);
    let w = world();
    let prompts: Vec<Vec<u32>> = (0..64).map(|i| vec![4 + (i % 7) as u32, 5, 6, 7]).collect();
    let draw = |seed| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        p.sample(&prompts, 1.0, &mut rng).unwrap()
    };
    let (a, b, c) = (draw(9), draw(9), draw(10));
    assert_eq!(a, b);
    assert_ne!(a, c);
    for r in &a {
        assert!(r.tokens.iter().all(|&t| t >= goodhart::world::FIRST_CONTENT), "{r:?}");
        assert!(r.tokens.len() <= w.max_response);
        assert!(r.finished || r.tokens.len() == w.max_response);
    }
}

/// The sampling rule written out plainly: every row, the whole sequence through the model
/// at every step (no cache, no shared prompts, no rows leaving the batch), one draw per
/// unfinished row in row order from softmax(logits / T) by inverse CDF in f64.
fn sample_reference(p: &Policy, w: &WorldConfig, prompts: &[Vec<u32>], temperature: f64, rng: &mut impl rand::Rng) -> Vec<goodhart::world::Response> {
    use goodhart::world::{Response, BOS, EOS, SEP};
    let mut seqs: Vec<Vec<u32>> = prompts.iter().map(|q| [vec![BOS], q.clone(), vec![SEP]].concat()).collect();
    let mut out = vec![Response { tokens: Vec::new(), finished: false }; prompts.len()];
    let mut done = vec![false; prompts.len()];
    for _ in 0..w.max_response {
        let t = seqs[0].len();
        let flat: Vec<u32> = seqs.concat();
        let tokens = Tensor::from_vec(flat, (seqs.len(), t), &common::device()).unwrap();
        let (logits, _) = p.forward(&tokens, None).unwrap();
        let last = logits.narrow(1, t - 1, 1).unwrap().squeeze(1).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in last.iter().enumerate() {
            let tok = if done[i] {
                EOS
            } else {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let probs: Vec<f64> = row.iter().map(|&l| ((l as f64 - max) / temperature).exp()).collect();
                let mut u = rng.random::<f64>() * probs.iter().sum::<f64>();
                let mut pick = probs.len() - 1;
                for (k, q) in probs.iter().enumerate() {
                    if u < *q {
                        pick = k;
                        break;
                    }
                    u -= q;
                }
                pick as u32
            };
            if !done[i] {
                if tok == EOS {
                    done[i] = true;
                    out[i].finished = true;
                } else {
                    out[i].tokens.push(tok);
                }
            }
            seqs[i].push(tok);
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    out
}

#[test]
fn sampling_matches_the_plain_rule_with_shared_prompts_and_early_ends() {
    // Prompts repeat out of order (a best-of-n pool shares one; rollouts mostly do not),
    // and responses end at different steps, so the batch shrinks as it goes.
    let (_, p, _) = policy(7);
    let w = world();
    let distinct: Vec<Vec<u32>> = (0..3).map(|i| vec![4 + i, 6, 5 + i, 7]).collect();
    let mixed: Vec<Vec<u32>> = (0..40).map(|i| distinct[(i * 7 + i / 5) % 3].clone()).collect();
    let pool = vec![distinct[1].clone(); 300];
    for (prompts, temperature) in [(&mixed, 1.0), (&mixed, 0.7), (&pool, 1.0)] {
        let mut a = rand::rngs::StdRng::seed_from_u64(21);
        let mut b = rand::rngs::StdRng::seed_from_u64(21);
        let fast = p.sample(prompts, temperature, &mut a).unwrap();
        let plain = sample_reference(&p, &w, prompts, temperature, &mut b);
        assert_eq!(fast, plain, "temperature {temperature}");
        let lengths: std::collections::BTreeSet<usize> = fast.iter().map(|r| r.tokens.len()).collect();
        assert!(lengths.len() >= 4, "responses should end at different steps: {lengths:?}");
    }
}

#[test]
fn sft_changes_parameters_and_lowers_loss() {
    let (vm, p, _) = policy(6);
    let (_, train) = demo_set(256, 4);
    let (_, val) = demo_set(64, 5);
    let before_loss = goodhart::train::sft::eval_loss(&p, &val, 64).unwrap();
    let before = snapshot(&vm);
    let params = goodhart::train::sft::SftParams { steps: 30, batch: 32, lr: 3e-3, seed: 1, shards: 2 };
    let report = goodhart::train::sft::train(&p, &vm, &train, &val, &params, &indicatif::ProgressBar::hidden()).unwrap();
    let after = snapshot(&vm);
    // Everything but the value head (which SFT's loss does not reach) must move.
    let mut still: Vec<String> = before.iter().map(|b| b.0.clone()).filter(|n| !changed(&before, &after).contains(n)).collect();
    still.sort();
    assert_eq!(still, vec!["value_head.bias".to_string(), "value_head.weight".to_string()]);
    assert!(report.val_loss < before_loss - 0.1, "val loss {before_loss} → {}", report.val_loss);
}

fn tiny_pairs(n: usize, seed: u64) -> (Pairs, Vec<bool>) {
    let w = world();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut a = SeqSet::new(w.seq_len());
    let mut b = SeqSet::new(w.seq_len());
    let (mut ga, mut gb) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let p = w.sample_prompt(&mut rng);
        let ra = w.demonstrate(&p, &mut rng);
        let rb = w.demonstrate(&p, &mut rng);
        ga.push(w.utility(&p, &ra) as f32);
        gb.push(w.utility(&p, &rb) as f32);
        a.push(&w, &p, &ra);
        b.push(&w, &p, &rb);
    }
    let labels = ga.iter().zip(&gb).map(|(x, y)| x > y).collect();
    (Pairs { a, b, gold_a: ga, gold_b: gb }, labels)
}

fn train_tiny_proxy(seed: u64, pairs: &Pairs, labels: &[bool]) -> (VarMap, RewardModel) {
    let (vm, m, _) = reward(seed, 16);
    let params = rm::ProxyParams { epochs: 2, batch: 32, lr: 3e-3, bootstrap: false, seed };
    rm::train_proxy(&m, &vm, pairs, labels, pairs.len(), &params, "test proxy", &indicatif::ProgressBar::hidden())
        .unwrap();
    (vm, m)
}

#[test]
fn proxy_training_changes_parameters_and_same_seed_gives_identical_scores() {
    let (pairs, labels) = tiny_pairs(256, 11);
    let (vm0, _, _) = reward(21, 16);
    let before = snapshot(&vm0);
    let (vm1, m1) = train_tiny_proxy(21, &pairs, &labels);
    let (_, m2) = train_tiny_proxy(21, &pairs, &labels);
    let (_, m3) = train_tiny_proxy(22, &pairs, &labels);
    // Bradley–Terry sees only score differences: the two biases that shift every score
    // alike have zero gradient up to rounding, so they are not asked to move.
    let moved = changed(&before, &snapshot(&vm1));
    let shift_only = ["score_head.bias", "trunk.ln_f.bias"];
    let still: Vec<&String> = before
        .iter()
        .map(|b| &b.0)
        .filter(|n| !moved.contains(n) && !shift_only.contains(&n.as_str()))
        .collect();
    assert!(still.is_empty(), "parameters that did not move: {still:?}");
    let s1 = m1.raw_set(&pairs.a, 64).unwrap();
    let s2 = m2.raw_set(&pairs.a, 64).unwrap();
    let s3 = m3.raw_set(&pairs.a, 64).unwrap();
    assert_eq!(s1, s2, "same seed must give bit-identical scores");
    assert_ne!(s1, s3, "another seed must give another model");
}

#[test]
fn standardization_gives_mean_zero_and_unit_std_on_the_reference_set() {
    let (_, mut m, _) = reward(31, 16);
    let (_, set) = demo_set(500, 6);
    let raw = m.raw_set(&set, 128).unwrap();
    m.standardize(&raw);
    let z = m.score_set(&set, 128).unwrap();
    let (mean, std) = goodhart::model::reward::mean_std(&z);
    assert!(mean.abs() < 1e-4, "mean {mean}");
    assert!((std - 1.0).abs() < 1e-4, "std {std}");
}

#[test]
fn non_finite_loss_stops_training_naming_model_and_step() {
    let (vm, _, _) = reward(41, 8);
    let mut t = goodhart::train::optim::Trainer::new(&vm, 1e-3, 10, 1.0, "proxy/a/d40/n0.00/k0").unwrap();
    let nan = Tensor::new(f32::NAN, &common::device()).unwrap();
    let err = t.step(&nan, 7).unwrap_err().to_string();
    assert!(err.contains("proxy/a/d40/n0.00/k0") && err.contains("step 7"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn gradient_clipping_bounds_the_global_norm() {
    let (vm, m, _) = reward(51, 8);
    let (_, set) = demo_set(8, 7);
    let loss = (m.raw_rows(&set, &(0..8).collect::<Vec<_>>()).unwrap() * 1000.0).unwrap().sum_all().unwrap();
    let mut grads = loss.backward().unwrap();
    let vars = vm.all_vars();
    let before = goodhart::train::optim::clip_grad_norm(&mut grads, &vars, 0.5).unwrap();
    assert!(before > 0.5);
    let after = goodhart::train::optim::clip_grad_norm(&mut grads, &vars, 1e9).unwrap();
    assert!((after - 0.5).abs() < 1e-3, "norm after clipping {after}");
}

#[test]
fn sharded_step_matches_the_whole_batch_step() {
    // Same init, same batch: updates from the whole batch and from 3 shards whose gradients
    // are combined by weight must give the same model. Compared on outputs: parameters with
    // an analytically zero gradient (the key bias: softmax ignores a shift shared by all
    // keys) get rounding noise that Adam scales up, without effect on any score.
    let (_, set) = demo_set(30, 8);
    let idx: Vec<usize> = (0..30).collect();
    let init = reward(61, 8).1.raw_set(&set, 64).unwrap();
    let update = |shards: usize| {
        let (vm, m, _) = reward(61, 8);
        let target = Tensor::arange(0f32, 30f32, &common::device()).unwrap();
        let mut t = goodhart::train::optim::Trainer::new(&vm, 1e-2, 10, 1e9, "shards").unwrap();
        for step in 0..3 {
            t.step_sharded(30, shards, step, |r| {
                let s = m.raw_rows(&set, &idx[r.clone()])?;
                Ok((s - target.narrow(0, r.start, r.len())?)?.sqr()?.mean_all()?)
            })
            .unwrap();
        }
        m.raw_set(&set, 64).unwrap()
    };
    let (one, three) = (update(1), update(3));
    let moved = one.iter().zip(&init).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let diff = one.iter().zip(&three).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(moved > 0.05, "the updates did not move the scores ({moved})");
    assert!(diff < 1e-3 * moved.max(1.0), "sharded and whole-batch scores differ by {diff} (moved {moved})");
}

#[test]
fn trimming_trailing_padding_changes_no_score() {
    // raw() computes only up to the longest read-out position of its batch; a batch of one
    // short response (heavily trimmed) must score as it does inside a batch with a long one.
    let (_, m, _) = reward(71, 16);
    let (_, set) = demo_set(64, 9);
    let batched = m.raw_set(&set, 64).unwrap();
    let single: Vec<f32> = (0..set.len()).map(|i| m.raw_rows(&set, &[i]).unwrap().to_vec1::<f32>().unwrap()[0]).collect();
    for (a, b) in batched.iter().zip(&single) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

/// `goodhart bench-score` (hidden; scripts/gpu-run times a GPU with it): one entry per
/// reward-model shape with the experiment's parameter counts, as many models of each as a
/// best-of-n cell scores with, and rates measured over the samples asked for.
#[test]
fn bench_score_times_every_reward_model_shape_of_the_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tiny.toml");
    std::fs::write(&toml, common::TINY).unwrap();
    let device = common::device_name();
    let (ok, out, err) =
        common::goodhart(&["bench-score", toml.to_str().unwrap(), "--samples", "700", "--device", &device], dir.path());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let exp = common::tiny();
    let models = v["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["gold", "proxy/a"]);
    assert_eq!(models[0]["params"].as_u64(), Some(exp.params.gold as u64));
    assert_eq!(models[1]["params"].as_u64(), Some(exp.params.proxies[0].1 as u64));
    // Gold once; proxy "a": 2 members, plus the held-out proxy (the largest size).
    assert_eq!(models[0]["per_bon_cell"].as_u64(), Some(1));
    assert_eq!(models[1]["per_bon_cell"].as_u64(), Some(3));
    assert_eq!(v["bon_cell_models"].as_u64(), Some(4));
    for m in models {
        assert_eq!(m["samples"].as_u64(), Some(700), "{m}");
        let (s, rate) = (m["seconds"].as_f64().unwrap(), m["samples_per_s"].as_f64().unwrap());
        assert!(s > 0.0 && (rate * s - 700.0).abs() < 1e-6 * 700.0, "{m}");
    }
    let cell = v["bon_cell_samples_per_s"].as_f64().unwrap();
    let slowest = models.iter().map(|m| m["samples_per_s"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    assert!(cell > 0.0 && cell < slowest, "a cell scores with every model: {cell} vs {slowest}");
    assert_eq!(v["device"].as_str(), Some(if device == "cpu" { "cpu" } else { "cuda" }));
}


#[test]
fn frozen_views_score_as_the_variables_do_record_no_graph_and_follow_updates() {
    let (vm, m, cfg) = reward(71, 8);
    let f = RewardModel::new(&cfg, goodhart::model::frozen(&vm, &common::device())).unwrap();
    let (_, set) = demo_set(40, 9);
    let before = f.raw_set(&set, 16).unwrap();
    assert_eq!(before, m.raw_set(&set, 16).unwrap(), "a frozen view must score as its variables do");
    assert!(m.raw_batch(&set).unwrap().track_op(), "the trainable model records a graph");
    assert!(!f.raw_batch(&set).unwrap().track_op(), "a frozen view must record no graph");
    // An optimizer step on the variables moves the view too (it shares their storage).
    let mut t = goodhart::train::optim::Trainer::new(&vm, 1e-2, 10, 1e9, "frozen").unwrap();
    let loss = m.raw_batch(&set).unwrap().sqr().unwrap().mean_all().unwrap();
    t.step(&loss, 0).unwrap();
    let after = f.raw_set(&set, 16).unwrap();
    assert_ne!(after, before, "the view did not follow the update");
    assert_eq!(after, m.raw_set(&set, 16).unwrap());
    // The same holds for a policy, whose view samples in PPO's rollouts.
    let (pvm, p, pcfg) = policy(72);
    let pf = Policy::new(&pcfg, &world(), goodhart::model::frozen(&pvm, &common::device())).unwrap();
    let tokens = Tensor::from_slice(&set.tokens, (set.len(), set.seq_len), &common::device()).unwrap();
    let (a, b) = (p.response_logprobs(&tokens).unwrap().0, pf.response_logprobs(&tokens).unwrap().0);
    assert!(!b.track_op());
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
}

#[test]
fn scoring_does_not_depend_on_the_thread_count() {
    // raw_set scores its batches side by side on the work pool; the batches are the same
    // rows whatever the pool, so the scores are bit for bit the same as one batch at a time.
    let (_, m, _) = reward(73, 8);
    let (_, set) = demo_set(100, 10);
    let pooled = m.raw_set(&set, 16).unwrap();
    let mut idx: Vec<usize> = (0..set.len()).collect();
    idx.sort_by_key(|&i| set.ends[i]);
    let mut serial = vec![0f32; set.len()];
    for chunk in idx.chunks(16) {
        let s = m.raw_rows(&set, chunk).unwrap().to_vec1::<f32>().unwrap();
        for (&i, v) in chunk.iter().zip(s) {
            serial[i] = v;
        }
    }
    assert_eq!(pooled, serial);
}
