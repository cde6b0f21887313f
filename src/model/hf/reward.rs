//! A checkpoint as a reward model over text rows (the layout of [`super::TextPolicy`]): a
//! decoder and a scalar head read at each row's last real token.
//!
//! Two ways in: a sequence-classification checkpoint as it is (a gold reward model), or
//! any checkpoint's decoder as a trunk with a fresh head (a proxy, as real reward models are
//! made: fine-tuned from a pretrained language model), trainable in full or only in its top
//! layers and head.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::checkpoint::{Checkpoint, Part};
use super::decoder::Scorer;
use crate::error::Result;

/// A scalar reward over rows.
#[derive(Debug, Clone)]
pub struct TextReward {
    scorer: Scorer,
    pad: u32,
}

/// Which weights of a proxy train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trainable {
    /// Every weight.
    All,
    /// The head, the final norm and the top `n` layers; the rest stay as the checkpoint has them.
    Top(usize),
}

impl TextReward {
    /// A sequence-classification checkpoint as it is (frozen).
    pub fn load(ckpt: &Checkpoint, device: &Device) -> Result<Self> {
        let scorer = ckpt.scorer(device)?;
        Ok(Self {
            pad: scorer.decoder().pad_id(),
            scorer,
        })
    }

    /// A checkpoint's decoder with a fresh head (N(0, 1/hidden) entries drawn from `seed`),
    /// and the variables that train: those `which` names, gathered in a map for the optimizer.
    pub fn from_trunk(ckpt: &Checkpoint, device: &Device, seed: u64, which: Trainable) -> Result<(Self, VarMap)> {
        let cfg = ckpt.config();
        let mut tensors: HashMap<String, Tensor> = ckpt.tensors(Part::Decoder, device)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, (1.0 / cfg.hidden as f32).sqrt()).expect("a positive scale");
        let head: Vec<f32> = (0..cfg.hidden).map(|_| normal.sample(&mut rng)).collect();
        tensors.insert("score.weight".into(), Tensor::from_vec(head, (1, cfg.hidden), device)?);
        let first_trained = match which {
            Trainable::All => 0,
            Trainable::Top(n) => cfg.layers.saturating_sub(n),
        };
        let trains = |name: &str| -> bool {
            if which == Trainable::All || name == "score.weight" || name == "model.norm.weight" {
                return true;
            }
            name.strip_prefix("model.layers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= first_trained)
        };
        let map = VarMap::new();
        {
            let mut data = map.data().lock().expect("varmap lock");
            for (name, t) in tensors.iter_mut() {
                if trains(name) {
                    let var = Var::from_tensor(t)?;
                    *t = var.as_tensor().clone();
                    data.insert(name.clone(), var);
                }
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let decoder = super::Decoder::new(cfg, &vb)?;
        let score = vb.get((1, cfg.hidden), "score.weight")?;
        let scorer = Scorer::from_parts(decoder, score);
        Ok((
            Self {
                pad: scorer.decoder().pad_id(),
                scorer,
            },
            map,
        ))
    }

    /// A checkpoint's decoder with the head and weights of `weights` (a trained proxy's
    /// saved variables: the head and what trained) over the checkpoint's own, for inference.
    pub fn with_weights(ckpt: &Checkpoint, device: &Device, weights: HashMap<String, Tensor>) -> Result<Self> {
        let cfg = ckpt.config();
        let mut tensors: HashMap<String, Tensor> = ckpt.tensors(Part::Decoder, device)?;
        for (name, t) in weights {
            if let Some(have) = tensors.get(&name) {
                if have.dims() != t.dims() {
                    return Err(candle_core::Error::Msg(format!("{name}: saved shape {:?}, the checkpoint's {:?}", t.dims(), have.dims())).into());
                }
            } else if name != "score.weight" {
                return Err(candle_core::Error::Msg(format!("{name} is not a weight of the trunk {}", ckpt.dir().display())).into());
            }
            tensors.insert(name, t.detach());
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let decoder = super::Decoder::new(cfg, &vb)?;
        let score = vb.get((1, cfg.hidden), "score.weight")?;
        let scorer = Scorer::from_parts(decoder, score);
        Ok(Self {
            pad: scorer.decoder().pad_id(),
            scorer,
        })
    }

    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// Rows (b, t), left-padded prompts and right-padded responses → rewards (b,),
    /// differentiable. A row's reward is read at its last token before the right padding.
    pub fn score(&self, rows: &Tensor) -> Result<Tensor> {
        let (_, t) = rows.dims2()?;
        let ids = rows.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<u32>()?;
        let lengths: Vec<usize> = ids
            .chunks(t)
            .map(|row| {
                let start = row.iter().take_while(|&&id| id == self.pad).count();
                start + row[start..].iter().take_while(|&&id| id != self.pad).count()
            })
            .collect();
        self.scorer.forward(rows, &lengths)
    }
}
