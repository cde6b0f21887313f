//! A world of text: a study on checkpoints a user has on disk. π_ref is a causal-LM
//! checkpoint, prompts come from a file, gold is a reward-model checkpoint or the
//! programmatic [`labeler`], and proxies are a trunk checkpoint with a fresh scalar head.
//! [`TextTask`] implements [`crate::world::TextWorld`], so every cell that samples, encodes
//! and scores reads it through the world's interface.
//!
//! - [`prompts`]: the prompt file (JSON lines or parquet);
//! - [`labeler`]: the programmatic gold, a stated stand-in.
//!
//! Prompts: each prompt's text is put into `template`, tokenized by the policy's tokenizer
//! (its bos token first where it has one and `bos` is on) and left-padded to `prompt_tokens`
//! positions; a prompt that does not fit is dropped, and the count said. The prompts are
//! cut into the world's disjoint splits by a hash of their tokens ([`crate::world::Split`]),
//! so no prompt serves two uses.

pub mod labeler;
pub mod prompts;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::hf::{Checkpoint, Head, TextLayout, TextTokenizer};
use crate::world::{Response, Split, TextWorld};
pub use labeler::{Labeler, LabelerSpec};

/// The `[text]` table: a study on checkpoints. Paths are relative to the directory goodhart
/// runs in.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// The policy checkpoint (a causal LM folder): π_ref.
    pub policy: PathBuf,
    /// The prompt file: `.jsonl` (objects with a string under `prompt_field`) or `.parquet`
    /// (a string column `prompt_field`).
    pub prompts: PathBuf,
    #[serde(default = "default_field")]
    pub prompt_field: String,
    /// The text a prompt is put into before tokenization; `{prompt}` marks where (a chat
    /// template, for an instruction-tuned model).
    #[serde(default = "default_template")]
    pub template: String,
    /// Start every prompt with the checkpoint's bos token, where it has one.
    #[serde(default = "yes")]
    pub bos: bool,
    /// Prompt positions: longer prompts are dropped.
    #[serde(default = "default_prompt_tokens")]
    pub prompt_tokens: usize,
    /// Response positions, the stop token included.
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    /// Tokens that end a response besides the checkpoint's end-of-sequence ids (each must be
    /// one token of its vocabulary).
    #[serde(default)]
    pub stop: Vec<String>,
    /// π_ref's sampling temperature: π_ref is the checkpoint at this temperature, and the
    /// optimized policies start from it (1: the checkpoint as it is).
    #[serde(default = "one")]
    pub temperature: f64,
    /// The gold reward model: a sequence-classification checkpoint; unset, the programmatic
    /// labeler (`[text.labeler]`).
    #[serde(default)]
    pub gold: Option<PathBuf>,
    #[serde(default)]
    pub labeler: LabelerSpec,
    /// The checkpoint proxies are fine-tuned from (its decoder and a fresh head); unset, the
    /// policy's.
    #[serde(default)]
    pub proxy_trunk: Option<PathBuf>,
    /// Train only the top this many layers of a proxy's trunk (and its final norm and head);
    /// unset, every weight.
    #[serde(default)]
    pub proxy_layers: Option<usize>,
}

fn default_field() -> String {
    "prompt".into()
}
fn default_template() -> String {
    "{prompt}".into()
}
fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_prompt_tokens() -> usize {
    32
}
fn default_new_tokens() -> usize {
    24
}

/// One prompt: its text and its row prefix.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub text: String,
    pub prefix: Vec<u32>,
}

/// A world of text, read and checked once.
#[derive(Debug)]
pub struct TextTask {
    spec: TextSpec,
    layout: TextLayout,
    pad: u32,
    vocab: usize,
    tokenizer: TextTokenizer,
    prompts: Vec<Prompt>,
    by_split: Vec<Vec<usize>>,
    index: HashMap<Vec<u32>, usize>,
    labeler: Labeler,
    /// Prompts of the file that did not fit `prompt_tokens` (dropped).
    pub dropped: usize,
    /// Digests of what the study's cells are made from: the policy, gold and trunk
    /// checkpoints and the prompt file.
    pub digests: Digests,
    /// (layers, width) of the gold checkpoint (none: the labeler); (layers, width, heads) of
    /// the policy and of the trunk.
    pub gold_shape: Option<(usize, usize)>,
    pub policy_dims: (usize, usize, usize),
    pub trunk_dims: (usize, usize, usize),
}

