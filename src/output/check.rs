//! What a table read back must hold before anything is computed from it: rows; each known
//! column of the right type, the required ones present; values where the writer always puts
//! them (no null, no NaN or infinity in a number that must be finite, no negative count);
//! the methods of the registry, each row with what its method needs; a non-negative KL where
//! it is a bound (best-of-n); no key twice.
//!
//! Every failure is one [`Error::BadTable`] naming the file and, where there is one, the
//! column and the row (rows counted from 0, as polars counts them), e.g.
//! `curves.parquet: column gold, row 17: NaN where a finite number is required`.

use std::collections::hash_map::{Entry, HashMap};
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::frame::one_line;
use crate::methods::PointKl;
use crate::plan::kinds::METHODS;

/// What a column's values must be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Text,
    /// A non-negative integer (the writer's `u64`).
    Count,
    /// A finite number.
    Finite,
    /// Any number, NaN included (nothing the report computes reads it).
    Number,
}

/// A known column: its name, what its values must be, whether every table must have it, and
/// whether a value may be missing (null).
#[derive(Debug, Clone, Copy)]
struct Col<'a> {
    name: &'a str,
    need: Need,
    required: bool,
    nullable: bool,
}

const fn col(name: &str, need: Need, required: bool, nullable: bool) -> Col<'_> {
    Col {
        name,
        need,
        required,
        nullable,
    }
}

/// The curve table's columns (see `table::curve_frame`) but the member scores `member_K`
/// (finite where present: a row of a smaller ensemble leaves the last ones null). Required:
/// what `table::read_curves` cannot do without; the others, absent from older tables, are
/// checked where present.
const CURVES: [Col<'static>; 29] = [
    col("method", Need::Text, true, false),
    col("aggregator", Need::Text, true, false),
    col("lambda", Need::Finite, false, true),
    col("proxy_size", Need::Text, true, false),
    col("proxy_params", Need::Count, true, false),
    col("data_size", Need::Count, true, false),
    col("label_noise", Need::Finite, true, false),
    col("ensemble", Need::Text, true, false),
    col("n", Need::Count, false, true),
    col("step", Need::Count, false, true),
    col("kl_penalty", Need::Finite, false, true),
    col("kl", Need::Finite, true, false),
    col("kl_kind", Need::Text, false, false),
    col("kl_k3", Need::Finite, false, true),
    col("kl_bound", Need::Finite, false, true),
    col("kl_exact", Need::Finite, false, true),
    col("sqrt_kl", Need::Finite, false, false),
    col("gold", Need::Finite, true, false),
    col("gold_se", Need::Finite, true, false),
    col("proxy", Need::Finite, true, false),
    col("disagreement", Need::Finite, false, false),
    col("length", Need::Finite, false, false),
    col("distinct_ratio", Need::Finite, false, false),
    col("heldout", Need::Finite, false, true),
    col("gold_below_peak", Need::Finite, false, false),
    col("gold_below_peak_se", Need::Finite, false, false),
    col("prompts", Need::Count, true, false),
    col("pool", Need::Count, false, true),
    col("replicate", Need::Count, false, false),
];

/// The columns identifying a curve point (`n` for best-of-n, `step` for PPO; `replicate`,
/// of any type, where a table has it); those present must not repeat together.
const CURVE_KEY: [&str; 8] = ["method", "ensemble", "aggregator", "lambda", "kl_penalty", "n", "step", "replicate"];

/// The reward-model table's columns (see `table::rm_frame`).
const RM: [Col<'static>; 20] = [
    col("model", Need::Text, true, false),
    col("role", Need::Text, true, false),
    col("size", Need::Text, true, false),
    col("ensemble", Need::Text, true, false),
    col("params", Need::Count, true, false),
    col("layers", Need::Count, false, false),
    col("width", Need::Count, false, false),
    col("train_examples", Need::Count, true, false),
    col("label_noise", Need::Finite, false, true),
    col("member", Need::Count, false, true),
    col("val_pairs", Need::Count, false, false),
    // Empty only for a gold with no labeler to agree with (a text study's checkpoint).
    col("val_accuracy", Need::Finite, true, true),
    col("val_bt_loss_nats", Need::Number, false, false),
    col("gold_distill_r2", Need::Number, false, true),
    col("train_steps", Need::Count, false, false),
    col("train_seconds", Need::Number, false, false),
    col("score_offset", Need::Number, false, false),
    col("score_scale", Need::Number, false, false),
    col("artifact", Need::Text, false, false),
    col("replicate", Need::Count, false, true),
];

