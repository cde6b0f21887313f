//! The Llama/Qwen2 decoder, its language-model head and its scalar score head.
//!
//! Every op here has a backward pass: the RMS norm, the rotary embedding and the softmax are
//! composed from candle's differentiable primitives ([`rms_norm`], [`Rope::apply`],
//! [`candle_nn::ops::softmax`]), because candle-nn's fused `rms_norm`, `rope` and
//! `softmax_last_dim` have none — a model built on them trains only its output head, and
//! silently. Weights are read by their Hugging Face names, so a trained model saves back
//! into the same layout.
//!
//! Shapes: `forward(tokens: (b, t) u32, cache) -> hidden: (b, t, hidden)` after the final
//! norm. Attention is causal. Rows may be padded on both sides with [`Decoder::pad_id`], the
//! id one past the vocabulary (never a real token): a row's leading padding is masked out of
//! every attention and its positions start after it, so a left-padded prompt computes what
//! it computes alone; trailing padding needs nothing, as no real position attends to it.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use super::config::{CheckpointConfig, Head};
use crate::error::Result;
use crate::model::ops;
use crate::model::KvCache;

/// x / sqrt(mean(x²) + eps) · weight over the last dimension, composed (differentiable).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(weight)?)
}

/// The rotary embedding's tables (Hugging Face's rotate-half form).
#[derive(Debug, Clone)]
pub struct Rope {
    /// (positions, head_dim) each.
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for positions `0..max_positions`, computed in f32 in the order transformers
    /// computes them (inverse frequencies `1 / θ^(2j/d)`, angles `position · frequency`).
    pub fn new(theta: f64, head_dim: usize, max_positions: usize, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|j| 1.0 / (theta as f32).powf((2 * j) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(max_positions * head_dim);
        let mut sin = Vec::with_capacity(max_positions * head_dim);
        for p in 0..max_positions {
            // The angles twice over: cos and sin of (freqs, freqs), as rotate-half pairs them.
            for _ in 0..2 {
                for &f in &inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_positions, head_dim), device)?,
            sin: Tensor::from_vec(sin, (max_positions, head_dim), device)?,
        })
    }

    /// Per-row tables (b, 1, t, head_dim) for rows whose first `starts[r]` positions are
    /// padding: row r's position `offset + i` is its token `offset + i − starts[r]`.
    pub fn rows(&self, starts: &[usize], t: usize, offset: usize) -> Result<(Tensor, Tensor)> {
        let pos: Vec<u32> = starts.iter().flat_map(|&s| (0..t).map(move |i| (offset + i).saturating_sub(s) as u32)).collect();
        let idx = Tensor::from_vec(pos, starts.len() * t, self.cos.device())?;
        let d = self.cos.dim(1)?;
        let shape = (starts.len(), 1, t, d);
        Ok((self.cos.index_select(&idx, 0)?.reshape(shape)?, self.sin.index_select(&idx, 0)?.reshape(shape)?))
    }

    /// x: (b, heads, t, head_dim) rotated by per-row tables from [`rows`](Self::rows).
    pub fn apply_rows(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let d = x.dim(3)?;
        let half = d / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
    }

    /// x: (b, heads, t, head_dim) at positions `offset..offset + t` → rotated, composed
    /// (differentiable): `x·cos + rotate_half(x)·sin`.
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, _, t, d) = x.dims4()?;
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        let half = d / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }
}

/// x · Wᵀ (+ b), W: (out, in) as Hugging Face stores it.
#[derive(Debug, Clone)]
struct Proj {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Proj {
    fn new(vb: &VarBuilder, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), &format!("{name}.weight"))?;
        let bias = if bias { Some(vb.get(out_dim, &format!("{name}.bias"))?) } else { None };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    post_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
}

/// The decoder: token embedding, layers, final norm.
#[derive(Debug, Clone)]
pub struct Decoder {
    cfg: CheckpointConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    rope: Rope,
}

