//! `goodhart run`: the stages of an experiment, in order, each reusing what the model store
//! already holds.
//!
//! 1. reference policy π_ref (SFT on demonstrations) and its sample diversity;
//! 2. the reference set: π_ref samples every RM is standardized against;
//! 3. the gold RM (distilled from the labeler utility);
//! 4. preference pairs (only built when some proxy must be trained);
//! 5. the proxy grid (sizes × data × noise × members), Bradley–Terry;
//! 6. best-of-n over one π_ref pool against every ensemble × aggregator;
//! 7. PPO runs (ensembles × aggregators × KL penalties), each stored once finished;
//! 8. tables, figures, resolved config and manifest under the results folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::artifacts::{key_of, write_atomic, Meta, Store};
use crate::config::Experiment;
use crate::error::{Error, Result};
use crate::model::{seeded_init, Policy, RewardModel};
use crate::progress::bar;
use crate::rm::{self, Pairs};
use crate::sweep::{proxy_cells, ProxyCell};
use crate::table::{self, RmRow};
use crate::world::{SeqSet, WorldConfig};

/// Pairs are generated in blocks of this many, each from its own seed, so the first n
/// pairs are the same whatever the largest data size is.
const PAIR_BLOCK: usize = 512;
/// Batch size for sampling and scoring (no gradients).
const INFER_BATCH: usize = 512;
/// Version of the PPO algorithm in run recipes: bump it when a code change alters what a run
/// produces for the same settings, so stored runs are not reused stale.
/// 4: plain Adam (weight decay 0) instead of AdamW with weight decay 0.01.
const PPO_VERSION: u32 = 4;
/// Data-parallel shards per SFT and gold batch on the CPU. Fixed (not the core count) so
/// that the same config gives the same models on any CPU.
const CPU_SHARDS: usize = 2;

fn shards(device: &Device) -> usize {
    if device.is_cpu() {
        CPU_SHARDS
    } else {
        1
    }
}

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Results folder (tables, figures, manifest).
    pub out: PathBuf,
    /// Model store shared across experiments.
    pub store: PathBuf,
    pub device: Device,
    /// Overwrite a results folder that holds another config's results.
    pub force: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Models trained by this run (ids).
    pub trained: Vec<String>,
    /// Models loaded from the store.
    pub reused: Vec<String>,
    pub rm_rows: Vec<RmRow>,
    /// Best-of-n and PPO curve points.
    pub curve_rows: Vec<table::CurveRow>,
    /// PPO diagnostics, one row per update of every run.
    pub train_rows: Vec<table::TrainRow>,
    /// PPO runs that failed (run id, one-line error); the other runs carried on.
    pub ppo_failures: Vec<(String, String)>,
    /// Fraction of a one-prompt π_ref pool that repeats an earlier sample.
    pub duplicate_fraction: f64,
    pub out: PathBuf,
}

struct Stages {
    timings: Vec<(String, f64)>,
    trained: Vec<String>,
    reused: Vec<String>,
}

impl Stages {
    fn time<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        info!("stage: {name}");
        let t = Instant::now();
        let out = f(self)?;
        let s = t.elapsed().as_secs_f64();
        info!("stage: {name} done in {s:.1}s");
        self.timings.push((name.to_string(), s));
        Ok(out)
    }
}

