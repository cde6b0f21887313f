//! The cell layer: the plan (every cell once, the right dependencies, keys that cover their
//! config slice), sharded runs equal to a whole run, concurrent runs on one store, a shard
//! killed mid-cell, stale temporaries, a full disk for the store and for the results.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goodhart::plan::{Plan, Shard};
use goodhart::plan::Kind;
use goodhart::Experiment;

fn write_tiny(dir: &Path) -> PathBuf {
    let toml = dir.join("tiny.toml");
    std::fs::write(&toml, common::TINY).unwrap();
    toml
}

fn spawn(args: &[&str], cwd: &Path) -> std::process::Child {
    let device = common::device_name();
    Command::new(common::bin())
        .args(common::with_device(args, &device))
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("goodhart starts")
}

fn finish(child: std::process::Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what} failed: {err}");
    err
}

/// A whole tiny run on a fresh store, the reference every other way must equal.
fn whole(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let toml = write_tiny(dir);
    let (ok, _, err) = common::goodhart(&["run", toml.to_str().unwrap(), "--out", "whole", "--store", "whole-store"], dir);
    assert!(ok, "whole run: {err}");
    common::tables_without_timings(&dir.join("whole"))
}

fn quick() -> Experiment {
    Experiment::load(Path::new("experiments/quick.toml")).unwrap()
}

#[test]
fn quick_plan_lists_every_cell_once_with_its_dependencies() {
    let exp = quick();
    let plan = Plan::new(&exp);
    let ids: Vec<&str> = plan.cells.iter().map(|c| c.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a cell is listed twice: {ids:?}");
    // π_ref, gold, pairs shared; per replicate (12): 2 sizes × 2 data sizes × 5 members,
    // best-of-n in cells of 6 of the 12 prompts, PPO: member 0, mean, wco, uwo(0.1) at β = 0
    // on xs/d500; and each replicate's own held-out proxy.
    assert_eq!(exp.replicates, 12);
    let count = |k: &str| plan.cells.iter().filter(|c| c.kind.name() == k).count();
    assert_eq!(
        [count("policy"), count("gold"), count("pairs"), count("proxy"), count("bon"), count("ppo")],
        [1, 1, 1, 12 * 20 + 12, 12 * 2, 12 * 4]
    );
    let deps = |id: &str| -> Vec<&str> {
        let c = &plan.cells[plan.find(id).unwrap_or_else(|| panic!("no cell {id}"))];
        c.deps.iter().map(|&d| plan.cells[d].id.as_str()).collect()
    };
    assert!(deps("policy").is_empty());
    assert_eq!(deps("gold"), ["policy"]);
    assert_eq!(deps("pairs"), ["policy", "gold"]);
    assert_eq!(deps("proxy/s/d4000/n0.25/k4"), ["policy", "gold", "pairs"]);
    assert_eq!(deps("proxy/s/d4000/n0.25/k4/r11"), ["policy", "gold", "pairs"]);
    assert_eq!(deps("heldout/s/d4000/n0.25"), ["policy", "gold", "pairs"]);
    assert_eq!(deps("heldout/s/d4000/n0.25/r11"), ["policy", "gold", "pairs"]);
    let bon = deps("bon/p6-11/r1");
    assert_eq!(bon.len(), 2 + 20 + 1);
    assert!(bon.contains(&"heldout/s/d4000/n0.25/r1") && bon.contains(&"proxy/s/d4000/n0.25/k1/r1"));
    let members: Vec<String> = (0..5).map(|k| format!("proxy/xs/d500/n0.25/k{k}")).collect();
    let mut want = vec!["policy", "gold"];
    want.extend(members.iter().map(String::as_str));
    want.push("heldout/s/d4000/n0.25");
    assert_eq!(deps("ppo/xs/d500/n0.25/wco/b0"), want);
    assert!(plan.find("ppo/xs/d500/n0.25/wco/b0.1").is_none());
    for (i, c) in plan.cells.iter().enumerate() {
        assert!(c.deps.iter().all(|&d| d < i), "{} comes before a dependency", c.id);
        assert_eq!(c.level, c.deps.iter().map(|&d| plan.cells[d].level + 1).max().unwrap_or(0));
        assert!(c.cost_cpu_s > 0.0 && c.cost_cpu_s.is_finite(), "{}: cost {}", c.id, c.cost_cpu_s);
    }
    assert_eq!(plan.levels(), 5);
}

#[test]
fn keys_cover_their_config_slice_their_dependencies_and_their_code() {
    let base = common::tiny();
    let a = Plan::new(&base);
    let key = |p: &Plan, id: &str| p.cells[p.find(id).unwrap()].key.clone();
    // More best-of-n prompts add best-of-n cells and keep the ones that exist.
    let more_prompts = Experiment::from_toml(&common::tiny_with("prompts = 3", "prompts = 5\nprompts_per_cell = 3"), Path::new("t.toml")).unwrap();
    let m = Plan::new(&more_prompts);
    assert_eq!(key(&m, "bon/p0-2"), key(&a, "bon/p0-2"));
    assert!(m.find("bon/p3-4").is_some());
    // Another best-of-n pool changes only the best-of-n cells.
    let more_pool = Experiment::from_toml(&common::tiny_with("pool = 64", "pool = 128"), Path::new("t.toml")).unwrap();
    let b = Plan::new(&more_pool);
    for c in &a.cells {
        assert_eq!(c.key == key(&b, &c.id), c.kind.get::<goodhart::methods::bon::cell::BonCell>().is_none(), "{}", c.id);
    }
    // Another SFT length changes π_ref and, through the dependency keys, every cell.
    let longer = Experiment::from_toml(&common::tiny_with("sft_steps = 20", "sft_steps = 21"), Path::new("t.toml")).unwrap();
    let c = Plan::new(&longer);
    for cell in &a.cells {
        assert_ne!(cell.key, key(&c, &cell.id), "{}", cell.id);
    }
    // Every recipe names its kind's code version, a hash of the source that makes it.
    for cell in &a.cells {
        let code = cell.recipe["code"].as_str().expect("recipe has a code version");
        assert_eq!(code, cell.kind.spec().code_version());
        assert_eq!(code.len(), 16);
    }
    assert_ne!(Kind::new(goodhart::train::policy::PolicyCell { world: 0 }).spec().code_version(), Kind::new(goodhart::methods::bon::cell::BonCell { replicate: 0, start: 0, end: 1 }).spec().code_version());
}

#[test]
fn shards_split_every_level_without_overlap() {
    let plan = Plan::new(&quick());
    for n in 1..=4 {
        let mut all: Vec<usize> = (0..n).flat_map(|i| plan.shard(Shard { index: i, count: n }, None)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..plan.cells.len()).collect::<Vec<_>>(), "{n} shards");
    }
    let proxies = plan.level(3);
    let per: Vec<usize> = (0..proxies.len()).map(|i| plan.shard(Shard { index: i, count: proxies.len() }, Some(3)).len()).collect();
    assert!(per.iter().all(|&k| k == 1), "one proxy per task of a level-sized array: {per:?}");
    assert!("2/2".parse::<Shard>().is_err() && "0/0".parse::<Shard>().is_err() && "x".parse::<Shard>().is_err());
    assert_eq!("1/3".parse::<Shard>().unwrap(), Shard { index: 1, count: 3 });
}

