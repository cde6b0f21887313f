//! Figures (PNG + SVG) drawn with plotters. The font is DejaVu Sans, shipped in `assets/`
//! (no system fonts needed). Files are written to a temporary name and renamed into place.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::output::table::CurveRow;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        )
        .map_err(|_| ())
        .expect("the shipped font parses");
    });
}

/// One line of a panel.
struct Line {
    label: String,
    color: RGBColor,
    width: u32,
    /// (x, y, standard error of y)
    points: Vec<(f64, f64, f64)>,
}

/// One panel: a title and its lines.
struct Panel {
    title: String,
    lines: Vec<Line>,
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];
const MEMBER_GREY: RGBColor = RGBColor(170, 170, 170);

/// Best-of-n figures, one pair per label-noise level: `bon_gold_noiseX` (gold vs sqrt(KL))
/// and `bon_proxy_noiseX` (aggregated proxy vs sqrt(KL)); one panel per proxy size (columns)
/// and data size (rows), one line per aggregator (members thin and grey), gold ± 1 s.e.
/// Replicate 0 only. Returns the stems drawn, each written as `STEM.png` and `STEM.svg`.
pub fn bon_figures(rows: &[CurveRow], dir: &Path) -> Result<Vec<String>> {
    // One replicate drawn (replicate 0); the report's statistics span every replicate.
    let bon: Vec<&CurveRow> = rows.iter().filter(|r| r.method == "bon" && r.replicate == 0).collect();
    let mut drawn = Vec::new();
    let mut noises: Vec<f64> = bon.iter().map(|r| r.label_noise).collect();
    noises.sort_by(f64::total_cmp);
    noises.dedup();
    for noise in noises {
        let sub: Vec<&CurveRow> = bon.iter().copied().filter(|r| r.label_noise == noise).collect();
        let mut sizes: Vec<(u64, String)> = sub.iter().map(|r| (r.proxy_params, r.proxy_size.clone())).collect();
        sizes.sort();
        sizes.dedup();
        let mut datas: Vec<u64> = sub.iter().map(|r| r.data_size).collect();
        datas.sort();
        datas.dedup();
        for (what, y_desc) in [
            ("gold", "gold reward (π_ref std units)"),
            ("proxy", "aggregated proxy reward (π_ref std units)"),
        ] {
            let mut panels = Vec::new();
            for &data in &datas {
                for (params, size) in &sizes {
                    let cell: Vec<&CurveRow> =
                        sub.iter().copied().filter(|r| r.data_size == data && &r.proxy_size == size).collect();
                    panels.push(Panel {
                        title: format!("proxy {size} ({params} params), {data} pairs, noise {noise:.2}"),
                        lines: lines(&cell, what == "gold", true),
                    });
                }
            }
            let stem = format!("bon_{what}_noise{noise:.2}");
            draw_grid(
                dir,
                &stem,
                &panels,
                (datas.len(), sizes.len()),
                "sqrt(KL bound) = sqrt(ln n − (n−1)/n)   [nats^½]",
                y_desc,
            )?;
            drawn.push(stem);
        }
    }
    Ok(drawn)
}

