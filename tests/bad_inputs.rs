//! Malformed experiment files through the real binary, and random mutations of valid ones
//! through the parser.
//!
//! Every file of `tests/bad_inputs/` (`NNN-short-name.toml`) starts with `# expect: TEXT`,
//! the text its error must contain (the dotted key and what is wrong), and may name the
//! commands to run it through (`# commands: validate run`; default `validate`). Each must
//! exit with status 2 within a second, print exactly one line on stderr, starting `error:`
//! and naming the file, and write nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use goodhart::Experiment;
use proptest::prelude::*;

const CORPUS: &str = "tests/bad_inputs";

struct Case {
    path: PathBuf,
    expect: String,
    commands: Vec<String>,
}

fn corpus() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: first line is not `# expect: …`", path.display()))
                .to_string();
            let commands = text
                .lines()
                .nth(1)
                .and_then(|l| l.strip_prefix("# commands: "))
                .map_or(vec!["validate".to_string()], |c| c.split_whitespace().map(String::from).collect());
            Case { path, expect, commands }
        })
        .collect()
}

#[test]
fn corpus_names_follow_the_pattern_and_cover_at_least_100_cases() {
    let cases = corpus();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    for (i, c) in cases.iter().enumerate() {
        let name = c.path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(&format!("{:03}-", i + 1)), "{name}: expected number {:03}", i + 1);
        assert!(!c.expect.trim().is_empty(), "{name}: empty expectation");
        assert!(c.commands.iter().all(|k| k == "validate" || k == "run"), "{name}: {:?}", c.commands);
    }
    assert!(cases.iter().filter(|c| c.commands.iter().any(|k| k == "run")).count() >= 5);
}

#[test]
fn every_bad_input_exits_2_with_one_line_naming_the_key_and_writes_nothing() {
    let mut failures = Vec::new();
    for case in corpus() {
        let name = case.path.file_name().unwrap().to_str().unwrap().to_string();
        for command in &case.commands {
            let dir = tempfile::tempdir().unwrap();
            std::fs::copy(&case.path, dir.path().join(&name)).unwrap();
            let mut cmd = Command::new(common::bin());
            cmd.current_dir(dir.path()).env("RUST_LOG", "info").arg(command).arg(&name);
            if command == "run" {
                cmd.args(["--store", "store", "--out", "out"]);
            }
            let start = Instant::now();
            let out = cmd.output().unwrap();
            let took = start.elapsed();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            let mut problems = Vec::new();
            if out.status.code() != Some(2) {
                problems.push(format!("exit status {:?}, not 2", out.status.code()));
            }
            if lines.len() != 1 || !lines[0].starts_with("error: ") {
                problems.push(format!("stderr is not one `error:` line: {stderr:?}"));
            }
            if !stderr.contains(&case.expect) {
                problems.push(format!("stderr lacks {:?}: {stderr:?}", case.expect));
            }
            if !stderr.contains(&name) {
                problems.push("stderr does not name the file".to_string());
            }
            if stderr.contains("panicked") {
                problems.push(format!("panicked: {stderr}"));
            }
            if took >= Duration::from_secs(1) {
                problems.push(format!("took {took:?}"));
            }
            let written: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|f| f != &name)
                .collect();
            if !written.is_empty() {
                problems.push(format!("wrote {written:?}"));
            }
            if !problems.is_empty() {
                failures.push(format!("{name} ({command}): {}", problems.join("; ")));
            }
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
}

/// One edit of a line `key = value` of a valid experiment.
#[derive(Debug, Clone)]
enum Mutation {
    Value(usize, String),
    Delete(usize),
    Duplicate(usize),
    Insert(usize, String),
}

/// A TOML value that a valid file could hold in the wrong place: any integer, a huge one,
/// any float (NaN and infinities included), an arbitrary string, or another shape.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0u32..63).prop_map(|k| (1i64 << k).to_string()),
        Just(i64::MAX.to_string()),
        Just("99999999999999999999".to_string()),
        any::<f64>().prop_map(|v| if v.is_nan() {
            "nan".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "inf" } else { "-inf" }.to_string()
        } else {
            format!("{v:e}")
        }),
        (-1.0f64..2.0).prop_map(|v| format!("{v:?}")),
        ".{0,12}".prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "[]", "{}", "true", "[1, 2]", "\"\"", "[0.0, 0.0]", "[\"mean\", \"mean\"]", "-0.0", "[nan]", "1979-05-27", "[[1], [2]]",
            "{ name = \"a/../b\", layers = 1, width = 8, heads = 2 }",
        ])
        .prop_map(String::from),
    ]
}

fn mutation(lines: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0..lines, value()).prop_map(|(i, v)| Mutation::Value(i, v)),
        1 => (0..lines).prop_map(Mutation::Delete),
        1 => (0..lines).prop_map(Mutation::Duplicate),
        1 => (0..lines, "[ -~]{0,20}").prop_map(|(i, s)| Mutation::Insert(i, s)),
    ]
}

fn apply(text: &str, edits: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for m in edits {
        let n = lines.len().max(1);
        match m {
            Mutation::Value(i, v) => {
                let line = &mut lines[i % n];
                if let Some(eq) = line.find(" = ") {
                    *line = format!("{} = {v}", &line[..eq]);
                }
            }
            Mutation::Delete(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Insert(i, s) => lines.insert(i % n, s.clone()),
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_240_611),
        ..ProptestConfig::default()
    })]

    /// Mutated valid experiments: never a panic; either a valid experiment (whose derived
    /// quantities can be computed without a panic) or a one-line error naming the file;
    /// well under a second either way.
    #[test]
    fn mutated_experiments_never_panic_and_err_on_one_line(
        base in prop::sample::select(vec![common::TINY, include_str!("../experiments/quick.toml")]),
        edits in prop::collection::vec(mutation(60), 1..4),
    ) {
        let text = apply(base, &edits);
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| {
            Experiment::from_toml(&text, Path::new("m.toml")).map(|exp| {
                let _ = goodhart::plan::resources::estimate(&exp);
                let _ = goodhart::plan::Plan::new(&exp);
                exp.ppo.run_count(&exp.proxy)
            })
        });
        let took = start.elapsed();
        prop_assert!(took < Duration::from_millis(250), "took {:?} on {:?}", took, text);
        match result {
            Err(_) => prop_assert!(false, "panicked on {:?}", text),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let msg = e.to_string();
                prop_assert!(!msg.contains('\n'), "multi-line error {:?}", msg);
                prop_assert!(msg.starts_with("m.toml"), "error does not name the file: {}", msg);
                prop_assert!(e.exit_code() == 2, "input error with exit code {}: {}", e.exit_code(), msg);
            }
        }
    }
}
