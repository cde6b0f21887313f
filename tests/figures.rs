//! What the curve figures draw: the expected curve across replicates, its 95% band, the
//! replicates' KL spread (`goodhart::output::series`), checked against values worked by hand;
//! and the figures themselves: deterministic, and saying how many replicates they show.

mod common;

use goodhart::output::plot::{design_figures, figures};
use goodhart::output::series::{expected_series, replicate_interval, tick_label, Measure};
use goodhart::output::table::CurveRow;

/// Student's t 97.5% quantiles (tables): 1 and 2 degrees of freedom.
const T1: f64 = 12.706204736174698;
const T2: f64 = 4.302652729749464;

fn row(method: &str, replicate: u64, at: u64, kl: f64, gold: f64, proxy: f64) -> CurveRow {
    let bon = method == "bon";
    CurveRow {
        method: method.into(),
        aggregator: goodhart::stats::aggregate::Aggregator::Mean.into(),
        proxy_size: "a".into(),
        proxy_params: 1000,
        data_size: 100,
        label_noise: 0.0,
        ensemble: "a/d100/n0.00".into(),
        n: bon.then_some(at),
        step: (!bon).then_some(at),
        kl_penalty: (!bon).then_some(0.0),
        kl,
        kl_kind: if bon { "bon_bound" } else { "ppo_k1" }.into(),
        kl_k3: (!bon).then_some(kl.max(0.0)),
        kl_bound: bon.then_some(kl),
        kl_exact: bon.then_some(kl),
        sqrt_kl: kl.max(0.0).sqrt(),
        gold,
        gold_se: 0.25,
        measures: goodhart::stats::curve::Measures {
            proxy,
            members: vec![proxy],
            disagreement: 0.0,
            length: 5.0,
            distinct_ratio: 1.0,
            heldout: None,
        },
        gold_below_peak: 0.0,
        gold_below_peak_se: 0.0,
        prompts: 16,
        pool: bon.then_some(64),
        replicate,
    }
}

fn bound(n: u64) -> f64 {
    let n = n as f64;
    n.ln() - (n - 1.0) / n
}

