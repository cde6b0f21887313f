//! Experiment configuration: raw `*Spec` structs parsed from TOML (unknown keys rejected),
//! validated once into a resolved [`Experiment`] that the rest of the crate trusts.
//!
//! An experiment file states only what differs from the defaults; the run writes the fully
//! resolved experiment next to its results. The schema is split by domain, each table's spec
//! with its defaults: `[world]` beside the world (`crate::world::WorldSpec`), `[conclusions]`
//! beside the statistics (`crate::stats::claims`), and here [`models`] (`[policy]`,
//! `[reference]`, `[gold]`), [`data`] (`[preferences]`, `[proxy]`), and one file per method
//! ([`bon`], [`ppo`]: its settings, defaults and the section's validation; the experiment
//! is below the methods, so a method's section is here, not in its folder). This file: the experiment as a whole, parsing and
//! the accessors derived from it; [`validate`]: every value checked once; [`fields`]: the
//! checks every section uses ([`limits`], counts, lists, rates); [`locate`]: the dotted key
//! of a parse error.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::TransformerConfig;
pub use crate::world::WorldSpec;
use crate::world::WorldConfig;
pub use crate::stats::claims::{ClaimSelector, ConclusionsSpec};
pub use crate::text::TextSpec;
use locate::{line_col, locate};
pub use fields::limits;

mod bon;
mod daa;
mod data;
pub mod fields;
mod group;
mod locate;
mod models;
mod ppo;
mod validate;

pub use bon::BonSpec;
pub use daa::DaaSpec;
pub use group::GroupSpec;
pub use data::{LabelMode, LabelerBias, PreferenceSpec, PretrainSpec, ProxySizeSpec, ProxySpec, Source};
pub use models::{GoldSpec, PolicySpec, ReferenceSpec};
pub use ppo::PpoSpec;

/// Raw experiment file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Names the results folder `results/NAME/`.
    pub name: String,
    /// The one seed every RNG of the run derives from.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Replicates of the study: each redraws what a conclusion should average over (proxy
    /// initialization, data order and label noise; best-of-n prompts and pools; PPO
    /// seeds and prompts), sharing the world, π_ref, gold, the preference pairs and the
    /// held-out proxy. Replicate 0 draws what a study with one replicate draws, so adding
    /// replicates to a finished study makes only the new ones.
    #[serde(default = "default_replicates")]
    pub replicates: usize,
    #[serde(default)]
    pub world: WorldSpec,
    #[serde(default)]
    pub policy: PolicySpec,
    #[serde(default)]
    pub reference: ReferenceSpec,
    #[serde(default)]
    pub gold: GoldSpec,
    #[serde(default)]
    pub preferences: PreferenceSpec,
    #[serde(default)]
    pub proxy: ProxySpec,
    #[serde(default)]
    pub bon: BonSpec,
    #[serde(default)]
    pub ppo: PpoSpec,
    #[serde(default)]
    pub grpo: GroupSpec,
    #[serde(default)]
    pub rloo: GroupSpec,
    #[serde(default)]
    pub daa: DaaSpec,
    #[serde(default)]
    pub conclusions: ConclusionsSpec,
    /// A study on checkpoints instead of the embedded world (`crate::text`).
    #[serde(default)]
    pub text: Option<TextSpec>,
}

/// The embedded world's proxy sizes each give their shape (a text study's take their
/// trunk's, so the schema lets them out): one missing is named as serde names a missing field.
fn missing_shapes(text: &str, path: &Path) -> Result<()> {
    let Ok(value) = toml::from_str::<toml::Value>(text) else { return Ok(()) };
    let sizes = value.get("proxy").and_then(|p| p.get("sizes")).and_then(|s| s.as_array());
    for (i, size) in sizes.into_iter().flatten().enumerate() {
        for field in ["layers", "width", "heads"] {
            if size.get(field).is_none() {
                return Err(Error::Invalid {
                    path: path.to_path_buf(),
                    key: format!("proxy.sizes[{i}].{field}"),
                    msg: format!("missing field `{field}`"),
                });
            }
        }
    }
    Ok(())
}

fn default_seed() -> u64 {
    1
}

fn default_replicates() -> usize {
    1
}

