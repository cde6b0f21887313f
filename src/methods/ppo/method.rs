//! PPO as a method of a study: its cells in the plan (one per run of [`ppo_cells`], each
//! reading its ensemble's members), and what they become: each run's checkpoints as curve
//! points, the `ppo_train` table (one row per update), the `ppo_units` table (one row per
//! evaluation sample), and which runs were trained, reused or failed.

use std::path::Path;

use polars::prelude::*;

use super::cell::{ppo_cells, PpoCell, PpoOutcome};
use super::{Evaluation, Outcome, UpdateStats};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::methods::{Assembled, Made, Method, Needs, Part, Planned, PointKl, Runs, Table, UnitTable};
use crate::stats::curve::{CurveRow, Traits};
use crate::train::proxy::{ensemble_member, ProxyCell};

/// PPO as a method of the plan: one cell per run of [`ppo_cells`], each reading its
/// ensemble's members.
pub struct Ppo;

impl Method for Ppo {
    fn name(&self) -> &'static str {
        "ppo"
    }

    fn traits(&self) -> Traits {
        Traits { label: "PPO", form: crate::stats::fit::Form::Rl, kl_measured: true }
    }

    fn cells(&self, exp: &Experiment, _r: usize, grid: &[ProxyCell]) -> Vec<Planned> {
        ppo_cells(exp, grid)
            .into_iter()
            .map(|run| Planned {
                id: run.id(),
                pairs: false,
                members: run.members.clone(),
                cell: Box::new(run),
            })
            .collect()
    }

    fn cells_per_replicate(&self, exp: &Experiment) -> u64 {
        exp.ppo.run_count(&exp.proxy) as u64
    }

    fn size_keys(&self) -> &'static str {
        "replicates × PPO runs (ppo.kl_penalties × aggregators × ppo.shaping) × ppo.updates × ppo.rollout"
    }

    fn assemble(&self, exp: &Experiment, proxies: &[&ProxyCell], cells: &[Made], _store: &Path) -> Result<Assembled> {
        let mut out = Assembled::default();
        let (mut runs, mut train, mut finished) = (Runs::default(), Vec::new(), Vec::new());
        for m in cells {
            let Some(run) = m.cell.as_any().downcast_ref::<PpoCell>() else { continue };
            if let Some(o) = runs.record(run.id(), m.loaded.get::<PpoOutcome>(), m.made) {
                let proxy = ensemble_member(proxies, run.replicate, &run.ensemble);
                let (rows, updates) = rows(exp, run, proxy, o);
                out.curves.extend(rows);
                train.extend(updates);
                finished.push((run.clone(), o.evaluations.clone()));
            }
        }
        if !train.is_empty() {
            out.tables.push(Table {
                stem: "ppo_train",
                build: Box::new(move || train_frame(&train)),
            });
        }
        if !finished.is_empty() {
            out.tables.push(Table {
                stem: "ppo_units",
                build: Box::new(move || units_frame("ppo_units", &finished)),
            });
        }
        out.runs = Some(runs);
        Ok(out)
    }

    fn needs(&self, exp: &Experiment) -> Needs {
        let (p, x) = (&exp.ppo, &exp.proxy);
        let runs = exp.ppo.run_count(&exp.proxy) as u64;
        if runs == 0 {
            return Needs::default();
        }
        let u = |n: usize| n as u64;
        // `ppo.kl_budget` may end a run sooner.
        let rows = [u(exp.replicates), runs, u(p.checkpoints()), u(p.eval_prompts)].iter().fold(1u64, |a, &n| a.saturating_mul(n));
        Needs {
            policies: runs,
            batch: Some(Part { what: "one PPO minibatch (ppo.minibatch)", key: "ppo.minibatch", count: u(p.minibatch) }),
            // PAR and centering sample one π_ref response per rollout prompt besides.
            rollouts: Some(Part {
                what: "PPO rollouts (ppo.rollout, ppo.eval_prompts)",
                key: "ppo.rollout",
                count: u(p.rollout) * (1 + u64::from(p.reads_reference())) + u(p.eval_prompts),
            }),
            unit_rows: rows,
            unit_values: rows.saturating_mul(12 + u(x.members)),
            unit_keys: "PPO: runs × checkpoints × ppo.eval_prompts",
            ..Needs::default()
        }
    }

    fn outline(&self, exp: &Experiment, grid: &[ProxyCell]) -> Vec<String> {
        let runs = ppo_cells(exp, grid);
        if runs.is_empty() {
            return Vec::new();
        }
        let mut out = vec![format!("PPO: {} runs x {} updates per replicate:", runs.len(), exp.ppo.updates)];
        out.extend(runs.iter().map(|r| format!("  {}", r.id())));
        out
    }

    fn in_brief(&self, rows: &[&CurveRow]) -> String {
        format!("PPO (KL penalty β = {})", crate::methods::betas(rows))
    }

    fn measured(&self, rows: &[&CurveRow]) -> String {
        let steps = rows.iter().filter_map(|r| r.step).collect::<Vec<_>>();
        format!(
            "**PPO**: KL penalties {}, evaluated at steps {}…{} on {} held-out prompts; KL(π‖π_ref) is \
             the k1 estimate on fresh samples in nats (values below 0, sampling noise near π_ref, are read \
             as 0 here).{}",
            crate::methods::betas(rows),
            steps.iter().min().unwrap_or(&0),
            steps.iter().max().unwrap_or(&0),
            crate::methods::listed(rows.iter().map(|r| r.prompts).collect()),
            crate::methods::shaped_sentence(rows),
        )
    }

    fn unit_table(&self) -> UnitTable {
        checkpoint_unit_table(self.traits(), "ppo_units")
    }
}

