//! `goodhart report`: reproducible byte for byte, works from the tables alone, fails on one
//! line naming the file, recovers known fit coefficients, and carries hand-computed regrets
//! through to `stopping.csv`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use goodhart::output::plot::figure_paths;
use goodhart::output::report::report;
use goodhart::run::run;
use goodhart::output::table::{self, CurveRow, RmRow};
use polars::prelude::*;
use rand::{Rng, SeedableRng};

/// Runs the tiny experiment into `dir/results/tiny` and returns that folder.
fn tiny_folder(dir: &Path) -> PathBuf {
    let out = dir.join("results/tiny");
    let opts = common::run_options(out.clone(), dir.join("store"));
    run(&common::tiny(), &opts).expect("tiny run");
    out
}

fn read_all(dir: &Path, names: &[String]) -> BTreeMap<String, Vec<u8>> {
    names
        .iter()
        .map(|n| {
            (
                n.clone(),
                std::fs::read(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}")),
            )
        })
        .collect()
}

#[test]
fn report_is_byte_for_byte_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let out = tiny_folder(dir.path());
    let first = report(&out, false).expect("report");
    for f in [
        "report.md",
        "report_appendix.md",
        "fits.parquet",
        "fits.csv",
        "scaling.csv",
        "stopping.csv",
        "aggregators.csv",
        "conclusions.csv",
        "conclusions.parquet",
    ] {
        assert!(
            first.written.contains(&f.to_string()),
            "{f} not written: {:?}",
            first.written
        );
    }
    let before = read_all(&out, &first.written);
    for name in &first.written {
        std::fs::remove_file(out.join(name)).unwrap();
    }
    let second = report(&out, false).expect("second report");
    assert_eq!(first, second);
    let after = read_all(&out, &second.written);
    for (name, bytes) in &before {
        assert!(
            after[name] == *bytes,
            "{name} differs between two reports of the same tables"
        );
    }
    // Over the existing outputs, too: nothing is appended or left half-written.
    let third = report(&out, false).expect("third report");
    assert_eq!(read_all(&out, &third.written), before);
    let md = String::from_utf8(before["report.md"].clone()).unwrap();
    let appendix = String::from_utf8(before["report_appendix.md"].clone()).unwrap();
    // The report: the answer first, what it means and the next step, the exploratory claims
    // in brief, the figures and acceptance; the detail in the appendix, each part once.
    for section in [
        "# goodhart report: tiny",
        "## The answer",
        "**What was studied.**",
        "**one replicate**",
        "**What it means.**",
        "## Exploratory claims, in brief",
        "## What was measured",
        "## Figures",
        "## Acceptance",
        "## Details",
    ] {
        assert!(md.contains(section), "report.md lacks {section:?}");
    }
    for section in ["## All claims", "## Reward models", "## Functional-form fits", "## Gold-free stopping rules", "## Aggregators at matched KL", "## Acceptance lists"] {
        assert!(appendix.contains(section), "report_appendix.md lacks {section:?}");
        assert!(!md.contains(section), "report.md repeats {section:?}");
    }
    // It says how long it is, and the count is right to two significant figures.
    let words = |s: &str| s.split_whitespace().count() as f64;
    let said = md.lines().find(|l| l.starts_with("This page is about ")).expect("the length line");
    let n: f64 = said["This page is about ".len()..].split(' ').next().unwrap().replace(',', "").parse().unwrap();
    assert!((n - words(&md)).abs() <= 0.1 * words(&md), "{said} vs {} words", words(&md));
    assert!(md.contains("seed 7"), "manifest seed missing");
    // The figures section says what the curve figures draw, and over how many replicates.
    let figs = &md[md.find("## Figures").expect("a Figures section")..];
    assert!(figs.contains("**expected curve across replicates** (best-of-n: one replicate; PPO: one replicate)"), "{figs}");
    assert!(figs.contains("95% Student-t interval across replicates") && figs.contains("faint"), "{figs}");
    // The conclusions come first, and every claim kind is there.
    assert!(md.find("## The answer") < md.find("## What was measured"));
    let c = table::read_parquet(&out.join("conclusions.parquet")).unwrap();
    let kinds = column_str(&c, "kind");
    for k in ["overopt", "gap", "stop"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} claim: {kinds:?}");
    }
    assert!(column_str(&c, "interval_over").iter().all(|o| o == "units of one replicate"));
}

