//! The direct-alignment runs of the grid (the ensembles `[daa]` selects × losses × β) and the
//! cell of one: π_ref trained by one loss at one β on the pairs an ensemble's proxies learn
//! from. Stores the final policy's weights and the outcome (every checkpoint); a run that
//! diverges is stored as a failure naming run and step, as PPO's.

use std::path::Path;

use serde_json::{json, Value};

use super::{Loss, Outcome, Run};
use crate::cell::cost::Work;
use crate::cell::kind::{CellKind, Inputs, Loaded};
use crate::cell::store::Meta;
use crate::config::Experiment;
use crate::error::Result;
use crate::methods::ppo::cell::{context, eval_prompts, load_run, member_params, store_run};
use crate::stats::curve::replicate_suffix;
use crate::train::pairs::PairData;
use crate::train::proxy::{ensembles, ProxyCell};
use crate::world::SeqSet;

/// One run.
#[derive(Debug, Clone, PartialEq)]
pub struct DaaCell {
    pub loss: Loss,
    pub beta: f64,
    /// The ensemble whose pairs it learns from (`SIZE/dDATA/nNOISE`), and its members'
    /// indices in the proxy list (they score its samples; none is optimized against).
    pub ensemble: String,
    pub members: Vec<usize>,
    pub data_size: usize,
    pub noise: f64,
    pub replicate: usize,
}

impl DaaCell {
    /// Stable run id: `LOSS/ENSEMBLE/bBETA[/rR]`.
    pub fn id(&self) -> String {
        format!("{}/{}/b{}{}", self.loss.name(), self.ensemble, self.beta, replicate_suffix(self.replicate))
    }

    /// The run as PPO's sweep describes runs (its ensemble, the `direct` aggregator, β), for
    /// the rows and unit tables policy methods share.
    pub fn as_run(&self) -> crate::methods::ppo::cell::PpoCell {
        crate::methods::ppo::cell::PpoCell {
            ensemble: self.ensemble.clone(),
            members: self.members.clone(),
            aggregator: crate::stats::aggregate::Aggregator::Direct,
            shaping: crate::stats::shaping::Shaping::None,
            beta: self.beta,
            replicate: self.replicate,
        }
    }
}

/// Every run of `loss` of one replicate's proxy list `cells`: the ensembles `daa.sizes` ×
/// `daa.data_sizes` × `daa.noise` select (in grid order) × `daa.betas`; none when the loss is
/// not in `daa.losses` or the section is off.
pub fn daa_cells(exp: &Experiment, loss: Loss, cells: &[ProxyCell]) -> Vec<DaaCell> {
    let d = &exp.daa;
    if !d.enabled || !d.losses.iter().any(|l| l == loss.name()) {
        return Vec::new();
    }
    let first_size = &exp.proxy.sizes[0].name;
    let mut out = Vec::new();
    for (ensemble, members) in ensembles(cells) {
        let c = &cells[members[0]];
        let size_ok = if d.sizes.is_empty() { &c.size.name == first_size } else { d.sizes.contains(&c.size.name) };
        let data_ok = d.data_sizes.is_empty() || d.data_sizes.contains(&c.data_size);
        let noise_ok = d.noise.is_empty() || d.noise.contains(&c.noise);
        // The pairs are the same whatever the proxies' source: one run per pair set.
        let source_ok = c.source == exp.proxy.first_source();
        if !(size_ok && data_ok && noise_ok && source_ok) {
            continue;
        }
        for &beta in &d.betas {
            out.push(DaaCell {
                loss,
                beta,
                ensemble: ensemble.clone(),
                members: members.clone(),
                data_size: c.data_size,
                noise: c.noise,
                replicate: c.replicate,
            });
        }
    }
    out
}