#[test]
fn two_shards_at_once_then_assembled_equal_one_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let reference = whole(dir.path());
    let toml = write_tiny(dir.path());
    let t = toml.to_str().unwrap();
    let s0 = spawn(&["run", t, "--store", "store", "--shard", "0/2"], dir.path());
    let s1 = spawn(&["run", t, "--store", "store", "--shard", "1/2"], dir.path());
    finish(s0, "shard 0/2");
    finish(s1, "shard 1/2");
    assert!(!dir.path().join("results").exists(), "a shard writes no tables");
    let (ok, stdout, err) = common::goodhart(&["run", t, "--store", "store", "--out", "assembled"], dir.path());
    assert!(ok, "{err}");
    assert!(stdout.contains("0 cells made, 13 reused"), "after the shards, run only assembles: {stdout}");
    assert_eq!(common::tables_without_timings(&dir.path().join("assembled")), reference);
    assert!(common::leftovers(&dir.path().join("store")).is_empty());
}

#[test]
fn two_whole_runs_at_once_on_one_store_make_each_cell_once() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_tiny(dir.path());
    let t = toml.to_str().unwrap();
    let a = spawn(&["run", t, "--store", "store", "--out", "a"], dir.path());
    let b = spawn(&["run", t, "--store", "store", "--out", "b"], dir.path());
    finish(a, "run a");
    finish(b, "run b");
    let made = |out: &str| -> Vec<String> {
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join(out).join("manifest.json")).unwrap()).unwrap();
        m["models_trained"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    let mut both = made("a");
    both.extend(made("b"));
    both.sort();
    let n = both.len();
    both.dedup();
    assert_eq!(n, both.len(), "a cell was made twice: {both:?}");
    assert_eq!(n, 13, "every cell made by one of the two: {both:?}");
    assert!(!dir.path().join("store/.quarantine").exists(), "no good cell quarantined");
    assert_eq!(common::tables_without_timings(&dir.path().join("a")), common::tables_without_timings(&dir.path().join("b")));
    assert!(common::leftovers(&dir.path().join("store")).is_empty());
}

