//! Hugging Face checkpoints against transformers: the tiny Llama, Qwen2 and Llama
//! sequence-classification fixtures (`tests/fixtures/hf`, made by `scripts/hf-fixtures`,
//! committed with transformers' outputs on them) — logits at every position, greedy decoding
//! with the key/value cache, rewards on a right-padded batch, gradients of every weight, the
//! tokenizer, transformers 4 and 5 configs — and damaged checkpoints refused in one line.
//!
//! Tolerances: logits and rewards within 1e-4 absolute (f32, the same maths in another
//! order; measured differences are about 1e-6); gradient norms within 1e-3 relative.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use goodhart::model::hf::{checkpoint, config, CausalLm, Checkpoint, Part, Scorer};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
}

struct Reference {
    json: Value,
    tensors: HashMap<String, Tensor>,
}

fn reference(name: &str) -> Reference {
    let dir = fixture(name);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    Reference { json, tensors }
}

impl Reference {
    fn ids(&self, key: &str) -> Vec<u32> {
        self.tensors[key].to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap().into_iter().map(|v| v as u32).collect()
    }

    fn prompts(&self) -> usize {
        self.json["prompts"].as_array().unwrap().len()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn lm(name: &str) -> CausalLm {
    Checkpoint::open(&fixture(name)).unwrap().causal_lm(&common::device()).unwrap()
}

fn logits_match(name: &str) {
    let model = lm(name);
    let r = reference(name);
    let dev = common::device();
    let mut worst = 0f32;
    for i in 0..r.prompts() {
        let ids = r.ids(&format!("input_ids.{i}"));
        let input = Tensor::from_slice(&ids, (1, ids.len()), &dev).unwrap();
        let got = model.forward(&input, None).unwrap().squeeze(0).unwrap().to_device(&Device::Cpu).unwrap();
        worst = worst.max(max_abs_diff(&got, &r.tensors[&format!("logits.{i}")]));
    }
    assert!(worst < TOL, "{name}: logits differ from transformers' by up to {worst}");
    // The right-padded batch: real positions only.
    let batch = &r.tensors["batch_ids"];
    let lengths = r.ids("batch_lengths");
    let ids: Vec<u32> = batch.to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|v| v as u32).collect();
    let (b, t) = batch.dims2().unwrap();
    let input = Tensor::from_vec(ids, (b, t), &dev).unwrap();
    let got = model.forward(&input, None).unwrap().to_device(&Device::Cpu).unwrap();
    for (row, &n) in lengths.iter().enumerate() {
        let g = got.get(row).unwrap().narrow(0, 0, n as usize).unwrap();
        let want = r.tensors["batch_logits"].get(row).unwrap().narrow(0, 0, n as usize).unwrap();
        let d = max_abs_diff(&g, &want);
        assert!(d < TOL, "{name}: padded row {row} differs by {d}");
    }
}

#[test]
fn llama_logits_match_transformers() {
    logits_match("llama");
}

#[test]
fn qwen2_logits_match_transformers() {
    logits_match("qwen2");
}

fn greedy_matches(name: &str) {
    let model = lm(name);
    let r = reference(name);
    for (i, g) in r.json["greedy"].as_array().unwrap().iter().enumerate() {
        let prompt: Vec<u32> = serde_json::from_value(g["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(g["new_ids"].clone()).unwrap();
        let got = model.greedy(&prompt, want.len(), &[]).unwrap();
        assert_eq!(got, want, "{name}: greedy decode of prompt {i}");
    }
}

#[test]
fn llama_greedy_decode_matches_transformers() {
    greedy_matches("llama");
}

#[test]
fn qwen2_greedy_decode_matches_transformers() {
    greedy_matches("qwen2");
}

#[test]
fn reward_model_scores_a_padded_batch_like_transformers() {
    let ckpt = Checkpoint::open(&fixture("llama_cls")).unwrap();
    let scorer = ckpt.scorer(&common::device()).unwrap();
    let r = reference("llama_cls");
    let batch = &r.tensors["batch_ids"];
    let (b, t) = batch.dims2().unwrap();
    let ids: Vec<u32> = r.ids_flat("batch_ids");
    let lengths: Vec<usize> = r.ids("batch_lengths").into_iter().map(|v| v as usize).collect();
    let input = Tensor::from_vec(ids, (b, t), &common::device()).unwrap();
    let got = scorer.forward(&input, &lengths).unwrap().to_device(&Device::Cpu).unwrap();
    let d = max_abs_diff(&got, &r.tensors["rewards"]);
    assert!(d < TOL, "rewards differ from transformers' by {d}");
}

impl Reference {
    fn ids_flat(&self, key: &str) -> Vec<u32> {
        self.tensors[key].to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|v| v as u32).collect()
    }
}

/// Every weight gets a gradient, and its norm is transformers'.
fn gradients_match(name: &str, loss: impl Fn(&VarBuilder, &Reference) -> Tensor, part: Part) {
    let ckpt = Checkpoint::open(&fixture(name)).unwrap();
    let dev = common::device();
    let varmap = checkpoint::trainable(ckpt.tensors(part, &dev).unwrap()).unwrap();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let r = reference(name);
    let l = loss(&vb, &r);
    let want_loss = r.json["grad"]["loss"].as_f64().unwrap() as f32;
    let got_loss = l.to_device(&Device::Cpu).unwrap().to_scalar::<f32>().unwrap();
    assert!((got_loss - want_loss).abs() < TOL, "{name}: loss {got_loss}, transformers {want_loss}");
    let grads = l.backward().unwrap();
    let norms = r.json["grad"]["norms"].as_object().unwrap();
    let data = varmap.data().lock().unwrap();
    assert_eq!(data.len(), norms.len(), "{name}: {} variables, transformers lists {}", data.len(), norms.len());
    for (var_name, var) in data.iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: {var_name} received no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_device(&Device::Cpu).unwrap().to_scalar::<f32>().unwrap();
        let want = norms.get(var_name).unwrap_or_else(|| panic!("{name}: transformers has no gradient for {var_name}")).as_f64().unwrap() as f32;
        assert!(norm > 0.0, "{name}: {var_name}'s gradient is zero");
        assert!((norm - want).abs() <= 1e-3 * want.max(1e-6) + 1e-6, "{name}: {var_name}: gradient norm {norm}, transformers {want}");
    }
}

fn lm_loss(name: &str) -> impl Fn(&VarBuilder, &Reference) -> Tensor + '_ {
    move |vb, r| {
        let cfg = config::read(&fixture(name).join("config.json")).unwrap();
        let model = CausalLm::new(&cfg, vb).unwrap();
        let ids = r.ids("input_ids.0");
        let n = ids.len();
        let input = Tensor::from_slice(&ids, (1, n), vb.device()).unwrap();
        let logits = model.forward(&input, None).unwrap().squeeze(0).unwrap().narrow(0, 0, n - 1).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let targets = Tensor::from_slice(&ids[1..], (n - 1, 1), vb.device()).unwrap();
        logp.gather(&targets, 1).unwrap().mean_all().unwrap().neg().unwrap()
    }
}