/// Runs every stage of `exp`.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunSummary> {
    let config_hash = exp.config_hash();
    check_out_dir(&opts.out, &config_hash, opts.force)?;
    let store = Store::open(&opts.store)?;
    let world = exp.world();
    let device = &opts.device;
    let started = Instant::now();
    let mut st = Stages {
        timings: Vec::new(),
        trained: Vec::new(),
        reused: Vec::new(),
    };

    let (policy, policy_meta) = st.time("reference policy", |st| reference_policy(exp, &store, device, st))?;
    let (reference, duplicate_fraction) = st.time("reference samples", |_| {
        let reference = sample_set(
            &policy,
            &world,
            exp.reference.standardize_samples,
            exp.seed,
            "reference/standardize",
        )?;
        let dup = diversity(&policy, &world, exp.reference.diversity_pool, exp.seed)?;
        info!(
            "π_ref pool of {} samples for one prompt: duplicate fraction {:.4}",
            exp.reference.diversity_pool, dup
        );
        Ok((reference, dup))
    })?;
    let (gold, gold_meta) =
        st.time("gold RM", |st| gold_rm(exp, &store, device, &policy, &reference, &policy_meta.key, st))?;

    let mut cells = proxy_cells(exp);
    cells.extend(crate::sweep::heldout_cell(exp));
    let mut rm_rows = vec![gold_row(exp, &gold_meta)];
    let mut proxies: Vec<(ProxyCell, RewardModel)> = Vec::new();
    let mut proxy_keys: Vec<String> = Vec::new();
    st.time("proxy RMs", |st| {
        let (rows, models) = proxy_rms(
            exp,
            &cells,
            &store,
            device,
            &reference,
            (&policy, &policy_meta.key),
            (&gold, &gold_meta.key),
            st,
        )?;
        proxy_keys = rows.iter().map(|r| r.artifact.clone()).collect();
        rm_rows.extend(rows);
        proxies = models;
        Ok(())
    })?;
    // The held-out proxy (last, if any) scores what the optimizers select; it is never optimized.
    let heldout = match proxies.last() {
        Some((c, _)) if c.heldout => {
            let (_, model) = proxies.pop().expect("non-empty");
            Some((model, proxy_keys.pop().expect("one key per proxy")))
        }
        _ => None,
    };
    let heldout_ref = heldout.as_ref().map(|(m, k)| (m, k.as_str()));

    let mut curve_rows = Vec::new();
    if exp.bon.enabled {
        curve_rows = st.time("best-of-n", |_| best_of_n(exp, &policy, &gold, &proxies, heldout_ref.map(|h| h.0)))?;
    }
    let mut ppo = PpoResults::default();
    if exp.ppo.enabled {
        let models = Models {
            policy: (&policy, &policy_meta.key),
            gold: (&gold, &gold_meta.key),
            proxies: &proxies,
            proxy_keys: &proxy_keys,
            heldout: heldout_ref,
        };
        ppo = st.time("PPO", |st| ppo_sweep(exp, &store, device, &models, st))?;
        curve_rows.extend(ppo.rows.iter().cloned());
    }

    st.time("tables", |st| {
        let mut df = table::rm_frame(&rm_rows)?;
        table::write(&mut df, &opts.out, "rm")?;
        if !curve_rows.is_empty() {
            table::write(&mut table::curve_frame(&curve_rows)?, &opts.out, "curves")?;
            crate::plot::bon_figures(&curve_rows, &opts.out)?;
            crate::plot::ppo_figures(&curve_rows, &opts.out)?;
        }
        if !ppo.train.is_empty() {
            table::write(&mut table::train_frame(&ppo.train)?, &opts.out, "ppo_train")?;
        }
        write_atomic(&opts.out.join("config.resolved.toml"), exp.to_toml().as_bytes())?;
        let mut manifest = manifest(exp, opts, &config_hash, st, &policy_meta, duplicate_fraction, started);
        manifest["ppo_runs"] = json!(ppo.runs);
        manifest["ppo_failures"] = json!(ppo
            .failures
            .iter()
            .map(|(run, error)| json!({ "run": run, "error": error }))
            .collect::<Vec<_>>());
        write_atomic(
            &opts.out.join("manifest.json"),
            serde_json::to_string_pretty(&manifest).expect("manifest serializes").as_bytes(),
        )
    })?;
    if !curve_rows.is_empty() {
        // Fits, scaling, stopping rules, aggregator comparison and report.md, from the tables
        // just written (the same as `goodhart report DIR`).
        crate::report::report(&opts.out)?;
    }
    // The tables stage is timed after the manifest is written; log the grand total.
    info!(
        "run {} finished in {:.1}s: {} models trained, {} reused; results in {}",
        exp.name,
        started.elapsed().as_secs_f64(),
        st.trained.len(),
        st.reused.len(),
        opts.out.display()
    );
    Ok(RunSummary {
        trained: st.trained,
        reused: st.reused,
        rm_rows,
        curve_rows,
        train_rows: ppo.train,
        ppo_failures: ppo.failures,
        duplicate_fraction,
        out: opts.out.clone(),
    })
}

/// Refuses to mix results of two configs in one folder.
fn check_out_dir(out: &Path, config_hash: &str, force: bool) -> Result<()> {
    let manifest = out.join("manifest.json");
    if force || !manifest.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(&manifest, e))?;
    let found = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("config_hash").and_then(|h| h.as_str()).map(String::from))
        .unwrap_or_else(|| "unreadable".into());
    if found != config_hash {
        return Err(Error::ResultsConflict {
            dir: out.to_path_buf(),
            found,
            expected: config_hash.to_string(),
        });
    }
    Ok(())
}

