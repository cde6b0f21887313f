//! Formulas pinned to independently computed values (the reference computation is kept
//! in a comment beside each).

mod common;

use candle_core::Tensor;
use goodhart::train::rm::{apply_label_noise, bt_loss, label_pairs, r_squared};
use goodhart::config::LabelMode;
use rand::SeedableRng;

#[test]
fn bradley_terry_loss_matches_hand_value() {
    // python3: import math
    //   sp = lambda z: math.log1p(math.exp(z))
    //   (sp(0-1) + sp(0-0) + sp(1+2)) / 3  == 1.3516654063...
    let chosen = Tensor::new(&[1.0f32, 0.0, -2.0], &common::device()).unwrap();
    let rejected = Tensor::new(&[0.0f32, 0.0, 1.0], &common::device()).unwrap();
    let loss = bt_loss(&chosen, &rejected).unwrap().to_scalar::<f32>().unwrap();
    assert!((loss - 1.351_665_4).abs() < 1e-5, "loss {loss}");
}

#[test]
fn bradley_terry_loss_is_stable_for_large_margins() {
    // softplus(-100) ≈ 3.7e-44 and softplus(100) = 100 + 3.7e-44: no overflow to inf.
    let chosen = Tensor::new(&[100.0f32, -100.0], &common::device()).unwrap();
    let rejected = Tensor::new(&[0.0f32, 0.0], &common::device()).unwrap();
    let loss = bt_loss(&chosen, &rejected).unwrap().to_scalar::<f32>().unwrap();
    assert!((loss - 50.0).abs() < 1e-4, "loss {loss}");
}

#[test]
fn label_noise_rate_within_tolerance() {
    for &rate in &[0.0, 0.1, 0.25, 0.5] {
        let mut labels = vec![true; 200_000];
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let flipped = apply_label_noise(&mut labels, rate, &mut rng);
        let frac = labels.iter().filter(|&&l| !l).count() as f64 / labels.len() as f64;
        assert_eq!(flipped, labels.iter().filter(|&&l| !l).count());
        // binomial std at n=2e5 is at most 0.0011; allow 5 std.
        assert!((frac - rate).abs() < 0.0056, "rate {rate}: flipped {frac}");
    }
}

#[test]
fn deterministic_labels_follow_gold_and_bradley_terry_labels_follow_sigmoid() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let a = vec![1.0f32, -1.0, 0.5];
    let b = vec![0.0f32, 0.0, 0.6];
    assert_eq!(label_pairs(&a, &b, LabelMode::Deterministic, &mut rng), vec![true, false, false]);
    // P(a ≻ b) = σ(1) = 0.7310585786 (python3: 1/(1+math.exp(-1))).
    let n = 100_000;
    let labels = label_pairs(&vec![1.0; n], &vec![0.0; n], LabelMode::BradleyTerry, &mut rng);
    let frac = labels.iter().filter(|&&l| l).count() as f64 / n as f64;
    assert!((frac - 0.731_058_6).abs() < 0.007, "BT win rate {frac}");
}

#[test]
fn r_squared_is_one_minus_sse_over_sst() {
    let t = [1.0f32, 2.0, 3.0, 4.0];
    assert_eq!(r_squared(&t, &t), 1.0);
    // SSE 1, SST 5 (mean 2.5: 2.25 + 0.25 + 0.25 + 2.25).
    assert!((r_squared(&[1.0, 2.0, 3.0, 5.0], &t) - 0.8).abs() < 1e-12);
    // The target's mean predicts nothing: 0.
    assert_eq!(r_squared(&[2.5; 4], &t), 0.0);
    // A perfectly correlated but rescaled predictor is not a perfect fit (a squared
    // correlation would say 1): p = 2t, SSE = 1 + 4 + 9 + 16 = 30 → 1 − 30/5 = −5.
    let doubled: Vec<f32> = t.iter().map(|x| 2.0 * x).collect();
    assert!((r_squared(&doubled, &t) + 5.0).abs() < 1e-12);
    // Reversed: SSE 9 + 1 + 1 + 9 = 20 → 1 − 4 = −3.
    assert!((r_squared(&[4.0, 3.0, 2.0, 1.0], &t) + 3.0).abs() < 1e-12);
    assert!(r_squared(&[1.0, 2.0], &[3.0, 3.0]).is_nan(), "constant target");
}

