//! Bad input: every case is a one-line error naming the key or path, a non-zero exit from
//! the binary, and nothing written.

mod common;

use std::path::Path;
use std::process::Command;

use goodhart::Experiment;

fn err_of(text: &str) -> String {
    let e = Experiment::from_toml(text, Path::new("bad.toml")).expect_err("must be rejected");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "error spans lines: {msg:?}");
    assert!(msg.starts_with("bad.toml"), "error does not name the file: {msg}");
    msg
}

#[test]
fn the_tiny_config_and_every_shipped_experiment_are_valid() {
    common::tiny();
    for entry in std::fs::read_dir("experiments").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let msg = err_of(&common::tiny_with("demonstrations = 400", "demonstrations = 400\nlayerz = 3"));
    assert!(msg.contains("layerz"), "{msg}");
    let line = common::TINY.lines().position(|l| l.starts_with("demonstrations")).unwrap() + 2; // 1-based, and the inserted line follows it
    assert!(msg.starts_with(&format!("bad.toml:{line}:")), "{msg}");
}

#[test]
fn wrong_type_is_named() {
    let msg = err_of(&common::tiny_with("members = 2", "members = \"two\""));
    assert!(msg.contains("members") || msg.contains("invalid type"), "{msg}");
}

#[test]
fn zero_layers_is_rejected() {
    let msg = err_of(&common::tiny_with("layers = 1\nwidth = 16", "layers = 0\nwidth = 16"));
    assert!(msg.contains("policy.layers") && msg.contains("at least 1"), "{msg}");
}

#[test]
fn noise_outside_zero_to_half_is_rejected() {
    for bad in ["0.6", "-0.1", "nan"] {
        let msg = err_of(&common::tiny_with("noise = [0.0]", &format!("noise = [0.0, {bad}]")));
        assert!(msg.contains("proxy.noise[1]") && msg.contains("[0, 0.5]"), "{msg}");
    }
}

#[test]
fn empty_ensemble_is_rejected() {
    let msg = err_of(&common::tiny_with("members = 2", "members = 0"));
    assert!(msg.contains("proxy.members"), "{msg}");
}

#[test]
fn gold_not_four_times_the_largest_proxy_is_rejected() {
    let msg = err_of(&common::tiny_with(
        "sizes = [{ name = \"a\", layers = 1, width = 8, heads = 2 }]",
        "sizes = [{ name = \"a\", layers = 1, width = 8, heads = 2 }, { name = \"big\", layers = 1, width = 32, heads = 2 }]",
    ));
    assert!(msg.contains("gold") && msg.contains("'big'") && msg.contains("4x"), "{msg}");
}

#[test]
fn width_not_divisible_by_heads_is_rejected() {
    let msg = err_of(&common::tiny_with("width = 32\nheads = 2", "width = 30\nheads = 4"));
    assert!(msg.contains("gold.heads"), "{msg}");
}

#[test]
fn duplicate_size_names_are_rejected() {
    let msg = err_of(&common::tiny_with(
        "sizes = [{ name = \"a\", layers = 1, width = 8, heads = 2 }]",
        "sizes = [{ name = \"a\", layers = 1, width = 8, heads = 2 }, { name = \"a\", layers = 1, width = 4, heads = 2 }]",
    ));
    assert!(msg.contains("proxy.sizes[1].name"), "{msg}");
}

#[test]
fn unreadable_file_is_named() {
    let e = Experiment::load(Path::new("no/such/experiment.toml")).unwrap_err().to_string();
    assert!(e.starts_with("no/such/experiment.toml:"), "{e}");
}

fn goodhart(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_goodhart")).args(args).current_dir(cwd).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn binary_exits_non_zero_with_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, common::tiny_with("members = 2", "members = 0")).unwrap();
    for cmd in ["run", "validate"] {
        let (ok, _, err) = goodhart(&[cmd, bad.to_str().unwrap()], dir.path());
        assert!(!ok, "{cmd} accepted a bad config");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains("proxy.members"), "{err}");
    }
    let (ok, _, err) = goodhart(&["run", "missing.toml"], dir.path());
    assert!(!ok && err.contains("missing.toml"), "{err}");
    let (ok, _, err) = goodhart(&["run", bad.to_str().unwrap(), "--device", "tpu"], dir.path());
    assert!(!ok && err.contains("tpu") || err.contains("proxy.members"), "{err}");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("bad.toml")], "something was written");
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [vec!["--help"], vec!["run", "--help"], vec!["validate", "--help"]] {
        let (ok, out, _) = goodhart(&cmd, dir.path());
        assert!(ok && out.contains("Usage"), "{cmd:?}: {out}");
    }
}

#[test]
fn bad_best_of_n_values_are_named() {
    let msg = err_of(&common::tiny_with("uwo_lambdas = [0.0, 0.5]", "uwo_lambdas = [0.5, -1.0]"));
    assert!(msg.contains("bon.uwo_lambdas[1]") && msg.contains("λ ≥ 0"), "{msg}");
    let msg = err_of(&common::tiny_with("pool = 64", "pool = 1"));
    assert!(msg.contains("bon.pool") && msg.contains("at least 2"), "{msg}");
    let msg = err_of(&common::tiny_with("prompts = 3", "prompts = 0"));
    assert!(msg.contains("bon.prompts"), "{msg}");
}

#[test]
fn bad_ppo_values_are_named() {
    let msg = err_of(&common::tiny_with("updates = 4", "updates = 4\nsizes = [\"zz\"]"));
    assert!(msg.contains("ppo.sizes[0]") && msg.contains("zz"), "{msg}");
    let msg = err_of(&common::tiny_with("updates = 4", "updates = 4\ndata_sizes = [41]"));
    assert!(msg.contains("ppo.data_sizes[0]") && msg.contains("41"), "{msg}");
    let msg = err_of(&common::tiny_with("aggregators = [\"mean\", \"wco\"]", "aggregators = [\"mean\", \"wc0\"]"));
    assert!(msg.contains("ppo.aggregators[1]") && msg.contains("wc0"), "{msg}");
    let msg = err_of(&common::tiny_with("minibatch = 4", "minibatch = 9"));
    assert!(msg.contains("ppo.minibatch") && msg.contains("ppo.rollout"), "{msg}");
    let msg = err_of(&common::tiny_with("kl_penalties = [0.0, 0.1]", "kl_penalties = [0.0, -0.1]"));
    assert!(msg.contains("ppo.kl_penalties[1]"), "{msg}");
    let msg = err_of(&common::tiny_with("kl_penalties = [0.0, 0.1]", "kl_penalties = []"));
    assert!(msg.contains("ppo.kl_penalties"), "{msg}");
    let msg = err_of(&common::tiny_with("updates = 4", "updates = 4\nkl_budget = 0.0"));
    assert!(msg.contains("ppo.kl_budget"), "{msg}");
    let msg = err_of(&common::tiny_with("updates = 4", "updates = 4\nclip = 1.5"));
    assert!(msg.contains("ppo.clip"), "{msg}");
    let msg = err_of(&common::tiny_with("updates = 4", "updates = 4\nsingle_members = 3"));
    assert!(msg.contains("ppo.single_members") && msg.contains("proxy.members (2)"), "{msg}");
}