impl Decoder {
    /// Reads the decoder's weights (`model.*`) from `vb`, rooted at the checkpoint's top.
    pub fn new(cfg: &CheckpointConfig, vb: &VarBuilder) -> Result<Self> {
        let (d, hd) = (cfg.hidden, cfg.head_dim);
        let m = vb.pp("model");
        let layers = (0..cfg.layers)
            .map(|i| -> Result<Layer> {
                let l = m.pp(format!("layers.{i}"));
                let a = l.pp("self_attn");
                let f = l.pp("mlp");
                Ok(Layer {
                    input_norm: l.get(d, "input_layernorm.weight")?,
                    q: Proj::new(&a, "q_proj", cfg.heads * hd, d, cfg.qkv_bias)?,
                    k: Proj::new(&a, "k_proj", cfg.kv_heads * hd, d, cfg.qkv_bias)?,
                    v: Proj::new(&a, "v_proj", cfg.kv_heads * hd, d, cfg.qkv_bias)?,
                    o: Proj::new(&a, "o_proj", d, cfg.heads * hd, cfg.o_bias)?,
                    post_norm: l.get(d, "post_attention_layernorm.weight")?,
                    gate: Proj::new(&f, "gate_proj", cfg.intermediate, d, false)?,
                    up: Proj::new(&f, "up_proj", cfg.intermediate, d, false)?,
                    down: Proj::new(&f, "down_proj", d, cfg.intermediate, false)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            embed: m.get((cfg.vocab, d), "embed_tokens.weight")?,
            layers,
            norm: m.get(d, "norm.weight")?,
            rope: Rope::new(cfg.rope_theta, hd, cfg.max_positions, vb.device())?,
        })
    }

    pub fn config(&self) -> &CheckpointConfig {
        &self.cfg
    }

    /// The token embedding (vocab, hidden): the output head of a tied model.
    pub fn embedding(&self) -> &Tensor {
        &self.embed
    }

    /// A cache for this decoder's layers.
    pub fn cache(&self) -> KvCache {
        KvCache::new(self.cfg.layers)
    }

    /// tokens: (b, t) → hidden (b, t, hidden) after the final norm; continues `cache` when
    /// given (positions start at its length).
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let device = tokens.device();
        let offset = cache.as_ref().map_or(0, |c| c.len());
        if offset + t > self.cfg.max_positions {
            return Err(candle_core::Error::Msg(format!(
                "a sequence of {} positions is longer than the checkpoint's max_position_embeddings {}",
                offset + t,
                self.cfg.max_positions
            ))
            .into());
        }
        let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
        let pad = self.pad_id();
        // Each row's leading padding: counted on the first call, kept by the cache after.
        let starts: Vec<usize> = match cache.as_ref().and_then(|c| c.starts()) {
            Some(s) if offset > 0 => s.to_vec(),
            _ => ids.chunks(t).map(|row| row.iter().take_while(|&&id| id == pad).count()).collect(),
        };
        if let Some(&id) = ids.iter().find(|&&id| id > pad) {
            return Err(candle_core::Error::Msg(format!("token id {id} is outside the checkpoint's vocabulary of {}", self.cfg.vocab)).into());
        }
        let padded = starts.iter().any(|&s| s > 0);
        // Padding is embedded as token 0; nothing real reads it.
        let real: Vec<u32> = ids.iter().map(|&id| if id == pad { 0 } else { id }).collect();
        let mut x = self.embed.index_select(&Tensor::from_vec(real, b * t, device)?, 0)?.reshape((b, t, self.cfg.hidden))?;
        let (mask, rope) = if padded {
            (Some(padded_mask(&starts, t, offset, device)?), Some(self.rope.rows(&starts, t, offset)?))
        } else {
            (if t > 1 { Some(ops::causal_mask(t, offset, device)?) } else { None }, None)
        };
        let at = Position { offset, rows: rope.as_ref() };
        match cache {
            Some(c) => {
                if offset == 0 {
                    c.set_starts(starts);
                }
                for (i, layer) in self.layers.iter().enumerate() {
                    x = self.layer(layer, &x, &at, mask.as_ref(), Some(c.slot(i)))?;
                }
                c.advance(t);
            }
            None => {
                for layer in &self.layers {
                    x = self.layer(layer, &x, &at, mask.as_ref(), None)?;
                }
            }
        }
        rms_norm(&x, &self.norm, self.cfg.rms_eps)
    }

    /// The padding id: one past the vocabulary, so never a token the model reads or writes.
    pub fn pad_id(&self) -> u32 {
        self.cfg.vocab as u32
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        at: &Position,
        mask: Option<&Tensor>,
        slot: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let hd = cfg.head_dim;
        let h = rms_norm(x, &l.input_norm, cfg.rms_eps)?;
        let heads = |p: &Proj, n: usize| -> Result<Tensor> { Ok(p.forward(&h)?.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?) };
        let rotate = |x: Tensor| -> Result<Tensor> {
            match at.rows {
                Some((cos, sin)) => Rope::apply_rows(&x, cos, sin),
                None => self.rope.apply(&x, at.offset),
            }
        };
        let q = rotate(heads(&l.q, cfg.heads)?)?;
        let mut k = rotate(heads(&l.k, cfg.kv_heads)?)?;
        let mut v = heads(&l.v, cfg.kv_heads)?;
        if let Some(slot) = slot {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let rep = cfg.heads / cfg.kv_heads;
        let (k, v) = if rep > 1 { (repeat_kv(&k, rep)?, repeat_kv(&v, rep)?) } else { (k, v) };
        let scale = 1.0 / (hd as f64).sqrt();
        let mut att = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        if let Some(m) = mask {
            att = att.broadcast_add(m)?;
        }
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, cfg.heads * hd))?;
        let x = (x + l.o.forward(&y)?)?;
        let h = rms_norm(&x, &l.post_norm, cfg.rms_eps)?;
        let f = (l.gate.forward(&h)?.silu()? * l.up.forward(&h)?)?;
        Ok((&x + l.down.forward(&f)?)?)
    }
}

