//! The PPO runs of the grid (ensembles × aggregators × shapings × KL penalties), and the cell
//! of one: one PPO run against an ensemble through one aggregator and shaping at one KL
//! penalty, from π_ref.
//! Stores the final policy's weights and the outcome (every evaluation checkpoint and every
//! update's diagnostics). A run that diverges (a non-finite loss or score) is stored as a
//! failure naming run and update: with the same code and settings it would diverge again.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use tracing::{info, warn};

use crate::cell::make::{load_policy_weights, save_weights};
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::cost::Work;
use crate::config::Experiment;
use crate::cell::store::Meta;
use crate::error::{Error, Result};
use crate::stats::curve::replicate_suffix;
use crate::stats::shaping::{Objective, Shaping};
use crate::train::proxy::{ensembles, ProxyCell};

/// One PPO run of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct PpoCell {
    pub ensemble: String,
    /// Indices of the ensemble's members in the proxy list.
    pub members: Vec<usize>,
    pub aggregator: crate::stats::aggregate::Aggregator,
    /// The shaping of the aggregated score (`none` for most runs).
    pub shaping: Shaping,
    /// KL-penalty coefficient β.
    pub beta: f64,
    pub replicate: usize,
}

impl PpoCell {
    /// Stable run id: `ppo/ENSEMBLE/AGGREGATOR[(λ)][+SHAPING]/bBETA[/rR]` (the aggregator's
    /// label, [`Objective::label`]).
    pub fn id(&self) -> String {
        format!("ppo/{}/{}/b{}{}", self.ensemble, self.objective().label(), self.beta, replicate_suffix(self.replicate))
    }

    /// What the run optimizes: its aggregator and shaping.
    pub fn objective(&self) -> Objective {
        Objective { aggregator: self.aggregator, shaping: self.shaping }
    }

    /// `recipe` with the run's shaping and the parameter it reads (`shaping`, and
    /// `shaping_clip` or `length_penalty`); as it is for `none`, so an unshaped run's recipe
    /// (and key) is what it was before shaping existed.
    pub fn with_shaping(&self, exp: &Experiment, mut recipe: Value) -> Value {
        let p = &exp.ppo;
        let extra = match self.shaping {
            Shaping::None => return recipe,
            Shaping::Par | Shaping::Center => json!({ "shaping": self.shaping }),
            Shaping::Clip => json!({ "shaping": self.shaping, "shaping_clip": p.shaping_clip }),
            Shaping::Length => json!({ "shaping": self.shaping, "length_penalty": p.length_penalty }),
        };
        if let (Some(r), Value::Object(extra)) = (recipe.as_object_mut(), extra) {
            r.extend(extra);
        }
        recipe
    }

    /// The work of a run's r_ref (`par`, `center`): one π_ref response sampled per training
    /// prompt of each of `updates` updates (`prompts` each), scored by every member.
    pub fn reference_work(&self, exp: &Experiment, w: &mut Work, updates: usize, prompts: usize) {
        if !self.shaping.reads_reference() {
            return;
        }
        let seq = exp.world_config(0).seq_len() as f64;
        let n = (updates * prompts) as f64 * seq;
        w.infer(n, exp.params.policy);
        for _ in 0..self.members.len() {
            w.infer(n, member_params(exp, &self.ensemble));
        }
    }
}

/// Every PPO run of one replicate's proxy list `cells` (from [`proxy_cells`]): the
/// ensembles `ppo.sizes` × `ppo.data_sizes` × `ppo.noise` select (in grid order), × the PPO
/// aggregators × `ppo.shaping` × `ppo.kl_penalties`.
pub fn ppo_cells(exp: &Experiment, cells: &[ProxyCell]) -> Vec<PpoCell> {
    if !exp.ppo.enabled {
        return Vec::new();
    }
    sweep(exp, cells)
}

