//! goodhart's own reader of a checkpoint's `config.json`.
//!
//! Written by hand rather than derived: transformers 4 and 5 write the same model in
//! different shapes (5 moves `rope_theta` under `rope_parameters`, writes `sliding_window:
//! null` and `dtype` for `torch_dtype`), and a serde default for a key that moved would
//! silently run another model (SmolLM2 trained with a rope base of 100,000 speaks nonsense
//! at the common default of 10,000). So every key is either read, known not to change the
//! computation, or refused with one line naming it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The model family: the layout of the decoder's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama, SmolLM, SmolLM2 (no attention biases unless `attention_bias`).
    Llama,
    /// Qwen2, Qwen2.5 (biases on the query, key and value projections).
    Qwen2,
}

/// What sits on top of the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// `*ForCausalLM`: the language-model head (or the tied embeddings).
    CausalLm,
    /// `*ForSequenceClassification` with one label: a scalar score read at the last
    /// non-padding token.
    Score,
}

/// A checkpoint's shape and numerics, as goodhart runs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckpointConfig {
    /// The architecture named in `architectures`.
    pub architecture: String,
    pub family: Family,
    pub head: Head,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub max_positions: usize,
    /// The output head is the token embedding (`lm_head.weight` absent).
    pub tied_embeddings: bool,
    /// Biases on the query, key and value projections (always for Qwen2).
    pub qkv_bias: bool,
    /// Bias on the attention's output projection (Llama's `attention_bias`).
    pub o_bias: bool,
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    pub pad: Option<u32>,
    /// The dtype the weights were saved in (`torch_dtype` or `dtype`), if stated.
    pub stored_dtype: Option<String>,
}

/// Keys that describe training, generation defaults or bookkeeping and do not change what
/// the model computes in goodhart's hands.
const HARMLESS: &[&str] = &[
    "_name_or_path",
    "transformers_version",
    "initializer_range",
    "use_cache",
    "pretraining_tp",
    "attention_dropout",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "is_llama_config",
    "transformers.js_config",
    "tokenizer_class",
    "problem_type",
    "max_window_layers",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "torch_dtype",
    "dtype",
    "id2label",
    "label2id",
    "num_labels",
    "architectures",
    "model_type",
    "use_bfloat16",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
];

/// Reads `config.json` at `path`.
pub fn read(path: &Path) -> Result<CheckpointConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        col: e.column(),
        msg: e.to_string(),
    })?;
    parse(&value, path)
}

