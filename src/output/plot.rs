//! Figures (PNG + SVG) drawn with plotters. The font is DejaVu Sans, shipped in `assets/`
//! (no system fonts needed). Files are written to a temporary name and renamed into place.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::output::series::{self, ExpectedSeries, Measure};
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

/// One line of a panel: its expected (mean) curve and what is drawn around it.
struct Line {
    label: String,
    color: RGBColor,
    width: u32,
    /// The mean across replicates, (x, y), in order of optimization.
    points: Vec<(f64, f64)>,
    /// The 95% band across replicates: (x, low, high); empty with one replicate.
    band: Vec<(f64, f64, f64)>,
    /// One replicate only: vertical bars (x, y, ± half-width), gold's s.e. over prompts.
    bars: Vec<(f64, f64, f64)>,
    /// Horizontal bars (y, x_min, x, x_max): the replicates' spread of sqrt(KL).
    x_spread: Vec<(f64, f64, f64, f64)>,
    /// Each replicate's own curve (drawn faint, behind); empty with one replicate.
    faint: Vec<Vec<(f64, f64)>>,
}

impl Line {
    /// A line drawn from `s`: with its band, bars and faint replicates when `decorate`
    /// (single members drawn as a grey backdrop are their mean alone).
    fn of(s: &ExpectedSeries, label: String, color: RGBColor, width: u32, decorate: bool) -> Line {
        let many = s.replicates > 1;
        Line {
            label,
            color,
            width,
            points: s.points.iter().map(|p| (p.x, p.mean)).collect(),
            band: if decorate {
                s.points.iter().filter_map(|p| p.band.map(|(lo, hi)| (p.x, lo, hi))).collect()
            } else {
                Vec::new()
            },
            bars: if decorate {
                s.points.iter().filter_map(|p| p.prompt_se.filter(|se| *se > 0.0).map(|se| (p.x, p.mean, se))).collect()
            } else {
                Vec::new()
            },
            x_spread: if decorate {
                s.points.iter().filter(|p| p.x_max > p.x_min).map(|p| (p.mean, p.x_min, p.x, p.x_max)).collect()
            } else {
                Vec::new()
            },
            faint: if decorate && many { s.curves.iter().map(|c| c.points.clone()).collect() } else { Vec::new() },
        }
    }
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

/// The lines of a figure's header: what it shows, how many replicates, what the band and
/// bars are.
fn header(what: String, series: &[&ExpectedSeries], gold: bool, kl_spread: bool, members: bool) -> Vec<String> {
    let phrase = series::replicates_phrase(series);
    let many = series.iter().any(|s| s.replicates > 1);
    let mut lines = vec![format!("{what}: {phrase}")];
    if many {
        lines.push("shaded: 95% band across replicates (mean ± t(0.975, R−1)·sd/√R)".to_string());
        lines.push("faint: each replicate's own curve".to_string());
        if kl_spread {
            lines.push("horizontal bars: min–max of the replicates' sqrt(KL) at each checkpoint".to_string());
        }
    } else if gold {
        lines.push("bars: ± 1 s.e. over prompts (one run; no across-replicate band)".to_string());
    }
    if members {
        lines.push("single members: grey, mean across replicates only".to_string());
    }
    lines
}

/// The figures of a method whose KL is set by its design (best-of-n: the bound of n), one
/// pair per label-noise level: `METHOD_gold_noiseX` (gold vs sqrt(KL))
/// and `METHOD_proxy_noiseX` (aggregated proxy vs sqrt(KL)); one panel per proxy size (columns)
/// and data size (rows), one line per aggregator (single members thin and grey). Each line is
/// the expected curve across replicates ([`series::expected_series`], points aligned by n)
/// with its 95% band across replicates and each replicate faint behind; with one replicate,
/// that run's curve (gold ± 1 s.e. over prompts). Returns the stems drawn, each written as
/// `STEM.png` and `STEM.svg`.
pub fn design_figures(rows: &[CurveRow], method: &str, dir: &Path) -> Result<Vec<String>> {
    let title = capitalized(crate::plan::kinds::label(method));
    let mine: Vec<CurveRow> = rows.iter().filter(|r| r.method == method).cloned().collect();
    let mut drawn = Vec::new();
    let mut noises: Vec<f64> = mine.iter().map(|r| r.label_noise).collect();
    noises.sort_by(f64::total_cmp);
    noises.dedup();
    for noise in noises {
        let sub: Vec<CurveRow> = mine.iter().filter(|r| r.label_noise == noise).cloned().collect();
        let mut sizes: Vec<(u64, String)> = sub.iter().map(|r| (r.proxy_params, r.proxy_size.clone())).collect();
        sizes.sort();
        sizes.dedup();
        let mut datas: Vec<u64> = sub.iter().map(|r| r.data_size).collect();
        datas.sort();
        datas.dedup();
        for (what, measure, y_desc) in [
            ("gold", Measure::Gold, "gold reward (π_ref std units)"),
            ("proxy", Measure::Proxy, "aggregated proxy reward (π_ref std units)"),
        ] {
            let all = series::expected_series(&sub, measure);
            let mut panels = Vec::new();
            for &data in &datas {
                for (params, size) in &sizes {
                    let cell: Vec<&ExpectedSeries> =
                        all.iter().filter(|s| s.line.data_size == data && &s.line.proxy_size == size).collect();
                    panels.push(Panel {
                        title: format!("proxy {size} ({params} params), {data} pairs, noise {noise:.2}"),
                        lines: lines(&cell, true),
                    });
                }
            }
            let refs: Vec<&ExpectedSeries> = all.iter().collect();
            let members = panels.iter().flat_map(|p| &p.lines).any(|l| l.color == MEMBER_GREY);
            let head = header(format!("{title}, {what}, label noise {noise:.2}"), &refs, what == "gold", false, members);
            let stem = format!("{method}_{what}_noise{noise:.2}");
            draw_grid(
                dir,
                &stem,
                &panels,
                (datas.len(), sizes.len()),
                "sqrt(KL bound) = sqrt(ln n − (n−1)/n)   [nats^½]",
                y_desc,
                &head,
            )?;
            drawn.push(stem);
        }
    }
    Ok(drawn)
}

/// Lines of one panel, one per series: aggregators in colour, single members grey when
/// `members_grey` (best-of-n draws every member; PPO optimizes few, in colour).
fn lines(cell: &[&ExpectedSeries], members_grey: bool) -> Vec<Line> {
    // A lone proxy (ensemble of one) is the curve itself, not a grey backdrop.
    let lone = cell.len() == 1;
    let mut colour = 0;
    let mut out = Vec::new();
    for s in cell {
        let agg = s.line.aggregator;
        // A shaped member is drawn as its own line (`member0+par alone`), never grey.
        let single = agg.aggregator.member().is_some();
        let member = agg.member().is_some() && !lone && members_grey;
        let label = match agg.lambda() {
            Some(_) => agg.label(),
            None if member => "single members (mean)".to_string(),
            None if lone => format!("single proxy{}", agg.shaping.suffix()),
            None if single => format!("{} alone", agg.name()),
            None => agg.name(),
        };
        let line = if member {
            Line::of(s, label, MEMBER_GREY, 1, false)
        } else {
            colour += 1;
            Line::of(s, label, PALETTE[(colour - 1) % PALETTE.len()], 2, true)
        };
        out.push(line);
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

/// Panels sharing one range, one y description, under a header of a few lines.
struct Grid<'a> {
    panels: &'a [Panel],
    grid: (usize, usize),
    x_desc: &'a str,
    y_desc: &'a str,
    header: &'a [String],
}

impl Figure for Grid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let body = draw_header(root, self.header)?;
        draw_panels(&body, self.panels, self.grid, self.x_desc, self.y_desc)
    }
}