/// Tries the store; an unusable artifact is reported, quarantined and retrained.
fn try_load(store: &Store, kind: &str, key: &str, varmap: &mut VarMap) -> Result<Option<Meta>> {
    match store.load(kind, key, varmap) {
        Ok(m) => Ok(m),
        Err(e @ Error::Artifact { .. }) => {
            warn!("{e}; quarantining it and training again");
            store.quarantine(&store.dir(kind, key))?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn reference_policy(exp: &Experiment, store: &Store, device: &Device, st: &mut Stages) -> Result<(Policy, Meta)> {
    let world = exp.world();
    let cfg = exp.policy_arch();
    let p = &exp.policy;
    let recipe = json!({
        "world": exp.world,
        "arch": cfg,
        "sft": { "demonstrations": p.demonstrations, "steps": p.sft_steps, "batch": p.sft_batch, "lr": p.sft_lr },
        "seed": exp.seed,
    });
    let key = key_of(&recipe);
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let policy = Policy::new(&cfg, &world, vb)?;
    if let Some(meta) = try_load(store, "policy", &key, &mut varmap)? {
        info!("reference policy: reused {}", store.dir("policy", &key).display());
        st.reused.push("reference policy".into());
        return Ok((policy, meta));
    }
    seeded_init(&varmap, crate::seed::derive(exp.seed, "init/policy"), cfg.layers)?;
    let mut rng = crate::seed::rng(exp.seed, "sft/demonstrations");
    let n_val = (p.demonstrations / 10).clamp(1, 2000);
    let (prompts, responses) = crate::sft::demonstrations(&world, p.demonstrations + n_val, &mut rng);
    let all = crate::model::policy::encode_all(&world, &prompts, &responses);
    let train = all.select(&(0..p.demonstrations).collect::<Vec<_>>());
    let val = all.select(&(p.demonstrations..p.demonstrations + n_val).collect::<Vec<_>>());
    let t = Instant::now();
    let pb = bar(p.sft_steps as u64, "SFT reference policy");
    let report = crate::sft::train(
        &policy,
        &varmap,
        &train,
        &val,
        &crate::sft::SftParams {
            steps: p.sft_steps,
            batch: p.sft_batch,
            lr: p.sft_lr,
            seed: crate::seed::derive(exp.seed, "sft"),
            shards: shards(device),
        },
        &pb,
    )?;
    pb.finish_and_clear();
    info!(
        "reference policy: {} params, SFT train loss {:.3}, val loss {:.3} nats/token",
        crate::model::param_count(&varmap),
        report.train_loss,
        report.val_loss
    );
    let info = json!({ "sft": report, "train_seconds": t.elapsed().as_secs_f64() });
    let meta = store.save("policy", &key, recipe, &varmap, info)?;
    st.trained.push("reference policy".into());
    Ok((policy, meta))
}

/// `n` π_ref samples at temperature 1 for fresh prompts, from the stream `label`.
fn sample_set(policy: &Policy, world: &WorldConfig, n: usize, seed: u64, label: &str) -> Result<SeqSet> {
    let s = prompts_and_samples(policy, world, n, seed, label)?;
    Ok(crate::model::policy::encode_all(world, &s.0, &s.1))
}

/// Prompts and one π_ref response each, sampled in seeded blocks on the work pool.
fn prompts_and_samples(
    policy: &Policy,
    world: &WorldConfig,
    n: usize,
    seed: u64,
    label: &str,
) -> Result<(Vec<Vec<u32>>, Vec<crate::world::Response>)> {
    let blocks: Vec<usize> = (0..n.div_ceil(PAIR_BLOCK)).collect();
    let parts = crate::parallel::map(&blocks, |&block| -> Result<_> {
        let mut rng = crate::seed::rng(seed, &format!("{label}/block{block}"));
        let take = PAIR_BLOCK.min(n - block * PAIR_BLOCK);
        let prompts: Vec<Vec<u32>> = (0..take).map(|_| world.sample_prompt(&mut rng)).collect();
        let responses = policy.sample(&prompts, 1.0, &mut rng)?;
        Ok((prompts, responses))
    });
    let (mut prompts, mut responses) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for part in parts {
        let (p, r) = part?;
        prompts.extend(p);
        responses.extend(r);
    }
    Ok((prompts, responses))
}

/// Duplicate fraction of `n` π_ref samples for one prompt (sampled in seeded blocks).
fn diversity(policy: &Policy, world: &WorldConfig, n: usize, seed: u64) -> Result<f64> {
    let mut rng = crate::seed::rng(seed, "reference/diversity");
    let prompt = world.sample_prompt(&mut rng);
    let blocks: Vec<usize> = (0..n.div_ceil(PAIR_BLOCK)).collect();
    let parts = crate::parallel::map(&blocks, |&block| {
        let mut rng = crate::seed::rng(seed, &format!("reference/diversity/block{block}"));
        let take = PAIR_BLOCK.min(n - block * PAIR_BLOCK);
        policy.sample(&vec![prompt.clone(); take], 1.0, &mut rng)
    });
    let mut responses = Vec::with_capacity(n);
    for part in parts {
        responses.extend(part?);
    }
    Ok(crate::sft::duplicate_fraction(&responses))
}

/// Prompts and two π_ref responses each, generated in seeded blocks of [`PAIR_BLOCK`].
struct PairSamples {
    prompts: Vec<Vec<u32>>,
    a: Vec<crate::world::Response>,
    b: Vec<crate::world::Response>,
}

fn pair_samples(policy: &Policy, world: &WorldConfig, n: usize, seed: u64, label: &str) -> Result<PairSamples> {
    let blocks: Vec<usize> = (0..n.div_ceil(PAIR_BLOCK)).collect();
    let parts = crate::parallel::map(&blocks, |&block| -> Result<_> {
        let mut rng = crate::seed::rng(seed, &format!("{label}/block{block}"));
        let prompts: Vec<Vec<u32>> = (0..PAIR_BLOCK).map(|_| world.sample_prompt(&mut rng)).collect();
        let a = policy.sample(&prompts, 1.0, &mut rng)?;
        let b = policy.sample(&prompts, 1.0, &mut rng)?;
        let take = PAIR_BLOCK.min(n - block * PAIR_BLOCK);
        Ok((prompts, a, b, take))
    });
    let mut out = PairSamples {
        prompts: Vec::with_capacity(n),
        a: Vec::with_capacity(n),
        b: Vec::with_capacity(n),
    };
    for part in parts {
        let (prompts, a, b, take) = part?;
        out.prompts.extend(prompts.into_iter().take(take));
        out.a.extend(a.into_iter().take(take));
        out.b.extend(b.into_iter().take(take));
    }
    Ok(out)
}

/// Encodes pair samples and scores them with gold (standardized).
fn scored_pairs(world: &WorldConfig, s: &PairSamples, gold: &RewardModel) -> Result<Pairs> {
    let a = crate::model::policy::encode_all(world, &s.prompts, &s.a);
    let b = crate::model::policy::encode_all(world, &s.prompts, &s.b);
    let gold_a = gold.score_set(&a, INFER_BATCH)?;
    let gold_b = gold.score_set(&b, INFER_BATCH)?;
    Ok(Pairs { a, b, gold_a, gold_b })
}

/// How often gold orders held-out pairs as the labeler utility does (utility ties
/// excluded), and the Bradley–Terry loss of gold's raw scores against those labels.
fn labeler_agreement(world: &WorldConfig, gold: &RewardModel, s: &PairSamples, pairs: &Pairs) -> Result<(f64, f64, usize)> {
    let ra = gold.raw_set(&pairs.a, INFER_BATCH)?;
    let rb = gold.raw_set(&pairs.b, INFER_BATCH)?;
    let (mut n, mut correct, mut loss) = (0usize, 0usize, 0f64);
    for i in 0..s.prompts.len() {
        let ua = world.utility(&s.prompts[i], &s.a[i]);
        let ub = world.utility(&s.prompts[i], &s.b[i]);
        if (ua - ub).abs() < 1e-9 {
            continue;
        }
        n += 1;
        let margin = if ua > ub { ra[i] - rb[i] } else { rb[i] - ra[i] } as f64;
        correct += (margin > 0.0) as usize;
        loss += margin.min(0.0).abs() + (-margin.abs()).exp().ln_1p();
    }
    let d = n.max(1) as f64;
    Ok((correct as f64 / d, loss / d, n))
}

fn set_standardization(model: &mut RewardModel, meta: &Meta) {
    let get = |k: &str| meta.info.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN) as f32;
    model.offset = get("offset");
    model.scale = get("scale");
}

fn gold_rm(
    exp: &Experiment,
    store: &Store,
    device: &Device,
    policy: &Policy,
    reference: &SeqSet,
    policy_key: &str,
    st: &mut Stages,
) -> Result<(RewardModel, Meta)> {
    let world = exp.world();
    let cfg = exp.gold_arch();
    let g = &exp.gold;
    let recipe = json!({
        "world": exp.world,
        "utility": crate::world::utility::recipe(),
        "arch": cfg,
        "distill": g,
        "seed": exp.seed,
        "reference": { "policy": policy_key, "samples": exp.reference.standardize_samples },
        "val_pairs": exp.preferences.val_pairs,
    });
    let key = key_of(&recipe);
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let mut gold = RewardModel::new(&cfg, vb)?;
    if let Some(meta) = try_load(store, "gold", &key, &mut varmap)? {
        set_standardization(&mut gold, &meta);
        info!("gold RM: reused {}", store.dir("gold", &key).display());
        st.reused.push("gold".into());
        return Ok((gold, meta));
    }
    seeded_init(&varmap, crate::seed::derive(exp.seed, "init/gold"), cfg.layers)?;
    let mut rng = crate::seed::rng(exp.seed, "gold/data");
    let n_val = (g.samples / 10).clamp(1, 4000);
    let (set, target) = rm::gold_dataset(&world, g.samples + n_val, &mut rng);
    let train = set.select(&(0..g.samples).collect::<Vec<_>>());
    let val = set.select(&(g.samples..g.samples + n_val).collect::<Vec<_>>());
    let t = Instant::now();
    let pb = bar(g.steps as u64, "distill gold RM");
    let params = rm::GoldParams {
        steps: g.steps,
        batch: g.batch,
        lr: g.lr,
        seed: crate::seed::derive(exp.seed, "gold"),
        shards: shards(device),
    };
    let (mean, std) = rm::gold_target_stats(&target[..g.samples]);
    let z: Vec<f32> = target.iter().map(|&u| rm::gold_target(u, mean, std)).collect();
    let train_loss = rm::train_gold(&gold, &varmap, &train, &z[..g.samples], &params, &pb)?;
    pb.finish_and_clear();
    let train_seconds = t.elapsed().as_secs_f64();
    let r2 = rm::r_squared(&gold.raw_set(&val, INFER_BATCH)?, &z[g.samples..]);
    gold.standardize(&gold.raw_set(reference, INFER_BATCH)?);
    let samples = pair_samples(policy, &world, exp.preferences.val_pairs, exp.seed, "pairs/val")?;
    let pairs = scored_pairs(&world, &samples, &gold)?;
    let (acc, bt, counted) = labeler_agreement(&world, &gold, &samples, &pairs)?;
    info!(
        "gold RM: {} params, distill MSE {:.3} (z-units), R² {:.3} against its distillation target on held-out samples, \
         orders {:.1}% of {counted} untied π_ref pairs as the labeler does",
        crate::model::param_count(&varmap),
        train_loss,
        r2,
        acc * 100.0
    );
    let info = json!({
        "offset": gold.offset, "scale": gold.scale,
        "train_mse_z": train_loss, "distill_r2_sse_sst": r2,
        "val_accuracy": acc, "val_bt_loss": bt, "val_pairs": counted,
        "train_examples": g.samples, "train_steps": g.steps, "train_seconds": train_seconds,
    });
    let meta = store.save("gold", &key, recipe, &varmap, info)?;
    st.trained.push("gold".into());
    Ok((gold, meta))
}

/// Training and validation pairs, built once per run and only if a proxy needs training.
struct PairData {
    train: Pairs,
    /// Gold's clean labels (per the label mode) of the training pairs; true: a preferred.
    labels: Vec<bool>,
    /// The held-out proxy's own pairs and clean labels, sampled independently of `train`.
    heldout: Option<(Pairs, Vec<bool>)>,
    val: Pairs,
}

fn build_pairs(exp: &Experiment, policy: &Policy, gold: &RewardModel, heldout: Option<usize>) -> Result<PairData> {
    let world = exp.world();
    let max = *exp.proxy.data_sizes.iter().max().expect("validated non-empty");
    let samples = pair_samples(policy, &world, max, exp.seed, "pairs/train")?;
    let train = scored_pairs(&world, &samples, gold)?;
    let mut rng = crate::seed::rng(exp.seed, "pairs/labels");
    let labels = rm::label_pairs(&train.gold_a, &train.gold_b, exp.preferences.label, &mut rng);
    let heldout = match heldout {
        None => None,
        Some(n) => {
            let s = pair_samples(policy, &world, n, exp.seed, "pairs/heldout")?;
            let pairs = scored_pairs(&world, &s, gold)?;
            let mut rng = crate::seed::rng(exp.seed, "pairs/heldout/labels");
            let labels = rm::label_pairs(&pairs.gold_a, &pairs.gold_b, exp.preferences.label, &mut rng);
            Some((pairs, labels))
        }
    };
    let val_samples = pair_samples(policy, &world, exp.preferences.val_pairs, exp.seed, "pairs/val")?;
    let val = scored_pairs(&world, &val_samples, gold)?;
    Ok(PairData {
        train,
        labels,
        heldout,
        val,
    })
}

/// One proxy of the grid: its model, recipe and (once loaded or trained) its meta.
struct ProxySlot {
    cell: ProxyCell,
    cfg: crate::model::TransformerConfig,
    recipe: Value,
    key: String,
    varmap: VarMap,
    model: RewardModel,
    meta: Option<Meta>,
}

/// Loads every stored proxy of the grid, builds the preference pairs once if any proxy is
/// missing, trains the missing ones, and returns every proxy's row in grid order.
#[allow(clippy::too_many_arguments)]
fn proxy_rms(
    exp: &Experiment,
    cells: &[ProxyCell],
    store: &Store,
    device: &Device,
    reference: &SeqSet,
    (policy, policy_key): (&Policy, &str),
    (gold, gold_key): (&RewardModel, &str),
    st: &mut Stages,
) -> Result<(Vec<RmRow>, Vec<(ProxyCell, RewardModel)>)> {
    let x = &exp.proxy;
    let mut slots = Vec::with_capacity(cells.len());
    for cell in cells {
        let cfg = exp.proxy_arch(&cell.size);
        let recipe = json!({
            "arch": cfg,
            "data_size": cell.data_size,
            "noise": cell.noise,
            "member": cell.member,
            "train": { "epochs": x.epochs, "batch": x.batch, "lr": x.lr, "bootstrap": x.bootstrap },
            "label": exp.preferences.label,
            "val_pairs": exp.preferences.val_pairs,
            "pair_block": PAIR_BLOCK,
            "seed": exp.seed,
            "policy": policy_key,
            "gold": gold_key,
        });
        let mut recipe = recipe;
        if cell.heldout {
            recipe["pairs"] = json!("pairs/heldout");
        }
        let key = key_of(&recipe);
        let mut varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = RewardModel::new(&cfg, vb)?;
        let meta = try_load(store, "proxy", &key, &mut varmap)?;
        if meta.is_some() {
            st.reused.push(cell.id());
        }
        slots.push(ProxySlot {
            cell: cell.clone(),
            cfg,
            recipe,
            key,
            varmap,
            model,
            meta,
        });
    }
    let missing: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].meta.is_none()).collect();
    if !missing.is_empty() {
        info!("training {} of {} proxy RMs ({} found in the store)", missing.len(), slots.len(), slots.len() - missing.len());
        let heldout = missing.iter().find(|&&i| slots[i].cell.heldout).map(|&i| slots[i].cell.data_size);
        let data = build_pairs(exp, policy, gold, heldout)?;
        let steps: u64 = missing
            .iter()
            .map(|&i| (slots[i].cell.data_size.div_ceil(x.batch) * x.epochs) as u64)
            .sum();
        let pb = bar(steps, "train proxy RMs");
        // Independent models side by side on the work pool (candle itself runs one thread).
        let train = |&i: &usize| train_proxy_slot(exp, &slots[i], store, reference, &data, &pb);
        let trained: Vec<Result<Meta>> = if device.is_cpu() {
            crate::parallel::map(&missing, train)
        } else {
            missing.iter().map(train).collect()
        };
        pb.finish_and_clear();
        for (&i, meta) in missing.iter().zip(trained) {
            slots[i].meta = Some(meta?);
            st.trained.push(slots[i].cell.id());
        }
    }
    let mut rows = Vec::with_capacity(slots.len());
    let mut models = Vec::with_capacity(slots.len());
    for mut s in slots {
        let meta = s.meta.as_ref().expect("loaded or trained");
        set_standardization(&mut s.model, meta);
        let (role, ensemble) = if s.cell.heldout { ("heldout", String::new()) } else { ("proxy", s.cell.ensemble_id()) };
        rows.push(row_from_meta(&s.cell.id(), role, &s.cell.size.name, &ensemble, &s.cfg, Some(&s.cell), meta));
        models.push((s.cell, s.model));
    }
    Ok((rows, models))
}