#[test]
fn llama_gradients_reach_every_weight_and_match_transformers() {
    gradients_match("llama", lm_loss("llama"), Part::CausalLm);
}

#[test]
fn qwen2_gradients_reach_every_weight_and_match_transformers() {
    gradients_match("qwen2", lm_loss("qwen2"), Part::CausalLm);
}

#[test]
fn reward_model_gradients_reach_every_weight_and_match_transformers() {
    gradients_match(
        "llama_cls",
        |vb, r| {
            let cfg = config::read(&fixture("llama_cls").join("config.json")).unwrap();
            let scorer = Scorer::new(&cfg, vb).unwrap();
            let (b, t) = r.tensors["batch_ids"].dims2().unwrap();
            let input = Tensor::from_vec(r.ids_flat("batch_ids"), (b, t), vb.device()).unwrap();
            let lengths: Vec<usize> = r.ids("batch_lengths").into_iter().map(|v| v as usize).collect();
            scorer.forward(&input, &lengths).unwrap().sum_all().unwrap()
        },
        Part::Score,
    );
}

#[test]
fn tokenizer_matches_transformers() {
    for name in ["llama", "qwen2", "llama_cls"] {
        let tok = Checkpoint::open(&fixture(name)).unwrap().tokenizer().unwrap();
        let r = reference(name);
        for e in r.json["tokenizer_encodings"].as_array().unwrap() {
            let text = e["text"].as_str().unwrap();
            let want: Vec<u32> = serde_json::from_value(e["ids"].clone()).unwrap();
            assert_eq!(tok.encode(text).unwrap(), want, "{name}: {text:?}");
            assert_eq!(tok.decode(&want, true).unwrap(), e["decoded"].as_str().unwrap(), "{name}: decode {text:?}");
        }
        for p in r.json["prompts"].as_array().unwrap() {
            let ids: Vec<u32> = serde_json::from_value(p["ids"].clone()).unwrap();
            // The fixture's prompt ids are the bos token followed by the text's tokens.
            assert_eq!(tok.encode(p["text"].as_str().unwrap()).unwrap(), ids[1..].to_vec(), "{name}: prompt");
        }
    }
}