#[test]
fn duplicate_fraction_counts_repeats() {
    use goodhart::world::Response;
    let r = |t: &[u32], f: bool| Response { tokens: t.to_vec(), finished: f };
    let pool = vec![r(&[4, 5], true), r(&[4, 5], true), r(&[4, 5], false), r(&[6], true)];
    // distinct: [4,5]+end, [4,5] unfinished, [6] → 3 of 4 → duplicate fraction 0.25.
    assert!((goodhart::train::sft::duplicate_fraction(&pool) - 0.25).abs() < 1e-12);
}

#[test]
fn labeler_utility_hand_example() {
    // world defaults: 20 content tokens (ids 4..23), flattery ids 22 and 23, plain 4..21
    // (18 plain). prompt [4, 5, 6, 7]; their insight tokens are 7, 8, 9, 10.
    // Affinity set by hand: zero except A[token 4][token 8] = 2.0.
    // response [4, 4, 22, 8, 11] finished:
    //   coverage {4}: 0.5·1 = 0.5; length 5: −0.05·(5 − 10)² = −1.25;
    //   flattery f = 1: 1.5 − 0.6 = 0.9; insights {8}: 0.8; adjacent repeats (4,4): −0.7;
    //   affinity over distinct {4, 8, 11, 22}, mean over the 4 prompt tokens: 1.5·2.0/4 = 0.75
    //   total 1.0
    let exp = goodhart::Experiment::from_toml("name = \"u\"", std::path::Path::new("u.toml")).unwrap();
    let mut w = exp.world_config(0);
    w.affinity.iter_mut().for_each(|a| *a = 0.0);
    w.affinity[0 * w.content + (8 - 4)] = 2.0;
    let resp = goodhart::world::Response { tokens: vec![4, 4, 22, 8, 11], finished: true };
    let u = w.utility(&[4, 5, 6, 7], &resp);
    assert!((u - 1.0).abs() < 1e-9, "utility {u}");
    let unfinished = goodhart::world::Response { finished: false, ..resp };
    assert!((w.utility(&[4, 5, 6, 7], &unfinished) - (1.0 - 2.0)).abs() < 1e-9);
}

#[test]
fn affinity_is_seeded_standard_normal() {
    let w1 = goodhart::Experiment::from_toml("name = \"u\"\nseed = 3", std::path::Path::new("u.toml")).unwrap().world_config(0);
    let w2 = goodhart::Experiment::from_toml("name = \"u\"\nseed = 3", std::path::Path::new("u.toml")).unwrap().world_config(0);
    let w3 = goodhart::Experiment::from_toml("name = \"u\"\nseed = 4", std::path::Path::new("u.toml")).unwrap().world_config(0);
    assert_eq!(w1.affinity, w2.affinity);
    assert_ne!(w1.affinity, w3.affinity);
    let (m, s) = goodhart::model::reward::mean_std(&w1.affinity);
    // 360 draws: mean within 4/sqrt(360) ≈ 0.21, std within 0.2 of 1.
    assert!(m.abs() < 0.21 && (s - 1.0).abs() < 0.2, "mean {m} std {s}");
}

#[test]
fn encode_decode_and_end_index_agree() {
    let exp = goodhart::Experiment::from_toml("name = \"u\"", std::path::Path::new("u.toml")).unwrap();
    let w = exp.world_config(0);
    let done = goodhart::world::Response { tokens: vec![9, 10, 11], finished: true };
    let seq = w.encode(&[4, 5, 6, 7], &done);
    assert_eq!(seq.len(), w.seq_len());
    assert_eq!(&seq[..9], &[1, 4, 5, 6, 7, 2, 9, 10, 11]);
    assert_eq!(seq[w.end_index(&done)], goodhart::world::EOS);
    assert_eq!(w.decode_response(&seq), done);
    let cut = goodhart::world::Response { tokens: vec![9; w.max_response], finished: false };
    let seq = w.encode(&[4, 5, 6, 7], &cut);
    assert_eq!(w.end_index(&cut), w.seq_len() - 1);
    assert_eq!(w.decode_response(&seq), cut);
}

#[test]
fn gold_target_is_a_monotone_soft_clip() {
    use goodhart::train::rm::gold_target;
    // python3: 3*math.tanh(((u-1)/2)/3) for u in (1, 3, -9): 0, 0.964538, -2.793329
    assert!(gold_target(1.0, 1.0, 2.0).abs() < 1e-7);
    assert!((gold_target(3.0, 1.0, 2.0) - 0.964_538).abs() < 1e-4);
    assert!((gold_target(-9.0, 1.0, 2.0) + 2.793_329).abs() < 1e-4);
    let xs: Vec<f32> = (-200..200).map(|i| i as f32 * 0.1).collect();
    assert!(xs.windows(2).all(|w| gold_target(w[0], 0.0, 1.0) < gold_target(w[1], 0.0, 1.0)));
}
