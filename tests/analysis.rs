//! The analysis math: Gao et al. functional-form fits, scaling fits, gold-free stopping
//! rules and their regret, each pinned to a hand calculation kept in a comment.

use goodhart::stats::fit::{fit_form, linear_fit, log_linear_fit, Form, FormFit, LinearFit};
use goodhart::stats::stopping::{at_kl, regret, Rule, Series};
use rand_distr::{Distribution, Normal};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// d = 0, 0.1, …, 4.0 (41 points) and KL = d².
fn grid() -> (Vec<f64>, Vec<f64>) {
    let d: Vec<f64> = (0..=40).map(|i| i as f64 * 0.1).collect();
    let kl = d.iter().map(|x| x * x).collect();
    (d, kl)
}

fn exact(form: Form, alpha: f64, beta: f64) -> (Vec<f64>, Vec<f64>) {
    let (d, kl) = grid();
    (kl, d.iter().map(|&x| form.predict(alpha, beta, x)).collect())
}

fn fit(form: Form, kl: &[f64], y: &[f64]) -> FormFit {
    fit_form(form, kl, y).unwrap_or_else(|| panic!("{} fit failed", form.name()))
}

// ---------------------------------------------------------------- functional forms

#[test]
fn form_predict_matches_hand_values() {
    // bon: 2(1.2 − 0.3·2) = 1.2; rl: e(1 − 0.5·ln e) = 0.5e; rl at d = 0 is its limit 0.
    assert!(close(Form::BestOfN.predict(1.2, 0.3, 2.0), 1.2, 1e-12));
    assert!(close(
        Form::Rl.predict(1.0, 0.5, std::f64::consts::E),
        0.5 * std::f64::consts::E,
        1e-12
    ));
    assert_eq!(Form::Rl.predict(1.0, 0.5, 0.0), 0.0);
    assert!(Form::BestOfN.predict(1.0, 0.5, -1.0).is_nan());
    assert_ne!(Form::BestOfN.name(), Form::Rl.name());
}

#[test]
fn fit_form_recovers_exact_coefficients() {
    for form in Form::ALL {
        let (kl, y) = exact(form, 1.2, 0.3);
        let f = fit(form, &kl, &y);
        assert_eq!(f.form, form);
        assert_eq!(f.points, 41);
        assert!(close(f.alpha, 1.2, 1e-9), "{}: alpha {}", form.name(), f.alpha);
        assert!(close(f.beta, 0.3, 1e-9), "{}: beta {}", form.name(), f.beta);
        assert!(close(f.r2, 1.0, 1e-9), "{}: r2 {}", form.name(), f.r2);
        assert!(close(f.at_kl(2.25), form.predict(1.2, 0.3, 1.5), 1e-9));
    }
}

#[test]
fn fit_form_recovers_coefficients_under_gaussian_noise() {
    // Noise sd σ = 0.02 on the 41-point grid d = 0..4. The standard errors are
    // σ·sqrt(diag((XᵀX)⁻¹)) (python3, no numpy):
    //   d = [i*0.1 for i in range(41)]
    //   f = lambda x: -x*x            # bon;  rl: lambda x: -x*math.log(x) if x > 0 else 0
    //   a = sum(x*x for x in d); b = sum(x*f(x) for x in d); c = sum(f(x)**2 for x in d)
    //   det = a*c - b*b; 0.02*math.sqrt(c/det), 0.02*math.sqrt(a/det)
    //   bon: se(α) = 0.00538, se(β) = 0.00171;  rl: se(α) = 0.00450, se(β) = 0.00403
    // Tolerances are ≥ 5 standard errors (two-sided p < 6e-7 per coefficient and seed).
    let tol = [(Form::BestOfN, 0.027, 0.0086), (Form::Rl, 0.023, 0.021)];
    let noise = Normal::new(0.0, 0.02).expect("valid normal");
    for (form, tol_a, tol_b) in tol {
        for seed in 0..5u64 {
            let mut rng = goodhart::seed::rng(seed, &format!("test/fit/{}", form.name()));
            let (kl, clean) = exact(form, 1.2, 0.3);
            let y: Vec<f64> = clean.iter().map(|v| v + noise.sample(&mut rng)).collect();
            let f = fit(form, &kl, &y);
            assert!(
                close(f.alpha, 1.2, tol_a),
                "{} seed {seed}: alpha {}",
                form.name(),
                f.alpha
            );
            assert!(
                close(f.beta, 0.3, tol_b),
                "{} seed {seed}: beta {}",
                form.name(),
                f.beta
            );
            // Var(y) ≈ 0.15 (bon) and ≈ 1 (rl) against σ² = 4e-4: R² ≈ 0.997 or better.
            assert!(f.r2 > 0.99 && f.r2 < 1.0, "{} seed {seed}: r2 {}", form.name(), f.r2);
        }
    }
}