#[test]
fn transformers_4_and_5_configs_read_as_the_same_model() {
    let dir = fixture("configs");
    let v4 = config::read(&dir.join("llama_v4.json")).unwrap();
    let v5 = config::read(&dir.join("llama_v5.json")).unwrap();
    assert_eq!(v4, v5);
    assert_eq!(v4.rope_theta, 100_000.0, "the rotary base is read, not defaulted");
    let q4 = config::read(&dir.join("qwen2_v4.json")).unwrap();
    let q5 = config::read(&dir.join("qwen2_v5.json")).unwrap();
    assert_eq!(q4, q5);
    assert_eq!(q4.rope_theta, 1_000_000.0);
    assert!(q4.tied_embeddings && q4.qkv_bias && !q4.o_bias);
    assert_eq!((v4.heads, v4.kv_heads, v4.head_dim), (4, 2, 16));
    // The fixtures' own files are one of the two styles.
    assert_eq!(config::read(&fixture("llama").join("config.json")).unwrap(), v5);
}

// ---- damaged checkpoints -----------------------------------------------------------------

/// A copy of fixture `name` in a temporary folder.
fn copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    tmp
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn edit_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
}

/// The error of loading `dir` as a causal LM, with its tokenizer: one line, naming `file`
/// and `key`.
fn refused(dir: &Path, file: &str, key: &str) -> String {
    let err = Checkpoint::open(dir)
        .and_then(|c| c.tokenizer().map(|_| c))
        .and_then(|c| c.causal_lm(&Device::Cpu))
        .map(|_| ())
        .expect_err("a damaged checkpoint must be refused")
        .to_string();
    assert!(!err.contains('\n'), "not one line: {err}");
    assert!(err.contains(file), "{err:?} does not name the file {file}");
    assert!(err.contains(key), "{err:?} does not name {key}");
    err
}

