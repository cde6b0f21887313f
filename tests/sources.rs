//! Where an ensemble's members differ (`proxy.sources`): pretrained trunks made once and
//! read by every fine-tune that names them, a multi-head model whose heads learn by their
//! own losses on one trunk, WARM as the weight average of the fine-tuned members, the
//! `source` claims and the ensembles' costs, and the refusals.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use goodhart::config::Source;
use goodhart::plan::Plan;
use goodhart::train::proxy::ProxyCell;
use goodhart::Experiment;

const SOURCES: &str = "sources = [\"scratch\", \"finetune\", \"pretrain\", \"bootstrap\", \"multihead\", \"warm\"]\npretrain = { demonstrations = 200, steps = 10, batch = 16 }\n";

fn with_sources() -> Experiment {
    let text = common::tiny_with("sources = [\"scratch\"]\n", SOURCES);
    Experiment::from_toml(&text, Path::new("sources.toml")).unwrap()
}

/// The error of the tiny study with its `sources` line replaced by `with` (and, if given,
/// its members by `members`).
fn refused(with: &str, members: Option<&str>) -> String {
    let mut text = common::tiny_with("sources = [\"scratch\"]\n", with);
    if let Some(m) = members {
        text = text.replacen("members = 2\n", m, 1);
    }
    Experiment::from_toml(&text, Path::new("s.toml")).unwrap_err().to_string()
}

#[test]
fn a_source_that_does_not_apply_is_refused_in_one_line() {
    let e = refused("sources = [\"warm\"]\n", None);
    assert!(e.contains("proxy.sources") && e.contains("finetune") && !e.contains('\n'), "{e}");
    let e = refused("sources = [\"multihead\"]\n", Some("members = 1\n"));
    assert!(e.contains("proxy.members") && e.contains("at least 2") && !e.contains('\n'), "{e}");
    let e = refused("sources = [\"finetune\", \"finetune\"]\n", None);
    assert!(e.contains("proxy.sources[1]") && e.contains("distinct"), "{e}");
    let e = refused("sources = []\n", None);
    assert!(e.contains("proxy.sources") && e.contains("at least 1"), "{e}");
    let e = refused("sources = [\"finetune\"]\npretrain = { steps = 0 }\n", None);
    assert!(e.contains("proxy.pretrain.steps"), "{e}");
    let e = refused("sources = [\"teacher\"]\n", None);
    assert!(e.contains("teacher") && !e.contains('\n'), "{e}");
}

#[test]
fn every_fine_tune_that_names_a_trunk_reads_the_one_cell() {
    let exp = with_sources();
    let plan = Plan::new(&exp);
    let index = |id: &str| plan.find(id).unwrap_or_else(|| panic!("no cell {id}"));
    // Replicate 0: the shared trunk (seed 0) and one per pretraining seed (member 1), once.
    let trunks: Vec<&str> = plan.cells.iter().filter(|c| c.kind.name() == "trunk").map(|c| c.id.as_str()).collect();
    let per_replicate = exp.replicates;
    assert_eq!(trunks.len(), 2 * per_replicate, "{trunks:?}");
    let shared = index("trunk/a/p0");
    let own = index("trunk/a/p1");
    let deps = |id: &str| plan.cells[index(id)].deps.clone();
    for id in ["proxy/a/d40/n0.00/finetune/k0", "proxy/a/d40/n0.00/finetune/k1", "proxy/a/d40/n0.00/bootstrap/k1", "proxy/a/d40/n0.00/pretrain/k0"] {
        assert!(deps(id).contains(&shared) && !deps(id).contains(&own), "{id}");
    }
    assert!(deps("proxy/a/d40/n0.00/pretrain/k1").contains(&own) && !deps("proxy/a/d40/n0.00/pretrain/k1").contains(&shared));
    // From scratch: no trunk.
    assert!(deps("proxy/a/d40/n0.00/k0").iter().all(|&d| plan.cells[d].kind.name() != "trunk"));
    // The multi-head model reads the shared trunk; its heads read the model; WARM reads the
    // finetune members and nothing pretrained directly.
    let heads = index("multihead/a/d40/n0.00");
    assert!(plan.cells[heads].deps.contains(&shared));
    for k in 0..2 {
        assert!(deps(&format!("proxy/a/d40/n0.00/multihead/k{k}")).contains(&heads));
    }
    let warm = deps("proxy/a/d40/n0.00/warm/k0");
    for k in 0..2 {
        assert!(warm.contains(&index(&format!("proxy/a/d40/n0.00/finetune/k{k}"))));
    }
    assert!(plan.find("proxy/a/d40/n0.00/warm/k1").is_none(), "WARM is one model");
    // Keys are distinct: each cell is made once.
    let mut keys: Vec<(&str, &str)> = plan.cells.iter().map(|c| (c.kind.name(), c.key.as_str())).collect();
    keys.sort_unstable();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n);
}