/// What a text study's cells key on besides its settings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Digests {
    pub policy: String,
    pub gold: Option<String>,
    pub trunk: String,
    pub prompts: String,
}

fn invalid(path: &Path, key: &str, msg: String) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        msg,
    }
}

impl TextTask {
    /// Reads the checkpoints' configs and tokenizer and the prompt file named by `spec` (of
    /// the experiment file `file`, for errors), checks them, and lays the prompts out.
    pub fn open(spec: &TextSpec, seed: u64, file: &Path) -> Result<Self> {
        let policy = Checkpoint::open(&spec.policy)?;
        if policy.config().head != Head::CausalLm {
            return Err(invalid(file, "text.policy", format!("{} is a {}, not a causal language model", spec.policy.display(), policy.config().architecture)));
        }
        let tokenizer = policy.tokenizer()?;
        let cfg = policy.config();
        if let Err((key, msg)) = spec.labeler.check() {
            return Err(invalid(file, &format!("text.labeler.{key}"), msg));
        }
        if !spec.template.contains("{prompt}") {
            return Err(invalid(file, "text.template", "has no {prompt}".into()));
        }
        if spec.prompt_tokens == 0 || spec.max_new_tokens == 0 {
            return Err(invalid(file, "text.prompt_tokens", "prompt_tokens and max_new_tokens must be at least 1".into()));
        }
        if spec.prompt_tokens + spec.max_new_tokens > cfg.max_positions {
            return Err(invalid(
                file,
                "text.max_new_tokens",
                format!("prompt_tokens + max_new_tokens = {} is more than the policy's max_position_embeddings {}", spec.prompt_tokens + spec.max_new_tokens, cfg.max_positions),
            ));
        }
        let mut stop = cfg.eos.clone();
        for s in &spec.stop {
            match tokenizer.token_id(s) {
                Some(id) => stop.push(id),
                None => return Err(invalid(file, "text.stop", format!("{s:?} is not one token of {}'s vocabulary", spec.policy.display()))),
            }
        }
        stop.sort_unstable();
        stop.dedup();
        if stop.is_empty() {
            return Err(invalid(file, "text.stop", format!("{} names no eos_token_id: give the tokens that end a response", spec.policy.display())));
        }
        let mut gold_shape = None;
        let gold = match &spec.gold {
            Some(dir) => {
                let g = Checkpoint::open(dir)?;
                if g.config().head != Head::Score {
                    return Err(invalid(file, "text.gold", format!("{} is a {}, not a sequence-classification reward model", dir.display(), g.config().architecture)));
                }
                let gt = g.tokenizer()?;
                same_tokenizer(&tokenizer, &gt, file, "text.gold")?;
                gold_shape = Some((g.config().layers, g.config().hidden));
                Some(g.digest()?)
            }
            None => None,
        };
        let policy_digest = policy.digest()?;
        let mut trunk_dims = (cfg.layers, cfg.hidden, cfg.heads);
        let trunk = match &spec.proxy_trunk {
            Some(dir) => {
                let t = Checkpoint::open(dir)?;
                trunk_dims = (t.config().layers, t.config().hidden, t.config().heads);
                same_tokenizer(&tokenizer, &t.tokenizer()?, file, "text.proxy_trunk")?;
                if let Some(n) = spec.proxy_layers {
                    check_layers(n, t.config().layers, file)?;
                }
                t.digest()?
            }
            None => {
                if let Some(n) = spec.proxy_layers {
                    check_layers(n, cfg.layers, file)?;
                }
                policy_digest.clone()
            }
        };
        if !(spec.temperature.is_finite() && spec.temperature > 0.0 && spec.temperature <= 10.0) {
            return Err(invalid(file, "text.temperature", format!("must be in (0, 10], got {}", spec.temperature)));
        }
        let layout = TextLayout {
            prefix_len: spec.prompt_tokens,
            max_response: spec.max_new_tokens,
            stop,
            temperature: spec.temperature,
        };
        let pad = cfg.vocab as u32;
        let texts = prompts::read(&spec.prompts, &spec.prompt_field)?;
        let (_, prompts_sha) = crate::digest::file_sha256(&spec.prompts)?;
        let bos: Vec<u32> = if spec.bos { cfg.bos.into_iter().collect() } else { Vec::new() };
        let mut prompts = Vec::new();
        let mut dropped = 0;
        for text in texts {
            let mut ids = bos.clone();
            ids.extend(tokenizer.encode(&spec.template.replace("{prompt}", &text))?);
            if ids.is_empty() || ids.len() > layout.prefix_len {
                dropped += 1;
                continue;
            }
            let mut prefix = vec![pad; layout.prefix_len - ids.len()];
            prefix.extend(ids);
            prompts.push(Prompt { text, prefix });
        }
        let mut by_split = vec![Vec::new(); Split::ALL.len()];
        let mut index = HashMap::new();
        for (i, p) in prompts.iter().enumerate() {
            if index.insert(p.prefix.clone(), i).is_none() {
                by_split[Split::of(&p.prefix) as usize].push(i);
            }
        }
        if let Some(empty) = Split::ALL.iter().find(|s| by_split[**s as usize].is_empty()) {
            return Err(invalid(
                &spec.prompts,
                &spec.prompt_field,
                format!(
                    "{} distinct prompts fit {} tokens ({dropped} dropped as longer), too few to give every use its own: the {empty:?} split has none (each use takes about one prompt in {})",
                    index.len(),
                    layout.prefix_len,
                    Split::ALL.len()
                ),
            ));
        }
        Ok(Self {
            spec: spec.clone(),
            layout,
            pad,
            vocab: cfg.vocab,
            tokenizer,
            prompts,
            by_split,
            index,
            labeler: Labeler::new(&spec.labeler, seed),
            dropped,
            digests: Digests {
                policy: policy_digest,
                gold,
                trunk,
                prompts: prompts_sha,
            },
            gold_shape,
            policy_dims: (cfg.layers, cfg.hidden, cfg.heads),
            trunk_dims,
        })
    }

