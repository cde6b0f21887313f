//! GGUF import: a llama.cpp file (Llama or Qwen2 architecture) written out as a Hugging Face
//! folder goodhart opens like any other ([`super::Checkpoint`]): `config.json` from the
//! file's metadata, `model.safetensors` with every tensor dequantized to f32 under its
//! Hugging Face name, `tokenizer.json` from the embedded vocabulary and merges, and
//! `gguf.json` recording where it came from.
//!
//! What the import carries: the quantization's rounding. A 4-bit file dequantized is a model
//! of its own (close to, not equal to, the one it was quantized from); `gguf.json` lists the
//! quantization types so a report can say so. What it undoes: llama.cpp stores a Llama
//! model's query and key projections with their rows permuted for its interleaved rotary
//! kernel; they are permuted back here (Qwen2 files are stored unpermuted).
//!
//! Refused with one line naming the key: an architecture other than llama or qwen2, a
//! missing rotary base or norm epsilon (never defaulted), rope scaling, a rotary dimension
//! other than the head's, a tokenizer type or pre-tokenizer this reader does not know, a
//! tensor missing or of the wrong shape.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::json;

use super::checkpoint::expected_weights;
use super::config::{self, invalid};
use crate::error::{Error, Result};

/// What an import wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    /// The Hugging Face folder written.
    pub dir: PathBuf,
    /// The GGUF file read, its size and SHA-256.
    pub source: PathBuf,
    pub source_bytes: u64,
    pub source_sha256: String,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, where the file has one.
    pub name: Option<String>,
    /// How many tensors were stored in each GGUF type (F32, Q4_1, Q8_0, …).
    pub quantization: BTreeMap<String, usize>,
    /// Parameters written (f32).
    pub parameters: usize,
}