/// Lines of one panel: aggregators in colour (gold with its standard error), single members
/// grey when `members_grey` (best-of-n draws every member; PPO optimizes few, in colour).
fn lines(cell: &[&CurveRow], gold: bool, members_grey: bool) -> Vec<Line> {
    let mut keys: Vec<(String, Option<f64>)> = Vec::new();
    for r in cell {
        let k = (r.aggregator.clone(), r.lambda);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    // A lone proxy (ensemble of one) is the curve itself, not a grey backdrop.
    let lone = keys.len() == 1;
    let mut colour = 0;
    let mut out = Vec::new();
    for (agg, lambda) in keys {
        let mut pts: Vec<&&CurveRow> = cell.iter().filter(|r| r.aggregator == agg && r.lambda == lambda).collect();
        pts.sort_by(|a, b| a.sqrt_kl.total_cmp(&b.sqrt_kl));
        let points = pts
            .iter()
            .map(|r| if gold { (r.sqrt_kl, r.gold, r.gold_se) } else { (r.sqrt_kl, r.proxy, 0.0) })
            .collect();
        let member = agg.starts_with("member") && !lone && members_grey;
        let label = match lambda {
            Some(l) => crate::analysis::aggregator_label(&agg, Some(l)),
            None if member => "single members".to_string(),
            None if lone => "single proxy".to_string(),
            None if agg.starts_with("member") => format!("{agg} alone"),
            None => agg.clone(),
        };
        let (color, width) = if member {
            (MEMBER_GREY, 1)
        } else {
            colour += 1;
            (PALETTE[(colour - 1) % PALETTE.len()], 2)
        };
        out.push(Line { label, color, width, points });
    }
    // Members first so aggregators draw on top; one legend entry for all members.
    out.sort_by_key(|l| l.color != MEMBER_GREY);
    let mut seen_member = false;
    for l in out.iter_mut() {
        if l.color == MEMBER_GREY {
            if seen_member {
                l.label.clear();
            }
            seen_member = true;
        }
    }
    out
}

/// Something drawable on any plotters backend (so one writer serves PNG and SVG).
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String>;
}

/// Writes `fig` as `dir/stem.png` and `dir/stem.svg`, each to a temporary name renamed into place.
fn write_figure(dir: &Path, stem: &str, size: (u32, u32), fig: &impl Figure) -> Result<()> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for ext in ["png", "svg"] {
        let path = dir.join(format!("{stem}.{ext}"));
        // Unique across processes and hosts; ends in the extension the backend encodes by.
        let tmp = PathBuf::from(format!("{}.{ext}", crate::cell::store::temp_sibling(&path).display()));
        let result = if ext == "png" {
            let root = BitMapBackend::new(&tmp, size).into_drawing_area();
            fig.draw(&root).and_then(|_| root.present().map_err(|e| e.to_string()))
        } else {
            let root = SVGBackend::new(&tmp, size).into_drawing_area();
            fig.draw(&root).and_then(|_| root.present().map_err(|e| e.to_string()))
        };
        if let Err(msg) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Figure { path: path.clone(), msg });
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Panels sharing one range, one y description.
struct Grid<'a> {
    panels: &'a [Panel],
    grid: (usize, usize),
    x_desc: &'a str,
    y_desc: &'a str,
}

impl Figure for Grid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        draw_panels(root, self.panels, self.grid, self.x_desc, self.y_desc)
    }
}

fn draw_grid(dir: &Path, stem: &str, panels: &[Panel], grid: (usize, usize), x_desc: &str, y_desc: &str) -> Result<()> {
    let size = (520 * grid.1 as u32, 400 * grid.0 as u32);
    write_figure(dir, stem, size, &Grid { panels, grid, x_desc, y_desc })
}

