//! A study on checkpoints end to end: `experiments/text_tiny.toml` (the tiny random Llama
//! fixture as π_ref and trunk, the programmatic labeler as gold, the fixture prompts) through
//! the same cells, tables and report as the embedded world's; a second run makes nothing;
//! and the text study's bad input refused in one line naming the key.

mod common;

use std::path::{Path, PathBuf};

use goodhart::run::run;
use goodhart::Experiment;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text_tiny() -> String {
    std::fs::read_to_string(root().join("experiments/text_tiny.toml")).unwrap()
}

fn experiment(toml: &str) -> goodhart::Result<Experiment> {
    Experiment::from_toml(toml, Path::new("text_tiny.toml"))
}

#[test]
fn text_tiny_runs_end_to_end_and_resumes() {
    // Paths in the file are relative to the repository's root, where cargo runs tests.
    assert_eq!(std::env::current_dir().unwrap(), root());
    let exp = experiment(&text_tiny()).unwrap();
    let task = exp.text().expect("a text study");
    assert_eq!(task.layout().prefix_len, 16);
    let dir = tempfile::tempdir().unwrap();
    let opts = common::run_options(dir.path().join("out"), dir.path().join("store"));
    let s = run(&exp, &opts).expect("text_tiny runs");
    // π_ref, gold, pairs, 2 replicates × (2 proxies, best-of-n, 6 runs each of PPO, GRPO
    // and RLOO, DPO, IPO and χPO); no trunk cells.
    assert_eq!(s.trained.len(), 3 + 2 * (2 + 1 + 3 * 6 + 3), "{:?}", s.trained);
    assert!(!s.trained.iter().any(|id| id.starts_with("trunk")), "{:?}", s.trained);
    let gold = &s.rows.rm[0];
    assert_eq!((gold.role.as_str(), gold.params, gold.train_examples), ("gold", 0, 0), "the labeler: nothing trained");
    assert!(gold.val_accuracy.is_nan() && gold.score_scale > 0.0);
    for p in &s.rows.rm[1..] {
        assert_eq!(p.size, "trunk");
        assert_eq!((p.layers, p.width), (2, 64), "the trunk checkpoint's shape");
        assert!((0.0..=1.0).contains(&p.val_accuracy) && p.score_scale > 0.0);
    }
    for method in ["bon", "ppo", "grpo", "rloo", "dpo", "ipo", "chipo"] {
        let rows: Vec<_> = s.rows.curves.iter().filter(|r| r.method == method).collect();
        assert!(!rows.is_empty(), "no {method} curve");
        assert!(rows.iter().all(|r| r.gold.is_finite() && r.measures.proxy.is_finite()), "{method}: a non-finite point");
    }
    assert!(s.rows.curves.iter().any(|r| r.method == "bon" && r.n == Some(64)), "best-of-n reaches its pool's n");
    let out = dir.path().join("out");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("scored by the programmatic text labeler"), "the report says what gold is");
    assert!(report.contains("one study on checkpoints"), "the report says what the intervals cover");
    let resolved = std::fs::read_to_string(out.join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("[text]") && resolved.contains("[text.labeler]"));
    assert!(Experiment::from_resolved(&resolved, &out.join("config.resolved.toml")).is_ok(), "the resolved file reads back");
    // A second run makes nothing.
    let again = run(&exp, &opts).unwrap();
    assert!(again.trained.is_empty(), "{:?}", again.trained);
    assert_eq!(again.rows.curves.len(), s.rows.curves.len());
}