#[test]
fn a_shard_killed_mid_cell_resumes_to_the_same_tables_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let reference = whole(dir.path());
    let toml = write_tiny(dir.path());
    let t = toml.to_str().unwrap();
    let store = dir.path().join("store");
    let mut child = spawn(&["run", t, "--store", "store", "--shard", "0/1"], dir.path());
    // Wait until a cell is being made (its lock or temporary folder exists), then SIGKILL.
    let start = Instant::now();
    let mut caught = false;
    while start.elapsed() < Duration::from_secs(60) {
        if store.is_dir() && !common::leftovers(&store).is_empty() && std::fs::read_dir(&store).unwrap().count() > 2 {
            caught = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(caught, "the shard finished before it could be killed mid-cell");
    assert!(!common::leftovers(&store).is_empty(), "the kill left a lock or temporary behind");
    let (ok, stdout, err) = common::goodhart(&["run", t, "--store", "store", "--out", "resumed"], dir.path());
    assert!(ok, "{err}");
    assert!(!stdout.contains(" 0 cells made"), "the rerun makes what the kill lost: {stdout}");
    assert_eq!(common::tables_without_timings(&dir.path().join("resumed")), reference);
    assert!(common::leftovers(&store).is_empty(), "left: {:?}", common::leftovers(&store));
}

#[test]
fn stale_temporaries_are_removed_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let host = {
        let out = Command::new("hostname").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect::<String>()
    };
    // A dead process of this host (pid above pid_max), one of another host an hour old
    // (kept: a host we cannot see may still be alive), a stale lock of a dead process.
    let dead = store.join(format!(".tmp-proxy-abc-{host}~4194305~00000000000000aa~0"));
    let remote = store.join(".tmp-proxy-def-elsewhere~12~00000000000000bb~0");
    let lock = store.join("gold-123.lock");
    let lock_tmp = store.join(format!(".gold-123.lock.tmp-{host}~4194305~00000000000000dd~0"));
    std::fs::write(&lock_tmp, b"half").unwrap();
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("model.safetensors"), b"half").unwrap();
    std::fs::create_dir_all(&remote).unwrap();
    std::fs::write(&lock, format!("{host} 4194305 00000000000000cc\n")).unwrap();
    goodhart::cell::store::Store::open(&store).unwrap();
    assert!(!dead.exists(), "a dead process's temporary is removed");
    assert!(!lock.exists(), "a dead process's lock is broken");
    assert!(!lock_tmp.exists(), "a dead process's half-written file is removed");
    assert!(remote.exists(), "another host's recent temporary is kept");
    // Older than the limit: removed whoever made it.
    let old = std::time::SystemTime::now() - goodhart::cell::store::STALE_TEMP - Duration::from_secs(60);
    std::fs::File::open(&remote).unwrap().set_modified(old).unwrap();
    goodhart::cell::store::Store::open(&store).unwrap();
    assert!(!remote.exists(), "a temporary older than the limit is removed");
}

/// Mounts a tmpfs of `kib` KiB at `at` (root only). None where mounting is not allowed.
fn small_disk(at: &Path, kib: usize) -> Option<Mount> {
    std::fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs", at.to_str().unwrap()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        assert!(!root, "root could not mount a tmpfs at {}", at.display());
        eprintln!("skipped: mounting a small disk needs root");
        return None;
    }
    Some(Mount(at.to_path_buf()))
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_store_disk_too_small_for_the_estimate_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_tiny(dir.path());
    let Some(_m) = small_disk(&dir.path().join("store"), 64) else { return };
    let (ok, _, err) = common::goodhart(&["run", toml.to_str().unwrap(), "--store", "store", "--out", "out"], dir.path());
    assert!(!ok);
    assert!(err.lines().count() == 1 && err.contains("disk") && err.contains("free at store"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path().join("store")).unwrap().count(), 0, "nothing made");
    assert!(!dir.path().join("out").exists(), "nothing written");
    // `validate --store` makes the same check.
    let out = std::process::Command::new(common::bin())
        .args(["validate", toml.to_str().unwrap(), "--store", "store"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("disk") && err.contains("free at store"), "{err}");
}

#[test]
fn a_full_store_disk_fails_naming_the_path_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_tiny(dir.path());
    // A disk that passes the up-front estimate (the weights) but not what the store really
    // takes (metadata, pairs, pools, whole filesystem blocks), so a write fails mid-run.
    let estimate = goodhart::plan::resources::estimate(&common::tiny()).disk_bytes as usize / 1024;
    let Some(_m) = small_disk(&dir.path().join("store"), estimate + 24) else { return };
    let (ok, _, err) = common::goodhart(&["run", toml.to_str().unwrap(), "--store", "store", "--out", "out"], dir.path());
    assert!(!ok, "a full disk must fail the run: {err}");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("store/") && line.contains("No space left"), "{line}");
    let store = goodhart::cell::store::Store::open(&dir.path().join("store")).unwrap();
    let cells = std::fs::read_dir(store.root()).unwrap().count();
    assert!(cells >= 2, "the disk filled mid-run, after some cells were made ({cells})");
    for e in std::fs::read_dir(store.root()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.starts_with(".tmp-") && !name.ends_with(".lock"), "left behind: {name}");
        let (kind, key) = name.split_once('-').unwrap();
        assert!(store.verify(kind, key).unwrap().is_some(), "{name} is incomplete");
    }
    assert!(!dir.path().join("out/manifest.json").exists(), "no results from a failed run");
}

