//! The causal transformer trunk shared by policy and reward models.
//!
//! Shape contract: `forward(tokens: (batch, t) u32, cache) -> hidden: (batch, t, width)`.
//! With a cache the tokens continue the cached prefix (positions start at the cache length).
//! Every op used here has a backward pass. On the CPU, layer norm, the linear layers (bias,
//! and the MLP's ReLU, included) and the whole causal attention are goodhart's fused kernels
//! ([`super::ops`], each one graph node with its own backward); elsewhere (CUDA) candle's
//! composed ops, as candle's own fused fast paths drop gradients.

use candle_core::{Module, Tensor, D};
use candle_nn::{embedding, Embedding, VarBuilder};

use crate::error::Result;
use crate::model::ops;
use crate::world::WorldConfig;

/// Shape of a transformer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TransformerConfig {
    pub vocab: usize,
    pub max_len: usize,
    pub layers: usize,
    pub width: usize,
    pub heads: usize,
    /// MLP hidden width = `mlp_mult · width`.
    pub mlp_mult: usize,
}

impl TransformerConfig {
    pub fn new(world: &WorldConfig, layers: usize, width: usize, heads: usize) -> Self {
        Self::with_dims(world.vocab(), world.seq_len(), layers, width, heads)
    }

    /// A shape for a vocabulary of `vocab` tokens and sequences of `max_len` positions.
    pub fn with_dims(vocab: usize, max_len: usize, layers: usize, width: usize, heads: usize) -> Self {
        Self {
            vocab,
            max_len,
            layers,
            width,
            heads,
            mlp_mult: 4,
        }
    }

    /// Parameters of the trunk (embeddings, blocks, final norm); `None` if the count
    /// overflows `usize`.
    fn checked_trunk_params(&self) -> Option<usize> {
        let d = self.width;
        let m = self.mlp_mult.checked_mul(d)?;
        let dd = d.checked_mul(d)?;
        let dm = d.checked_mul(m)?;
        // ln1 + qkv (d·3d + 3d) + proj (d·d + d) + ln2 + fc (d·m + m) + out (m·d + d)
        let block = dd
            .checked_mul(4)?
            .checked_add(dm.checked_mul(2)?)?
            .checked_add(d.checked_mul(9)?)?
            .checked_add(m)?;
        self.vocab
            .checked_add(self.max_len)?
            .checked_mul(d)?
            .checked_add(self.layers.checked_mul(block)?)?
            .checked_add(d.checked_mul(2)?)
    }

    /// Parameters of a reward model of this shape (trunk + scalar head); `None` on overflow.
    pub fn checked_reward_params(&self) -> Option<usize> {
        self.checked_trunk_params()?.checked_add(self.width)?.checked_add(1)
    }

    /// Parameters of a policy of this shape (trunk + LM head + value head); `None` on overflow.
    pub fn checked_policy_params(&self) -> Option<usize> {
        let head = self.width.checked_add(1)?.checked_mul(self.vocab)?;
        self.checked_trunk_params()?.checked_add(head)?.checked_add(self.width)?.checked_add(1)
    }

    /// Parameters of a reward model of this shape. Panics on overflow, which
    /// `Experiment::validate` rules out for every shape of an experiment.
    pub fn reward_params(&self) -> usize {
        self.checked_reward_params().expect("validated: the parameter count fits usize")
    }

    /// Parameters of a policy of this shape. Panics on overflow, which
    /// `Experiment::validate` rules out for every shape of an experiment.
    pub fn policy_params(&self) -> usize {
        self.checked_policy_params().expect("validated: the parameter count fits usize")
    }
}

/// Layer norm over the last dim (eps 1e-5), fused on the CPU.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub fn new(width: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(width, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(width, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::layer_norm(x, &self.weight, &self.bias, 1e-5)?)
    }
}

/// A linear layer (candle-nn's, same variable names `weight` and `bias`) over the last dim,
/// one fused graph node on the CPU ([`ops::linear`]).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

/// A [`Linear`] from `in_dim` to `out_dim`, with bias.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let l = candle_nn::linear(in_dim, out_dim, vb)?;
    Ok(Linear {
        weight: l.weight().clone(),
        bias: l.bias().expect("linear has a bias").clone(),
    })
}

impl Linear {
    /// x: (…, in) → (…, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::linear(x, &self.weight, &self.bias, false)?)
    }

    /// relu(x · wᵀ + b), fused on the CPU.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::linear(x, &self.weight, &self.bias, true)?)
    }
}