/// The labeler as gold scores a row as the world of text's utility says, standardized.
#[test]
fn the_labeler_gold_is_the_utility_of_the_decoded_text() {
    use goodhart::world::{Response, Split};
    use rand::SeedableRng;
    let exp = experiment(&text_tiny()).unwrap();
    let world = exp.world_config(0);
    let task = exp.text().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let prefix = world.prompt_in(Split::BestOfN, &mut rng);
    let prompt = task.prompt_of(&prefix).expect("a prompt of the file");
    let tok = task.tokenizer();
    let mut tokens = tok.encode(" a reward for the river").unwrap();
    tokens.push(tok.token_id(".").unwrap());
    let r = Response { tokens, finished: true };
    let want = task.labeler().score(&prompt.text, " a reward for the river", true);
    assert!((world.utility(&prefix, &r) - want).abs() < 1e-12);
    let parts = task.labeler().parts(&prompt.text, " a reward for the river", true);
    assert_eq!(parts.required, 1.0, "\"reward\" is required by text_tiny's labeler");
    let mut set = goodhart::world::SeqSet::new(world.seq_len());
    set.push(&world, &prefix, &r);
    assert_eq!(world.decode_response(set.row(0)), r);
    let mut gold = goodhart::model::RewardModel::labeler(exp.text_task.clone().unwrap(), &common::device());
    gold.offset = 0.25;
    gold.scale = 2.0;
    let got = gold.score_set(&set, 8).unwrap()[0] as f64;
    assert!((got - (want - 0.25) / 2.0).abs() < 1e-5, "{got} vs {want}");
}

/// One line naming the key for each piece of bad input.
#[test]
fn bad_text_studies_are_refused_naming_the_key() {
    let base = text_tiny();
    let refused = |edit: &dyn Fn(&str) -> String, key: &str| {
        let err = experiment(&edit(&base)).map(|_| ()).expect_err("refused").to_string();
        assert!(!err.contains('\n'), "not one line: {err}");
        assert!(err.contains(key), "{err:?} does not name {key}");
        err
    };
    refused(&|s| s.replace("tests/fixtures/hf/llama\"", "tests/fixtures/hf/nope\""), "config.json");
    refused(&|s| s.replace("tests/fixtures/hf/llama\"", "tests/fixtures/hf/llama_cls\""), "text.policy");
    refused(&|s| s.replace("prompt_tokens = 16", "prompt_tokens = 2"), "prompts.jsonl");
    refused(&|s| s.replace("stop = [\".\"]", "stop = [\"no such token\"]"), "text.stop");
    refused(&|s| s.replace("proxy_layers = 1", "proxy_layers = 3"), "text.proxy_layers");
    refused(&|s| s.replace("proxy_layers = 1", "proxy_layers = 1\ngold = \"tests/fixtures/hf/llama\""), "text.gold");
    refused(&|s| s.replace("max_new_tokens = 12", "max_new_tokens = 5000"), "text.max_new_tokens");
    refused(&|s| s.replace("sizes = [{ name = \"trunk\" }]", "sizes = [{ name = \"a\" }, { name = \"b\" }]"), "proxy.sizes");
    refused(&|s| s.replace("sizes = [{ name = \"trunk\" }]", "sizes = [{ name = \"trunk\", layers = 1, width = 8, heads = 2 }]"), "proxy.sizes[0]");
    refused(&|s| s.replacen("[proxy]", "[proxy]\nsources = [\"scratch\"]", 1), "proxy.sources");
    refused(&|s| s.replace("best_words = 6", "best_words = -6"), "text.labeler.best_words");
    refused(&|s| s.replace("best_words = 6", "best_words = 6\ntaste_weight = nan"), "text.labeler.taste_weight");
    refused(&|s| s.replace("banned = [\"the the\"]", "banned = [\"the the\", \"!?\"]"), "text.labeler.banned[1]");
    refused(&|s| s.replace("prompt_tokens = 16", "prompt_tokens = 16\ntemperature = 0"), "text.temperature");
    // A prompt file with a bad line: the file and the line named.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.jsonl");
    std::fs::write(&file, "{\"prompt\": \"fine\"}\n\n{\"text\": \"no prompt key\"}\n").unwrap();
    let path = file.to_string_lossy().to_string();
    let err = refused(&|s| s.replace("tests/fixtures/hf/prompts.jsonl", &path), "line 3");
    assert!(err.contains("p.jsonl") && err.contains("prompt"), "{err}");
}