#[test]
fn a_full_results_disk_fails_naming_the_path_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_tiny(dir.path());
    let Some(_m) = small_disk(&dir.path().join("out"), 48) else { return };
    let (ok, _, err) = common::goodhart(&["run", toml.to_str().unwrap(), "--store", "store", "--out", "out"], dir.path());
    assert!(!ok, "a full disk must fail the run");
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("out/") && line.contains("No space left"), "{line}");
    for e in std::fs::read_dir(dir.path().join("out")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.starts_with('.'), "temporary left behind: {name}");
    }
}

#[test]
fn out_that_is_a_file_fails_before_any_training() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_tiny(dir.path());
    std::fs::write(dir.path().join("taken"), b"not a folder").unwrap();
    let (ok, _, err) = common::goodhart(&["run", toml.to_str().unwrap(), "--store", "store", "--out", "taken"], dir.path());
    assert!(!ok);
    assert!(err.contains("taken") && err.lines().count() == 1, "{err}");
    assert!(!dir.path().join("store").exists(), "nothing trained, not even a store made");
}

#[test]
fn plan_cli_lists_cells_and_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_tiny(dir.path());
    let t = toml.to_str().unwrap();
    let (ok, out, err) = common::goodhart(&["plan", t, "--store", "store", "--json"], dir.path());
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 13);
    assert!(cells.iter().all(|c| c["stored"] == false && c["cost_source"] == "model"));
    assert!(v["store"].as_str().unwrap().starts_with('/'), "absolute store path");
    let (ok, _, err) = common::goodhart(&["run", t, "--store", "store", "--shard", "0/1", "--level", "0"], dir.path());
    assert!(ok, "{err}");
    let (_, out, _) = common::goodhart(&["plan", t, "--store", "store", "--json"], dir.path());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let policy = v["cells"].as_array().unwrap().iter().find(|c| c["id"] == "policy").unwrap().clone();
    assert_eq!((policy["stored"].clone(), policy["cost_source"].clone()), (serde_json::json!(true), serde_json::json!("measured")));
    let stored = v["cells"].as_array().unwrap().iter().filter(|c| c["stored"] == true).count();
    assert_eq!(stored, 1, "--level 0 made π_ref only");
    let (ok, table, _) = common::goodhart(&["plan", t, "--store", "store"], dir.path());
    assert!(ok && table.contains("ppo/a/d40/n0.00/wco/b0.1") && table.contains("13 cells, 1 stored"), "{table}");
    // Readable at 100 columns: dependencies summarized (every id is in --json), a modelled
    // wall time for what is left on this machine's cores, the measured cost of a stored cell starred.
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    assert!(table.contains("policy, gold, 2 proxies, heldout") && table.contains("still to make: about"), "{table}");
    let policy_line = table.lines().find(|l| l.split_whitespace().nth(1) == Some("policy")).unwrap();
    assert!(policy_line.contains("* yes"), "{policy_line}");
    // Why a cell is not stored, as cargo says why it rebuilds: against the stored cell of
    // the same id, its settings, a cell it reads, or none of that id.
    let (ok, _, err) = common::goodhart(&["run", t, "--store", "store", "--shard", "0/1", "--level", "1"], dir.path());
    assert!(ok, "{err}");
    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, std::fs::read_to_string(&toml).unwrap().replace("sft_steps = 20", "sft_steps = 21")).unwrap();
    let (_, out, _) = common::goodhart(&["plan", changed.to_str().unwrap(), "--store", "store", "--json"], dir.path());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let why = |id: &str| {
        let c = v["cells"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap();
        (c["why"].as_str().unwrap().to_string(), c["why_detail"].as_str().unwrap().to_string())
    };
    let (policy, detail) = why("policy");
    assert!(policy == "recipe" && detail.contains("sft.steps"), "{policy}: {detail}");
    let (gold, detail) = why("gold");
    assert!(gold == "deps" && detail.contains("policy not stored"), "{gold}: {detail}");
    assert_eq!(why("pairs").0, "new");
    // The shipped experiments too, the largest included.
    for exp in ["experiments/quick.toml", "experiments/paper.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(exp);
        let (ok, table, err) = common::goodhart(&["plan", path.to_str().unwrap(), "--store", "store"], dir.path());
        assert!(ok, "{err}");
        let wide: Vec<&str> = table.lines().filter(|l| l.chars().count() > 100).collect();
        assert!(wide.is_empty(), "{exp}: {wide:?}");
    }
}