/// Best-of-n rows of `golds[r][k]` at n = 1, 2, 4, … (proxy = 10 × gold).
fn bon_rows(golds: &[&[f64]]) -> Vec<CurveRow> {
    let mut rows = Vec::new();
    for (r, g) in golds.iter().enumerate() {
        for (k, &v) in g.iter().enumerate() {
            let n = 1u64 << k;
            rows.push(row("bon", r as u64, n, bound(n), v, 10.0 * v));
        }
    }
    rows
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn two_replicates_mean_and_band_by_hand() {
    let rows = bon_rows(&[&[0.0, 1.0, 0.5], &[0.0, 3.0, 1.5]]);
    let s = expected_series(&rows, Measure::Gold);
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!(s.replicates, 2);
    assert_eq!(s.points.iter().map(|p| p.at).collect::<Vec<_>>(), vec![1, 2, 4]);
    // n = 2: golds 1.0 and 3.0 → mean 2.0, sd √2, band 2 ± t(0.975, 1)·√2/√2.
    let p = &s.points[1];
    assert!(close(p.mean, 2.0), "{p:?}");
    let (lo, hi) = p.band.expect("two replicates have a band");
    assert!(close(lo, 2.0 - T1) && close(hi, 2.0 + T1), "{p:?}");
    // n = 4: golds 0.5 and 1.5 → 1.0 ± t·(1/√2)·… = 1 ± T1·0.5.
    let (lo, hi) = s.points[2].band.unwrap();
    assert!(close(s.points[2].mean, 1.0) && close(lo, 1.0 - 0.5 * T1) && close(hi, 1.0 + 0.5 * T1));
    // n = 1: both 0 → a band of width 0 at 0.
    assert_eq!(s.points[0].band, Some((0.0, 0.0)));
    // Best-of-n's x is sqrt of the KL bound of n, the same in every replicate (no spread).
    for p in &s.points {
        assert!(close(p.x, bound(p.at).sqrt()) && p.x_min == p.x_max, "{p:?}");
        assert_eq!(p.prompt_se, None, "a band, not one run's s.e., with two replicates");
    }
    // Each replicate's own curve, in order of n.
    assert_eq!(s.curves.len(), 2);
    assert_eq!(s.curves[1].points.iter().map(|p| p.1).collect::<Vec<_>>(), vec![0.0, 3.0, 1.5]);
    // The proxy series is the proxy column's.
    let p = expected_series(&rows, Measure::Proxy);
    assert!(close(p[0].points[1].mean, 20.0));
    let (lo, _) = p[0].points[1].band.unwrap();
    assert!(close(lo, 20.0 - 10.0 * T1));
}

#[test]
fn three_replicates_mean_and_band_by_hand() {
    let rows = bon_rows(&[&[0.0, 1.0], &[0.0, 2.0], &[0.0, 6.0]]);
    let s = &expected_series(&rows, Measure::Gold)[0];
    assert_eq!(s.replicates, 3);
    // 1, 2, 6: mean 3, sample variance (4 + 1 + 9)/2 = 7, half-width t(0.975, 2)·√7/√3.
    let p = &s.points[1];
    let half = T2 * 7f64.sqrt() / 3f64.sqrt();
    assert!(close(p.mean, 3.0));
    let (lo, hi) = p.band.unwrap();
    assert!(close(lo, 3.0 - half) && close(hi, 3.0 + half), "{p:?} vs ±{half}");
    assert_eq!(replicate_interval(&[1.0, 2.0, 6.0]), (p.mean, p.band));
}

#[test]
fn one_replicate_is_that_curve_without_a_band() {
    let rows = bon_rows(&[&[0.0, 1.0, 0.5]]);
    let s = &expected_series(&rows, Measure::Gold)[0];
    assert_eq!(s.replicates, 1);
    assert_eq!(s.points.iter().map(|p| p.mean).collect::<Vec<_>>(), vec![0.0, 1.0, 0.5]);
    assert!(s.points.iter().all(|p| p.band.is_none() && p.prompt_se == Some(0.25)));
    // The proxy has no per-prompt s.e. in the table: nothing drawn around it.
    let p = &expected_series(&rows, Measure::Proxy)[0];
    assert!(p.points.iter().all(|p| p.band.is_none() && p.prompt_se.is_none()));
    assert_eq!(replicate_interval(&[4.0]), (4.0, None));
}

#[test]
fn ppo_points_sit_at_sqrt_of_the_mean_kl_in_step_order() {
    // Two replicates at steps 0, 10, 20, listed out of order; replicate 1's KL turns back
    // and its step-0 KL dips below 0 (k1 sampling noise, clamped at 0 as the conclusions do).
    let rows = vec![
        row("ppo", 1, 20, 0.8, 0.4, 2.0),
        row("ppo", 0, 10, 0.5, 1.0, 1.0),
        row("ppo", 1, 0, -0.02, 0.0, 0.0),
        row("ppo", 0, 0, 0.0, 0.0, 0.0),
        row("ppo", 0, 20, 1.0, 0.6, 3.0),
        row("ppo", 1, 10, 1.5, 2.0, 1.5),
        // A checkpoint only replicate 0 reached: in its own curve, not in the mean.
        row("ppo", 0, 30, 1.2, 0.2, 4.0),
    ];
    let s = &expected_series(&rows, Measure::Gold)[0];
    assert_eq!(s.replicates, 2);
    assert_eq!(s.points.iter().map(|p| p.at).collect::<Vec<_>>(), vec![0, 10, 20]);
    // x = sqrt(mean of the replicates' KL), not the mean of their square roots.
    let xs: Vec<f64> = s.points.iter().map(|p| p.x).collect();
    assert!(close(xs[0], 0.0) && close(xs[1], 1.0) && close(xs[2], 0.9f64.sqrt()), "{xs:?}");
    assert!(!close(xs[1], (0.5f64.sqrt() + 1.5f64.sqrt()) / 2.0));
    // In step order although the mean KL falls from step 10 to 20.
    assert!(xs[2] < xs[1]);
    // The KL spread: the replicates' smallest and largest sqrt(KL).
    let p = &s.points[1];
    assert!(close(p.x_min, 0.5f64.sqrt()) && close(p.x_max, 1.5f64.sqrt()), "{p:?}");
    assert!(close(s.points[2].x_min, 0.8f64.sqrt()) && close(s.points[2].x_max, 1.0));
    assert!(close(p.mean, 1.5));
    let (lo, hi) = p.band.unwrap();
    assert!(close(lo, 1.5 - 0.5 * T1) && close(hi, 1.5 + 0.5 * T1));
    // Each replicate's curve keeps all its points, in step order, at its own sqrt(KL).
    assert_eq!(s.curves[0].points.len(), 4);
    assert_eq!(s.curves[1].points.iter().map(|p| p.1).collect::<Vec<_>>(), vec![0.0, 2.0, 0.4]);
    assert!(close(s.curves[1].points[0].0, 0.0) && close(s.curves[1].points[2].0, 0.8f64.sqrt()));
}

#[test]
fn lines_are_kept_apart_by_aggregator_and_beta() {
    let mut rows = bon_rows(&[&[0.0, 1.0], &[0.0, 3.0]]);
    let mut other = bon_rows(&[&[0.0, 5.0], &[0.0, 7.0]]);
    for r in &mut other {
        r.aggregator = goodhart::stats::aggregate::Aggregator::Wco.into();
    }
    rows.extend(other);
    let s = expected_series(&rows, Measure::Gold);
    assert_eq!(s.iter().map(|s| s.line.aggregator.name()).collect::<Vec<_>>(), vec!["mean", "wco"]);
    assert!(close(s[0].points[1].mean, 2.0) && close(s[1].points[1].mean, 6.0));
}

#[test]
fn tick_labels_never_read_negative_zero() {
    assert_eq!(tick_label(-0.0), "0.0");
    assert_eq!(tick_label(-1e-12), "0.0");
    assert_eq!(tick_label(0.0), "0.0");
    assert_eq!(tick_label(-0.5), "-0.5");
    assert_eq!(tick_label(2.0), "2.0");
    assert_eq!(tick_label(-10.0), "-10.0");
}

/// Best-of-n and PPO rows of three replicates that differ.
fn three_replicates() -> Vec<CurveRow> {
    let mut rows = bon_rows(&[&[0.0, 1.0, 1.2, 0.9], &[0.0, 1.4, 1.5, 1.0], &[0.0, 0.8, 1.0, 0.6]]);
    for r in 0..3u64 {
        for (k, step) in [0u64, 10, 20, 30].iter().enumerate() {
            let kl = k as f64 * (0.4 + 0.1 * r as f64);
            rows.push(row("ppo", r, *step, kl, k as f64 * 0.3 - (k * k) as f64 * 0.05 * (r + 1) as f64, k as f64));
        }
    }
    rows
}

fn drawn(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.insert(p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap());
    }
    out
}

