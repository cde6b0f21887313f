//! A plan on a Slurm cluster: one sbatch job array per level of the plan (task `t` of level
//! `L` runs `goodhart run EXP --level L --shard t/N`, N the level's cells, or at most
//! `--max-array` tasks sharing them), each array
//! chained to the previous one with `--dependency=afterok`, then one job that assembles the
//! tables and report. Slurm schedules; goodhart only writes the scripts and, with
//! `--submit`, hands them to `sbatch`.
//!
//! Scripts and logs go to `DIR/` (default `OUT/slurm/`): `level-L.sbatch`, `assemble.sbatch`,
//! `submit.sh` (the same chain for submitting by hand) and `logs/`, one log per task
//! (`level-L-JOBID_TASK.out`) beside them. Every path in them is absolute. The store must be
//! a folder every node sees (a shared filesystem); cells made by several tasks at once are
//! made once (see [`crate::cell::store`]). A task that fails fails its array; `afterok` then holds
//! the later jobs back, and resubmitting the same scripts makes only what is missing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::Plan;
use crate::cell::store::write_atomic;
use crate::error::{Error, Result};

/// What the scripts run and how they ask for resources.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The goodhart binary to run on the nodes.
    pub exe: PathBuf,
    pub experiment: PathBuf,
    pub store: PathBuf,
    pub out: PathBuf,
    /// Where the scripts and logs go.
    pub dir: PathBuf,
    pub partition: Option<String>,
    /// Wall-time limit per task, in Slurm's format (`HH:MM:SS`, `D-HH`); `None`: each array's
    /// limit from the cost model ([`modelled_limit`]).
    pub time: Option<String>,
    pub cpus_per_task: usize,
    /// `cpu` or `cuda`.
    pub device: String,
    /// The most tasks of one array (Slurm's MaxArraySize, 1001 by default, allows indices
    /// up to 1000): a level with more cells is dealt to this many tasks.
    pub max_array: usize,
    /// `--max-cpu-hours` of the runs the scripts start (the plan's own size was checked
    /// against it when the scripts were written).
    pub max_cpu_hours: f64,
}

/// One job of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub script: PathBuf,
    /// Array tasks (0 for the assembly job, which is no array).
    pub tasks: usize,
}

