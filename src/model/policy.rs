//! The causal LM policy: trunk + LM head + value head.
//!
//! Shapes: `forward(tokens: (b, t)) -> (logits: (b, t, vocab), values: (b, t))`.
//! Special tokens other than the end token (PAD, BOS, SEP) are masked out of the logits,
//! so sampling, SFT and every log-prob agree on one distribution over response tokens.

use candle_core::{Device, Tensor, D};
use candle_nn::VarBuilder;
use rand::Rng;

use crate::error::Result;
use crate::model::transformer::{linear, Linear, KvCache, TransformerConfig, Trunk};
use crate::world::{Response, SeqSet, WorldConfig, BOS, EOS, PAD, SEP};

/// Logit added to tokens a response may never contain.
const MASKED: f32 = -1e9;

#[derive(Debug, Clone)]
pub struct Policy {
    trunk: Trunk,
    lm_head: Linear,
    value_head: Linear,
    /// (vocab,): 0 for allowed response tokens, `MASKED` for PAD/BOS/SEP.
    token_mask: Tensor,
    prefix_len: usize,
    max_response: usize,
}

impl Policy {
    pub fn new(cfg: &TransformerConfig, world: &WorldConfig, vb: VarBuilder) -> Result<Self> {
        let mut mask = vec![0f32; cfg.vocab];
        for t in [PAD, BOS, SEP] {
            mask[t as usize] = MASKED;
        }
        Ok(Self {
            trunk: Trunk::new(cfg, vb.pp("trunk"))?,
            lm_head: linear(cfg.width, cfg.vocab, vb.pp("lm_head"))?,
            value_head: linear(cfg.width, 1, vb.pp("value_head"))?,
            token_mask: Tensor::from_vec(mask, cfg.vocab, vb.device())?,
            prefix_len: world.prefix_len(),
            max_response: world.max_response,
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        self.trunk.config()
    }

    /// The same policy over other weights of the same shapes (e.g. a graph-free view of its
    /// variables, [`crate::model::frozen`]).
    pub fn with_weights(&self, vb: VarBuilder) -> Result<Self> {
        let cfg = self.config();
        Ok(Self {
            trunk: Trunk::new(cfg, vb.pp("trunk"))?,
            lm_head: linear(cfg.width, cfg.vocab, vb.pp("lm_head"))?,
            value_head: linear(cfg.width, 1, vb.pp("value_head"))?,
            token_mask: self.token_mask.clone(),
            prefix_len: self.prefix_len,
            max_response: self.max_response,
        })
    }

    /// tokens: (b, t) → (masked logits (b, t, vocab), values (b, t)).
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut KvCache>) -> Result<(Tensor, Tensor)> {
        let h = self.trunk.forward(tokens, cache)?;
        let logits = self.lm_head.forward(&h)?.broadcast_add(&self.token_mask)?;
        let values = self.value_head.forward(&h)?.squeeze(D::Minus1)?;
        Ok((logits, values))
    }

    /// tokens: (b, seq_len) full sequences → (log-probs, mask), both (b, max_response):
    /// the log-probability of each response token (end token included) under the policy,
    /// and 1 where that position belongs to the response, 0 on padding.
    pub fn response_logprobs(&self, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let (logits, _) = self.forward(tokens, None)?;
        self.logprobs_from_logits(&logits, tokens)
    }

    /// As [`response_logprobs`](Self::response_logprobs), from logits already computed.
    pub fn logprobs_from_logits(&self, logits: &Tensor, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let (p, r) = (self.prefix_len, self.max_response);
        let logp = candle_nn::ops::log_softmax(&logits.narrow(1, p - 1, r)?, D::Minus1)?;
        let targets = tokens.narrow(1, p, r)?.contiguous()?;
        let picked = logp.gather(&targets.unsqueeze(2)?, 2)?.squeeze(2)?;
        let mask = targets.ne(PAD)?.to_dtype(candle_core::DType::F32)?;
        Ok((picked, mask))
    }

    /// Everything PPO reads at each response position of `tokens: (b, seq_len)` in one
    /// forward pass; every field is `(b, max_response)`.
    pub fn response_view(&self, tokens: &Tensor) -> Result<ResponseView> {
        let (logits, values) = self.forward(tokens, None)?;
        let (p, r) = (self.prefix_len, self.max_response);
        let logp_all = candle_nn::ops::log_softmax(&logits.narrow(1, p - 1, r)?, D::Minus1)?;
        let targets = tokens.narrow(1, p, r)?.contiguous()?;
        let logp = logp_all.gather(&targets.unsqueeze(2)?, 2)?.squeeze(2)?;
        // Masked tokens have probability exactly 0, so they add 0·(−1e9) = 0 here.
        let entropy = (logp_all.exp()? * &logp_all)?.sum(D::Minus1)?.neg()?;
        let mask = targets.ne(PAD)?.to_dtype(candle_core::DType::F32)?;
        Ok(ResponseView {
            logp,
            entropy,
            values: values.narrow(1, p - 1, r)?,
            mask,
        })
    }

    /// Samples one response per prompt at `temperature` (> 0), with a KV cache. Sampling
    /// draws from `rng` over the probabilities on the host, so it is reproducible.
    ///
    /// Work goes only where it is needed: rows that share a prompt (a best-of-n pool) run
    /// the prompt through the model once, and a row leaves the batch (and the cache) as
    /// soon as it ends, so the batch shrinks with the responses still being written.
    /// Draws come in the same order either way: row by row, unfinished rows only.
    pub fn sample(
        &self,
        prompts: &[Vec<u32>],
        temperature: f64,
        rng: &mut impl Rng,
    ) -> Result<Vec<Response>> {
        let device = self.token_mask.device().clone();
        let b = prompts.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        // Distinct prompts, in order of first appearance, and each row's one among them.
        let mut distinct: Vec<&[u32]> = Vec::new();
        let mut first: std::collections::HashMap<&[u32], u32> = std::collections::HashMap::new();
        let row_prompt: Vec<u32> = prompts
            .iter()
            .map(|p| {
                *first.entry(p.as_slice()).or_insert_with(|| {
                    distinct.push(p);
                    (distinct.len() - 1) as u32
                })
            })
            .collect();
        let mut prefix = Vec::with_capacity(distinct.len() * self.prefix_len);
        for p in &distinct {
            prefix.push(BOS);
            prefix.extend_from_slice(p);
            prefix.push(SEP);
        }
        let vocab = self.config().vocab;
        let mut cache = KvCache::new(self.config().layers);
        let input = Tensor::from_vec(prefix, (distinct.len(), self.prefix_len), &device)?;
        let prefix_logits = self.last_logits(&input, &mut cache)?;
        let mut logits = if distinct.len() == b {
            prefix_logits
        } else {
            cache.select_rows(&row_prompt)?;
            let mut l = Vec::with_capacity(b * vocab);
            for &d in &row_prompt {
                l.extend_from_slice(&prefix_logits[d as usize * vocab..(d as usize + 1) * vocab]);
            }
            l
        };
        let mut out: Vec<Response> = vec![
            Response {
                tokens: Vec::new(),
                finished: false
            };
            b
        ];
        // live[j]: the row (index into `prompts`) at batch position j.
        let mut live: Vec<usize> = (0..b).collect();
        let mut probs = vec![0f64; vocab];
        for step in 0..self.max_response {
            let mut next = Vec::with_capacity(live.len());
            let mut keep: Vec<u32> = Vec::with_capacity(live.len());
            for (j, &i) in live.iter().enumerate() {
                let t = sample_token(&logits[j * vocab..(j + 1) * vocab], temperature, &mut probs, rng);
                if t == EOS {
                    out[i].finished = true;
                } else {
                    out[i].tokens.push(t);
                    keep.push(j as u32);
                    next.push(t);
                }
            }
            if keep.is_empty() || step + 1 == self.max_response {
                break;
            }
            if keep.len() < live.len() {
                cache.select_rows(&keep)?;
                live = keep.iter().map(|&j| live[j as usize]).collect();
            }
            let input = Tensor::from_vec(next, (live.len(), 1), &device)?;
            logits = self.last_logits(&input, &mut cache)?;
        }
        Ok(out)
    }

    /// Runs `input` through the cache and returns the last position's logits, flattened (b·vocab).
    fn last_logits(&self, input: &Tensor, cache: &mut KvCache) -> Result<Vec<f32>> {
        let h = self.trunk.forward(input, Some(cache))?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        let logits = self.lm_head.forward(&last)?.broadcast_add(&self.token_mask)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Device the policy lives on.
    pub fn device(&self) -> &Device {
        self.token_mask.device()
    }
}

/// Per response position of a batch (all `(b, max_response)`, f32): see
/// [`Policy::response_view`].
#[derive(Debug, Clone)]
pub struct ResponseView {
    /// log π(y_t | prefix) of the token taken (end token included).
    pub logp: Tensor,
    /// Entropy (nats) of π(· | prefix).
    pub entropy: Tensor,
    /// Value head's estimate of the state before token t.
    pub values: Tensor,
    /// 1 on response tokens (end token included), 0 on padding.
    pub mask: Tensor,
}

/// Draws a token from softmax(logits / temperature); `probs` is scratch space.
pub(crate) fn sample_token(logits: &[f32], temperature: f64, probs: &mut [f64], rng: &mut impl Rng) -> u32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut total = 0.0;
    for (p, &l) in probs.iter_mut().zip(logits) {
        *p = ((l as f64 - max) / temperature).exp();
        total += *p;
    }
    let mut u = rng.random::<f64>() * total;
    for (i, p) in probs.iter().enumerate() {
        if u < *p {
            return i as u32;
        }
        u -= p;
    }
    // Rounding left u at the top: take the most likely token.
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .expect("non-empty vocab")
}

/// Encodes prompt/response pairs into a [`SeqSet`].
pub fn encode_all(world: &WorldConfig, prompts: &[Vec<u32>], responses: &[Response]) -> SeqSet {
    let mut set = SeqSet::new(world.seq_len());
    for (p, r) in prompts.iter().zip(responses) {
        set.push(world, p, r);
    }
    set
}