#[test]
fn slurm_scripts_chain_one_array_per_level_then_assembly() {
    let dir = tempfile::tempdir().unwrap();
    let toml = write_tiny(dir.path());
    let (ok, out, err) = common::goodhart(
        &["slurm", toml.to_str().unwrap(), "--store", "store", "--out", "res", "--partition", "debug", "--time", "00:10:00", "--cpus-per-task", "2"],
        dir.path(),
    );
    assert!(ok, "{err}");
    let slurm = dir.path().join("res/slurm");
    let levels: Vec<String> = (0..5).map(|l| std::fs::read_to_string(slurm.join(format!("level-{l}.sbatch"))).unwrap()).collect();
    assert!(levels[3].contains("#SBATCH --array=0-2") && levels[3].contains("--level 3 --shard \"${SLURM_ARRAY_TASK_ID}/3\""), "{}", levels[3]);
    assert!(levels[4].contains("#SBATCH --array=0-6"), "best-of-n and 6 PPO runs: {}", levels[4]);
    for s in &levels {
        assert!(s.contains("#SBATCH --partition=debug") && s.contains("#SBATCH --time=00:10:00") && s.contains("--jobs 2"));
        assert!(s.contains(&format!("--store '{}'", dir.path().join("store").display())), "absolute store path: {s}");
    }
    let assemble = std::fs::read_to_string(slurm.join("assemble.sbatch")).unwrap();
    assert!(assemble.contains(&format!("--out '{}'", dir.path().join("res").display())) && !assemble.contains("--shard"));
    let submit = std::fs::read_to_string(slurm.join("submit.sh")).unwrap();
    assert_eq!(submit.matches("--dependency=afterok").count(), 6);
    assert!(out.contains("submit with: bash"), "{out}");
    // A level with more cells than Slurm's array limit is dealt to that many tasks.
    let (ok, _, err) = common::goodhart(&["slurm", toml.to_str().unwrap(), "--store", "store", "--out", "res2", "--max-array", "2"], dir.path());
    assert!(ok, "{err}");
    let level4 = std::fs::read_to_string(dir.path().join("res2/slurm/level-4.sbatch")).unwrap();
    assert!(level4.contains("#SBATCH --array=0-1") && level4.contains("--shard \"${SLURM_ARRAY_TASK_ID}/2\""), "{level4}");
    // Without --time: each array's limit from the cost model, with its margin stated.
    let plan = Plan::new(&Experiment::load(&toml).unwrap());
    let largest = plan.shard_costs(4, 2).into_iter().fold(0.0, f64::max);
    let want = goodhart::plan::slurm::slurm_time(goodhart::plan::slurm::modelled_limit(largest));
    assert!(level4.contains(&format!("#SBATCH --time={want}\n")) && level4.contains("(--time overrides)"), "{level4}");
    // 3 × 100 + 600 s = 15 min; 3 × 101 + 600 = 903 s, rounded up to 16 min.
    assert_eq!(goodhart::plan::slurm::modelled_limit(100.0), 900.0);
    assert_eq!(goodhart::plan::slurm::modelled_limit(101.0), 960.0);
    assert_eq!(goodhart::plan::slurm::slurm_time(960.0), "00:16:00");
    assert_eq!(goodhart::plan::slurm::slurm_time(90_061.0), "1-01:01:01");
}

#[test]
fn adding_a_replicate_makes_only_that_replicate_and_it_draws_anew() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |out: &str| common::run_options(dir.path().join(out), dir.path().join("store"));
    let one = goodhart::run::run(&common::tiny(), &opts("one")).unwrap();
    let two_exp = Experiment::from_toml(&common::tiny_with("seed = 7", "seed = 7\nreplicates = 2"), Path::new("t.toml")).unwrap();
    let two = goodhart::run::run(&two_exp, &opts("two")).unwrap();
    // Replicate 1: its two proxies, its held-out proxy, its best-of-n, its six PPO runs; the
    // rest is reused.
    assert_eq!(two.reused.len(), 13, "{:?}", two.reused);
    let mut made = two.trained.clone();
    made.sort();
    assert_eq!(made.len(), 10, "{made:?}");
    assert!(made.iter().all(|id| id.ends_with("/r1")), "{made:?}");
    // Replicate 0 is the one-replicate study, row for row.
    let rep = |rows: &[goodhart::output::table::CurveRow], r: u64| -> Vec<goodhart::output::table::CurveRow> {
        rows.iter().filter(|x| x.replicate == r).cloned().collect()
    };
    assert_eq!(rep(&two.rows.curves, 0), one.rows.curves);
    // Replicate 1 redraws: the same curves, other numbers (beyond n = 1 of a pool's mean).
    let r1 = rep(&two.rows.curves, 1);
    assert_eq!(r1.len(), one.rows.curves.len());
    let differ = r1.iter().zip(&one.rows.curves).filter(|(a, b)| a.gold != b.gold).count();
    assert!(differ > r1.len() / 2, "{differ} of {} points differ", r1.len());
    assert_eq!(two.rows.rm.iter().filter(|r| r.replicate == Some(1)).count(), 3);
    // And a replicate is reproducible: the same study again makes nothing, same rows.
    let again = goodhart::run::run(&two_exp, &goodhart::run::RunOptions { force: true, ..opts("two") }).unwrap();
    assert!(again.trained.is_empty());
    assert_eq!(again.rows.curves, two.rows.curves);
}