/// Checks the curve table read back from `path` (see the module doc).
pub(crate) fn curves(df: &DataFrame, path: &Path) -> Result<()> {
    let t = Table { df, path };
    t.has_rows()?;
    let members: Vec<String> = (0..)
        .map(|j| format!("member_{j}"))
        .take_while(|name| df.column(name).is_ok())
        .collect();
    let cols: Vec<Col> = CURVES
        .iter()
        .copied()
        .chain(members.iter().map(|m| col(m, Need::Finite, false, true)))
        .collect();
    t.columns(&cols)?;
    // The methods of the registry, each with what its rows need: its point column (`n`,
    // `step`), β where its unit table has one, and a KL ≥ 0 where the KL is a function of
    // the point (best-of-n's bound) rather than a measurement.
    let methods: Vec<(&str, crate::methods::UnitTable)> = METHODS.iter().map(|m| (m.name(), m.unit_table())).collect();
    let method = t.text("method")?;
    let mut of_row = Vec::with_capacity(method.len());
    for (i, m) in method.iter().enumerate() {
        match methods.iter().find(|k| k.0 == m) {
            Some(k) => of_row.push(k),
            None => {
                let known: Vec<&str> = methods.iter().map(|k| k.0).collect();
                return Err(t.at("method", i, format!("unknown method `{m}` (known: {})", known.join(", "))));
            }
        }
    }
    let kl = t.numbers("kl")?;
    let mut columns: HashMap<&str, Option<Vec<Option<f64>>>> = HashMap::new();
    for (_, table) in &methods {
        for name in std::iter::once(table.point).chain(table.kl_penalty.then_some("kl_penalty")) {
            if !columns.contains_key(name) {
                columns.insert(name, t.optional(name)?);
            }
        }
    }
    for (i, (m, table)) in of_row.into_iter().enumerate() {
        let what = format!("a {} row", crate::plan::kinds::label(m));
        let needs: Vec<&str> = std::iter::once(table.point).chain(table.kl_penalty.then_some("kl_penalty")).collect();
        for name in needs {
            let values = &columns[name];
            match values {
                None => return Err(t.error(format!("no column `{name}`, which {what} needs"))),
                Some(v) if v[i].is_none() => {
                    return Err(t.at(name, i, format!("empty (null) where {what} needs a value")));
                }
                Some(_) => {}
            }
        }
        let k = kl[i].expect("kl is checked non-null");
        if matches!(table.kl, PointKl::Of(_)) && k < 0.0 {
            return Err(t.at(
                "kl",
                i,
                format!("{k} is negative, but {what}'s KL is a bound of its {} and is ≥ 0", table.point),
            ));
        }
    }
    t.unique(&CURVE_KEY)
}

/// Checks the reward-model table read back from `path` (see the module doc).
pub(crate) fn rm(df: &DataFrame, path: &Path) -> Result<()> {
    let t = Table { df, path };
    t.has_rows()?;
    t.columns(&RM)?;
    t.unique(&["model"])
}