/// Reads a parsed `config.json` (`path` names it in errors).
pub fn parse(value: &Value, path: &Path) -> Result<CheckpointConfig> {
    let Some(map) = value.as_object() else {
        return Err(invalid(path, "(top level)", "is not a JSON object"));
    };
    let r = Reader { map, path };
    let architecture = r.architecture()?;
    let (family, head) = match architecture.as_str() {
        "LlamaForCausalLM" => (Family::Llama, Head::CausalLm),
        "LlamaForSequenceClassification" => (Family::Llama, Head::Score),
        "Qwen2ForCausalLM" => (Family::Qwen2, Head::CausalLm),
        "Qwen2ForSequenceClassification" => (Family::Qwen2, Head::Score),
        other => {
            return Err(invalid(
                path,
                "architectures",
                &format!("{other} is not supported (goodhart reads LlamaForCausalLM, Qwen2ForCausalLM and their ForSequenceClassification models)"),
            ))
        }
    };
    let model_type = r.string("model_type")?;
    let expected = match family {
        Family::Llama => "llama",
        Family::Qwen2 => "qwen2",
    };
    if model_type != expected {
        return Err(invalid(path, "model_type", &format!("is {model_type:?}, but architectures says {architecture} (model_type {expected:?})")));
    }
    let mut read: Vec<&str> = Vec::new();
    let mut take = |k: &'static str| read.push(k);

    let hidden = r.positive("hidden_size")?;
    let intermediate = r.positive("intermediate_size")?;
    let layers = r.positive("num_hidden_layers")?;
    let heads = r.positive("num_attention_heads")?;
    let vocab = r.positive("vocab_size")?;
    let max_positions = r.positive("max_position_embeddings")?;
    for k in ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings"] {
        take(k);
    }
    let kv_heads = r.optional_positive("num_key_value_heads")?.unwrap_or(heads);
    take("num_key_value_heads");
    if heads % kv_heads != 0 {
        return Err(invalid(path, "num_key_value_heads", &format!("{kv_heads} does not divide num_attention_heads {heads}")));
    }
    let head_dim = match r.optional_positive("head_dim")? {
        Some(d) => d,
        None => {
            if hidden % heads != 0 {
                return Err(invalid(path, "num_attention_heads", &format!("{heads} does not divide hidden_size {hidden} (and head_dim is not given)")));
            }
            hidden / heads
        }
    };
    take("head_dim");
    if head_dim % 2 != 0 {
        return Err(invalid(path, "head_dim", &format!("{head_dim} is odd; the rotary embedding needs an even head dimension")));
    }
    let rms_eps = r.number("rms_norm_eps")?;
    take("rms_norm_eps");
    if !(rms_eps > 0.0 && rms_eps.is_finite()) {
        return Err(invalid(path, "rms_norm_eps", &format!("{rms_eps} is not a positive number")));
    }
    let rope_theta = r.rope_theta()?;
    take("rope_theta");
    take("rope_parameters");
    take("rope_scaling");
    let hidden_act = r.optional_string("hidden_act")?.unwrap_or_else(|| "silu".to_string());
    take("hidden_act");
    if hidden_act != "silu" {
        return Err(invalid(path, "hidden_act", &format!("{hidden_act:?} is not supported (Llama and Qwen2 use \"silu\")")));
    }
    let tied_embeddings = r.optional_bool("tie_word_embeddings")?.unwrap_or(false);
    let (qkv_bias, o_bias) = match family {
        Family::Llama => {
            let b = r.optional_bool("attention_bias")?.unwrap_or(false);
            take("attention_bias");
            if r.optional_bool("mlp_bias")?.unwrap_or(false) {
                return Err(invalid(path, "mlp_bias", "true is not supported (goodhart's Llama has no MLP biases)"));
            }
            take("mlp_bias");
            (b, b)
        }
        Family::Qwen2 => (true, false),
    };
    // Sliding-window attention: refused where it is on; Qwen2 files state it off.
    if r.optional_bool("use_sliding_window")?.unwrap_or(false) {
        return Err(invalid(path, "use_sliding_window", "true is not supported (goodhart attends over the whole sequence)"));
    }
    take("use_sliding_window");
    match map.get("sliding_window") {
        None | Some(Value::Null) => {}
        Some(Value::Number(_)) if family == Family::Qwen2 => {}
        Some(Value::Number(_)) => {
            return Err(invalid(path, "sliding_window", "a window is not supported for Llama-family models (goodhart attends over the whole sequence)"));
        }
        Some(v) => return Err(invalid(path, "sliding_window", &format!("expected a number or null, found {}", kind(v)))),
    }
    take("sliding_window");
    if let Some(v) = map.get("layer_types") {
        let ok = v.as_array().is_some_and(|a| a.iter().all(|t| t.as_str() == Some("full_attention")));
        if !ok {
            return Err(invalid(path, "layer_types", "only \"full_attention\" layers are supported"));
        }
    }
    take("layer_types");
    if let Some(v) = map.get("rope_interleaved") {
        if v.as_bool() != Some(false) {
            return Err(invalid(path, "rope_interleaved", "only false is supported (Hugging Face's rotate-half rotary embedding)"));
        }
    }
    take("rope_interleaved");
    if let Some(v) = map.get("attention_dropout") {
        if v.as_f64().is_none() {
            return Err(invalid(path, "attention_dropout", &format!("expected a number, found {}", kind(v))));
        }
    }
    if let Some(tp) = map.get("pretraining_tp") {
        if tp.as_u64().is_none() {
            return Err(invalid(path, "pretraining_tp", &format!("expected an integer, found {}", kind(tp))));
        }
    }
    let bos = r.optional_token("bos_token_id")?;
    let eos = match map.get("eos_token_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| token_id(v).ok_or_else(|| invalid(path, "eos_token_id", &format!("expected token ids, found {}", kind(v)))))
            .collect::<Result<Vec<u32>>>()?,
        Some(v) => vec![token_id(v).ok_or_else(|| invalid(path, "eos_token_id", &format!("expected a token id or a list of them, found {}", kind(v))))?],
    };
    let pad = r.optional_token("pad_token_id")?;
    for (key, id) in [("bos_token_id", bos), ("pad_token_id", pad)].into_iter().chain(eos.iter().map(|&e| ("eos_token_id", Some(e)))) {
        if let Some(id) = id {
            if id as usize >= vocab {
                return Err(invalid(path, key, &format!("{id} is not below vocab_size {vocab}")));
            }
        }
    }
    if head == Head::Score {
        let labels = match (map.get("num_labels"), map.get("id2label")) {
            (Some(n), _) => n.as_u64().ok_or_else(|| invalid(path, "num_labels", &format!("expected an integer, found {}", kind(n))))? as usize,
            (None, Some(Value::Object(m))) => m.len(),
            (None, Some(v)) => return Err(invalid(path, "id2label", &format!("expected an object, found {}", kind(v)))),
            // transformers' default is two labels.
            (None, None) => 2,
        };
        if labels != 1 {
            return Err(invalid(path, "id2label", &format!("the model has {labels} labels; a reward model has one (num_labels = 1)")));
        }
        if pad.is_none() {
            return Err(invalid(path, "pad_token_id", "a sequence-classification model needs one (its score is read at the last token before padding)"));
        }
    }
    let stored_dtype = match (map.get("dtype"), map.get("torch_dtype")) {
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => Some(s.clone()),
        (Some(Value::Null), _) | (None, None | Some(Value::Null)) => None,
        (Some(v), _) => return Err(invalid(path, "dtype", &format!("expected a string, found {}", kind(v)))),
        (None, Some(v)) => return Err(invalid(path, "torch_dtype", &format!("expected a string, found {}", kind(v)))),
    };
    if let Some(d) = &stored_dtype {
        if !["float32", "bfloat16", "float16"].contains(&d.as_str()) {
            return Err(invalid(path, if map.contains_key("dtype") { "dtype" } else { "torch_dtype" }, &format!("{d:?} is not supported (float32, bfloat16 or float16)")));
        }
    }
    for key in map.keys() {
        if !read.contains(&key.as_str()) && !HARMLESS.contains(&key.as_str()) {
            return Err(invalid(
                path,
                key,
                "is not understood by goodhart's Llama/Qwen2 reader; remove it if it does not change the model's computation",
            ));
        }
    }
    Ok(CheckpointConfig {
        architecture,
        family,
        head,
        vocab,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        head_dim,
        rms_eps,
        rope_theta,
        max_positions,
        tied_embeddings,
        qkv_bias,
        o_bias,
        bos,
        eos,
        pad,
        stored_dtype,
    })
}