#[test]
fn a_missing_weight_is_refused_naming_it() {
    let tmp = copy("llama");
    edit_weights(tmp.path(), |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    let err = refused(tmp.path(), "model.safetensors", "model.layers.1.mlp.up_proj.weight");
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn a_weight_of_the_wrong_shape_is_refused_naming_it() {
    let tmp = copy("qwen2");
    edit_weights(tmp.path(), |t| {
        t.insert("model.layers.0.self_attn.k_proj.bias".into(), Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap());
    });
    let err = refused(tmp.path(), "model.safetensors", "model.layers.0.self_attn.k_proj.bias");
    assert!(err.contains("[7]") && err.contains("[32]"), "{err}");
}

#[test]
fn another_models_weights_are_refused() {
    let tmp = copy("llama");
    // Weights of a three-layer model under a two-layer config.
    edit_weights(tmp.path(), |t| {
        let w = t["model.layers.1.input_layernorm.weight"].clone();
        t.insert("model.layers.2.input_layernorm.weight".into(), w);
    });
    refused(tmp.path(), "model.safetensors", "model.layers.2.input_layernorm.weight");
}

#[test]
fn a_config_key_of_the_wrong_type_is_refused_naming_it() {
    let tmp = copy("llama");
    edit_config(tmp.path(), |c| {
        c.insert("num_hidden_layers".into(), Value::String("2".into()));
    });
    refused(tmp.path(), "config.json", "num_hidden_layers");
    let tmp = copy("llama");
    edit_config(tmp.path(), |c| {
        c.insert("tie_word_embeddings".into(), Value::from(1));
    });
    refused(tmp.path(), "config.json", "tie_word_embeddings");
}

#[test]
fn a_config_without_a_rotary_base_or_with_an_unknown_key_is_refused() {
    let tmp = copy("llama");
    edit_config(tmp.path(), |c| {
        c.remove("rope_parameters");
        c.remove("rope_theta");
    });
    let err = refused(tmp.path(), "config.json", "rope_theta");
    assert!(err.contains("does not guess"), "{err}");
    let tmp = copy("llama");
    edit_config(tmp.path(), |c| {
        c.insert("rope_scaling".into(), serde_json::json!({"rope_type": "llama3", "factor": 8.0}));
    });
    refused(tmp.path(), "config.json", "rope_scaling");
    let tmp = copy("llama");
    edit_config(tmp.path(), |c| {
        c.insert("attn_logit_softcapping".into(), Value::from(50.0));
    });
    refused(tmp.path(), "config.json", "attn_logit_softcapping");
    let tmp = copy("qwen2");
    edit_config(tmp.path(), |c| {
        c.insert("use_sliding_window".into(), Value::Bool(true));
    });
    refused(tmp.path(), "config.json", "use_sliding_window");
}

#[test]
fn a_tokenizer_that_is_not_the_models_is_refused() {
    let tmp = copy("llama");
    // A model of 300 tokens (its embedding cut to match) given the 512-token tokenizer.
    edit_config(tmp.path(), |c| {
        c.insert("vocab_size".into(), Value::from(300));
    });
    edit_weights(tmp.path(), |t| {
        for name in ["model.embed_tokens.weight", "lm_head.weight"] {
            let w = t[name].narrow(0, 0, 300).unwrap();
            t.insert(name.into(), w);
        }
    });
    let err = refused(tmp.path(), "tokenizer.json", "vocab_size");
    assert!(err.contains("not this model's tokenizer"), "{err}");
}

#[test]
fn a_truncated_weight_file_is_refused_naming_it() {
    let tmp = copy("llama");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    refused(tmp.path(), "model.safetensors", "safetensors");
}

#[test]
fn a_folder_without_config_is_not_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Checkpoint::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("not a Hugging Face checkpoint"), "{err}");
}

#[test]
fn a_causal_lm_is_not_a_reward_model_nor_the_reverse() {
    let err = Checkpoint::open(&fixture("llama")).unwrap().scorer(&Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("no score head"), "{err}");
    let err = Checkpoint::open(&fixture("llama_cls")).unwrap().causal_lm(&Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("no language-model head"), "{err}");
    // Any of them is a trunk.
    for name in ["llama", "qwen2", "llama_cls"] {
        Checkpoint::open(&fixture(name)).unwrap().decoder(&Device::Cpu).unwrap();
    }
}