#[test]
fn conclusions_with_replicates_take_their_intervals_across_replicates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results/tiny2");
    let mut exp = common::tiny();
    exp.replicates = 2;
    run(&exp, &common::run_options(out.clone(), dir.path().join("store"))).expect("tiny run, 2 replicates");
    let c = table::read_parquet(&out.join("conclusions.parquet")).unwrap();
    assert!(c.height() > 0);
    assert!(column_str(&c, "interval_over").iter().all(|o| o == "replicates"));
    let reps = c.column("replicates").unwrap().u64().unwrap().into_no_null_iter().collect::<Vec<_>>();
    let (lo, est, hi) = (column_f64(&c, "ci_low"), column_f64(&c, "estimate"), column_f64(&c, "ci_high"));
    let verdict = column_str(&c, "verdict");
    assert!(reps.iter().filter(|&&r| r == 2).count() > c.height() / 2, "{reps:?}");
    let kind = column_str(&c, "kind");
    for i in 0..c.height() {
        if lo[i].is_some_and(f64::is_finite) {
            assert_eq!(reps[i], 2, "row {i}");
            assert!(lo[i].unwrap() <= est[i].unwrap() && est[i].unwrap() <= hi[i].unwrap(), "row {i}");
        } else {
            // Measurable in one replicate only (e.g. a matched KL one pair of runs never
            // reached), or a peak statistic of the expected curve with only 2 replicates:
            // no interval, never a verdict.
            assert!(reps[i] == 1 || matches!(kind[i].as_str(), "overopt" | "peak" | "gap"), "row {i}: {}", kind[i]);
            assert_eq!(verdict[i], "inconclusive", "row {i}");
        }
    }
    // Two replicates are too few to choose the expected curve's peak without the one that
    // measures it: the falls carry an estimate and no verdict.
    let notes = column_str(&c, "note");
    assert!((0..c.height()).filter(|&i| kind[i] == "overopt").all(|i| notes[i].contains("too few")));
    // Recomputed from the saved unit tables alone, the same bytes.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["rm.parquet", "curves.parquet", "bon_units.parquet", "ppo_units.parquet", "manifest.json", "config.resolved.toml"] {
        std::fs::copy(out.join(f), bare.join(f)).unwrap();
    }
    report(&bare, false).unwrap();
    assert_eq!(std::fs::read(bare.join("conclusions.csv")).unwrap(), std::fs::read(out.join("conclusions.csv")).unwrap());
}

#[test]
fn report_works_from_the_tables_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = tiny_folder(dir.path());
    for (sub, files) in [
        ("with_manifest", &["rm.parquet", "curves.parquet", "manifest.json"][..]),
        ("bare", &["rm.parquet", "curves.parquet"][..]),
    ] {
        let only = dir.path().join(sub);
        std::fs::create_dir_all(&only).unwrap();
        for f in files {
            std::fs::copy(out.join(f), only.join(f)).unwrap();
        }
        let s = report(&only, false).unwrap_or_else(|e| panic!("{sub}: {e}"));
        assert!(s.curves > 0);
        for f in [
            "report.md",
            "fits.parquet",
            "scaling.parquet",
            "stopping.parquet",
            "aggregators.parquet",
        ] {
            assert!(only.join(f).is_file(), "{sub}: {f} missing");
        }
        // The curve figures are drawn from curves.parquet and embedded.
        let md = std::fs::read_to_string(only.join("report.md")).unwrap();
        for p in [figure_paths(&only, "bon", 0.0), figure_paths(&only, "ppo", 0.0)].concat() {
            assert!(p.is_file(), "{sub}: {} not drawn", p.display());
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert!(s.written.contains(&name), "{sub}: {name} not in {:?}", s.written);
            if name.ends_with(".png") {
                assert!(md.contains(&format!("]({name})")), "{sub}: {name} not embedded");
            }
        }
        if sub == "bare" {
            assert!(md.contains("No `manifest.json`"));
        }
        let fits = table::read_parquet(&only.join("fits.parquet")).unwrap();
        assert_eq!(fits.height(), 2 * s.curves, "one gold and one proxy fit per curve");
    }
}

