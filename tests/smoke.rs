//! End to end on a tiny config: every stage runs, tables and manifest are written, a second
//! run trains nothing, a corrupt artifact is caught and retrained, an interrupted run
//! resumes, and results of two configs never share a folder.

mod common;

use std::path::Path;

use goodhart::run::{run, RunOptions, RunSummary};
use goodhart::Experiment;

fn opts(dir: &Path) -> RunOptions {
    common::run_options(dir.join("results/tiny"), dir.join("store"))
}

fn run_tiny(dir: &Path) -> RunSummary {
    run(&common::tiny(), &opts(dir)).expect("tiny run")
}

fn proxy_dirs(store: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("proxy-"))
        .collect();
    v.sort();
    v
}

#[test]
fn tiny_run_writes_tables_manifest_and_resolved_config() {
    let dir = tempfile::tempdir().unwrap();
    let s = run_tiny(dir.path());
    // policy, gold, pairs, 2 proxies, the held-out proxy, best-of-n, and 6 PPO runs
    // (member0, mean, wco × β ∈ {0, 0.1}).
    assert_eq!(s.trained.len(), 13, "{:?}", s.trained);
    assert!(s.reused.is_empty());
    let out = dir.path().join("results/tiny");
    for f in ["rm.parquet", "rm.csv", "curves.parquet", "curves.csv", "manifest.json", "config.resolved.toml"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let df = goodhart::output::table::read_parquet(&out.join("rm.parquet")).unwrap();
    assert_eq!(df.height(), 4);
    for col in ["model", "role", "params", "train_examples", "label_noise", "member", "val_accuracy", "val_bt_loss_nats"] {
        assert!(df.column(col).is_ok(), "column {col} missing");
    }
    let gold = &s.rows.rm[0];
    assert_eq!(gold.role, "gold");
    // R² = 1 − SSE/SST: negative for a gold worse than its target's mean, so this can fail.
    assert!(gold.distill_r2.is_some_and(|r| r > 0.0 && r <= 1.0), "{:?}", gold.distill_r2);
    assert_eq!(s.rows.rm.iter().filter(|r| r.role == "heldout").count(), 1);
    assert!(s.rows.rm.last().unwrap().model.starts_with("heldout/"));
    for row in &s.rows.rm[1..] {
        assert!(row.role == "proxy" || row.role == "heldout");
        assert!(row.params * 4 <= gold.params);
        assert!((0.0..=1.0).contains(&row.val_accuracy));
        assert!(row.val_bt_loss.is_finite() && row.score_scale > 0.0);
        assert_eq!(row.train_examples, 40);
    }
    // π_ref's samples for one prompt are diverse: a fraction of the 128 repeat, not most.
    assert!(s.rows.duplicate_fraction > 0.0 && s.rows.duplicate_fraction < 0.5, "{}", s.rows.duplicate_fraction);
    // Best-of-n: one ensemble of 2, aggregators member0, member1, mean, wco, uwo(0), uwo(0.5),
    // median, mean_std(1); n ∈ {1, 2, 4, …, 64}: 8 × 7 rows.
    let bon: Vec<_> = s.rows.curves.iter().filter(|r| r.method == "bon").collect();
    assert_eq!(bon.len(), 8 * 7);
    // PPO: 6 runs × checkpoints at updates 0, 2, 4.
    let ppo: Vec<_> = s.rows.curves.iter().filter(|r| r.method == "ppo").collect();
    assert_eq!(ppo.len(), 6 * 3);
    let curves = goodhart::output::table::read_parquet(&out.join("curves.parquet")).unwrap();
    assert_eq!(curves.height(), 56 + 18);
    for col in ["method", "aggregator", "lambda", "n", "kl", "kl_kind", "kl_bound", "kl_exact", "sqrt_kl", "gold", "gold_se", "proxy", "member_0", "member_1", "disagreement", "length", "distinct_ratio", "gold_below_peak", "gold_below_peak_se"] {
        assert!(curves.column(col).is_ok(), "curves column {col} missing");
    }
    assert!(s.rows.curves.iter().all(|r| r.measures.heldout.is_some_and(f64::is_finite)), "held-out proxy scores every point");
    for r in &ppo {
        assert_eq!(r.kl_kind, "ppo_k1");
        assert!(r.n.is_none() && r.kl_bound.is_none() && r.kl_penalty.is_some());
        assert_eq!(r.prompts, 8);
        // Every run starts at π_ref: KL exactly 0, and the same samples (common random numbers).
        if r.step == Some(0) {
            assert_eq!((r.kl, r.kl_k3), (0.0, Some(0.0)));
            assert_eq!(r.gold, ppo[0].gold);
        }
    }
    for p in goodhart::output::plot::figure_paths(&out, "ppo", 0.0) {
        assert!(std::fs::metadata(&p).map(|m| m.len() > 1000).unwrap_or(false), "{} missing or empty", p.display());
    }
    let train = goodhart::output::table::read_parquet(&out.join("ppo_train.parquet")).unwrap();
    assert_eq!(train.height(), 6 * 4);
    for col in ["run", "update", "kl_penalty", "ppo/approx_kl", "ppo/clipfrac", "ppo/entropy", "ppo/value_loss", "ppo/explained_variance"] {
        assert!(train.column(col).is_ok(), "ppo_train column {col} missing");
    }
    for r in &bon {
        assert_eq!(r.kl_kind, "bon_bound");
        assert!(r.kl_exact.unwrap() <= r.kl_bound.unwrap() + 1e-12);
        assert!((r.sqrt_kl * r.sqrt_kl - r.kl).abs() < 1e-9);
    }
    // n = 1 is the pool mean: the same gold for every aggregator.
    let g1: Vec<f64> = s.rows.curves.iter().filter(|r| r.n == Some(1)).map(|r| r.gold).collect();
    assert!(g1.windows(2).all(|w| (w[0] - w[1]).abs() < 1e-9), "{g1:?}");
    for p in goodhart::output::plot::figure_paths(&out, "bon", 0.0) {
        assert!(std::fs::metadata(&p).map(|m| m.len() > 1000).unwrap_or(false), "{} missing or empty", p.display());
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["ppo_runs"].as_array().unwrap().len(), 6);
    assert_eq!(manifest["ppo_failures"].as_array().unwrap().len(), 0);
    for key in ["goodhart_version", "git_commit", "device", "seed", "config_hash", "stage_seconds"] {
        assert!(manifest.get(key).is_some(), "manifest lacks {key}");
    }
    assert_eq!(manifest["seed"], 7);
    // The CPU and the kernels its arithmetic took: the same as this process would take.
    let cpu = &manifest["cpu"];
    let here = goodhart::model::cpu::describe();
    assert_eq!(cpu["arch"], std::env::consts::ARCH);
    assert_eq!(cpu["model"], here.model.as_str());
    assert!(!here.model.is_empty());
    assert_eq!(cpu["kernels"], here.kernels().as_str());
    assert_eq!(cpu["matmul_kernel"], here.matmul);
    let l1 = cpu["caches"]["l1d"]["bytes"].as_u64().unwrap_or(0);
    assert!((4 << 10..=1 << 20).contains(&l1), "{cpu}");
    #[cfg(target_arch = "x86_64")]
    {
        let features: Vec<&str> = cpu["features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(features.contains(&"sse2"), "{cpu}");
        assert_eq!(features.contains(&"avx512f"), std::is_x86_feature_detected!("avx512f"), "{cpu}");
        let gemm = if std::is_x86_feature_detected!("fma") { "avx2+fma" } else { "scalar" };
        assert_eq!(cpu["matmul_kernel"], gemm, "{cpu}");
        assert!(cpu["matmul_k_block"].as_u64().unwrap_or(0) >= 512, "{cpu}");
    }
    if common::device_name() == "cpu" {
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        let title = report.lines().find(|l| l.starts_with("Experiment `")).unwrap_or("");
        assert!(title.contains(&format!("device cpu ({}: {})", here.model, here.kernels())), "{title}");
    }
    let resolved = std::fs::read_to_string(out.join("config.resolved.toml")).unwrap();
    // The resolved config is the input plus the derived `[params]` table, which no input
    // file may set; without it, it is an input that resolves to the same config.
    let err = Experiment::from_toml(&resolved, Path::new("r.toml")).unwrap_err().to_string();
    assert!(err.contains("params") && err.contains("unknown field"), "{err}");
    let input = &resolved[..resolved.find("[params]").expect("resolved config has [params]")];
    let again = Experiment::from_toml(input, Path::new("r.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.config_hash(), common::tiny().config_hash());
    // What the report reads: the resolved config with its `[params]` checked and dropped.
    let read = Experiment::from_resolved(&resolved, Path::new("r.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.config_hash(), common::tiny().config_hash());
    let edited = resolved.replacen("[params]\npolicy = ", "[params]\npolicy = 1", 1);
    let err = Experiment::from_resolved(&edited, Path::new("r.toml")).unwrap_err().to_string();
    assert!(err.contains("r.toml") && err.contains("params"), "{err}");
    assert!(resolved.contains("sft_steps = 20"));
}

#[test]
fn second_run_trains_nothing_and_gives_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let tables = || -> serde_json::Value {
        let text = std::fs::read_to_string(dir.path().join("results/tiny/manifest.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["tables"].clone()
    };
    let first = run_tiny(dir.path());
    let first_tables = tables();
    let second = run_tiny(dir.path());
    assert!(second.trained.is_empty(), "retrained {:?}", second.trained);
    assert_eq!(second.reused.len(), 13);
    assert_eq!(first.rows.rm, second.rows.rm);
    assert_eq!(first.rows.curves, second.rows.curves);
    // Every table written, byte for byte: PPO's training diagnostics and the unit tables
    // among them (the reused cells carry their own make times into `rm`).
    assert_eq!(first_tables.as_object().map(|t| t.len()), Some(10), "{first_tables}");
    assert_eq!(first_tables, tables());
}

#[test]
fn corrupt_artifact_is_detected_quarantined_and_retrained_identically() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_tiny(dir.path());
    let store = dir.path().join("store");
    let victim = proxy_dirs(&store)[0].clone();
    let weights = victim.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    std::fs::write(&weights, bytes).unwrap();
    let second = run_tiny(dir.path());
    assert_eq!(second.trained.len(), 1, "exactly the corrupt proxy is retrained: {:?}", second.trained);
    assert!(store.join(".quarantine").read_dir().unwrap().count() == 1, "corrupt copy kept aside");
    // Same seed, same data: the retrained model is the model that was lost.
    assert_eq!(first.rows.rm.iter().map(|r| (r.val_accuracy, r.score_offset)).collect::<Vec<_>>(),
               second.rows.rm.iter().map(|r| (r.val_accuracy, r.score_offset)).collect::<Vec<_>>());
}

#[test]
fn edited_meta_is_detected_by_its_checksum_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_tiny(dir.path());
    let store = dir.path().join("store");
    let victim = proxy_dirs(&store)[1].clone();
    let meta = victim.join("meta.json");
    // An edit a reader could not tell from a real result: the validation accuracy.
    let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_ne!(m["info"]["val_accuracy"], serde_json::json!(0.99));
    m["info"]["val_accuracy"] = serde_json::json!(0.99);
    std::fs::write(&meta, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let key = victim.file_name().unwrap().to_string_lossy().trim_start_matches("proxy-").to_string();
    let err = goodhart::cell::store::Store::open(&store).unwrap().verify("proxy", &key).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&key) && msg.contains("meta.json") && msg.contains("checksum") && !msg.contains('\n'), "{msg}");
    let second = run_tiny(dir.path());
    assert_eq!(second.trained.len(), 1, "only the edited proxy is made again: {:?}", second.trained);
    assert_eq!(store.join(".quarantine").read_dir().unwrap().count(), 1, "the edited copy is kept aside");
    let measured = |rows: &[goodhart::output::table::RmRow]| -> Vec<(f64, f64, f64)> {
        rows.iter().map(|r| (r.val_accuracy, r.val_bt_loss, r.score_offset)).collect()
    };
    assert_eq!(measured(&first.rows.rm), measured(&second.rows.rm), "the remade proxy is the original, not the edit");
}

#[test]
fn interrupted_run_resumes_with_only_the_missing_models() {
    let dir = tempfile::tempdir().unwrap();
    run_tiny(dir.path());
    let store = dir.path().join("store");
    // A kill mid-save leaves a temporary folder and no finished model.
    let victim = proxy_dirs(&store)[1].clone();
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    std::fs::rename(&victim, store.join(format!(".{name}.tmp-nohost~4194305~0~0"))).unwrap();
    std::fs::remove_dir_all(dir.path().join("results")).unwrap();
    let second = run_tiny(dir.path());
    assert_eq!(second.trained.len(), 1, "{:?}", second.trained);
    assert!(dir.path().join("results/tiny/rm.parquet").is_file());
}

#[test]
fn interrupted_ppo_sweep_resumes_with_only_the_missing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_tiny(dir.path());
    let store = dir.path().join("store");
    let runs: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("ppo-"))
        .collect();
    assert_eq!(runs.len(), 6);
    std::fs::remove_dir_all(&runs[2]).unwrap();
    let second = run_tiny(dir.path());
    assert_eq!(second.trained.len(), 1, "{:?}", second.trained);
    assert!(second.trained[0].starts_with("ppo/"));
    assert_eq!(first.rows.curves, second.rows.curves, "the rerun run is the run that was lost");
}

#[test]
fn results_of_another_config_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    run_tiny(dir.path());
    let other = Experiment::from_toml(&common::tiny_with("seed = 7", "seed = 8"), Path::new("other.toml")).unwrap();
    let err = run(&other, &opts(dir.path())).unwrap_err().to_string();
    assert!(err.contains("different config") && err.contains("results/tiny"), "{err}");
    let mut forced = opts(dir.path());
    forced.force = true;
    run(&other, &forced).expect("--force overwrites");
}

#[test]
fn results_do_not_depend_on_the_number_of_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tiny.toml");
    std::fs::write(&toml, common::TINY).unwrap();
    for jobs in ["1", "2"] {
        let status = std::process::Command::new(common::bin())
            .args(["run", toml.to_str().unwrap(), "--jobs", jobs])
            .args(["--out", &format!("out{jobs}"), "--store", &format!("store{jobs}")])
            .args(["--device", &common::device_name()])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .status()
            .unwrap();
        assert!(status.success(), "--jobs {jobs} failed");
    }
    // Every table (the RM, curve and PPO tables and every report table), byte for byte
    // once the wall-clock column is dropped.
    let one = common::tables_without_timings(&dir.path().join("out1"));
    assert!(one.len() >= 8, "{:?}", one.keys());
    assert_eq!(one, common::tables_without_timings(&dir.path().join("out2")));
}