#[test]
fn scratch_ensembles_keep_their_ids_and_keys() {
    // A scratch proxy's recipe is what it was before sources existed (no `source` field);
    // a finetune one names its source and reads a trunk.
    let scratch = Plan::new(&common::tiny());
    let finetune = Plan::new(&Experiment::from_toml(&common::tiny_with("sources = [\"scratch\"]\n", ""), Path::new("t.toml")).unwrap());
    let recipe = |p: &Plan, id: &str| p.cells[p.find(id).unwrap_or_else(|| panic!("no {id}"))].recipe.clone();
    assert!(recipe(&scratch, "proxy/a/d40/n0.00/k0").get("source").is_none());
    assert_eq!(recipe(&finetune, "proxy/a/d40/n0.00/finetune/k0")["source"], "finetune", "the default source is finetune");
    assert!(scratch.cells.iter().all(|c| c.kind.name() != "trunk"));
    let c = ProxyCell {
        size: goodhart::config::ProxySizeSpec { name: "s".into(), layers: 1, width: 8, heads: 2 },
        data_size: 500,
        noise: 0.25,
        member: 3,
        heldout: false,
        replicate: 2,
        source: Source::Scratch,
    };
    assert_eq!((c.id(), c.ensemble_id()), ("proxy/s/d500/n0.25/k3/r2".to_string(), "s/d500/n0.25".to_string()));
    let f = ProxyCell { source: Source::Finetune, ..c };
    assert_eq!((f.id(), f.ensemble_id()), ("proxy/s/d500/n0.25/finetune/k3/r2".to_string(), "s/d500/n0.25/finetune".to_string()));
    assert_eq!(goodhart::stats::conclusions::ensemble_source("s/d500/n0.25/finetune"), ("s/d500/n0.25", "finetune"));
    assert_eq!(goodhart::stats::conclusions::ensemble_source("s/d500/n0.25"), ("s/d500/n0.25", "scratch"));
    // The statistics order sources as the grid does.
    assert_eq!(Source::ALL.map(Source::name), goodhart::stats::conclusions::SOURCES);
}

#[test]
fn weight_averaging_is_the_mean_of_each_variable() {
    let d = Device::Cpu;
    let t = |v: &[f32]| Tensor::from_slice(v, (v.len(),), &d).unwrap();
    let a = HashMap::from([("w".to_string(), t(&[1.0, 2.0])), ("b".to_string(), t(&[0.0]))]);
    let b = HashMap::from([("w".to_string(), t(&[3.0, -2.0])), ("b".to_string(), t(&[1.0]))]);
    let c = HashMap::from([("w".to_string(), t(&[2.0, 3.0])), ("b".to_string(), t(&[5.0]))]);
    let avg = goodhart::train::proxy::average(&[a.clone(), b, c], Path::new("x")).unwrap();
    assert_eq!(avg["w"].to_vec1::<f32>().unwrap(), [2.0, 1.0]);
    assert_eq!(avg["b"].to_vec1::<f32>().unwrap(), [2.0]);
    // A member without a variable of the others is refused, naming it.
    let short = HashMap::from([("w".to_string(), t(&[1.0, 1.0]))]);
    let e = goodhart::train::proxy::average(&[a, short], Path::new("x")).unwrap_err().to_string();
    assert!(e.contains('b') || e.contains("different variables"), "{e}");
}