#[test]
fn bon_peak_matches_hand_values() {
    // α = 1, β = 0.25: d* = α/(2β) = 2, KL* = d*² = 4, R(d*) = α²/(4β) = 1 (= 2(1 − 0.25·2)).
    let (kl, y) = exact(Form::BestOfN, 1.0, 0.25);
    let f = fit(Form::BestOfN, &kl, &y);
    assert!(close(f.d_star.expect("peak"), 2.0, 1e-9));
    assert!(close(f.kl_star.expect("peak"), 4.0, 1e-9));
    assert!(close(f.peak_pred.expect("peak"), 1.0, 1e-9));
}

#[test]
fn rl_peak_matches_hand_values() {
    // α = 1, β = 0.5: d* = exp(α/β − 1) = e, KL* = e² = 7.38905609893065,
    // R(d*) = β·d* = 0.5e = 1.3591409142295225 (= e(1 − 0.5·ln e)).
    let (kl, y) = exact(Form::Rl, 1.0, 0.5);
    let f = fit(Form::Rl, &kl, &y);
    assert!(close(f.d_star.expect("peak"), std::f64::consts::E, 1e-9));
    assert!(close(f.kl_star.expect("peak"), 7.389_056_098_930_65, 1e-8));
    assert!(close(f.peak_pred.expect("peak"), 1.359_140_914_229_522_5, 1e-9));
}

#[test]
fn no_peak_when_the_curve_never_turns_down() {
    // β < 0: R keeps rising with d, so there is no interior peak.
    for form in Form::ALL {
        let (kl, y) = exact(form, 1.0, -0.1);
        let f = fit(form, &kl, &y);
        assert!(f.beta < 0.0);
        assert_eq!(
            (f.d_star, f.kl_star, f.peak_pred),
            (None, None, None),
            "{}",
            form.name()
        );
    }
    // bon with α < 0 < β falls from d = 0 on: its vertex α/(2β) < 0 is not a peak in d > 0.
    let (kl, y) = exact(Form::BestOfN, -0.5, 0.25);
    assert_eq!(fit(Form::BestOfN, &kl, &y).d_star, None);
    // rl with α/β − 1 = 799 > ln(f64::MAX) ≈ 709.8: exp overflows, so no peak is reported.
    let (kl, y) = exact(Form::Rl, 800.0, 1.0);
    let f = fit(Form::Rl, &kl, &y);
    assert!(close(f.alpha, 800.0, 1e-6) && close(f.beta, 1.0, 1e-6));
    assert_eq!((f.d_star, f.kl_star, f.peak_pred), (None, None, None));
}