impl CheckpointConfig {
    /// Parameters of the decoder and its head, as stored (a tied head counted once).
    pub fn params(&self) -> usize {
        let (d, hd) = (self.hidden, self.head_dim);
        let q = self.heads * hd;
        let kv = self.kv_heads * hd;
        let mut attn = d * q + 2 * d * kv + q * d;
        if self.qkv_bias {
            attn += q + 2 * kv;
        }
        if self.o_bias {
            attn += d;
        }
        let mlp = 3 * d * self.intermediate;
        let layer = attn + mlp + 2 * d;
        let head = match self.head {
            Head::CausalLm if self.tied_embeddings => 0,
            Head::CausalLm => self.vocab * d,
            Head::Score => d,
        };
        self.vocab * d + self.layers * layer + d + head
    }
}

struct Reader<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
}

impl Reader<'_> {
    fn architecture(&self) -> Result<String> {
        match self.map.get("architectures") {
            Some(Value::Array(a)) if a.len() == 1 => a[0]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid(self.path, "architectures", &format!("expected a string, found {}", kind(&a[0])))),
            Some(Value::Array(a)) => Err(invalid(self.path, "architectures", &format!("lists {} architectures; goodhart reads a file of one", a.len()))),
            Some(v) => Err(invalid(self.path, "architectures", &format!("expected a list of one name, found {}", kind(v)))),
            None => Err(invalid(self.path, "architectures", "missing (e.g. [\"LlamaForCausalLM\"])")),
        }
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.map.get(key).ok_or_else(|| invalid(self.path, key, "missing"))
    }

    fn string(&self, key: &str) -> Result<String> {
        let v = self.get(key)?;
        v.as_str().map(str::to_string).ok_or_else(|| invalid(self.path, key, &format!("expected a string, found {}", kind(v))))
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    fn positive(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        match v.as_u64() {
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(invalid(self.path, key, &format!("expected a positive integer, found {}", kind(v)))),
        }
    }

    fn optional_positive(&self, key: &str) -> Result<Option<usize>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.positive(key).map(Some),
        }
    }

    fn number(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        v.as_f64().ok_or_else(|| invalid(self.path, key, &format!("expected a number, found {}", kind(v))))
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(invalid(self.path, key, &format!("expected true or false, found {}", kind(v)))),
        }
    }

    fn optional_token(&self, key: &str) -> Result<Option<u32>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => token_id(v).map(Some).ok_or_else(|| invalid(self.path, key, &format!("expected a token id, found {}", kind(v)))),
        }
    }

    /// The rotary base: `rope_theta` (transformers 4) or `rope_parameters.rope_theta`
    /// (transformers 5); both present must agree. Scaled rotary embeddings are refused.
    fn rope_theta(&self) -> Result<f64> {
        let top = match self.map.get("rope_theta") {
            None => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| invalid(self.path, "rope_theta", &format!("expected a number, found {}", kind(v))))?),
        };
        let nested = match self.map.get("rope_parameters") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => {
                for (k, v) in p {
                    match k.as_str() {
                        "rope_theta" => {}
                        "rope_type" | "type" => {
                            if v.as_str() != Some("default") {
                                return Err(invalid(self.path, &format!("rope_parameters.{k}"), &format!("{v} is not supported (only \"default\", an unscaled rotary embedding)")));
                            }
                        }
                        _ => return Err(invalid(self.path, &format!("rope_parameters.{k}"), "is not understood (goodhart runs the unscaled rotary embedding)")),
                    }
                }
                match p.get("rope_theta") {
                    Some(v) => Some(v.as_f64().ok_or_else(|| invalid(self.path, "rope_parameters.rope_theta", &format!("expected a number, found {}", kind(v))))?),
                    None => None,
                }
            }
            Some(v) => return Err(invalid(self.path, "rope_parameters", &format!("expected an object, found {}", kind(v)))),
        };
        match self.map.get("rope_scaling") {
            None | Some(Value::Null) => {}
            Some(Value::Object(s)) if s.get("rope_type").or(s.get("type")).and_then(Value::as_str) == Some("default") => {}
            Some(v) => return Err(invalid(self.path, "rope_scaling", &format!("{v} is not supported (goodhart runs the unscaled rotary embedding)"))),
        }
        let theta = match (top, nested) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(self.path, "rope_parameters.rope_theta", &format!("{b} differs from the top-level rope_theta {a}")));
            }
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => {
                return Err(invalid(
                    self.path,
                    "rope_theta",
                    "missing (neither rope_theta, as transformers 4 writes it, nor rope_parameters.rope_theta, as transformers 5 does); goodhart does not guess the rotary base",
                ))
            }
        };
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(invalid(self.path, "rope_theta", &format!("{theta} is not a positive number")));
        }
        Ok(theta)
    }
}

fn token_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

pub(crate) fn invalid(path: &Path, key: &str, msg: &str) -> Error {
    Error::Invalid {
        path: PathBuf::from(path),
        key: key.to_string(),
        msg: msg.to_string(),
    }
}
