//! π_ref: a transformer trained by cross-entropy on the demonstrator's responses (SFT), and
//! the duplicate fraction of a one-prompt pool of its samples.

use std::path::Path;
use std::time::Instant;

use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};
use tracing::info;

use crate::cell::make::{frozen_weights, save_weights, shards};
use crate::cell::store::Meta;
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::cost::Work;
use crate::config::Experiment;
use crate::error::Result;
use crate::model::{frozen, seeded_init, Policy};
use crate::world::WorldConfig;

/// π_ref of world `world` (0 unless `world.per_replicate`; then the replicate that draws it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyCell {
    pub world: usize,
}

impl CellKind for PolicyCell {
    fn name(&self) -> &'static str {
        "policy"
    }
    fn stage(&self) -> &'static str {
        "reference policy"
    }
    fn replicate(&self) -> usize {
        self.world
    }
    fn world_index(&self, _exp: &Experiment) -> usize {
        self.world
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        let p = &exp.policy;
        if exp.text().is_some() {
            return json!({
                "world": exp.world_recipe(),
                "diversity_pool": exp.reference.diversity_pool,
                "seed": exp.world_seed(self.world),
            });
        }
        json!({
            "world": exp.world_recipe(),
            "arch": exp.policy_arch(),
            "sft": { "demonstrations": p.demonstrations, "steps": p.sft_steps, "batch": p.sft_batch, "lr": p.sft_lr },
            "diversity_pool": exp.reference.diversity_pool,
            "seed": exp.world_seed(self.world),
        })
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_POLICY")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let (p, policy) = (&exp.policy, exp.params.policy);
        let mut w = Work::default();
        if exp.text().is_none() {
            w.train((p.sft_steps * p.sft_batch) as f64 * seq, policy);
        }
        w.infer((exp.reference.standardize_samples + exp.reference.diversity_pool) as f64 * seq, policy);
        w
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, dir, pb)
    }
    fn load(&self, exp: &Experiment, world: &WorldConfig, device: &candle_core::Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
        load(exp, world, device, dir, meta)
    }
}

/// π_ref of its world, from the world's seed.
pub fn make(x: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    if x.exp.text().is_some() {
        return make_text(x);
    }
    let exp = x.exp;
    let (world, seed) = (x.world, exp.world_seed(x.world_index));
    let cfg = exp.policy_arch();
    let p = &exp.policy;
    let varmap = VarMap::new();
    let policy = Policy::new(&cfg, world, VarBuilder::from_varmap(&varmap, DType::F32, x.device))?;
    seeded_init(&varmap, crate::seed::derive(seed, "init/policy"), cfg.layers)?;
    let mut rng = crate::seed::rng(seed, "sft/demonstrations");
    let n_val = (p.demonstrations / 10).clamp(1, 2000);
    let (prompts, responses) = crate::train::sft::demonstrations(world, p.demonstrations + n_val, &mut rng);
    let all = crate::model::policy::encode_all(world, &prompts, &responses);
    let train = all.select(&(0..p.demonstrations).collect::<Vec<_>>());
    let val = all.select(&(p.demonstrations..p.demonstrations + n_val).collect::<Vec<_>>());
    let t = Instant::now();
    // This cell's share of its group's bar (one unit until here): one per step.
    pb.inc_length((p.sft_steps as u64).saturating_sub(1));
    let report = crate::train::sft::train(
        &policy,
        &varmap,
        &train,
        &val,
        &crate::train::sft::SftParams {
            steps: p.sft_steps,
            batch: p.sft_batch,
            lr: p.sft_lr,
            seed: crate::seed::derive(seed, "sft"),
            shards: shards(x.device),
        },
        pb,
    )?;
    let train_seconds = t.elapsed().as_secs_f64();
    let duplicate_fraction = diversity(&Policy::new(&cfg, world, frozen(&varmap, x.device))?, exp, world, seed)?;
    pb.suspend(|| {
        info!(
            "reference policy: {} params, SFT train loss {:.3}, val loss {:.3} nats/token; \
             a pool of {} samples for one prompt repeats {:.4} of them",
            crate::model::param_count(&varmap),
            report.train_loss,
            report.val_loss,
            exp.reference.diversity_pool,
            duplicate_fraction
        )
    });
    save_weights(&varmap, dir)?;
    Ok(json!({
        "sft": report,
        "train_seconds": train_seconds,
        "params": crate::model::param_count(&varmap),
        "diversity_pool_samples": exp.reference.diversity_pool,
        "duplicate_fraction": duplicate_fraction,
    }))
}

/// A text study's π_ref is its policy checkpoint, as it is: nothing is trained or stored
/// but what the checkpoint is and the duplicate fraction of a one-prompt pool of its samples.
fn make_text(x: &Inputs) -> Result<Value> {
    let exp = x.exp;
    let task = exp.text().expect("a text study");
    let (policy, _) = crate::cell::make::text_policy(exp, x.device, false)?;
    let seed = exp.world_seed(x.world_index);
    let duplicate_fraction = diversity(&policy, exp, x.world, seed)?;
    let sizes: Vec<String> = task.split_sizes().iter().map(|(s, n)| format!("{s:?} {n}")).collect();
    info!(
        "reference policy: {} ({} params); {} prompts fit {} tokens ({} dropped as longer; by use: {}); \
         a pool of {} samples for one prompt repeats {:.4} of them",
        task.spec().policy.display(),
        exp.params.policy,
        task.prompts().len(),
        task.layout().prefix_len,
        task.dropped,
        sizes.join(", "),
        exp.reference.diversity_pool,
        duplicate_fraction
    );
    Ok(json!({
        "checkpoint": task.spec().policy,
        "digest": task.digests.policy,
        "params": exp.params.policy,
        "prompts": task.prompts().len(),
        "prompts_dropped": task.dropped,
        "diversity_pool_samples": exp.reference.diversity_pool,
        "duplicate_fraction": duplicate_fraction,
    }))
}

pub fn load(exp: &Experiment, world: &WorldConfig, device: &candle_core::Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
    if exp.text().is_some() {
        return Ok(Loaded::new(crate::cell::make::text_policy(exp, device, false)?.0, meta));
    }
    let policy = frozen_weights(dir, device, |vb| Policy::new(&exp.policy_arch(), world, vb))?;
    Ok(Loaded::new(policy, meta))
}

/// Duplicate fraction of `reference.diversity_pool` π_ref samples of `world` (seed `seed`) for
/// one prompt (sampled in seeded blocks).
fn diversity(policy: &Policy, exp: &Experiment, world: &WorldConfig, seed: u64) -> Result<f64> {
    let n = exp.reference.diversity_pool;
    let mut rng = crate::seed::rng(seed, "reference/diversity");
    let prompt = world.prompt_in(crate::world::Split::Reference, &mut rng);
    let size = crate::cell::make::sample_block(world);
    let blocks: Vec<usize> = (0..n.div_ceil(size)).collect();
    let parts = crate::parallel::map(&blocks, |&block| {
        let mut rng = crate::seed::rng(seed, &format!("reference/diversity/block{block}"));
        let take = size.min(n - block * size);
        policy.sample(&vec![prompt.clone(); take], 1.0, &mut rng)
    });
    let mut responses = Vec::with_capacity(n);
    for part in parts {
        responses.extend(part?);
    }
    Ok(crate::train::sft::duplicate_fraction(&responses))
}
