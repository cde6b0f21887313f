//! GRPO and RLOO as methods of a study: each runs PPO's sweep (one cell per run, reading its
//! ensemble's members), and its runs become curve points as PPO's checkpoints do, the
//! `grpo_units`/`rloo_units` tables (one row per evaluation sample), the
//! `grpo_train`/`rloo_train` tables (one row per update), and which runs were trained,
//! reused or failed.

use std::path::Path;

use polars::prelude::*;

use super::cell::{GroupCell, GroupOutcome};
use super::{Estimator, UpdateStats};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::methods::ppo::cell::sweep;
use crate::methods::ppo::method::{checkpoint_rows, checkpoint_unit_table, units_frame};
use crate::methods::{Assembled, Made, Method, Needs, Part, Planned, Runs, Table, UnitTable};
use crate::stats::curve::{CurveRow, Traits};
use crate::train::proxy::{ensemble_member, ProxyCell};

/// One of the group-relative methods.
pub struct GroupRl(pub Estimator);

impl GroupRl {
    fn enabled(&self, exp: &Experiment) -> bool {
        match self.0 {
            Estimator::Grpo => exp.grpo.enabled,
            Estimator::Rloo => exp.rloo.enabled,
        }
    }

    fn cells_of(&self, exp: &Experiment, grid: &[ProxyCell]) -> Vec<GroupCell> {
        if !self.enabled(exp) {
            return Vec::new();
        }
        sweep(exp, grid).into_iter().map(|run| GroupCell { estimator: self.0, run }).collect()
    }

    fn stems(&self) -> (&'static str, &'static str) {
        match self.0 {
            Estimator::Grpo => ("grpo_units", "grpo_train"),
            Estimator::Rloo => ("rloo_units", "rloo_train"),
        }
    }
}

impl Method for GroupRl {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn traits(&self) -> Traits {
        Traits { label: self.0.label(), form: crate::stats::fit::Form::Rl, kl_measured: true }
    }

    fn cells(&self, exp: &Experiment, _r: usize, grid: &[ProxyCell]) -> Vec<Planned> {
        self.cells_of(exp, grid)
            .into_iter()
            .map(|c| Planned {
                id: c.id(),
                pairs: false,
                members: c.run.members.clone(),
                cell: Box::new(c),
            })
            .collect()
    }

    fn cells_per_replicate(&self, exp: &Experiment) -> u64 {
        if self.enabled(exp) {
            exp.ppo.sweep_runs(&exp.proxy).map_or(u64::MAX, |n| n as u64)
        } else {
            0
        }
    }