#[test]
fn each_head_learns_by_its_own_loss_and_every_head_reaches_the_trunk() {
    let exp = common::tiny();
    let cfg = exp.proxy_arch(&exp.proxy.sizes[0]);
    let varmap = VarMap::new();
    let k = 3;
    let rm = goodhart::model::RewardModel::with_heads(&cfg, k, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    goodhart::model::seeded_init(&varmap, 5, cfg.layers).unwrap();
    let world = exp.world_config(0);
    let mut rng = goodhart::seed::rng(1, "t");
    let (prompts, responses) = goodhart::train::sft::demonstrations(&world, 8, &mut rng);
    let set = goodhart::model::policy::encode_all(&world, &prompts, &responses);
    let s = rm.raw_batch_heads(&set).unwrap();
    assert_eq!(s.dims(), [8, k]);
    // Pairs (0,1), (2,3), …: chosen minus rejected for every head.
    let margins = (s.narrow(0, 0, 4).unwrap() - s.narrow(0, 4, 4).unwrap()).unwrap();
    let weights = Tensor::ones((4, k), DType::F32, &Device::Cpu).unwrap();
    let losses = goodhart::train::multihead::head_losses(&margins, &weights).unwrap();
    let data = varmap.data().lock().unwrap();
    let head = data["score_head.weight"].clone();
    let trunk: Vec<_> = data.iter().filter(|(n, _)| n.starts_with("trunk.")).map(|(_, v)| v.clone()).collect();
    drop(data);
    for h in 0..k {
        let grads = losses.get(h).unwrap().backward().unwrap();
        let g = grads.get(head.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        for (j, row) in g.iter().enumerate() {
            let norm: f32 = row.iter().map(|x| x.abs()).sum();
            if j == h {
                assert!(norm > 0.0, "head {h} learns from its own loss");
            } else {
                assert_eq!(norm, 0.0, "head {j} learns nothing from head {h}'s loss");
            }
        }
        let reached = trunk.iter().filter(|v| grads.get(v.as_tensor()).is_some_and(|g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0)).count();
        assert!(reached * 2 > trunk.len(), "head {h}'s loss reaches {reached} of {} trunk variables", trunk.len());
    }
    // A head weights its pairs by its bootstrap counts: a pair it never drew adds nothing.
    let w = Tensor::from_slice(&[1f32, 0.0, 0.0, 0.0, 2.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], (4, k), &Device::Cpu).unwrap();
    let m = Tensor::from_slice(&[0f32, 1.0, -1.0, 2.0, 0.5, 0.0, 1.0, 1.0, 1.0, -2.0, 0.0, 3.0], (4, k), &Device::Cpu).unwrap();
    let got = goodhart::train::multihead::head_losses(&m, &w).unwrap().to_vec1::<f32>().unwrap();
    let sp = |z: f32| (1.0 + (-z).exp()).ln();
    // Columns are heads: head 0 holds pair 0 once; head 1 pairs 1 (twice), 2, 3; head 2
    // pairs 1, 2, 3. Loss of a margin z: ln(1 + e^−z).
    let want = [sp(0.0), (2.0 * sp(0.5) + sp(1.0) + sp(0.0)) / 4.0, (sp(0.0) + sp(1.0) + sp(3.0)) / 3.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
    // Bootstrap counts: n draws per head.
    let counts = goodhart::train::multihead::bootstrap_counts(50, 3, &mut goodhart::seed::rng(2, "b"));
    assert!(counts.iter().all(|c| c.iter().sum::<f32>() == 50.0));
    assert_ne!(counts[0], counts[1]);
}

#[test]
fn a_study_over_every_source_runs_and_warm_is_the_mean_of_the_finetuned_members() {
    // Best-of-n alone: every ensemble's claims without PPO's runs.
    let text = common::tiny_with("sources = [\"scratch\"]\n", SOURCES).replacen("[ppo]\n", "[ppo]\nenabled = false\n", 1)
        + "\n[[conclusions.primary]]\nkind = \"source\"\nmethod = \"bon\"\naggregator = \"single\"\nbaseline = \"finetune mean\"\nensemble = \"a/d40/n0.00/warm\"\n";
    let exp = Experiment::from_toml(&text, Path::new("sources.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let opts = common::run_options(dir.path().join("out"), store_dir.clone());
    let s = goodhart::run::run(&exp, &opts).unwrap();
    // Each pretrained trunk was made once, in this run.
    let plan = Plan::new(&exp);
    let trunks = plan.cells.iter().filter(|c| c.kind.name() == "trunk").count();
    assert_eq!(s.trained.iter().filter(|id| id.starts_with("trunk/")).count(), trunks);
    // Every source's ensemble has its reward models; WARM's weights are the members' mean.
    let rm = &s.rows.rm;
    for src in ["finetune", "pretrain", "bootstrap", "multihead", "warm"] {
        assert!(rm.iter().any(|r| r.ensemble == format!("a/d40/n0.00/{src}")), "{src}");
    }
    let store = goodhart::cell::store::Store::open(&store_dir).unwrap();
    let weights = |id: &str| -> HashMap<String, Tensor> {
        let c = &plan.cells[plan.find(id).unwrap()];
        candle_core::safetensors::load(store.dir(c.kind.name(), &c.key).join("model.safetensors"), &Device::Cpu).unwrap()
    };
    let (w0, w1, warm) = (weights("proxy/a/d40/n0.00/finetune/k0"), weights("proxy/a/d40/n0.00/finetune/k1"), weights("proxy/a/d40/n0.00/warm/k0"));
    assert_eq!(w0.len(), warm.len());
    for (name, t) in &warm {
        let want = ((&w0[name] + &w1[name]).unwrap() / 2.0).unwrap();
        let diff = (t - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{name}: {diff}");
    }
    // Fine-tuning moved the members apart from their shared start.
    let start = weights("trunk/a/p0");
    let name = start.keys().find(|k| k.starts_with("trunk.")).unwrap();
    assert!((&w0[name] - &w1[name]).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    // A multi-head member is its model's trunk and its own head row.
    let heads = weights("multihead/a/d40/n0.00");
    let h1 = weights("proxy/a/d40/n0.00/multihead/k1");
    assert_eq!(h1["score_head.weight"].to_vec2::<f32>().unwrap()[0], heads["score_head.weight"].to_vec2::<f32>().unwrap()[1]);
    // Costs and claims.
    let out = dir.path().join("out");
    let costs = std::fs::read_to_string(out.join("ensembles.csv")).unwrap();
    assert!(costs.lines().next().unwrap().contains("params_trained"), "{costs}");
    assert!(costs.contains("a/d40/n0.00/warm"), "{costs}");
    let conclusions = std::fs::read_to_string(out.join("conclusions.csv")).unwrap();
    assert!(conclusions.lines().any(|l| l.contains(",source,") && l.contains("warm")), "no source claim about WARM");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## Where the ensemble's members come from"));
    // A primary question about a source claim reads as one, with its verdict.
    assert!(report.contains("best-of-n: warm single keeps more gold than finetune mean"), "{report}");
    assert!(!report.contains("stopping by `single`"), "{report}");
}
