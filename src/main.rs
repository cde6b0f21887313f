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
        /// Results folder [default: results/NAME], relative to the working directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Store of made cells (models, pairs, pools, PPO runs), shared by experiments and
        /// by processes and hosts at once; relative to the working directory.
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
        /// Make only shard I of N of the plan's cells (0-based, e.g. 0/2), waiting for (or
        /// making) the dependencies other shards own; writes no tables. Shards may run in
        /// any order, at once or not, on one host or many sharing the store.
        #[arg(long, value_name = "I/N")]
        shard: Option<goodhart::plan::Shard>,
        /// With --shard: only cells of this level of the plan (see `goodhart plan`).
        #[arg(long, requires = "shard")]
        level: Option<usize>,
        /// Only warnings, errors and the final verdict lines: no progress bars, no log.
        #[arg(long)]
        quiet: bool,
        /// Refuse a plan the cost model prices above this many CPU-hours (a guard against a
        /// typo that asks for centuries; raise it for a study that is meant to be that large).
        #[arg(long, default_value_t = goodhart::plan::MAX_CPU_HOURS)]
        max_cpu_hours: f64,
    },
    /// Show the plan: every cell, its dependencies, its estimated cost and whether the store
    /// already holds it.
    Plan {
        /// The experiment file.
        experiment: PathBuf,
        /// Store to check for made cells.
        #[arg(long, default_value = "results/store")]
        store: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write sbatch scripts that make the plan on a Slurm cluster (one job array per level,
    /// chained with afterok, then one job that assembles), and submit them with --submit.
    Slurm {
        /// The experiment file.
        experiment: PathBuf,
        /// Store of made cells: a folder every node sees.
        #[arg(long)]
        store: PathBuf,
        /// Results folder [default: results/NAME]; scripts and logs go to OUT/slurm/.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Slurm partition.
        #[arg(long)]
        partition: Option<String>,
        /// Wall-time limit per task (Slurm format, e.g. 02:00:00).
        #[arg(long)]
        time: Option<String>,
        /// CPUs per task (also goodhart's --jobs on the node).
        #[arg(long, default_value_t = 2)]
        cpus_per_task: usize,
        /// cpu, or cuda on GPU nodes (request GPUs with your site's sbatch options).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// The most tasks of one job array (Slurm's MaxArraySize); a level with more cells
        /// deals them to this many tasks.
        #[arg(long, default_value_t = 1000)]
        max_array: usize,
        /// Submit the chain with sbatch (otherwise only write the scripts).
        #[arg(long)]
        submit: bool,
        /// Refuse a plan the cost model prices above this many CPU-hours (a guard against a
        /// typo that asks for centuries; raise it for a study that is meant to be that large).
        #[arg(long, default_value_t = goodhart::plan::MAX_CPU_HOURS)]
        max_cpu_hours: f64,
    },
    /// Check an experiment file and print what it would train, without running anything.
    Validate {
        /// The experiment file.
        experiment: PathBuf,
        /// Also check that the stored models fit in the free space of this store (what
        /// `run --store` checks before any work).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Refuse a plan the cost model prices above this many CPU-hours (a guard against a
        /// typo that asks for centuries; raise it for a study that is meant to be that large).
        #[arg(long, default_value_t = goodhart::plan::MAX_CPU_HOURS)]
        max_cpu_hours: f64,
    },
    /// Regenerate the fits, scaling, stopping-rule and aggregator tables, every figure and
    /// report.md of a results folder from its saved tables (no models, no training).
    Report {
        /// The results folder, e.g. results/quick.
        dir: PathBuf,
        /// Report on tables that differ from the checksums in manifest.json (edited by hand).
        #[arg(long)]
        allow_edited: bool,
    },
    /// Open a Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json) the
    /// way a study would, print what it is, and greedily continue a prompt with it.
    Checkpoint {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Text to continue (language models only).
        #[arg(long, default_value = "The capital of France is")]
        prompt: String,
        /// New tokens to decode greedily (0: only describe the checkpoint).
        #[arg(long, default_value_t = 24)]
        tokens: usize,
        /// Also sample this many responses of up to `--tokens` tokens to the prompt in one
        /// batch (temperature 1, seed 0) and score them again as a policy would, timing both
        /// (one thread): what a study's sampling and scoring cost per token here.
        #[arg(long, default_value_t = 0)]
        samples: usize,
        /// cpu, or cuda (needs a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Import a GGUF file (llama.cpp's format; Llama or Qwen2) as a Hugging Face folder:
    /// every tensor dequantized to f32, config.json and tokenizer.json from its metadata.
    ImportGguf {
        /// The .gguf file.
        file: PathBuf,
        /// The folder to write (must not exist).
        out: PathBuf,
    },
    /// Time reward-model scoring on a device: samples per second of gold and of each proxy
    /// size (seeded weights, nothing trained or stored), and of a best-of-n cell's scoring
    /// with all of them; prints JSON. For measuring a GPU (scripts/gpu-run).
    #[command(hide = true)]
    BenchScore {
        /// The experiment file whose shapes are timed.
        experiment: PathBuf,
        /// cpu, or cuda (needs a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Samples each model scores.
        #[arg(long, default_value_t = 65_536)]
        samples: usize,
    },
}

/// Ctrl-C (SIGINT) during a run: one line saying what is kept, then exit 130. Every finished
/// cell is already in the store (a cell is renamed into place only when complete), and the
/// next run removes the interrupted cells' temporaries and resumes.
fn on_interrupt() {
    #[cfg(unix)]
    {
        extern "C" fn handler(_: libc::c_int) {
            const MSG: &[u8] = b"\ninterrupted: every finished cell is kept in the store; run the same command again to resume (cells in progress start over)\n";
            // Only async-signal-safe calls here: write(2) and _exit(2).
            unsafe {
                libc::write(2, MSG.as_ptr().cast(), MSG.len());
                libc::_exit(130);
            }
        }
        unsafe {
            libc::signal(libc::SIGINT, handler as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as a command-line tool's should, not in a panic.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    goodhart::tune_allocator();
    let cli = Cli::parse();
    // Before any tensor op or other thread: candle single-threaded, work pool sized.
    let jobs = match &cli.command {
        Command::Run { jobs, .. } => *jobs,
        Command::Validate { .. }
        | Command::Report { .. }
        | Command::Plan { .. }
        | Command::Slurm { .. }
        | Command::BenchScore { .. }
        | Command::Checkpoint { .. }
        | Command::ImportGguf { .. } => 1,
    };
    if let Err(e) = goodhart::parallel::init(jobs) {
        return fail(&e.into());
    }
    let quiet = matches!(&cli.command, Command::Run { quiet: true, .. });
    goodhart::progress::set_quiet(quiet);
    // Colour only on a terminal (and not under NO_COLOR): a log sent to a file, as on a
    // cluster, is plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if quiet { "warn" } else { "info" })),
        )
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    if matches!(&cli.command, Command::Run { .. }) {
        on_interrupt();
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The study's primary questions, one line each (the first screen of report.md).
fn print_answer(lines: &[String]) {
    if !lines.is_empty() {
        println!("primary questions (95% intervals across replicates; p Holm-adjusted; report.md says what would settle the rest):");
        for l in lines {
            println!("  {l}");
        }
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
            shard,
            level,
            quiet: _,
            max_cpu_hours,
        } => {
            let exp = goodhart::Experiment::load(&experiment)?;
            let device = goodhart::device::parse(&device)?;
            let out = out.unwrap_or_else(|| exp.default_out());
            let opts = goodhart::run::RunOptions {
                out,
                store,
                device,
                force,
                shard,
                level,
                max_cpu_hours,
            };
            let summary = goodhart::run::run(&exp, &opts).with_context(|| format!("run {}", experiment.display()))?;
            let made = format!("{} cells made, {} reused", summary.trained.len(), summary.reused.len());
            match (&summary.out, shard) {
                (Some(out), _) => println!("{}: {made}; results in {}", exp.name, out.display()),
                (None, Some(s)) => println!("{} shard {s}: {made}; no tables (run without --shard to assemble)", exp.name),
                (None, None) => unreachable!("a whole run writes results"),
            }
            print_answer(&summary.answer);
            for (method, runs) in &summary.rows.runs {
                let failures = &runs.failures;
                if !failures.is_empty() {
                    eprintln!(
                        "warning: {} {} run(s) failed (listed in manifest.json): {}",
                        failures.len(),
                        method.to_uppercase(),
                        failures.iter().map(|(run, _)| run.as_str()).collect::<Vec<_>>().join(", ")
                    );
                }
            }
            Ok(())
        }
        Command::Plan { experiment, store, json } => {
            let exp = goodhart::Experiment::load(&experiment)?;
            // Every cost is listed, however large; only a plan too long to list is refused.
            let (plan, _) = goodhart::plan::check(&exp, f64::INFINITY).with_context(|| experiment.display().to_string())?;
            let store = goodhart::cell::store::Store::open(&store)?;
            let report = goodhart::plan::describe(&plan, &store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("plan serializes"));
            } else {
                print!("{}", goodhart::plan::table(&report));
            }
            Ok(())
        }
        Command::Slurm {
            experiment,
            store,
            out,
            partition,
            time,
            cpus_per_task,
            device,
            max_array,
            submit,
            max_cpu_hours,
        } => {
            let exp = goodhart::Experiment::load(&experiment)?;
            goodhart::device::parse_name(&device)?;
            let (plan, _) = goodhart::plan::check(&exp, max_cpu_hours).with_context(|| experiment.display().to_string())?;
            let out = out.unwrap_or_else(|| exp.default_out());
            let opts = goodhart::plan::slurm::SlurmOptions {
                exe: std::env::current_exe().context("the goodhart binary's path")?,
                experiment,
                store,
                dir: out.join("slurm"),
                out,
                partition,
                time,
                cpus_per_task: cpus_per_task.max(1),
                device,
                max_array,
                max_cpu_hours,
            };
            let jobs = goodhart::plan::slurm::write_scripts(&plan, &exp.name, &opts)?;
            for j in &jobs {
                let what = if j.tasks > 0 { format!("array of {} tasks", j.tasks) } else { "one task".into() };
                println!("{}: {} ({what})", j.name, j.script.display());
            }
            if submit {
                let ids = goodhart::plan::slurm::submit(&jobs)?;
                for (j, id) in jobs.iter().zip(&ids) {
                    println!("submitted {} as job {id}", j.name);
                }
            } else {
                println!("submit with: bash {}", opts.dir.join("submit.sh").display());
            }
            Ok(())
        }
        Command::Report { dir, allow_edited } => {
            let r = goodhart::output::report::report(&dir, allow_edited).with_context(|| format!("report {}", dir.display()))?;
            println!(
                "{}: {} curves; wrote {}",
                dir.join("report.md").display(),
                r.curves,
                r.written.join(", ")
            );
            print_answer(&r.answer);
            Ok(())
        }
        Command::Checkpoint { dir, prompt, tokens, samples, device } => {
            let dev = goodhart::device::parse(&device)?;
            checkpoint(&dir, &prompt, tokens, samples, &dev).with_context(|| format!("checkpoint {}", dir.display()))
        }
        Command::ImportGguf { file, out } => {
            let start = std::time::Instant::now();
            let imp = goodhart::model::hf::gguf::import(&file, &out).with_context(|| format!("import-gguf {}", file.display()))?;
            let quant: Vec<String> = imp.quantization.iter().map(|(k, n)| format!("{n} {k}")).collect();
            println!(
                "{}: {} ({}), {} parameters dequantized to f32 from {} tensors stored as {}; wrote {} in {:.1} s",
                file.display(),
                imp.name.as_deref().unwrap_or("unnamed"),
                imp.architecture,
                imp.parameters,
                imp.quantization.values().sum::<usize>(),
                quant.join(", "),
                out.display(),
                start.elapsed().as_secs_f64()
            );
            println!("the weights carry the file's quantization rounding; gguf.json records the source (SHA-256 {})", &imp.source_sha256[..16]);
            Ok(())
        }
        Command::BenchScore {
            experiment,
            device,
            samples,
        } => {
            let exp = goodhart::Experiment::load(&experiment)?;
            let dev = goodhart::device::parse(&device)?;
            let rates = goodhart::methods::eval::bench_scoring(&exp, &dev, samples)?;
            // One best-of-n cell scores its pool with every model: its rate is the harmonic
            // combination of the measured ones, models of a shape taken one after another.
            let per_sample: f64 = rates.iter().map(|r| r.per_bon_cell as f64 / r.samples_per_s).sum();
            let report = serde_json::json!({
                "experiment": exp.name,
                "device": goodhart::device::describe(&dev),
                "samples": samples,
                "models": rates,
                "bon_cell_models": rates.iter().map(|r| r.per_bon_cell).sum::<usize>(),
                "bon_cell_samples_per_s": 1.0 / per_sample,
            });
            println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            Ok(())
        }
        Command::Validate { experiment, store, max_cpu_hours } => {
            let exp = goodhart::Experiment::load(&experiment)?;
            let (plan, size) = goodhart::plan::check(&exp, max_cpu_hours).with_context(|| experiment.display().to_string())?;
            goodhart::plan::resources::check_resources(&exp, store.as_deref()).with_context(|| experiment.display().to_string())?;
            let cells = goodhart::train::proxy::proxy_cells(&exp, 0);
            let estimate = goodhart::plan::resources::estimate(&exp);
            println!("{}: valid", experiment.display());
            println!(
                "  estimate: {} peak memory (largest part: {}), {} of stored models",
                goodhart::plan::resources::human(estimate.peak_memory_bytes),
                estimate.largest_memory_part,
                goodhart::plan::resources::human(estimate.disk_bytes)
            );
            if let Some(t) = exp.text() {
                let s = t.spec();
                println!("  reference policy: the checkpoint {} ({} params)", s.policy.display(), exp.params.policy);
                match &s.gold {
                    Some(g) => println!("  gold: the reward-model checkpoint {} ({} params)", g.display(), exp.params.gold),
                    None => println!("  gold: the programmatic text labeler (a stand-in, [text.labeler])"),
                }
                let trunk = s.proxy_trunk.as_deref().unwrap_or(&s.policy);
                let trains = s.proxy_layers.map_or("every weight".to_string(), |n| format!("its top {n} layers, final norm and head"));
                for (name, n) in &exp.params.proxies {
                    println!("  proxy {name}: the trunk of {} and a scalar head ({n} params), training {trains}", trunk.display());
                }
                let sizes: Vec<String> = t.split_sizes().iter().map(|(s, n)| format!("{s:?} {n}")).collect();
                println!(
                    "  prompts: {} of {} fit {} tokens ({} dropped); by use: {}",
                    t.prompts().len(),
                    s.prompts.display(),
                    t.layout().prefix_len,
                    t.dropped,
                    sizes.join(", ")
                );
            } else {
                println!("  reference policy: {} params", exp.params.policy);
                println!("  gold RM: {} params", exp.params.gold);
                for (name, n) in &exp.params.proxies {
                    println!("  proxy {name}: {n} params");
                }
            }
            let reps = exp.replicates;
            println!(
                "  {} proxy RMs per replicate ({} sizes x {} data sizes x {} noise levels x {} members), {reps} replicate(s)",
                cells.len(),
                exp.proxy.sizes.len(),
                exp.proxy.data_sizes.len(),
                exp.proxy.noise.len(),
                exp.proxy.members
            );
            if exp.proxy.sources != [goodhart::config::Source::Scratch] && exp.text().is_none() {
                let names: Vec<&str> = exp.proxy.sources.iter().map(|s| s.name()).collect();
                let p = &exp.proxy.pretrain;
                println!(
                    "  ensemble sources: {} (pretrained trunks: {} steps × {} on {} demonstrations)",
                    names.join(", "),
                    p.steps,
                    p.batch,
                    p.demonstrations
                );
            }
            if exp.worlds() > 1 {
                println!("  {} worlds: each replicate draws its own world, π_ref, gold, pairs and held-out proxy", exp.worlds());
            }
            if let Some(h) = goodhart::train::proxy::heldout_cell(&exp, 0) {
                let (n, which) = if exp.proxy.heldout_per_replicate {
                    (reps, if reps > 1 { "ies, one per replicate" } else { "y" })
                } else {
                    (exp.worlds(), if exp.worlds() > 1 { "ies, one per world" } else { "y" })
                };
                println!(
                    "  {n} held-out prox{which} ({}, {} pairs of its own, noise {:.2}; never optimized against)",
                    h.size.name,
                    h.data_size,
                    h.noise
                );
            }
            // What `goodhart run` uses by default: every core.
            let jobs = goodhart::parallel::cores();
            let all: Vec<usize> = (0..plan.cells.len()).collect();
            println!(
                "  {} cells in {} levels (see `goodhart plan`): {} CPU-hours modelled, about {} on these {jobs} core{} (limit {} CPU-hours, --max-cpu-hours)",
                size.cells,
                plan.levels(),
                goodhart::plan::hours(size.cpu_hours),
                goodhart::plan::duration(plan.wall_seconds(&all, jobs)),
                if jobs == 1 { "" } else { "s" },
                goodhart::plan::hours(max_cpu_hours)
            );
            let keys: Vec<&str> = goodhart::plan::kinds::METHODS
                .iter()
                .map(|m| m.needs(&exp))
                .filter(|n| n.unit_rows > 0)
                .map(|n| n.unit_keys)
                .collect();
            println!(
                "  tables: {} unit rows ({}; × replicates), about {} on disk",
                size.unit_rows,
                keys.join("; "),
                goodhart::plan::resources::human(size.table_bytes)
            );
            for m in goodhart::plan::kinds::METHODS {
                for line in m.outline(&exp, &cells) {
                    println!("  {line}");
                }
            }
            Ok(())
        }
    }
}

/// `goodhart checkpoint`: what a folder holds, and a greedy continuation of `prompt`.
fn checkpoint(dir: &std::path::Path, prompt: &str, tokens: usize, samples: usize, dev: &candle_core::Device) -> anyhow::Result<()> {
    use goodhart::model::hf::{Checkpoint, Head};
    let start = std::time::Instant::now();
    let ckpt = Checkpoint::open(dir)?;
    let tok = ckpt.tokenizer()?;
    let cfg = ckpt.config();
    println!(
        "{}: {} ({:?}), {} parameters: {} layers, width {}, {} heads ({} key/value) of {}, vocabulary {}, rope base {}, {} embeddings",
        dir.display(),
        cfg.architecture,
        cfg.family,
        cfg.params(),
        cfg.layers,
        cfg.hidden,
        cfg.heads,
        cfg.kv_heads,
        cfg.head_dim,
        cfg.vocab,
        cfg.rope_theta,
        if cfg.tied_embeddings { "tied" } else { "untied" }
    );
    println!("  digest {} (what cells built from it key on)", ckpt.digest()?);
    if tokens == 0 {
        return Ok(());
    }
    match cfg.head {
        Head::Score => {
            let scorer = ckpt.scorer(dev)?;
            let mut ids: Vec<u32> = cfg.bos.into_iter().collect();
            ids.extend(tok.encode(prompt)?);
            let n = ids.len();
            let input = candle_core::Tensor::from_vec(ids, (1, n), dev)?;
            let r = scorer.forward(&input, &[n])?.to_device(&candle_core::Device::Cpu)?.to_vec1::<f32>()?;
            println!("  reward of {prompt:?}: {:.4}", r[0]);
        }
        Head::CausalLm => {
            let lm = ckpt.causal_lm(dev)?;
            let loaded = start.elapsed().as_secs_f64();
            let mut ids: Vec<u32> = cfg.bos.into_iter().collect();
            ids.extend(tok.encode(prompt)?);
            let t = std::time::Instant::now();
            let new = lm.greedy(&ids, tokens, &cfg.eos)?;
            let secs = t.elapsed().as_secs_f64();
            println!("  loaded in {loaded:.1} s; greedy continuation ({} tokens, {:.1} tokens/s):", new.len(), new.len() as f64 / secs.max(1e-9));
            println!("  {prompt}{}", tok.decode(&new, false)?);
            if samples > 0 {
                sample_timing(&ckpt, &tok, &ids, tokens, samples, dev)?;
            }
        }
    }
    Ok(())
}

/// `goodhart checkpoint --samples N`: N responses to one prompt sampled in a batch as a study
/// would (temperature 1), then their log-probabilities computed in one forward pass, timed.
fn sample_timing(
    ckpt: &goodhart::model::hf::Checkpoint,
    tok: &goodhart::model::hf::TextTokenizer,
    prompt: &[u32],
    tokens: usize,
    samples: usize,
    dev: &candle_core::Device,
) -> anyhow::Result<()> {
    use goodhart::model::hf::{TextLayout, TextPolicy};
    use rand::SeedableRng;
    let layout = TextLayout {
        prefix_len: prompt.len(),
        max_response: tokens,
        stop: ckpt.config().eos.clone(),
        temperature: 1.0,
    };
    let (pi, _) = TextPolicy::load(ckpt, layout, dev, false)?;
    let prefix = pi.prefix(prompt)?;
    let prefixes = vec![prefix.clone(); samples];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let t = std::time::Instant::now();
    let out = pi.sample(&prefixes, 1.0, &mut rng)?;
    let secs = t.elapsed().as_secs_f64();
    let drawn: usize = out.iter().map(|r| r.tokens.len()).sum();
    let finished = out.iter().filter(|r| r.finished).count();
    println!(
        "  sampled {samples} responses in one batch (temperature 1): {drawn} tokens in {secs:.1} s, {:.0} tokens/s; {finished} stopped at an end token, the rest at {tokens}",
        drawn as f64 / secs.max(1e-9)
    );
    let rows: Vec<u32> = out.iter().flat_map(|r| pi.encode(&prefix, r)).collect();
    let rows = candle_core::Tensor::from_vec(rows, (samples, pi.layout().seq_len()), dev)?;
    let t = std::time::Instant::now();
    let (logp, mask) = pi.response_logprobs(&rows)?;
    let total = (logp * &mask)?.sum_all()?.to_scalar::<f32>()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  scored them again (log-probs of every response token, one forward pass): {:.1} s, {:.0} tokens/s; mean log-probability per token {:.3}",
        secs,
        (samples * pi.layout().seq_len()) as f64 / secs.max(1e-9),
        total / drawn.max(1) as f32
    );
    for r in out.iter().take(3) {
        println!("  · {:?}", tok.decode(&r.tokens, false)?);
    }
    Ok(())
}