#[test]
fn per_replicate_pairs_redraw_replicate_1s_training_pairs_and_keep_replicate_0() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |out: &str| common::run_options(dir.path().join(out), dir.path().join("store"));
    let shared = Experiment::from_toml(&common::tiny_with("seed = 7", "seed = 7\nreplicates = 2"), Path::new("t.toml")).unwrap();
    let own_text = common::tiny_with("seed = 7", "seed = 7\nreplicates = 2").replacen("[preferences]", "[preferences]\nper_replicate = true", 1);
    let own = Experiment::from_toml(&own_text, Path::new("t.toml")).unwrap();
    let (ps, po) = (Plan::new(&shared), Plan::new(&own));
    let pairs = |p: &Plan| p.cells.iter().filter(|c| c.kind.get::<goodhart::train::pairs::PairsCell>().is_some()).map(|c| (c.id.clone(), c.key.clone())).collect::<Vec<_>>();
    assert_eq!(pairs(&ps).len(), 1);
    assert_eq!(pairs(&po).iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["pairs", "pairs/r1"]);
    // Replicate 0's pairs are the same cell either way; replicate 1's proxies read their own.
    assert_eq!(pairs(&ps)[0], pairs(&po)[0]);
    let deps = |p: &Plan, id: &str| p.cells[p.find(id).unwrap()].deps.iter().map(|&d| p.cells[d].id.clone()).collect::<Vec<_>>();
    assert!(deps(&po, "proxy/a/d40/n0.00/k0/r1").contains(&"pairs/r1".to_string()));
    assert!(deps(&po, "proxy/a/d40/n0.00/k0").contains(&"pairs".to_string()));
    let a = goodhart::run::run(&shared, &opts("shared")).unwrap();
    let b = goodhart::run::run(&own, &opts("own")).unwrap();
    assert!(b.trained.contains(&"pairs/r1".to_string()), "{:?}", b.trained);
    // Replicate 0 is reused as it was; replicate 1's proxies, trained on other pairs, differ
    // (its held-out proxy, trained on pairs of its own either way, does not).
    let rows = |r: &goodhart::run::RunSummary, rep: u64| -> Vec<(String, f64)> {
        r.rows.rm.iter().filter(|x| x.replicate == Some(rep) && x.role == "proxy").map(|x| (x.model.clone(), x.val_bt_loss)).collect()
    };
    let held = |r: &goodhart::run::RunSummary| r.rows.rm.iter().filter(|x| x.role == "heldout").map(|x| x.val_bt_loss).collect::<Vec<_>>();
    assert_eq!(held(&a), held(&b));
    assert_eq!(rows(&a, 0), rows(&b, 0));
    let (r1a, r1b) = (rows(&a, 1), rows(&b, 1));
    assert_eq!(r1a.len(), r1b.len());
    assert!(r1a.iter().zip(&r1b).all(|(x, y)| x.0 == y.0 && x.1 != y.1), "{r1a:?} vs {r1b:?}");
}