/// Height of a header line, pixels.
const HEADER_LINE: u32 = 17;

fn header_height(header: &[String]) -> u32 {
    if header.is_empty() {
        0
    } else {
        HEADER_LINE * header.len() as u32 + 8
    }
}

/// Writes `header` at the top of `root`, one text line each; returns the area below it.
fn draw_header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    header: &[String],
) -> std::result::Result<DrawingArea<DB, Shift>, String> {
    let h = header_height(header);
    if h == 0 {
        return Ok(root.clone());
    }
    let (top, body) = root.split_vertically(h);
    for (i, line) in header.iter().enumerate() {
        let style = if i == 0 { ("sans-serif", 15).into_font().color(&BLACK) } else { ("sans-serif", 13).into_font().color(&BLACK.mix(0.8)) };
        top.draw(&Text::new(line.clone(), (10, 4 + HEADER_LINE as i32 * i as i32), style))
            .map_err(|e| e.to_string())?;
    }
    Ok(body)
}

fn draw_grid(
    dir: &Path,
    stem: &str,
    panels: &[Panel],
    grid: (usize, usize),
    x_desc: &str,
    y_desc: &str,
    header: &[String],
) -> Result<()> {
    let size = (520 * grid.1 as u32, 400 * grid.0 as u32 + header_height(header));
    write_figure(dir, stem, size, &Grid { panels, grid, x_desc, y_desc, header })
}