#[test]
fn fit_form_rejects_too_few_or_degenerate_points() {
    for form in Form::ALL {
        // Two points.
        assert!(fit_form(form, &[1.0, 4.0], &[1.0, 1.5]).is_none());
        // Three points, one unusable (NaN value, non-finite KL, negative KL).
        assert!(fit_form(form, &[1.0, 4.0, 9.0], &[1.0, f64::NAN, 1.5]).is_none());
        assert!(fit_form(form, &[1.0, f64::INFINITY, 9.0], &[1.0, 1.2, 1.5]).is_none());
        assert!(fit_form(form, &[1.0, -0.01, 9.0], &[1.0, 1.2, 1.5]).is_none());
        // Mismatched lengths, empty input.
        assert!(fit_form(form, &[1.0, 4.0, 9.0], &[1.0, 1.5]).is_none());
        assert!(fit_form(form, &[], &[]).is_none());
        // Singular: every point at one KL (x1 ∝ x2), or every point at d = 0 (x = 0).
        assert!(fit_form(form, &[2.0; 5], &[1.0, 1.1, 0.9, 1.0, 1.05]).is_none());
        assert!(fit_form(form, &[0.0; 5], &[0.0, 0.1, -0.1, 0.0, 0.05]).is_none());
    }
    // Skipped points do not count; a fourth, usable point makes the fit possible again.
    let f = fit_form(Form::BestOfN, &[1.0, -0.01, 4.0, 9.0], &[0.75, 0.0, 1.0, 0.75]).expect("fit");
    assert_eq!(f.points, 3);
    // y = d(1 − 0.25d) at d = 1, 2, 3: 0.75, 1, 0.75.
    assert!(close(f.alpha, 1.0, 1e-9) && close(f.beta, 0.25, 1e-9));
}

#[test]
fn fit_form_r2_is_nan_when_y_has_no_variance() {
    let f = fit_form(Form::BestOfN, &[0.0, 1.0, 4.0, 9.0], &[0.0; 4]).expect("fit");
    assert!(close(f.alpha, 0.0, 1e-12) && close(f.beta, 0.0, 1e-12));
    assert!(f.r2.is_nan());
}

// ---------------------------------------------------------------- linear fits

#[test]
fn linear_fit_on_an_exact_line() {
    let x: Vec<f64> = (0..20).map(|i| i as f64 * 0.5).collect();
    let y: Vec<f64> = x.iter().map(|v| 3.0 * v - 7.0).collect();
    let f = linear_fit(&x, &y).expect("fit");
    assert!(close(f.slope, 3.0, 1e-12) && close(f.intercept, -7.0, 1e-12), "{f:?}");
    assert!(close(f.r2, 1.0, 1e-12));
    assert_eq!(f.points, 20);
}

#[test]
fn linear_fit_matches_hand_example() {
    // x = [0,1,2,3], y = [1,3,2,5]: x̄ = 1.5, ȳ = 2.75, Sxx = 5, Sxy = 5.5, Syy = 8.75;
    // slope = 5.5/5 = 1.1, intercept = 2.75 − 1.1·1.5 = 1.1,
    // R² = Sxy²/(Sxx·Syy) = 30.25/43.75 = 121/175 = 0.691428571…
    let f = linear_fit(&[0.0, 1.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 5.0]).expect("fit");
    assert!(close(f.slope, 1.1, 1e-12) && close(f.intercept, 1.1, 1e-12), "{f:?}");
    assert!(close(f.r2, 121.0 / 175.0, 1e-12), "r2 {}", f.r2);
    // A NaN pair is skipped, not propagated.
    let g = linear_fit(&[0.0, 1.0, f64::NAN, 2.0, 3.0], &[1.0, 3.0, 9.0, 2.0, 5.0]).expect("fit");
    assert_eq!(g, f);
}

#[test]
fn linear_fit_rejects_degenerate_input() {
    assert!(linear_fit(&[1.0], &[2.0]).is_none());
    assert!(linear_fit(&[], &[]).is_none());
    assert!(linear_fit(&[1.0, 2.0], &[2.0]).is_none());
    // No spread in x (any rounding residue in its centred sum of squares is ignored).
    assert!(linear_fit(&[0.1, 0.1, 0.1], &[1.0, 2.0, 3.0]).is_none());
    // Constant y: slope 0, R² undefined.
    let f = linear_fit(&[0.0, 1.0, 2.0], &[0.1, 0.1, 0.1]).expect("fit");
    assert!(close(f.slope, 0.0, 1e-15) && f.r2.is_nan());
}

