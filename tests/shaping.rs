//! Reward shaping: each shaping against hand values; a shaped aggregator's label round-trips
//! through its table name and λ; shaped runs get their own ids and recipes while unshaped
//! ones keep theirs, and the resolved config of a study without shaping does not mention it.

mod common;

use goodhart::cell::CellKind;
use goodhart::methods::ppo::cell::ppo_cells;
use goodhart::stats::aggregate::{label, member_index, Aggregator};
use goodhart::stats::shaping::{split, Objective, Shaper, Shaping};
use goodhart::Experiment;

fn shaper(shaping: Shaping) -> Shaper {
    Shaper { shaping, clip: 1.0, length_penalty: 0.05 }
}

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() < 1e-6
}

#[test]
fn each_shaping_matches_hand_values() {
    // σ(1) = 1/(1 + e^−1) = 0.731058578630…; σ(−2) = 0.119202922022…
    assert!(close(shaper(Shaping::Par).apply(1.5, 0.5, 7), 0.731_058_578_630));
    assert!(close(shaper(Shaping::Par).apply(-1.0, 1.0, 7), 0.119_202_922_022));
    assert_eq!(shaper(Shaping::Par).apply(0.3, 0.3, 7), 0.5);
    assert!(close(shaper(Shaping::Center).apply(2.0, 0.5, 7), 1.5));
    assert_eq!(shaper(Shaping::Clip).apply(3.0, 9.0, 7), 1.0);
    assert_eq!(shaper(Shaping::Clip).apply(-3.0, 9.0, 7), -1.0);
    assert_eq!(shaper(Shaping::Clip).apply(0.25, 9.0, 7), 0.25);
    // 1.0 − 0.05·10 = 0.5; no length, no penalty.
    assert!(close(shaper(Shaping::Length).apply(1.0, 9.0, 10), 0.5));
    assert_eq!(shaper(Shaping::Length).apply(1.0, 9.0, 0), 1.0);
    // None returns the score itself, bit for bit (an unshaped run's rewards are unchanged).
    for r in [0.1f32, -7.25, 1e-7, f32::MAX] {
        assert_eq!(shaper(Shaping::None).apply(r, 9.0, 7).to_bits(), r.to_bits());
    }
    assert!(Shaping::Par.reads_reference() && Shaping::Center.reads_reference());
    assert!(!Shaping::None.reads_reference() && !Shaping::Clip.reads_reference() && !Shaping::Length.reads_reference());
}

#[test]
fn shaped_labels_round_trip_through_their_name_and_lambda() {
    for (objective, name, lambda, want) in [
        (Objective { aggregator: Aggregator::Mean, shaping: Shaping::Par }, "mean+par", None, "mean+par"),
        (Objective { aggregator: Aggregator::Member(0), shaping: Shaping::Par }, "member0+par", None, "member0+par"),
        (Objective { aggregator: Aggregator::Uwo(0.1), shaping: Shaping::Clip }, "uwo+clip", Some(0.1), "uwo(0.1)+clip"),
        (Objective::from(Aggregator::Uwo(0.5)), "uwo", Some(0.5), "uwo(0.5)"),
        (Objective::from(Aggregator::Wco), "wco", None, "wco"),
    ] {
        assert_eq!((objective.name(), objective.lambda(), objective.label()), (name.to_string(), lambda, want.to_string()));
        assert_eq!(Objective::from_parts(name, lambda), Some(objective), "{name}");
        // The units tables carry the name and λ; the claims read their label back.
        assert_eq!(label(name, lambda), want);
    }
    assert_eq!(split("uwo(0.1)+par"), ("uwo(0.1)", Some("par")));
    assert_eq!(split("member3"), ("member3", None));
    // A shaped member is no plain single member: it pools as `single+par`, apart.
    assert_eq!(member_index("member0+par"), None);
    assert_eq!(Objective { aggregator: Aggregator::Member(0), shaping: Shaping::Par }.member(), None);
    assert_eq!(Objective::from(Aggregator::Member(2)).member(), Some(2));
    for bad in ["mean+bogus", "mean+none", "bogus+par", "mean+par+clip"] {
        assert_eq!(Objective::from_parts(bad, None), None, "{bad}");
    }
    // Each aggregator's shaped runs list right after it.
    let mean = Objective::from(Aggregator::Mean);
    let mean_par = Objective { aggregator: Aggregator::Mean, shaping: Shaping::Par };
    let wco = Objective::from(Aggregator::Wco);
    assert!(mean.order(&mean_par).is_lt() && mean_par.order(&wco).is_lt());
}