/// Every (x, y) a line draws, for the shared range.
fn extent(line: &Line) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = line.points.clone();
    v.extend(line.band.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]));
    v.extend(line.bars.iter().flat_map(|&(x, y, h)| [(x, y - h), (x, y + h)]));
    v.extend(line.x_spread.iter().flat_map(|&(y, lo, _, hi)| [(lo, y), (hi, y)]));
    v.extend(line.faint.iter().flatten().copied());
    v.retain(|p| p.0.is_finite() && p.1.is_finite());
    v
}

fn draw_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
    grid: (usize, usize),
    x_desc: &str,
    y_desc: &str,
) -> std::result::Result<(), String> {
    let areas = root.split_evenly(grid);
    // One range for every panel of the figure, so panels compare at a glance.
    let (mut x1, mut y0, mut y1) = (0f64, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in panels.iter().flat_map(|p| p.lines.iter()).flat_map(extent) {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
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
            .x_label_formatter(&|v| series::tick_label(*v))
            .y_label_formatter(&|v| series::tick_label(*v))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        // Behind everything: each replicate's curve, faint; then the bands; then the means.
        for line in &panel.lines {
            for curve in &line.faint {
                chart
                    .draw_series(LineSeries::new(curve.iter().copied(), line.color.mix(0.3).stroke_width(1)))
                    .map_err(|e| e.to_string())?;
            }
        }
        for line in &panel.lines {
            if line.band.len() >= 2 {
                let mut outline: Vec<(f64, f64)> = line.band.iter().map(|&(x, _, hi)| (x, hi)).collect();
                outline.extend(line.band.iter().rev().map(|&(x, lo, _)| (x, lo)));
                chart
                    .draw_series(std::iter::once(Polygon::new(outline, line.color.mix(0.18).filled())))
                    .map_err(|e| e.to_string())?;
            } else if let Some(&(x, lo, hi)) = line.band.first() {
                chart
                    .draw_series(std::iter::once(ErrorBar::new_vertical(x, lo, (lo + hi) / 2.0, hi, line.color.mix(0.4), 5)))
                    .map_err(|e| e.to_string())?;
            }
        }
        for line in &panel.lines {
            let style = line.color.stroke_width(line.width);
            let series = chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(|e| e.to_string())?;
            if !line.label.is_empty() {
                let c = line.color;
                series
                    .label(&line.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            }
            if !line.bars.is_empty() {
                chart
                    .draw_series(
                        line.bars.iter().map(|&(x, y, se)| ErrorBar::new_vertical(x, y - se, y, y + se, line.color.mix(0.5), 5)),
                    )
                    .map_err(|e| e.to_string())?;
            }
            if !line.x_spread.is_empty() {
                chart
                    .draw_series(
                        line.x_spread.iter().map(|&(y, lo, x, hi)| ErrorBar::new_horizontal(y, lo, x, hi, line.color.mix(0.6), 4)),
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

/// The figures of a method whose KL is measured at a policy's checkpoints (PPO), per
/// label-noise level:
/// - `METHOD_gold_noiseX`, `METHOD_proxy_noiseX`: gold and the aggregated proxy against sqrt(KL)
///   measured at the evaluation checkpoints; one panel per ensemble (rows) and KL penalty β
///   (columns), one line per aggregator;
/// - `METHOD_beta_noiseX`: gold against sqrt(KL), one panel per ensemble × aggregator, one
///   line per β (does a KL penalty act like stopping the β = 0 run early?).
///
/// Each line is the expected curve across replicates ([`series::expected_series`]: points
/// aligned by evaluation step, placed at sqrt of the replicates' mean KL, in step order) with
/// its 95% band across replicates, a horizontal bar from the smallest to the largest
/// replicate's sqrt(KL) at each checkpoint, and each replicate faint behind; with one
/// replicate, that run's curve (gold ± 1 s.e. over prompts). Returns the stems drawn, each
/// written as `STEM.png` and `STEM.svg`.
pub fn checkpoint_figures(rows: &[CurveRow], method: &str, dir: &Path) -> Result<Vec<String>> {
    let title = crate::plan::kinds::label(method);
    let mine: Vec<CurveRow> = rows.iter().filter(|r| r.method == method).cloned().collect();
    let mut drawn = Vec::new();
    let x_desc = "sqrt(KL(π‖π_ref)), k1 on fresh samples   [nats^½]";
    let mut noises: Vec<f64> = mine.iter().map(|r| r.label_noise).collect();
    noises.sort_by(f64::total_cmp);
    noises.dedup();
    let beta_of = |s: &ExpectedSeries| s.line.kl_penalty.unwrap_or(0.0).to_bits();
    for noise in noises {
        let sub: Vec<CurveRow> = mine.iter().filter(|r| r.label_noise == noise).cloned().collect();
        let ensembles = distinct(sub.iter().map(|r| r.ensemble.clone()));
        let betas = distinct(sub.iter().map(|r| r.kl_penalty.unwrap_or(0.0).to_bits()));
        let mut gold_series = Vec::new();
        for (what, measure, y_desc) in [
            ("gold", Measure::Gold, "gold reward (π_ref std units)"),
            ("proxy", Measure::Proxy, "aggregated proxy reward (π_ref std units)"),
        ] {
            let all = series::expected_series(&sub, measure);
            let mut panels = Vec::new();
            for e in &ensembles {
                for &b in &betas {
                    let cell: Vec<&ExpectedSeries> = all.iter().filter(|s| &s.line.ensemble == e && beta_of(s) == b).collect();
                    panels.push(Panel {
                        title: format!("{title} vs {e}, β = {}", f64::from_bits(b)),
                        lines: lines(&cell, false),
                    });
                }
            }
            let refs: Vec<&ExpectedSeries> = all.iter().collect();
            let head = header(format!("{title}, {what}, label noise {noise:.2}"), &refs, what == "gold", true, false);
            let stem = format!("{method}_{what}_noise{noise:.2}");
            draw_grid(dir, &stem, &panels, (ensembles.len(), betas.len()), x_desc, y_desc, &head)?;
            drawn.push(stem);
            if measure == Measure::Gold {
                gold_series = all;
            }
        }
        let aggs = distinct(gold_series.iter().map(|s| s.line.aggregator));
        let mut panels = Vec::new();
        for e in &ensembles {
            for agg in &aggs {
                let mut lines = Vec::new();
                for (i, &b) in betas.iter().enumerate() {
                    let found = gold_series.iter().find(|s| {
                        &s.line.ensemble == e && s.line.aggregator == *agg && beta_of(s) == b
                    });
                    if let Some(s) = found {
                        lines.push(Line::of(s, format!("β = {}", f64::from_bits(b)), PALETTE[i % PALETTE.len()], 2, true));
                    }
                }
                let agg_label = agg.label();
                panels.push(Panel {
                    title: format!("{title} vs {e}, {agg_label}"),
                    lines,
                });
            }
        }
        let refs: Vec<&ExpectedSeries> = gold_series.iter().collect();
        let head = header(format!("{title}, gold by KL penalty β, label noise {noise:.2}"), &refs, true, true, false);
        let stem = format!("{method}_beta_noise{noise:.2}");
        draw_grid(
            dir,
            &stem,
            &panels,
            (ensembles.len(), aggs.len()),
            x_desc,
            "gold reward (π_ref std units)",
            &head,
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

/// Every method's curve figures, in the registry's order: a method whose KL is measured
/// (a policy's checkpoints) by [`checkpoint_figures`], one whose KL is set by its design by
/// [`design_figures`]. Returns the stems drawn.
pub fn figures(rows: &[CurveRow], dir: &Path) -> Result<Vec<String>> {
    let mut stems = Vec::new();
    for m in crate::plan::kinds::METHODS {
        stems.extend(if m.traits().kl_measured { checkpoint_figures(rows, m.name(), dir)? } else { design_figures(rows, m.name(), dir)? });
    }
    Ok(stems)
}

/// Paths of method `method`'s curve figures for `noise` (PNG and SVG), for reports and
/// tests: `gold` and `proxy`, and `beta` where its KL is measured.
pub fn figure_paths(dir: &Path, method: &str, noise: f64) -> Vec<PathBuf> {
    let whats: &[&str] = if crate::plan::kinds::traits(method).kl_measured { &["gold", "proxy", "beta"] } else { &["gold", "proxy"] };
    whats
        .iter()
        .flat_map(|w| ["png", "svg"].map(|e| dir.join(format!("{method}_{w}_noise{noise:.2}.{e}"))))
        .collect()
}

/// `label` with its first letter in capitals (`Best-of-n`).
pub fn capitalized(label: &str) -> String {
    let mut c = label.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// One line of a figure with free axes: a label, its points (marked and joined), each point's
/// interval (drawn as a vertical bar) and loose points (marked small and pale, not joined).
#[derive(Debug, Clone, PartialEq)]
pub struct XyLine {
    pub label: String,
    /// (x, y), joined in this order.
    pub points: Vec<(f64, f64)>,
    /// (x, low, high): a vertical bar each.
    pub intervals: Vec<(f64, f64, f64)>,
    /// (x, y): marked, not joined (e.g. each replicate's value behind the mean).
    pub scatter: Vec<(f64, f64)>,
}

/// One panel with free axes: a title, the y-axis description and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct XyPanel {
    pub title: String,
    pub y_desc: String,
    pub lines: Vec<XyLine>,
}

/// Writes `DIR/STEM.png` and `DIR/STEM.svg`: `header` (one text line each) over `panels`
/// row by row in `cols` columns, each panel with its own x and y range (from its data,
/// intervals and scatter included: scaling fits mix α, β and KL*); a line's colour follows
/// its label across panels. Used for `scaling.{png,svg}` (fitted coefficients against log10
/// of proxy parameters).
pub fn xy_figure(dir: &Path, stem: &str, panels: &[XyPanel], cols: usize, x_desc: &str, header: &[String]) -> Result<()> {
    let cols = cols.max(1);
    let grid = (panels.len().div_ceil(cols).max(1), cols);
    let labels = distinct(panels.iter().flat_map(|p| p.lines.iter().map(|l| l.label.clone())));
    let y_descs: Vec<&str> = panels.iter().map(|p| p.y_desc.as_str()).collect();
    let colors: Vec<Vec<RGBColor>> = panels
        .iter()
        .map(|p| {
            p.lines
                .iter()
                .map(|l| PALETTE[labels.iter().position(|x| x == &l.label).unwrap_or(0) % PALETTE.len()])
                .collect()
        })
        .collect();
    let size = (480 * grid.1 as u32, 380 * grid.0 as u32 + header_height(header));
    write_figure(
        dir,
        stem,
        size,
        &XyGrid {
            panels,
            colors: &colors,
            grid,
            x_desc,
            y_descs: &y_descs,
            header,
        },
    )
}

/// Panels with their own ranges and y descriptions.
struct XyGrid<'a> {
    panels: &'a [XyPanel],
    colors: &'a [Vec<RGBColor>],
    grid: (usize, usize),
    x_desc: &'a str,
    y_descs: &'a [&'a str],
    header: &'a [String],
}

impl Figure for XyGrid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let body = draw_header(root, self.header)?;
        draw_xy_panels(&body, self)
    }
}

/// Panels with per-panel ranges, points marked (see [`xy_figure`]).
fn draw_xy_panels<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, g: &XyGrid) -> std::result::Result<(), String> {
    let areas = root.split_evenly(g.grid);
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    for (((area, panel), y_desc), colors) in areas.iter().zip(g.panels).zip(g.y_descs).zip(g.colors) {
        let pts: Vec<(f64, f64)> = panel
            .lines
            .iter()
            .flat_map(|l| {
                l.points
                    .iter()
                    .chain(&l.scatter)
                    .copied()
                    .chain(l.intervals.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]))
            })
            .filter(finite)
            .collect();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in &pts {
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
            .x_desc(g.x_desc)
            .y_desc(*y_desc)
            .x_label_formatter(&|v| series::tick_label(*v))
            .y_label_formatter(&|v| series::tick_label(*v))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        for (line, &c) in panel.lines.iter().zip(colors) {
            let scatter: Vec<(f64, f64)> = line.scatter.iter().copied().filter(finite).collect();
            chart
                .draw_series(scatter.iter().map(|&p| Circle::new(p, 2, c.mix(0.45).filled())))
                .map_err(|e| e.to_string())?;
        }
        for (line, &c) in panel.lines.iter().zip(colors) {
            let pts: Vec<(f64, f64)> = line.points.iter().copied().filter(finite).collect();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(&line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(
                    line.intervals
                        .iter()
                        .filter(|i| i.0.is_finite() && i.1.is_finite() && i.2.is_finite())
                        .map(|&(x, lo, hi)| ErrorBar::new_vertical(x, lo, (lo + hi) / 2.0, hi, c.stroke_width(1), 6)),
                )
                .map_err(|e| e.to_string())?;
        }
        draw_legend(&mut chart)?;
    }
    Ok(())
}
