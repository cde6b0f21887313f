//! The sections of `report.md`, from the [`Analysis`]: fixed order, fixed float formatting.

use std::fmt::Write as _;

use serde_json::Value;

use super::acceptance::{R2_TARGET, REGRET_TARGET};
use super::Analysis;
use crate::stats::analysis::{self, AggRow, CurveId, FitRow, Measure, ScalingRow, SeOver, Target, MEMBERS_AVG};
use crate::plan::duration;
use crate::stats::conclusions::{Claim, Interval};
use crate::output::table::{CurveRow, RmRow};

/// A float with `d` decimals; "—" for NaN or infinite; never "-0.00".
fn num(x: f64, d: usize) -> String {
    if !x.is_finite() {
        return "—".to_string();
    }
    let s = format!("{x:.d$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

fn onum(x: Option<f64>, d: usize) -> String {
    x.map_or("—".to_string(), |v| num(v, d))
}

/// A fraction as a percentage with one decimal.
fn pct(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or("—".to_string(), |v| format!("{}%", num(100.0 * v, 1)))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A table row: cells joined by pipes.
fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn header(cells: &[&str]) -> String {
    format!("| {} |\n|{}\n", cells.join(" | "), " --- |".repeat(cells.len()))
}

/// The PPO KL penalty of a curve, or "—" for best-of-n.
fn penalty(id: &CurveId) -> String {
    id.line.kl_penalty.map_or("—".to_string(), |b| b.to_string())
}

/// report.md: its sections in order.
/// The appendix's file name, beside `report.md`.
pub(super) const APPENDIX: &str = "report_appendix.md";

/// `report.md` and its appendix. The report: the answer (what was studied, the primary
/// verdicts, what each means, what would settle the rest), the exploratory claims in
/// brief, what was measured, the figures and the acceptance checks. The appendix
/// (`report_appendix.md`): every claim, the reward models, the per-curve fits, scaling,
/// stopping rules and aggregators, the acceptance lists.
pub(super) fn markdown(a: &Analysis) -> (String, String) {
    let body = [conclusions_section(a), exploratory_section(a), optimizers_section(a), sources_section(a), measured_section(a), figures_section(a), acceptance_section(a), details_section()].concat();
    let appendix = [
        format!(
            "# goodhart report, appendix: {}\n\nThe detail behind `report.md`, from the same tables; each section says whether and why it matters.\n\n",
            experiment_name(a)
        ),
        all_claims(a),
        rm_section(a),
        fits_section(a),
        scaling_section(a),
        stopping_section(a),
        aggregators_section(a),
        acceptance_lists(a),
    ]
    .concat();
    let mut report = title_section(a);
    let _ = writeln!(
        report,
        "This page is about {} words; the detail (every claim, the reward models, per-curve fits, scaling, \
         stopping rules, aggregators) is in [`{APPENDIX}`]({APPENDIX}), about {} words.\n",
        round_words(words(&body)),
        round_words(words(&appendix))
    );
    report.push_str(&body);
    (report, appendix)
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// A word count to two significant figures (`1,200`).
fn round_words(n: usize) -> String {
    let mag = 10usize.pow((n.max(1) as f64).log10().floor().max(1.0) as u32 - 1);
    let r = (n + mag / 2) / mag * mag;
    let s = r.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn experiment_name(a: &Analysis) -> String {
    a.manifest
        .as_ref()
        .and_then(|m| m.get("experiment"))
        .and_then(Value::as_str)
        .map_or_else(|| a.dir_name.clone(), str::to_string)
}

/// The exploratory claims in brief: how many hold, are reversed or are inconclusive, and
/// the ones that hold or are reversed, a line each (every claim is in the appendix).
fn exploratory_section(a: &Analysis) -> String {
    let explore: Vec<&Claim> = a.claims.iter().filter(|c| c.family == crate::stats::conclusions::Family::Exploratory).collect();
    if explore.is_empty() {
        return String::new();
    }
    let count = |v: &str| explore.iter().filter(|c| c.verdict == v).count();
    let mut s = String::from("## Exploratory claims, in brief\n\n");
    let _ = writeln!(
        s,
        "{} more claims (every method, ensemble, aggregator and β; stopping rules), each with a \
         Benjamini–Hochberg q-value over them all: **{}** hold, **{}** are reversed, {} are inconclusive. \
         About 5% of those called `holds` or `reversed` may be false discoveries; read them as leads, \
         not findings. All of them, with their intervals, are in [`{APPENDIX}`]({APPENDIX}) (\"All claims\") \
         and `conclusions.csv`.\n",
        explore.len(),
        count("holds"),
        count("reversed"),
        count("inconclusive")
    );
    for c in explore.iter().filter(|c| c.verdict != "inconclusive") {
        let _ = writeln!(s, "- {} — {}: {} (q {})", c.verdict, c.claim, ci(&c.interval), pv(c.p_adjusted));
    }
    s.push('\n');
    s
}

/// Which optimizer keeps the most gold at a KL budget: every `vs` claim (two methods at the
/// largest KL both reach, paired on the same evaluation samples), as a table.
fn optimizers_section(a: &Analysis) -> String {
    let vs: Vec<&Claim> = a.claims.iter().filter(|c| c.kind == "vs").collect();
    if vs.is_empty() {
        return String::new();
    }
    let mut s = String::from("## Which optimizer keeps the most gold at a KL budget

");
    s.push_str(
        "Each pair of methods, each on its single-proxy line (`single`; `direct` for a method that optimizes \
         no proxy) at its smallest β: gold of the first − gold of the second, paired unit by unit where both \
         are measured on the same evaluation samples (the policy methods), else replicate by replicate \
         (best-of-n: its prompts are its own, its KL the bound of its n), at each KL budget (0.5, 1, 2, 4, 8, 16 nats) both reach in every replicate, and at the \
         largest KL both reach in each replicate (interpolated between checkpoints), a 95% interval across \
         replicates. Positive: the first keeps more gold. Exploratory claims (q: \
         Benjamini–Hochberg over every exploratory claim).\n\n",
    );
    s.push_str(&header(&["first − second", "ensemble", "at", "gold difference [95% interval]", "verdict (q)", "replicates"]));
    for c in vs {
        let other = c.baseline.split(' ').next().unwrap_or("");
        s.push_str(&row(&[
            format!(
                "{} ({}{}) − {} ({})",
                crate::plan::kinds::label(&c.method),
                c.aggregator,
                c.kl_penalty.map(|b| format!(", β = {b}")).unwrap_or_default(),
                crate::plan::kinds::label(other),
                c.baseline.split(' ').nth(1).unwrap_or("")
            ),
            format!("`{}`", c.ensemble),
            c.at.clone(),
            ci(&c.interval),
            format!("{} ({})", c.verdict, pv(c.p_adjusted)),
            reps(c),
        ]));
    }
    s.push('\n');
    s
}

/// Where an ensemble's members come from: what each ensemble cost (mean over replicates,
/// from `ensembles.csv`) and every `source` claim (two ensembles of the same proxies that
/// differ in where their members differ), as tables.
fn sources_section(a: &Analysis) -> String {
    let claims: Vec<&Claim> = a.claims.iter().filter(|c| c.kind == "source").collect();
    if claims.is_empty() && a.ensembles.is_empty() {
        return String::new();
    }
    let mut s = String::from("## Where the ensemble's members come from\n\n");
    if !a.ensembles.is_empty() {
        s.push_str(
            "What each ensemble cost to make, mean over replicates: the models trained for it (its trained members, the \
             pretrained trunks they start from, the multi-head model, the members WARM averages; each once), their \
             parameters and their training seconds on this machine.\n\n",
        );
        s.push_str(&header(&["ensemble", "source", "members", "models trained", "parameters trained", "training seconds"]));
        let mut seen: Vec<&str> = Vec::new();
        for e in &a.ensembles {
            if seen.contains(&e.ensemble.as_str()) {
                continue;
            }
            seen.push(&e.ensemble);
            let of: Vec<&crate::output::table::EnsembleCost> = a.ensembles.iter().filter(|x| x.ensemble == e.ensemble).collect();
            let n = of.len() as f64;
            s.push_str(&row(&[
                format!("`{}`", e.ensemble),
                e.source.clone(),
                e.members.to_string(),
                format!("{:.1}", of.iter().map(|x| x.models_trained as f64).sum::<f64>() / n),
                format!("{:.0}", of.iter().map(|x| x.params_trained as f64).sum::<f64>() / n),
                format!("{:.1}", of.iter().map(|x| x.train_seconds).sum::<f64>() / n),
            ]));
        }
        s.push('\n');
    }
    if !claims.is_empty() {
        s.push_str(
            "Two ensembles of the same proxies (size, pairs, label noise) that differ in where their members differ, \
             the later source of `proxy.sources`' order (scratch, finetune, pretrain, bootstrap, multihead, warm) first: \
             gold of the first's line − gold of the second's, paired unit by unit (the same prompts), at the last point \
             and, where KL is measured, at the largest KL both reach, a 95% interval across replicates. Lines: the same \
             aggregator in both; a one-model ensemble (WARM) against every line of the other; a multi-head ensemble's \
             lines against the other's single models (the alternative of the same training cost). Exploratory claims \
             (q: Benjamini–Hochberg over every exploratory claim).\n\n",
        );
        s.push_str(&header(&["method", "first − second", "proxies", "at", "gold difference [95% interval]", "verdict (q)", "replicates"]));
        for c in claims {
            let (proxies, source) = crate::stats::conclusions::ensemble_source(&c.ensemble);
            s.push_str(&row(&[
                format!("{}{}", crate::plan::kinds::label(&c.method), c.kl_penalty.map(|b| format!(", β = {b}")).unwrap_or_default()),
                format!("{source} {} − {}", c.aggregator, c.baseline),
                format!("`{proxies}`"),
                c.at.clone(),
                ci(&c.interval),
                format!("{} ({})", c.verdict, pv(c.p_adjusted)),
                reps(c),
            ]));
        }
        s.push('\n');
    }
    s
}

/// Where the detail is, and whether it matters.
fn details_section() -> String {
    format!(
        "## Details\n\n[`{APPENDIX}`]({APPENDIX}) holds, from the same tables:\n\n\
         - **All claims**: every claim with its interval and adjusted p; the source of the brief list above.\n\
         - **Reward models**: each RM's validation accuracy and loss; check it when a verdict surprises you \
         (a proxy that learned little is easy to exploit).\n\
         - **Functional-form fits**: the Gao form fitted to each run's curve, one row per replicate; \
         descriptions, not tests: the verdicts above do not read them.\n\
         - **Scaling**: the fitted coefficients against proxy size and data; descriptive, as in Gao et al.\n\
         - **Gold-free stopping rules on each run's curve**: what each rule picked on each curve; the graded \
         rules are the `stop` claims.\n\
         - **Aggregators at matched KL**: gold of every aggregator at KL budgets all of them reach; \
         descriptive, per run.\n\
         - **Acceptance lists**: the curves behind the acceptance checks above.\n\n"
    )
}

fn title_section(a: &Analysis) -> String {
    let m = a.manifest.as_ref();
    let get = |k: &str| m.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let name = get("experiment").map(text).unwrap_or_else(|| a.dir_name.clone());
    let mut s = format!("# goodhart report: {name}\n\n");
    match m {
        Some(_) => {
            let field = |k: &str| get(k).map(text).unwrap_or_else(|| "unknown".to_string());
            let commit = get("git_commit")
                .map(text)
                .map(|c| c.chars().take(12).collect::<String>());
            // On the CPU, which CPU and kernels: another instruction set or L1 cache rounds
            // differently (src/model/cpu.rs).
            let cpu = get("cpu").filter(|_| field("device") == "cpu").map(|c| {
                let part = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("unknown");
                format!(" ({}: {})", part("model"), part("kernels"))
            });
            let _ = writeln!(
                s,
                "Experiment `{name}`, seed {}, config hash `{}`, device {}{}, goodhart {}{}.",
                field("seed"),
                field("config_hash"),
                field("device"),
                cpu.unwrap_or_default(),
                field("goodhart_version"),
                commit.map(|c| format!(" (commit `{c}`)")).unwrap_or_default()
            );
        }
        None => s.push_str("No `manifest.json` in this folder: seed, config hash and device are unknown.\n"),
    }
    s.push_str(
        "\nWritten by `goodhart report` from the saved tables alone (`rm.parquet`, `curves.parquet`, and the \
         per-unit `bon_units.parquet`, `ppo_units.parquet`); the same tables give this file byte for byte.\n\n",
    );
    s
}

/// An interval as `0.12 [0.05, 0.19]`.
fn ci(i: &Interval) -> String {
    if i.low.is_nan() {
        return format!("{} (no interval: {} replicate{})", num(i.estimate, 3), i.replicates, if i.replicates == 1 { "" } else { "s" });
    }
    format!("{} [{}, {}]", num(i.estimate, 3), num(i.low, 3), num(i.high, 3))
}

/// A p-value for a table: three significant decimals, `< 0.001` below.
fn pv(p: f64) -> String {
    if !p.is_finite() {
        "—".to_string()
    } else if p < 0.001 {
        "< 0.001".to_string()
    } else {
        num(p, 3)
    }
}

/// `11 of 12`, or `12` when the claim rests on every replicate.
fn reps(c: &Claim) -> String {
    if c.interval.replicates == c.replicates_total {
        c.replicates_total.to_string()
    } else {
        format!("{} of {}", c.interval.replicates, c.replicates_total)
    }
}

/// The question a primary selector asks, in words.
fn question(s: &crate::config::ClaimSelector, c: Option<&Claim>) -> String {
    let method = crate::plan::kinds::label(&s.method);
    let beta = c.and_then(|c| c.kl_penalty).or(s.kl_penalty).map(|b| format!(", β = {b}")).unwrap_or_default();
    let agg = c.map_or(s.aggregator.clone(), |c| c.aggregator.clone());
    let ens = c.map(|c| format!(" (`{}`)", c.ensemble)).filter(|_| s.kind != "stop").unwrap_or_default();
    match s.kind.as_str() {
        "overopt" => format!("{method}{beta}: gold falls from its peak ({agg}){ens}"),
        "peak" => format!("{method}{beta}: gold gained at the peak ({agg}){ens}"),
        "gap" | "source" => {
            let at = c.map_or("final".to_string(), |c| c.at.clone());
            let at = if at == "final" { String::new() } else { format!(" at {at}") };
            // A source claim's line is of its own ensemble's source (`pretrain mean`).
            let agg = if s.kind == "source" {
                let ensemble = c.map_or(s.ensemble.clone().unwrap_or_default(), |c| c.ensemble.clone());
                format!("{} {agg}", crate::stats::conclusions::ensemble_source(&ensemble).1)
            } else {
                agg
            };
            format!("{method}{beta}: {agg} keeps more gold than {}{at}{ens}", s.baseline)
        }
        "stop" => format!("{method}: stopping by `{agg}` gives up gold"),
        kind => format!("{method}{beta}: the {kind} claim of {agg}{ens}"),
    }
}

/// "about 210 replicates ≈ 35 CPU-hours (18 h on this 2-core machine, 9 min on 8 × 32-core
/// nodes)".
fn study_cost(a: &Analysis, n: usize, hours: Option<f64>) -> String {
    let unit = a.settings.cost.as_ref().map_or("replicates", |c| c.unit.as_str());
    let mut s = format!("about {n} {unit}");
    if let (Some(h), Some(cost)) = (hours, &a.settings.cost) {
        let here = cost.wall_hours(n, cost.cores_here);
        let cluster = cost.wall_hours(n, cost.cluster_nodes * cost.cluster_cores);
        let _ = write!(
            s,
            " ≈ {} CPU-hours ({} on this {}-core machine, {} on {} × {}-core Slurm nodes)",
            num(h, 1),
            duration(3600.0 * here),
            cost.cores_here,
            duration(3600.0 * cluster),
            cost.cluster_nodes,
            cost.cluster_cores
        );
    }
    s
}


/// What would settle an inconclusive primary claim, one line.
fn settle_line(a: &Analysis, label: &str, c: &Claim) -> String {
    let mut s = format!("- {label}: inconclusive, {} over {} replicates", ci(&c.interval), reps(c));
    if c.interval.over != crate::stats::conclusions::Over::Replicates || !c.interval.sd.is_finite() {
        s.push_str("; with one replicate no spread across replicates is known: set `replicates` ≥ 3 to learn what would settle it.\n");
        return s;
    }
    let m = a.claims.iter().filter(|c| c.family == crate::stats::conclusions::Family::Primary && c.p_value.is_finite()).count().max(1);
    let _ = write!(
        s,
        "; at this spread (sd {} across replicates), for {}% power at Holm's strictest level (0.05/{m}): ",
        num(c.interval.sd, 2),
        num(100.0 * a.settings.power, 0)
    );
    let effect = c.interval.estimate.abs();
    match c.replicates_needed {
        Some(n) => {
            let _ = write!(s, "an effect of {} (as estimated) needs {}", num(effect, 2), study_cost(a, n, c.cpu_hours_needed));
        }
        None if effect > 0.0 => {
            let _ = write!(s, "an effect of {} (as estimated) would need more than 100,000", num(effect, 3));
        }
        None => s.push_str("the estimate is 0, so no study size would show it"),
    }
    match c.replicates_needed_min_effect {
        Some(n) => {
            let _ = write!(
                s,
                "; the smallest effect of interest, {}, needs {}",
                num(a.settings.smallest_effect, 2),
                study_cost(a, n, c.cpu_hours_needed_min_effect)
            );
        }
        None => {
            let _ = write!(s, "; the smallest effect of interest, {}, would need more than 100,000", num(a.settings.smallest_effect, 2));
        }
    }
    s.push_str(".\n");
    s
}

fn conclusions_section(a: &Analysis) -> String {
    let mut s = String::from("## The answer\n\n");
    if a.claims.is_empty() {
        s.push_str(
            "No conclusions: this folder has no per-unit tables (`bon_units.parquet`, `ppo_units.parquet`), or \
             too few units to split.\n\n",
        );
        return s;
    }
    let reps_n = a.claims.iter().map(|c| c.replicates_total).max().unwrap_or(0);
    let worlds = a.rm.iter().filter(|r| r.role == "gold").count();
    let covers = if reps_n >= 2 && worlds > 1 {
        format!(
            "{reps_n} replicates, each in its **own world** ({worlds} worlds: labeler, π_ref, gold, pairs and \
             held-out proxy redrawn), so the intervals cover world-to-world variation"
        )
    } else if reps_n >= 2 && text_gold(a).is_some() {
        format!(
            "{reps_n} replicates of one study on checkpoints (proxies, prompts, pools and PPO seeds redrawn; \
             π_ref, gold and the prompt file shared, so the intervals do not cover other checkpoints or prompts)"
        )
    } else if reps_n >= 2 {
        format!(
            "{reps_n} replicates of one drawn world (proxies, prompts, pools and PPO seeds redrawn; the labeler, \
             π_ref and gold shared, so the intervals do not cover another world: `world.per_replicate` redraws it)"
        )
    } else {
        "**one replicate**: every interval is over the units of that one run and does not cover another run; set \
         `replicates` ≥ 3 for conclusions"
            .to_string()
    };
    let primary_idx = crate::stats::conclusions::primary_indices(&a.claims, &a.settings);
    s.push_str(&studied(a));
    let _ = writeln!(
        s,
        "The study's primary questions, judged together: 95% intervals across {covers}. Gold is in π_ref \
         standard deviations. A fall and a peak are the **expected** curve's (the curve averaged over \
         replicates): each replicate is measured at the peak of the other replicates' mean curve. p is \
         Holm-adjusted over these {} questions; the verdict reads it (`holds`: the effect is positive at \
         family-wise 5%, `reversed`: negative, otherwise `inconclusive`).\n",
        primary_idx.iter().flatten().count()
    );
    s.push_str(&header(&["question", "estimate [95% interval]", "replicates", "p (Holm)", "verdict"]));
    let mut settle = Vec::new();
    for (sel, i) in a.settings.primary.iter().zip(&primary_idx) {
        let c = i.map(|i| &a.claims[i]);
        let label = question(sel, c);
        match c {
            Some(c) => {
                s.push_str(&row(&[label.clone(), ci(&c.interval), reps(c), pv(c.p_adjusted), format!("**{}**", c.verdict)]));
                if c.verdict == "inconclusive" {
                    settle.push(settle_line(a, &label, c));
                }
            }
            None => s.push_str(&row(&[label, "not measured".into(), "—".into(), "—".into(), "—".into()])),
        }
    }
    s.push('\n');
    s.push_str("**What it means.**\n\n");
    for (sel, i) in a.settings.primary.iter().zip(&primary_idx) {
        if let Some(c) = i.map(|i| &a.claims[i]) {
            let _ = writeln!(s, "- {}", meaning(sel, c));
        }
    }
    s.push('\n');
    if settle.is_empty() {
        s.push_str("**Next step.** Every primary question is settled at this scale.\n\n");
    } else {
        s.push_str("**What would settle the rest** (the replicates a study would need, and what it would cost by the plan's cost model):\n\n");
        for l in settle {
            s.push_str(&l);
        }
        s.push('\n');
    }
    let notes: Vec<String> = primary_idx
        .iter()
        .flatten()
        .map(|&i| &a.claims[i])
        .filter(|c| !c.missing.is_empty())
        .map(|c| format!("- {}: {}\n", c.claim, c.note))
        .collect();
    if !notes.is_empty() {
        s.push_str("Failed or missing runs behind the primary questions (each verdict must also hold with them counted at their worst):\n\n");
        s.push_str(&notes.concat());
        s.push('\n');
    }
    s
}

/// One paragraph: what was optimized against what, how often, and what the primary
/// questions are about.
/// A text study's gold row (its gold is not trained here: a checkpoint or the labeler).
fn text_gold(a: &Analysis) -> Option<&RmRow> {
    a.rm.iter().find(|r| r.role == "gold" && r.train_examples == 0)
}

/// What gold is, for "what was studied".
fn gold_phrase(a: &Analysis) -> String {
    match text_gold(a) {
        Some(g) if g.params == 0 => "the programmatic text labeler, a stated stand-in for a gold reward model".into(),
        Some(g) => format!("a gold reward-model checkpoint ({} parameters)", g.params),
        None => "a gold reward model that stands in for people".into(),
    }
}

fn studied(a: &Analysis) -> String {
    let mut ensembles: Vec<&str> = a.rows.iter().map(|r| r.ensemble.as_str()).collect();
    ensembles.sort_unstable();
    ensembles.dedup();
    let members = a.rows.iter().map(|r| r.measures.members.len()).max().unwrap_or(0);
    let reps_n = a.claims.iter().map(|c| c.replicates_total).max().unwrap_or(0);
    let mut methods = Vec::new();
    for m in crate::plan::kinds::METHODS {
        let rows: Vec<&CurveRow> = a.rows.iter().filter(|r| r.method == m.name()).collect();
        if !rows.is_empty() {
            methods.push(m.in_brief(&rows));
        }
    }
    format!(
        "**What was studied.** A reference policy π_ref was optimized by {} against learned proxy reward \
         models ({} ensemble{} of up to {members} members: {}), {reps_n} time{} over (replicates), and \
         scored by {}. The question is Goodhart's: as \
         optimization pushes further from π_ref (KL), does gold rise and then fall, and do conservative \
         ensembles (`wco`: the members' minimum; `uwo`: mean − λ·variance) keep more gold than a single \
         proxy?\n\n",
        match methods.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => methods.join(""),
        },
        ensembles.len(),
        if ensembles.len() == 1 { "" } else { "s" },
        ensembles.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", "),
        if reps_n == 1 { "" } else { "s" },
        gold_phrase(a),
    )
}

/// A primary verdict in one sentence.
fn meaning(sel: &crate::config::ClaimSelector, c: &Claim) -> String {
    let method = crate::plan::kinds::label(&c.method);
    let size = num(c.interval.estimate.abs(), 2);
    let agg = &c.aggregator;
    match (sel.kind.as_str(), c.verdict.as_str()) {
        ("overopt", "holds") => format!(
            "{method}: optimizing this proxy harder lowers true reward: stopping at the peak keeps about {size} π_ref \
             standard deviations more gold than running to the end (Goodhart's law, measured)."
        ),
        ("overopt", "reversed") => format!("{method}: gold is highest at the end: no overoptimization within this KL range."),
        ("overopt", _) => format!(
            "{method}: a fall after the peak is not shown at this scale: the expected curve may be flat past its \
             peak, or fall by less than the interval can resolve."
        ),
        ("peak", "holds") => format!("{method}: optimization first gains about {size} gold over π_ref at its peak."),
        ("peak", _) => format!("{method}: a gain at the peak is not shown at this scale."),
        ("gap", "holds") => format!("{method}: `{agg}` keeps about {size} more gold than `{}` — the ensemble helps.", c.baseline),
        ("gap", "reversed") => format!("{method}: `{agg}` keeps about {size} less gold than `{}` — the ensemble hurts here.", c.baseline),
        ("gap", _) => format!(
            "{method}: whether `{agg}` keeps more gold than `{}` is not settled at this scale (estimate {}); see what would settle it below.",
            c.baseline,
            num(c.interval.estimate, 2)
        ),
        ("source", v) => {
            let line = format!("{} {agg}", crate::stats::conclusions::ensemble_source(&c.ensemble).1);
            match v {
                "holds" => format!("{method}: the `{line}` line keeps about {size} more gold than `{}` — where the members come from matters.", c.baseline),
                "reversed" => format!("{method}: the `{line}` line keeps about {size} less gold than `{}`.", c.baseline),
                _ => format!(
                    "{method}: whether the `{line}` line keeps more gold than `{}` is not settled at this scale (estimate {}); see what would settle it below.",
                    c.baseline,
                    num(c.interval.estimate, 2)
                ),
            }
        }
        ("stop", "holds") => format!("{method}: stopping by `{agg}` gives up about {size} gold against a stop at the peak."),
        (_, v) => format!("{}: {v}.", c.claim),
    }
}

/// Every claim, by kind: the exploratory tables.
fn all_claims(a: &Analysis) -> String {
    let mut s = String::from("## All claims\n\n");
    s.push_str(
        "Every claim of the study, one row each in `conclusions.csv` (with its unadjusted p-value, what it \
         estimates, the spread across replicates and notes). The primary questions above are marked \
         **primary** (p Holm-adjusted); every other claim is *exploratory*: its p is a Benjamini–Hochberg \
         q-value over all exploratory claims (about 5% of the claims called `holds` or `reversed` among them \
         may be false discoveries). Each interval is a 95% interval for its own claim. Units are best-of-n \
         prompts and PPO evaluation samples. `single` pools the single members unit by unit. `replicates` \
         says how many replicates a claim rests on of how many (a PPO run that failed leaves its replicate \
         out, and the verdict must also hold with it counted at the worst gold any run reached).\n\n",
    );
    let beta = |b: Option<f64>| b.map_or("—".to_string(), |b| b.to_string());
    let fam = |c: &Claim| if c.family == crate::stats::conclusions::Family::Primary { "**primary**" } else { "exploratory" };
    s.push_str(
        "**Fall from the peak** (`overopt`: the expected curve's gold at its peak − at its last point, the peak \
         chosen on the other replicates; positive = gold fell) and **gold gained at the peak** (`peak`: over \
         π_ref, the best gold of each method and aggregator):\n\n",
    );
    s.push_str(&header(&["method", "ensemble", "β", "aggregator", "fall [95% interval]", "verdict", "gain at the peak [95% interval]", "where the peak is"]));
    for c in a.claims.iter().filter(|c| c.kind == "overopt") {
        let gain = a.claims.iter().find(|p| {
            p.kind == "peak" && p.method == c.method && p.ensemble == c.ensemble && p.aggregator == c.aggregator && p.kl_penalty == c.kl_penalty
        });
        s.push_str(&row(&[
            c.method.clone(),
            format!("`{}`", c.ensemble),
            beta(c.kl_penalty),
            c.aggregator.clone(),
            ci(&c.interval),
            format!("{} (p {}, {})", c.verdict, pv(c.p_adjusted), fam(c)),
            gain.map_or("—".into(), |g| ci(&g.interval)),
            c.note.clone(),
        ]));
    }
    s.push_str(
        "\n**Aggregators** (`gap`: paired gold difference aggregator − baseline on the same prompts and pools \
         (best-of-n) or the same evaluation prompts (PPO), at the last point, for PPO also at the largest KL \
         both runs reach (gold interpolated per sample between checkpoints), and at each one's own peak; \
         positive = the aggregator keeps more gold):\n\n",
    );
    s.push_str(&header(&["method", "ensemble", "β", "aggregator − baseline", "at", "difference [95% interval]", "replicates", "verdict"]));
    for c in a.claims.iter().filter(|c| c.kind == "gap") {
        s.push_str(&row(&[
            c.method.clone(),
            format!("`{}`", c.ensemble),
            beta(c.kl_penalty),
            format!("{} − {}", c.aggregator, c.baseline),
            c.at.clone(),
            ci(&c.interval),
            reps(c),
            format!("{} (p {}, {})", c.verdict, pv(c.p_adjusted), fam(c)),
        ]));
    }
    s.push_str(
        "\n**Where to stop without gold** (`stop`: regret = gold at the expected curve's peak, chosen on the \
         other replicates − gold where the rule stops; the rule reads one half of a run's units and is graded \
         by gold on the other half; averaged over every curve of the method; positive = the rule gives up \
         gold. `cross-validated`: in each fold, the rule with the least regret on the other replicates, \
         graded on the left-out one; the note says how often each rule was chosen and which one all \
         replicates recommend):\n\n",
    );
    s.push_str(&header(&["method", "rule", "graded", "regret [95% interval]", "verdict", "note"]));
    for c in a.claims.iter().filter(|c| c.kind == "stop") {
        s.push_str(&row(&[
            c.method.clone(),
            format!("`{}`", c.aggregator),
            c.at.clone(),
            ci(&c.interval),
            format!("{} (p {}, {})", c.verdict, pv(c.p_adjusted), fam(c)),
            c.note.clone(),
        ]));
    }
    let dstar: Vec<&crate::stats::conclusions::DstarRow> = a.dstar.iter().collect();
    if !dstar.is_empty() {
        s.push_str(
            "\n**Peak location d\\* by proxy** (single members, and a `direct` method's own runs: d* = √KL at the \
             peak of the Gao form fitted to the **expected** gold curve, the mean over replicates of each \
             replicate's pooled members (or run), in \
             sqrt-nats; given only where the fitted peak lies inside the measured KL range; 95% interval by \
             the jackknife over replicates, each left out in turn and the curve refitted):\n\n",
        );
        s.push_str(&header(&["method", "ensemble", "β", "replicates", "fit R²", "d* [95% interval]"]));
        for d in dstar {
            let v = match (&d.interval, d.d_star) {
                (Some(i), _) => ci(i),
                (None, Some(x)) => format!("{} (no interval)", num(x, 3)),
                (None, None) => "no peak in range".to_string(),
            };
            s.push_str(&row(&[
                d.method.clone(),
                format!("`{}`", d.ensemble),
                beta(d.kl_penalty),
                d.replicates.to_string(),
                onum(d.r2, 3),
                v,
            ]));
        }
    }
    s.push('\n');
    s
}

fn measured_section(a: &Analysis) -> String {
    let mut s = String::from("## What was measured\n\n");
    let mut ensembles: Vec<&str> = a.rows.iter().map(|r| r.ensemble.as_str()).collect();
    ensembles.sort_unstable();
    ensembles.dedup();
    let members = a.rows.iter().map(|r| r.measures.members.len()).max().unwrap_or(0);
    let _ = write!(
        s,
        "A reference policy π_ref was optimized against proxy reward models: {} curves over {} proxy \
         ensemble(s) of up to {members} member(s) each ({}).",
        a.curves.len(),
        ensembles.len(),
        ensembles
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for m in crate::plan::kinds::METHODS {
        let rows: Vec<&CurveRow> = a.rows.iter().filter(|r| r.method == m.name()).collect();
        if !rows.is_empty() {
            s.push(' ');
            s.push_str(&m.measured(&rows));
        }
    }
    s.push_str(
        "\n\nGold is the gold RM's score in **π_ref standard deviations** (0 = π_ref's mean; \"gold \
         (π_ref std units)\" below), a mean over the evaluation prompts; ± is one standard error (s.e.) \
         over those prompts unless a table says otherwise. KL is in nats. Aggregators over the k member \
         scores: `memberK` = proxy member K alone (a single proxy; `member0` is the single-proxy \
         baseline), `mean`, `median`, `wco` = min (worst case), `uwo(λ)` = mean − λ·variance, \
         `mean_std(λ)` = mean − λ·std.",
    );
    let heldout = a.rows.iter().any(|r| r.measures.heldout.is_some_and(f64::is_finite));
    s.push_str(if heldout {
        " A held-out proxy (trained on disjoint preference data, never optimized against) scored the same \
         samples.\n\n"
    } else {
        " This folder has no held-out proxy scores, so the `heldout_peak` stopping rule picks nothing.\n\n"
    });
    s
}

fn rm_section(a: &Analysis) -> String {
    let mut s = String::from("## Reward models\n\n");
    let worlds = a.rm.iter().filter(|r| r.role == "gold").count();
    if let Some(g) = a.rm.iter().find(|r| r.role == "gold" && r.train_examples == 0) {
        // A text study's gold is not trained here.
        let _ = writeln!(
            s,
            "Gold: {}, not trained here{}.\n",
            if g.params == 0 {
                "the programmatic text labeler, a stand-in with features a reader can check (see the README's text studies), not a model of people".to_string()
            } else {
                format!("a reward-model checkpoint of {} parameters", g.params)
            },
            if g.val_accuracy.is_finite() {
                format!("; it orders {}% of {} held-out π_ref pairs as the labeler does", num(100.0 * g.val_accuracy, 1), g.val_pairs)
            } else {
                String::new()
            }
        );
    } else if let Some(g) = a.rm.iter().find(|r| r.role == "gold") {
        let _ = writeln!(
            s,
            "Gold RM{}: {} parameters, distilled from the labeler on {} samples (R² {} on held-out distillation \
             samples); it orders {}% of {} held-out π_ref pairs as the labeler does.\n",
            if worlds > 1 { format!(" of replicate 0's world (each of the {worlds} worlds has its own; all in `rm.csv`)") } else { String::new() },
            g.params,
            g.train_examples,
            onum(g.distill_r2, 3),
            num(100.0 * g.val_accuracy, 1),
            g.val_pairs
        );
    }
    s.push_str(
        "Proxies (role `proxy`: the ensembles optimized against; any other role, e.g. a held-out proxy, is \
         never optimized against): validation accuracy = the percentage of held-out π_ref pairs a model \
         orders as gold does; mean ± sample standard deviation over the ensemble's members.\n\n",
    );
    s.push_str(&header(&[
        "role",
        "ensemble",
        "size",
        "params",
        "training pairs",
        "label noise",
        "members",
        "val accuracy (%)",
        "held-out pairs",
    ]));
    let mut groups: Vec<(&str, &str, Vec<&RmRow>)> = Vec::new();
    for r in a.rm.iter().filter(|r| r.role != "gold") {
        match groups.iter_mut().find(|g| g.0 == r.role && g.1 == r.ensemble) {
            Some(g) => g.2.push(r),
            None => groups.push((&r.role, &r.ensemble, vec![r])),
        }
    }
    groups.sort_by(|a, b| {
        let (x, y) = (a.2[0], b.2[0]);
        (a.0 != "proxy", a.0)
            .cmp(&(b.0 != "proxy", b.0))
            .then(x.params.cmp(&y.params))
            .then(x.train_examples.cmp(&y.train_examples))
            .then(x.label_noise.unwrap_or(0.0).total_cmp(&y.label_noise.unwrap_or(0.0)))
            .then(a.1.cmp(b.1))
    });
    for (role, ensemble, rs) in &groups {
        let acc: Vec<f64> = rs.iter().map(|r| 100.0 * r.val_accuracy).collect();
        let m = acc.iter().sum::<f64>() / acc.len() as f64;
        let sd = if acc.len() > 1 {
            (acc.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (acc.len() - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        let r = rs[0];
        s.push_str(&row(&[
            role.to_string(),
            if ensemble.is_empty() {
                "—".to_string()
            } else {
                format!("`{ensemble}`")
            },
            r.size.clone(),
            r.params.to_string(),
            r.train_examples.to_string(),
            onum(r.label_noise, 2),
            rs.len().to_string(),
            if sd.is_finite() {
                format!("{} ± {}", num(m, 1), num(sd, 1))
            } else {
                num(m, 1)
            },
            r.val_pairs.to_string(),
        ]));
    }
    s.push('\n');
    s
}

/// Columns of the gold and proxy fit tables (gold adds whether the curve clearly falls).
const FIT_COLUMNS: [&str; 13] = [
    "method",
    "ensemble",
    "aggregator",
    "KL penalty",
    "replicate",
    "points",
    "α",
    "β",
    "R²",
    "KL* (nats)",
    "predicted peak gain",
    "observed peak gain (at, KL nats)",
    "interior peak",
];

fn fits_section(a: &Analysis) -> String {
    let mut s = String::from("## Functional-form fits (descriptions of each run's curve)\n\n");
    s.push_str(
        "*Descriptions, not tests*: one fit per replicate's curve, its peak read off that curve (the \
         expected curves' fits and d* are in All claims). Every curve's **gain** y = gold − gold at its first point (n = 1 or PPO step 0: π_ref itself, \
         KL = 0) is fitted, so R(0) = 0 as in Gao et al. (2023), by least squares without intercept in \
         d = √KL (KL clamped at ≥ 0): best-of-n `d(α − βd)`, PPO `d(α − β ln d)`. α is in gold/√nat; \
         β in gold/nat (best-of-n) or gold/√nat (PPO). KL* = d*² (nats) is the fitted peak and \
         \"predicted\" the fitted peak gain (gold, π_ref std units); \"observed\" is the largest gain on \
         the curve ± its gold s.e. over prompts, where it is, and its KL. Interior = the observed peak is \
         neither the first nor the last point. † = KL* lies beyond the \
         largest KL measured on the curve (an extrapolation); \"no peak\" = the fit never turns down.\n\n",
    );
    s.push_str(&header(&FIT_COLUMNS));
    for f in a.fits.iter().filter(|f| f.target == Target::Gold) {
        s.push_str(&fit_cells(f));
    }
    s.push_str("\n<details><summary>Proxy fits: the same form on the optimized proxy's gain</summary>\n\n");
    s.push_str(&header(&FIT_COLUMNS));
    for f in a.fits.iter().filter(|f| f.target == Target::Proxy) {
        s.push_str(&fit_cells(f));
    }
    s.push_str("\n</details>\n\n");
    s
}

fn fit_cells(f: &FitRow) -> String {
    let fit = f.fit.as_ref();
    let observed = if f.peak.is_some() {
        let se = if f.peak_se.is_finite() {
            format!(" ± {}", num(f.peak_se, 3))
        } else {
            String::new()
        };
        format!("{}{se} ({}, {})", num(f.peak_gain, 3), f.peak_at, num(f.peak_kl, 2))
    } else {
        "—".to_string()
    };
    let cells = vec![
        f.id.line.method.clone(),
        format!("`{}`", f.id.line.ensemble),
        f.id.aggregator_label(),
        penalty(&f.id),
        f.id.replicate.to_string(),
        f.points.to_string(),
        onum(fit.map(|x| x.alpha), 3),
        onum(fit.map(|x| x.beta), 3),
        onum(fit.map(|x| x.r2), 3),
        match fit {
            None => "no fit".to_string(),
            Some(x) => x.kl_star.map_or("no peak".to_string(), |k| {
                // A fitted peak beyond the largest KL measured is an extrapolation.
                format!("{}{}", num(k, 2), if k > f.last_kl.max(f.peak_kl) { "†" } else { "" })
            }),
        },
        onum(fit.and_then(|x| x.peak_pred), 3),
        observed,
        yes_no(f.interior_peak).to_string(),
    ];
    row(&cells)
}

fn scaling_section(a: &Analysis) -> String {
    let mut s = String::from("## Scaling\n\n");
    if a.scaling.is_empty() {
        s.push_str(
            "No scaling fit: no configuration has gold fits at ≥ 2 distinct proxy sizes (data size fixed) \
             or ≥ 2 distinct data sizes (proxy size fixed).\n\n",
        );
        return s;
    }
    s.push_str(
        "Each fitted gold coefficient against x = log10(proxy parameters) with the data size fixed, or \
         against x = log10(training pairs) with the proxy size fixed: `coefficient = slope·x + intercept` \
         (slope per decade of size; intercepts in `scaling.csv`). Units as in the fits (α gold/√nat; β gold/nat for best-of-n, gold/√nat \
         for PPO; d* √nats; KL* nats). With 2 points R² is 1 by construction.\n\n",
    );
    s.push_str(&header(&[
        "method",
        "aggregator",
        "KL penalty",
        "noise",
        "x",
        "held fixed",
        "points",
        "α: slope (R²)",
        "β: slope (R²)",
        "d*: slope (R²)",
        "KL*: slope (R²)",
    ]));
    // One line per group; rows of a group are adjacent (scaling() emits them together).
    let same = |x: &ScalingRow, y: &ScalingRow| {
        x.method == y.method
            && x.aggregator == y.aggregator
            && x.kl_penalty == y.kl_penalty
            && x.label_noise == y.label_noise
            && x.axis == y.axis
            && x.fixed_value == y.fixed_value
    };
    let mut i = 0;
    while i < a.scaling.len() {
        let first = &a.scaling[i];
        let group: Vec<&ScalingRow> = a.scaling[i..].iter().take_while(|r| same(first, r)).collect();
        i += group.len();
        let fixed = match first.axis {
            analysis::Axis::ProxyParams => format!("{} pairs", first.fixed_value),
            analysis::Axis::DataSize => format!("{} params", first.fixed_value),
        };
        let mut cells = vec![
            first.method.clone(),
            first.aggregator.label(),
            first.kl_penalty.map_or("—".to_string(), |b| b.to_string()),
            num(first.label_noise, 2),
            first.axis.x_name().to_string(),
            fixed,
            group.iter().map(|r| r.fit.points).max().unwrap_or(0).to_string(),
        ];
        for coef in analysis::SCALING_COEFFICIENTS {
            cells.push(
                group
                    .iter()
                    .find(|r| r.coefficient == coef)
                    .map_or("—".to_string(), |r| {
                        format!("{} ({})", num(r.fit.slope, 3), num(r.fit.r2, 2))
                    }),
            );
        }
        s.push_str(&row(&cells));
    }
    if a.scaling_figure {
        s.push_str(
            "\n![scaling](scaling.png)\n\n`scaling.png` ([svg](scaling.svg)): α, β and KL* of the \
             single-proxy (`member0`) gold fits against log10(proxy parameters), one line per data size: \
             each replicate's fit a small dot, the line through the per-size means across replicates, each \
             with its 95% Student-t interval across replicates (none with one replicate); a KL* beyond the \
             largest KL measured on its curve (†) is left out, and its panel's title counts those.\n",
        );
    }
    s.push('\n');
    s
}

fn stopping_section(a: &Analysis) -> String {
    let mut s = String::from("## Gold-free stopping rules on each run's curve (descriptions)\n\n");
    s.push_str(
        "*In-sample and per curve, for reading a run*: here each rule is graded by gold on the same \
         samples whose signals it read, against that run's own best point; which rule to use, and what it \
         gives up, are the `stop` claims in All claims (graded on samples and replicates that did not \
         choose). ",
    );
    s.push_str(
        "Each rule picks a point of a curve without reading gold: `heldout_peak` (the held-out proxy's \
         peak), `penalized_peak(kappa=κ)` (the peak of member mean − κ·√disagreement), \
         `disagreement_rise(tau=τ)` (the last point before the members' disagreement exceeds (1 + τ) × its \
         value at π_ref), `proxy_peak` (the optimized proxy's peak: the naive baseline), and, on \
         single-member curves, `other_members_peak` (the peak of the mean of the members not optimized \
         against). Regret = gold at the curve's observed peak − gold at the chosen point (π_ref std units, \
         ≥ 0); % of gain = of (peak gold − gold at the first point).\n\n",
    );
    let present: Vec<&str> = a.stops.iter().map(|r| r.rule.as_str()).collect();
    let silent: Vec<String> = analysis::rule_names()
        .into_iter()
        .filter(|n| !present.contains(&n.as_str()))
        .collect();
    for name in &silent {
        let why = if name == analysis::OTHER_MEMBERS_PEAK {
            "no single-member curve of an ensemble with ≥ 2 members"
        } else if name.starts_with("heldout_peak") {
            "no held-out proxy scores (`heldout`) in `curves.parquet`"
        } else {
            "its inputs are missing on every curve"
        };
        let _ = writeln!(s, "`{name}` picked nothing: {why}.\n");
    }
    if a.stops.is_empty() {
        return s;
    }
    s.push_str("<details><summary>Every rule on every curve</summary>\n\n");
    s.push_str(&header(&[
        "curve",
        "replicate",
        "rule",
        "chosen (KL nats)",
        "gold there",
        "peak (KL nats)",
        "peak gold",
        "regret",
        "% of gain",
    ]));
    for r in &a.stops {
        let g = &r.regret;
        s.push_str(&row(&[
            format!("`{}`", r.id.key),
            r.id.replicate.to_string(),
            format!("`{}`", r.rule),
            format!("{} ({})", r.chosen_at, num(g.chosen_kl, 2)),
            num(g.gold_chosen, 3),
            format!("{} ({})", r.peak_at, num(g.peak_kl, 2)),
            num(g.gold_peak, 3),
            num(g.regret, 3),
            pct(g.regret_frac),
        ]));
    }
    s.push_str("\n</details>\n\n");
    s
}

fn aggregators_section(a: &Analysis) -> String {
    let mut s = String::from("## Aggregators at matched KL\n\n");
    s.push_str(
        "*Descriptions of each replicate's curves, unpaired*: the paired differences across replicates, \
         and each aggregator's gold at the expected curve's peak, are in All claims (`gap`, `peak`). ",
    );
    let _ = write!(
        s,
        "Gold (π_ref std units) of every aggregator at KL budgets of {} nats (linear in KL between curve \
         points, at the first point that reaches the budget; a budget is shown only where every curve of \
         the configuration reaches it). ± is the s.e. over what the last \
         column says: the evaluation prompts of one curve (interpolated at a budget), or the member \
         seeds of the single-proxy curves (`{MEMBERS_AVG}`: the average single proxy; its s.e. is \
         across seeds scored on the same prompts).\n\n",
        analysis::KL_BUDGETS
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut methods: Vec<&str> = a.aggs.iter().map(|r| r.method.as_str()).collect();
    methods.dedup();
    for method in methods {
        let mine: Vec<&AggRow> = a.aggs.iter().filter(|r| r.method == method).collect();
        let mut budgets: Vec<f64> = mine
            .iter()
            .filter(|r| r.measure == Measure::AtKl)
            .map(|r| r.kl)
            .collect();
        budgets.sort_by(f64::total_cmp);
        budgets.dedup();
        let _ = writeln!(
            s,
            "{}:\n",
            crate::output::plot::capitalized(crate::plan::kinds::label(method))
        );
        let mut cols: Vec<String> = vec!["ensemble(s)".into(), "KL penalty".into(), "aggregator".into()];
        cols.extend(budgets.iter().map(|b| format!("gold at KL {b} nats")));
        cols.push("± over".into());
        s.push_str(&header(&cols.iter().map(String::as_str).collect::<Vec<_>>()));
        // Rows in order of first appearance of (cell, aggregator).
        let mut keys: Vec<(String, Option<u64>, String)> = Vec::new();
        for r in &mine {
            let k = (
                r.ensembles.clone(),
                r.kl_penalty.map(f64::to_bits),
                r.aggregator.clone(),
            );
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for (ens, beta, agg) in keys {
            let of = |r: &&&AggRow| r.ensembles == ens && r.kl_penalty.map(f64::to_bits) == beta && r.aggregator == agg;
            let cell: Vec<&&AggRow> = mine.iter().filter(of).collect();
            let over = cell.first().map_or(String::new(), |r| match r.se_over {
                SeOver::Prompts => "prompts".to_string(),
                SeOver::MemberSeeds => format!("{} member seeds", r.replicates),
            });
            let mut cells = vec![
                ens.split(';').map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", "),
                beta.map_or("—".to_string(), |b| f64::from_bits(b).to_string()),
                agg.clone(),
            ];
            for b in &budgets {
                cells.push(
                    cell.iter()
                        .find(|r| r.measure == Measure::AtKl && r.kl == *b)
                        .map_or("—".to_string(), |r| format!("{} ± {}", num(r.gold, 3), num(r.se, 3))),
                );
            }
            cells.push(over);
            s.push_str(&row(&cells));
        }
        s.push('\n');
    }
    s
}

fn figures_section(a: &Analysis) -> String {
    let mut s = String::from("## Figures\n\n");
    if a.figures.is_empty() {
        s.push_str("No figures in this folder.\n\n");
        return s;
    }
    // How many replicates the curve figures average, by method (lines can differ).
    let mut counts = Vec::new();
    for m in crate::plan::kinds::METHODS {
        let (method, name) = (m.name(), m.traits().label);
        let rows: Vec<_> = a.rows.iter().filter(|r| r.method == method).cloned().collect();
        let series = crate::output::series::expected_series(&rows, crate::output::series::Measure::Gold);
        if !series.is_empty() {
            let refs: Vec<_> = series.iter().collect();
            counts.push(format!("{name}: {}", crate::output::series::replicates_phrase(&refs)));
        }
    }
    if !counts.is_empty() {
        let _ = writeln!(
            s,
            "The best-of-n and PPO figures draw each line's **expected curve across replicates** ({}), the \
             curve the conclusions judge: at each n (best-of-n) or evaluation step (PPO), the mean over \
             replicates of gold (or the aggregated proxy), at x = sqrt of the replicates' mean KL, points in \
             order of n or step. With two or more replicates, the shaded band is the 95% Student-t interval \
             across replicates (mean ± t(0.975, R − 1)·sd/√R, the conclusions' interval), each replicate's \
             own curve is drawn faint behind, and on PPO figures a horizontal bar spans the smallest to the \
             largest replicate's sqrt(KL) at each checkpoint; single members (grey) are their mean alone. \
             With one replicate a line is that run's curve, gold ± 1 s.e. over prompts, no band. A point is \
             on the mean only where every replicate of the line has it. Each figure's header says how many \
             replicates it shows.\n",
            counts.join("; ")
        );
    }
    for f in &a.figures {
        let stem = f.trim_end_matches(".png");
        let _ = writeln!(s, "![{stem}]({f})\n\n`{f}` ([svg]({stem}.svg))\n");
    }
    s
}

fn acceptance_section(a: &Analysis) -> String {
    let acc = &a.acceptance;
    let mut s = String::from("## Acceptance\n\n");
    s.push_str(
        "Both checks read the conclusions' statistics (expected curves across replicates, adjusted \
         verdicts), not one run's curve.\n\n",
    );
    match acc.r2_met {
        None => {
            let _ = writeln!(
                s,
                "(a) R² ≥ {R2_TARGET} for the Gao form fitted to every expected gold curve whose fall from its peak \
                 holds: **not applicable** — no fall holds.\n"
            );
        }
        Some(met) => {
            let _ = writeln!(
                s,
                "(a) R² ≥ {R2_TARGET} for the Gao form fitted to every expected gold curve whose fall from its peak \
                 holds: **{}** — {} of {} such curves.",
                if met { "met" } else { "NOT met" },
                acc.falling_curves - acc.r2_misses.len(),
                acc.falling_curves,
            );
            if !acc.r2_misses.is_empty() {
                s.push_str("Curves that miss:\n\n");
                for (key, r2) in acc.r2_misses.iter().take(5) {
                    let _ = writeln!(s, "- `{key}`: {}", r2.map_or("no fit".to_string(), |r| format!("R² = {}", num(r, 3))));
                }
                if acc.r2_misses.len() > 5 {
                    let _ = writeln!(s, "- and {} more (all in [`{APPENDIX}`]({APPENDIX}))", acc.r2_misses.len() - 5);
                }
                s.push_str(
                    "\nA miss means Gao's functional form describes that curve poorly, so its fitted α, β and d* \
                     are rough; the verdicts do not read the fits.\n",
                );
            }
            s.push('\n');
        }
    }
    if acc.regret.is_empty() {
        let _ = writeln!(
            s,
            "(b) The cross-validated gold-free stopping rule gives up at most {}% of the gold the expected curve \
             gains at its peak: **not applicable** — no method has a cross-validated rule (it needs 2 or more \
             replicates and a rule that applies to every curve).\n",
            num(100.0 * REGRET_TARGET, 0)
        );
    }
    for r in &acc.regret {
        let _ = writeln!(
            s,
            "(b) {}: the cross-validated stopping rule (recommended: `{}`) gives up {} gold against a stop at the \
             expected curve's peak, {} of the {} gained there over π_ref (target ≤ {}%): **{}**.\n",
            crate::plan::kinds::label(&r.method),
            r.rule,
            ci(&r.regret),
            r.fraction.map_or("—".to_string(), |f| format!("{}%", num(100.0 * f, 1))),
            ci(&r.gain),
            num(100.0 * REGRET_TARGET, 0),
            match r.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not applicable (no gain)",
            }
        );
    }
    s
}

/// The acceptance checks' full lists, for the appendix.
fn acceptance_lists(a: &Analysis) -> String {
    let acc = &a.acceptance;
    let mut s = String::from("## Acceptance lists\n\n");
    s.push_str("Why it matters: the curves behind check (a) of `report.md`'s Acceptance section.\n\n");
    if acc.r2_misses.is_empty() {
        let _ = writeln!(s, "No expected gold curve whose fall holds misses R² ≥ {R2_TARGET}.\n");
        return s;
    }
    let _ = writeln!(s, "Expected gold curves whose fall holds and whose Gao fit has R² < {R2_TARGET}:\n");
    for (key, r2) in &acc.r2_misses {
        let _ = writeln!(s, "- `{key}`: {}", r2.map_or("no fit".to_string(), |r| format!("R² = {}", num(r, 3))));
    }
    s.push('\n');
    s
}
