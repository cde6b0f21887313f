//! Transformer models in candle-nn, device-generic.
//!
//! - [`transformer`]: the shared causal trunk (token + position embeddings, pre-norm blocks,
//!   a differentiable layer norm, a KV cache for generation).
//! - [`policy`]: the causal LM policy with a value head (PPO uses it).
//! - [`reward`]: the reward model, a trunk with a scalar head read at the response's end.
//! - [`ops`]: the fused forward and backward kernels every model trains and scores through;
//!   [`cpu`]: the CPU's vector extensions they dispatch on.
//!
//! Weights are initialized from the experiment seed (candle's CPU RNG cannot be seeded),
//! so the same config on the same device gives the same model.

pub mod cpu;
pub mod hf;
pub mod ops;
pub mod policy;
pub mod reward;
pub mod transformer;

/// Batch size for scoring and other inference without gradients.
pub const SCORE_BATCH: usize = 512;

pub use policy::Policy;
pub use reward::RewardModel;
pub use transformer::{KvCache, TransformerConfig, Trunk};

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand_distr::{Distribution, Normal};

use crate::error::Result;

/// Total number of parameters held by `varmap`.
pub fn param_count(varmap: &VarMap) -> usize {
    varmap.all_vars().iter().map(|v| v.elem_count()).sum()
}

/// A builder over detached views of `varmap`'s variables, for a model that only infers
/// (sampling, scoring, evaluation). Its ops record no graph, so every intermediate is freed
/// as soon as the next op has read it: with trainable variables a forward pass keeps every
/// activation (and a sampling loop every step's) alive until its output is dropped. The
/// views share the variables' storage, so they follow the optimizer's in-place updates.
pub fn frozen(varmap: &VarMap, device: &Device) -> VarBuilder<'static> {
    let data = varmap.data().lock().expect("varmap lock");
    let tensors: HashMap<String, Tensor> = data.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
    VarBuilder::from_tensors(tensors, DType::F32, device)
}

/// A builder over the tensors of a safetensors file, for a model that only infers (see
/// [`frozen`]). A model built from it fails on a missing tensor or a shape that differs.
pub fn frozen_file(path: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    let tensors = candle_core::safetensors::load(path, device)?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

/// Overwrites every variable of `varmap` with seeded values. The rule is read from the
/// variable's name: layer-norm gains 1, biases 0, embeddings N(0, 0.3²), linear weights
/// N(0, 1/fan_in) with residual output projections further scaled by 1/sqrt(2·layers).
/// Each variable draws from its own stream (seed, name), so the order of creation is
/// irrelevant.
pub fn seeded_init(varmap: &VarMap, seed: u64, layers: usize) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let leaf = name.rsplit('.').next().unwrap_or("");
        let values: Vec<f32> = if name.contains("ln") && leaf == "weight" {
            vec![1.0; n]
        } else if leaf == "bias" {
            vec![0.0; n]
        } else {
            let std = if name.ends_with("emb.weight") {
                0.3
            } else {
                let fan_in = *shape.dims().last().unwrap_or(&1) as f64;
                let residual = if name.ends_with("proj.weight") {
                    1.0 / (2.0 * layers as f64).sqrt()
                } else {
                    1.0
                };
                residual / fan_in.sqrt()
            };
            let mut rng = crate::seed::rng(seed, name);
            let normal = Normal::new(0.0, std).expect("valid std");
            (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
        };
        let t = Tensor::from_vec(values, shape, var.device())?.to_dtype(DType::F32)?;
        var.set(&t)?;
    }
    Ok(())
}