#[test]
fn missing_or_malformed_curves_table_is_a_one_line_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tables(d, &[hand_curve("a")]);
    std::fs::remove_file(d.join("curves.parquet")).unwrap();
    let msg = report(d, false).expect_err("no curves table").to_string();
    assert!(msg.contains("curves.parquet") && !msg.contains('\n'), "{msg}");
    assert!(!d.join("report.md").exists(), "report.md written despite the error");

    std::fs::write(d.join("curves.parquet"), b"not a parquet file").unwrap();
    let msg = report(d, false).expect_err("garbage curves table").to_string();
    assert!(msg.contains("curves.parquet") && !msg.contains('\n'), "{msg}");

    // A table without a required column names the file and the column.
    let mut df = table::curve_frame(&hand_curve("a")).unwrap().drop("gold").unwrap();
    table::write(&mut df, d, "curves").unwrap();
    let msg = report(d, false).expect_err("no gold column").to_string();
    assert!(
        msg.contains("curves.parquet") && msg.contains("gold") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(!d.join("report.md").exists());
}

// ------------------------------------------------------------------- synthetic tables

/// A best-of-n point with everything a report reads.
#[allow(clippy::too_many_arguments)]
fn point(
    aggregator: &str,
    ensemble: &str,
    n: u64,
    gold: f64,
    proxy: f64,
    members: Vec<f64>,
    disagreement: f64,
    heldout: Option<f64>,
) -> CurveRow {
    let kl = (n as f64).ln() - (n as f64 - 1.0) / n as f64;
    CurveRow {
        method: "bon".into(),
        aggregator: goodhart::stats::shaping::Objective::from_parts(aggregator, None).expect("an aggregator without λ"),
        proxy_size: "a".into(),
        proxy_params: 1000,
        data_size: 100,
        label_noise: 0.0,
        ensemble: ensemble.into(),
        n: Some(n),
        step: None,
        kl_penalty: None,
        kl,
        kl_kind: "bon_bound".into(),
        kl_k3: None,
        kl_bound: Some(kl),
        kl_exact: Some(kl),
        sqrt_kl: kl.sqrt(),
        gold,
        gold_se: 0.01,
        measures: goodhart::stats::curve::Measures {
            proxy,
            members,
            disagreement,
            length: 5.0,
            distinct_ratio: 1.0,
            heldout,
        },
        gold_below_peak: 0.0,
        gold_below_peak_se: 0.0,
        prompts: 16,
        pool: Some(1 << 12),
        replicate: 0,
    }
}

/// Fills `gold_below_peak` from the curve's own peak, with a paired s.e. of 0.01.
fn with_fall(mut rows: Vec<CurveRow>) -> Vec<CurveRow> {
    let peak = rows.iter().map(|r| r.gold).fold(f64::NEG_INFINITY, f64::max);
    for r in &mut rows {
        r.gold_below_peak = peak - r.gold;
        r.gold_below_peak_se = 0.01;
    }
    rows
}

/// Writes `rm.parquet` (gold and one proxy) and `curves.parquet` into `dir`.
fn write_tables(dir: &Path, curves: &[Vec<CurveRow>]) {
    let rm = |role: &str, member: Option<u64>| RmRow {
        model: role.into(),
        role: role.into(),
        size: "a".into(),
        ensemble: if member.is_some() {
            "a/d100/n0.00".into()
        } else {
            String::new()
        },
        params: 1000,
        layers: 1,
        width: 8,
        train_examples: 100,
        label_noise: member.map(|_| 0.0),
        member,
        val_pairs: 50,
        val_accuracy: 0.7,
        val_bt_loss: 0.6,
        distill_r2: None,
        train_steps: 10,
        train_seconds: 0.1,
        score_offset: 0.0,
        score_scale: 1.0,
        artifact: String::new(),
        replicate: None,
    };
    let mut df = table::rm_frame(&[rm("gold", None), rm("proxy", Some(0))]).unwrap();
    table::write(&mut df, dir, "rm").unwrap();
    let rows: Vec<CurveRow> = curves.iter().flatten().cloned().collect();
    let mut df = table::curve_frame(&rows).unwrap();
    table::write(&mut df, dir, "curves").unwrap();
}

fn column_f64(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    df.column(name)
        .unwrap()
        .cast(&DataType::Float64)
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect()
}

fn column_str(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect()
}

