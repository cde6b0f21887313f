//! What `report` reads, and refuses: `manifest.json` (optional), then `rm.parquet`,
//! `curves.parquet` and, where the run wrote them, `bon_units.parquet` and
//! `ppo_units.parquet`, each compared with the SHA-256 the manifest's `tables` records for it
//! and checked for damage by [`table::read_rm`] and [`table::read_curves`]. Everything is
//! read and checked before the report writes anything.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::cell::store::hash_hex;
use crate::error::{Error, Result};
use crate::output::table::{self, CurveRow, RmRow};

/// The input of a report, checked.
pub(super) struct Inputs {
    pub manifest: Option<Value>,
    pub rm: Vec<RmRow>,
    pub rows: Vec<CurveRow>,
    /// Per-unit curves from `bon_units.parquet` and `ppo_units.parquet`, where present.
    pub units: Vec<crate::stats::conclusions::UnitCurve>,
}

/// Reads and checks the inputs in `dir`. Unless `allow_edited`, a table whose bytes differ
/// from the checksum in manifest.json's `tables` (or that `tables` does not list) is refused;
/// a manifest without `tables` (an older run) checks no checksum.
pub(super) fn read(dir: &Path, allow_edited: bool) -> Result<Inputs> {
    let manifest_path = dir.join("manifest.json");
    let manifest = read_manifest(&manifest_path)?;
    let sums = match manifest.as_ref().and_then(|m| m.get("tables")) {
        Some(tables) if !allow_edited => Some(checksums(tables, &manifest_path)?),
        _ => None,
    };
    let (rm_path, curves_path) = (dir.join("rm.parquet"), dir.join("curves.parquet"));
    if let Some(sums) = &sums {
        verify(&rm_path, sums)?;
        verify(&curves_path, sums)?;
    }
    let mut units = Vec::new();
    for method in crate::plan::kinds::METHODS {
        let table = method.unit_table();
        let path = dir.join(format!("{}.parquet", table.stem));
        if !path.exists() {
            continue;
        }
        if let Some(sums) = &sums {
            verify(&path, sums)?;
        }
        units.extend(crate::output::units::read(&path, method.name(), &table)?);
    }
    Ok(Inputs {
        rm: table::read_rm(&rm_path)?,
        rows: table::read_curves(&curves_path)?,
        manifest,
        units,
    })
}

/// `manifest.json` if present; malformed JSON is an error naming the file.
fn read_manifest(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        col: e.column(),
        msg: format!("manifest is not valid JSON: {e}"),
    })
}

/// The manifest's `tables`: file name → SHA-256 hex.
fn checksums(tables: &Value, manifest: &Path) -> Result<BTreeMap<String, String>> {
    let bad = || Error::BadTable {
        path: manifest.to_path_buf(),
        msg: "field `tables` is not an object of file name → SHA-256 hex".into(),
    };
    tables
        .as_object()
        .ok_or_else(bad)?
        .iter()
        .map(|(name, sum)| Ok((name.clone(), sum.as_str().ok_or_else(bad)?.to_string())))
        .collect()
}

/// Refuses `path` unless its SHA-256 is the one `sums` records under its file name.
fn verify(path: &Path, sums: &BTreeMap<String, String>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let refuse = |msg: String| Error::BadTable {
        path: path.to_path_buf(),
        msg: format!("{msg}; pass --allow-edited to report on it anyway"),
    };
    match sums.get(&name) {
        None => Err(refuse("not among the tables manifest.json records".into())),
        Some(expected) => {
            let found = hash_hex(&bytes);
            if &found == expected {
                Ok(())
            } else {
                Err(refuse(format!(
                    "changed since the run wrote it (SHA-256 {found}, manifest.json records {expected})"
                )))
            }
        }
    }
}
