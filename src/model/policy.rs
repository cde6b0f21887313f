//! The causal LM policy: trunk + LM head + value head, or a checkpoint's (the seam: the
//! methods see one [`Policy`], whichever model is behind it).
//!
//! Shapes: `forward(tokens: (b, t)) -> (logits: (b, t, vocab), values: (b, t))`.
//! The world's policy masks special tokens other than the end token (PAD, BOS, SEP) out of
//! the logits, so sampling, SFT and every log-prob agree on one distribution over response
//! tokens. A checkpoint's policy ([`crate::model::hf::TextPolicy`]) lays out its rows the
//! same way: a prefix of `prefix_len` positions, then `max_response` response positions.

use candle_core::{Device, Tensor, D};
use candle_nn::VarBuilder;
use rand::Rng;

use crate::error::Result;
use crate::model::hf::TextPolicy;
use crate::model::transformer::{linear, Linear, KvCache, TransformerConfig, Trunk};
use crate::world::{Response, SeqSet, WorldConfig, BOS, EOS, PAD, SEP};

/// Logit added to tokens a response may never contain.
const MASKED: f32 = -1e9;

/// A policy: the world's small transformer, or a checkpoint's causal LM over text.
#[derive(Debug, Clone)]
pub struct Policy {
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    World(WorldLm),
    Text(TextPolicy),
}

#[derive(Debug, Clone)]
struct WorldLm {
    trunk: Trunk,
    lm_head: Linear,
    value_head: Linear,
    /// (vocab,): 0 for allowed response tokens, `MASKED` for PAD/BOS/SEP.
    token_mask: Tensor,
    prefix_len: usize,
    max_response: usize,
}

impl Policy {
    /// The world's policy of shape `cfg`.
    pub fn new(cfg: &TransformerConfig, world: &WorldConfig, vb: VarBuilder) -> Result<Self> {
        let mut mask = vec![0f32; cfg.vocab];
        for t in [PAD, BOS, SEP] {
            mask[t as usize] = MASKED;
        }
        Ok(Self {
            body: Body::World(WorldLm {
                trunk: Trunk::new(cfg, vb.pp("trunk"))?,
                lm_head: linear(cfg.width, cfg.vocab, vb.pp("lm_head"))?,
                value_head: linear(cfg.width, 1, vb.pp("value_head"))?,
                token_mask: Tensor::from_vec(mask, cfg.vocab, vb.device())?,
                prefix_len: world.prefix_len(),
                max_response: world.max_response,
            }),
        })
    }

    /// A checkpoint's policy.
    pub fn text(policy: TextPolicy) -> Self {
        Self { body: Body::Text(policy) }
    }

    /// The world policy's transformer shape (`None` for a checkpoint's).
    pub fn config(&self) -> Option<&TransformerConfig> {
        match &self.body {
            Body::World(w) => Some(w.trunk.config()),
            Body::Text(_) => None,
        }
    }

    /// The checkpoint's policy behind it, if it is one.
    pub fn as_text(&self) -> Option<&TextPolicy> {
        match &self.body {
            Body::World(_) => None,
            Body::Text(t) => Some(t),
        }
    }

    /// Prompt positions and response positions of its rows.
    pub fn layout(&self) -> (usize, usize) {
        match &self.body {
            Body::World(w) => (w.prefix_len, w.max_response),
            Body::Text(t) => (t.layout().prefix_len, t.layout().max_response),
        }
    }

    /// The same policy over other weights of the same shapes and names (e.g. a graph-free
    /// view of its variables, [`crate::model::frozen`]).
    pub fn with_weights(&self, vb: VarBuilder) -> Result<Self> {
        let body = match &self.body {
            Body::World(w) => {
                let cfg = w.trunk.config();
                Body::World(WorldLm {
                    trunk: Trunk::new(cfg, vb.pp("trunk"))?,
                    lm_head: linear(cfg.width, cfg.vocab, vb.pp("lm_head"))?,
                    value_head: linear(cfg.width, 1, vb.pp("value_head"))?,
                    token_mask: w.token_mask.clone(),
                    prefix_len: w.prefix_len,
                    max_response: w.max_response,
                })
            }
            Body::Text(t) => Body::Text(TextPolicy::new(t.lm().decoder().config(), &vb, t.layout().clone())?),
        };
        Ok(Self { body })
    }