#[test]
fn per_replicate_worlds_give_replicate_1_its_own_world_and_keep_replicate_0() {
    let dir = tempfile::tempdir().unwrap();
    let opts = |out: &str| common::run_options(dir.path().join(out), dir.path().join("store"));
    let shared = Experiment::from_toml(&common::tiny_with("seed = 7", "seed = 7\nreplicates = 2"), Path::new("t.toml")).unwrap();
    let own_text = common::tiny_with("seed = 7", "seed = 7\nreplicates = 2\n\n[world]\nper_replicate = true\n");
    let own = Experiment::from_toml(&own_text, Path::new("t.toml")).unwrap();
    assert_eq!((shared.worlds(), own.worlds()), (1, 2));
    // World 0 is the shared world; world 1 has a labeler of its own.
    assert_eq!(own.world_config(0), shared.world_config(0));
    assert_ne!(own.world_config(1).affinity, own.world_config(0).affinity);
    let (ps, po) = (Plan::new(&shared), Plan::new(&own));
    let ids = |p: &Plan, kind: &str| p.cells.iter().filter(|c| c.kind.name() == kind).map(|c| c.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&po, "policy"), ["policy", "policy/r1"]);
    assert_eq!(ids(&po, "gold"), ["gold", "gold/r1"]);
    assert_eq!(ids(&po, "pairs"), ["pairs", "pairs/r1"]);
    assert_eq!(ids(&ps, "policy"), ["policy"]);
    let heldout: Vec<String> = po.proxies().iter().filter(|(_, c)| c.heldout).map(|(_, c)| c.id()).collect();
    assert_eq!(heldout, ["heldout/a/d40/n0.00", "heldout/a/d40/n0.00/r1"]);
    // Every cell of replicate 0 is the same cell (same key) either way.
    for c in ps.cells.iter().filter(|c| !c.id.ends_with("/r1")) {
        let o = &po.cells[po.find(&c.id).unwrap_or_else(|| panic!("{} is in both plans", c.id))];
        assert_eq!(o.key, c.key, "{}", c.id);
    }
    // Replicate 1's cells read replicate 1's world; replicate 0's read world 0's.
    let deps = |p: &Plan, id: &str| p.cells[p.find(id).unwrap()].deps.iter().map(|&d| p.cells[d].id.clone()).collect::<Vec<_>>();
    let d = deps(&po, "ppo/a/d40/n0.00/mean/b0/r1");
    for want in ["policy/r1", "gold/r1", "heldout/a/d40/n0.00/r1"] {
        assert!(d.contains(&want.to_string()), "{want} in {d:?}");
    }
    assert!(!d.contains(&"gold".to_string()), "{d:?}");
    assert!(deps(&po, "proxy/a/d40/n0.00/k0/r1").contains(&"pairs/r1".to_string()));
    assert!(deps(&po, "gold/r1").contains(&"policy/r1".to_string()));
    assert!(deps(&po, "ppo/a/d40/n0.00/mean/b0").contains(&"gold".to_string()));
    let a = goodhart::run::run(&shared, &opts("shared")).unwrap();
    let b = goodhart::run::run(&own, &opts("own")).unwrap();
    for id in ["policy/r1", "gold/r1", "pairs/r1", "heldout/a/d40/n0.00/r1"] {
        assert!(b.trained.contains(&id.to_string()), "{id} made: {:?}", b.trained);
    }
    assert!(b.trained.iter().all(|id| id.ends_with("/r1")), "replicate 0 is reused: {:?}", b.trained);
    // Replicate 0's rows are the shared study's; replicate 1's gold is its own world's.
    let rep = |rows: &[goodhart::output::table::CurveRow], r: u64| -> Vec<goodhart::output::table::CurveRow> {
        rows.iter().filter(|x| x.replicate == r).cloned().collect()
    };
    assert_eq!(rep(&a.rows.curves, 0), rep(&b.rows.curves, 0));
    let golds: Vec<(String, Option<u64>)> = b.rows.rm.iter().filter(|r| r.role == "gold").map(|r| (r.model.clone(), r.replicate)).collect();
    assert_eq!(golds, [("gold".to_string(), Some(0)), ("gold/r1".to_string(), Some(1))]);
    let (r1a, r1b) = (rep(&a.rows.curves, 1), rep(&b.rows.curves, 1));
    assert_eq!(r1a.len(), r1b.len());
    let differ = r1a.iter().zip(&r1b).filter(|(x, y)| x.gold != y.gold).count();
    assert!(differ > r1a.len() / 2, "{differ} of {} points differ", r1a.len());
    // The report says what its intervals cover.
    let report = std::fs::read_to_string(dir.path().join("own/report.md")).unwrap();
    assert!(report.contains("each in its **own world** (2 worlds"), "{report}");
    let shared_report = std::fs::read_to_string(dir.path().join("shared/report.md")).unwrap();
    assert!(shared_report.contains("π_ref and gold shared, so the intervals do not cover another world"), "{shared_report}");
}

#[test]
fn best_of_n_split_into_cells_of_one_prompt_gives_the_same_tables() {
    let dir = tempfile::tempdir().unwrap();
    let reference = whole(dir.path());
    assert!(reference.contains_key("bon_units.csv"), "the per-prompt best-of-n table is written");
    let split = dir.path().join("split.toml");
    std::fs::write(&split, common::tiny_with("pool = 64", "pool = 64\nprompts_per_cell = 1")).unwrap();
    let plan = Plan::new(&Experiment::load(&split).unwrap());
    assert_eq!(plan.cells.iter().filter(|c| c.kind.get::<goodhart::methods::bon::cell::BonCell>().is_some()).count(), 3, "one cell per prompt");
    let (ok, _, err) = common::goodhart(&["run", split.to_str().unwrap(), "--out", "split", "--store", "split-store"], dir.path());
    assert!(ok, "{err}");
    assert_eq!(common::tables_without_timings(&dir.path().join("split")), reference);
}

#[test]
fn no_prompt_is_shared_between_uses_at_the_largest_configured_sizes() {
    use goodhart::world::Split;
    // The largest preset: every use of prompts, each drawn as many times as it is there.
    let exp = Experiment::load(Path::new("experiments/paper.toml")).unwrap();
    let world = exp.world_config(0);
    let max_pairs = *exp.proxy.data_sizes.iter().max().unwrap();
    let uses = [
        (Split::Demonstrations, exp.policy.demonstrations * 11 / 10 + exp.gold.samples * 11 / 10),
        (Split::Pairs, max_pairs),
        (Split::HeldoutPairs, max_pairs),
        (Split::ValidationPairs, exp.preferences.val_pairs),
        (Split::PpoTrain, exp.ppo.updates * exp.ppo.rollout),
        (Split::PpoEval, exp.ppo.eval_prompts),
        (Split::BestOfN, exp.bon.prompts),
        (Split::Reference, exp.reference.standardize_samples + 1),
    ];
    let mut owner: std::collections::HashMap<Vec<u32>, Split> = std::collections::HashMap::new();
    for (split, n) in uses {
        let mut rng = goodhart::seed::rng(exp.seed, &format!("test/{split:?}"));
        for _ in 0..n {
            let p = world.prompt_in(split, &mut rng);
            assert_eq!(*owner.entry(p.clone()).or_insert(split), split, "prompt {p:?} is shared");
        }
    }
    let used: std::collections::HashSet<Split> = owner.values().copied().collect();
    assert_eq!(used.len(), 8, "every use drew prompts");
    // And a run's stored pairs come from their own sets.
    let dir = tempfile::tempdir().unwrap();
    let opts = common::run_options(dir.path().join("out"), dir.path().join("store"));
    // One held-out proxy per world keeps its pairs in the pairs cell (a per-replicate one
    // draws them in its own cell, from the same split).
    let per_world = Experiment::from_toml(&common::tiny_with("members = 2", "members = 2\nheldout_per_replicate = false"), Path::new("t.toml")).unwrap();
    let s = goodhart::run::run(&per_world, &opts).unwrap();
    assert!(s.trained.iter().any(|c| c == "pairs"));
    let store = dir.path().join("store");
    let pairs_dir = std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with("pairs-")).unwrap();
    let data = goodhart::train::pairs::load(&pairs_dir).unwrap();
    let tiny = per_world.world_config(0);
    let prompt = |set: &goodhart::world::SeqSet, i: usize| set.row(i)[1..1 + tiny.prompt_len].to_vec();
    for (pairs, split) in [(&data.train, Split::Pairs), (&data.val, Split::ValidationPairs), (&data.heldout.as_ref().unwrap().0, Split::HeldoutPairs)] {
        for i in 0..pairs.len() {
            assert_eq!(Split::of(&prompt(&pairs.a, i)), split);
            assert_eq!(prompt(&pairs.a, i), prompt(&pairs.b, i), "a pair shares its prompt");
        }
    }
}