fn abs(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

fn quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The margin on the cost model's estimate in a modelled time limit: the model is fitted on
/// one machine's cores, and a cluster's may be slower.
pub const TIME_MARGIN: f64 = 3.0;
/// Added to every modelled time limit: start-up, loading the dependencies, and the
/// assembly job's whole limit.
pub const TIME_FLOOR_S: f64 = 600.0;

/// A task's time limit from the modelled CPU-seconds of its cells (as on one core):
/// [`TIME_MARGIN`] × that + [`TIME_FLOOR_S`], rounded up to the minute.
pub fn modelled_limit(cpu_s: f64) -> f64 {
    ((TIME_MARGIN * cpu_s.max(0.0) + TIME_FLOOR_S) / 60.0).ceil() * 60.0
}

/// Seconds in Slurm's time format: `HH:MM:SS`, or `D-HH:MM:SS` from a day on.
pub fn slurm_time(secs: f64) -> String {
    let s = secs.max(0.0).ceil() as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// Writes the scripts of `plan` (named `name`) and returns the jobs in submission order.
pub fn write_scripts(plan: &Plan, name: &str, o: &SlurmOptions) -> Result<Vec<Job>> {
    let dir = abs(&o.dir)?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let (exe, exp, store, out) = (abs(&o.exe)?, abs(&o.experiment)?, abs(&o.store)?, abs(&o.out)?);
    // The limit: `--time` as given, else the cost model's for the job's largest task.
    let header = |job: &str, array: Option<usize>, log: &str, cpu_s: f64| {
        let mut s = String::from("#!/bin/bash\n");
        let _ = writeln!(s, "#SBATCH --job-name={job}");
        if let Some(n) = array {
            let _ = writeln!(s, "#SBATCH --array=0-{}", n - 1);
        }
        let _ = writeln!(s, "#SBATCH --cpus-per-task={}", o.cpus_per_task);
        let _ = writeln!(s, "#SBATCH --ntasks=1");
        if let Some(p) = &o.partition {
            let _ = writeln!(s, "#SBATCH --partition={p}");
        }
        match &o.time {
            Some(t) => {
                let _ = writeln!(s, "#SBATCH --time={t}");
            }
            None => {
                let _ = writeln!(s, "#SBATCH --time={}", slurm_time(modelled_limit(cpu_s)));
                let _ = writeln!(
                    s,
                    "# time limit: {TIME_MARGIN} x the cost model's {cpu_s:.0} CPU-seconds for the largest task + {:.0} min (--time overrides)",
                    TIME_FLOOR_S / 60.0
                );
            }
        }
        let _ = writeln!(s, "#SBATCH --output={}", logs.join(log).display());
        s.push_str("set -euo pipefail\n");
        s
    };
    let common = format!(
        "{} run {} --store {} --device {} --jobs {}{}",
        quote(&exe),
        quote(&exp),
        quote(&store),
        o.device,
        o.cpus_per_task,
        if o.max_cpu_hours == crate::plan::MAX_CPU_HOURS { String::new() } else { format!(" --max-cpu-hours {}", o.max_cpu_hours) }
    );
    let mut jobs = Vec::new();
    for level in 0..plan.levels() {
        let cells = plan.level(level).len();
        if cells == 0 {
            continue;
        }
        let n = cells.min(o.max_array.max(1));
        let job = format!("goodhart-{name}-L{level}");
        let largest = plan.shard_costs(level, n).into_iter().fold(0.0, f64::max);
        let mut s = header(&job, Some(n), &format!("level-{level}-%A_%a.out"), largest);
        let ids: Vec<&str> = plan.level(level).iter().map(|&i| plan.cells[i].id.as_str()).collect();
        let _ = writeln!(s, "# level {level}: {} cells in {n} tasks ({})", ids.len(), ids.join(", "));
        let _ = writeln!(s, "exec {common} --level {level} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\"");
        let script = dir.join(format!("level-{level}.sbatch"));
        write_atomic(&script, s.as_bytes())?;
        jobs.push(Job { name: job, script, tasks: n });
    }
    let job = format!("goodhart-{name}-assemble");
    let mut s = header(&job, None, "assemble-%j.out", 0.0);
    let _ = writeln!(s, "exec {common} --out {}", quote(&out));
    let script = dir.join("assemble.sbatch");
    write_atomic(&script, s.as_bytes())?;
    jobs.push(Job { name: job, script, tasks: 0 });

    let mut sh = String::from("#!/bin/bash\n# Submits the chain: each job starts once the previous one succeeded.\nset -euo pipefail\nprev=\n");
    for j in &jobs {
        let _ = writeln!(
            sh,
            "prev=$(sbatch --parsable ${{prev:+--dependency=afterok:$prev}} {} | cut -d';' -f1); echo \"{} $prev\"",
            quote(&j.script),
            j.name
        );
    }
    let submit = dir.join("submit.sh");
    write_atomic(&submit, sh.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&submit, std::fs::Permissions::from_mode(0o755));
    }
    Ok(jobs)
}

/// Submits `jobs` in order with `sbatch --parsable`, each after the previous one succeeded.
/// Returns the job ids.
pub fn submit(jobs: &[Job]) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for j in jobs {
        let mut cmd = std::process::Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some(prev) = ids.last() {
            cmd.arg(format!("--dependency=afterok:{prev}"));
        }
        cmd.arg(&j.script);
        let out = cmd.output().map_err(|e| Error::Slurm {
            msg: format!("cannot run sbatch ({e}); is Slurm installed and on PATH?"),
        })?;
        if !out.status.success() {
            return Err(Error::Slurm {
                msg: format!(
                    "sbatch {} failed: {}",
                    j.script.display(),
                    String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("").trim()
                ),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::Slurm {
                msg: format!("sbatch {} printed no job id: {:?}", j.script.display(), text.trim()),
            });
        }
        ids.push(id);
    }
    Ok(ids)
}