/// Best-of-n: one pool of π_ref samples for held-out prompts, scored once by gold and by
/// every proxy (models in parallel), then every ensemble × aggregator reads that pool.
fn best_of_n(
    exp: &Experiment,
    policy: &Policy,
    gold: &RewardModel,
    proxies: &[(ProxyCell, RewardModel)],
    heldout: Option<&RewardModel>,
) -> Result<Vec<table::CurveRow>> {
    let world = exp.world();
    let b = &exp.bon;
    let mut rng = crate::seed::rng(exp.seed, "bon/prompts");
    let prompts: Vec<Vec<u32>> = (0..b.prompts).map(|_| world.sample_prompt(&mut rng)).collect();
    // Pool: prompt-major, `pool` samples per prompt, in seeded blocks.
    let per_prompt = b.pool.div_ceil(PAIR_BLOCK);
    let blocks: Vec<(usize, usize)> = (0..b.prompts).flat_map(|p| (0..per_prompt).map(move |k| (p, k))).collect();
    let pb = bar(blocks.len() as u64, "sample best-of-n pools");
    let parts = crate::parallel::map(&blocks, |&(p, k)| {
        let mut rng = crate::seed::rng(exp.seed, &format!("bon/pool/prompt{p}/block{k}"));
        let take = PAIR_BLOCK.min(b.pool - k * PAIR_BLOCK);
        let r = policy.sample(&vec![prompts[p].clone(); take], 1.0, &mut rng);
        pb.inc(1);
        r
    });
    pb.finish_and_clear();
    let mut responses = Vec::with_capacity(b.prompts * b.pool);
    for part in parts {
        responses.extend(part?);
    }
    let pool_prompts: Vec<Vec<u32>> = prompts.iter().flat_map(|p| std::iter::repeat_n(p.clone(), b.pool)).collect();
    let set = crate::model::policy::encode_all(&world, &pool_prompts, &responses);
    let groups = crate::bon::group_ids(&responses, b.pool);
    let (length, distinct_ratio) = crate::bon::response_stats(&responses);
    let dup = responses.chunks(b.pool).map(crate::sft::duplicate_fraction).sum::<f64>() / b.prompts as f64;
    info!("best-of-n pools: {} prompts x {} samples (duplicate fraction {:.4})", b.prompts, b.pool, dup);

    // Score once: gold and every proxy, one model per job.
    let models: Vec<&RewardModel> = std::iter::once(gold)
        .chain(proxies.iter().map(|(_, m)| m))
        .chain(heldout)
        .collect();
    let pb = bar(models.len() as u64, "score pools (gold + proxies)");
    let scored = crate::parallel::map(&models, |m| {
        let s = m.score_set(&set, INFER_BATCH);
        pb.inc(1);
        s
    });
    pb.finish_and_clear();
    let mut scores = Vec::with_capacity(models.len());
    for s in scored {
        scores.push(s?);
    }
    let gold_scores = &scores[0];
    let view = crate::bon::PoolView {
        prompts: b.prompts,
        size: b.pool,
        gold: gold_scores,
        groups: &groups,
        length: &length,
        distinct_ratio: &distinct_ratio,
        heldout: heldout.map(|_| scores[proxies.len() + 1].as_slice()),
    };

    // Ensembles: proxies sharing size, data and noise, in grid order.
    let cells: Vec<ProxyCell> = proxies.iter().map(|(c, _)| c.clone()).collect();
    let ensembles = crate::sweep::ensembles(&cells);
    let ns = crate::bon::n_grid(b.pool);
    let lf = crate::bon::LogFactorials::new(b.pool);
    let mut jobs = Vec::new();
    for (id, members) in &ensembles {
        for agg in b.aggregators(members.len()) {
            jobs.push((id.clone(), members.clone(), agg));
        }
    }
    let curves = crate::parallel::map(&jobs, |(_, members, agg)| {
        let member_scores: Vec<&[f32]> = members.iter().map(|&i| scores[i + 1].as_slice()).collect();
        crate::bon::curve(*agg, &member_scores, view, &ns, &lf)
    });
    let mut rows = Vec::new();
    for ((id, members, agg), points) in jobs.iter().zip(curves) {
        let cell = &proxies[members[0]].0;
        let params = exp.proxy_arch(&cell.size).reward_params() as u64;
        for pt in points {
            rows.push(table::CurveRow {
                method: "bon".into(),
                aggregator: agg.name(),
                lambda: agg.lambda(),
                proxy_size: cell.size.name.clone(),
                proxy_params: params,
                data_size: cell.data_size as u64,
                label_noise: cell.noise,
                ensemble: id.clone(),
                n: Some(pt.n as u64),
                step: None,
                kl_penalty: None,
                kl: pt.kl_bound,
                kl_kind: "bon_bound".into(),
                kl_k3: None,
                kl_bound: Some(pt.kl_bound),
                kl_exact: Some(pt.kl_exact),
                sqrt_kl: pt.kl_bound.sqrt(),
                gold: pt.gold,
                gold_se: pt.gold_se,
                proxy: pt.proxy,
                members: pt.members,
                disagreement: pt.disagreement,
                length: pt.length,
                distinct_ratio: pt.distinct_ratio,
                heldout: pt.heldout,
                gold_below_peak: pt.gold_below_peak,
                gold_below_peak_se: pt.gold_below_peak_se,
                prompts: b.prompts as u64,
                pool: Some(b.pool as u64),
            });
        }
    }
    Ok(rows)
}

