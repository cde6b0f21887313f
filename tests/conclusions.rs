//! The conclusions' statistics: cross-fitting calibrated on synthetic curves (no false
//! positives beyond the nominal rate where there is no fall; the fall found where there is
//! one), paired differences and intervals against hand values, cross-validated rule choice.

use goodhart::conclusions::{
    across, claims, fall_in_sample, fall_units, regret_units, stop_claims, t975, t975_expansion, t_interval, Over, StopRule,
    UnitCurve,
};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn curve(method: &str, replicate: u64, aggregator: &str, beta: Option<f64>, gold: Vec<Vec<f64>>) -> UnitCurve {
    let points = gold.len();
    let units = gold[0].len();
    let zeros = vec![vec![0.0; units]; points];
    UnitCurve {
        method: method.into(),
        replicate,
        ensemble: "xs/d2000/n0.00".into(),
        aggregator: aggregator.into(),
        kl_penalty: beta,
        kl: (0..points).map(|i| i as f64).collect(),
        at: (0..points).map(|i| format!("n={}", 1 << i)).collect(),
        gold,
        proxy: zeros.clone(),
        member_mean: zeros.clone(),
        other_members: None,
        disagreement: zeros,
        heldout: None,
    }
}

/// A synthetic best-of-n-like curve: `shape[point]` plus a per-unit offset and per-point
/// noise correlated along the curve (a random walk), as best-of-n values of one prompt are.
fn synthetic(rng: &mut rand::rngs::StdRng, shape: &[f64], units: usize, replicate: u64) -> UnitCurve {
    let noise = Normal::new(0.0, 1.0).unwrap();
    let mut gold = vec![vec![0.0; units]; shape.len()];
    for u in 0..units {
        let offset = noise.sample(rng);
        let mut walk = 0.0;
        for (k, s) in shape.iter().enumerate() {
            walk += 0.3 * noise.sample(rng);
            gold[k][u] = s + offset + walk;
        }
    }
    curve("bon", replicate, "member0", None, gold)
}

/// How often the 95% interval across `reps` replicates says the fall `holds`, over
/// `trials` synthetic studies of curves with `shape`: cross-fitted, and in-sample.
fn firing_rate(shape: &[f64], reps: usize, units: usize, trials: usize, seed: u64) -> (f64, f64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut cross, mut naive) = (0, 0);
    for _ in 0..trials {
        let curves: Vec<UnitCurve> = (0..reps).map(|r| synthetic(&mut rng, shape, units, r as u64)).collect();
        let per: Vec<Vec<f64>> = curves.iter().map(|c| fall_units(c).unwrap()).collect();
        if across(&per).unwrap().verdict() == "holds" {
            cross += 1;
        }
        let insample: Vec<f64> = curves.iter().map(|c| fall_in_sample(c).unwrap()).collect();
        if reps > 1 && t_interval(&insample, Over::Replicates, reps).unwrap().verdict() == "holds" {
            naive += 1;
        }
    }
    (cross as f64 / trials as f64, naive as f64 / trials as f64)
}

#[test]
fn t_quantiles_match_the_table_and_the_expansion_joins_it() {
    assert_eq!(t975(1), 12.706);
    assert_eq!(t975(2), 4.303);
    assert_eq!(t975(10), 2.228);
    assert!((t975_expansion(30) - t975(30)).abs() < 0.002, "{}", t975_expansion(30));
    assert!((t975(1000) - 1.962).abs() < 0.001);
    assert!(t975(0).is_nan());
    // Decreasing in df.
    for df in 1..200 {
        assert!(t975(df + 1) < t975(df), "df {df}");
    }
}

