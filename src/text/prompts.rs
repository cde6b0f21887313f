//! The prompts of a text study, read from a file: JSON lines (one object per line, the
//! prompt a string under `field`) or a parquet table (a string column `field`). Blank lines
//! are skipped and a prompt repeated is kept once (its first occurrence); every error is one
//! line naming the file and the line or column.

use std::path::Path;

use crate::error::{Error, Result};

fn invalid(path: &Path, key: String, msg: String) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        key,
        msg,
    }
}

/// The distinct prompts of `path`, in file order.
pub fn read(path: &Path, field: &str) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let all = match ext.as_str() {
        "jsonl" | "json" => read_jsonl(path, field)?,
        "parquet" => read_parquet(path, field)?,
        _ => return Err(invalid(path, "prompts".into(), "expected a .jsonl or .parquet file".into())),
    };
    let mut seen = std::collections::HashSet::new();
    let out: Vec<String> = all.into_iter().filter(|p| seen.insert(p.clone())).collect();
    if out.is_empty() {
        return Err(invalid(path, field.into(), "holds no prompts".into()));
    }
    Ok(out)
}

fn read_jsonl(path: &Path, field: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("line {}", i + 1);
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| invalid(path, at.clone(), format!("not JSON: {e}")))?;
        match value.get(field) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => out.push(s.clone()),
            Some(serde_json::Value::String(_)) => return Err(invalid(path, at, format!("`{field}` is empty"))),
            Some(other) => return Err(invalid(path, at, format!("`{field}` is {other}, not a string"))),
            None => return Err(invalid(path, at, format!("has no `{field}`"))),
        }
    }
    Ok(out)
}

fn read_parquet(path: &Path, field: &str) -> Result<Vec<String>> {
    use polars::prelude::DataType;
    let df = crate::frame::read_parquet(path)?;
    let col = df.column(field).map_err(|_| invalid(path, field.into(), "no such column".into()))?;
    if col.dtype() != &DataType::String {
        return Err(invalid(path, field.into(), format!("is a column of {}, not of strings", col.dtype())));
    }
    let ca = col.str().map_err(|e| invalid(path, field.into(), crate::frame::one_line(e)))?;
    let mut out = Vec::with_capacity(ca.len());
    for (i, v) in ca.iter().enumerate() {
        match v {
            Some(s) if !s.trim().is_empty() => out.push(s.to_string()),
            _ => return Err(invalid(path, format!("{field}[{i}]"), "is empty or null".into())),
        }
    }
    Ok(out)
}