impl CellKind for DaaCell {
    fn name(&self) -> &'static str {
        self.loss.name()
    }
    fn stage(&self) -> &'static str {
        self.loss.label()
    }
    fn replicate(&self) -> usize {
        self.replicate
    }
    fn recipe(&self, exp: &Experiment) -> Value {
        let mut settings = serde_json::to_value(&exp.daa).expect("daa spec serializes");
        for k in ["enabled", "losses", "betas", "sizes", "data_sizes", "noise"] {
            settings.as_object_mut().expect("daa spec is a table").remove(k);
        }
        json!({
            "run": self.id(),
            "loss": self.loss,
            "beta": self.beta,
            "data_size": self.data_size,
            "noise": self.noise,
            "settings": settings,
            "eval_prompts": exp.ppo.eval_prompts,
            "label": exp.preferences.label,
            "world": exp.world_recipe(),
            "replicate": self.replicate,
            "seed": exp.replicate_seed(self.replicate),
        })
    }
    fn code_version(&self) -> &'static str {
        env!("GOODHART_CODE_DAA")
    }
    fn work(&self, exp: &Experiment) -> Work {
        let d = &exp.daa;
        let seq = exp.world_config(0).seq_len() as f64;
        let policy = exp.params.policy;
        let evals = (d.epochs * d.evals_per_epoch + 1) as f64;
        let samples = evals * exp.ppo.eval_prompts as f64;
        let member = member_params(exp, &self.ensemble);
        let pairs = self.data_size as f64;
        let mut w = Work::default();
        // π_ref on every training response once; sampling and π_ref at each checkpoint;
        // every member, gold and the held-out proxy on the samples; the displacement pairs.
        w.infer(2.0 * pairs * seq, policy);
        w.infer(2.0 * samples * seq, policy);
        for _ in 0..self.members.len() + 2 {
            w.infer(samples * seq, member.max(1));
        }
        w.infer(evals * 2.0 * super::DISPLACEMENT_PAIRS.min(self.data_size) as f64 * seq, policy);
        w.train(2.0 * pairs * d.epochs as f64 * seq, policy);
        w
    }
    fn units(&self, exp: &Experiment) -> u64 {
        (self.data_size.div_ceil(exp.daa.batch.max(1)) * exp.daa.epochs) as u64
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

fn make(x: &Inputs, cell: &DaaCell, dir: &Path, pb: &indicatif::ProgressBar) -> Result<Value> {
    let exp = x.exp;
    let data: &PairData = x.dep("pairs");
    // The ensemble's pairs: the first `data_size`, with the labels its members learn from.
    let labels = crate::train::rm::noisy_labels(exp, cell.replicate, cell.noise, &data.labels, false).0;
    let (mut chosen, mut rejected) = (SeqSet::new(data.train.a.seq_len), SeqSet::new(data.train.a.seq_len));
    for (i, &a_wins) in labels.iter().enumerate().take(cell.data_size) {
        let (w, l) = if a_wins { (&data.train.a, &data.train.b) } else { (&data.train.b, &data.train.a) };
        chosen.push_row(w.row(i), w.ends[i]);
        rejected.push_row(l.row(i), l.ends[i]);
    }
    let eval_prompts = eval_prompts(x, cell.replicate);
    let ctx = context(x, cell.replicate, &eval_prompts);
    let run = Run { id: cell.id(), loss: cell.loss, beta: cell.beta, spec: &exp.daa, chosen, rejected };
    store_run(
        x,
        &run.id,
        dir,
        pb,
        |policy, varmap| super::train(&ctx, &run, policy, varmap, pb),
        |o: &Outcome, secs| {
            let last = o.checkpoints.last().expect("at least the first checkpoint");
            format!(
                "{:.1} epochs in {secs:.0}s, KL {:.2} nats, gold {:.2}, chosen log-prob {:.2} (margin {:.2})",
                last.epoch,
                last.evaluation.kl_k1,
                crate::stats::mean_se(&last.evaluation.gold_by_prompt).0,
                last.chosen_logp,
                last.margin,
            )
        },
    )
}

/// A direct-alignment cell read back: the run's outcome, or the one-line error that ended it.
pub type DaaOutcome = std::result::Result<Outcome, String>;