/// The methods an experiment's sections run, by name: `[bon]`, `[ppo]`, `[grpo]`, `[rloo]`,
/// and `[daa]`'s losses `dpo`, `ipo`, `chipo` — what a primary question's `method` may name.
/// A new method adds its file here, its field to [`ExperimentSpec`] and [`Experiment`], its
/// validate call and its name here (a test holds this list to the registry,
/// `crate::plan::kinds::METHODS`).
pub const METHOD_NAMES: [&str; 7] = ["bon", "ppo", "grpo", "rloo", "dpo", "ipo", "chipo"];

/// The most replicates a study may ask for.
pub const MAX_REPLICATES: usize = 1000;

/// A validated experiment. Everything downstream trusts these values.
#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    pub name: String,
    pub seed: u64,
    pub replicates: usize,
    pub world: WorldSpec,
    pub policy: PolicySpec,
    pub reference: ReferenceSpec,
    pub gold: GoldSpec,
    pub preferences: PreferenceSpec,
    pub proxy: ProxySpec,
    pub bon: BonSpec,
    pub ppo: PpoSpec,
    pub grpo: GroupSpec,
    pub rloo: GroupSpec,
    pub daa: DaaSpec,
    pub conclusions: ConclusionsSpec,
    /// A study on checkpoints: its settings, and the world of text read from them once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextSpec>,
    #[serde(skip)]
    pub text_task: Option<std::sync::Arc<crate::text::TextTask>>,
    /// Parameter counts, resolved from the shapes.
    pub params: ParamCounts,
}


/// Parameter counts of every model the experiment trains.
#[derive(Debug, Clone, Serialize)]
pub struct ParamCounts {
    pub policy: usize,
    pub gold: usize,
    /// One entry per proxy size, in `proxy.sizes` order.
    pub proxies: Vec<(String, usize)>,
}

