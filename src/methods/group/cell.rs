//! The cell of one group-relative run: one of PPO's sweep runs (an ensemble, an aggregator,
//! a shaping, a β) trained by GRPO or RLOO from π_ref. Stores the final policy's weights and the
//! outcome (every evaluation checkpoint, every update's diagnostics); a run that diverges is
//! stored as a failure naming run and update, as PPO's.

use std::path::Path;

use serde_json::{json, Value};

use super::{Estimator, Outcome};
use crate::cell::cost::Work;
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::store::Meta;
use crate::config::{Experiment, GroupSpec};
use crate::error::Result;
use crate::methods::ppo::cell::{context, eval_prompts, load_run, member_params, store_run, PpoCell};

/// One run: PPO's sweep run `run`, trained by `estimator`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCell {
    pub estimator: Estimator,
    pub run: PpoCell,
}

impl GroupCell {
    /// Stable run id: PPO's with the method's name first (`grpo/ENSEMBLE/AGGREGATOR/bBETA`).
    pub fn id(&self) -> String {
        let ppo = self.run.id();
        format!("{}/{}", self.estimator.name(), ppo.strip_prefix("ppo/").unwrap_or(&ppo))
    }

    /// The method's section of the experiment.
    pub fn spec<'a>(&self, exp: &'a Experiment) -> &'a GroupSpec {
        match self.estimator {
            Estimator::Grpo => &exp.grpo,
            Estimator::Rloo => &exp.rloo,
        }
    }
}

impl CellKind for GroupCell {
    fn name(&self) -> &'static str {
        self.estimator.name()
    }
    fn stage(&self) -> &'static str {
        self.estimator.label()
    }
    fn replicate(&self) -> usize {
        self.run.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        let mut settings = serde_json::to_value(self.spec(exp)).expect("group spec serializes");
        settings.as_object_mut().expect("group spec is a table").remove("enabled");
        self.run.with_shaping(exp, json!({
            "run": self.id(),
            "estimator": self.estimator,
            "aggregator": self.run.aggregator,
            "kl_penalty": self.run.beta,
            "settings": settings,
            "eval_prompts": exp.ppo.eval_prompts,
            "world": exp.world_recipe(),
            "replicate": self.run.replicate,
            "seed": exp.replicate_seed(self.run.replicate),
        }))
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_GROUP")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let s = self.spec(exp);
        let seq = exp.world_config(0).seq_len() as f64;
        let policy = exp.params.policy;
        let evals = (s.updates / s.eval_every + 2) as f64 * exp.ppo.eval_prompts as f64;
        let member = member_params(exp, &self.run.ensemble);
        let rollouts = (s.updates * s.prompts * s.group) as f64;
        // Sampling, π_ref's log-probs, scoring by every member (gold and the held-out proxy at
        // evaluations), then epochs of minibatch training.
        let mut w = Work::default();
        w.infer((rollouts + evals) * seq, policy);
        w.infer((rollouts + evals) * seq, policy);
        for _ in 0..self.run.members.len() {
            w.infer((rollouts + evals) * seq, member);
        }
        w.infer(evals * seq, exp.params.gold);
        w.train(rollouts * s.epochs as f64 * seq, policy);
        self.run.reference_work(exp, &mut w, s.updates, s.prompts);
        w
    }
    fn units(&self, exp: &Experiment) -> u64 {
        self.spec(exp).updates as u64
    }
    fn per_replicate(&self) -> bool {
        true
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, self, dir, pb)
    }
    fn load(&self, _exp: &Experiment, _world: &crate::world::WorldConfig, _device: &candle_core::Device, _dir: &Path, meta: &Meta) -> Result<Loaded> {
        load_run::<Outcome>(meta)
    }
}

fn make(x: &Inputs, cell: &GroupCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let eval_prompts = eval_prompts(x, cell.run.replicate);
    let ctx = context(x, cell.run.replicate, &eval_prompts);
    let spec = crate::methods::ppo::RunSpec {
        id: cell.id(),
        aggregator: cell.run.aggregator,
        shaping: cell.run.shaping,
        beta: cell.run.beta,
    };
    store_run(
        x,
        &spec.id,
        dir,
        pb,
        |policy, varmap| super::train(&ctx, &spec, cell.estimator, cell.spec(x.exp), policy, varmap, pb),
        |o: &Outcome, secs| {
            let last = o.evaluations.last().expect("at least the step-0 evaluation");
            format!(
                "{} updates in {secs:.0}s, KL {:.2} nats, proxy {:.2}, gold {:.2}",
                o.updates.len(),
                last.kl_k1,
                last.measures.proxy,
                crate::stats::mean_se(&last.gold_by_prompt).0,
            )
        },
    )
}

/// A group-relative cell read back: the run's outcome, or the one-line error that ended it.
pub type GroupOutcome = std::result::Result<Outcome, String>;
