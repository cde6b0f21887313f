//! Hugging Face checkpoints: Llama-family (Llama, SmolLM, SmolLM2) and Qwen2-family causal
//! language models and sequence-classification reward models, read from a folder
//! (`config.json`, one or several `*.safetensors`, `tokenizer.json`) and run through ops that
//! all have a backward pass, so that a checkpoint can be trained as well as scored.
//!
//! - [`config`]: goodhart's own reader of `config.json` (transformers 4 and 5 files);
//! - [`checkpoint`]: the folder, its weights checked against the config, its digest;
//! - [`decoder`]: the decoder, the language-model head and the score head;
//! - [`tokenizer`]: the checkpoint's tokenizer, checked against the model;
//! - [`policy`]: a causal LM as a policy over text on the world's row layout;
//! - [`reward`]: a reward model over text rows: a score checkpoint, or a trunk and a fresh head;
//! - [`gguf`]: import of a GGUF file (llama.cpp's format) into such a folder.

pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod gguf;
pub mod policy;
pub mod reward;
pub mod tokenizer;

pub use checkpoint::{Checkpoint, Part};
pub use config::{CheckpointConfig, Family, Head};
pub use decoder::{CausalLm, Decoder, Scorer};
pub use policy::{TextLayout, TextPolicy};
pub use reward::{TextReward, Trainable};
pub use tokenizer::TextTokenizer;