#[test]
fn cross_fitted_fall_on_flat_curves_fires_at_most_at_the_nominal_rate_and_in_sample_fires_more() {
    let flat = vec![0.0; 13];
    let (cross, naive) = firing_rate(&flat, 3, 32, 2000, 7);
    // One-sided: a two-sided 95% interval above 0 has a nominal rate of 2.5%; allow
    // sampling error over 2000 trials (s.e. ≈ 0.35%).
    assert!(cross <= 0.05, "cross-fitted fall fired on {:.1}% of flat studies", 100.0 * cross);
    // The winner's curse: choosing and measuring the peak on the same units finds a fall
    // that is not there several times as often.
    eprintln!("flat curves, 3 replicates: cross-fitted fires {:.2}%, in-sample {:.2}%", 100.0 * cross, 100.0 * naive);
    assert!(naive > 0.08 && naive > 3.0 * cross, "in-sample fall fired on {:.1}% only", 100.0 * naive);
    // One replicate: the interval over units.
    let (cross1, _) = firing_rate(&flat, 1, 64, 1000, 8);
    assert!(cross1 <= 0.05, "one replicate: fired on {:.1}%", 100.0 * cross1);
}

#[test]
fn cross_fitted_fall_finds_a_real_fall() {
    // Rises by 1 then falls by 1 (in units of the per-unit noise).
    let shape: Vec<f64> = (0..13).map(|k| if k <= 6 { k as f64 / 6.0 } else { 1.0 - (k - 6) as f64 / 6.0 }).collect();
    let (cross, _) = firing_rate(&shape, 3, 32, 300, 9);
    assert!(cross >= 0.9, "found the fall in {:.1}% of studies", 100.0 * cross);
    // And a rising curve is not called a fall.
    let rising: Vec<f64> = (0..13).map(|k| k as f64 / 6.0).collect();
    let (up, _) = firing_rate(&rising, 3, 32, 300, 10);
    assert!(up <= 0.05, "a rising curve was called a fall in {:.1}%", 100.0 * up);
}

#[test]
fn fall_contributions_use_the_peak_of_the_other_half() {
    // Units 0, 2 (even half) peak at point 1; units 1, 3 (odd half) peak at point 2.
    let gold = vec![vec![0.0, 0.0, 0.0, 0.0], vec![2.0, 1.0, 2.0, 1.0], vec![1.0, 3.0, 1.0, 3.0], vec![0.0, 0.0, 0.0, 0.0]];
    let c = curve("bon", 0, "member0", None, gold);
    // Even units are measured at the odd half's peak (point 2), odd units at point 1.
    assert_eq!(fall_units(&c).unwrap(), vec![1.0, 1.0, 1.0, 1.0]);
    assert_eq!(fall_in_sample(&c).unwrap(), 2.0);
}

#[test]
fn paired_gaps_and_intervals_match_hand_values() {
    // Two replicates, 2 units, 2 points; gold at the last point:
    //   wco:    r0 [1.0, 2.0]  r1 [0.5, 0.5]
    //   member0 r0 [0.0, 1.0]  r1 [0.0, 0.0];  member1 r0 [1.0, 0.0]  r1 [1.0, 0.0]
    // single pools the members unit by unit: r0 [0.5, 0.5], r1 [0.5, 0.0].
    // wco − single: r0 [0.5, 1.5] → 1.0;  r1 [0.0, 0.5] → 0.25.
    let two = |last: [f64; 2]| vec![vec![0.0, 0.0], last.to_vec()];
    let cs = vec![
        curve("bon", 0, "wco", None, two([1.0, 2.0])),
        curve("bon", 1, "wco", None, two([0.5, 0.5])),
        curve("bon", 0, "member0", None, two([0.0, 1.0])),
        curve("bon", 1, "member0", None, two([0.0, 0.0])),
        curve("bon", 0, "member1", None, two([1.0, 0.0])),
        curve("bon", 1, "member1", None, two([1.0, 0.0])),
    ];
    let all = claims(&cs);
    let gap = all.iter().find(|c| c.kind == "gap" && c.aggregator == "wco" && c.baseline == "single").unwrap();
    let (m, sd) = (0.625, ((1.0f64 - 0.625).powi(2) + (0.25f64 - 0.625).powi(2)).sqrt());
    let half = 12.706 * sd / 2f64.sqrt();
    assert!((gap.interval.estimate - m).abs() < 1e-12);
    assert!((gap.interval.low - (m - half)).abs() < 1e-9 && (gap.interval.high - (m + half)).abs() < 1e-9);
    assert_eq!(gap.interval.replicates, 2);
    assert_eq!(gap.interval.over, Over::Replicates);
    assert_eq!(gap.interval.verdict(), "inconclusive");
    assert_eq!(gap.at, "final");
    // With one replicate the interval is over units, and says so.
    let one = across(&[vec![0.5, 1.5, 1.0, 1.0]]).unwrap();
    assert_eq!(one.over, Over::Units);
    assert!((one.estimate - 1.0).abs() < 1e-12);
    let half1 = 3.182 * (0.5f64 / 3.0).sqrt() / 2.0;
    assert!((one.low - (1.0 - half1)).abs() < 1e-9);
    assert_eq!(one.verdict(), "holds");
}

