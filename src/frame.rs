//! Reading a table back: a parquet file into a frame, and typed access to its columns,
//! every error one line naming the file and the column. The one reader of the tables the
//! cells and the results folders hold.

use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};

/// A (polars) message on one line.
pub fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a parquet table back as it is, unchecked; a file that does not decode is an
/// [`Error::BadTable`] naming it.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(f).finish().map_err(|e| Error::BadTable {
        path: path.to_path_buf(),
        msg: format!("not a readable parquet table: {}", one_line(&e)),
    })
}

/// Typed access to the columns of a table read back from `path`; errors name the file.
pub struct Columns<'a> {
    pub df: &'a DataFrame,
    pub path: &'a Path,
}

impl Columns<'_> {
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        Error::BadTable {
            path: self.path.to_path_buf(),
            msg: one_line(msg),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.df.column(name).is_ok()
    }

    pub fn cast(&self, name: &str, dtype: &DataType) -> Result<Column> {
        let col = self.df.column(name).map_err(|_| self.error(format!("no column `{name}`")))?;
        col.cast(dtype).map_err(|e| self.error(format!("column `{name}`: {e}")))
    }

    /// A required string column (nulls read as "").
    pub fn str(&self, name: &str) -> Result<Vec<String>> {
        let col = self.cast(name, &DataType::String)?;
        let ca = col.str().map_err(|e| self.error(format!("column `{name}`: {e}")))?;
        Ok(ca.iter().map(|v| v.unwrap_or_default().to_string()).collect())
    }

    /// A required numeric column as f64 (nulls read as NaN).
    pub fn f64(&self, name: &str) -> Result<Vec<f64>> {
        Ok(self.opt_f64(name)?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }

    /// A required nullable numeric column as f64.
    pub fn opt_f64(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let col = self.cast(name, &DataType::Float64)?;
        let ca = col.f64().map_err(|e| self.error(format!("column `{name}`: {e}")))?;
        Ok(ca.iter().collect())
    }

    /// A required nullable unsigned integer column.
    pub fn opt_u64(&self, name: &str) -> Result<Vec<Option<u64>>> {
        let col = self.cast(name, &DataType::UInt64)?;
        let ca = col.u64().map_err(|e| self.error(format!("column `{name}`: {e}")))?;
        Ok(ca.iter().collect())
    }

    /// A required unsigned integer column (nulls read as 0).
    pub fn u64(&self, name: &str) -> Result<Vec<u64>> {
        Ok(self.opt_u64(name)?.into_iter().map(|v| v.unwrap_or(0)).collect())
    }

    /// A column older tables may lack: all null when absent.
    pub fn maybe_f64(&self, name: &str) -> Result<Vec<Option<f64>>> {
        if self.has(name) {
            self.opt_f64(name)
        } else {
            Ok(vec![None; self.df.height()])
        }
    }

    pub fn maybe_u64(&self, name: &str) -> Result<Vec<Option<u64>>> {
        if self.has(name) {
            self.opt_u64(name)
        } else {
            Ok(vec![None; self.df.height()])
        }
    }
}