#[test]
fn log_linear_fit_is_linear_in_ln_x() {
    // y = 3 ln x + 2 at x = 1, e, e²: y = 2, 5, 8; x ≤ 0 is skipped.
    let e = std::f64::consts::E;
    let f: LinearFit = log_linear_fit(&[1.0, e, e * e, 0.0, -1.0], &[2.0, 5.0, 8.0, 100.0, 100.0]).expect("fit");
    assert!(close(f.slope, 3.0, 1e-12) && close(f.intercept, 2.0, 1e-12), "{f:?}");
    assert_eq!(f.points, 3);
}

// ---------------------------------------------------------------- stopping rules

const KL: [f64; 6] = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0];
const GOLD: [f64; 6] = [0.0, 0.4, 0.7, 0.8, 0.6, 0.2];
const PROXY: [f64; 6] = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5];
const MEMBER_MEAN: [f64; 6] = [0.0, 0.5, 0.9, 1.2, 1.3, 1.5];
// sqrt: 0.1, 0.1, 0.2, 0.3, 0.5, 0.8
const DISAGREEMENT: [f64; 6] = [0.01, 0.01, 0.04, 0.09, 0.25, 0.64];
const HELDOUT: [f64; 6] = [0.0, 0.3, 0.6, 0.55, 0.5, 0.4];

fn hand_series() -> Series<'static> {
    Series {
        kl: &KL,
        gold: &GOLD,
        proxy: &PROXY,
        member_mean: &MEMBER_MEAN,
        disagreement: &DISAGREEMENT,
        heldout: Some(&HELDOUT),
    }
}

#[test]
fn rule_names_are_stable() {
    let names: Vec<&str> = Rule::defaults().iter().map(|r| r.name()).collect();
    assert_eq!(
        names,
        ["heldout_peak", "penalized_peak", "disagreement_rise", "proxy_peak"]
    );
    assert_eq!(Rule::PenalizedPeak { kappa: 1.0 }.label(), "penalized_peak(kappa=1)");
    assert_eq!(
        Rule::DisagreementRise { tau: 0.5 }.label(),
        "disagreement_rise(tau=0.5)"
    );
    assert_eq!(Rule::HeldoutPeak.label(), "heldout_peak");
}

#[test]
fn heldout_peak_on_hand_series() {
    let s = hand_series();
    // HELDOUT = [0, 0.3, 0.6, 0.55, 0.5, 0.4]: highest at index 2.
    assert_eq!(Rule::HeldoutPeak.choose(&s), Some(2));
    // Ties go to the earliest point; NaN is skipped.
    let h = [0.0, 1.0, f64::NAN, 1.0, 0.5, 0.0];
    assert_eq!(Rule::HeldoutPeak.choose(&Series { heldout: Some(&h), ..s }), Some(1));
    // Missing, wrong length, or no finite value: None.
    assert_eq!(Rule::HeldoutPeak.choose(&Series { heldout: None, ..s }), None);
    assert_eq!(
        Rule::HeldoutPeak.choose(&Series {
            heldout: Some(&[1.0, 2.0]),
            ..s
        }),
        None
    );
    assert_eq!(
        Rule::HeldoutPeak.choose(&Series {
            heldout: Some(&[f64::NAN; 6]),
            ..s
        }),
        None
    );
}

