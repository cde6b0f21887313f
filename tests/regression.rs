//! One test per known slip of the ensemble paper's public code (DESIGN.md), named after it.

use goodhart::stats::aggregate::Aggregator;
use goodhart::methods::bon::{curve, n_grid, LogFactorials, PoolView};
use goodhart::config::BonSpec;

#[test]
fn uwo_weight_of_zero_means_no_penalty_not_one() {
    let spec = BonSpec { uwo_lambdas: vec![0.0], ..Default::default() };
    let aggs = spec.aggregators(3);
    assert!(aggs.contains(&Aggregator::Uwo(0.0)), "{aggs:?}");
    let s = [0.0f32, 1.0, 5.0];
    assert_eq!(Aggregator::Uwo(0.0).apply(&s), Aggregator::Mean.apply(&s));
    let toml = "name = \"r\"\n[bon]\nuwo_lambdas = [0.0]";
    let exp = goodhart::Experiment::from_toml(toml, std::path::Path::new("r.toml")).unwrap();
    assert_eq!(exp.bon.uwo_lambdas, vec![0.0]);
}

#[test]
fn uwo_variance_is_the_population_variance_everywhere() {
    // k = 2, scores 0 and 2: population variance 1 (sample variance would be 2).
    assert_eq!(Aggregator::Uwo(1.0).apply(&[0.0, 2.0]), 0.0);
}

#[test]
fn ensemble_resorting_carries_gold_along() {
    // Member 0 agrees with gold, member 1 is its mirror image. If re-sorting by an
    // aggregate moved the proxy scores but not gold, both curves would be member 0's.
    let pool = 32;
    let gold: Vec<f32> = (0..pool).map(|i| i as f32 / 8.0).collect();
    let mirror: Vec<f32> = gold.iter().map(|g| -g).collect();
    let groups: Vec<u32> = (0..pool as u32).collect();
    let ones = vec![1.0f32; pool];
    let view = PoolView { prompts: 1, size: pool, gold: &gold, groups: &groups, length: &gold, distinct_ratio: &ones, heldout: None };
    let lf = LogFactorials::new(pool);
    let ns = n_grid(pool);
    let members: Vec<&[f32]> = vec![&gold, &mirror];
    let up = curve(Aggregator::Member(0), &members, view, &ns, &lf);
    let down = curve(Aggregator::Member(1), &members, view, &ns, &lf);
    assert!((up.last().unwrap().gold - 31.0 / 8.0).abs() < 1e-6);
    assert!(down.last().unwrap().gold.abs() < 1e-6);
    assert!(up.windows(2).all(|w| w[1].gold > w[0].gold));
    assert!(down.windows(2).all(|w| w[1].gold < w[0].gold));
    // Per-sample diagnostics travel with their sample too (length was set to gold here).
    assert!((up.last().unwrap().measures.length - 31.0 / 8.0).abs() < 1e-6);
    assert!((down.last().unwrap().measures.distinct_ratio - 1.0).abs() < 1e-9);
    // Each member's own score is read through the same order.
    assert!((down.last().unwrap().measures.members[1] - 0.0).abs() < 1e-6);
    assert!((down.last().unwrap().measures.members[0] - 0.0).abs() < 1e-6);
}

#[test]
fn results_keyed_by_n_carry_kl_columns() {
    // A pool of 4 samples, two of them the same response: the KL columns come from the
    // crate's best-of-n curve, and the table must carry them unchanged.
    let gold = [0.0f32, 1.0, 2.0, 1.0];
    let proxy = [0.3f32, 0.1, 0.9, 0.1];
    let groups = [0u32, 1, 2, 1];
    let ones = [1.0f32; 4];
    let view = PoolView { prompts: 1, size: 4, gold: &gold, groups: &groups, length: &ones, distinct_ratio: &ones, heldout: None };
    let points = curve(Aggregator::Member(0), &[&proxy], view, &n_grid(4), &LogFactorials::new(4));
    let pt = points.iter().find(|p| p.n == 4).unwrap();
    assert_eq!(pt.kl_bound, 4f64.ln() - 0.75);
    assert!(pt.kl_exact > 0.0 && pt.kl_exact < pt.kl_bound, "{} vs {}", pt.kl_exact, pt.kl_bound);
    let proxy = goodhart::train::proxy::ProxyCell {
        size: goodhart::config::ProxySizeSpec { name: "xs".into(), layers: 1, width: 8, heads: 1 },
        data_size: 1,
        noise: 0.0,
        member: 0,
        heldout: false,
        replicate: 0,
        source: goodhart::config::Source::Scratch,
    };
    let row = goodhart::methods::bon::method::point_row(pt.clone(), Aggregator::Member(0), &proxy, 1, 1, 4);
    assert_eq!((row.ensemble.as_str(), row.proxy_params, row.prompts, row.pool), ("xs/d1/n0.00", 1, 1, Some(4)));
    let df = goodhart::output::table::curve_frame(&[row]).unwrap();
    let f = |c: &str| df.column(c).unwrap().f64().unwrap().get(0).unwrap();
    assert_eq!((f("kl"), f("kl_bound"), f("kl_exact")), (pt.kl_bound, pt.kl_bound, pt.kl_exact));
    assert_eq!(f("sqrt_kl"), pt.kl_bound.sqrt());
    assert_eq!(df.column("n").unwrap().u64().unwrap().get(0), Some(4));
    assert_eq!(df.column("kl_kind").unwrap().str().unwrap().get(0), Some("bon_bound"));
}

#[test]
fn runs_with_different_seeds_do_not_share_a_results_folder() {
    // Covered end to end in smoke.rs (results_of_another_config_are_not_overwritten); here the
    // seed alone must change the config hash that guards the folder.
    let a = goodhart::Experiment::from_toml("name = \"r\"\nseed = 1", std::path::Path::new("a.toml")).unwrap();
    let b = goodhart::Experiment::from_toml("name = \"r\"\nseed = 2", std::path::Path::new("b.toml")).unwrap();
    assert_eq!(a.default_out(), b.default_out());
    assert_ne!(a.config_hash(), b.config_hash());
}
