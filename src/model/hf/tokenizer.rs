//! The checkpoint's own tokenizer (`tokenizer.json`, through the `tokenizers` crate), checked
//! against the model: every token id below the config's `vocab_size`, and the config's
//! special tokens present. Text becomes ids here and nowhere else.

use std::path::{Path, PathBuf};

use super::config::{invalid, CheckpointConfig};
use crate::error::Result;

/// A loaded, checked tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("path", &self.path).field("vocab", &self.vocab_size()).finish()
    }
}

impl TextTokenizer {
    /// Loads `path` and checks it against `cfg` (read from `config_path`).
    pub fn load(path: &Path, cfg: &CheckpointConfig, config_path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| invalid(path, "tokenizer", &format!("cannot be read: {}", first_line(&e.to_string()))))?;
        let vocab = inner.get_vocab(true);
        if let Some((token, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if id as usize >= cfg.vocab {
                return Err(invalid(
                    path,
                    "model.vocab",
                    &format!("holds token id {id} ({token:?}), but {}'s vocab_size is {}: not this model's tokenizer", config_path.display(), cfg.vocab),
                ));
            }
        }
        for (key, id) in [("bos_token_id", cfg.bos), ("pad_token_id", cfg.pad)].into_iter().chain(cfg.eos.iter().map(|&e| ("eos_token_id", Some(e)))) {
            if let Some(id) = id {
                if inner.id_to_token(id).is_none() {
                    return Err(invalid(config_path, key, &format!("{id} is not a token of {}", path.display())));
                }
            }
        }
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Tokens of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of `text`, with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| invalid(&self.path, "encode", &format!("{text:?}: {}", first_line(&e.to_string()))))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens kept when `keep_special`).
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> Result<String> {
        self.inner
            .decode(ids, !keep_special)
            .map_err(|e| invalid(&self.path, "decode", &first_line(&e.to_string())))
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

fn first_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
