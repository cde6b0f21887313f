//! `goodhart slurm --submit` on a real Slurm: the tiny experiment's levels as job arrays
//! chained with afterok, then the assembly job; the tables equal one whole run's.
//!
//! Needs a running Slurm (`.ci/slurm.sh` brings up a single node on localhost), so it is
//! ignored by default: CI runs it with `GOODHART_SLURM=1 cargo test --release --test slurm
//! -- --ignored`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn job_state(id: &str) -> Vec<String> {
    let out = Command::new("scontrol").args(["show", "job", id]).output().expect("scontrol runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("JobState=").map(String::from))
        .collect()
}

#[test]
#[ignore = "needs a running Slurm (see .ci/slurm.sh); CI runs it"]
fn slurm_submit_makes_the_plan_and_assembles_the_same_tables_as_one_whole_run() {
    assert_eq!(std::env::var("GOODHART_SLURM").as_deref(), Ok("1"), "set GOODHART_SLURM=1 with a Slurm running");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tiny.toml");
    std::fs::write(&toml, common::TINY).unwrap();
    let t = toml.to_str().unwrap();
    let (ok, _, err) = common::goodhart(&["run", t, "--out", "whole", "--store", "whole-store"], dir.path());
    assert!(ok, "whole run: {err}");

    let (ok, out, err) = common::goodhart(
        &["slurm", t, "--store", "store", "--out", "cluster", "--cpus-per-task", "1", "--time", "00:10:00", "--submit"],
        dir.path(),
    );
    assert!(ok, "goodhart slurm --submit: {err}");
    let ids: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("submitted ").and_then(|r| r.rsplit(' ').next()).map(String::from))
        .collect();
    assert_eq!(ids.len(), 6, "5 level arrays and the assembly: {out}");
    let start = Instant::now();
    loop {
        let q = Command::new("squeue").args(["-h", "-j", &ids.join(",")]).output().expect("squeue runs");
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "Slurm jobs still queued after 300 s: {}", String::from_utf8_lossy(&q.stdout));
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs = dir.path().join("cluster/slurm/logs");
    for id in &ids {
        let states = job_state(id);
        assert!(!states.is_empty() && states.iter().all(|s| s == "COMPLETED"), "job {id}: {states:?}; logs in {}", logs.display());
    }
    let store = dir.path().join("store");
    assert!(common::leftovers(&store).is_empty());
    assert_eq!(common::tables_without_timings(&dir.path().join("cluster")), common::tables_without_timings(&dir.path().join("whole")));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cluster/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["models_trained"].as_array().unwrap().len(), 0, "the assembly job only assembles");
    assert!(Path::new(manifest["store"].as_str().unwrap()).is_absolute());
}