#[test]
fn fits_recover_known_best_of_n_coefficients_and_flag_the_interior_peak() {
    // gold = 0.3 + d(1.2 − 0.3d) + N(0, 0.005²)-ish noise, d = sqrt(KL bound), n = 1, 2, …, 4096:
    // peak at d* = 1.2/0.6 = 2 (KL* = 4, n ≈ 148), predicted peak gain 1.2²/(4·0.3) = 1.2; the
    // grid reaches d = 2.71, past the peak, so the observed peak is interior and gold falls
    // 1.2 − 2.71(1.2 − 0.3·2.71) ≈ 0.16 by n = 4096, far beyond 2 × its 0.01 s.e.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let rows: Vec<CurveRow> = (0..=12)
        .map(|i| {
            let n = 1u64 << i;
            let mut p = point("member0", "a/d100/n0.00", n, 0.0, 0.0, vec![0.0, 0.0], 0.0, None);
            let d = p.kl.sqrt();
            p.gold = 0.3 + d * (1.2 - 0.3 * d) + if i == 0 { 0.0 } else { rng.random_range(-0.01..0.01) };
            p.measures.proxy = 1.5 * d;
            p.measures.members = vec![p.measures.proxy, 0.5 * d];
            p
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), &[with_fall(rows)]);
    let s = report(dir.path(), false).unwrap();
    let fits = table::read_parquet(&dir.path().join("fits.parquet")).unwrap();
    let target = column_str(&fits, "target");
    let g = target.iter().position(|t| t == "gold").unwrap();
    let at = |c: &str| column_f64(&fits, c)[g].unwrap();
    assert!((at("alpha") - 1.2).abs() < 0.03, "alpha {}", at("alpha"));
    assert!((at("beta") - 0.3).abs() < 0.02, "beta {}", at("beta"));
    assert!(at("r2") > 0.99, "r2 {}", at("r2"));
    assert!((at("kl_star") - 4.0).abs() < 0.3, "kl_star {}", at("kl_star"));
    assert!((at("peak_gain_pred") - 1.2).abs() < 0.05);
    assert!(
        (at("baseline") - 0.3).abs() < 1e-12,
        "the gain is measured from the first point"
    );
    let interior: Vec<Option<bool>> = fits.column("interior_peak").unwrap().bool().unwrap().iter().collect();
    assert_eq!(interior[g], Some(true));
    // The proxy rises without end: its fit has no interior peak.
    let p = target.iter().position(|t| t == "proxy").unwrap();
    assert_eq!(interior[p], Some(false));
    // A per-run fit is a description: no in-sample test of a fall is drawn from it, and
    // without per-unit tables there is no expected curve for acceptance to judge.
    assert!(fits.column("clear_fall").is_err());
    assert_eq!(s.acceptance.r2_met, None);
    let md = std::fs::read_to_string(dir.path().join("report_appendix.md")).unwrap();
    let line = md
        .lines()
        .find(|l| l.starts_with("| bon | `a/d100/n0.00` | member0 | — | 0 | 13 |"))
        .expect("gold fit row");
    assert!(line.ends_with("| yes |"), "interior peak not flagged: {line}");
}

/// A 4-point curve where every rule's choice is known by hand (n = 1, 2, 4, 8):
/// gold 0, 0.5, 1.0, 0.6 (peak at index 2, gain 1.0);
/// proxy (= member 0) 0, 1, 2, 3 → proxy_peak picks 3: regret 0.4, 40%;
/// held-out 0, 0.4, 0.9, 0.5 → heldout_peak picks 2: regret 0;
/// member 1 0, 0.6, 0.9, 0.7 → other_members_peak picks 2: regret 0;
/// disagreement 0.1, 0.15, 0.25, 0.5: first above 2 × 0.1 at index 2 → disagreement_rise picks 1:
///   regret 0.5, 50%;
/// member mean − √disagreement = −0.316, 0.413, 0.95, 1.143 → penalized_peak picks 3: regret 0.4.
fn hand_curve(ensemble: &str) -> Vec<CurveRow> {
    let gold = [0.0, 0.5, 1.0, 0.6];
    let member1 = [0.0, 0.6, 0.9, 0.7];
    let dis = [0.1, 0.15, 0.25, 0.5];
    let heldout = [0.0, 0.4, 0.9, 0.5];
    (0..4)
        .map(|i| {
            point(
                "member0",
                ensemble,
                1 << i,
                gold[i],
                i as f64,
                vec![i as f64, member1[i]],
                dis[i],
                Some(heldout[i]),
            )
        })
        .collect()
}

