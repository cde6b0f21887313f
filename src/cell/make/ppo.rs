//! One PPO run against an ensemble through one aggregator at one KL penalty, from π_ref.
//! Stores the final policy's weights and the outcome (every evaluation checkpoint and every
//! update's diagnostics). A run that diverges (a non-finite loss or score) is stored as a
//! failure naming run and update: with the same code and settings it would diverge again.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use tracing::{info, warn};

use super::{load_policy_weights, save_weights, Inputs, Loaded};
use crate::cell::store::Meta;
use crate::error::{Error, Result};
use crate::sweep::PpoCell;

pub fn make(x: &Inputs, run: &PpoCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let exp = x.exp;
    let seed = exp.replicate_seed(run.replicate);
    let world = x.world;
    let (members, heldout) = x.proxies();
    let mut rng = crate::seed::rng(seed, "ppo/eval/prompts");
    let eval_prompts: Vec<Vec<u32>> = (0..exp.ppo.eval_prompts).map(|_| world.prompt_in(crate::world::Split::PpoEval, &mut rng)).collect();
    let spec = crate::ppo::RunSpec {
        id: run.id(),
        aggregator: run.aggregator,
        beta: run.beta,
    };
    // A trainable copy of π_ref, from the policy cell's weights.
    let (policy, varmap) = load_policy_weights(exp, world, x.device, x.policy_dir())?;
    let ctx = crate::ppo::Context {
        world,
        reference: x.policy(),
        gold: x.gold(),
        members: members.iter().map(|m| m.1).collect(),
        heldout,
        spec: &exp.ppo,
        seed,
        eval_prompts: &eval_prompts,
    };
    let t = Instant::now();
    let outcome = match crate::ppo::train(&ctx, &spec, &policy, &varmap, pb) {
        Ok(o) => o,
        Err(e @ Error::NonFiniteLoss { .. }) => {
            pb.suspend(|| warn!("{}: failed, stored as a failure; the other runs carry on: {e}", spec.id));
            return Ok(json!({ "failed": e.to_string() }));
        }
        Err(e) => return Err(e),
    };
    let last = outcome.evaluations.last().expect("at least the step-0 evaluation");
    pb.suspend(|| {
        info!(
            "{}: {} updates in {:.0}s, KL {:.2} nats, proxy {:.2}, gold {:.2}{}",
            spec.id,
            outcome.updates.len(),
            t.elapsed().as_secs_f64(),
            last.kl_k1,
            last.proxy,
            crate::bon::mean_se(&last.gold_by_prompt).0,
            if outcome.stopped_at_budget { " (stopped at the KL budget)" } else { "" }
        )
    });
    save_weights(&varmap, dir)?;
    Ok(json!({ "outcome": outcome, "train_seconds": t.elapsed().as_secs_f64() }))
}

pub fn load(meta: &Meta) -> Result<Loaded> {
    let outcome = match meta.info.get("failed").and_then(|f| f.as_str()) {
        Some(msg) => Err(msg.to_string()),
        None => Ok(serde_json::from_value::<crate::ppo::Outcome>(meta.info["outcome"].clone()).map_err(|e| Error::Artifact {
            dir: std::path::PathBuf::from(format!("ppo-{}", meta.key)),
            reason: format!("meta.json outcome: {e}"),
        })?),
    };
    Ok(Loaded::Ppo { outcome, meta: meta.clone() })
}