#[test]
fn penalized_peak_on_hand_series() {
    let s = hand_series();
    // member_mean − κ·sqrt(disagreement), sqrt = [0.1, 0.1, 0.2, 0.3, 0.5, 0.8]:
    //   κ = 1: [−0.1, 0.4, 0.7, 0.9, 0.8, 0.7] → 3
    //   κ = 2: [−0.2, 0.3, 0.5, 0.6, 0.3, −0.1] → 3
    //   κ = 0: member_mean itself, rising to the end → 5
    assert_eq!(Rule::PenalizedPeak { kappa: 1.0 }.choose(&s), Some(3));
    assert_eq!(Rule::PenalizedPeak { kappa: 2.0 }.choose(&s), Some(3));
    assert_eq!(Rule::PenalizedPeak { kappa: 0.0 }.choose(&s), Some(5));
    //   κ = 0.5: [−0.05, 0.45, 0.8, 1.05, 1.05, 1.1] → 5
    assert_eq!(Rule::PenalizedPeak { kappa: 0.5 }.choose(&s), Some(5));
    // A NaN disagreement makes its point unusable (it does not count as zero spread).
    let dis = [0.01, 0.01, 0.04, 0.09, 0.25, f64::NAN];
    let mm = [0.0, 0.5, 0.9, 1.2, 1.3, 9.0];
    let nan_dis = Series {
        member_mean: &mm,
        disagreement: &dis,
        ..s
    };
    assert_eq!(Rule::PenalizedPeak { kappa: 1.0 }.choose(&nan_dis), Some(3));
    assert_eq!(Rule::PenalizedPeak { kappa: 0.0 }.choose(&nan_dis), Some(4));
    // Invalid κ or missing input.
    assert_eq!(Rule::PenalizedPeak { kappa: -1.0 }.choose(&s), None);
    assert_eq!(Rule::PenalizedPeak { kappa: f64::NAN }.choose(&s), None);
    assert_eq!(
        Rule::PenalizedPeak { kappa: 1.0 }.choose(&Series { disagreement: &[], ..s }),
        None
    );
}

#[test]
fn disagreement_rise_on_hand_series() {
    let s = hand_series();
    // DISAGREEMENT = [0.01, 0.01, 0.04, 0.09, 0.25, 0.64], first point 0.01:
    //   τ = 1   → limit 0.02, first exceeded at index 2 (0.04) → stop at 1
    //   τ = 10  → limit 0.11, first exceeded at index 4 (0.25) → stop at 3
    //   τ = 100 → limit 1.01, never exceeded → the last index, 5
    assert_eq!(Rule::DisagreementRise { tau: 1.0 }.choose(&s), Some(1));
    assert_eq!(Rule::DisagreementRise { tau: 10.0 }.choose(&s), Some(3));
    assert_eq!(Rule::DisagreementRise { tau: 100.0 }.choose(&s), Some(5));
    // "Exceeds" is strict: equal to the limit does not stop (0.02 = (1 + 1)·0.01).
    let d = [0.01, 0.02, 0.02, 0.03];
    let short = Series {
        kl: &KL[..4],
        gold: &GOLD[..4],
        disagreement: &d,
        ..s
    };
    assert_eq!(Rule::DisagreementRise { tau: 1.0 }.choose(&short), Some(2));
    // Invalid τ or first point.
    assert_eq!(Rule::DisagreementRise { tau: -0.5 }.choose(&s), None);
    let bad = [f64::NAN, 0.01, 0.04, 0.09, 0.25, 0.64];
    assert_eq!(
        Rule::DisagreementRise { tau: 1.0 }.choose(&Series {
            disagreement: &bad,
            ..s
        }),
        None
    );
}

#[test]
fn proxy_peak_on_hand_series() {
    // PROXY rises monotonically: the naïve rule runs to the last point.
    assert_eq!(Rule::ProxyPeak.choose(&hand_series()), Some(5));
}

#[test]
fn rules_never_read_gold() {
    let s = hand_series();
    let no_gold = Series {
        gold: &[f64::NAN; 6],
        ..s
    };
    for rule in Rule::defaults() {
        assert_eq!(rule.choose(&s), rule.choose(&no_gold), "{}", rule.label());
    }
}