fn draw_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
    grid: (usize, usize),
    x_desc: &str,
    y_desc: &str,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly(grid);
    // One range for every panel of the figure, so panels compare at a glance.
    let all = panels.iter().flat_map(|p| p.lines.iter()).flat_map(|l| l.points.iter());
    let (mut x1, mut y0, mut y1) = (0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y, se) in all {
        x1 = x1.max(x);
        y0 = y0.min(y - se);
        y1 = y1.max(y + se);
    }
    if !y0.is_finite() {
        return Ok(());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    for (area, panel) in areas.iter().zip(panels) {
        if panel.lines.is_empty() {
            continue;
        }
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(38)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x1 * 1.02 + 1e-9, (y0 - pad)..(y1 + pad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &panel.lines {
            let style = line.color.stroke_width(line.width);
            let series = chart
                .draw_series(LineSeries::new(line.points.iter().map(|&(x, y, _)| (x, y)), style))
                .map_err(|e| e.to_string())?;
            if !line.label.is_empty() {
                let c = line.color;
                series
                    .label(&line.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            }
            if line.points.iter().any(|p| p.2 > 0.0) && line.color != MEMBER_GREY {
                chart
                    .draw_series(
                        line.points
                            .iter()
                            .map(|&(x, y, se)| ErrorBar::new_vertical(x, y - se, y, y + se, line.color.mix(0.5), 5)),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        draw_legend(&mut chart)?;
    }
    Ok(())
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend every panel uses: upper left, on a translucent white box.
fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> std::result::Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| e.to_string())
}

/// PPO figures, per label-noise level:
/// - `ppo_gold_noiseX`, `ppo_proxy_noiseX`: gold (± 1 s.e. over held-out prompts) and the
///   aggregated proxy against sqrt(KL) measured at the evaluation checkpoints; one panel per
///   ensemble (rows) and KL penalty β (columns), one line per aggregator;
/// - `ppo_beta_noiseX`: gold against sqrt(KL), one panel per ensemble × aggregator, one
///   line per β (does a KL penalty act like stopping the β = 0 run early?).
///
/// Replicate 0 only. Returns the stems drawn, each written as `STEM.png` and `STEM.svg`.
pub fn ppo_figures(rows: &[CurveRow], dir: &Path) -> Result<Vec<String>> {
    let ppo: Vec<&CurveRow> = rows.iter().filter(|r| r.method == "ppo" && r.replicate == 0).collect();
    let mut drawn = Vec::new();
    let x_desc = "sqrt(KL(π‖π_ref)), k1 on fresh samples   [nats^½]";
    let mut noises: Vec<f64> = ppo.iter().map(|r| r.label_noise).collect();
    noises.sort_by(f64::total_cmp);
    noises.dedup();
    for noise in noises {
        let sub: Vec<&CurveRow> = ppo.iter().copied().filter(|r| r.label_noise == noise).collect();
        let ensembles = distinct(sub.iter().map(|r| r.ensemble.clone()));
        let betas = distinct(sub.iter().map(|r| r.kl_penalty.unwrap_or(0.0).to_bits()));
        for (what, y_desc) in [
            ("gold", "gold reward (π_ref std units)"),
            ("proxy", "aggregated proxy reward (π_ref std units)"),
        ] {
            let mut panels = Vec::new();
            for e in &ensembles {
                for &b in &betas {
                    let cell: Vec<&CurveRow> = sub
                        .iter()
                        .copied()
                        .filter(|r| &r.ensemble == e && r.kl_penalty.unwrap_or(0.0).to_bits() == b)
                        .collect();
                    panels.push(Panel {
                        title: format!("PPO vs {e}, β = {}", f64::from_bits(b)),
                        lines: lines(&cell, what == "gold", false),
                    });
                }
            }
            let stem = format!("ppo_{what}_noise{noise:.2}");
            draw_grid(dir, &stem, &panels, (ensembles.len(), betas.len()), x_desc, y_desc)?;
            drawn.push(stem);
        }
        let aggs = distinct(sub.iter().map(|r| (r.aggregator.clone(), r.lambda.map(f64::to_bits))));
        let mut panels = Vec::new();
        for e in &ensembles {
            for (agg, lambda) in &aggs {
                let mut lines = Vec::new();
                for (i, &b) in betas.iter().enumerate() {
                    let mut pts: Vec<&CurveRow> = sub
                        .iter()
                        .copied()
                        .filter(|r| {
                            &r.ensemble == e
                                && &r.aggregator == agg
                                && r.lambda.map(f64::to_bits) == *lambda
                                && r.kl_penalty.unwrap_or(0.0).to_bits() == b
                        })
                        .collect();
                    pts.sort_by(|a, b| a.sqrt_kl.total_cmp(&b.sqrt_kl));
                    lines.push(Line {
                        label: format!("β = {}", f64::from_bits(b)),
                        color: PALETTE[i % PALETTE.len()],
                        width: 2,
                        points: pts.iter().map(|r| (r.sqrt_kl, r.gold, r.gold_se)).collect(),
                    });
                }
                let agg_label = match lambda {
                    Some(l) => crate::analysis::aggregator_label(agg, Some(f64::from_bits(*l))),
                    None => agg.clone(),
                };
                panels.push(Panel {
                    title: format!("PPO vs {e}, {agg_label}"),
                    lines,
                });
            }
        }
        let stem = format!("ppo_beta_noise{noise:.2}");
        draw_grid(
            dir,
            &stem,
            &panels,
            (ensembles.len(), aggs.len()),
            x_desc,
            "gold reward (π_ref std units)",
        )?;
        drawn.push(stem);
    }
    Ok(drawn)
}

/// Distinct values in order of first appearance.
fn distinct<T: PartialEq>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for v in it {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Paths of the best-of-n figures for `noise` (PNG and SVG), for reports and tests.
pub fn bon_figure_paths(dir: &Path, noise: f64) -> Vec<PathBuf> {
    ["gold", "proxy"]
        .iter()
        .flat_map(|w| ["png", "svg"].map(|e| dir.join(format!("bon_{w}_noise{noise:.2}.{e}"))))
        .collect()
}

/// Paths of the PPO figures for `noise` (PNG and SVG).
pub fn ppo_figure_paths(dir: &Path, noise: f64) -> Vec<PathBuf> {
    ["gold", "proxy", "beta"]
        .iter()
        .flat_map(|w| ["png", "svg"].map(|e| dir.join(format!("ppo_{w}_noise{noise:.2}.{e}"))))
        .collect()
}

/// One line of a figure with free axes: a label and its (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct XyLine {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel with free axes: a title, the y-axis description and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct XyPanel {
    pub title: String,
    pub y_desc: String,
    pub lines: Vec<XyLine>,
}

/// Writes `DIR/STEM.png` and `DIR/STEM.svg`: `panels` row by row in `cols` columns, each
/// panel with its own x and y range (from its data: scaling fits mix α, β and KL*), points
/// marked and joined; a line's colour follows its label across panels. Used for
/// `scaling.{png,svg}` (fitted coefficients against log10 of proxy parameters).
pub fn xy_figure(dir: &Path, stem: &str, panels: &[XyPanel], cols: usize, x_desc: &str) -> Result<()> {
    let cols = cols.max(1);
    let grid = (panels.len().div_ceil(cols).max(1), cols);
    let labels = distinct(panels.iter().flat_map(|p| p.lines.iter().map(|l| l.label.clone())));
    let colored: Vec<Panel> = panels
        .iter()
        .map(|p| Panel {
            title: p.title.clone(),
            lines: p
                .lines
                .iter()
                .map(|l| Line {
                    label: l.label.clone(),
                    color: PALETTE[labels.iter().position(|x| x == &l.label).unwrap_or(0) % PALETTE.len()],
                    width: 2,
                    points: l.points.iter().map(|&(x, y)| (x, y, 0.0)).collect(),
                })
                .collect(),
        })
        .collect();
    let y_descs: Vec<&str> = panels.iter().map(|p| p.y_desc.as_str()).collect();
    let size = (480 * grid.1 as u32, 380 * grid.0 as u32);
    write_figure(
        dir,
        stem,
        size,
        &XyGrid {
            panels: &colored,
            grid,
            x_desc,
            y_descs: &y_descs,
        },
    )
}

/// Panels with their own ranges and y descriptions.
struct XyGrid<'a> {
    panels: &'a [Panel],
    grid: (usize, usize),
    x_desc: &'a str,
    y_descs: &'a [&'a str],
}

impl Figure for XyGrid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        draw_xy_panels(root, self.panels, self.grid, self.x_desc, self.y_descs)
    }
}

/// Panels with per-panel ranges, points marked (see [`xy_figure`]).
fn draw_xy_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
    grid: (usize, usize),
    x_desc: &str,
    y_descs: &[&str],
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly(grid);
    for ((area, panel), y_desc) in areas.iter().zip(panels).zip(y_descs) {
        let pts = || panel.lines.iter().flat_map(|l| l.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y, _) in pts() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !x0.is_finite() || !y0.is_finite() {
            continue;
        }
        let xpad = ((x1 - x0) * 0.08).max(0.05);
        let ypad = ((y1 - y0) * 0.1).max(1e-3 * y0.abs().max(y1.abs()).max(1e-3));
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(38)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - xpad)..(x1 + xpad), (y0 - ypad)..(y1 + ypad))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(*y_desc)
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in &panel.lines {
            let pts: Vec<(f64, f64)> =
                line.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|p| (p.0, p.1)).collect();
            let c = line.color;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(line.width)))
                .map_err(|e| e.to_string())?
                .label(&line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        draw_legend(&mut chart)?;
    }
    Ok(())
}
