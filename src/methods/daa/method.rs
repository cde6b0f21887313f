//! DPO, IPO and χPO as methods of a study: each loss of `daa.losses` runs on the ensembles
//! `[daa]` selects × `daa.betas` (one cell per run, reading the replicate's pairs and the
//! ensemble's members), and its runs become curve points (aggregator `direct`: no proxy is
//! optimized; the proxy column is the ensemble's mean), the `LOSS_units` tables (one row per
//! evaluation sample) and the `LOSS_train` tables (one row per checkpoint: epoch, implicit
//! reward, chosen and rejected log-probabilities, margin, training loss).

use std::path::Path;

use polars::prelude::*;

use super::cell::{daa_cells, DaaCell, DaaOutcome};
use super::{Checkpoint, Loss};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::methods::ppo::method::{checkpoint_rows, checkpoint_unit_table, units_frame};
use crate::methods::{Assembled, Made, Method, Needs, Part, Planned, Runs, Table, UnitTable};
use crate::stats::curve::{CurveRow, Traits};
use crate::train::proxy::{ensemble_member, ProxyCell};

/// One direct-alignment loss as a method.
pub struct DirectAlignment(pub Loss);

impl DirectAlignment {
    fn stems(&self) -> (&'static str, &'static str) {
        match self.0 {
            Loss::Dpo => ("dpo_units", "dpo_train"),
            Loss::Ipo => ("ipo_units", "ipo_train"),
            Loss::Chipo => ("chipo_units", "chipo_train"),
        }
    }
}

impl Method for DirectAlignment {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn traits(&self) -> Traits {
        Traits { label: self.0.label(), form: crate::stats::fit::Form::Rl, kl_measured: true }
    }

    fn cells(&self, exp: &Experiment, _r: usize, grid: &[ProxyCell]) -> Vec<Planned> {
        daa_cells(exp, self.0, grid)
            .into_iter()
            .map(|c| Planned {
                id: c.id(),
                members: c.members.clone(),
                pairs: true,
                cell: Box::new(c),
            })
            .collect()
    }

    fn cells_per_replicate(&self, exp: &Experiment) -> u64 {
        let d = &exp.daa;
        if !d.enabled || !d.losses.iter().any(|l| l == self.0.name()) {
            return 0;
        }
        d.ensembles(&exp.proxy).saturating_mul(d.betas.len() as u64)
    }