/// The runs `[ppo]` selects, whether or not PPO runs: what the group-relative methods run
/// too (see [`ppo_cells`]).
pub fn sweep(exp: &Experiment, cells: &[ProxyCell]) -> Vec<PpoCell> {
    let p = &exp.ppo;
    let first_size = &exp.proxy.sizes[0].name;
    let first_data = exp.proxy.data_sizes[0];
    let mut out = Vec::new();
    for (ensemble, members) in ensembles(cells) {
        let c = &cells[members[0]];
        let size_ok = if p.sizes.is_empty() { &c.size.name == first_size } else { p.sizes.contains(&c.size.name) };
        let data_ok = if p.data_sizes.is_empty() { c.data_size == first_data } else { p.data_sizes.contains(&c.data_size) };
        let noise_ok = p.noise.is_empty() || p.noise.contains(&c.noise);
        if !(size_ok && data_ok && noise_ok) {
            continue;
        }
        for aggregator in p.aggregator_list(members.len()) {
            for shaping in p.shapings() {
                for &beta in &p.kl_penalties {
                    out.push(PpoCell {
                        ensemble: ensemble.clone(),
                        members: members.clone(),
                        aggregator,
                        shaping,
                        beta,
                        replicate: c.replicate,
                    });
                }
            }
        }
    }
    out
}

impl CellKind for PpoCell {
    fn name(&self) -> &'static str {
        "ppo"
    }
    fn stage(&self) -> &'static str {
        "PPO"
    }
    fn replicate(&self) -> usize {
        self.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        // The run's settings, without the lists that only choose which runs exist (the
        // shaping and its parameter are the run's own, added where it has one).
        let mut settings = serde_json::to_value(&exp.ppo).expect("ppo spec serializes");
        for k in [
            "enabled",
            "sizes",
            "data_sizes",
            "noise",
            "kl_penalties",
            "single_members",
            "aggregators",
            "uwo_lambdas",
            "mean_std_lambdas",
            "shaping",
            "shaping_clip",
            "length_penalty",
        ] {
            settings.as_object_mut().expect("ppo spec is a table").remove(k);
        }
        self.with_shaping(exp, json!({
            "run": self.id(),
            "aggregator": self.aggregator,
            "kl_penalty": self.beta,
            "settings": settings,
            "world": exp.world_recipe(),
            "replicate": self.replicate,
            "seed": exp.replicate_seed(self.replicate),
        }))
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_PPO")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let p = &exp.ppo;
        let policy = exp.params.policy;
        let evals = (p.updates / p.eval_every + 2) as f64 * p.eval_prompts as f64;
        let member = member_params(exp, &self.ensemble);
        let rollouts = (p.updates * p.rollout) as f64;
        // Sampling (policy), π_ref's log-probs, scoring by every member (and gold and the
        // held-out proxy at evaluations), then epochs of minibatch training.
        let mut w = Work::default();
        w.infer((rollouts + evals) * seq, policy);
        w.infer((rollouts + evals) * seq, policy);
        for _ in 0..self.members.len() {
            w.infer((rollouts + evals) * seq, member);
        }
        w.infer(evals * seq, exp.params.gold);
        w.train((p.updates * p.epochs * p.rollout) as f64 * seq, policy);
        self.reference_work(exp, &mut w, p.updates, p.rollout);
        w
    }
    fn units(&self, exp: &Experiment) -> u64 {
        exp.ppo.updates as u64
    }
    fn per_replicate(&self) -> bool {
        true
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, self, dir, pb)
    }
    fn load(&self, _exp: &Experiment, _world: &crate::world::WorldConfig, _device: &candle_core::Device, _dir: &Path, meta: &Meta) -> Result<Loaded> {
        load_run::<crate::methods::ppo::Outcome>(meta)
    }
}

/// Parameters of one member of ensemble `ensemble` (`SIZE/dDATA/nNOISE`); 0 for an unknown
/// size (for the cost models of the policy methods' cells).
pub fn member_params(exp: &Experiment, ensemble: &str) -> usize {
    let size = exp.proxy.sizes.iter().find(|s| ensemble.starts_with(&format!("{}/", s.name)));
    size.and_then(|s| exp.params.proxies.iter().find(|(n, _)| *n == s.name)).map(|p| p.1).unwrap_or(0)
}

/// PPO's held-out evaluation prompts of replicate `replicate`, from one stream: every policy
/// method (PPO, GRPO, RLOO, direct alignment) is measured on them.
pub fn eval_prompts(x: &Inputs, replicate: usize) -> Vec<Vec<u32>> {
    let mut rng = crate::seed::rng(x.exp.replicate_seed(replicate), "ppo/eval/prompts");
    (0..x.exp.ppo.eval_prompts).map(|_| x.world.prompt_in(crate::world::Split::PpoEval, &mut rng)).collect()
}

