//! `goodhart report` refuses damaged results folders: one tiny run, then copies of its folder
//! each damaged one way (a table rewritten with polars, or its bytes changed). Each must be
//! refused with one line naming the file (and the column and row where there is one), and
//! leave every file of the folder as it was.
//!
//! Rewriting a table changes its checksum, so the cases that test a check on the content
//! either record the new checksum in manifest.json (`rewrite`) or pass `allow_edited`: each
//! case reaches the check it is named after, not the checksum.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use goodhart::output::report::report;
use goodhart::output::table;
use goodhart::run::run;
use polars::prelude::*;
use serde_json::Value;

/// Rows of the tiny run's curve table: 56 best-of-n (rows 0–55), then 18 PPO.
const CURVE_ROWS: usize = 74;
const FIRST_PPO_ROW: usize = 56;
/// Rows of its reward-model table: gold, 2 proxies, the held-out proxy.
const RM_ROWS: usize = 4;

/// What a damaged copy must give.
enum Expect {
    /// An error whose one line contains every one of these.
    Refused(&'static [&'static str]),
    /// A report (the damage is one `allow_edited` accepts).
    Accepted,
}

struct Case {
    name: &'static str,
    /// Damages the results folder it is given.
    damage: fn(&Path),
    allow_edited: bool,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        Case {
            name: "nan_gold",
            damage: |d| edit(d, "curves", |df| set_f64(df, "gold", 17, Some(f64::NAN))),
            allow_edited: false,
            expect: Refused(&["curves.parquet: column gold, row 17: NaN where a finite number is required"]),
        },
        Case {
            name: "inf_kl",
            damage: |d| edit(d, "curves", |df| set_f64(df, "kl", 60, Some(f64::INFINITY))),
            allow_edited: false,
            expect: Refused(&["curves.parquet: column kl, row 60: inf where a finite number is required"]),
        },
        Case {
            name: "empty_gold",
            damage: |d| edit(d, "curves", |df| set_f64(df, "gold", 3, None)),
            allow_edited: false,
            expect: Refused(&["curves.parquet: column gold, row 3: empty (null) where a finite number"]),
        },
        Case {
            name: "nan_gold_se",
            damage: |d| edit(d, "curves", |df| set_f64(df, "gold_se", 40, Some(f64::NAN))),
            allow_edited: true,
            expect: Refused(&["curves.parquet: column gold_se, row 40: NaN"]),
        },
        Case {
            name: "negative_bon_kl",
            damage: |d| edit(d, "curves", |df| set_f64(df, "kl", 9, Some(-0.25))),
            allow_edited: false,
            expect: Refused(&["curves.parquet: column kl, row 9: -0.25 is negative", "best-of-n"]),
        },
        Case {
            name: "unknown_method",
            damage: |d| edit(d, "curves", |df| set_str(df, "method", 2, "kto")),
            allow_edited: true,
            expect: Refused(&["curves.parquet: column method, row 2: unknown method `kto`"]),
        },
        Case {
            name: "gold_as_text",
            damage: |d| {
                edit(d, "curves", |df| {
                    let text = df.column("gold").unwrap().cast(&DataType::String).unwrap();
                    df.with_column(text).unwrap();
                })
            },
            allow_edited: false,
            expect: Refused(&["curves.parquet: column gold: type str where a number is required"]),
        },
        Case {
            name: "duplicated_row",
            damage: |d| edit(d, "curves", |df| *df = df.vstack(&df.slice(5, 1)).unwrap()),
            allow_edited: false,
            expect: Refused(&["curves.parquet: rows 5 and 74 repeat the key (method, ensemble, aggregator"]),
        },
        Case {
            name: "zero_rows",
            damage: |d| edit(d, "curves", |df| *df = df.slice(0, 0)),
            allow_edited: false,
            expect: Refused(&["curves.parquet: no rows"]),
        },
        Case {
            name: "missing_column",
            damage: |d| edit(d, "curves", |df| *df = df.drop("proxy").unwrap()),
            allow_edited: true,
            expect: Refused(&["curves.parquet: no column `proxy`"]),
        },
        Case {
            name: "ppo_row_without_step",
            damage: |d| edit(d, "curves", |df| set_u64(df, "step", FIRST_PPO_ROW + 1, None)),
            allow_edited: false,
            expect: Refused(&["curves.parquet: column step, row 57: empty (null) where a PPO row needs a value"]),
        },
        Case {
            name: "negative_prompts",
            damage: |d| {
                edit(d, "curves", |df| {
                    let mut v: Vec<i64> = vec![8; CURVE_ROWS];
                    v[30] = -1;
                    df.with_column(Column::new("prompts".into(), v)).unwrap();
                })
            },
            allow_edited: false,
            expect: Refused(&["curves.parquet: column prompts, row 30: -1 where a non-negative integer"]),
        },
        Case {
            name: "flipped_byte",
            damage: |d| {
                let path = d.join("curves.parquet");
                let mut bytes = std::fs::read(&path).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                std::fs::write(&path, bytes).unwrap();
            },
            allow_edited: false,
            expect: Refused(&["curves.parquet: changed since the run wrote it", "--allow-edited"]),
        },
        Case {
            name: "edited_table",
            damage: |d| {
                edit_unrecorded(d, "curves", |df| set_f64(df, "gold", 0, Some(0.125)));
            },
            allow_edited: false,
            expect: Refused(&["curves.parquet: changed since the run wrote it"]),
        },
        Case {
            name: "edited_table_allowed",
            damage: |d| {
                edit_unrecorded(d, "curves", |df| set_f64(df, "gold", 0, Some(0.125)));
            },
            allow_edited: true,
            expect: Accepted,
        },
        Case {
            name: "table_not_in_manifest",
            damage: |d| {
                edit_manifest(d, |m| {
                    m["tables"].as_object_mut().unwrap().remove("curves.parquet");
                })
            },
            allow_edited: false,
            expect: Refused(&["curves.parquet: not among the tables manifest.json records"]),
        },
        Case {
            name: "manifest_tables_malformed",
            damage: |d| edit_manifest(d, |m| m["tables"] = Value::from(5)),
            allow_edited: false,
            expect: Refused(&["manifest.json: field `tables` is not an object"]),
        },
        Case {
            name: "missing_rm",
            damage: |d| std::fs::remove_file(d.join("rm.parquet")).unwrap(),
            allow_edited: true,
            expect: Refused(&["rm.parquet: "]),
        },
        Case {
            name: "rm_not_parquet",
            damage: |d| {
                std::fs::write(d.join("rm.parquet"), b"PAR1 not a table").unwrap();
                record(d, &[("rm.parquet".into(), goodhart::cell::store::hash_hex(b"PAR1 not a table"))]);
            },
            allow_edited: false,
            expect: Refused(&["rm.parquet: not a readable parquet table"]),
        },
        Case {
            name: "rm_nan_accuracy",
            damage: |d| edit(d, "rm", |df| set_f64(df, "val_accuracy", 1, Some(f64::NAN))),
            allow_edited: false,
            expect: Refused(&["rm.parquet: column val_accuracy, row 1: NaN where a finite number is required"]),
        },
        Case {
            name: "rm_duplicated_model",
            damage: |d| edit(d, "rm", |df| *df = df.vstack(&df.slice(2, 1)).unwrap()),
            allow_edited: false,
            expect: Refused(&["rm.parquet: rows 2 and 4 repeat the key (model)"]),
        },
    ]
}

