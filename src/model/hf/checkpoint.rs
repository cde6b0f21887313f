//! A checkpoint folder: `config.json`, the weights (`model.safetensors`, or the shards a
//! `model.safetensors.index.json` names) and `tokenizer.json`. Opening it reads the config;
//! loading checks every weight's presence and shape against it before a model is built, so
//! a damaged checkpoint is refused with one line naming the file and the tensor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use sha2::{Digest, Sha256};

use super::config::{self, invalid, CheckpointConfig, Head};
use super::decoder::{widen, CausalLm, Decoder, Scorer};
use super::tokenizer::TextTokenizer;
use crate::error::{Error, Result};

/// Which weights a use of the checkpoint reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The decoder only (a trunk for a reward model with a fresh head).
    Decoder,
    /// The decoder and the language-model head.
    CausalLm,
    /// The decoder and the score head.
    Score,
}

/// An opened checkpoint folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: CheckpointConfig,
    config_path: PathBuf,
    /// Weight files, in name order.
    files: Vec<PathBuf>,
    /// Which file holds each weight (from the index; empty for a single file).
    weight_map: BTreeMap<String, PathBuf>,
    /// The index file, when the weights are sharded.
    index: Option<PathBuf>,
    tokenizer: PathBuf,
}

impl Checkpoint {
    /// Opens the folder `dir`: reads and checks `config.json`, finds the weight files and
    /// `tokenizer.json` (loaded lazily).
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Invalid {
                path: dir.to_path_buf(),
                key: "checkpoint".into(),
                msg: "is not a folder (a Hugging Face checkpoint folder holds config.json, model.safetensors and tokenizer.json)".into(),
            });
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(invalid(dir, "config.json", "missing: not a Hugging Face checkpoint folder"));
        }
        let config = config::read(&config_path)?;
        let index = dir.join("model.safetensors.index.json");
        let (files, weight_map, index) = if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
                path: index.clone(),
                line: e.line(),
                col: e.column(),
                msg: e.to_string(),
            })?;
            let Some(map) = value.get("weight_map").and_then(|m| m.as_object()) else {
                return Err(invalid(&index, "weight_map", "missing or not an object"));
            };
            let mut weight_map = BTreeMap::new();
            for (name, file) in map {
                let Some(file) = file.as_str() else {
                    return Err(invalid(&index, &format!("weight_map.{name}"), "expected a file name"));
                };
                if file.contains('/') || file.contains("..") {
                    return Err(invalid(&index, &format!("weight_map.{name}"), &format!("{file:?} is not a file in the checkpoint folder")));
                }
                weight_map.insert(name.clone(), dir.join(file));
            }
            let files: BTreeSet<PathBuf> = weight_map.values().cloned().collect();
            for f in &files {
                if !f.is_file() {
                    return Err(invalid(&index, "weight_map", &format!("names {}, which is missing", f.display())));
                }
            }
            (files.into_iter().collect(), weight_map, Some(index))
        } else {
            let single = dir.join("model.safetensors");
            if !single.is_file() {
                return Err(invalid(dir, "model.safetensors", "missing (and no model.safetensors.index.json names shards)"));
            }
            (vec![single], BTreeMap::new(), None)
        };
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(invalid(dir, "tokenizer.json", "missing: goodhart tokenizes with the checkpoint's own tokenizer.json"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            config_path,
            files,
            weight_map,
            index,
            tokenizer,
        })
    }

    /// The checkpoint's configuration, as goodhart reads it.
    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoint's tokenizer, checked against its config.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::load(&self.tokenizer, &self.config, &self.config_path)
    }

    /// SHA-256 over the config, the tokenizer and every weight file (names and bytes, in
    /// name order): what a cell built from this checkpoint keys on.
    pub fn digest(&self) -> Result<String> {
        let mut h = Sha256::new();
        let mut paths: Vec<&PathBuf> = vec![&self.config_path, &self.tokenizer];
        paths.extend(self.index.iter());
        paths.extend(self.files.iter());
        let mut buf = vec![0u8; 1 << 20];
        for p in paths {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            let len = f.metadata().map_err(|e| Error::io(p, e))?.len();
            h.update(len.to_le_bytes());
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(p, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        Ok(crate::digest::hex(&h.finalize()))
    }

    /// The file that holds (or should hold) weight `name`.
    fn file_of(&self, name: &str) -> &Path {
        match self.weight_map.get(name) {
            Some(f) => f,
            None => self.index.as_deref().unwrap_or(&self.files[0]),
        }
    }

    /// Every weight of `part`, checked against the config and widened to f32 on `device`.
    /// Refused, with the file and tensor named: a weight missing, of another shape or not a
    /// float; a tensor the checkpoint's architecture does not have (another model's file).
    pub fn tensors(&self, part: Part, device: &Device) -> Result<HashMap<String, Tensor>> {
        let cfg = &self.config;
        match (part, cfg.head) {
            (Part::CausalLm, Head::Score) => {
                return Err(invalid(&self.config_path, "architectures", &format!("{} has no language-model head; it can serve as a reward model or a trunk", cfg.architecture)));
            }
            (Part::Score, Head::CausalLm) => {
                return Err(invalid(&self.config_path, "architectures", &format!("{} has no score head; use it as a policy or as a reward model's trunk", cfg.architecture)));
            }
            _ => {}
        }
        let expected = expected_weights(cfg);
        let mut found: HashMap<String, (Tensor, PathBuf)> = HashMap::new();
        for file in &self.files {
            let tensors = candle_core::safetensors::load(file, &Device::Cpu)
                .map_err(|e| invalid(file, "safetensors", &format!("cannot be read: {}", one_line(&e.to_string()))))?;
            for (name, t) in tensors {
                found.insert(name, (t, file.clone()));
            }
        }
        let wanted = |name: &str| match part {
            Part::Decoder => name.starts_with("model."),
            Part::CausalLm => name.starts_with("model.") || name == "lm_head.weight",
            Part::Score => name.starts_with("model.") || name == "score.weight",
        };
        let mut out = HashMap::new();
        for (name, shape) in &expected {
            let Some((t, file)) = found.get(name) else {
                return Err(invalid(
                    self.file_of(name),
                    name,
                    &format!("missing (a {} of {} layers has it)", cfg.architecture, cfg.layers),
                ));
            };
            if t.dims() != shape.as_slice() {
                return Err(invalid(file, name, &format!("has shape {:?}, but config.json gives {:?}", t.dims(), shape)));
            }
            if !matches!(t.dtype(), DType::F32 | DType::BF16 | DType::F16 | DType::F64) {
                return Err(invalid(file, name, &format!("has dtype {:?}, not a floating-point weight", t.dtype())));
            }
            if wanted(name) {
                out.insert(name.clone(), widen(t.clone(), device)?);
            }
        }
        let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let mut extra: Vec<(&String, &PathBuf)> = found
            .iter()
            .filter(|(n, _)| !known.contains(n.as_str()) && !ignorable(n, cfg))
            .map(|(n, (_, f))| (n, f))
            .collect();
        extra.sort();
        if let Some((name, file)) = extra.first() {
            return Err(invalid(
                file,
                name,
                &format!("is not a weight of a {} of config.json's shape ({} layers): another model's file?", cfg.architecture, cfg.layers),
            ));
        }
        Ok(out)
    }

    /// The checkpoint as a causal language model that only infers.
    pub fn causal_lm(&self, device: &Device) -> Result<CausalLm> {
        let vb = VarBuilder::from_tensors(self.tensors(Part::CausalLm, device)?, DType::F32, device);
        CausalLm::new(&self.config, &vb)
    }

    /// The checkpoint as a reward model that only infers (a sequence-classification model).
    pub fn scorer(&self, device: &Device) -> Result<Scorer> {
        let vb = VarBuilder::from_tensors(self.tensors(Part::Score, device)?, DType::F32, device);
        Scorer::new(&self.config, &vb)
    }

    /// The checkpoint's decoder that only infers.
    pub fn decoder(&self, device: &Device) -> Result<Decoder> {
        let vb = VarBuilder::from_tensors(self.tensors(Part::Decoder, device)?, DType::F32, device);
        Decoder::new(&self.config, &vb)
    }
}

/// Trainable variables holding `tensors` (names kept), for a model built with
/// `VarBuilder::from_varmap` and trained by an optimizer over `varmap.all_vars()`.
pub fn trainable(tensors: HashMap<String, Tensor>) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().expect("varmap lock");
        for (name, t) in tensors {
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

/// Every weight a checkpoint of `cfg` stores, with its shape, in a fixed order.
pub fn expected_weights(cfg: &CheckpointConfig) -> Vec<(String, Vec<usize>)> {
    let (d, hd) = (cfg.hidden, cfg.head_dim);
    let (q, kv) = (cfg.heads * hd, cfg.kv_heads * hd);
    let mut w = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab, d])];
    for i in 0..cfg.layers {
        let l = format!("model.layers.{i}");
        w.push((format!("{l}.input_layernorm.weight"), vec![d]));
        for (name, out) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            w.push((format!("{l}.self_attn.{name}.weight"), vec![out, d]));
            if cfg.qkv_bias {
                w.push((format!("{l}.self_attn.{name}.bias"), vec![out]));
            }
        }
        w.push((format!("{l}.self_attn.o_proj.weight"), vec![d, q]));
        if cfg.o_bias {
            w.push((format!("{l}.self_attn.o_proj.bias"), vec![d]));
        }
        w.push((format!("{l}.post_attention_layernorm.weight"), vec![d]));
        w.push((format!("{l}.mlp.gate_proj.weight"), vec![cfg.intermediate, d]));
        w.push((format!("{l}.mlp.up_proj.weight"), vec![cfg.intermediate, d]));
        w.push((format!("{l}.mlp.down_proj.weight"), vec![d, cfg.intermediate]));
    }
    w.push(("model.norm.weight".to_string(), vec![d]));
    match cfg.head {
        Head::CausalLm if !cfg.tied_embeddings => w.push(("lm_head.weight".to_string(), vec![cfg.vocab, d])),
        Head::CausalLm => {}
        Head::Score => w.push(("score.weight".to_string(), vec![1, d])),
    }
    w
}

/// Tensors a checkpoint may hold beside its weights: rotary tables some exporters save, and
/// a copy of the tied embedding as `lm_head.weight`.
fn ignorable(name: &str, cfg: &CheckpointConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (name == "lm_head.weight" && cfg.tied_embeddings)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