    pub fn spec(&self) -> &TextSpec {
        &self.spec
    }

    pub fn layout(&self) -> &TextLayout {
        &self.layout
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The prompts that fit, and how many fall in each split.
    pub fn prompts(&self) -> &[Prompt] {
        &self.prompts
    }

    pub fn split_sizes(&self) -> Vec<(Split, usize)> {
        Split::ALL.iter().map(|&s| (s, self.by_split[s as usize].len())).collect()
    }

    /// The prompt whose prefix is `prefix`.
    pub fn prompt_of(&self, prefix: &[u32]) -> Option<&Prompt> {
        self.index.get(prefix).map(|&i| &self.prompts[i])
    }

    /// A response's text (its stop token left out).
    pub fn response_text(&self, response: &Response) -> String {
        let n = response.tokens.len() - usize::from(response.finished);
        self.tokenizer.decode(&response.tokens[..n], false).unwrap_or_default()
    }

    pub fn labeler(&self) -> &Labeler {
        &self.labeler
    }
}

fn check_layers(n: usize, layers: usize, file: &Path) -> Result<()> {
    if n == 0 || n > layers {
        return Err(invalid(file, "text.proxy_layers", format!("{n}: the trunk has {layers} layers (give 1 to {layers}, or leave it unset to train all)")));
    }
    Ok(())
}

/// Two checkpoints of one study must read the same token ids.
fn same_tokenizer(a: &TextTokenizer, b: &TextTokenizer, file: &Path, key: &str) -> Result<()> {
    let probe = "The quick brown fox, 12345 — café.";
    if a.vocab_size() != b.vocab_size() || a.encode(probe)? != b.encode(probe)? {
        return Err(invalid(file, key, "has another tokenizer than text.policy: a study's checkpoints must share one".into()));
    }
    Ok(())
}

impl TextWorld for TextTask {
    fn prefix_len(&self) -> usize {
        self.layout.prefix_len
    }

    fn max_response(&self) -> usize {
        self.layout.max_response
    }

    fn vocab(&self) -> usize {
        self.vocab
    }

    fn prompt_in(&self, split: Split, rng: &mut dyn rand::RngCore) -> Vec<u32> {
        let ids = &self.by_split[split as usize];
        self.prompts[ids[rng.random_range(0..ids.len())]].prefix.clone()
    }

    fn encode(&self, prompt: &[u32], response: &Response) -> Vec<u32> {
        self.layout.encode(self.pad, prompt, response)
    }

    fn decode_response(&self, seq: &[u32]) -> Response {
        self.layout.decode_response(self.pad, seq)
    }

    fn utility(&self, prompt: &[u32], response: &Response) -> f64 {
        let text = self.prompt_of(prompt).map(|p| p.text.as_str()).unwrap_or("");
        self.labeler.score(text, &self.response_text(response), response.finished)
    }
}
