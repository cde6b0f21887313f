//! The `goodhart` command line: clap subcommands; errors print on one line and exit with 2
//! for bad input (experiment file, `--device`, `--jobs`), 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Reward-model overoptimization experiments: gold and proxy reward models, best-of-n and
/// PPO against proxy ensembles, Goodhart curves.
#[derive(Parser)]
#[command(name = "goodhart", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment: train (or reuse) every model it needs and write its results.
    Run {
        /// The experiment file, e.g. experiments/quick.toml.
        experiment: PathBuf,
        /// Results folder [default: results/NAME].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Model store shared by experiments.
        #[arg(long, default_value = "results/store")]
        store: PathBuf,
        /// cpu, or cuda (needs a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Overwrite a results folder that holds results of a different config.
        #[arg(long)]
        force: bool,
        /// Threads for independent work (proxy models, sampling blocks, batch shards);
        /// 0: one per core. candle itself runs single-threaded unless CANDLE_NUM_THREADS is set.
        #[arg(long, default_value_t = 0)]
        jobs: usize,
    },
    /// Check an experiment file and print what it would train, without running anything.
    Validate {
        /// The experiment file.
        experiment: PathBuf,
    },
    /// Regenerate the fits, scaling, stopping-rule and aggregator tables, the scaling figure
    /// and report.md of a results folder from its saved tables (no models, no training).
    Report {
        /// The results folder, e.g. results/quick.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    goodhart::tune_allocator();
    let cli = Cli::parse();
    // Before any tensor op or other thread: candle single-threaded, work pool sized.
    let jobs = match &cli.command {
        Command::Run { jobs, .. } => *jobs,
        Command::Validate { .. } | Command::Report { .. } => 1,
    };
    if let Err(e) = goodhart::parallel::init(jobs) {
        return fail(&e.into());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `e` on one line; the exit status is the library error's [`goodhart::Error::exit_code`].
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
    ExitCode::from(e.downcast_ref::<goodhart::Error>().map_or(1, goodhart::Error::exit_code))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            experiment,
            out,
            store,
            device,
            force,
            jobs: _,
        } => {
            let exp = goodhart::Experiment::load(&experiment)?;
            let device = goodhart::device::parse(&device)?;
            let out = out.unwrap_or_else(|| exp.default_out());
            let opts = goodhart::run::RunOptions {
                out,
                store,
                device,
                force,
            };
            let summary = goodhart::run::run(&exp, &opts).with_context(|| format!("run {}", experiment.display()))?;
            println!(
                "{}: {} models trained, {} reused; results in {}",
                exp.name,
                summary.trained.len(),
                summary.reused.len(),
                summary.out.display()
            );
            if !summary.ppo_failures.is_empty() {
                eprintln!(
                    "warning: {} PPO run(s) failed (listed in manifest.json): {}",
                    summary.ppo_failures.len(),
                    summary.ppo_failures.iter().map(|(run, _)| run.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            Ok(())
        }
        Command::Report { dir } => {
            let r = goodhart::report::report(&dir).with_context(|| format!("report {}", dir.display()))?;
            let a = &r.acceptance;
            let verdict = |m: Option<bool>| match m {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not applicable",
            };
            println!(
                "{}: {} curves; wrote {}",
                dir.join("report.md").display(),
                r.curves,
                r.written.join(", ")
            );
            println!(
                "acceptance: (a) R² ≥ {} on {} interior-peak gold curves: {}; (b) best rule {} median regret {} of gain: {}",
                goodhart::report::R2_TARGET,
                a.interior_curves,
                verdict(a.r2_met),
                a.best_rule.as_deref().unwrap_or("none"),
                a.best_median_regret_frac.map_or("n/a".to_string(), |f| format!("{:.1}%", 100.0 * f)),
                verdict(a.regret_met)
            );
            Ok(())
        }
        Command::Validate { experiment } => {
            let exp = goodhart::Experiment::load(&experiment)?;
            goodhart::resources::check_resources(&exp, None).with_context(|| experiment.display().to_string())?;
            let cells = goodhart::sweep::proxy_cells(&exp);
            let estimate = goodhart::resources::estimate(&exp);
            println!("{}: valid", experiment.display());
            println!(
                "  estimate: {} peak memory (largest part: {}), {} of stored models",
                goodhart::resources::human(estimate.peak_memory_bytes),
                estimate.largest_memory_part,
                goodhart::resources::human(estimate.disk_bytes)
            );
            println!("  reference policy: {} params", exp.params.policy);
            println!("  gold RM: {} params", exp.params.gold);
            for (name, n) in &exp.params.proxies {
                println!("  proxy {name}: {n} params");
            }
            println!(
                "  {} proxy RMs ({} sizes x {} data sizes x {} noise levels x {} members)",
                cells.len(),
                exp.proxy.sizes.len(),
                exp.proxy.data_sizes.len(),
                exp.proxy.noise.len(),
                exp.proxy.members
            );
            if let Some(h) = goodhart::sweep::heldout_cell(&exp) {
                println!(
                    "  1 held-out proxy ({}, {} pairs of its own, noise {:.2}; never optimized against)",
                    h.size.name, h.data_size, h.noise
                );
            }
            if exp.bon.enabled {
                println!("  best-of-n: {} prompts x {} samples per prompt", exp.bon.prompts, exp.bon.pool);
            }
            let runs = goodhart::sweep::ppo_cells(&exp, &cells);
            if !runs.is_empty() {
                println!("  PPO: {} runs x {} updates:", runs.len(), exp.ppo.updates);
                for r in &runs {
                    println!("    {}", r.id());
                }
            }
            Ok(())
        }
    }
}
