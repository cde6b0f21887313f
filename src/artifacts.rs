//! Content-addressed store of trained models.
//!
//! Each model lives in `ROOT/KIND-KEY/` as `model.safetensors` + `meta.json`, where KEY is a
//! hash of the recipe (config, seeds and the keys of the models it depends on). Writes go
//! to a temporary folder that is renamed into place, so a killed run leaves no half-written
//! model behind; the next run finds the finished ones and reuses them. A model whose files
//! are missing, fail their checksum or do not fit the network is reported, moved to
//! `ROOT/.quarantine/` (never deleted) and trained again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bumped whenever a change makes old artifacts incompatible.
pub const FORMAT: u32 = 5;
const WEIGHTS: &str = "model.safetensors";
const META: &str = "meta.json";

/// Hex SHA-256 of `bytes`.
pub fn hash_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a recipe: a hash of its canonical JSON (object keys sorted) and [`FORMAT`].
pub fn key_of(recipe: &Value) -> String {
    let text = serde_json::to_string(&serde_json::json!({ "format": FORMAT, "recipe": recipe }))
        .expect("recipe serializes");
    hash_hex(text.as_bytes())[..20].to_string()
}

/// What is stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub format: u32,
    pub kind: String,
    pub key: String,
    pub recipe: Value,
    pub params: usize,
    pub weights_sha256: String,
    /// Model-specific results: standardization, metrics, timings.
    pub info: Value,
}

/// A folder of stored models.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of the model `kind`/`key`.
    pub fn dir(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(format!("{kind}-{key}"))
    }

    /// Loads `kind`/`key` into `varmap` (whose variables define the expected shapes).
    /// `Ok(None)`: not stored. `Err(Error::Artifact)`: stored but unusable.
    pub fn load(&self, kind: &str, key: &str, varmap: &mut VarMap) -> Result<Option<Meta>> {
        let dir = self.dir(kind, key);
        if !dir.exists() {
            return Ok(None);
        }
        let bad = |reason: String| Error::Artifact {
            dir: dir.clone(),
            reason,
        };
        let meta_text = fs::read_to_string(dir.join(META)).map_err(|e| bad(format!("{META}: {e}")))?;
        let meta: Meta = serde_json::from_str(&meta_text).map_err(|e| bad(format!("{META}: {e}")))?;
        if meta.format != FORMAT || meta.kind != kind || meta.key != key {
            return Err(bad(format!(
                "{META} describes {}-{} (format {}), expected {kind}-{key} (format {FORMAT})",
                meta.kind, meta.key, meta.format
            )));
        }
        let weights = dir.join(WEIGHTS);
        let bytes = fs::read(&weights).map_err(|e| bad(format!("{WEIGHTS}: {e}")))?;
        let sha = hash_hex(&bytes);
        if sha != meta.weights_sha256 {
            return Err(bad(format!(
                "{WEIGHTS} checksum {} does not match {META} ({})",
                &sha[..12],
                &meta.weights_sha256[..meta.weights_sha256.len().min(12)]
            )));
        }
        varmap
            .load(&weights)
            .map_err(|e| bad(format!("weights do not fit the model: {}", one_line(&e.to_string()))))?;
        let params = crate::model::param_count(varmap);
        if params != meta.params {
            return Err(bad(format!("{} params stored, model has {params}", meta.params)));
        }
        Ok(Some(meta))
    }

    /// Stores `varmap` and its meta atomically under `kind`/`key`, replacing (and
    /// quarantining) whatever was there. Returns the meta as written.
    pub fn save(&self, kind: &str, key: &str, recipe: Value, varmap: &VarMap, info: Value) -> Result<Meta> {
        let dir = self.dir(kind, key);
        let tmp = self.root.join(format!(".tmp-{kind}-{key}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let weights = tmp.join(WEIGHTS);
        varmap.save(&weights).map_err(|e| Error::Artifact {
            dir: tmp.clone(),
            reason: format!("saving weights: {e}"),
        })?;
        let bytes = fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
        let meta = Meta {
            format: FORMAT,
            kind: kind.to_string(),
            key: key.to_string(),
            recipe,
            params: crate::model::param_count(varmap),
            weights_sha256: hash_hex(&bytes),
            info,
        };
        write_synced(&tmp.join(META), serde_json::to_string_pretty(&meta).expect("meta serializes").as_bytes())?;
        fs::File::open(&weights)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&weights, e))?;
        if dir.exists() {
            self.quarantine(&dir)?;
        }
        fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        Ok(meta)
    }

    /// Moves an unusable model folder aside into `ROOT/.quarantine/`.
    pub fn quarantine(&self, dir: &Path) -> Result<PathBuf> {
        let q = self.root.join(".quarantine");
        fs::create_dir_all(&q).map_err(|e| Error::io(&q, e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let target = q.join(format!("{name}-{stamp}"));
        fs::rename(dir, &target).map_err(|e| Error::io(dir, e))?;
        Ok(target)
    }
}

/// Writes `bytes` to `path` atomically: a temporary sibling, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