#[test]
fn hand_computed_regrets_flow_through_to_stopping_csv() {
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), &[hand_curve("a/d100/n0.00")]);
    report(dir.path(), false).unwrap();
    let df = table::read_parquet(&dir.path().join("stopping.parquet")).unwrap();
    let rules = column_str(&df, "rule");
    let chosen: Vec<u64> = df
        .column("chosen_index")
        .unwrap()
        .u64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let regret = column_f64(&df, "regret");
    let frac = column_f64(&df, "regret_frac");
    let expect = [
        ("heldout_peak", 2, 0.0),
        ("penalized_peak(kappa=1)", 3, 0.4),
        ("disagreement_rise(tau=1)", 1, 0.5),
        ("proxy_peak", 3, 0.4),
        ("other_members_peak", 2, 0.0),
    ];
    assert_eq!(rules, expect.iter().map(|e| e.0.to_string()).collect::<Vec<_>>());
    for (i, (rule, idx, r)) in expect.iter().enumerate() {
        assert_eq!(chosen[i], *idx, "{rule}");
        assert!((regret[i].unwrap() - r).abs() < 1e-12, "{rule}: regret {:?}", regret[i]);
        assert!(
            (frac[i].unwrap() - r).abs() < 1e-12,
            "{rule}: gain is 1, so the fraction equals the regret"
        );
    }
    let peak_kl = column_f64(&df, "peak_kl")[0].unwrap();
    assert!(
        (peak_kl - (4f64.ln() - 0.75)).abs() < 1e-12,
        "peak at n = 4: KL = ln 4 − 3/4"
    );
    // The CSV carries the same numbers.
    let csv = std::fs::read_to_string(dir.path().join("stopping.csv")).unwrap();
    assert!(
        csv.lines().nth(3).unwrap().contains("disagreement_rise(tau=1),1,n=2,"),
        "{csv}"
    );
    // No ranking is drawn from in-sample regrets.
    assert!(!dir.path().join("stopping_summary.parquet").exists());
}

#[test]
fn aggregators_compare_each_ensemble_only_at_budgets_all_its_curves_reach() {
    // One ensemble, two aggregators: each row is its own curve's gold with its s.e. over
    // prompts. The shorter curve (n ≤ 8, KL ≤ 1.20) limits the budgets to 0.5 and 1.
    // Another ensemble of the same configuration is a cell of its own, never pooled: its
    // curve reaches n = 32 (KL 2.50), so it also gets the budget 2.
    let mut short = hand_curve("a/d100/n0.00");
    for r in &mut short {
        r.aggregator = goodhart::stats::aggregate::Aggregator::Mean.into();
    }
    let curve = |aggregator: &str, ensemble: &str, slope: f64| -> Vec<CurveRow> {
        let mut c: Vec<CurveRow> = (0..6)
            .map(|i| point(aggregator, ensemble, 1 << i, slope * i as f64, i as f64, vec![0.0, 0.0], 0.1, None))
            .collect();
        c[0].gold = 0.0;
        c
    };
    let long = curve("wco", "a/d100/n0.00", 0.1);
    let other = curve("mean", "a/d100/n0.00/seed2", 0.2);
    let curves = goodhart::stats::analysis::group_curves(&[short, long, other].concat(), goodhart::plan::kinds::traits);
    let rows = goodhart::stats::analysis::aggregators(&curves);
    assert!(rows.iter().all(|r| (r.replicates, r.se_over) == (1, goodhart::stats::analysis::SeOver::Prompts)));
    let at = |ensemble: &str| -> Vec<&goodhart::stats::analysis::AggRow> {
        rows.iter()
            .filter(|r| r.measure == goodhart::stats::analysis::Measure::AtKl && r.ensembles == ensemble)
            .collect()
    };
    let first = at("a/d100/n0.00");
    let keys: Vec<(f64, &str)> = first.iter().map(|r| (r.kl, r.aggregator.as_str())).collect();
    assert_eq!(keys, [(0.5, "mean"), (0.5, "wco"), (1.0, "mean"), (1.0, "wco")]);
    // At KL 1: the hand curve between n = 4 (0.636, 1.0) and n = 8 (1.205, 0.6); the other
    // between n = 4 (0.636, 0.2) and n = 8 (1.205, 0.3). The s.e. is each curve's (0.01).
    let t = (1.0 - (4f64.ln() - 0.75)) / ((8f64.ln() - 0.875) - (4f64.ln() - 0.75));
    assert!((first[2].gold - (1.0 + t * (0.6 - 1.0))).abs() < 1e-12, "{}", first[2].gold);
    assert!((first[3].gold - (0.2 + t * 0.1)).abs() < 1e-12, "{}", first[3].gold);
    assert!(first.iter().all(|r| (r.se - 0.01).abs() < 1e-12));
    let second = at("a/d100/n0.00/seed2");
    assert_eq!(second.iter().map(|r| r.kl).collect::<Vec<_>>(), [0.5, 1.0, 2.0]);
}

