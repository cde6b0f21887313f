//! Hugging Face checkpoints: Llama-family (Llama, SmolLM, SmolLM2) and Qwen2-family causal
//! language models and sequence-classification reward models, read from a folder
//! (`config.json`, one or several `*.safetensors`, `tokenizer.json`) and run through ops that
//! all have a backward pass, so that a checkpoint can be trained as well as scored.
//!
//! - [`gguf`]: import of a GGUF file (llama.cpp's format) into such a folder.

pub mod gguf;
