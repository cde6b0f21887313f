//! The reward model: trunk + scalar head read at the response's end — the world's small
//! transformer, or a checkpoint's decoder and score head (the seam: the methods see one
//! [`RewardModel`], whichever model is behind it).
//!
//! Shapes: `raw(tokens: (b, t), ends: (b,) u32) -> (b,)`. Scores are standardized against a
//! fixed set of π_ref samples: `score = (raw − offset) / scale`, so every RM reads 0 at
//! π_ref's mean and is in units of π_ref's spread.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::model::hf::TextReward;
use crate::model::transformer::{linear, Linear, TransformerConfig, Trunk};
use crate::world::{SeqSet, TextWorld};

#[derive(Debug, Clone)]
pub struct RewardModel {
    body: Body,
    device: Device,
    /// Standardization: mean raw score on the reference set.
    pub offset: f32,
    /// Standardization: population std of raw scores on the reference set.
    pub scale: f32,
}

impl RewardModel {
    pub fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_heads(cfg, 1, vb)
    }

    /// The trunk with `k` linear heads (one `score_head` of k outputs): a multi-head
    /// ensemble, scored by [`raw_heads`](Self::raw_heads).
    pub fn with_heads(cfg: &TransformerConfig, k: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            body: Body::World {
                trunk: Trunk::new(cfg, vb.pp("trunk"))?,
                head: linear(cfg.width, k, vb.pp("score_head"))?,
            },
            device: vb.device().clone(),
            offset: 0.0,
            scale: 1.0,
        })
    }

    /// A checkpoint's reward model (one head), on the device its weights are on.
    pub fn text(model: TextReward, device: &Device) -> Self {
        Self {
            body: Body::Text(model),
            device: device.clone(),
            offset: 0.0,
            scale: 1.0,
        }
    }

    /// A world of text's labeler as a reward model: a row's raw score is the labeler's
    /// utility of its response to its prompt (no weights, no gradient; a stand-in gold).
    pub fn labeler(world: std::sync::Arc<dyn TextWorld>, device: &Device) -> Self {
        Self {
            body: Body::Labeler(world),
            device: device.clone(),
            offset: 0.0,
            scale: 1.0,
        }
    }

    /// The world model's transformer shape (`None` for a checkpoint's).
    pub fn config(&self) -> Option<&TransformerConfig> {
        match &self.body {
            Body::World { trunk, .. } => Some(trunk.config()),
            Body::Text(_) | Body::Labeler(_) => None,
        }
    }

    /// tokens: (b, t) u32, ends: b read-out positions → raw scores (b,), differentiable.
    /// Positions after the last read-out position are not computed: attention is causal, so
    /// trailing padding cannot change any score.
    pub fn raw(&self, tokens: &Tensor, ends: &[u32]) -> Result<Tensor> {
        Ok(self.raw_heads(tokens, ends)?.squeeze(1)?)
    }

    /// Every head's raw score (b, k), differentiable (see [`raw`](Self::raw)).
    pub fn raw_heads(&self, tokens: &Tensor, ends: &[u32]) -> Result<Tensor> {
        let (trunk, head) = match &self.body {
            Body::World { trunk, head } => (trunk, head),
            Body::Text(t) => {
                let lengths: Vec<usize> = ends.iter().map(|&e| e as usize + 1).collect();
                return Ok(t.scorer().forward(tokens, &lengths)?.unsqueeze(1)?);
            }
            Body::Labeler(world) => {
                let (b, t) = tokens.dims2()?;
                let ids = tokens.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<u32>()?;
                let p = world.prefix_len();
                let scores: Vec<f32> = ids.chunks(t).map(|row| world.utility(&row[..p], &world.decode_response(row)) as f32).collect();
                return Ok(Tensor::from_vec(scores, (b, 1), &self.device)?);
            }
        };
        let (b, full) = tokens.dims2()?;
        let t = (ends.iter().copied().max().unwrap_or(0) as usize + 1).min(full);
        let tokens = if t < full { tokens.narrow(1, 0, t)? } else { tokens.clone() };
        let h = trunk.forward(&tokens, None)?;
        let d = h.dim(2)?;
        let idx: Vec<u32> = ends.iter().enumerate().map(|(i, &e)| (i * t) as u32 + e).collect();
        let idx = Tensor::from_vec(idx, b, &self.device)?;
        let picked = h.reshape((b * t, d))?.index_select(&idx, 0)?;
        head.forward(&picked)
    }

    /// Raw scores of the rows `idx` of `set`, differentiable.
    pub fn raw_rows(&self, set: &SeqSet, idx: &[usize]) -> Result<Tensor> {
        self.raw_batch(&set.select(idx))
    }

    /// Raw scores of every row of a (batch-sized) set, differentiable.
    pub fn raw_batch(&self, set: &SeqSet) -> Result<Tensor> {
        Ok(self.raw_batch_heads(set)?.squeeze(1)?)
    }

    /// Every head's raw scores (b, k) of every row of a (batch-sized) set, differentiable.
    pub fn raw_batch_heads(&self, set: &SeqSet) -> Result<Tensor> {
        let tokens = Tensor::from_slice(&set.tokens, (set.len(), set.seq_len), &self.device)?;
        self.raw_heads(&tokens, &set.ends)
    }

    /// Raw scores of a whole set, in batches of similar length (no gradient is kept). The
    /// batches run side by side on the work pool (nested inside whatever already runs
    /// there); each batch is the same rows whatever the thread count, so the scores are too.
    pub fn raw_set(&self, set: &SeqSet, batch: usize) -> Result<Vec<f32>> {
        let mut idx: Vec<usize> = (0..set.len()).collect();
        idx.sort_by_key(|&i| set.ends[i]);
        let chunks: Vec<&[usize]> = idx.chunks(batch.max(1)).collect();
        let scored = crate::parallel::map(&chunks, |chunk| -> Result<Vec<f32>> { Ok(self.raw_rows(set, chunk)?.detach().to_vec1::<f32>()?) });
        let mut out = vec![0f32; set.len()];
        for (chunk, scores) in chunks.iter().zip(scored) {
            for (&i, s) in chunk.iter().zip(scores?) {
                out[i] = s;
            }
        }
        Ok(out)
    }

    /// Standardized scores of a whole set.
    pub fn score_set(&self, set: &SeqSet, batch: usize) -> Result<Vec<f32>> {
        Ok(self
            .raw_set(set, batch)?
            .into_iter()
            .map(|r| (r - self.offset) / self.scale)
            .collect())
    }

    /// Sets offset and scale so that `raw_reference` (raw scores of π_ref samples) has
    /// mean 0 and population standard deviation 1.
    pub fn standardize(&mut self, raw_reference: &[f32]) {
        (self.offset, self.scale) = mean_std(raw_reference);
    }
}

#[derive(Debug, Clone)]
enum Body {
    World { trunk: Trunk, head: Linear },
    Text(TextReward),
    Labeler(std::sync::Arc<dyn TextWorld>),
}


/// Mean and population standard deviation (floored at 1e-12 so it can divide).
pub fn mean_std(x: &[f32]) -> (f32, f32) {
    use crate::stats::aggregate::{mean, population_variance};
    (mean(x) as f32, population_variance(x).sqrt().max(1e-12) as f32)
}
