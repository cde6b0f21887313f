//! A checkpoint as a policy over text: the causal LM plus a value head, on the world's
//! sequence layout so that the methods read it the way they read the world's policy.
//!
//! Layout of a row (length `prefix_len + max_response`): the prompt's tokens, left-padded
//! to `prefix_len` with the padding id (one past the vocabulary, so never a token the
//! model reads or writes), then the response's tokens, its stop token last when it stopped,
//! then padding. Rotary positions and attention start at each row's first real token, so
//! a left-padded row computes what it computes alone.
//!
//! A [`Response`] of this policy holds the stop token it ended with as its last token
//! (`finished`), since a checkpoint may have several; its `tokens` are at most
//! `max_response` long.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use rand::Rng;

use super::checkpoint::{trainable, Checkpoint, Part};
use super::config::CheckpointConfig;
use super::decoder::CausalLm;
use crate::error::{Error, Result};

fn msg(s: String) -> Error {
    candle_core::Error::Msg(s).into()
}
use crate::model::policy::{decode, Frame, ResponseView};
use crate::world::Response;

/// Where the prompt ends and how long a response may be.
#[derive(Debug, Clone, PartialEq)]
pub struct TextLayout {
    /// Prompt positions (left-padded).
    pub prefix_len: usize,
    /// Response positions, stop token included.
    pub max_response: usize,
    /// Tokens that end a response (the checkpoint's end-of-sequence ids and any the study
    /// adds).
    pub stop: Vec<u32>,
    /// The policy's temperature: its logits are the checkpoint's divided by it, so sampling,
    /// log-probabilities and KL all read the one tempered distribution (1: the checkpoint's).
    pub temperature: f64,
}

impl TextLayout {
    pub fn seq_len(&self) -> usize {
        self.prefix_len + self.max_response
    }

    /// A row: `prefix` (already `prefix_len` long), the response (its stop token last when
    /// it stopped), then `pad`.
    pub fn encode(&self, pad: u32, prefix: &[u32], response: &Response) -> Vec<u32> {
        debug_assert_eq!(prefix.len(), self.prefix_len);
        let mut row = Vec::with_capacity(self.seq_len());
        row.extend_from_slice(prefix);
        row.extend(response.tokens.iter().take(self.max_response));
        row.resize(self.seq_len(), pad);
        row
    }

    /// The response a row holds (its tokens after the prefix, up to the padding); finished
    /// when its last token is a stop token.
    pub fn decode_response(&self, pad: u32, row: &[u32]) -> Response {
        let tokens: Vec<u32> = row[self.prefix_len..].iter().copied().take_while(|&t| t != pad).collect();
        let finished = tokens.last().is_some_and(|t| self.stop.contains(t));
        Response { tokens, finished }
    }
}

/// The policy: causal LM, value head (`value_head.weight` (1, hidden), `value_head.bias`
/// (1,)) and layout.
#[derive(Debug, Clone)]
pub struct TextPolicy {
    lm: CausalLm,
    value_w: Tensor,
    value_b: Tensor,
    layout: TextLayout,
    pad: u32,
}