/// What a policy method's run reads from its inputs (the world, π_ref, gold, the ensemble's
/// members, the held-out proxy, the replicate's seed) and the evaluation prompts.
pub fn context<'a>(x: &'a Inputs, replicate: usize, eval_prompts: &'a [Vec<u32>]) -> crate::methods::ppo::Context<'a> {
    let (members, heldout) = crate::train::proxy::proxies(x);
    crate::methods::ppo::Context {
        world: x.world,
        reference: x.policy(),
        gold: x.gold(),
        members: members.iter().map(|m| m.1).collect(),
        heldout,
        spec: &x.exp.ppo,
        seed: x.exp.replicate_seed(replicate),
        eval_prompts,
    }
}

/// Trains a policy run (`train`, on a trainable copy of π_ref from the policy cell's weights)
/// and stores it: the final weights and `{outcome, train_seconds}`, with `summary`'s line in
/// the log. A run that diverges (a non-finite value) is stored as a failure naming run and
/// step: with the same code and settings it would diverge again; the other runs carry on.
pub fn store_run<T: serde::Serialize>(
    x: &Inputs,
    id: &str,
    dir: &Path,
    pb: &indicatif::ProgressBar,
    train: impl FnOnce(&crate::model::Policy, &candle_nn::VarMap) -> Result<T>,
    summary: impl FnOnce(&T, f64) -> String,
) -> Result<Value> {
    let (policy, varmap) = load_policy_weights(x.exp, x.world, x.device, x.policy_dir())?;
    let t = Instant::now();
    let outcome = match train(&policy, &varmap) {
        Ok(o) => o,
        Err(e @ Error::NonFiniteLoss { .. }) => {
            pb.suspend(|| warn!("{id}: failed, stored as a failure; the other runs carry on: {e}"));
            return Ok(json!({ "failed": e.to_string() }));
        }
        Err(e) => return Err(e),
    };
    let line = summary(&outcome, t.elapsed().as_secs_f64());
    pb.suspend(|| info!("{id}: {line}"));
    save_weights(&varmap, dir)?;
    Ok(json!({ "outcome": outcome, "train_seconds": t.elapsed().as_secs_f64() }))
}

/// A policy run read back (see [`store_run`]): its outcome `T`, or the one-line error that
/// ended it (a diverged run is a result too: stored, so it is not retried with the same code).
pub fn load_run<T: serde::de::DeserializeOwned + Send + Sync + 'static>(meta: &Meta) -> Result<Loaded> {
    let outcome: std::result::Result<T, String> = match meta.info.get("failed").and_then(|f| f.as_str()) {
        Some(msg) => Err(msg.to_string()),
        None => Ok(serde_json::from_value::<T>(meta.info["outcome"].clone()).map_err(|e| Error::Artifact {
            dir: std::path::PathBuf::from(format!("{}-{}", meta.kind, meta.key)),
            reason: format!("meta.json outcome: {e}"),
        })?),
    };
    Ok(Loaded::new(outcome, meta))
}

pub fn make(x: &Inputs, run: &PpoCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let eval_prompts = eval_prompts(x, run.replicate);
    let ctx = context(x, run.replicate, &eval_prompts);
    let spec = crate::methods::ppo::RunSpec {
        id: run.id(),
        aggregator: run.aggregator,
        shaping: run.shaping,
        beta: run.beta,
    };
    store_run(
        x,
        &spec.id,
        dir,
        pb,
        |policy, varmap| crate::methods::ppo::train(&ctx, &spec, policy, varmap, pb),
        |o: &crate::methods::ppo::Outcome, secs| {
            let last = o.evaluations.last().expect("at least the step-0 evaluation");
            format!(
                "{} updates in {secs:.0}s, KL {:.2} nats, proxy {:.2}, gold {:.2}{}",
                o.updates.len(),
                last.kl_k1,
                last.measures.proxy,
                crate::stats::mean_se(&last.gold_by_prompt).0,
                if o.stopped_at_budget { " (stopped at the KL budget)" } else { "" }
            )
        },
    )
}

/// A PPO cell read back: the run's outcome, or the one-line error that ended it.
pub type PpoOutcome = std::result::Result<crate::methods::ppo::Outcome, String>;
