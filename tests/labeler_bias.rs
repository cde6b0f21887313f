//! Labeler biases every annotator shares (`[preferences.bias]`): present in the labels the
//! proxies learn from at the stated strength, absent from gold and the validation pairs,
//! today's labels when every weight is 0, bad values refused by key.

mod common;

use std::path::Path;

use goodhart::cell::store::Store;
use goodhart::config::LabelMode;
use goodhart::plan::exec::Exec;
use goodhart::plan::Plan;
use goodhart::train::pairs::{differing, PairData};
use goodhart::train::rm::{label_pairs, label_pairs_shifted, Pairs};
use goodhart::world::{Response, WorldConfig};
use goodhart::Experiment;

/// The tiny study with 200 training pairs, its held-out proxy's pairs kept in the pairs
/// cell, and `bias` (TOML lines) as `[preferences.bias]`.
fn tiny_biased(bias: &str) -> Experiment {
    let text = common::tiny_with("val_pairs = 50", &format!("val_pairs = 50\n\n[preferences.bias]\n{bias}\n"))
        .replacen("data_sizes = [40]", "data_sizes = [200]", 1)
        .replacen("members = 2", "members = 2\nheldout_per_replicate = false", 1);
    Experiment::from_toml(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Makes the cell `id` of `exp` (and what it needs) in `store`; returns its data and meta info.
fn made<T: Clone + 'static>(exp: &Experiment, store: &Path, id: &str) -> (T, serde_json::Value) {
    let plan = Plan::new(exp);
    let store = Store::open(store).unwrap();
    let x = Exec::new(exp, &plan, &store, common::device());
    let loaded = x.get(plan.find(id).unwrap_or_else(|| panic!("no cell {id}"))).unwrap();
    (loaded.get::<T>().clone(), loaded.meta.info.clone())
}

/// The stated bias, recomputed from a response's tokens: length·|y| + flattery·#flattery +
/// style·#style token + rare·1[rare bigram], standardized gold units.
fn stated_bias(exp: &Experiment, world: &WorldConfig, r: &Response) -> f64 {
    let b = &exp.preferences.bias;
    let flattery = r.tokens.iter().filter(|&&t| world.is_flattery(t)).count() as f64;
    let style = r.tokens.iter().filter(|&&t| t == world.style_token()).count() as f64;
    let [r0, r1] = world.rare_bigram();
    let rare = r.tokens.windows(2).any(|w| w[0] == r0 && w[1] == r1) as u8 as f64;
    b.length * r.tokens.len() as f64 + b.flattery * flattery + b.style * style + b.rare * rare
}

/// Response `i` of a pair set's side.
fn response(world: &WorldConfig, set: &goodhart::world::SeqSet, i: usize) -> Response {
    world.decode_response(set.row(i))
}

/// B(a) − B(b) of every pair, from the stored tokens.
fn shifts(exp: &Experiment, world: &WorldConfig, p: &Pairs) -> Vec<f64> {
    (0..p.len()).map(|i| stated_bias(exp, world, &response(world, &p.a, i)) - stated_bias(exp, world, &response(world, &p.b, i))).collect()
}

/// Checks deterministic labels against `gold_a + B(a) > gold_b + B(b)` and gold's own
/// labels against `gold_a > gold_b`; returns how many labels the bias changed.
fn check_labels(exp: &Experiment, world: &WorldConfig, p: &Pairs, labels: &[bool], gold: &[bool], what: &str) -> usize {
    assert_eq!((labels.len(), gold.len()), (p.len(), p.len()), "{what}");
    let shift = shifts(exp, world, p);
    for i in 0..p.len() {
        assert_eq!(gold[i], p.gold_a[i] > p.gold_b[i], "{what} pair {i}: gold's own label");
        let margin = (p.gold_a[i] as f64 + shift[i]) - p.gold_b[i] as f64;
        // Within float rounding of a tie either order is a fair reading.
        if margin.abs() > 1e-5 {
            assert_eq!(labels[i], margin > 0.0, "{what} pair {i}: gold {} vs {}, B(a) − B(b) = {}", p.gold_a[i], p.gold_b[i], shift[i]);
        }
        if labels[i] != gold[i] {
            assert_eq!(labels[i], shift[i] > 0.0, "{what} pair {i}: the bias moved a label against itself");
        }
    }
    differing(labels, gold)
}

#[test]
fn each_bias_is_in_the_training_and_held_out_labels_at_its_stated_strength() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for bias in ["length = 0.3", "flattery = 0.8", "style = 1.0", "rare = 10.0", "length = -0.2\nflattery = 0.5\nstyle = 0.5\nrare = 4.0"] {
        let exp = tiny_biased(bias);
        let world = exp.world_config(0);
        let (data, info): (PairData, _) = made(&exp, &store, "pairs");
        let train = check_labels(&exp, &world, &data.train, &data.labels, &data.gold_labels, &format!("{bias:?} train"));
        let (hp, hl, hg) = data.heldout.as_ref().expect("the per-world held-out proxy's pairs");
        let held = check_labels(&exp, &world, hp, hl, hg, &format!("{bias:?} held-out"));
        assert!(train > 0, "{bias:?}: the bias changed no training label");
        assert_eq!(info["train_labels_biased"], train, "{bias:?}: {info}");
        assert_eq!(info["heldout_labels_biased"], held, "{bias:?}: {info}");
    }
}