/// Reads GGUF `file` and writes the Hugging Face folder `out` (which must not exist; it
/// appears only once complete).
pub fn import(file: &Path, out: &Path) -> Result<Imported> {
    if out.exists() {
        return Err(invalid(out, "out", "already exists; goodhart does not overwrite a checkpoint folder"));
    }
    let mut reader = std::io::BufReader::new(std::fs::File::open(file).map_err(|e| Error::io(file, e))?);
    let content = Content::read(&mut reader).map_err(|e| invalid(file, "gguf", &format!("cannot be read as GGUF: {}", one_line(&e.to_string()))))?;
    let meta = Meta { file, content: &content };
    let arch = meta.string("general.architecture")?;
    let (family, architecture, model_type) = match arch.as_str() {
        "llama" => ("llama", "LlamaForCausalLM", "llama"),
        "qwen2" => ("qwen2", "Qwen2ForCausalLM", "qwen2"),
        other => {
            return Err(invalid(file, "general.architecture", &format!("{other:?}: goodhart imports llama and qwen2 files")));
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = meta.uint(&key("embedding_length"))?;
    let layers = meta.uint(&key("block_count"))?;
    let intermediate = meta.uint(&key("feed_forward_length"))?;
    let heads = meta.uint(&key("attention.head_count"))?;
    let kv_heads = meta.uint_or(&key("attention.head_count_kv"), heads)?;
    let context = meta.uint(&key("context_length"))?;
    let Some(theta) = meta.float_opt(&key("rope.freq_base"))? else {
        return Err(invalid(file, &key("rope.freq_base"), "missing: goodhart does not guess a model's rotary base"));
    };
    let Some(eps) = meta.float_opt(&key("attention.layer_norm_rms_epsilon"))? else {
        return Err(invalid(file, &key("attention.layer_norm_rms_epsilon"), "missing: goodhart does not guess a model's norm epsilon"));
    };
    if heads == 0 || hidden % heads != 0 {
        return Err(invalid(file, &key("attention.head_count"), &format!("{heads} does not divide the width {hidden}")));
    }
    let head_dim = hidden / heads;
    if let Some(d) = meta.uint_opt(&key("rope.dimension_count"))? {
        if d != head_dim {
            return Err(invalid(file, &key("rope.dimension_count"), &format!("{d}: a partial rotary embedding (the head is {head_dim}) is not supported")));
        }
    }
    for k in ["rope.scaling.type", "rope.scaling.factor"] {
        if let Some(v) = content.metadata.get(&key(k)) {
            let none = matches!(v, Value::String(s) if s == "none") || matches!(v, Value::F32(f) if *f == 1.0);
            if !none {
                return Err(invalid(file, &key(k), "rope scaling is not supported"));
            }
        }
    }
    if let Some(w) = meta.uint_opt(&key("attention.sliding_window"))? {
        if w > 0 {
            return Err(invalid(file, &key("attention.sliding_window"), "sliding-window attention is not supported"));
        }
    }
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let vocab = meta.uint_or(&key("vocab_size"), tokens.len())?;
    if tokens.len() != vocab {
        return Err(invalid(file, "tokenizer.ggml.tokens", &format!("holds {} tokens, but {} is {vocab}", tokens.len(), key("vocab_size"))));
    }
    let tied = !content.tensor_infos.contains_key("output.weight");
    let qkv_bias = content.tensor_infos.contains_key("blk.0.attn_q.bias");
    if family == "qwen2" && !qkv_bias {
        return Err(invalid(file, "blk.0.attn_q.bias", "missing: a Qwen2 model has query/key/value biases"));
    }
    if family == "llama" && qkv_bias {
        return Err(invalid(file, "blk.0.attn_q.bias", "a Llama model with attention biases is not supported by the import"));
    }
    let bos = meta.uint_opt("tokenizer.ggml.bos_token_id")?;
    let eos = meta.uint_opt("tokenizer.ggml.eos_token_id")?;
    let pad = meta.uint_opt("tokenizer.ggml.padding_token_id")?;

    // config.json, in transformers 4's layout (read by goodhart's own reader below).
    let mut cfg = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": shortest(eps),
        "rope_theta": shortest(theta),
        "rope_scaling": null,
        "max_position_embeddings": context,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
    });
    if family == "llama" {
        cfg["attention_bias"] = json!(false);
        cfg["mlp_bias"] = json!(false);
    } else {
        cfg["use_sliding_window"] = json!(false);
    }

    // Weights, dequantized, under their Hugging Face names.
    let mut quantization: BTreeMap<String, usize> = BTreeMap::new();
    for info in content.tensor_infos.values() {
        *quantization.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for gguf_name in names {
        if gguf_name.ends_with("rope_freqs.weight") {
            return Err(invalid(file, gguf_name, "rope frequency factors (rope scaling) are not supported"));
        }
        let Some(hf) = hf_name(gguf_name) else {
            return Err(invalid(file, gguf_name, "is not a tensor of a llama/qwen2 model as goodhart knows it"));
        };
        let q = content
            .tensor(&mut reader, gguf_name, &Device::Cpu)
            .map_err(|e| invalid(file, gguf_name, &format!("cannot be read: {}", one_line(&e.to_string()))))?;
        let mut t = q.dequantize(&Device::Cpu).map_err(|e| invalid(file, gguf_name, &format!("cannot be dequantized: {}", one_line(&e.to_string()))))?;
        if family == "llama" {
            if hf.ends_with("self_attn.q_proj.weight") {
                t = unpermute(&t, heads).map_err(|e| invalid(file, gguf_name, &e.to_string()))?;
            } else if hf.ends_with("self_attn.k_proj.weight") {
                t = unpermute(&t, kv_heads).map_err(|e| invalid(file, gguf_name, &e.to_string()))?;
            }
        }
        tensors.insert(hf, t);
    }

    // Write into a temporary folder beside `out`, check it opens, then rename it into place.
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "import".into()),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| -> Result<Imported> {
        let config_path = tmp.join("config.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&cfg).expect("json") + "\n").map_err(|e| Error::io(&config_path, e))?;
        let parsed = config::read(&config_path)?;
        for (name, shape) in expected_weights(&parsed) {
            match tensors.get(&name) {
                None => return Err(invalid(file, &gguf_name_of(&name), "missing")),
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(invalid(file, &gguf_name_of(&name), &format!("has shape {:?}, but the metadata gives {:?}", t.dims(), shape)));
                }
                Some(_) => {}
            }
        }
        let parameters = tensors.values().map(|t| t.elem_count()).sum();
        let weights = tmp.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights).map_err(|e| Error::io(&weights, std::io::Error::other(e.to_string())))?;
        // The safetensors writer creates its file readable by its owner only; a checkpoint
        // folder is read like the other files in it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&weights, std::fs::Permissions::from_mode(0o644)).map_err(|e| Error::io(&weights, e))?;
        }
        let tok = tokenizer_json(file, &meta, &tokens)?;
        let tok_path = tmp.join("tokenizer.json");
        std::fs::write(&tok_path, serde_json::to_string(&tok).expect("json")).map_err(|e| Error::io(&tok_path, e))?;
        let (source_bytes, source_sha256) = crate::digest::file_sha256(file)?;
        let imported = Imported {
            dir: out.to_path_buf(),
            source: file.to_path_buf(),
            source_bytes,
            source_sha256,
            architecture: arch.clone(),
            name: meta.string("general.name").ok(),
            quantization: quantization.clone(),
            parameters,
        };
        let record = json!({
            "about": "imported from a GGUF file by goodhart import-gguf: every tensor dequantized to f32; the weights carry the quantization's rounding",
            "source": file.file_name().map(|n| n.to_string_lossy().into_owned()),
            "source_bytes": source_bytes,
            "source_sha256": imported.source_sha256,
            "architecture": arch,
            "name": imported.name,
            "quantization": quantization,
            "parameters": parameters,
            "goodhart": env!("CARGO_PKG_VERSION"),
        });
        let rec_path = tmp.join("gguf.json");
        std::fs::write(&rec_path, serde_json::to_string_pretty(&record).expect("json") + "\n").map_err(|e| Error::io(&rec_path, e))?;
        // It must open as a checkpoint, tokenizer included, before it is put in place.
        let ckpt = super::Checkpoint::open(&tmp)?;
        ckpt.tokenizer()?;
        Ok(imported)
    })();
    match result {
        Ok(imported) => {
            std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
            Ok(imported)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// The Hugging Face name of a llama.cpp tensor name.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// The llama.cpp name of a Hugging Face weight name (for messages).
fn gguf_name_of(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let Some(rest) = hf.strip_prefix("model.layers.") else {
        return hf.to_string();
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return hf.to_string();
    };
    let g = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return hf.to_string(),
    };
    format!("blk.{layer}.{g}")
}

/// Undoes llama.cpp's row permutation of a query or key projection `w: (heads·d, in)`:
/// llama.cpp stores row `(h, j, a)` what Hugging Face stores at `(h, a, j)` (`a` ∈ {0, 1}
/// the half of the rotate-half pair, `j` < d/2).
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if heads == 0 || out % (2 * heads) != 0 {
        candle_core::bail!("{out} rows do not split into {heads} heads of rotary pairs");
    }
    let half = out / heads / 2;
    w.reshape((heads, half, 2, inp))?.transpose(1, 2)?.contiguous()?.reshape((out, inp))
}