#[test]
fn each_replicate_trains_its_own_held_out_proxy_on_its_own_pairs() {
    let two = |extra: &str| {
        let text = common::tiny_with("members = 2", &format!("members = 2{extra}"));
        Experiment::from_toml(&text.replace("seed = 7", "seed = 7\nreplicates = 2"), Path::new("t.toml")).unwrap()
    };
    let heldout = |p: &Plan| p.proxies().iter().filter(|(_, c)| c.heldout).map(|(_, c)| c.id()).collect::<Vec<_>>();
    let deps = |p: &Plan, id: &str| p.cells[p.find(id).unwrap()].deps.iter().map(|&d| p.cells[d].id.clone()).collect::<Vec<_>>();
    // The default: one per replicate, each read by its own replicate's optimizers.
    let own = two("");
    let po = Plan::new(&own);
    assert_eq!(heldout(&po), ["heldout/a/d40/n0.00", "heldout/a/d40/n0.00/r1"]);
    assert!(deps(&po, "ppo/a/d40/n0.00/mean/b0/r1").contains(&"heldout/a/d40/n0.00/r1".to_string()));
    assert!(!deps(&po, "bon/p0-2/r1").contains(&"heldout/a/d40/n0.00".to_string()));
    // Off: one shared by both replicates.
    let shared = two("\nheldout_per_replicate = false");
    let ps = Plan::new(&shared);
    assert_eq!(heldout(&ps), ["heldout/a/d40/n0.00"]);
    assert!(deps(&ps, "ppo/a/d40/n0.00/mean/b0/r1").contains(&"heldout/a/d40/n0.00".to_string()));
    // Like-for-like: the first size on the fewest pairs, whatever is largest.
    let sizes = "sizes = [{ name = \"a\", layers = 1, width = 8, heads = 2 }]";
    let wide = "sizes = [{ name = \"a\", layers = 1, width = 8, heads = 2 }, { name = \"b\", layers = 1, width = 12, heads = 2 }]";
    let text = common::tiny_with(sizes, wide).replace("data_sizes = [40]", "data_sizes = [40, 60]");
    let big = Experiment::from_toml(&text, Path::new("t.toml")).unwrap();
    assert_eq!(goodhart::train::proxy::heldout_cell(&big, 0).unwrap().id(), "heldout/b/d60/n0.00");
    let mut like = big.clone();
    like.proxy.heldout_like = true;
    assert_eq!(goodhart::train::proxy::heldout_cell(&like, 3).unwrap().id(), "heldout/a/d40/n0.00/r3");
    // Run: the two held-out proxies are trained on different pairs (their validation
    // accuracies differ), listed per replicate, and the report says which one a rule read.
    let dir = tempfile::tempdir().unwrap();
    let s = goodhart::run::run(&own, &common::run_options(dir.path().join("out"), dir.path().join("store"))).unwrap();
    let rows: Vec<_> = s.rows.rm.iter().filter(|r| r.role == "heldout").collect();
    assert_eq!(rows.iter().map(|r| r.replicate).collect::<Vec<_>>(), [Some(0), Some(1)]);
    assert_ne!(rows[0].artifact, rows[1].artifact);
    assert!(rows[0].val_accuracy != rows[1].val_accuracy || rows[0].val_bt_loss != rows[1].val_bt_loss, "{rows:?}");
    let report = std::fs::read_to_string(dir.path().join("out/report_appendix.md")).unwrap();
    assert!(report.contains("each replicate's own held-out proxy (a, 40 pairs of its own, noise 0.00: like the members of a/d40/n0.00)"), "{report}");
}
