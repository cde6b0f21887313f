//! The statistics the verdicts rest on (`goodhart::stats`), pinned to independently computed
//! values, and the power formula checked against a simulation.
//!
//! Reference values from mpmath 1.3 at 30 digits (the regularized incomplete beta for t's
//! tail; the noncentral t's power by quadrature over the χ² density):
//! ```python
//! import mpmath as mp; mp.mp.dps = 30
//! tsf2 = lambda t, df: mp.betainc(df/2, 0.5, 0, df/(df + t*t), regularized=True)
//! tcrit = lambda a, df: mp.findroot(lambda t: tsf2(t, df) - a, 2.0)
//! def power(e, s, n, a):
//!     nu = n - 1; d = e*mp.sqrt(n)/s; c = tcrit(a, nu)
//!     f = lambda v: mp.exp((nu/2-1)*mp.log(v) - v/2 - (nu/2)*mp.log(2) - mp.loggamma(nu/2)) \
//!         * (mp.ncdf(-(c*mp.sqrt(v/nu) - d)) + mp.ncdf(-(c*mp.sqrt(v/nu) + d)))
//!     return mp.quad(f, [0, nu, mp.inf])
//! ```

use goodhart::stats::{benjamini_hochberg, holm, replicates_needed, t_critical, t_test_power, t_two_sided};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

#[test]
fn t_tail_probabilities_match_mpmath() {
    for (t, df, want) in [
        (2.0, 10.0, 0.0733880347707404),
        (1.0, 1.0, 0.5),
        (3.0, 5.0, 0.0300992478974626),
        (0.5, 30.0, 0.620723004885128),
        (2.5, 11.0, 0.0295063740873642),
        (4.0, 2.0, 0.0571909584179366),
        (-2.5, 11.0, 0.0295063740873642),
    ] {
        let got = t_two_sided(t, df);
        assert!((got - want).abs() < 1e-10, "P(|T_{df}| ≥ {t}) = {got}, want {want}");
    }
    assert_eq!(t_two_sided(0.0, 4.0), 1.0);
    assert!(t_two_sided(f64::NAN, 4.0).is_nan());
}

#[test]
fn t_critical_values_match_mpmath_and_the_table() {
    for (alpha, df, want) in [
        (0.05, 1.0, 12.7062047361747),
        (0.05, 11.0, 2.20098516009164),
        (0.05 / 6.0, 11.0, 3.20812233316811),
        (0.01, 29.0, 2.75638590367061),
    ] {
        let got = t_critical(alpha, df);
        assert!((got - want).abs() < 1e-8, "t crit({alpha}, {df}) = {got}, want {want}");
    }
    // The conclusions' t975 is this function at 0.05: the printed table to 3 decimals.
    assert!((goodhart::stats::conclusions::t975(2) - 4.303).abs() < 5e-4);
    assert!((goodhart::stats::conclusions::t975(30) - 2.042).abs() < 5e-4);
    assert!((goodhart::stats::conclusions::t975(1000) - 1.962).abs() < 5e-4);
    assert!(goodhart::stats::conclusions::t975(0).is_nan());
}

#[test]
fn holm_and_benjamini_hochberg_match_hand_values() {
    // Holm, m = 4: sorted 0.01, 0.02, 0.03, 0.5 → 4·0.01 = 0.04, max(0.04, 3·0.02) = 0.06,
    // max(0.06, 2·0.03) = 0.06, max(0.06, 1·0.5) = 0.5; returned in the input's order.
    let p = [0.03, 0.5, 0.01, 0.02];
    let h = holm(&p);
    for (got, want) in h.iter().zip([0.06, 0.5, 0.04, 0.06]) {
        assert!((got - want).abs() < 1e-12, "{h:?}");
    }
    // BH, m = 4: q_(4) = 0.5, q_(3) = min(0.5, 4·0.03/3 = 0.04), q_(2) = min(0.04, 4·0.02/2
    // = 0.04), q_(1) = min(0.04, 4·0.01/1 = 0.04).
    let q = benjamini_hochberg(&p);
    for (got, want) in q.iter().zip([0.04, 0.5, 0.04, 0.04]) {
        assert!((got - want).abs() < 1e-12, "{q:?}");
    }
    // Capped at 1; NaN stays NaN and does not count toward m.
    let h = holm(&[0.4, f64::NAN, 0.3]);
    assert!((h[0] - 0.6).abs() < 1e-12 && h[1].is_nan() && (h[2] - 0.6).abs() < 1e-12, "{h:?}");
    assert_eq!(holm(&[0.6, 0.7]), vec![1.0, 1.0]);
    let q = benjamini_hochberg(&[0.01, 0.04, 0.045]);
    // q_(3) = 0.045, q_(2) = min(0.045, 3·0.04/2 = 0.06) = 0.045, q_(1) = min(0.045, 0.03).
    for (got, want) in q.iter().zip([0.03, 0.045, 0.045]) {
        assert!((got - want).abs() < 1e-12, "{q:?}");
    }
}

#[test]
fn t_test_power_matches_mpmath_quadrature() {
    for (e, s, n, a, want) in [
        (0.5, 1.0, 12, 0.05, 0.3528241493),
        (0.34, 0.74, 30, 0.05 / 6.0, 0.3929097345),
        (1.0, 1.0, 10, 0.05, 0.8030968566),
        (0.3, 1.0, 100, 0.05, 0.8439471027),
    ] {
        let got = t_test_power(e, s, n, a);
        assert!((got - want).abs() < 2e-4, "power({e}, {s}, {n}, {a}) = {got}, want {want}");
    }
    // n = 10 reaches 80% at effect = sd (0.803); n = 9 does not.
    assert_eq!(replicates_needed(1.0, 1.0, 0.05, 0.8, 1000), Some(10));
    assert_eq!(replicates_needed(0.0, 1.0, 0.05, 0.8, 1000), None);
    assert_eq!(replicates_needed(0.01, 1.0, 0.05, 0.8, 1000), None, "needs more than the cap");
}

#[test]
fn power_formula_agrees_with_simulated_t_tests() {
    // Simulated: the fraction of 4,000 one-sample t tests (normal data) that reject at α.
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for (effect, sd, n, alpha) in [(0.4, 1.0, 12, 0.05), (0.6, 1.0, 8, 0.05), (0.34, 0.74, 40, 0.05 / 6.0), (0.25, 0.5, 20, 0.01)] {
        let normal = Normal::new(effect, sd).unwrap();
        let crit = t_critical(alpha, (n - 1) as f64);
        let trials = 4000;
        let mut rejected = 0;
        for _ in 0..trials {
            let xs: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            let (m, se) = goodhart::stats::mean_se(&xs);
            if (m / se).abs() >= crit {
                rejected += 1;
            }
        }
        let simulated = rejected as f64 / trials as f64;
        let formula = t_test_power(effect, sd, n, alpha);
        // Simulation s.e. ≤ 0.8 points: within 3 points.
        assert!((simulated - formula).abs() < 0.03, "effect {effect}, sd {sd}, n {n}: simulated {simulated}, formula {formula}");
    }
}
