//! Group-relative RL (GRPO, RLOO): the advantages against hand values, and both methods end
//! to end on the tiny world — PPO's sweep run for run, measured at update 0 on PPO's very
//! samples, training that moves the policy, their own tables, claims and a resumed rerun.

mod common;

use goodhart::methods::group::{advantages, Estimator, STD_EPS};
use goodhart::Experiment;

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
    }
}

#[test]
fn grpo_advantages_are_the_group_z_scores_and_ignore_the_kl() {
    // Two groups of 4: (1, 2, 3, 4) has mean 2.5 and population sd √1.25; (5, 5, 5, 5) has none.
    let scores = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0];
    let k1 = [9.0; 8];
    let (rewards, adv) = advantages(Estimator::Grpo, &scores, &k1, 4, 0.5);
    close(&rewards, &scores);
    let sd = 1.25f64.sqrt() + STD_EPS;
    close(&adv, &[-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn rloo_advantages_leave_one_out_of_a_kl_penalized_reward() {
    // Rewards 1 − 0.5·0, 2 − 0.5·1, 3 − 0, 4 − 0.5·1 = (1, 1.5, 3, 3.5); each minus the mean
    // of the other three.
    let (rewards, adv) = advantages(Estimator::Rloo, &[1.0, 2.0, 3.0, 4.0], &[0.0, 1.0, 0.0, 1.0], 4, 0.5);
    close(&rewards, &[1.0, 1.5, 3.0, 3.5]);
    close(&adv, &[1.0 - 8.0 / 3.0, 1.5 - 7.5 / 3.0, 3.0 - 6.0 / 3.0, 3.5 - 5.5 / 3.0]);
    // Leave-one-out advantages of a group sum to 0.
    assert!(adv.iter().sum::<f64>().abs() < 1e-12);
}

const GROUP: &str = "\n[grpo]\nenabled = true\ngroup = 4\nprompts = 4\nupdates = 4\nminibatch = 8\neval_every = 2\n\
                     \n[rloo]\nenabled = true\ngroup = 4\nprompts = 4\nupdates = 4\nminibatch = 8\neval_every = 2\n";

#[test]
fn a_bad_group_setting_is_named() {
    let text = format!("{}{}", common::TINY, GROUP.replacen("group = 4", "group = 1", 1));
    let e = Experiment::from_toml(&text, std::path::Path::new("g.toml")).unwrap_err().to_string();
    assert!(e.contains("grpo.group") && e.contains("at least 2"), "{e}");
    let text = format!("{}{}", common::TINY, GROUP.replacen("minibatch = 8", "minibatch = 17", 2));
    let e = Experiment::from_toml(&text, std::path::Path::new("g.toml")).unwrap_err().to_string();
    assert!(e.contains("grpo.minibatch") && e.contains("16"), "{e}");
    let text = format!("{}{}\nclip = 0.0\n", common::TINY, GROUP);
    let e = Experiment::from_toml(&text, std::path::Path::new("g.toml")).unwrap_err().to_string();
    assert!(e.contains("rloo.clip") && e.contains("(0, 1)"), "{e}");
}

#[test]
fn both_methods_run_ppos_sweep_from_ppos_first_samples_and_resume() {
    let exp = Experiment::from_toml(&format!("{}{GROUP}", common::TINY), std::path::Path::new("g.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = common::run_options(dir.path().join("out"), dir.path().join("store"));
    let s = goodhart::run::run(&exp, &opts).unwrap();
    let rows = &s.rows.curves;
    let of = |m: &str| rows.iter().filter(|r| r.method == m).collect::<Vec<_>>();
    let (ppo, grpo, rloo) = (of("ppo"), of("grpo"), of("rloo"));
    assert!(!ppo.is_empty());
    for mine in [&grpo, &rloo] {
        // Run for run and checkpoint for checkpoint: PPO's sweep, at steps 0, 2, 4.
        assert_eq!(mine.len(), ppo.len());
        for r in mine.iter() {
            let twin = ppo
                .iter()
                .find(|p| p.ensemble == r.ensemble && p.aggregator == r.aggregator && p.kl_penalty == r.kl_penalty && p.step == r.step)
                .unwrap_or_else(|| panic!("no PPO run like {} {:?}", r.method, r.aggregator));
            if r.step == Some(0) {
                // π_ref on PPO's evaluation prompts with PPO's stream: the same samples.
                assert_eq!((r.gold, r.measures.proxy, r.kl), (twin.gold, twin.measures.proxy, twin.kl), "{r:?}");
            }
        }
        // Training moved the policy: KL at the last checkpoint is not π_ref's 0.
        assert!(mine.iter().filter(|r| r.step == Some(4)).all(|r| r.kl.abs() > 1e-6), "{mine:?}");
    }
    let out = dir.path().join("out");
    for t in ["grpo_units.csv", "rloo_units.csv", "grpo_train.csv", "rloo_train.csv", "grpo_gold_noise0.00.svg", "rloo_beta_noise0.00.svg"] {
        assert!(out.join(t).is_file(), "{t} missing");
    }
    // 4 updates per run in the training table, one row per evaluation sample in the units.
    let train = std::fs::read_to_string(out.join("grpo_train.csv")).unwrap();
    assert_eq!(train.lines().count() - 1, 4 * grpo.iter().filter(|r| r.step == Some(0)).count());
    let claims = std::fs::read_to_string(out.join("conclusions.csv")).unwrap();
    assert!(claims.contains("GRPO: gold falls") && claims.contains("RLOO: gold falls"), "{claims}");
    // A second run makes nothing.
    let again = goodhart::run::run(&exp, &opts).unwrap();
    assert!(again.trained.is_empty(), "{:?}", again.trained);
    assert_eq!(again.rows.curves, s.rows.curves);
}
