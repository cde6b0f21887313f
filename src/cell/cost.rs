//! The cost model: the work a cell does, and what a unit of it costs on one core.

/// The work a cell does, in the units the cost model prices: tokens × parameters and
/// tokens, for training (forward, backward, optimizer) and for inference (sampling with the
/// KV cache, scoring).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Work {
    pub train_param_tokens: f64,
    pub train_tokens: f64,
    pub infer_param_tokens: f64,
    pub infer_tokens: f64,
}

/// Seconds per unit of [`Work`] on one core: fitted by least squares (non-negative) to the
/// per-cell make times of one replicate of the quick default run with `--jobs 1` on a 2-core
/// laptop-class x86-64 CPU (README, "Scaling out"). The per-token terms are the per-op
/// overhead that dominates the smallest models.
pub const RATES: Work = Work {
    train_param_tokens: 9.6e-11,
    train_tokens: 8.3e-7,
    infer_param_tokens: 2.9e-11,
    infer_tokens: 4.8e-7,
};

impl Work {
    /// Modelled CPU-seconds: this work priced at [`RATES`].
    pub fn seconds(&self) -> f64 {
        self.train_param_tokens * RATES.train_param_tokens
            + self.train_tokens * RATES.train_tokens
            + self.infer_param_tokens * RATES.infer_param_tokens
            + self.infer_tokens * RATES.infer_tokens
    }

    /// Training `tokens` through a model of `params` parameters.
    pub fn train(&mut self, tokens: f64, params: usize) {
        self.train_param_tokens += tokens * params as f64;
        self.train_tokens += tokens;
    }

    /// Inference (sampling, scoring) of `tokens` through a model of `params` parameters.
    pub fn infer(&mut self, tokens: f64, params: usize) {
        self.infer_param_tokens += tokens * params as f64;
        self.infer_tokens += tokens;
    }
}
