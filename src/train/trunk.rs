//! The pretrained trunk a proxy of a pretrained source starts from (`proxy.sources`): a
//! language model of the proxy's size trained on the world's text — fresh demonstrations
//! of the replicate's world, next-token loss (the loss π_ref's SFT uses) — whose trunk
//! becomes the reward model's trunk (a fresh scalar head goes on top). One cell per proxy
//! size, pretraining seed and replicate; every fine-tune that names it reads the one cell.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};
use tracing::info;

use crate::cell::cost::Work;
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::make::{save_weights, shards, WEIGHTS};
use crate::cell::store::Meta;
use crate::config::{Experiment, ProxySizeSpec};
use crate::error::{Error, Result};
use crate::model::{seeded_init, Policy};
use crate::stats::curve::replicate_suffix;
use crate::world::WorldConfig;

/// The prefix of the trunk's variables, in a language model and in a reward model alike.
pub const TRUNK: &str = "trunk.";

/// One pretraining run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkCell {
    pub size: ProxySizeSpec,
    /// The pretraining seed: 0 is the trunk the shared-trunk sources fine-tune (and member
    /// 0 of `pretrain`); member m of `pretrain` reads seed m.
    pub seed: usize,
    pub replicate: usize,
}

/// A trunk read back: its variables by name (`trunk.…`).
pub struct TrunkWeights(pub HashMap<String, Tensor>);

impl TrunkCell {
    /// `trunk/s/p0` (replicate 0) or `trunk/s/p3/r2`.
    pub fn id(&self) -> String {
        format!("trunk/{}/p{}{}", self.size.name, self.seed, replicate_suffix(self.replicate))
    }
}

impl CellKind for TrunkCell {
    fn name(&self) -> &'static str {
        "trunk"
    }
    fn stage(&self) -> &'static str {
        "pretrained trunks"
    }
    fn replicate(&self) -> usize {
        self.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        json!({
            "id": self.id(),
            "arch": exp.proxy_arch(&self.size),
            "world": exp.world_recipe(),
            "pretrain": exp.proxy.pretrain,
            "seed": exp.replicate_seed(self.replicate),
        })
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_TRUNK")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let seq = exp.world_config(0).seq_len() as f64;
        let p = &exp.proxy.pretrain;
        let params = lm_params(exp, &self.size);
        let mut w = Work::default();
        w.train((p.steps * p.batch) as f64 * seq, params);
        w.infer((p.demonstrations / 10).clamp(1, 2000) as f64 * seq, params);
        w
    }
    fn units(&self, exp: &Experiment) -> u64 {
        exp.proxy.pretrain.steps as u64
    }
    fn per_replicate(&self) -> bool {
        true
    }
    fn make(&self, inputs: &Inputs, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
        make(inputs, self, dir, pb)
    }
    fn load(&self, _exp: &Experiment, _world: &WorldConfig, device: &candle_core::Device, dir: &Path, meta: &Meta) -> Result<Loaded> {
        let all = candle_core::safetensors::load(dir.join(WEIGHTS), device).map_err(|e| Error::Artifact {
            dir: dir.to_path_buf(),
            reason: format!("reading the trunk: {}", e.to_string().lines().next().unwrap_or("")),
        })?;
        let trunk: HashMap<String, Tensor> = all.into_iter().filter(|(k, _)| k.starts_with(TRUNK)).collect();
        if trunk.is_empty() {
            return Err(Error::Artifact { dir: dir.to_path_buf(), reason: format!("{WEIGHTS} holds no {TRUNK}* tensor") });
        }
        Ok(Loaded::new(TrunkWeights(trunk), meta))
    }
}

/// Parameters of the language model a trunk of `size` is pretrained as (trunk, LM head and
/// the unused value head).
pub fn lm_params(exp: &Experiment, size: &ProxySizeSpec) -> usize {
    let a = exp.proxy_arch(size);
    // The reward model's parameters (trunk and a scalar head, the value head's shape) and
    // the LM head.
    a.reward_params() + a.width * a.vocab + a.vocab
}

fn make(x: &Inputs, cell: &TrunkCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let exp = x.exp;
    let p = &exp.proxy.pretrain;
    let id = cell.id();
    let cfg = exp.proxy_arch(&cell.size);
    let seed = crate::seed::derive(exp.replicate_seed(cell.replicate), &id);
    let varmap = VarMap::new();
    let lm = Policy::new(&cfg, x.world, VarBuilder::from_varmap(&varmap, DType::F32, x.device))?;
    seeded_init(&varmap, crate::seed::derive(seed, "init"), cfg.layers)?;
    let mut rng = crate::seed::rng(seed, "demonstrations");
    let n_val = (p.demonstrations / 10).clamp(1, 2000);
    let (prompts, responses) = crate::train::sft::demonstrations(x.world, p.demonstrations + n_val, &mut rng);
    let all = crate::model::policy::encode_all(x.world, &prompts, &responses);
    let train = all.select(&(0..p.demonstrations).collect::<Vec<_>>());
    let val = all.select(&(p.demonstrations..p.demonstrations + n_val).collect::<Vec<_>>());
    let t = Instant::now();
    let report = crate::train::sft::train(
        &lm,
        &varmap,
        &train,
        &val,
        &crate::train::sft::SftParams { steps: p.steps, batch: p.batch, lr: p.lr, seed: crate::seed::derive(seed, "order"), shards: shards(x.device) },
        pb,
    )?;
    let train_seconds = t.elapsed().as_secs_f64();
    pb.suspend(|| info!("{id}: pretrained on {} demonstrations, val loss {:.3} nats/token", p.demonstrations, report.val_loss));
    save_weights(&varmap, dir)?;
    Ok(json!({
        "pretrain": report,
        "train_seconds": train_seconds,
        "params": crate::model::param_count(&varmap),
    }))
}

/// Sets the trunk variables of `varmap` (a reward model's) to `trunk`'s (read from `dir`);
/// every one must be there with its shape.
pub fn start_from(varmap: &mut VarMap, trunk: &TrunkWeights, dir: &Path) -> Result<()> {
    let names: Vec<String> = varmap.data().lock().expect("varmap lock").keys().filter(|k| k.starts_with(TRUNK)).cloned().collect();
    for name in names {
        let bad = |reason: String| Error::Artifact { dir: dir.to_path_buf(), reason };
        let t = trunk.0.get(&name).ok_or_else(|| bad(format!("the pretrained trunk lacks {name}")))?;
        varmap.set_one(&name, t).map_err(|e| bad(format!("{name}: {}", e.to_string().lines().next().unwrap_or(""))))?;
    }
    Ok(())
}