#[test]
fn ppo_gaps_are_also_taken_at_a_matched_kl() {
    // wco reaches KL 2, the member KL 4: matched at 2, where the member is interpolated.
    let mut a = curve("ppo", 0, "wco", Some(0.0), vec![vec![0.0, 0.0], vec![1.0, 1.0], vec![2.0, 2.0]]);
    a.kl = vec![0.0, 1.0, 2.0];
    let mut b = curve("ppo", 0, "member0", Some(0.0), vec![vec![0.0, 0.0], vec![4.0, 2.0]]);
    b.kl = vec![0.0, 4.0];
    let mut a1 = a.clone();
    a1.replicate = 1;
    let mut b1 = b.clone();
    b1.replicate = 1;
    let all = claims(&[a, b, a1, b1]);
    let matched = all.iter().find(|c| c.kind == "gap" && c.at.starts_with("matched")).unwrap();
    // member at KL 2: [2.0, 1.0]; wco [2.0, 2.0] → differences [0, 1], mean 0.5 in both replicates.
    assert!((matched.interval.estimate - 0.5).abs() < 1e-12, "{matched:?}");
    let last = all.iter().find(|c| c.kind == "gap" && c.at == "final").unwrap();
    // At the last points: wco [2, 2] − member [4, 2] = [−2, 0] → −1.
    assert!((last.interval.estimate + 1.0).abs() < 1e-12);
}

#[test]
fn the_cross_validated_rule_is_graded_on_replicates_that_did_not_choose_it() {
    // Gold peaks at point 1 and falls; the proxy rises throughout (proxy_peak picks the
    // last point), the held-out proxy peaks where gold does (heldout_peak is perfect).
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let curves: Vec<UnitCurve> = (0..4)
        .map(|r| {
            let units = 8;
            let gold: Vec<Vec<f64>> = [0.0, 1.0, 0.5, -0.5].iter().map(|&g| (0..units).map(|_| g + 0.01 * rng.random::<f64>()).collect()).collect();
            let mut c = curve("bon", r, "mean", None, gold);
            c.proxy = (0..4).map(|k| vec![k as f64; units]).collect();
            c.member_mean = c.proxy.clone();
            c.disagreement = (0..4).map(|k| vec![0.1 * (1 + k) as f64; units]).collect();
            c.heldout = Some([0.0, 1.0, 0.6, 0.2].iter().map(|&h| vec![h; units]).collect());
            c
        })
        .collect();
    assert!(regret_units(&curves[0], StopRule::OtherMembersPeak).is_none(), "not a single member's curve");
    let proxy_regret = regret_units(&curves[0], StopRule::Rule(goodhart::stopping::Rule::ProxyPeak)).unwrap();
    assert!(proxy_regret.iter().all(|&r| r > 1.4), "{proxy_regret:?}");
    let stops = stop_claims(&curves);
    let cv = stops.iter().find(|c| c.at == "cross-validated").unwrap();
    assert_eq!(cv.aggregator, "heldout_peak");
    assert!(cv.interval.estimate.abs() < 1e-12);
    assert_eq!(cv.interval.replicates, 4);
    let naive = stops.iter().find(|c| c.aggregator == "proxy_peak").unwrap();
    assert_eq!(naive.interval.verdict(), "holds");
}