    /// tokens: (b, t) → (masked logits (b, t, vocab), values (b, t)).
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut KvCache>) -> Result<(Tensor, Tensor)> {
        match &self.body {
            Body::World(w) => {
                let h = w.trunk.forward(tokens, cache)?;
                let logits = w.lm_head.forward(&h)?.broadcast_add(&w.token_mask)?;
                let values = w.value_head.forward(&h)?.squeeze(D::Minus1)?;
                Ok((logits, values))
            }
            Body::Text(t) => t.forward(tokens, cache),
        }
    }

    /// tokens: (b, seq_len) full sequences → (log-probs, mask), both (b, max_response):
    /// the log-probability of each response token (end token included) under the policy,
    /// and 1 where that position belongs to the response, 0 on padding.
    pub fn response_logprobs(&self, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        if let Body::Text(t) = &self.body {
            return t.response_logprobs(tokens);
        }
        let (logits, _) = self.forward(tokens, None)?;
        self.logprobs_from_logits(&logits, tokens)
    }

    /// As [`response_logprobs`](Self::response_logprobs), from the world policy's logits
    /// already computed.
    fn logprobs_from_logits(&self, logits: &Tensor, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let (p, r) = self.layout();
        let logp = candle_nn::ops::log_softmax(&logits.narrow(1, p - 1, r)?, D::Minus1)?;
        let targets = tokens.narrow(1, p, r)?.contiguous()?;
        let picked = logp.gather(&targets.unsqueeze(2)?, 2)?.squeeze(2)?;
        let mask = targets.ne(PAD)?.to_dtype(candle_core::DType::F32)?;
        Ok((picked, mask))
    }

    /// Everything PPO reads at each response position of `tokens: (b, seq_len)` in one
    /// forward pass; every field is `(b, max_response)`.
    pub fn response_view(&self, tokens: &Tensor) -> Result<ResponseView> {
        if let Body::Text(t) = &self.body {
            return t.response_view(tokens);
        }
        let (logits, values) = self.forward(tokens, None)?;
        let (p, r) = self.layout();
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
    ///
    /// A world policy's prompts are content tokens (it adds BOS and SEP); a checkpoint's
    /// are row prefixes ([`TextPolicy::prefix`]).
    pub fn sample(
        &self,
        prompts: &[Vec<u32>],
        temperature: f64,
        rng: &mut impl Rng,
    ) -> Result<Vec<Response>> {
        let w = match &self.body {
            Body::World(w) => w,
            Body::Text(t) => return t.sample(prompts, temperature, rng),
        };
        let cfg = w.trunk.config();
        let frame = Frame {
            prefix_len: w.prefix_len,
            max_response: w.max_response,
            vocab: cfg.vocab,
        };
        let prefix = |p: &[u32]| {
            let mut row = Vec::with_capacity(w.prefix_len);
            row.push(BOS);
            row.extend_from_slice(p);
            row.push(SEP);
            row
        };
        decode(
            prompts,
            prefix,
            &frame,
            KvCache::new(cfg.layers),
            w.token_mask.device(),
            |input, cache| w.last_logits(input, cache),
            |t| t == EOS,
            false,
            temperature,
            rng,
        )
    }

    /// Device the policy lives on.
    pub fn device(&self) -> &Device {
        match &self.body {
            Body::World(w) => w.token_mask.device(),
            Body::Text(t) => t.device(),
        }
    }
}

impl WorldLm {
    /// Runs `input` through the cache and returns the last position's logits, flattened (b·vocab).
    fn last_logits(&self, input: &Tensor, cache: &mut KvCache) -> Result<Vec<f32>> {
        let h = self.trunk.forward(input, Some(cache))?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        let logits = self.lm_head.forward(&last)?.broadcast_add(&self.token_mask)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
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
fn sample_token(logits: &[f32], temperature: f64, probs: &mut [f64], rng: &mut impl Rng) -> u32 {
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

/// What the decoding loop needs to know of a policy's rows.
pub(crate) struct Frame {
    pub prefix_len: usize,
    pub max_response: usize,
    pub vocab: usize,
}

/// The decoding loop every policy shares ([`Policy::sample`]): each distinct prompt's prefix
/// (`prefix(prompt)`, `prefix_len` long) runs through the model once and its cache is fanned
/// out to the rows that share it; then one token per live row per step, drawn row by row from
/// `rng` at `temperature`; a row whose token `is_stop` ends (the stop token kept in its
/// response when `keep_stop`) and leaves the batch and the cache. `last_logits` runs an
/// input through the cache and returns the last position's logits, flattened (b·vocab).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode(
    prompts: &[Vec<u32>],
    prefix: impl Fn(&[u32]) -> Vec<u32>,
    frame: &Frame,
    mut cache: KvCache,
    device: &Device,
    mut last_logits: impl FnMut(&Tensor, &mut KvCache) -> Result<Vec<f32>>,
    is_stop: impl Fn(u32) -> bool,
    keep_stop: bool,
    temperature: f64,
    rng: &mut impl Rng,
) -> Result<Vec<Response>> {
    let b = prompts.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    let vocab = frame.vocab;
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
    let rows: Vec<u32> = distinct.iter().flat_map(|p| prefix(p)).collect();
    let input = Tensor::from_vec(rows, (distinct.len(), frame.prefix_len), device)?;
    let prefix_logits = last_logits(&input, &mut cache)?;
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
    let mut out = vec![
        Response {
            tokens: Vec::new(),
            finished: false
        };
        b
    ];
    // live[j]: the row (index into `prompts`) at batch position j.
    let mut live: Vec<usize> = (0..b).collect();
    let mut probs = vec![0f64; vocab];
    for step in 0..frame.max_response {
        let mut next = Vec::with_capacity(live.len());
        let mut keep: Vec<u32> = Vec::with_capacity(live.len());
        for (j, &i) in live.iter().enumerate() {
            let t = sample_token(&logits[j * vocab..(j + 1) * vocab], temperature, &mut probs, rng);
            if is_stop(t) {
                out[i].finished = true;
                if keep_stop {
                    out[i].tokens.push(t);
                }
            } else {
                out[i].tokens.push(t);
                keep.push(j as u32);
                next.push(t);
            }
        }
        if keep.is_empty() || step + 1 == frame.max_response {
            break;
        }
        if keep.len() < live.len() {
            cache.select_rows(&keep)?;
            live = keep.iter().map(|&j| live[j as usize]).collect();
        }
        let input = Tensor::from_vec(next, (live.len(), 1), device)?;
        logits = last_logits(&input, &mut cache)?;
    }
    Ok(out)
}

/// Encodes prompt/response pairs into a [`SeqSet`].
pub fn encode_all(world: &WorldConfig, prompts: &[Vec<u32>], responses: &[Response]) -> SeqSet {
    let mut set = SeqSet::new(world.seq_len());
    for (p, r) in prompts.iter().zip(responses) {
        set.push(world, p, r);
    }
    set
}