/// How a policy method's units table (written by [`units_frame`]) reads back: one row per
/// evaluation sample of a checkpoint (`step`), its KL a column, β a column.
pub(crate) fn checkpoint_unit_table(traits: Traits, stem: &'static str) -> UnitTable {
    UnitTable {
        traits,
        stem,
        point: "step",
        at: |step| format!("step {step}"),
        kl: PointKl::Column("kl"),
        kl_penalty: true,
        disagreement: false,
    }
}

/// The curve rows of a policy method's run (one per evaluation checkpoint, as
/// [`super::evaluate`] measures them): `method`'s rows of PPO's sweep run `run` against the
/// ensemble whose first proxy is `cell`.
pub(crate) fn checkpoint_rows(method: &str, exp: &Experiment, run: &PpoCell, cell: &ProxyCell, evaluations: &[Evaluation]) -> Vec<CurveRow> {
    let params = exp.proxy_params(&cell.size);
    let below = super::below_peak(evaluations);
    evaluations
        .iter()
        .zip(below)
        .map(|(e, (gold_below_peak, gold_below_peak_se))| {
            let (gold, gold_se) = crate::stats::mean_se(&e.gold_by_prompt);
            CurveRow {
                method: method.into(),
                aggregator: run.objective(),
                proxy_size: cell.size.name.clone(),
                proxy_params: params,
                data_size: cell.data_size as u64,
                label_noise: cell.noise,
                ensemble: run.ensemble.clone(),
                n: None,
                step: Some(e.step as u64),
                kl_penalty: Some(run.beta),
                kl: e.kl_k1,
                kl_kind: format!("{method}_k1"),
                kl_k3: Some(e.kl_k3),
                kl_bound: None,
                kl_exact: None,
                sqrt_kl: e.kl_k1.max(0.0).sqrt(),
                gold,
                gold_se,
                measures: e.measures.clone(),
                gold_below_peak,
                gold_below_peak_se,
                prompts: e.gold_by_prompt.len() as u64,
                pool: None,
                replicate: run.replicate as u64,
            }
        })
        .collect()
}

/// Curve rows (one per evaluation checkpoint) and training rows (one per update) of a run.
fn rows(exp: &Experiment, run: &PpoCell, cell: &ProxyCell, o: &Outcome) -> (Vec<CurveRow>, Vec<TrainRow>) {
    let rows = checkpoint_rows("ppo", exp, run, cell, &o.evaluations);
    let train = o
        .updates
        .iter()
        .map(|u| TrainRow {
            run: run.id(),
            aggregator: run.objective().name(),
            lambda: run.aggregator.lambda(),
            ensemble: run.ensemble.clone(),
            kl_penalty: run.beta,
            replicate: run.replicate as u64,
            stats: u.clone(),
        })
        .collect();
    (rows, train)
}

/// One PPO update's diagnostics, labelled with its run: `results/NAME/ppo_train.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRow {
    /// `ppo/ENSEMBLE/AGGREGATOR[(λ)][+SHAPING]/bBETA`.
    pub run: String,
    /// The aggregator's name with its shaping (`mean+par`).
    pub aggregator: String,
    pub lambda: Option<f64>,
    pub ensemble: String,
    pub kl_penalty: f64,
    pub replicate: u64,
    pub stats: UpdateStats,
}

