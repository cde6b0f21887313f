//! The figures `report` draws: the best-of-n and PPO curves from `curves.parquet`'s rows,
//! and the scaling of the fitted coefficients with proxy size.

use std::fmt::Write as _;
use std::path::Path;

use crate::analysis::{FitRow, Target};
use crate::error::{Error, Result};
use crate::fit::Form;
use crate::output::plot;
use crate::output::table::CurveRow;

/// The best-of-n figures ([`plot::bon_figures`]) and PPO figures ([`plot::ppo_figures`]) of
/// `rows`; returns the file names written (`STEM.png` and `STEM.svg` of each), in drawing order.
pub(super) fn curve_figures(rows: &[CurveRow], dir: &Path) -> Result<Vec<String>> {
    let mut stems = plot::bon_figures(rows, dir)?;
    stems.extend(plot::ppo_figures(rows, dir)?);
    Ok(stems
        .iter()
        .flat_map(|s| [format!("{s}.png"), format!("{s}.svg")])
        .collect())
}

/// `scaling.{png,svg}`: α, β and KL* of the single-proxy (`member0`) gold fits against
/// log10(proxy parameters), one line per data size (and noise, and β for PPO); one row of
/// panels per method with ≥ 2 proxy sizes. Returns whether it was drawn; when not, a stale
/// figure from an earlier report is removed so the folder matches its tables.
pub(super) fn scaling_figure(fits: &[FitRow], dir: &Path) -> Result<bool> {
    let single: Vec<&FitRow> = fits
        .iter()
        .filter(|f| f.target == Target::Gold && f.id.aggregator == "member0" && f.fit.is_some())
        .collect();
    let mut noises: Vec<f64> = single.iter().map(|f| f.id.label_noise).collect();
    noises.sort_by(f64::total_cmp);
    noises.dedup();
    let mut panels = Vec::new();
    let mut rows = 0;
    for (method, name, form) in [("bon", "best-of-n", Form::BestOfN), ("ppo", "PPO", Form::Rl)] {
        let mine: Vec<&FitRow> = single.iter().copied().filter(|f| f.id.method == method).collect();
        let mut sizes: Vec<u64> = mine.iter().map(|f| f.id.proxy_params).collect();
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.len() < 2 {
            continue;
        }
        rows += 1;
        let label = |f: &FitRow| {
            let mut l = format!("{} pairs", f.id.data_size);
            if noises.len() > 1 {
                let _ = write!(l, ", noise {}", f.id.label_noise);
            }
            if let Some(b) = f.id.kl_penalty {
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
            let mut lines: Vec<plot::XyLine> = Vec::new();
            for f in &mine {
                let fit = f.fit.expect("filtered on fit");
                let y = match coef {
                    "alpha" => Some(fit.alpha),
                    "beta" => Some(fit.beta),
                    _ => fit.kl_star,
                };
                let Some(y) = y.filter(|v| v.is_finite()) else { continue };
                let x = (f.id.proxy_params as f64).log10();
                let l = label(f);
                match lines.iter_mut().find(|line| line.label == l) {
                    Some(line) => line.points.push((x, y)),
                    None => lines.push(plot::XyLine {
                        label: l,
                        points: vec![(x, y)],
                    }),
                }
            }
            for line in &mut lines {
                line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            let what = match coef {
                "alpha" => "α",
                "beta" => "β",
                _ => "KL*",
            };
            panels.push(plot::XyPanel {
                title: format!("{name}, single proxy: {what}"),
                y_desc,
                lines,
            });
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
    plot::xy_figure(dir, "scaling", &panels, 3, "log10(proxy parameters)")?;
    Ok(true)
}
