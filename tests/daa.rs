//! Direct alignment (DPO, IPO, χPO): the losses and the checkpoint schedule against hand
//! values, bad settings named, and the three methods end to end on the tiny world — on the
//! ensemble's own pairs, measured at step 0 on PPO's very samples, learning the pairs'
//! margin, with their own tables and claims.

mod common;

use candle_core::{Device, Tensor};
use goodhart::methods::daa::{checkpoint_steps, Loss};
use goodhart::Experiment;

fn loss(l: Loss, zw: f32, zl: f32, beta: f64, clip: f64) -> f64 {
    let t = |v: f32| Tensor::from_slice(&[v], 1, &Device::Cpu).unwrap();
    l.of(&t(zw), &t(zl), beta, clip).unwrap().to_scalar::<f32>().unwrap() as f64
}

fn near(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
}

#[test]
fn the_losses_match_their_formulas() {
    let softplus = |x: f64| (1.0 + (-x).exp()).ln();
    // DPO: −ln σ(β·h), h = z_w − z_l.
    near(loss(Loss::Dpo, 1.0, 0.0, 0.5, 10.0), softplus(0.5));
    near(loss(Loss::Dpo, -3.0, 1.0, 2.0, 10.0), softplus(-8.0));
    // IPO: (h − 1/(2β))², zero at its target margin.
    near(loss(Loss::Ipo, 1.0, 0.0, 0.5, 10.0), 0.0);
    near(loss(Loss::Ipo, 0.5, 0.0, 0.5, 10.0), 0.25);
    // χPO: −ln σ(clip(β·[φ(z_w) − φ(z_l)], ±c)), φ(z) = e^z + z.
    near(loss(Loss::Chipo, 0.0, 0.0, 0.1, 10.0), 2f64.ln());
    near(loss(Loss::Chipo, 1.0, 0.0, 0.1, 10.0), softplus(0.1 * std::f64::consts::E));
    // The clip holds the margin at c: a huge margin costs softplus(c), not 0.
    near(loss(Loss::Chipo, 5.0, 0.0, 10.0, 3.0), softplus(3.0));
    near(loss(Loss::Chipo, 0.0, 5.0, 10.0, 3.0), softplus(-3.0));
}

#[test]
fn checkpoints_fall_inside_every_epoch() {
    assert_eq!(checkpoint_steps(5, 2, 2), [0, 3, 5, 8, 10]);
    assert_eq!(checkpoint_steps(3, 1, 4), [0, 1, 2, 3]);
    assert_eq!(checkpoint_steps(10, 1, 1), [0, 10]);
}

const DAA: &str = "\n[daa]\nenabled = true\nbetas = [0.1, 0.5]\nepochs = 2\nbatch = 8\nevals_per_epoch = 2\n";

fn err(extra: &str) -> String {
    let text = format!("{}{}", common::TINY, extra);
    Experiment::from_toml(&text, std::path::Path::new("d.toml")).unwrap_err().to_string()
}

#[test]
fn bad_direct_alignment_settings_are_named() {
    let e = err(&DAA.replace("epochs = 2", "losses = [\"dpo\", \"kto\"]"));
    assert!(e.contains("daa.losses[1]") && e.contains("kto"), "{e}");
    let e = err(&DAA.replace("[0.1, 0.5]", "[0.1, 0.0]"));
    assert!(e.contains("daa.betas[1]") && e.contains("β > 0"), "{e}");
    let e = err(&DAA.replace("epochs = 2", "data_sizes = [41]"));
    assert!(e.contains("daa.data_sizes[0]") && e.contains("41"), "{e}");
}

#[test]
fn three_losses_learn_the_ensembles_pairs_and_are_measured_like_ppo() {
    let exp = Experiment::from_toml(&format!("{}{DAA}", common::TINY), std::path::Path::new("d.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = common::run_options(dir.path().join("out"), dir.path().join("store"));
    let s = goodhart::run::run(&exp, &opts).unwrap();
    let rows = &s.rows.curves;
    let ppo0 = rows
        .iter()
        .find(|r| r.method == "ppo" && r.step == Some(0))
        .expect("a PPO checkpoint at step 0");
    for m in ["dpo", "ipo", "chipo"] {
        let mine: Vec<_> = rows.iter().filter(|r| r.method == m).collect();
        // 2 β × (step 0 + 2 checkpoints × 2 epochs), all `direct`.
        assert_eq!(mine.len(), 2 * 5, "{m}");
        for r in &mine {
            assert_eq!(r.aggregator, goodhart::stats::aggregate::Aggregator::Direct.into());
            if r.step == Some(0) {
                // π_ref on PPO's evaluation prompts and stream: PPO's very samples.
                assert_eq!((r.gold, r.kl), (ppo0.gold, ppo0.kl), "{m}");
            }
        }
    }
    let out = dir.path().join("out");
    for m in ["dpo", "ipo", "chipo"] {
        let train = std::fs::read_to_string(out.join(format!("{m}_train.csv"))).unwrap();
        let header: Vec<&str> = train.lines().next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let lines: Vec<Vec<&str>> = train.lines().skip(1).map(|l| l.split(',').collect()).collect();
        assert_eq!(lines.len(), 2 * 5, "{m}");
        // Before training the margin is 0; after two epochs on its pairs it is positive.
        for run in lines.chunks(5) {
            let margin = |l: &Vec<&str>| l[col("margin")].parse::<f64>().unwrap();
            assert_eq!(margin(&run[0]), 0.0, "{m}");
            assert!(margin(&run[4]) > 0.0, "{m}: the margin of its training pairs did not grow: {run:?}");
        }
        assert!(out.join(format!("{m}_units.csv")).is_file());
    }
    let claims = std::fs::read_to_string(out.join("conclusions.csv")).unwrap();
    assert!(claims.contains("DPO: gold falls") && claims.contains("χPO: gold falls"), "{claims}");
}