/// Cached keys and values of every layer: each `(batch, heads, t, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    /// Each row's leading padding, for a model whose rows may be left-padded (a checkpoint's
    /// decoder); follows [`select_rows`](Self::select_rows).
    starts: Option<Vec<usize>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![None; layers],
            len: 0,
            starts: None,
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Layer `i`'s cached keys and values, for a model that writes its own layers.
    pub(crate) fn slot(&mut self, i: usize) -> &mut Option<(Tensor, Tensor)> {
        &mut self.layers[i]
    }

    /// Each row's leading padding, as recorded by the first call.
    pub(crate) fn starts(&self) -> Option<&[usize]> {
        self.starts.as_deref()
    }

    pub(crate) fn set_starts(&mut self, starts: Vec<usize>) {
        self.starts = Some(starts);
    }

    /// Counts `t` more cached positions (after every layer has appended them).
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keeps the cached rows `rows` (indices into the batch, repeats allowed), in that
    /// order: generation drops finished rows, or fans one prompt's prefix out to the
    /// rows that share it.
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        if let Some(starts) = &mut self.starts {
            *starts = rows.iter().map(|&r| starts[r as usize]).collect();
        }
        let Some(device) = self.layers.iter().flatten().next().map(|(k, _)| k.device().clone()) else {
            return Ok(());
        };
        let idx = Tensor::from_slice(rows, rows.len(), &device)?;
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.width;
        Ok(Self {
            qkv: linear(d, 3 * d, vb.pp("qkv"))?,
            proj: linear(d, d, vb.pp("proj"))?,
            heads: cfg.heads,
            head_dim: d / cfg.heads,
        })
    }

    /// x: (b, t, d); cache: this layer's slot. Attention is causal. On the CPU without a
    /// cache it is one fused op ([`ops::causal_attention`]); with a cache (generation) the
    /// fused softmax applies the mask itself; elsewhere `mask` is the additive (t, t_total)
    /// mask (None when t = 1).
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let qkv = self.qkv.forward(x)?;
        if cache.is_none() && ops::fused_for(&qkv) {
            // Training and scoring on the CPU: the whole causal attention as one node.
            let y = ops::fused_causal_attention(&qkv, self.heads)?;
            return self.proj.forward(&y);
        }
        let split = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * d, d)?
                .reshape((b, t, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, mut k, mut v) = (split(0)?, split(1)?, split(2)?);
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        // On the CPU the matmul reads kᵀ through its strides; elsewhere as before, copied.
        let kt = if ops::fused_for(&k) { k.t()? } else { k.t()?.contiguous()? };
        let att = q.matmul(&kt)?;
        let att = if ops::fused_for(&att) {
            ops::fused_causal_softmax(&att, scale)?
        } else {
            let mut att = (att * scale)?;
            if let Some(m) = mask {
                att = att.broadcast_add(m)?;
            }
            candle_nn::ops::softmax(&att, D::Minus1)?
        };
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        Ok(self.proj.forward(&y)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc: Linear,
    proj: Linear,
}

impl Block {
    fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.width;
        let m = cfg.mlp_mult * d;
        Ok(Self {
            ln1: LayerNorm::new(d, vb.pp("ln1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            ln2: LayerNorm::new(d, vb.pp("ln2"))?,
            fc: linear(d, m, vb.pp("mlp.fc"))?,
            proj: linear(m, d, vb.pp("mlp.proj"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?, mask, cache)?)?;
        let h = self.fc.forward_relu(&self.ln2.forward(&x)?)?;
        Ok((&x + self.proj.forward(&h)?)?)
    }
}

/// Embeddings, blocks and the final norm.
#[derive(Debug, Clone)]
pub struct Trunk {
    cfg: TransformerConfig,
    tok: Embedding,
    pos: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Trunk {
    pub fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let blocks = (0..cfg.layers)
            .map(|i| Block::new(cfg, vb.pp(format!("h{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            tok: embedding(cfg.vocab, cfg.width, vb.pp("tok_emb"))?,
            pos: embedding(cfg.max_len, cfg.width, vb.pp("pos_emb"))?,
            blocks,
            ln_f: LayerNorm::new(cfg.width, vb.pp("ln_f"))?,
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// tokens: (b, t) → hidden: (b, t, width). Causal; continues `cache` when given.
    pub fn forward(&self, tokens: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (_b, t) = tokens.dims2()?;
        let device = tokens.device();
        let offset = cache.as_ref().map_or(0, |c| c.len);
        let positions = Tensor::arange(offset as u32, (offset + t) as u32, device)?;
        let x = ops::add_bias(&self.tok.forward(tokens)?, &self.pos.forward(&positions)?)?;
        // The fused CPU softmax masks by itself; the composed path adds this mask.
        let mask = if t > 1 && !ops::fused_for(&x) {
            Some(ops::causal_mask(t, offset, device)?)
        } else {
            None
        };
        let mut x = x;
        match cache {
            Some(c) => {
                for (block, slot) in self.blocks.iter().zip(c.layers.iter_mut()) {
                    x = block.forward(&x, mask.as_ref(), Some(slot))?;
                }
                c.len += t;
            }
            None => {
                for block in &self.blocks {
                    x = block.forward(&x, mask.as_ref(), None)?;
                }
            }
        }
        self.ln_f.forward(&x)
    }
}