#[test]
fn damaged_results_folders_are_refused_and_left_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("results/tiny");
    let opts = common::run_options(tiny.clone(), dir.path().join("store"));
    run(&common::tiny(), &opts).expect("tiny run");
    // The counts the cases' rows rely on, and the manifest's checksum of every table.
    let curves = table::read_parquet(&tiny.join("curves.parquet")).unwrap();
    assert_eq!(curves.height(), CURVE_ROWS);
    let method = curves.column("method").unwrap().str().unwrap();
    assert_eq!(method.get(FIRST_PPO_ROW - 1), Some("bon"));
    assert_eq!(method.get(FIRST_PPO_ROW), Some("ppo"));
    assert_eq!(table::read_parquet(&tiny.join("rm.parquet")).unwrap().height(), RM_ROWS);
    let tables = manifest(&tiny)["tables"].clone();
    for name in ["rm.parquet", "rm.csv", "curves.parquet", "curves.csv", "ppo_train.parquet", "ppo_train.csv"] {
        let bytes = std::fs::read(tiny.join(name)).unwrap();
        assert_eq!(tables[name], goodhart::cell::store::hash_hex(&bytes), "manifest's checksum of {name}");
    }
    // The undamaged folder reports, checksums and all.
    report(&copy(&tiny, &dir.path().join("cases/untouched")), false).expect("untouched folder");

    let cases = cases();
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for case in &cases {
        let folder = copy(&tiny, &dir.path().join("cases").join(case.name));
        (case.damage)(&folder);
        let before = snapshot(&folder);
        let result = report(&folder, case.allow_edited);
        match (&case.expect, result) {
            (Expect::Accepted, Ok(_)) => {}
            (Expect::Accepted, Err(e)) => failures.push(format!("{}: refused: {e}", case.name)),
            (Expect::Refused(_), Ok(_)) => failures.push(format!("{}: reported on damaged input", case.name)),
            (Expect::Refused(parts), Err(e)) => {
                let msg = e.to_string();
                let missing: Vec<&&str> = parts.iter().filter(|p| !msg.contains(**p)).collect();
                if !missing.is_empty() || msg.contains('\n') {
                    failures.push(format!("{}: error {msg:?} lacks {missing:?} or spans lines", case.name));
                }
                if snapshot(&folder) != before {
                    failures.push(format!("{}: refused, but files in the folder changed", case.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A copy of the (flat) results folder `from` at `to`.
fn copy(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

/// Every file in `dir`: its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p.clone(), (std::fs::read(&p).unwrap(), mtime))
        })
        .collect()
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut Value)) {
    let mut m = manifest(dir);
    f(&mut m);
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
}

/// Records `(file name, SHA-256)` in manifest.json's `tables`, as a run would.
fn record(dir: &Path, sums: &[(String, String)]) {
    edit_manifest(dir, |m| {
        for (name, sum) in sums {
            m["tables"][name] = Value::from(sum.as_str());
        }
    });
}

/// Rewrites `STEM.parquet` (and `.csv`) through `f` without recording the new checksum.
fn edit_unrecorded(dir: &Path, stem: &str, f: impl FnOnce(&mut DataFrame)) -> Vec<(String, String)> {
    let mut df = table::read_parquet(&dir.join(format!("{stem}.parquet"))).unwrap();
    f(&mut df);
    table::write(&mut df, dir, stem).unwrap()
}

/// Rewrites `STEM.parquet` (and `.csv`) through `f` and records the new checksums, so that
/// the table passes the checksum and meets the check on its content.
fn edit(dir: &Path, stem: &str, f: impl FnOnce(&mut DataFrame)) {
    let sums = edit_unrecorded(dir, stem, f);
    record(dir, &sums);
}

fn set_f64(df: &mut DataFrame, name: &str, row: usize, v: Option<f64>) {
    let mut values: Vec<Option<f64>> = df.column(name).unwrap().f64().unwrap().iter().collect();
    values[row] = v;
    df.with_column(Column::new(name.into(), values)).unwrap();
}

fn set_u64(df: &mut DataFrame, name: &str, row: usize, v: Option<u64>) {
    let mut values: Vec<Option<u64>> = df.column(name).unwrap().u64().unwrap().iter().collect();
    values[row] = v;
    df.with_column(Column::new(name.into(), values)).unwrap();
}

fn set_str(df: &mut DataFrame, name: &str, row: usize, v: &str) {
    let mut values: Vec<Option<String>> =
        df.column(name).unwrap().str().unwrap().iter().map(|s| s.map(str::to_string)).collect();
    values[row] = Some(v.to_string());
    df.with_column(Column::new(name.into(), values)).unwrap();
}