/// The trained models a PPO sweep reads, with their artifact keys (for run recipes).
struct Models<'a> {
    policy: (&'a Policy, &'a str),
    gold: (&'a RewardModel, &'a str),
    proxies: &'a [(ProxyCell, RewardModel)],
    /// `proxy-KEY` of each proxy, in `proxies` order.
    proxy_keys: &'a [String],
    /// The held-out proxy and its key, if the experiment has one.
    heldout: Option<(&'a RewardModel, &'a str)>,
}

/// What the PPO sweep produced.
#[derive(Default)]
struct PpoResults {
    rows: Vec<table::CurveRow>,
    train: Vec<table::TrainRow>,
    /// (run id, trained | reused | failed)
    runs: Vec<(String, &'static str)>,
    failures: Vec<(String, String)>,
}

/// PPO: one run per (ensemble, aggregator, β), each starting from π_ref. Finished runs are
/// stored (final policy + evaluations + diagnostics) and reused; missing runs train side by
/// side on the work pool. A run that fails is logged and listed; the others carry on.
fn ppo_sweep(exp: &Experiment, store: &Store, device: &Device, m: &Models, st: &mut Stages) -> Result<PpoResults> {
    let world = exp.world();
    let cells: Vec<ProxyCell> = m.proxies.iter().map(|(c, _)| c.clone()).collect();
    let runs = crate::sweep::ppo_cells(exp, &cells);
    let mut rng = crate::seed::rng(exp.seed, "ppo/eval/prompts");
    let eval_prompts: Vec<Vec<u32>> = (0..exp.ppo.eval_prompts).map(|_| world.sample_prompt(&mut rng)).collect();
    // The run's settings, without the lists that only choose which runs exist.
    let mut settings = serde_json::to_value(&exp.ppo).expect("ppo spec serializes");
    for k in ["enabled", "sizes", "data_sizes", "noise", "kl_penalties", "single_members", "aggregators", "uwo_lambdas", "mean_std_lambdas"] {
        settings.as_object_mut().expect("ppo spec is a table").remove(k);
    }
    let cfg = exp.policy_arch();
    let mut outcomes: Vec<Option<crate::ppo::Outcome>> = Vec::with_capacity(runs.len());
    let mut keys = Vec::with_capacity(runs.len());
    for run in &runs {
        let recipe = json!({
            "policy": m.policy.1,
            "gold": m.gold.1,
            "members": run.members.iter().map(|&i| &m.proxy_keys[i]).collect::<Vec<_>>(),
            "aggregator": run.aggregator,
            "kl_penalty": run.beta,
            "settings": settings,
            "seed": exp.seed,
            "run": run.id(),
            "heldout": m.heldout.map(|h| h.1),
            "version": PPO_VERSION,
        });
        let key = key_of(&recipe);
        let mut varmap = VarMap::new();
        let _ = Policy::new(&cfg, &world, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        let loaded = try_load(store, "ppo", &key, &mut varmap)?
            .and_then(|meta| serde_json::from_value::<crate::ppo::Outcome>(meta.info["outcome"].clone()).ok());
        if loaded.is_some() {
            st.reused.push(run.id());
        }
        outcomes.push(loaded);
        keys.push((key, recipe));
    }
    let missing: Vec<usize> = (0..runs.len()).filter(|&i| outcomes[i].is_none()).collect();
    let mut out = PpoResults::default();
    if !missing.is_empty() {
        info!("PPO: training {} of {} runs ({} found in the store)", missing.len(), runs.len(), runs.len() - missing.len());
        let pb = bar((missing.len() * exp.ppo.updates) as u64, "PPO runs (updates)");
        let train_one = |&i: &usize| -> Result<crate::ppo::Outcome> {
            let run = &runs[i];
            let spec = crate::ppo::RunSpec {
                id: run.id(),
                aggregator: run.aggregator,
                beta: run.beta,
            };
            let mut varmap = VarMap::new();
            let policy = Policy::new(&cfg, &world, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
            if store.load("policy", m.policy.1, &mut varmap)?.is_none() {
                return Err(Error::Artifact {
                    dir: store.dir("policy", m.policy.1),
                    reason: "reference policy vanished from the store during the run".into(),
                });
            }
            let ctx = crate::ppo::Context {
                world: &world,
                reference: m.policy.0,
                gold: m.gold.0,
                members: run.members.iter().map(|&j| &m.proxies[j].1).collect(),
                heldout: m.heldout.map(|h| h.0),
                spec: &exp.ppo,
                seed: exp.seed,
                eval_prompts: &eval_prompts,
            };
            let t = Instant::now();
            let outcome = crate::ppo::train(&ctx, &spec, &policy, &varmap, &pb)?;
            let last = outcome.evaluations.last().expect("at least the step-0 evaluation");
            pb.suspend(|| {
                info!(
                    "{}: {} updates in {:.0}s, KL {:.2} nats, proxy {:.2}, gold {:.2}{}",
                    spec.id,
                    outcome.updates.len(),
                    t.elapsed().as_secs_f64(),
                    last.kl_k1,
                    last.proxy,
                    crate::bon::mean_se(&last.gold_by_prompt).0,
                    if outcome.stopped_at_budget { " (stopped at the KL budget)" } else { "" }
                )
            });
            let (key, recipe) = &keys[i];
            let info = json!({ "outcome": outcome, "train_seconds": t.elapsed().as_secs_f64() });
            store.save("ppo", key, recipe.clone(), &varmap, info)?;
            Ok(outcome)
        };
        let trained: Vec<Result<crate::ppo::Outcome>> = if device.is_cpu() {
            crate::parallel::map(&missing, train_one)
        } else {
            missing.iter().map(train_one).collect()
        };
        pb.finish_and_clear();
        for (&i, result) in missing.iter().zip(trained) {
            match result {
                Ok(o) => {
                    outcomes[i] = Some(o);
                    st.trained.push(runs[i].id());
                }
                Err(e) => {
                    warn!("{}: failed, the other runs carry on: {e}", runs[i].id());
                    out.failures.push((runs[i].id(), e.to_string()));
                }
            }
        }
    }
    for (i, (run, outcome)) in runs.iter().zip(&outcomes).enumerate() {
        let status = match (outcome, missing.contains(&i)) {
            (None, _) => "failed",
            (Some(_), true) => "trained",
            (Some(_), false) => "reused",
        };
        out.runs.push((run.id(), status));
        if let Some(o) = outcome {
            let (rows, train) = ppo_rows(exp, m, run, o);
            out.rows.extend(rows);
            out.train.extend(train);
        }
    }
    Ok(out)
}

/// Curve rows (one per evaluation checkpoint) and training rows (one per update) of a run.
fn ppo_rows(
    exp: &Experiment,
    m: &Models,
    run: &crate::sweep::PpoCell,
    o: &crate::ppo::Outcome,
) -> (Vec<table::CurveRow>, Vec<table::TrainRow>) {
    let cell = &m.proxies[run.members[0]].0;
    let params = exp.proxy_arch(&cell.size).reward_params() as u64;
    let below = crate::ppo::below_peak(&o.evaluations);
    let rows = o
        .evaluations
        .iter()
        .zip(below)
        .map(|(e, (gold_below_peak, gold_below_peak_se))| {
            let (gold, gold_se) = crate::bon::mean_se(&e.gold_by_prompt);
            table::CurveRow {
                method: "ppo".into(),
                aggregator: run.aggregator.name(),
                lambda: run.aggregator.lambda(),
                proxy_size: cell.size.name.clone(),
                proxy_params: params,
                data_size: cell.data_size as u64,
                label_noise: cell.noise,
                ensemble: run.ensemble.clone(),
                n: None,
                step: Some(e.step as u64),
                kl_penalty: Some(run.beta),
                kl: e.kl_k1,
                kl_kind: "ppo_k1".into(),
                kl_k3: Some(e.kl_k3),
                kl_bound: None,
                kl_exact: None,
                sqrt_kl: e.kl_k1.max(0.0).sqrt(),
                gold,
                gold_se,
                proxy: e.proxy,
                members: e.members.clone(),
                disagreement: e.disagreement,
                length: e.length,
                distinct_ratio: e.distinct_ratio,
                heldout: e.heldout,
                gold_below_peak,
                gold_below_peak_se,
                prompts: e.gold_by_prompt.len() as u64,
                pool: None,
            }
        })
        .collect();
    let train = o
        .updates
        .iter()
        .map(|u| table::TrainRow {
            run: run.id(),
            aggregator: run.aggregator.name(),
            lambda: run.aggregator.lambda(),
            ensemble: run.ensemble.clone(),
            kl_penalty: run.beta,
            stats: u.clone(),
        })
        .collect();
    (rows, train)
}

/// Trains, evaluates, standardizes and stores one proxy.
fn train_proxy_slot(
    exp: &Experiment,
    slot: &ProxySlot,
    store: &Store,
    reference: &SeqSet,
    data: &PairData,
    pb: &indicatif::ProgressBar,
) -> Result<Meta> {
    let x = &exp.proxy;
    let (cell, id) = (&slot.cell, slot.cell.id());
    // From the id alone (not the artifact key, which also hashes the store format).
    let member_seed = crate::seed::derive(exp.seed, &format!("init/{id}"));
    seeded_init(&slot.varmap, member_seed, slot.cfg.layers)?;
    let (train, clean) = match (&data.heldout, cell.heldout) {
        (Some((pairs, labels)), true) => (pairs, labels),
        _ => (&data.train, &data.labels),
    };
    let mut labels = clean.clone();
    let noise_stream = if cell.heldout { "pairs/heldout/noise" } else { "pairs/noise" };
    let mut rng = crate::seed::rng(exp.seed, &format!("{noise_stream}/{:.4}", cell.noise));
    rm::apply_label_noise(&mut labels, cell.noise, &mut rng);
    let n_flip = labels[..cell.data_size]
        .iter()
        .zip(&clean[..cell.data_size])
        .filter(|(a, b)| a != b)
        .count();
    let t = Instant::now();
    let params = rm::ProxyParams {
        epochs: x.epochs,
        batch: x.batch,
        lr: x.lr,
        bootstrap: x.bootstrap,
        seed: member_seed,
    };
    let steps = rm::train_proxy(&slot.model, &slot.varmap, train, &labels, cell.data_size, &params, &id, pb)?;
    let train_seconds = t.elapsed().as_secs_f64();
    let (acc, bt) = rm::evaluate_pairs(&slot.model, &data.val, INFER_BATCH)?;
    let mut model = slot.model.clone();
    model.standardize(&model.raw_set(reference, INFER_BATCH)?);
    pb.suspend(|| {
        info!(
            "{id}: {} params, {} pairs ({n_flip} labels flipped), val accuracy {:.1}%, val BT loss {:.3}",
            crate::model::param_count(&slot.varmap),
            cell.data_size,
            acc * 100.0,
            bt
        )
    });
    let info = json!({
        "offset": model.offset, "scale": model.scale,
        "val_accuracy": acc, "val_bt_loss": bt, "val_pairs": data.val.len(),
        "labels_flipped": n_flip,
        "train_examples": cell.data_size, "train_steps": steps, "train_seconds": train_seconds,
    });
    store.save("proxy", &slot.key, slot.recipe.clone(), &slot.varmap, info)
}

fn gold_row(exp: &Experiment, meta: &Meta) -> RmRow {
    let mut row = row_from_meta("gold", "gold", "gold", "", &exp.gold_arch(), None, meta);
    row.distill_r2 = meta.info.get("distill_r2_sse_sst").and_then(|v| v.as_f64());
    row
}

fn row_from_meta(
    id: &str,
    role: &str,
    size: &str,
    ensemble: &str,
    cfg: &crate::model::TransformerConfig,
    cell: Option<&ProxyCell>,
    meta: &Meta,
) -> RmRow {
    let f = |k: &str| meta.info.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let u = |k: &str| meta.info.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    RmRow {
        model: id.to_string(),
        role: role.to_string(),
        size: size.to_string(),
        ensemble: ensemble.to_string(),
        params: meta.params as u64,
        layers: cfg.layers as u64,
        width: cfg.width as u64,
        train_examples: u("train_examples"),
        label_noise: cell.map(|c| c.noise),
        member: cell.filter(|c| !c.heldout).map(|c| c.member as u64),
        val_pairs: u("val_pairs"),
        val_accuracy: f("val_accuracy"),
        val_bt_loss: f("val_bt_loss"),
        distill_r2: None,
        train_steps: u("train_steps"),
        train_seconds: f("train_seconds"),
        score_offset: f("offset"),
        score_scale: f("scale"),
        artifact: format!("{}-{}", meta.kind, meta.key),
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn manifest(
    exp: &Experiment,
    opts: &RunOptions,
    config_hash: &str,
    st: &Stages,
    policy_meta: &Meta,
    duplicate_fraction: f64,
    started: Instant,
) -> Value {
    json!({
        "goodhart_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "experiment": exp.name,
        "config_hash": config_hash,
        "seed": exp.seed,
        "device": crate::device::describe(&opts.device),
        "store": opts.store,
        "stage_seconds": st.timings.iter().map(|(n, s)| json!({ "stage": n, "seconds": s })).collect::<Vec<_>>(),
        "total_seconds_before_tables": started.elapsed().as_secs_f64(),
        "models_trained": st.trained,
        "models_reused": st.reused,
        "params": exp.params,
        "reference_policy": {
            "artifact": format!("policy-{}", policy_meta.key),
            "sft": policy_meta.info.get("sft"),
            "diversity_pool_samples": exp.reference.diversity_pool,
            "duplicate_fraction": duplicate_fraction,
        },
    })
}
