//! One optimizer step shared by every training loop: finite-loss check, backward, global
//! gradient-norm clipping (candle has none built in), and candle's AdamW: with decoupled
//! weight decay [`WEIGHT_DECAY`] and a warmup + linear-decay schedule for supervised
//! training ([`Trainer::new`]: SFT, gold, proxies), or with no weight decay (plain Adam) at
//! a constant rate for PPO ([`Trainer::constant`]). β1 0.9, β2 0.999, ε 1e-8 in both.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

use crate::error::{Error, Result};

/// Decoupled weight decay of the supervised trainers ([`Trainer::new`]).
pub const WEIGHT_DECAY: f64 = 0.01;

/// AdamW (or plain Adam) with clipping and an optional schedule, bound to one model's variables.
pub struct Trainer {
    opt: AdamW,
    vars: Vec<Var>,
    base_lr: f64,
    total_steps: usize,
    max_grad_norm: f64,
    /// Warmup + linear decay (true) or a constant rate (false).
    scheduled: bool,
    model: String,
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

impl Trainer {
    /// AdamW with weight decay [`WEIGHT_DECAY`] and a warmup + linear-decay schedule over
    /// `total_steps`. `model` names the model in errors (e.g. `proxy/m/d4000/n0.00/k1`).
    pub fn new(varmap: &VarMap, lr: f64, total_steps: usize, max_grad_norm: f64, model: &str) -> Result<Self> {
        Self::build(varmap, lr, WEIGHT_DECAY, Some(total_steps), max_grad_norm, model)
    }

    /// Plain Adam (no weight decay) at the constant rate `lr` (PPO; see
    /// [`crate::methods::ppo::PPO_OPTIMIZER`]).
    pub fn constant(varmap: &VarMap, lr: f64, max_grad_norm: f64, model: &str) -> Result<Self> {
        Self::build(varmap, lr, 0.0, None, max_grad_norm, model)
    }