/// The shortest decimal that reads back as the same f32 (the file stores f32: 1e-5 is
/// stored as 9.99999974e-6 and means 1e-5).
fn shortest(v: f64) -> f64 {
    format!("{}", v as f32).parse().unwrap_or(v)
}

/// tokenizer.json for a GGUF "gpt2" (byte-level BPE) vocabulary.
fn tokenizer_json(file: &Path, meta: &Meta, tokens: &[String]) -> Result<serde_json::Value> {
    let model = meta.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(invalid(file, "tokenizer.ggml.model", &format!("{model:?}: goodhart imports byte-level BPE (\"gpt2\") tokenizers only")));
    }
    let merges = meta.strings("tokenizer.ggml.merges")?;
    for (i, m) in merges.iter().enumerate() {
        if m.split_once(' ').is_none() {
            return Err(invalid(file, "tokenizer.ggml.merges", &format!("entry {i} ({m:?}) is not a pair")));
        }
    }
    let pre = meta.string("tokenizer.ggml.pre").unwrap_or_else(|_| "default".into());
    // The pre-tokenizer each llama.cpp name stands for, as the models' own tokenizer.json
    // files write it.
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    let (normalizer, pre_tokenizer) = match pre.as_str() {
        "default" | "gpt2" => (json!(null), byte_level(true)),
        "smollm" => (
            json!(null),
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        ),
        "qwen2" => (json!({"type": "NFC"}), json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false)]})),
        other => {
            return Err(invalid(file, "tokenizer.ggml.pre", &format!("{other:?}: a pre-tokenizer goodhart does not know (it knows gpt2, smollm, qwen2)")));
        }
    };
    let types: Vec<u32> = match meta.content.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.iter().map(|v| v.to_i32().map(|x| x as u32).unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let mut special: Vec<u32> = types.iter().enumerate().filter(|(_, &t)| t == 3 || t == 4).map(|(i, _)| i as u32).collect();
    for k in ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id"] {
        if let Some(id) = meta.uint_opt(k)? {
            if id >= tokens.len() {
                return Err(invalid(file, k, &format!("{id} is not a token (the vocabulary has {})", tokens.len())));
            }
            special.push(id as u32);
        }
    }
    special.sort_unstable();
    special.dedup();
    let added: Vec<serde_json::Value> = special
        .iter()
        .map(|&id| json!({"id": id, "content": tokens[id as usize], "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}

/// Typed reads of a GGUF file's metadata, refusing with the key named.
struct Meta<'a> {
    file: &'a Path,
    content: &'a Content,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.content.metadata.get(key).ok_or_else(|| invalid(self.file, key, "missing"))
    }

    fn string(&self, key: &str) -> Result<String> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(invalid(self.file, key, &format!("expected a string, found {:?}", v.value_type()))),
        }
    }

    fn uint_opt(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let n: i128 = match v {
            Value::U8(x) => *x as i128,
            Value::I8(x) => *x as i128,
            Value::U16(x) => *x as i128,
            Value::I16(x) => *x as i128,
            Value::U32(x) => *x as i128,
            Value::I32(x) => *x as i128,
            Value::U64(x) => *x as i128,
            Value::I64(x) => *x as i128,
            v => return Err(invalid(self.file, key, &format!("expected an integer, found {:?}", v.value_type()))),
        };
        usize::try_from(n).map(Some).map_err(|_| invalid(self.file, key, &format!("{n} is not a count")))
    }

    fn uint(&self, key: &str) -> Result<usize> {
        self.uint_opt(key)?.ok_or_else(|| invalid(self.file, key, "missing"))
    }

    fn uint_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.uint_opt(key)?.unwrap_or(default))
    }

    fn float_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(invalid(self.file, key, &format!("expected a float, found {:?}", v.value_type()))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key)? {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(invalid(self.file, key, &format!("entry {i} is a {:?}, not a string", v.value_type()))),
                })
                .collect(),
            v => Err(invalid(self.file, key, &format!("expected an array, found {:?}", v.value_type()))),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for g in ["token_embd.weight", "output.weight", "output_norm.weight", "blk.3.attn_q.weight", "blk.12.ffn_down.weight", "blk.0.attn_v.bias"] {
            assert_eq!(gguf_name_of(&hf_name(g).unwrap()), g);
        }
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: w.reshape(heads, 2, d/2, in).swapaxes(1, 2).reshape(out, in).
        let (heads, d, inp) = (3usize, 4usize, 2usize);
        let w = Tensor::arange(0f32, (heads * d * inp) as f32, &Device::Cpu).unwrap().reshape((heads * d, inp)).unwrap();
        let permuted = w.reshape((heads, 2, d / 2, inp)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((heads * d, inp)).unwrap();
        assert_ne!(permuted.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        assert_eq!(unpermute(&permuted, heads).unwrap().to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn shortest_reads_the_f32_as_meant() {
        assert_eq!(shortest(1e-5f32 as f64), 1e-5);
        assert_eq!(shortest(100000f32 as f64), 100000.0);
    }
}