fn tiny_shaped(shaping: &str) -> Experiment {
    let text = common::tiny_with("eval_prompts = 8", &format!("eval_prompts = 8\nshaping = {shaping}\nshaping_clip = 0.5"));
    Experiment::from_toml(&text, std::path::Path::new("shaped.toml")).unwrap()
}

#[test]
fn shaped_runs_have_their_own_ids_and_recipes_and_unshaped_runs_keep_theirs() {
    let plain = common::tiny();
    let shaped = tiny_shaped(r#"["none", "par", "clip"]"#);
    let grid = goodhart::train::proxy::proxy_cells(&plain, 0);
    let (before, after) = (ppo_cells(&plain, &grid), ppo_cells(&shaped, &grid));
    assert_eq!(after.len(), 3 * before.len());
    assert_eq!(shaped.ppo.run_count(&shaped.proxy), after.len());
    for run in &before {
        let same = after.iter().find(|r| r.id() == run.id()).expect("the unshaped run is still planned");
        assert_eq!(same.shaping, Shaping::None);
        assert_eq!(same.recipe(&shaped), run.recipe(&plain), "{}", run.id());
    }
    let ids: Vec<String> = after.iter().map(|r| r.id()).collect();
    assert!(ids.contains(&"ppo/a/d40/n0.00/mean+par/b0.1".to_string()), "{ids:?}");
    assert!(ids.contains(&"ppo/a/d40/n0.00/member0+clip/b0".to_string()), "{ids:?}");
    for run in after.iter().filter(|r| r.shaping != Shaping::None) {
        let recipe = run.recipe(&shaped);
        assert_eq!(recipe["shaping"], serde_json::json!(run.shaping.name()), "{}", run.id());
        assert_eq!(recipe.get("shaping_clip").is_some(), run.shaping == Shaping::Clip, "{}", run.id());
        assert!(recipe["settings"].get("shaping").is_none() && recipe.get("length_penalty").is_none());
    }
    // The group-relative methods run the same sweep and record the same shaping.
    let group = goodhart::methods::group::cell::GroupCell {
        estimator: goodhart::methods::group::Estimator::Rloo,
        run: after.iter().find(|r| r.shaping == Shaping::Par).unwrap().clone(),
    };
    assert!(group.id().starts_with("rloo/") && group.id().contains("+par/"), "{}", group.id());
    assert_eq!(group.recipe(&shaped)["shaping"], serde_json::json!("par"));
    // A resolved config without shaping is what it was before shaping existed.
    assert!(!plain.to_toml().contains("shaping") && !plain.to_toml().contains("length_penalty"));
    assert!(shaped.to_toml().contains("shaping_clip = 0.5"));
}

#[test]
fn par_and_center_price_their_reference_samples_and_the_others_do_not() {
    let plain = common::tiny();
    let grid = goodhart::train::proxy::proxy_cells(&plain, 0);
    let seconds = |shaping: &str| -> f64 {
        let exp = tiny_shaped(&format!("[\"{shaping}\"]"));
        ppo_cells(&exp, &grid).iter().map(|r| r.work(&exp).seconds()).sum()
    };
    let none = seconds("none");
    assert_eq!(seconds("clip"), none);
    assert_eq!(seconds("length"), none);
    assert!(seconds("par") > none && seconds("par") == seconds("center"));
}

#[test]
fn a_shaped_study_runs_and_its_report_reads_back_from_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let text = common::tiny_with("eval_prompts = 8", "eval_prompts = 8\nshaping = [\"none\", \"par\"]");
    std::fs::write(dir.path().join("shaped.toml"), text).unwrap();
    let (ok, _, err) = common::goodhart(&["run", "shaped.toml", "--out", "out", "--store", "store"], dir.path());
    assert!(ok, "{err}");
    let out = dir.path().join("out");
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let curves = read("curves.csv");
    assert!(curves.contains("ppo,mean+par,") && curves.contains("ppo,member0+par,"), "{curves}");
    let claims = read("conclusions.csv");
    for claim in ["PPO: single+par keeps more gold than single at the last point", "PPO: mean+par keeps more gold than mean at the last point"] {
        assert!(claims.contains(claim), "no {claim:?}");
    }
    let (report, appendix) = (read("report.md"), read("report_appendix.md"));
    assert!(report.contains("`+par` σ(r − r_ref)") && appendix.contains("single+par"));
    // The labels read back from the tables alone give the same claims and report.
    let (ok, _, err) = common::goodhart(&["report", "out"], dir.path());
    assert!(ok, "{err}");
    assert_eq!((read("conclusions.csv"), read("report.md")), (claims, report));
}