/// Where a call's positions are: the first position, and per-row rotary tables when rows
/// are left-padded.
struct Position<'a> {
    offset: usize,
    rows: Option<&'a (Tensor, Tensor)>,
}

/// The additive mask (b, 1, t, offset + t) of rows whose first `starts[r]` positions are
/// padding: causal, and no position reads a padding key (a padding query reads itself, so
/// that its softmax is defined; nothing reads its output).
fn padded_mask(starts: &[usize], t: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let total = offset + t;
    let mut m = Vec::with_capacity(starts.len() * t * total);
    for &s in starts {
        for i in 0..t {
            let q = offset + i;
            for j in 0..total {
                let ok = j <= q && (j >= s || j == q);
                m.push(if ok { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Ok(Tensor::from_vec(m, (starts.len(), 1, t, total), device)?)
}

/// (b, kv, t, d) → (b, kv·rep, t, d), each key/value head repeated for the `rep` query
/// heads that share it (head h reads kv head h / rep).
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    let (b, kv, t, d) = x.dims4()?;
    Ok(Tensor::cat(&vec![x; rep], 2)?.reshape((b, kv * rep, t, d))?)
}

/// A causal language model: the decoder and its output head (the embedding when tied).
#[derive(Debug, Clone)]
pub struct CausalLm {
    decoder: Decoder,
    lm_head: Tensor,
}

impl CausalLm {
    pub fn new(cfg: &CheckpointConfig, vb: &VarBuilder) -> Result<Self> {
        let decoder = Decoder::new(cfg, vb)?;
        let lm_head = if cfg.tied_embeddings {
            decoder.embedding().clone()
        } else {
            vb.get((cfg.vocab, cfg.hidden), "lm_head.weight")?
        };
        Ok(Self { decoder, lm_head })
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The output head (vocab, hidden).
    pub fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    /// tokens: (b, t) → logits (b, t, vocab).
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let h = self.decoder.forward(tokens, cache)?;
        Ok(h.broadcast_matmul(&self.lm_head.t()?)?)
    }

    /// The `n` most likely next tokens, one at a time with a key/value cache (stops early
    /// only at one of `stop`).
    pub fn greedy(&self, prompt: &[u32], n: usize, stop: &[u32]) -> Result<Vec<u32>> {
        let device = self.lm_head.device();
        let mut cache = self.decoder.cache();
        let mut input = Tensor::from_slice(prompt, (1, prompt.len()), device)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let logits = self.forward(&input, Some(&mut cache))?;
            let t = logits.dim(1)?;
            let last = logits.narrow(1, t - 1, 1)?.flatten_all()?.to_vec1::<f32>()?;
            let next = last
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map(|(i, _)| i as u32)
                .expect("non-empty vocabulary");
            out.push(next);
            if stop.contains(&next) {
                break;
            }
            input = Tensor::from_slice(&[next], (1, 1), device)?;
        }
        Ok(out)
    }
}

/// A scalar reward model: the decoder and a score head read at each row's last real token.
#[derive(Debug, Clone)]
pub struct Scorer {
    decoder: Decoder,
    /// (1, hidden).
    score: Tensor,
}

impl Scorer {
    /// A `*ForSequenceClassification` checkpoint's decoder and `score.weight`.
    pub fn new(cfg: &CheckpointConfig, vb: &VarBuilder) -> Result<Self> {
        debug_assert_eq!(cfg.head, Head::Score);
        Ok(Self {
            decoder: Decoder::new(cfg, vb)?,
            score: vb.get((1, cfg.hidden), "score.weight")?,
        })
    }

    /// A decoder with a given score head (a causal LM's trunk and a fresh head).
    pub fn from_parts(decoder: Decoder, score: Tensor) -> Self {
        Self { decoder, score }
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// tokens: (b, t) right-padded, lengths: each row's real tokens (≥ 1) → scores (b,),
    /// differentiable: the final-norm hidden state at position `length − 1` times the head.
    pub fn forward(&self, tokens: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, full) = tokens.dims2()?;
        let t = lengths.iter().copied().max().unwrap_or(1).min(full);
        let tokens = if t < full { tokens.narrow(1, 0, t)? } else { tokens.clone() };
        let h = self.decoder.forward(&tokens, None)?;
        let d = h.dim(2)?;
        let idx: Vec<u32> = lengths.iter().enumerate().map(|(i, &n)| (i * t + n.clamp(1, t) - 1) as u32).collect();
        let idx = Tensor::from_vec(idx, b, tokens.device())?;
        let picked = h.reshape((b * t, d))?.index_select(&idx, 0)?;
        Ok(picked.matmul(&self.score.t()?)?.squeeze(1)?)
    }
}

/// f32 tensors for a model on `device`: weights stored in bf16 or f16 are widened.
pub fn widen(t: Tensor, device: &Device) -> Result<Tensor> {
    let t = if t.dtype() == DType::F32 { t } else { t.to_dtype(DType::F32)? };
    Ok(t.to_device(device)?)
}
