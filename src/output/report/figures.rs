//! The figures `report` draws: the best-of-n and PPO curves from `curves.parquet`'s rows,
//! and the scaling of the fitted coefficients with proxy size.

use std::fmt::Write as _;
use std::path::Path;

use crate::stats::analysis::{FitRow, Target};
use crate::error::{Error, Result};
use crate::stats::fit::Form;
use crate::output::plot;
use crate::output::series;
use crate::output::table::CurveRow;

/// Every method's curve figures ([`plot::figures`]) of `rows`; returns the file names
/// written (`STEM.png` and `STEM.svg` of each), in drawing order.
pub(super) fn curve_figures(rows: &[CurveRow], dir: &Path) -> Result<Vec<String>> {
    let stems = plot::figures(rows, dir)?;
    Ok(stems
        .iter()
        .flat_map(|s| [format!("{s}.png"), format!("{s}.svg")])
        .collect())
}

/// `scaling.{png,svg}`: α, β and KL* of the single-proxy (`member0`) gold fits against
/// log10(proxy parameters), one line per data size (and noise, and β for PPO); one row of
/// panels per method with ≥ 2 proxy sizes. Each replicate's fit is a small pale dot; the line
/// joins the per-size means across replicates, each with its 95% Student-t interval across
/// replicates (t(0.975, R − 1)·sd/√R, none with one replicate). A KL* beyond the largest KL
/// measured on its curve (an extrapolation, † in the fits table) is left out, and the panel's
/// title counts those left out. Returns whether it was drawn; when not, a stale figure from an
/// earlier report is removed so the folder matches its tables.
pub(super) fn scaling_figure(fits: &[FitRow], dir: &Path) -> Result<bool> {
    let single: Vec<&FitRow> = fits
        .iter()
        .filter(|f| f.target == Target::Gold && f.id.line.aggregator == crate::stats::aggregate::Aggregator::Member(0).into() && f.fit.is_some())
        .collect();
    let mut noises: Vec<f64> = single.iter().map(|f| f.id.line.label_noise).collect();
    noises.sort_by(f64::total_cmp);
    noises.dedup();
    let mut panels = Vec::new();
    let mut rows = 0;
    // Replicates per (line, size), over every panel: for the header.
    let (mut fewest, mut most) = (usize::MAX, 0usize);
    for m in crate::plan::kinds::METHODS {
        let (method, name, form) = (m.name(), m.traits().label, m.traits().form);
        let mine: Vec<&FitRow> = single.iter().copied().filter(|f| f.id.line.method == method).collect();
        let mut sizes: Vec<u64> = mine.iter().map(|f| f.id.line.proxy_params).collect();
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.len() < 2 {
            continue;
        }
        rows += 1;
        let label = |f: &FitRow| {
            let mut l = format!("{} pairs", f.id.line.data_size);
            if noises.len() > 1 {
                let _ = write!(l, ", noise {}", f.id.line.label_noise);
            }
            if let Some(b) = f.id.line.kl_penalty {
                let _ = write!(l, ", KL penalty {b}");
            }
            l
        };
        let beta_unit = match form {
            Form::BestOfN => "gold/nat",
            Form::Rl => "gold/√nat",
        };
        for (coef, y_desc) in [
            ("alpha", "α (gold/√nat)".to_string()),
            ("beta", format!("β ({beta_unit})")),
            ("kl_star", "KL* = d*² (nats)".to_string()),
        ] {
            // label → proxy params → the replicates' values, in order of first appearance.
            let mut by: Vec<(String, Vec<(u64, Vec<f64>)>)> = Vec::new();
            let mut beyond = 0;
            for f in &mine {
                let fit = f.fit.expect("filtered on fit");
                let y = match coef {
                    "alpha" => Some(fit.alpha),
                    "beta" => Some(fit.beta),
                    _ => match fit.kl_star {
                        // A fitted peak beyond the largest KL measured is an extrapolation.
                        Some(k) if k > f.last_kl.max(f.peak_kl) => {
                            beyond += 1;
                            None
                        }
                        k => k,
                    },
                };
                let Some(y) = y.filter(|v| v.is_finite()) else { continue };
                let l = label(f);
                let i = match by.iter().position(|(x, _)| *x == l) {
                    Some(i) => i,
                    None => {
                        by.push((l, Vec::new()));
                        by.len() - 1
                    }
                };
                let sizes = &mut by[i].1;
                match sizes.iter_mut().find(|(p, _)| *p == f.id.line.proxy_params) {
                    Some((_, v)) => v.push(y),
                    None => sizes.push((f.id.line.proxy_params, vec![y])),
                }
            }
            let mut lines: Vec<plot::XyLine> = Vec::new();
            for (l, mut sizes) in by {
                sizes.sort_by_key(|(p, _)| *p);
                let mut line = plot::XyLine {
                    label: l,
                    points: Vec::new(),
                    intervals: Vec::new(),
                    scatter: Vec::new(),
                };
                for (params, values) in &sizes {
                    let x = (*params as f64).log10();
                    fewest = fewest.min(values.len());
                    most = most.max(values.len());
                    let (mean, interval) = series::replicate_interval(values);
                    line.points.push((x, mean));
                    if let Some((lo, hi)) = interval {
                        line.intervals.push((x, lo, hi));
                        line.scatter.extend(values.iter().map(|&v| (x, v)));
                    }
                }
                lines.push(line);
            }
            let what = match coef {
                "alpha" => "α",
                "beta" => "β",
                _ => "KL*",
            };
            let mut title = format!("{name}, single proxy: {what}");
            if beyond > 0 {
                let _ = write!(title, " ({beyond} beyond measured KL left out)");
            }
            panels.push(plot::XyPanel { title, y_desc, lines });
        }
    }
    if rows == 0 {
        for ext in ["png", "svg"] {
            let p = dir.join(format!("scaling.{ext}"));
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        return Ok(false);
    }
    let mut header = vec![format!(
        "Single-proxy (member0) gold fits against proxy size: {}",
        match (fewest, most) {
            (1, 1) => "one replicate, one fit per size".to_string(),
            (a, b) if a == b => format!("mean of {a} replicates per size"),
            (a, b) => format!("mean of {a}–{b} replicates per size"),
        }
    )];
    if most > 1 {
        header.push("bars: 95% interval across replicates (mean ± t(0.975, R−1)·sd/√R); small dots: each replicate's fit".into());
    }
    header.push("KL* beyond the largest KL measured on its curve (an extrapolation) is left out".into());
    plot::xy_figure(dir, "scaling", &panels, 3, "log10(proxy parameters)", &header)?;
    Ok(true)
}