#[test]
fn the_digest_follows_the_files() {
    let a = Checkpoint::open(&fixture("llama")).unwrap().digest().unwrap();
    assert_eq!(a, Checkpoint::open(&fixture("llama")).unwrap().digest().unwrap());
    let tmp = copy("llama");
    assert_eq!(Checkpoint::open(tmp.path()).unwrap().digest().unwrap(), a, "a copy has the same digest");
    edit_weights(tmp.path(), |t| {
        let w = (t["model.norm.weight"].clone() * 1.5).unwrap();
        t.insert("model.norm.weight".into(), w);
    });
    assert_ne!(Checkpoint::open(tmp.path()).unwrap().digest().unwrap(), a);
}

#[test]
fn left_padded_rows_compute_what_they_compute_alone() {
    let dev = common::device();
    for name in ["llama", "qwen2"] {
        let model = lm(name);
        let r = reference(name);
        let pad = model.decoder().pad_id();
        let prompts: Vec<Vec<u32>> = (0..r.prompts()).map(|i| r.ids(&format!("input_ids.{i}"))).collect();
        let t = prompts.iter().map(Vec::len).max().unwrap();
        assert!(prompts.iter().any(|p| p.len() < t), "the fixture's prompts differ in length");
        let rows: Vec<u32> = prompts.iter().flat_map(|p| std::iter::repeat_n(pad, t - p.len()).chain(p.iter().copied())).collect();
        let input = Tensor::from_vec(rows, (prompts.len(), t), &dev).unwrap();
        let got = model.forward(&input, None).unwrap().to_device(&Device::Cpu).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let g = got.get(i).unwrap().narrow(0, t - p.len(), p.len()).unwrap();
            let d = max_abs_diff(&g, &r.tensors[&format!("logits.{i}")]);
            assert!(d < TOL, "{name}: left-padded prompt {i} differs by {d}");
        }
        // Greedy decoding of the padded batch through the cache, rows dropped on the way.
        let greedy = r.json["greedy"].as_array().unwrap();
        let mut cache = model.decoder().cache();
        let mut logits = model.forward(&input, Some(&mut cache)).unwrap();
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        let mut live: Vec<usize> = (0..prompts.len()).collect();
        for step in 0..8 {
            let last = logits.narrow(1, logits.dim(1).unwrap() - 1, 1).unwrap().squeeze(1).unwrap();
            let next: Vec<u32> = last.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap();
            for (j, &row) in live.iter().enumerate() {
                out[row].push(next[j]);
            }
            // Drop the middle row half-way: the cache keeps each row's padding with it.
            let keep: Vec<u32> = if step == 3 { (0..live.len() as u32).filter(|&j| j != 1).collect() } else { (0..live.len() as u32).collect() };
            cache.select_rows(&keep).unwrap();
            live = keep.iter().map(|&j| live[j as usize]).collect();
            let next: Vec<u32> = keep.iter().map(|&j| next[j as usize]).collect();
            logits = model.forward(&Tensor::from_vec(next, (live.len(), 1), &dev).unwrap(), Some(&mut cache)).unwrap();
        }
        for (i, g) in greedy.iter().enumerate() {
            let want: Vec<u32> = serde_json::from_value(g["new_ids"].clone()).unwrap();
            let n = out[i].len();
            assert_eq!(out[i], want[..n].to_vec(), "{name}: padded greedy decode of prompt {i}");
        }
    }
}