#[test]
fn a_bias_moves_labels_its_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Length: of pairs of unequal length, the longer wins more often than gold says.
    let exp = tiny_biased("length = 0.3");
    let world = exp.world_config(0);
    let (data, _): (PairData, _) = made(&exp, &store, "pairs");
    let longer_wins = |labels: &[bool]| {
        (0..data.train.len())
            .filter_map(|i| {
                let (a, b) = (response(&world, &data.train.a, i).tokens.len(), response(&world, &data.train.b, i).tokens.len());
                (a != b).then_some(labels[i] == (a > b))
            })
            .filter(|&w| w)
            .count()
    };
    let (biased, gold) = (longer_wins(&data.labels), longer_wins(&data.gold_labels));
    assert!(biased > gold, "the longer response wins {biased} labelled pairs, {gold} by gold");
    // Rare: every pair where one response holds the rare bigram goes to it (10 standardized
    // gold units: more than any gold margin), and π_ref writes the bigram in some pairs.
    let exp = tiny_biased("rare = 10.0");
    let (data, _): (PairData, _) = made(&exp, &store, "pairs");
    let holds = |set: &goodhart::world::SeqSet, i: usize| world.has_rare_bigram(&response(&world, set, i).tokens);
    let one_sided: Vec<usize> = (0..data.train.len()).filter(|&i| holds(&data.train.a, i) != holds(&data.train.b, i)).collect();
    assert!(!one_sided.is_empty(), "no training pair holds the rare bigram on one side");
    for &i in &one_sided {
        assert_eq!(data.labels[i], holds(&data.train.a, i), "pair {i}");
    }
}

#[test]
fn a_proxy_learns_the_biased_labels_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let exp = tiny_biased("length = 0.3");
    let (data, _): (PairData, _) = made(&exp, &store, "pairs");
    let plan = Plan::new(&exp);
    let store = Store::open(&store).unwrap();
    let x = Exec::new(&exp, &plan, &store, common::device());
    for id in ["proxy/a/d200/n0.00/k0", "heldout/a/d200/n0.00"] {
        let info = x.get(plan.find(id).unwrap()).unwrap().meta.info.clone();
        let (labels, gold) = match id.starts_with("heldout") {
            true => data.heldout.as_ref().map(|h| (&h.1, &h.2)).unwrap(),
            false => (&data.labels, &data.gold_labels),
        };
        let n = differing(&labels[..200], &gold[..200]);
        assert!(n > 0);
        assert_eq!(info["labels_biased"], n, "{id}: {info}");
    }
    // A held-out proxy of each replicate draws its pairs in its own cell, from the same
    // labelers.
    let mut own = exp.clone();
    own.proxy.heldout_per_replicate = true;
    let plan = Plan::new(&own);
    let x = Exec::new(&own, &plan, &store, common::device());
    let info = x.get(plan.find("heldout/a/d200/n0.00").unwrap()).unwrap().meta.info.clone();
    let (policy, gold) = (x.get(plan.find("policy").unwrap()).unwrap(), x.get(plan.find("gold").unwrap()).unwrap());
    let world = own.world_config(0);
    let seed = goodhart::seed::derive(own.replicate_seed(0), "heldout");
    let (p, labels, gold_own) = goodhart::train::pairs::heldout_pairs(&own, policy.policy(), &world, gold.reward(), 200, seed).unwrap();
    let n = check_labels(&own, &world, &p, &labels, &gold_own, "per-replicate held-out");
    assert!(n > 0);
    assert_eq!(info["labels_biased"], n, "{info}");
}