#[test]
fn regret_on_hand_series() {
    let s = hand_series();
    // GOLD = [0, 0.4, 0.7, 0.8, 0.6, 0.2]: peak at index 3 (KL 2), gain = 0.8 − 0 = 0.8.
    // Stopping at 1 (KL 0.5): regret = 0.8 − 0.4 = 0.4, fraction 0.4/0.8 = 0.5.
    let r = regret(&s, 1).expect("regret");
    assert_eq!((r.chosen, r.peak), (1, 3));
    assert_eq!((r.chosen_kl, r.peak_kl), (0.5, 2.0));
    assert_eq!((r.gold_chosen, r.gold_peak), (0.4, 0.8));
    assert!(close(r.regret, 0.4, 1e-12) && close(r.gain, 0.8, 1e-12));
    assert!(close(r.regret_frac.expect("gain > 0"), 0.5, 1e-12));
    // At the peak: no regret. At the end: 0.8 − 0.2 = 0.6, fraction 0.75.
    let at_peak = regret(&s, 3).expect("regret");
    assert_eq!((at_peak.regret, at_peak.regret_frac), (0.0, Some(0.0)));
    let at_end = regret(&s, 5).expect("regret");
    assert!(close(at_end.regret, 0.6, 1e-12) && close(at_end.regret_frac.expect("frac"), 0.75, 1e-12));
    // Out of range.
    assert!(regret(&s, 6).is_none());
}

#[test]
fn regret_frac_is_none_without_gain() {
    // Gold only falls: peak at the first point, gain = 0, nothing to lose as a fraction;
    // the absolute regret at index 2 is still 1.0 − 0.2 = 0.8.
    let (kl, gold) = ([0.0, 1.0, 2.0], [1.0, 0.5, 0.2]);
    let s = Series {
        kl: &kl,
        gold: &gold,
        proxy: &[],
        member_mean: &[],
        disagreement: &[],
        heldout: None,
    };
    let r = regret(&s, 2).expect("regret");
    assert_eq!((r.peak, r.gain, r.regret_frac), (0, 0.0, None));
    assert!(close(r.regret, 0.8, 1e-12));
}

// ---------------------------------------------------------------- at_kl

#[test]
fn at_kl_is_the_first_point_reaching_it_interpolated_from_the_one_before() {
    let (kl, y) = ([0.0, 1.0, 3.0], [1.0, 3.0, 2.0]);
    // Knots are exact.
    for i in 0..3 {
        assert_eq!(at_kl(&kl, &y, kl[i]), Some(y[i]));
    }
    // 0.5 → (1 + 3)/2 = 2; 2 → (3 + 2)/2 = 2.5; 1.5 → 3 + (0.5/2)(2 − 3) = 2.75.
    assert_eq!(at_kl(&kl, &y, 0.5), Some(2.0));
    assert_eq!(at_kl(&kl, &y, 2.0), Some(2.5));
    assert_eq!(at_kl(&kl, &y, 1.5), Some(2.75));
    // Never reached; already reached at the first point.
    assert_eq!(at_kl(&kl, &y, 3.1), None);
    assert_eq!(at_kl(&kl, &y, -0.1), Some(1.0));
    // Mismatched input, NaN.
    assert_eq!(at_kl(&kl, &[1.0, 2.0], 0.5), None);
    assert_eq!(at_kl(&kl, &y, f64::NAN), None);
    // A PPO run whose KL goes back: the first time it gets there counts (KL 2 is first
    // reached between the points at 1 and 4, not between 0.5 and 3 later on).
    let (kl, y) = ([0.0, 1.0, 4.0, 0.5, 3.0], [0.0, 1.0, 4.0, 9.0, 9.0]);
    assert_eq!(at_kl(&kl, &y, 2.0), Some(2.0));
    // A repeated knot gives its first value.
    assert_eq!(at_kl(&[0.0, 1.0, 1.0, 2.0], &[0.0, 1.0, 5.0, 6.0], 1.0), Some(1.0));
}

#[test]
fn rules_end_to_end_on_hand_series() {
    // Every default rule on the hand series: penalized_peak stops at the gold peak (regret
    // fraction 0); heldout_peak at 2 (0.1/0.8 = 0.125); disagreement_rise at 1 (0.5);
    // proxy_peak at 5 (0.75).
    let s = hand_series();
    let fracs: Vec<f64> = Rule::defaults()
        .iter()
        .map(|rule| {
            let i = rule.choose(&s).expect("rule applies");
            regret(&s, i).expect("regret").regret_frac.expect("frac")
        })
        .collect();
    for (got, want) in fracs.iter().zip([0.125, 0.0, 0.5, 0.75]) {
        assert!(close(*got, want, 1e-12), "{fracs:?}");
    }
}