/// A table read back from `path`, and the errors that name it.
struct Table<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl Table<'_> {
    fn error(&self, msg: String) -> Error {
        Error::BadTable {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    fn at(&self, column: &str, row: usize, msg: String) -> Error {
        self.error(format!("column {column}, row {row}: {msg}"))
    }

    fn has_rows(&self) -> Result<()> {
        if self.df.height() == 0 {
            return Err(self.error("no rows".into()));
        }
        Ok(())
    }

    /// Every column of `cols` present has the right type and values; the required are present.
    fn columns(&self, cols: &[Col]) -> Result<()> {
        for c in cols {
            let Ok(column) = self.df.column(c.name) else {
                if c.required {
                    return Err(self.error(format!("no column `{}`", c.name)));
                }
                continue;
            };
            let dtype = column.dtype();
            let (fits, want) = match c.need {
                Need::Text => (matches!(dtype, DataType::String), "text"),
                Need::Count => (dtype.is_integer(), "an integer"),
                Need::Finite | Need::Number => (dtype.is_primitive_numeric(), "a number"),
            };
            if !fits && !matches!(dtype, DataType::Null) {
                return Err(self.error(format!("column {}: type {dtype} where {want} is required", c.name)));
            }
            if c.need == Need::Text {
                if !c.nullable {
                    if let Some(i) = self.text_opt(c.name)?.iter().position(Option::is_none) {
                        return Err(self.at(c.name, i, "empty (null) where text is required".into()));
                    }
                }
                continue;
            }
            for (i, v) in self.numbers(c.name)?.into_iter().enumerate() {
                let what = match c.need {
                    Need::Count => "a non-negative integer",
                    Need::Finite => "a finite number",
                    _ => "a number",
                };
                let bad = match v {
                    None if c.nullable => None,
                    None => Some("empty (null)".to_string()),
                    Some(x) if c.need == Need::Finite && !x.is_finite() => Some(x.to_string()),
                    Some(x) if c.need == Need::Count && x < 0.0 => Some(x.to_string()),
                    Some(_) => None,
                };
                if let Some(bad) = bad {
                    return Err(self.at(c.name, i, format!("{bad} where {what} is required")));
                }
            }
        }
        Ok(())
    }

    /// A column's values as f64 (null stays null); its type is checked numeric.
    fn numbers(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let column = self.df.column(name).map_err(|_| self.error(format!("no column `{name}`")))?;
        let cast = column
            .cast(&DataType::Float64)
            .map_err(|e| self.error(format!("column {name}: {}", one_line(e))))?;
        let ca = cast.f64().map_err(|e| self.error(format!("column {name}: {}", one_line(e))))?;
        Ok(ca.iter().collect())
    }

    /// [`Self::numbers`] of a column older tables may lack: `None` when absent.
    fn optional(&self, name: &str) -> Result<Option<Vec<Option<f64>>>> {
        match self.df.column(name) {
            Ok(_) => self.numbers(name).map(Some),
            Err(_) => Ok(None),
        }
    }

    fn text_opt(&self, name: &str) -> Result<Vec<Option<String>>> {
        let column = self.df.column(name).map_err(|_| self.error(format!("no column `{name}`")))?;
        let cast = column
            .cast(&DataType::String)
            .map_err(|e| self.error(format!("column {name}: {}", one_line(e))))?;
        let ca = cast.str().map_err(|e| self.error(format!("column {name}: {}", one_line(e))))?;
        Ok(ca.iter().map(|v| v.map(str::to_string)).collect())
    }

    /// A text column checked non-null.
    fn text(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.text_opt(name)?.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// No two rows agree on every column of `key` the table has.
    fn unique(&self, key: &[&str]) -> Result<()> {
        let present: Vec<&Column> = key.iter().filter_map(|k| self.df.column(k).ok()).collect();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..self.df.height() {
            let values = present
                .iter()
                .map(|c| c.get(i).map(|v| v.to_string()))
                .collect::<PolarsResult<Vec<String>>>()
                .map_err(|e| self.error(one_line(e)))?
                .join(", ");
            match seen.entry(values) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(first) => {
                    let names: Vec<&str> = present.iter().map(|c| c.name().as_str()).collect();
                    return Err(self.error(format!(
                        "rows {} and {i} repeat the key ({}) = ({})",
                        first.get(),
                        names.join(", "),
                        first.key()
                    )));
                }
            }
        }
        Ok(())
    }
}