    fn size_keys(&self) -> &'static str {
        "replicates × daa.losses × daa.betas × ensembles (daa.sizes × daa.data_sizes × daa.noise) × daa.epochs"
    }

    fn assemble(&self, exp: &Experiment, proxies: &[&ProxyCell], cells: &[Made], _store: &Path) -> Result<Assembled> {
        let mut out = Assembled::default();
        let (mut runs, mut train, mut finished) = (Runs::default(), Vec::new(), Vec::new());
        for m in cells {
            let Some(cell) = m.cell.as_any().downcast_ref::<DaaCell>() else { continue };
            if cell.loss != self.0 {
                continue;
            }
            if let Some(o) = runs.record(cell.id(), m.loaded.get::<DaaOutcome>(), m.made) {
                let proxy = ensemble_member(proxies, cell.replicate, &cell.ensemble);
                let evaluations = o.evaluations();
                out.curves.extend(checkpoint_rows(self.name(), exp, &cell.as_run(), proxy, &evaluations));
                train.extend(o.checkpoints.iter().map(|c| (cell.clone(), c.clone())));
                finished.push((cell.as_run(), evaluations));
            }
        }
        let (units, train_stem) = self.stems();
        if !train.is_empty() {
            out.tables.push(Table {
                stem: train_stem,
                build: Box::new(move || train_frame(train_stem, &train)),
            });
        }
        if !finished.is_empty() {
            out.tables.push(Table {
                stem: units,
                build: Box::new(move || units_frame(units, &finished)),
            });
        }
        out.runs = Some(runs);
        Ok(out)
    }

    fn needs(&self, exp: &Experiment) -> Needs {
        let runs = self.cells_per_replicate(exp);
        if runs == 0 {
            return Needs::default();
        }
        let d = &exp.daa;
        let u = |n: usize| n as u64;
        let checkpoints = u(d.epochs * d.evals_per_epoch + 1);
        let rows = [u(exp.replicates), runs, checkpoints, u(exp.ppo.eval_prompts)].iter().fold(1u64, |a, &n| a.saturating_mul(n));
        Needs {
            policies: runs,
            batch: Some(Part { what: "one direct-alignment batch of pairs (daa.batch)", key: "daa.batch", count: 2 * u(d.batch) }),
            rollouts: Some(Part {
                what: "direct-alignment pairs and evaluation samples (proxy.data_sizes, ppo.eval_prompts)",
                key: "proxy.data_sizes",
                count: 2 * u(*exp.proxy.data_sizes.iter().max().expect("validated non-empty")) + u(exp.ppo.eval_prompts),
            }),
            unit_rows: rows,
            unit_values: rows.saturating_mul(12 + u(exp.proxy.members)),
            unit_keys: match self.0 {
                Loss::Dpo => "DPO: runs × checkpoints × ppo.eval_prompts",
                Loss::Ipo => "IPO: runs × checkpoints × ppo.eval_prompts",
                Loss::Chipo => "χPO: runs × checkpoints × ppo.eval_prompts",
            },
            ..Needs::default()
        }
    }

    fn outline(&self, exp: &Experiment, grid: &[ProxyCell]) -> Vec<String> {
        let cells = daa_cells(exp, self.0, grid);
        if cells.is_empty() {
            return Vec::new();
        }
        let d = &exp.daa;
        let mut out = vec![format!(
            "{}: {} runs x {} epochs of the ensemble's pairs, {} checkpoints per epoch, per replicate:",
            self.0.label(),
            cells.len(),
            d.epochs,
            d.evals_per_epoch
        )];
        out.extend(cells.iter().map(|c| format!("  {}", c.id())));
        out
    }

    fn in_brief(&self, rows: &[&CurveRow]) -> String {
        format!("{} (β = {}, from the ensembles' own pairs)", self.0.label(), crate::methods::betas(rows))
    }

    fn measured(&self, rows: &[&CurveRow]) -> String {
        let steps = rows.iter().filter_map(|r| r.step).collect::<Vec<_>>();
        format!(
            "**{}** (direct alignment on the pairs an ensemble's proxies learn from; no proxy optimized, the \
             proxy column is the ensemble's mean; aggregator `direct`): β {}, evaluated at optimizer steps {}…{} on {} \
             held-out prompts (PPO's); KL(π‖π_ref) is the k1 estimate on fresh samples in nats.",
            self.0.label(),
            crate::methods::betas(rows),
            steps.iter().min().unwrap_or(&0),
            steps.iter().max().unwrap_or(&0),
            crate::methods::listed(rows.iter().map(|r| r.prompts).collect()),
        )
    }

    fn unit_table(&self) -> UnitTable {
        checkpoint_unit_table(self.traits(), self.stems().0)
    }
}

/// The table of `stem`, one row per checkpoint of every run.
fn train_frame(stem: &str, rows: &[(DaaCell, Checkpoint)]) -> Result<DataFrame> {
    let x = |f: fn(&Checkpoint) -> f64| rows.iter().map(|(_, c)| f(c)).collect::<Vec<_>>();
    let columns = vec![
        Column::new("run".into(), rows.iter().map(|(c, _)| c.id()).collect::<Vec<_>>()),
        Column::new("ensemble".into(), rows.iter().map(|(c, _)| c.ensemble.clone()).collect::<Vec<_>>()),
        Column::new("data_size".into(), rows.iter().map(|(c, _)| c.data_size as u64).collect::<Vec<_>>()),
        Column::new("label_noise".into(), rows.iter().map(|(c, _)| c.noise).collect::<Vec<_>>()),
        Column::new("kl_penalty".into(), rows.iter().map(|(c, _)| c.beta).collect::<Vec<_>>()),
        Column::new("replicate".into(), rows.iter().map(|(c, _)| c.replicate as u64).collect::<Vec<_>>()),
        Column::new("step".into(), rows.iter().map(|(_, k)| k.evaluation.step as u64).collect::<Vec<_>>()),
        Column::new("epoch".into(), x(|c| c.epoch)),
        Column::new("kl".into(), x(|c| c.evaluation.kl_k1)),
        Column::new("gold".into(), x(|c| crate::stats::mean_se(&c.evaluation.gold_by_prompt).0)),
        Column::new("implicit_reward".into(), x(|c| c.implicit_reward)),
        Column::new("chosen_logp".into(), x(|c| c.chosen_logp)),
        Column::new("rejected_logp".into(), x(|c| c.rejected_logp)),
        Column::new("margin".into(), x(|c| c.margin)),
        Column::new("train_loss".into(), x(|c| c.train_loss)),
    ];
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table {
        path: stem.into(),
        msg: e.to_string(),
    })
}