    fn size_keys(&self) -> &'static str {
        match self.0 {
            Estimator::Grpo => "replicates × runs (ppo.kl_penalties × aggregators × ppo.shaping) × grpo.updates × grpo.prompts × grpo.group",
            Estimator::Rloo => "replicates × runs (ppo.kl_penalties × aggregators × ppo.shaping) × rloo.updates × rloo.prompts × rloo.group",
        }
    }

    fn assemble(&self, exp: &Experiment, proxies: &[&ProxyCell], cells: &[Made], _store: &Path) -> Result<Assembled> {
        let mut out = Assembled::default();
        let (mut runs, mut train, mut finished) = (Runs::default(), Vec::new(), Vec::new());
        for m in cells {
            let Some(cell) = m.cell.as_any().downcast_ref::<GroupCell>() else { continue };
            if cell.estimator != self.0 {
                continue;
            }
            if let Some(o) = runs.record(cell.id(), m.loaded.get::<GroupOutcome>(), m.made) {
                let proxy = ensemble_member(proxies, cell.run.replicate, &cell.run.ensemble);
                out.curves.extend(checkpoint_rows(self.name(), exp, &cell.run, proxy, &o.evaluations));
                train.extend(o.updates.iter().map(|u| (cell.clone(), u.clone())));
                finished.push((cell.run.clone(), o.evaluations.clone()));
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
        let s = match self.0 {
            Estimator::Grpo => &exp.grpo,
            Estimator::Rloo => &exp.rloo,
        };
        let u = |n: usize| n as u64;
        let rows = [u(exp.replicates), runs, u(s.checkpoints()), u(exp.ppo.eval_prompts)].iter().fold(1u64, |a, &n| a.saturating_mul(n));
        let (batch, rollouts, keys) = match self.0 {
            Estimator::Grpo => ("one GRPO minibatch (grpo.minibatch)", "GRPO rollouts (grpo.prompts × grpo.group, ppo.eval_prompts)", "GRPO: runs × checkpoints × ppo.eval_prompts"),
            Estimator::Rloo => ("one RLOO minibatch (rloo.minibatch)", "RLOO rollouts (rloo.prompts × rloo.group, ppo.eval_prompts)", "RLOO: runs × checkpoints × ppo.eval_prompts"),
        };
        let key = match self.0 {
            Estimator::Grpo => "grpo.prompts",
            Estimator::Rloo => "rloo.prompts",
        };
        Needs {
            policies: runs,
            batch: Some(Part { what: batch, key, count: u(s.minibatch) }),
            // PAR and centering sample one π_ref response per training prompt besides.
            rollouts: Some(Part {
                what: rollouts,
                key,
                count: u(s.prompts).saturating_mul(u(s.group) + u64::from(exp.ppo.reads_reference())).saturating_add(u(exp.ppo.eval_prompts)),
            }),
            unit_rows: rows,
            unit_values: rows.saturating_mul(12 + u(exp.proxy.members)),
            unit_keys: keys,
            ..Needs::default()
        }
    }

    fn outline(&self, exp: &Experiment, grid: &[ProxyCell]) -> Vec<String> {
        let cells = self.cells_of(exp, grid);
        if cells.is_empty() {
            return Vec::new();
        }
        let s = cells[0].spec(exp);
        let mut out = vec![format!(
            "{}: {} runs x {} updates of {} prompts x {} responses per replicate:",
            self.0.label(),
            cells.len(),
            s.updates,
            s.prompts,
            s.group
        )];
        out.extend(cells.iter().map(|c| format!("  {}", c.id())));
        out
    }

    fn in_brief(&self, rows: &[&CurveRow]) -> String {
        format!("{} (KL penalty β = {})", self.0.label(), crate::methods::betas(rows))
    }

    fn measured(&self, rows: &[&CurveRow]) -> String {
        let steps = rows.iter().filter_map(|r| r.step).collect::<Vec<_>>();
        let kl = match self.0 {
            Estimator::Grpo => "β·k3 to π_ref in the loss",
            Estimator::Rloo => "β·k1 to π_ref in the reward",
        };
        format!(
            "**{}** (group-relative, no critic; {kl}): KL penalties {}, evaluated at steps {}…{} on {} held-out \
             prompts (PPO's, with PPO's samples at step 0); KL(π‖π_ref) is the k1 estimate on fresh samples in nats.{}",
            self.0.label(),
            crate::methods::betas(rows),
            steps.iter().min().unwrap_or(&0),
            steps.iter().max().unwrap_or(&0),
            crate::methods::listed(rows.iter().map(|r| r.prompts).collect()),
            crate::methods::shaped_sentence(rows),
        )
    }

    fn unit_table(&self) -> UnitTable {
        checkpoint_unit_table(self.traits(), self.stems().0)
    }
}

/// The training table of `stem`, one row per update of every run.
fn train_frame(stem: &str, rows: &[(GroupCell, UpdateStats)]) -> Result<DataFrame> {
    let x = |f: fn(&UpdateStats) -> f64| rows.iter().map(|(_, u)| f(u)).collect::<Vec<_>>();
    let columns = vec![
        Column::new("run".into(), rows.iter().map(|(c, _)| c.id()).collect::<Vec<_>>()),
        Column::new("aggregator".into(), rows.iter().map(|(c, _)| c.run.objective().name()).collect::<Vec<_>>()),
        Column::new("lambda".into(), rows.iter().map(|(c, _)| c.run.aggregator.lambda()).collect::<Vec<_>>()),
        Column::new("ensemble".into(), rows.iter().map(|(c, _)| c.run.ensemble.clone()).collect::<Vec<_>>()),
        Column::new("kl_penalty".into(), rows.iter().map(|(c, _)| c.run.beta).collect::<Vec<_>>()),
        Column::new("replicate".into(), rows.iter().map(|(c, _)| c.run.replicate as u64).collect::<Vec<_>>()),
        Column::new("update".into(), rows.iter().map(|(_, u)| u.update as u64).collect::<Vec<_>>()),
        Column::new("reward/proxy".into(), x(|u| u.proxy)),
        Column::new("kl/k1".into(), x(|u| u.kl_k1)),
        Column::new("reward/total".into(), x(|u| u.reward)),
        Column::new("policy_loss".into(), x(|u| u.policy_loss)),
        Column::new("kl_loss".into(), x(|u| u.kl_loss)),
        Column::new("approx_kl".into(), x(|u| u.approx_kl)),
        Column::new("clipfrac".into(), x(|u| u.clipfrac)),
        Column::new("grad_norm".into(), x(|u| u.grad_norm)),
    ];
    DataFrame::new(rows.len(), columns).map_err(|e| Error::Table {
        path: stem.into(),
        msg: e.to_string(),
    })
}