impl Experiment {
    /// Reads, parses and validates an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Reads a results folder's `config.resolved.toml`: the input with defaults filled in,
    /// then the derived `[params]` table (the last one written, which no input may set).
    /// The table is dropped and recomputed, and must agree with what was written.
    pub fn from_resolved(text: &str, path: &Path) -> Result<Self> {
        let cut = text
            .lines()
            .scan(0usize, |at, line| {
                let start = *at;
                *at += line.len() + 1;
                Some((start, line))
            })
            .find(|(_, line)| line.trim_start().starts_with("[params"))
            .map_or(text.len(), |(start, _)| start.min(text.len()));
        let exp = Self::from_toml(&text[..cut], path)?;
        let full = exp.to_toml();
        let recomputed = full.find("\n[params").map_or("", |i| &full[i + 1..]);
        if cut < text.len() && text[cut..].trim_end() != recomputed.trim_end() {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                key: "params".to_string(),
                msg: "the parameter counts written do not match the settings above them".to_string(),
            });
        }
        Ok(exp)
    }

    /// Parses and validates TOML text; `path` only labels errors. A parse error names the
    /// dotted key it is at (`proxy.sizes[1].width`), found from the error's span.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let spec: ExperimentSpec = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, col) = line_col(text, span.start);
            let (key, msg) = locate(text, span, &e.message().replace('\n', " "));
            Error::Parse {
                path: path.to_path_buf(),
                line,
                col,
                msg: format!("{key}: {msg}"),
            }
        })?;
        if spec.text.is_none() {
            missing_shapes(text, path)?;
        }
        Self::validate(spec, path)
    }

    /// The seed of replicate `r`'s own draws: the experiment's seed for replicate 0 (so a
    /// one-replicate study draws what it always drew), a seed derived from it otherwise.
    pub fn replicate_seed(&self, r: usize) -> u64 {
        if r == 0 {
            self.seed
        } else {
            crate::seed::derive(self.seed, &format!("replicate/{r}"))
        }
    }

    /// The world replicate `r` runs in: its own (`r`) when `world.per_replicate`, else 0.
    pub fn world_index(&self, r: usize) -> usize {
        if self.world.per_replicate {
            r
        } else {
            0
        }
    }

    /// How many worlds the study draws (1, or one per replicate).
    pub fn worlds(&self) -> usize {
        if self.world.per_replicate {
            self.replicates
        } else {
            1
        }
    }

    /// The seed of world `w`'s draws (the labeler's affinity, π_ref, gold, the validation
    /// and held-out proxy's pairs, the reference samples): the experiment's seed for world 0,
    /// one derived from it otherwise.
    pub fn world_seed(&self, w: usize) -> u64 {
        if w == 0 {
            self.seed
        } else {
            crate::seed::derive(self.seed, &format!("world/{w}"))
        }
    }

    /// World `w` (0: replicate 0's, every replicate's unless `world.per_replicate`), drawn
    /// from the `[world]` spec (`self.world`) in its seed. Every world has world 0's shapes
    /// (vocabulary, sequence length).
    pub fn world_config(&self, w: usize) -> WorldConfig {
        match &self.text_task {
            Some(t) => WorldConfig::of_text(t.clone()),
            None => WorldConfig::from_spec(&self.world, self.world_seed(w)),
        }
    }

    /// The world of text of a study on checkpoints.
    pub fn text(&self) -> Option<&crate::text::TextTask> {
        self.text_task.as_deref()
    }

    /// The world's part of a cell recipe: the world's settings without `per_replicate`
    /// (which world a cell reads is in its seed), so replicate 0's cells are the same cells
    /// whether or not the other replicates redraw their worlds.
    pub fn world_recipe(&self) -> serde_json::Value {
        if let Some(t) = &self.text_task {
            // What the checkpoints and the prompt file hold, not where they are.
            let mut v = serde_json::to_value(t.spec()).expect("text spec serializes");
            let o = v.as_object_mut().expect("text spec is a table");
            // The proxies' trunk enters the proxies' own recipes, not the world's.
            for k in ["policy", "prompts", "gold", "proxy_trunk", "proxy_layers"] {
                o.remove(k);
            }
            let mut d = serde_json::to_value(&t.digests).expect("digests serialize");
            d.as_object_mut().expect("digests are a table").remove("trunk");
            o.insert("digests".into(), d);
            return serde_json::json!({ "text": v });
        }
        let mut v = serde_json::to_value(&self.world).expect("world spec serializes");
        v.as_object_mut().expect("world spec is a table").remove("per_replicate");
        v
    }

    /// (layers, width) of gold: the world's shape, or a text study's gold checkpoint's
    /// ((0, 0) for the labeler, which has none).
    pub fn gold_shape(&self) -> (usize, usize) {
        match self.text() {
            Some(t) => t.gold_shape.unwrap_or((0, 0)),
            None => (self.gold.layers, self.gold.width),
        }
    }

    /// (layers, width) of a proxy size: the world's shape, or a text study's trunk's.
    pub fn proxy_shape(&self, size: &ProxySizeSpec) -> (usize, usize) {
        match self.text() {
            Some(t) => (t.trunk_dims.0, t.trunk_dims.1),
            None => (size.layers, size.width),
        }
    }

    /// Parameters of a proxy size (a text study's: its trunk with a head).
    pub fn proxy_params(&self, size: &ProxySizeSpec) -> u64 {
        self.params.proxies.iter().find(|(n, _)| *n == size.name).map_or(0, |(_, n)| *n as u64)
    }

    /// Transformer shape of the reference policy.
    pub fn policy_arch(&self) -> TransformerConfig {
        TransformerConfig::new(&self.world_config(0), self.policy.layers, self.policy.width, self.policy.heads)
    }

    /// Transformer shape of the gold RM.
    pub fn gold_arch(&self) -> TransformerConfig {
        TransformerConfig::new(&self.world_config(0), self.gold.layers, self.gold.width, self.gold.heads)
    }

    /// Transformer shape of one proxy size.
    pub fn proxy_arch(&self, size: &ProxySizeSpec) -> TransformerConfig {
        TransformerConfig::new(&self.world_config(0), size.layers, size.width, size.heads)
    }

    /// The study's first ensemble, the smallest proxies: the first size, the fewest pairs, the
    /// lowest noise (what primary questions without an `ensemble` are about, and what
    /// `proxy.heldout_like` copies). (size, data size, noise).
    pub fn first_ensemble(&self) -> (&ProxySizeSpec, usize, f64) {
        (
            &self.proxy.sizes[0],
            *self.proxy.data_sizes.iter().min().expect("validated non-empty"),
            self.proxy.noise.iter().copied().fold(f64::INFINITY, f64::min),
        )
    }

    /// The resolved experiment as TOML (written next to the results).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("experiment serializes")
    }

    /// Short hash of the resolved experiment; names what a results folder holds.
    pub fn config_hash(&self) -> String {
        crate::digest::hash_hex(self.to_toml().as_bytes())[..16].to_string()
    }

    /// Default results folder for this experiment.
    pub fn default_out(&self) -> PathBuf {
        PathBuf::from("results").join(&self.name)
    }
}