/// The Llama fixture written as a llama.cpp file (f32, llama.cpp's tensor names, query and
/// key rows permuted for its rotary kernel, the tokenizer as GGUF metadata) and imported
/// back: the same logits, greedy decode and tokenizer as transformers' on the original.
#[test]
fn a_gguf_file_imports_as_the_model_it_was_written_from() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imported");
    let imported = goodhart::model::hf::gguf::import(&fixture("llama.gguf"), &out).unwrap();
    assert_eq!(imported.architecture, "llama");
    assert_eq!(imported.quantization.keys().map(String::as_str).collect::<Vec<_>>(), ["F32"]);
    let original = Checkpoint::open(&fixture("llama")).unwrap();
    let ckpt = Checkpoint::open(&out).unwrap();
    assert_eq!(ckpt.config().params(), original.config().params());
    assert_eq!(imported.parameters, original.config().params());
    let model = ckpt.causal_lm(&common::device()).unwrap();
    let r = reference("llama");
    let dev = common::device();
    for i in 0..r.prompts() {
        let ids = r.ids(&format!("input_ids.{i}"));
        let input = Tensor::from_slice(&ids, (1, ids.len()), &dev).unwrap();
        let got = model.forward(&input, None).unwrap().squeeze(0).unwrap().to_device(&Device::Cpu).unwrap();
        let d = max_abs_diff(&got, &r.tensors[&format!("logits.{i}")]);
        assert!(d < TOL, "imported gguf: prompt {i} logits differ from transformers' by {d}");
    }
    for g in r.json["greedy"].as_array().unwrap() {
        let prompt: Vec<u32> = serde_json::from_value(g["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(g["new_ids"].clone()).unwrap();
        assert_eq!(model.greedy(&prompt, want.len(), &[]).unwrap(), want, "imported gguf: greedy decode");
    }
    let tok = ckpt.tokenizer().unwrap();
    for e in r.json["tokenizer_encodings"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(e["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "imported gguf tokenizer: {text:?}");
        assert_eq!(tok.decode(&want, true).unwrap(), e["decoded"].as_str().unwrap(), "imported gguf tokenizer: decode {text:?}");
    }
    // A second import into the same folder is refused, and the folder is left as it was.
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let err = goodhart::model::hf::gguf::import(&fixture("llama.gguf"), &out).unwrap_err().to_string();
    assert!(err.contains("already exists") && !err.contains('\n'), "{err}");
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), before);
}

#[test]
fn a_file_that_is_not_gguf_is_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("imported");
    let err = goodhart::model::hf::gguf::import(&fixture("llama/config.json"), &out).unwrap_err().to_string();
    assert!(err.contains("config.json") && !err.contains('\n'), "{err}");
    assert!(!out.exists(), "a failed import left {out:?} behind");
}