    fn build(
        varmap: &VarMap,
        lr: f64,
        weight_decay: f64,
        schedule: Option<usize>,
        max_grad_norm: f64,
        model: &str,
    ) -> Result<Self> {
        // In name order: VarMap is a HashMap, and the gradient norm sums over the variables,
        // so a per-process order would change its last bits from run to run.
        let vars: Vec<Var> = {
            let data = varmap.data().lock().expect("varmap lock");
            let mut named: Vec<(&String, &Var)> = data.iter().collect();
            named.sort_by(|a, b| a.0.cmp(b.0));
            named.into_iter().map(|(_, v)| v.clone()).collect()
        };
        let opt = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr,
                weight_decay,
                ..Default::default()
            },
        )?;
        Ok(Self {
            opt,
            vars,
            base_lr: lr,
            total_steps: schedule.unwrap_or(1).max(1),
            max_grad_norm,
            scheduled: schedule.is_some(),
            model: model.to_string(),
        })
    }

    /// Learning rate at `step` (constant for [`constant`](Self::constant)): linear warmup over the first 5% of steps, then linear
    /// decay to 10% of the base rate.
    pub fn lr_at(&self, step: usize) -> f64 {
        if !self.scheduled {
            return self.base_lr;
        }
        let warm = (self.total_steps / 20).max(1);
        if step < warm {
            self.base_lr * (step + 1) as f64 / warm as f64
        } else {
            let frac = (step - warm) as f64 / (self.total_steps - warm).max(1) as f64;
            self.base_lr * (1.0 - 0.9 * frac.min(1.0))
        }
    }

    /// One update from a batch of `n` examples split into `shards` contiguous ranges that
    /// run in parallel on the work pool. `loss_of(range)` returns the mean loss over that
    /// range; the shards' gradients are combined with weights `len / n`, so the update is
    /// the one the whole batch would give (up to float rounding).
    pub fn step_sharded<F>(&mut self, n: usize, shards: usize, step: usize, loss_of: F) -> Result<StepStats>
    where
        F: Fn(std::ops::Range<usize>) -> Result<Tensor> + Sync + Send,
    {
        let shards = shards.clamp(1, n.max(1));
        if shards == 1 {
            return self.step(&loss_of(0..n)?, step);
        }
        let ranges: Vec<std::ops::Range<usize>> =
            (0..shards).map(|i| (i * n / shards)..((i + 1) * n / shards)).collect();
        let parts = crate::parallel::map(&ranges, |r| -> Result<(f32, GradStore)> {
            let loss = loss_of(r.clone())?;
            let value = loss.to_scalar::<f32>()?;
            let w = r.len() as f64 / n as f64;
            Ok((value * w as f32, (loss * w)?.backward()?))
        });
        let mut value = 0f32;
        let mut grads: Option<GradStore> = None;
        for part in parts {
            let (v, g) = part?;
            value += v;
            grads = Some(match grads {
                None => g,
                Some(mut acc) => {
                    for var in &self.vars {
                        if let Some(extra) = g.get(var) {
                            let sum = match acc.remove(var) {
                                Some(a) => (a + extra)?,
                                None => extra.clone(),
                            };
                            acc.insert(var, sum);
                        }
                    }
                    acc
                }
            });
        }
        self.apply(value, grads.expect("at least one shard"), step)
    }

    /// Backpropagates the scalar `loss`, clips and applies one update. A NaN or infinite
    /// loss or gradient stops training with an error naming the model and step.
    pub fn step(&mut self, loss: &Tensor, step: usize) -> Result<StepStats> {
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                model: self.model.clone(),
                step,
                value,
            });
        }
        let grads = loss.backward()?;
        self.apply(value, grads, step)
    }

    fn apply(&mut self, value: f32, mut grads: GradStore, step: usize) -> Result<StepStats> {
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                model: self.model.clone(),
                step,
                value,
            });
        }
        let grad_norm = clip_grad_norm(&mut grads, &self.vars, self.max_grad_norm)?;
        if !grad_norm.is_finite() {
            return Err(Error::NonFiniteLoss {
                model: format!("{} (gradient norm)", self.model),
                step,
                value: grad_norm as f32,
            });
        }
        let lr = self.lr_at(step);
        self.opt.set_learning_rate(lr);
        self.opt.step(&grads)?;
        Ok(StepStats {
            loss: value,
            grad_norm,
            lr,
        })
    }
}

/// Rescales the gradients of `vars` in place so their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if norm.is_finite() && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v) {
                grads.insert(v, (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// Batches of example indices drawn without replacement, reshuffled each time the data run
/// out (a partial tail is skipped), from a seeded RNG.
pub struct Batches {
    order: Vec<usize>,
    cursor: usize,
    rng: rand::rngs::StdRng,
}

impl Batches {
    pub fn new(n: usize, rng: rand::rngs::StdRng) -> Self {
        Self {
            order: (0..n).collect(),
            cursor: n,
            rng,
        }
    }

    /// The next `batch` indices (all of them if there are fewer).
    pub fn next_batch(&mut self, batch: usize) -> &[usize] {
        use rand::seq::SliceRandom;
        let batch = batch.min(self.order.len());
        if self.cursor + batch > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let out = &self.order[self.cursor..self.cursor + batch];
        self.cursor += batch;
        out
    }
}

/// Mean of the last `window` values pushed (the reported training loss).
#[derive(Debug, Clone)]
pub struct RecentMean {
    values: std::collections::VecDeque<f32>,
    window: usize,
}

impl RecentMean {
    pub fn new(window: usize) -> Self {
        Self {
            values: std::collections::VecDeque::with_capacity(window),
            window,
        }
    }

    pub fn push(&mut self, v: f32) {
        if self.values.len() == self.window {
            self.values.pop_front();
        }
        self.values.push_back(v);
    }

    pub fn mean(&self) -> f32 {
        self.values.iter().sum::<f32>() / self.values.len().max(1) as f32
    }
}