#[test]
fn gold_and_the_validation_pairs_do_not_see_the_bias() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let plain = tiny_biased("");
    let biased = tiny_biased("length = 0.3\nflattery = 0.5\nstyle = 0.5\nrare = 4.0");
    let (pp, pb) = (Plan::new(&plain), Plan::new(&biased));
    let cell = |p: &Plan, id: &str| p.cells[p.find(id).unwrap()].clone();
    for id in ["policy", "gold"] {
        assert_eq!(cell(&pp, id).key, cell(&pb, id).key, "{id}'s key");
    }
    assert_ne!(cell(&pp, "pairs").key, cell(&pb, "pairs").key);
    assert_eq!(cell(&pb, "pairs").recipe["bias"]["rare"], 4.0);
    let (a, _): (PairData, _) = made(&plain, &store, "pairs");
    let (b, _): (PairData, _) = made(&biased, &store, "pairs");
    // The same responses and gold scores everywhere (the bias only relabels); the
    // validation pairs carry no labels of their own: every reader orders them by gold.
    let same = |x: &Pairs, y: &Pairs| x.a.tokens == y.a.tokens && x.b.tokens == y.b.tokens && x.gold_a == y.gold_a && x.gold_b == y.gold_b;
    assert!(same(&a.val, &b.val), "validation pairs");
    assert!(same(&a.train, &b.train), "training pairs");
    assert_eq!(a.gold_labels, b.gold_labels, "gold's own labels");
    assert_ne!(a.labels, b.labels);
}

#[test]
fn no_bias_gives_todays_labels_key_and_resolved_config() {
    let tiny = common::tiny();
    let zero = tiny_biased("length = 0.0\nflattery = 0.0\nstyle = 0.0\nrare = 0.0");
    let mut unbiased = zero.clone();
    unbiased.preferences.bias = Default::default();
    // Stating every weight 0 is not stating them: the same resolved config and pairs key.
    assert_eq!(zero.to_toml(), tiny_biased("").to_toml());
    assert!(!tiny.to_toml().contains("bias"), "{}", tiny.to_toml());
    let (pt, pz) = (Plan::new(&tiny_biased("")), Plan::new(&zero));
    let pairs = |p: &Plan| p.cells[p.find("pairs").unwrap()].clone();
    assert_eq!(pairs(&pt).key, pairs(&pz).key);
    assert!(pairs(&Plan::new(&tiny)).recipe.get("bias").is_none());
    // The labels are gold's, drawn as before the bias existed.
    let dir = tempfile::tempdir().unwrap();
    let (data, info): (PairData, _) = made(&zero, &dir.path().join("store"), "pairs");
    let mut rng = goodhart::seed::rng(zero.replicate_seed(0), "pairs/labels");
    assert_eq!(data.labels, label_pairs(&data.train.gold_a, &data.train.gold_b, zero.preferences.label, &mut rng));
    assert_eq!(data.labels, data.gold_labels);
    assert_eq!((info["train_labels_biased"].as_u64(), info["heldout_labels_biased"].as_u64()), (Some(0), Some(0)));
}