/// The PPO training table, one row per update.
fn train_frame(rows: &[TrainRow]) -> Result<DataFrame> {
    let x = |f: fn(&TrainRow) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let columns = vec![
        Column::new("run".into(), rows.iter().map(|r| r.run.clone()).collect::<Vec<_>>()),
        Column::new("aggregator".into(), rows.iter().map(|r| r.aggregator.clone()).collect::<Vec<_>>()),
        Column::new("lambda".into(), rows.iter().map(|r| r.lambda).collect::<Vec<_>>()),
        Column::new("ensemble".into(), rows.iter().map(|r| r.ensemble.clone()).collect::<Vec<_>>()),
        Column::new("kl_penalty".into(), x(|r| r.kl_penalty)),
        Column::new("replicate".into(), rows.iter().map(|r| r.replicate).collect::<Vec<_>>()),
        Column::new("update".into(), rows.iter().map(|r| r.stats.update as u64).collect::<Vec<_>>()),
        Column::new("reward/proxy".into(), x(|r| r.stats.proxy)),
        Column::new("kl/k1".into(), x(|r| r.stats.kl_k1)),
        Column::new("reward/total".into(), x(|r| r.stats.reward)),
        Column::new("ppo/policy_loss".into(), x(|r| r.stats.policy_loss)),
        Column::new("ppo/value_loss".into(), x(|r| r.stats.value_loss)),
        Column::new("ppo/entropy".into(), x(|r| r.stats.entropy)),
        Column::new("ppo/approx_kl".into(), x(|r| r.stats.approx_kl)),
        Column::new("ppo/clipfrac".into(), x(|r| r.stats.clipfrac)),
        Column::new("ppo/explained_variance".into(), x(|r| r.stats.explained_variance)),
        Column::new("ppo/grad_norm".into(), x(|r| r.stats.grad_norm)),
    ];
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table {
        path: "ppo_train".into(),
        msg: e.to_string(),
    })
}

/// The units table of `stem` (`ppo_units`): one row per evaluation sample (one per held-out prompt) of every
/// checkpoint of every run, runs in plan order: the run (replicate, ensemble, aggregator,
/// λ, β), the checkpoint (`step`, its mean k1 `kl`), the `prompt` index, the sample's gold,
/// aggregated proxy, member scores (`member_M`, empty past the ensemble's size), held-out
/// proxy score (empty without one) and summed k1 (`kl_k1`).
pub(crate) fn units_frame(stem: &str, runs: &[(PpoCell, Vec<Evaluation>)]) -> Result<DataFrame> {
    let k_max = runs
        .iter()
        .flat_map(|(_, evaluations)| evaluations.iter().map(|e| e.units.members.len()))
        .max()
        .unwrap_or(0);
    let rows: usize = runs.iter().flat_map(|(_, evaluations)| evaluations.iter().map(|e| e.gold_by_prompt.len())).sum();
    let (mut rep, mut ens, mut agg, mut lam, mut beta) = (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
    let (mut step, mut kl, mut prompt, mut gold, mut proxy, mut heldout, mut k1) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let mut members: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(rows); k_max];
    for (run, evaluations) in runs {
        for e in evaluations {
            let u = &e.units;
            for (i, &g) in e.gold_by_prompt.iter().enumerate() {
                rep.push(run.replicate as u64);
                ens.push(run.ensemble.clone());
                agg.push(run.objective().name());
                lam.push(run.aggregator.lambda());
                beta.push(run.beta);
                step.push(e.step as u64);
                kl.push(e.kl_k1);
                prompt.push(i as u64);
                gold.push(g);
                proxy.push(u.proxy[i] as f64);
                for (m, col) in members.iter_mut().enumerate() {
                    col.push(u.members.get(m).map(|s| s[i] as f64));
                }
                heldout.push(u.heldout.as_ref().map(|h| h[i] as f64));
                k1.push(u.kl_k1[i] as f64);
            }
        }
    }
    let mut columns = vec![
        Column::new("replicate".into(), rep),
        Column::new("ensemble".into(), ens),
        Column::new("aggregator".into(), agg),
        Column::new("lambda".into(), lam),
        Column::new("kl_penalty".into(), beta),
        Column::new("step".into(), step),
        Column::new("kl".into(), kl),
        Column::new("prompt".into(), prompt),
        Column::new("gold".into(), gold),
        Column::new("proxy".into(), proxy),
    ];
    columns.extend(members.into_iter().enumerate().map(|(m, v)| Column::new(format!("member_{m}").into(), v)));
    columns.push(Column::new("heldout".into(), heldout));
    columns.push(Column::new("kl_k1".into(), k1));
    DataFrame::new(rows, columns).map_err(|e| Error::Table {
        path: stem.into(),
        msg: e.to_string(),
    })
}