/// Any checkpoint against what `scripts/hf-reference` wrote for it (ignored: it needs a
/// checkpoint and a reference on disk). `GOODHART_CHECKPOINT=DIR GOODHART_REFERENCE=OUT
/// cargo test --release --test checkpoints -- --ignored --nocapture`; the tolerance is
/// `GOODHART_REFERENCE_TOL` (default 1e-3: deep models add up float rounding over layers).
#[test]
#[ignore]
fn checkpoint_matches_its_reference() {
    let dir = PathBuf::from(std::env::var("GOODHART_CHECKPOINT").expect("GOODHART_CHECKPOINT: a checkpoint folder"));
    let out = PathBuf::from(std::env::var("GOODHART_REFERENCE").expect("GOODHART_REFERENCE: scripts/hf-reference's output"));
    let tol: f32 = std::env::var("GOODHART_REFERENCE_TOL").map(|s| s.parse().expect("GOODHART_REFERENCE_TOL")).unwrap_or(1e-3);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out.join("reference.json")).unwrap()).unwrap();
    let tensors = candle_core::safetensors::load(out.join("reference.safetensors"), &Device::Cpu).unwrap();
    let r = Reference { json, tensors };
    let ckpt = Checkpoint::open(&dir).unwrap();
    let dev = common::device();
    let tok = ckpt.tokenizer().unwrap();
    let skip = usize::from(r.json["bos_prepended"].as_bool().unwrap());
    for p in r.json["prompts"].as_array().unwrap() {
        let ids: Vec<u32> = serde_json::from_value(p["ids"].clone()).unwrap();
        assert_eq!(tok.encode(p["text"].as_str().unwrap()).unwrap(), ids[skip..].to_vec(), "tokenization of {}", p["text"]);
    }
    for e in r.json["tokenizer_encodings"].as_array().unwrap() {
        let want: Vec<u32> = serde_json::from_value(e["ids"].clone()).unwrap();
        assert_eq!(tok.encode(e["text"].as_str().unwrap()).unwrap(), want, "tokenization of {}", e["text"]);
        assert_eq!(tok.decode(&want, true).unwrap(), e["decoded"].as_str().unwrap(), "decode of {}", e["text"]);
    }
    let mut worst = 0f32;
    if r.tensors.contains_key("rewards") {
        let scorer = ckpt.scorer(&dev).unwrap();
        let batch = &r.tensors["batch_ids"];
        let (b, t) = batch.dims2().unwrap();
        let ids: Vec<u32> = batch.to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1::<i64>().unwrap().into_iter().map(|v| v as u32).collect();
        let lengths: Vec<usize> = r.ids("batch_lengths").into_iter().map(|v| v as usize).collect();
        let got = scorer.forward(&Tensor::from_vec(ids, (b, t), &dev).unwrap(), &lengths).unwrap().to_device(&Device::Cpu).unwrap();
        worst = max_abs_diff(&got, &r.tensors["rewards"]);
    } else {
        let model = ckpt.causal_lm(&dev).unwrap();
        for i in 0..r.prompts() {
            let ids = r.ids(&format!("input_ids.{i}"));
            let input = Tensor::from_slice(&ids, (1, ids.len()), &dev).unwrap();
            let got = model.forward(&input, None).unwrap().squeeze(0).unwrap().to_device(&Device::Cpu).unwrap();
            worst = worst.max(max_abs_diff(&got, &r.tensors[&format!("logits.{i}")]));
        }
        for g in r.json["greedy"].as_array().unwrap() {
            let prompt: Vec<u32> = serde_json::from_value(g["prompt_ids"].clone()).unwrap();
            let want: Vec<u32> = serde_json::from_value(g["new_ids"].clone()).unwrap();
            assert_eq!(model.greedy(&prompt, want.len(), &[]).unwrap(), want, "greedy decode of {prompt:?}");
        }
    }
    println!("{}: largest difference from transformers {worst:.2e} (tolerance {tol:.0e})", dir.display());
    assert!(worst < tol, "differs from transformers by {worst}");
}

/// A checkpoint stored as two shards named by `model.safetensors.index.json` (how
/// transformers saves a large model) runs as the single-file one does; a shard the index
/// names but the folder lacks is refused naming it.
#[test]
fn a_sharded_checkpoint_runs_as_the_single_file_one() {
    let tmp = copy("llama");
    let dir = tmp.path();
    let all = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let mut shards: [HashMap<String, Tensor>; 2] = Default::default();
    let mut map = serde_json::Map::new();
    for (i, (name, t)) in all.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        map.insert(name.clone(), Value::String(file));
        shards[i % 2].insert(name, t);
    }
    for (i, s) in shards.iter().enumerate() {
        candle_core::safetensors::save(s, dir.join(format!("model-0000{}-of-00002.safetensors", i + 1))).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let model = Checkpoint::open(dir).unwrap().causal_lm(&common::device()).unwrap();
    let r = reference("llama");
    let ids = r.ids("input_ids.0");
    let got = model.forward(&Tensor::from_slice(&ids, (1, ids.len()), &common::device()).unwrap(), None).unwrap();
    let d = max_abs_diff(&got.squeeze(0).unwrap().to_device(&Device::Cpu).unwrap(), &r.tensors["logits.0"]);
    assert!(d < TOL, "sharded: logits differ by {d}");
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = Checkpoint::open(dir).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors.index.json") && err.contains("model-00002-of-00002.safetensors"), "{err}");
}