#[test]
fn report_on_flat_curves_says_not_applicable() {
    // Gold never rises above its first point: no interior peak to fit, no gain to regret.
    let mut flat = hand_curve("a/d100/n0.00");
    for r in &mut flat {
        r.gold = 0.0;
    }
    let dir = tempfile::tempdir().unwrap();
    write_tables(dir.path(), &[flat]);
    let s = report(dir.path(), false).expect("report of a flat curve");
    assert_eq!(s.curves, 1);
    assert_eq!((s.acceptance.r2_met, s.acceptance.regret_met), (None, None));
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert_eq!(md.matches("**not applicable**").count(), 2, "{md}");
}

#[test]
fn report_redraws_every_figure_from_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let out = tiny_folder(dir.path());
    let figures = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".png") || n.ends_with(".svg"))
            .collect();
        names.sort();
        read_all(dir, &names)
    };
    let before = figures(&out);
    // The tiny run has one noise level, best-of-n and PPO: 2 + 3 figures, PNG and SVG each.
    let expected: Vec<_> = [figure_paths(&out, "bon", 0.0), figure_paths(&out, "ppo", 0.0)].concat();
    assert_eq!(expected.len(), 10);
    for p in &expected {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(before.contains_key(&name), "the run did not draw {name}: {:?}", before.keys());
    }
    for name in before.keys() {
        std::fs::remove_file(out.join(name)).unwrap();
    }
    assert!(figures(&out).is_empty());
    report(&out, false).expect("report");
    let after = figures(&out);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "{name} redrawn differently");
    }
}

#[test]
fn scaling_figure_shows_replicates_and_their_means_and_leaves_out_extrapolated_peaks() {
    // Two proxy sizes × two replicates of single-proxy best-of-n curves, gold = d(α − βd)
    // at n = 1 … 1024 (largest KL ≈ 5.93 nats). Size b's replicate 1 fits β = 0.1: KL* = 25,
    // beyond the KL measured, so left out; the others peak at KL* = (α/2β)² ≤ 1.
    let curve = |size: &str, params: u64, replicate: u64, alpha: f64, beta: f64| -> Vec<CurveRow> {
        (0..=10)
            .map(|k| {
                let mut p = point("member0", &format!("{size}/d100/n0.00"), 1 << k, 0.0, 0.0, vec![0.0], 0.0, None);
                let d = p.sqrt_kl;
                p.gold = d * (alpha - beta * d);
                p.measures.proxy = d;
                p.measures.members = vec![d];
                p.proxy_size = size.into();
                p.proxy_params = params;
                p.replicate = replicate;
                p
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    write_tables(
        dir.path(),
        &[
            with_fall(curve("a", 1000, 0, 1.0, 0.5)),
            with_fall(curve("a", 1000, 1, 1.2, 0.8)),
            with_fall(curve("b", 10000, 0, 1.0, 0.6)),
            with_fall(curve("b", 10000, 1, 1.0, 0.1)),
        ],
    );
    let s = report(dir.path(), false).expect("report");
    assert!(s.scaling_figure);
    let svg = std::fs::read_to_string(dir.path().join("scaling.svg")).unwrap();
    // Two replicates per size, but one KL* at size b (the other is left out).
    assert!(svg.contains("mean of 1–2 replicates per size"), "the header does not count replicates");
    assert!(svg.contains("95% interval across replicates"));
    assert!(svg.contains("KL* (1 beyond measured KL left out)"), "the extrapolated KL* is not counted");
    // No axis reaches KL* = 25: the KL* panel's ticks stay within the measured peaks.
    let texts = common::svg_texts(&svg);
    assert!(texts.iter().any(|t| t == "3.0"), "no tick 3.0: {texts:?}");
    assert!(!texts.iter().any(|t| t == "25.0" || t == "20.0"), "{texts:?}");
    assert!(!texts.iter().any(|t| t.starts_with("-0.0") || t == "-0"), "{texts:?}");
    // The caption is in the scaling section, in the appendix.
    let md = std::fs::read_to_string(dir.path().join("report_appendix.md")).unwrap();
    assert!(md.contains("each replicate's fit a small dot"), "the caption does not say what scaling.png shows");
    // Deterministic: drawn again, the same bytes.
    let png = std::fs::read(dir.path().join("scaling.png")).unwrap();
    report(dir.path(), false).expect("second report");
    assert!(std::fs::read(dir.path().join("scaling.png")).unwrap() == png);
    assert!(std::fs::read_to_string(dir.path().join("scaling.svg")).unwrap() == svg);
}