#[test]
fn a_log_sent_to_a_file_is_plain_text_and_quiet_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tiny.toml");
    std::fs::write(&toml, common::TINY).unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(["run", toml.to_str().unwrap(), "--out", "out", "--store", "store", "--device", &common::device_name()])
            .args(extra)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // stderr is a pipe here, as on a cluster: the log is there, without escape codes.
    let (_, log) = run(&[]);
    assert!(log.contains("INFO") && log.contains("stage: best-of-n"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a log that is not a terminal: {log:?}");
    // --quiet: no log, no bars; the verdict lines still reach stdout.
    let (stdout, log) = run(&["--quiet", "--force"]);
    assert!(log.trim().is_empty(), "--quiet wrote: {log}");
    assert!(stdout.contains("results in"), "{stdout}");
}

#[test]
fn stage_bars_never_run_past_their_length_and_name_their_replicate() {
    // Groups of several cells sized by their makes: two worlds' π_ref and gold, three
    // best-of-n cells per replicate.
    let dir = tempfile::tempdir().unwrap();
    let text = common::tiny_with("seed = 7", "seed = 7\nreplicates = 2\n\n[world]\nper_replicate = true\n").replace("pool = 64", "pool = 64\nprompts_per_cell = 1");
    let exp = Experiment::from_toml(&text, Path::new("t.toml")).unwrap();
    let s = goodhart::run::run(&exp, &common::run_options(dir.path().join("out"), dir.path().join("store"))).unwrap();
    assert!(s.stages.iter().any(|g| g.stage == "gold RM" && g.cells == 2), "{:?}", s.stages);
    assert!(s.stages.iter().any(|g| g.stage == "best-of-n" && g.cells == 3), "{:?}", s.stages);
    for g in &s.stages {
        let (pos, len) = g.progress;
        // Every cell here was made, so every bar ends full: no more and no less.
        assert_eq!(pos, len, "{} (r{:?}): {pos}/{len}", g.stage, g.replicate);
        let per_replicate = ["best-of-n", "PPO"].contains(&g.stage.as_str());
        assert_eq!(g.replicate.is_some(), per_replicate, "{g:?}");
    }
    let r: Vec<Option<usize>> = s.stages.iter().filter(|g| g.stage == "PPO").map(|g| g.replicate).collect();
    assert_eq!(r, [Some(0), Some(1)]);
    // The overall bar ends full: every cell counted once, by its modelled cost.
    let plan = goodhart::plan::Plan::new(&exp);
    let want: u64 = plan.cells.iter().map(|c| (c.cost_cpu_s * 1000.0).round() as u64 + 1).sum();
    assert_eq!(s.progress, (want, want));
    // A second run loads everything: the bar still ends full.
    let again = goodhart::run::run(&exp, &common::run_options(dir.path().join("out"), dir.path().join("store"))).unwrap();
    assert_eq!(again.progress.0, again.progress.1);
}

#[cfg(unix)]
#[test]
fn ctrl_c_says_what_is_kept_and_the_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tiny.toml");
    std::fs::write(&toml, common::TINY).unwrap();
    let cmd = || {
        let mut c = std::process::Command::new(common::bin());
        c.args(["run", toml.to_str().unwrap(), "--out", "out", "--store", "store", "--device", &common::device_name()])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let child = cmd().spawn().unwrap();
    // Interrupt once the first cell (π_ref) is in the store.
    let t = std::time::Instant::now();
    while !std::fs::read_dir(dir.path().join("store")).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("policy-"))).unwrap_or(false) {
        assert!(t.elapsed().as_secs() < 60, "π_ref was never made");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SIGINT, as Ctrl-C sends it.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: every finished cell is kept in the store; run the same command again to resume"), "{err}");
    // Again: π_ref is reused, the rest made, the results written.
    let again = cmd().output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(dir.path().join("out/report.md").is_file());
    assert!(common::leftovers(&dir.path().join("store")).is_empty());
}