#[test]
fn figures_say_how_many_replicates_and_draw_the_same_bytes_twice() {
    let rows = three_replicates();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stems = figures(&rows, a.path()).unwrap();
    assert_eq!(
        stems,
        ["bon_gold_noise0.00", "bon_proxy_noise0.00", "ppo_gold_noise0.00", "ppo_proxy_noise0.00", "ppo_beta_noise0.00"]
    );
    figures(&rows, b.path()).unwrap();
    let (first, second) = (drawn(a.path()), drawn(b.path()));
    assert_eq!(first.len(), 10);
    assert!(first == second, "the same rows drew different files");
    for stem in &stems {
        let svg = String::from_utf8(first[&format!("{stem}.svg")].clone()).unwrap();
        assert!(svg.contains("mean of 3 replicates"), "{stem}.svg does not say how many replicates");
        assert!(svg.contains("95% band across replicates"), "{stem}.svg does not name its band");
        assert!(svg.contains("each replicate"), "{stem}.svg does not name its faint curves");
        let texts = common::svg_texts(&svg);
        assert!(texts.iter().any(|t| t == "0.0"), "{stem}.svg: no tick 0.0 in {texts:?}");
        assert!(!texts.iter().any(|t| t.starts_with("-0.0")), "{stem}.svg: {texts:?}");
        assert!(!svg.contains("replicate 0"), "{stem}.svg");
        if stem.starts_with("ppo") {
            assert!(svg.contains("min–max of the replicates"), "{stem}.svg: KL spread unnamed");
        }
    }
    // One replicate: that run, its s.e. over prompts, no band.
    let one: Vec<CurveRow> = rows.into_iter().filter(|r| r.replicate == 0).collect();
    let c = tempfile::tempdir().unwrap();
    design_figures(&one, "bon", c.path()).unwrap();
    let svg = std::fs::read_to_string(c.path().join("bon_gold_noise0.00.svg")).unwrap();
    assert!(svg.contains("one replicate") && svg.contains("s.e. over prompts") && !svg.contains("95% band"));
}