impl TextPolicy {
    /// From weights under a checkpoint's names plus the value head's.
    pub fn new(cfg: &CheckpointConfig, vb: &VarBuilder, layout: TextLayout) -> Result<Self> {
        let lm = CausalLm::new(cfg, vb)?;
        if layout.prefix_len == 0 || layout.max_response == 0 {
            return Err(msg("a text policy needs at least one prompt and one response position".into()));
        }
        if layout.seq_len() > cfg.max_positions {
            return Err(msg(format!(
                "prompts of {} tokens and responses of {} are longer than the checkpoint's max_position_embeddings {}",
                layout.prefix_len, layout.max_response, cfg.max_positions
            )));
        }
        if !(layout.temperature.is_finite() && layout.temperature > 0.0) {
            return Err(msg(format!("temperature {} must be a finite number above 0", layout.temperature)));
        }
        if let Some(&t) = layout.stop.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(msg(format!("stop token {t} is outside the vocabulary of {}", cfg.vocab)));
        }
        Ok(Self {
            value_w: vb.get((1, cfg.hidden), "value_head.weight")?,
            value_b: vb.get(1, "value_head.bias")?,
            pad: lm.decoder().pad_id(),
            lm,
            layout,
        })
    }

    /// The checkpoint as a policy with a zero value head: frozen (π_ref, a sampler) or, with
    /// `train`, every weight a variable of the returned map.
    pub fn load(ckpt: &Checkpoint, layout: TextLayout, device: &Device, train: bool) -> Result<(Self, Option<candle_nn::VarMap>)> {
        let cfg = ckpt.config();
        let mut tensors: HashMap<String, Tensor> = ckpt.tensors(Part::CausalLm, device)?;
        tensors.insert("value_head.weight".into(), Tensor::zeros((1, cfg.hidden), DType::F32, device)?);
        tensors.insert("value_head.bias".into(), Tensor::zeros(1, DType::F32, device)?);
        if train {
            let map = trainable(tensors)?;
            let vb = VarBuilder::from_varmap(&map, DType::F32, device);
            Ok((Self::new(cfg, &vb, layout)?, Some(map)))
        } else {
            let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
            Ok((Self::new(cfg, &vb, layout)?, None))
        }
    }

    pub fn layout(&self) -> &TextLayout {
        &self.layout
    }

    pub fn lm(&self) -> &CausalLm {
        &self.lm
    }

    /// The padding id of rows.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    pub fn device(&self) -> &Device {
        self.value_w.device()
    }

    /// A prompt's tokens as the prefix of a row: left-padded to `prefix_len`; a longer
    /// prompt is refused (the study drops such prompts when it reads them, saying how many).
    pub fn prefix(&self, prompt: &[u32]) -> Result<Vec<u32>> {
        let p = self.layout.prefix_len;
        if prompt.is_empty() || prompt.len() > p {
            return Err(msg(format!("a prompt of {} tokens does not fit {p} prompt positions", prompt.len())));
        }
        let mut row = vec![self.pad; p - prompt.len()];
        row.extend_from_slice(prompt);
        Ok(row)
    }

    /// A full row: `prefix` (already `prefix_len` long) then the response, padded.
    pub fn encode(&self, prefix: &[u32], response: &Response) -> Vec<u32> {
        self.layout.encode(self.pad, prefix, response)
    }

    /// The response a row holds (its tokens after the prefix, up to the padding).
    pub fn decode_response(&self, row: &[u32]) -> Response {
        self.layout.decode_response(self.pad, row)
    }

    /// tokens: (b, t) rows → (logits (b, t, vocab), values (b, t)).
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut crate::model::KvCache>) -> Result<(Tensor, Tensor)> {
        let h = self.lm.decoder().forward(tokens, cache)?;
        let logits = self.temper(h.broadcast_matmul(&self.lm.lm_head().t()?)?)?;
        let values = h.broadcast_matmul(&self.value_w.t()?)?.broadcast_add(&self.value_b)?.squeeze(D::Minus1)?;
        Ok((logits, values))
    }

    /// Rows (b, seq_len) → (log-probs, mask), both (b, max_response): each response token's
    /// log-probability (stop token included), and 1 on response tokens, 0 on padding.
    pub fn response_logprobs(&self, tokens: &Tensor) -> Result<(Tensor, Tensor)> {
        let v = self.response_view(tokens)?;
        Ok((v.logp, v.mask))
    }

    /// Everything PPO reads at each response position, in one forward pass; every field is
    /// `(b, max_response)`.
    pub fn response_view(&self, tokens: &Tensor) -> Result<ResponseView> {
        let (p, r) = (self.layout.prefix_len, self.layout.max_response);
        let (logits, values) = self.forward(tokens, None)?;
        let logp_all = candle_nn::ops::log_softmax(&logits.narrow(1, p - 1, r)?, D::Minus1)?;
        let targets = tokens.narrow(1, p, r)?.contiguous()?;
        let mask = targets.ne(self.pad)?;
        // Padding targets are outside the vocabulary: gather token 0 there and mask it out.
        let safe = mask.where_cond(&targets, &targets.zeros_like()?)?;
        let mask = mask.to_dtype(DType::F32)?;
        let logp = (logp_all.gather(&safe.unsqueeze(2)?, 2)?.squeeze(2)? * &mask)?;
        let entropy = (logp_all.exp()? * &logp_all)?.sum(D::Minus1)?.neg()?;
        Ok(ResponseView {
            logp,
            entropy,
            values: values.narrow(1, p - 1, r)?,
            mask,
        })
    }

    /// Samples one response per prefix (each `prefix_len` long, from [`prefix`](Self::prefix))
    /// at `temperature` (> 0, on top of the policy's own) with a key/value cache. As the world's policy does: rows that
    /// share a prefix run it once, a row leaves the batch when it stops, and draws come
    /// row by row from `rng` over probabilities on the host, so sampling is reproducible.
    pub fn sample(&self, prefixes: &[Vec<u32>], temperature: f64, rng: &mut impl Rng) -> Result<Vec<Response>> {
        let p = self.layout.prefix_len;
        if let Some(bad) = prefixes.iter().find(|x| x.len() != p) {
            return Err(msg(format!("a prefix of {} positions given to a policy of {p}", bad.len())));
        }
        let frame = Frame {
            prefix_len: p,
            max_response: self.layout.max_response,
            vocab: self.lm.decoder().config().vocab,
        };
        decode(
            prefixes,
            |x| x.to_vec(),
            &frame,
            self.lm.decoder().cache(),
            self.device(),
            |input, cache| self.last_logits(input, cache),
            |t| self.layout.stop.contains(&t),
            true,
            temperature,
            rng,
        )
    }

    fn last_logits(&self, input: &Tensor, cache: &mut crate::model::KvCache) -> Result<Vec<f32>> {
        let h = self.lm.decoder().forward(input, Some(cache))?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(self.temper(last.matmul(&self.lm.lm_head().t()?)?)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Logits at the policy's temperature.
    fn temper(&self, logits: Tensor) -> Result<Tensor> {
        if self.layout.temperature == 1.0 {
            return Ok(logits);
        }
        Ok((logits / self.layout.temperature)?)
    }
}