#[test]
fn shifted_labels_keep_the_draws_of_gold_s_own() {
    let n = 4000;
    let gold_a: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0).collect();
    let gold_b: Vec<f32> = (0..n).map(|i| ((i * 53) % 97) as f32 / 24.0 - 2.0).collect();
    let shift: Vec<f64> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else if i % 3 == 1 { 1.5 } else { -0.7 }).collect();
    for mode in [LabelMode::Deterministic, LabelMode::BradleyTerry] {
        let rng = || goodhart::seed::rng(3, "test/labels");
        let today = label_pairs(&gold_a, &gold_b, mode, &mut rng());
        // No shift: today's labels, and gold's own are those.
        let (zero, own) = label_pairs_shifted(&gold_a, &gold_b, &vec![0.0; n], mode, &mut rng());
        assert_eq!((&zero, &own), (&today, &today), "{mode:?}");
        // A shift: gold's own on the same draws; each change goes the shift's way.
        let (labels, own) = label_pairs_shifted(&gold_a, &gold_b, &shift, mode, &mut rng());
        assert_eq!(own, today, "{mode:?}");
        let changed: Vec<usize> = (0..n).filter(|&i| labels[i] != own[i]).collect();
        assert!(!changed.is_empty(), "{mode:?}");
        assert!(changed.iter().all(|&i| labels[i] == (shift[i] > 0.0)), "{mode:?}");
        // Bradley–Terry: P(a ≻ b) is σ of the shifted margin (a +1.5 shift on a zero margin
        // gives σ(1.5) ≈ 0.818).
        if mode == LabelMode::BradleyTerry {
            let z = vec![0.0f32; n];
            let (l, _) = label_pairs_shifted(&z, &z, &vec![1.5; n], mode, &mut rng());
            let p = l.iter().filter(|&&x| x).count() as f64 / n as f64;
            assert!((p - 1.0 / (1.0 + (-1.5f64).exp())).abs() < 0.02, "{p}");
        }
    }
}

fn err_of(bias: &str) -> String {
    let text = common::tiny_with("val_pairs = 50", &format!("val_pairs = 50\n\n[preferences.bias]\n{bias}\n"));
    let e = Experiment::from_toml(&text, Path::new("bad.toml")).expect_err("must be rejected");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "error spans lines: {msg:?}");
    msg
}

#[test]
fn bad_bias_values_are_refused_naming_the_key() {
    for (key, value) in [("length", "nan"), ("flattery", "inf"), ("style", "-inf"), ("rare", "1e9"), ("length", "-2000")] {
        let msg = err_of(&format!("{key} = {value}"));
        assert!(msg.starts_with(&format!("bad.toml: preferences.bias.{key}: must be")), "{msg}");
    }
    let msg = err_of("lenght = 1.0");
    assert!(msg.contains("lenght"), "{msg}");
    // A flattery bias in a world without flattery tokens does not apply.
    let text = common::tiny_with("val_pairs = 50", "val_pairs = 50\n\n[preferences.bias]\nflattery = 1.0\n\n[world]\nflattery_tokens = 0\nflattery_rate = 0.0\n");
    let msg = Experiment::from_toml(&text, Path::new("bad.toml")).expect_err("must be rejected").to_string();
    assert!(msg.contains("preferences.bias.flattery") && msg.contains("world.flattery_tokens = 0"), "{msg}");
    // Negative weights are tastes too (short answers).
    tiny_biased("length = -0.5");
}

#[test]
fn the_rare_bigram_is_rare_where_preferences_are_drawn_yet_written() {
    // The default world's demonstrator (what π_ref imitates).
    let exp = Experiment::from_toml("name = \"d\"", Path::new("d.toml")).unwrap();
    let world = exp.world_config(0);
    let mut rng = goodhart::seed::rng(1, "test/rare");
    let n = 100_000;
    let hits = (0..n)
        .filter(|_| {
            let prompt = world.prompt_in(goodhart::world::Split::Pairs, &mut rng);
            world.has_rare_bigram(&world.demonstrate(&prompt, &mut rng).tokens)
        })
        .count();
    let demo = hits as f64 / n as f64;
    // The tiny study's π_ref, on its 200 training pairs (400 responses).
    let dir = tempfile::tempdir().unwrap();
    let tiny = tiny_biased("");
    let (data, _): (PairData, _) = made(&tiny, &dir.path().join("store"), "pairs");
    let tw = tiny.world_config(0);
    let held = (0..data.train.len())
        .flat_map(|i| [response(&tw, &data.train.a, i), response(&tw, &data.train.b, i)])
        .filter(|r| tw.has_rare_bigram(&r.tokens))
        .count();
    let pi = held as f64 / (2 * data.train.len()) as f64;
    println!("rare bigram {:?}: {:.2}% of demonstrator responses, {:.2}% of the tiny π_ref's", world.rare_bigram(), 100.0 * demo, 100.0 * pi);
    assert!(demo > 0.001 && demo < 0.03, "{demo}");
    assert!(pi > 0.0 && pi < 0.05, "{pi}");
}
