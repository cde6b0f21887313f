//! Training: what makes the world's models and data, each a kind of cell.
//!
//! - [`optim`]: the optimizer step (AdamW, gradient clipping, data-parallel shards);
//! - [`sft`]: supervised fine-tuning on demonstrations; [`policy`]: π_ref's cell;
//! - [`rm`]: reward-model training: gold distilled from the labeler utility, proxies by
//!   Bradley–Terry on labelled pairs; [`gold`]: gold's cell;
//! - [`pairs`]: the preference pairs of a replicate, labelled by gold, as a cell;
//! - [`proxy`]: the proxy grid, its ensembles, and one proxy RM's cell;
//! - [`trunk`]: the pretrained trunk a proxy of a pretrained source starts from;
//!   [`multihead`]: the multi-head ensemble (one trunk, k heads) as a cell.

pub mod gold;
pub mod multihead;
pub mod optim;
pub mod pairs;
pub mod policy;
pub mod proxy;
pub mod rm;
pub mod sft;
pub mod trunk;
