//! Checkpoints as a policy and reward models over text rows (`goodhart::model::hf::policy`
//! and `reward`), against transformers' outputs on the tiny fixtures: rows whose prompts
//! are left-padded compute what transformers computes on the unpadded sequence (log-probs
//! and rewards within 1e-4), sampling at a vanishing temperature is transformers' greedy
//! decode, every trainable weight gets a gradient, and a proxy trains only what it is told.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use goodhart::model::hf::{Checkpoint, TextLayout, TextPolicy, TextReward, Trainable};
use goodhart::world::Response;
use rand::SeedableRng;
use serde_json::Value;

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
}

fn reference(name: &str) -> (Value, HashMap<String, Tensor>) {
    let dir = fixture(name);
    let json = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    (json, candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap())
}

fn prompt_ids(json: &Value) -> Vec<Vec<u32>> {
    json["prompts"].as_array().unwrap().iter().map(|p| serde_json::from_value(p["ids"].clone()).unwrap()).collect()
}

fn policy(layout: TextLayout, train: bool) -> (TextPolicy, Option<candle_nn::VarMap>) {
    TextPolicy::load(&Checkpoint::open(&fixture("llama")).unwrap(), layout, &common::device(), train).unwrap()
}

fn rows_tensor(rows: &[Vec<u32>]) -> Tensor {
    let t = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), t), &common::device()).unwrap()
}

#[test]
fn sampling_at_a_vanishing_temperature_is_transformers_greedy_decode_from_left_padded_prompts() {
    let (json, _) = reference("llama");
    let layout = TextLayout { prefix_len: 24, max_response: 16, stop: vec![], temperature: 1.0 };
    let (pi, _) = policy(layout, false);
    let greedy: Vec<Vec<u32>> = json["greedy"].as_array().unwrap().iter().map(|g| serde_json::from_value(g["new_ids"].clone()).unwrap()).collect();
    let prompts = prompt_ids(&json);
    // Prompts of 5, 19 and 5 tokens, left-padded to 24; prompt 0 twice (a shared prefix).
    let order = [0usize, 1, 0, 2];
    let prefixes: Vec<Vec<u32>> = order.iter().map(|&i| pi.prefix(&prompts[i]).unwrap()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let out = pi.sample(&prefixes, 1e-4, &mut rng).unwrap();
    for (r, &i) in out.iter().zip(&order) {
        assert_eq!(r.tokens, greedy[i], "prompt {i}");
        assert!(!r.finished);
    }
}

#[test]
fn log_probs_of_left_padded_rows_are_transformers_on_the_unpadded_sequence() {
    let (json, refs) = reference("llama");
    let prompts = prompt_ids(&json);
    // Each sequence split after 2 tokens: those as the prompt (left-padded to 4), the rest
    // (3 to 17 tokens) as the response.
    let layout = TextLayout { prefix_len: 4, max_response: 18, stop: vec![], temperature: 1.0 };
    let (pi, _) = policy(layout, false);
    let k = 2;
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .map(|ids| pi.encode(&pi.prefix(&ids[..k]).unwrap(), &Response { tokens: ids[k..].to_vec(), finished: false }))
        .collect();
    let (logp, mask) = pi.response_logprobs(&rows_tensor(&rows)).unwrap();
    let logp = logp.to_device(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
    let mask = mask.to_device(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
    let mut worst = 0f32;
    for (i, ids) in prompts.iter().enumerate() {
        let want = candle_nn::ops::log_softmax(&refs[&format!("logits.{i}")], D::Minus1).unwrap().to_vec2::<f32>().unwrap();
        for j in 0..18 {
            if k + j < ids.len() {
                assert_eq!(mask[i][j], 1.0);
                worst = worst.max((logp[i][j] - want[k + j - 1][ids[k + j] as usize]).abs());
            } else {
                assert_eq!((mask[i][j], logp[i][j]), (0.0, 0.0), "row {i} position {j} is padding");
            }
        }
    }
    assert!(worst < TOL, "log-probs differ from transformers' by up to {worst}");
}

#[test]
fn every_weight_of_a_trainable_text_policy_gets_a_gradient() {
    let (json, _) = reference("llama");
    let layout = TextLayout { prefix_len: 6, max_response: 8, stop: vec![], temperature: 1.0 };
    let (pi, map) = policy(layout, true);
    let map = map.unwrap();
    let rows: Vec<Vec<u32>> = prompt_ids(&json)
        .iter()
        .map(|ids| pi.encode(&pi.prefix(&ids[..3]).unwrap(), &Response { tokens: ids[3..ids.len().min(11)].to_vec(), finished: false }))
        .collect();
    let view = pi.response_view(&rows_tensor(&rows)).unwrap();
    let loss = ((view.logp * &view.mask).unwrap().sum_all().unwrap() + (view.values * &view.mask).unwrap().sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let vars = map.data().lock().unwrap();
    let mut without: Vec<&String> = vars
        .iter()
        .filter(|(_, v)| grads.get(v.as_tensor()).map_or(true, |g| g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() == 0.0))
        .map(|(n, _)| n)
        .collect();
    without.sort();
    assert!(without.is_empty(), "weights without a gradient: {without:?}");
    assert_eq!(vars.len(), goodhart::model::hf::checkpoint::expected_weights(Checkpoint::open(&fixture("llama")).unwrap().config()).len() + 2);
}

#[test]
fn sampling_is_reproducible_stops_at_a_stop_token_and_rows_round_trip() {
    let (json, _) = reference("llama");
    let prompts = prompt_ids(&json);
    // Token 297 is the first greedy token of prompt 0: a stop token that will be drawn.
    let layout = TextLayout { prefix_len: 20, max_response: 10, stop: vec![297, 344], temperature: 1.0 };
    let (pi, _) = policy(layout.clone(), false);
    let prefixes: Vec<Vec<u32>> = (0..24).map(|i| pi.prefix(&prompts[i % 3]).unwrap()).collect();
    let draw = |seed| pi.sample(&prefixes, 1.0, &mut rand::rngs::StdRng::seed_from_u64(seed)).unwrap();
    let a = draw(3);
    assert_eq!(a, draw(3), "the same seed draws the same responses");
    assert_ne!(a, draw(4));
    let mut stopped = 0;
    for (r, prefix) in a.iter().zip(&prefixes) {
        assert!(!r.tokens.is_empty() && r.tokens.len() <= layout.max_response);
        assert_eq!(r.finished, layout.stop.contains(r.tokens.last().unwrap()));
        assert!(r.tokens[..r.tokens.len() - 1].iter().all(|t| !layout.stop.contains(t)), "a stop token mid-response");
        stopped += usize::from(r.finished);
        assert_eq!(&pi.decode_response(&pi.encode(prefix, r)), r);
    }
    assert!(stopped > 0, "no response stopped");
}

#[test]
fn a_score_checkpoint_rewards_left_padded_rows_as_transformers_does() {
    let (json, refs) = reference("llama_cls");
    let prompts = prompt_ids(&json);
    let rm = TextReward::load(&Checkpoint::open(&fixture("llama_cls")).unwrap(), &common::device()).unwrap();
    let layout = TextLayout { prefix_len: 4, max_response: 18, stop: vec![], temperature: 1.0 };
    let (pi, _) = policy(layout, false);
    let rows: Vec<Vec<u32>> = prompts
        .iter()
        .map(|ids| pi.encode(&pi.prefix(&ids[..2]).unwrap(), &Response { tokens: ids[2..].to_vec(), finished: false }))
        .collect();
    let got = rm.score(&rows_tensor(&rows)).unwrap().to_device(&Device::Cpu).unwrap();
    let d = (got - &refs["rewards"]).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d < TOL, "rewards differ from transformers' by {d}");
}

#[test]
fn a_proxy_from_a_trunk_trains_only_what_it_is_told() {
    let ckpt = Checkpoint::open(&fixture("llama")).unwrap();
    let dev = common::device();
    let (json, _) = reference("llama");
    let rows: Vec<Vec<u32>> = prompt_ids(&json).iter().map(|ids| ids[..5].to_vec()).collect();
    let names = |map: &candle_nn::VarMap| {
        let mut n: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
        n.sort();
        n
    };
    let (top, map) = TextReward::from_trunk(&ckpt, &dev, 11, Trainable::Top(1)).unwrap();
    let trained = names(&map);
    assert!(trained.iter().all(|n| n.starts_with("model.layers.1.") || n == "model.norm.weight" || n == "score.weight"), "{trained:?}");
    assert_eq!(trained.len(), 9 + 2, "layer 1's nine weights, the final norm and the head");
    let grads = top.score(&rows_tensor(&rows)).unwrap().sum_all().unwrap().backward().unwrap();
    for (n, v) in map.data().lock().unwrap().iter() {
        assert!(grads.get(v.as_tensor()).is_some(), "{n} has no gradient");
    }
    let (all, map_all) = TextReward::from_trunk(&ckpt, &dev, 11, Trainable::All).unwrap();
    assert_eq!(names(&map_all).len(), goodhart::model::hf::checkpoint::expected_weights(ckpt.config()).len(), "every decoder weight and the head (the language-model head is not a trunk's)");
    let score = |rm: &TextReward| rm.score(&rows_tensor(&rows)).unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(score(&top), score(&all), "the same seed draws the same head");
    let (other, _) = TextReward::from_trunk(&ckpt, &dev, 12, Trainable::All).unwrap();
    assert_ne!(score(&other), score(&all), "another seed draws another head");
    assert_eq!(score(&all).len(), 3);
}

/// The seam: a checkpoint behind the methods' [`goodhart::model::Policy`] and
/// [`goodhart::model::RewardModel`] samples, scores and rebuilds over other weights as the
/// checkpoint's own policy and reward model do.
#[test]
fn the_methods_policy_and_reward_model_run_a_checkpoint() {
    use goodhart::model::{Policy, RewardModel};
    let (json, _) = reference("llama");
    let prompts = prompt_ids(&json);
    let layout = TextLayout { prefix_len: 20, max_response: 8, stop: vec![297], temperature: 1.0 };
    let (text, map) = policy(layout, true);
    let pi = Policy::text(text.clone());
    assert!(pi.config().is_none() && pi.as_text().is_some());
    assert_eq!(pi.layout(), (20, 8));
    let prefixes: Vec<Vec<u32>> = (0..6).map(|i| text.prefix(&prompts[i % 3]).unwrap()).collect();
    let a = pi.sample(&prefixes, 1.0, &mut rand::rngs::StdRng::seed_from_u64(5)).unwrap();
    assert_eq!(a, text.sample(&prefixes, 1.0, &mut rand::rngs::StdRng::seed_from_u64(5)).unwrap());
    let rows: Vec<Vec<u32>> = a.iter().zip(&prefixes).map(|(r, p)| text.encode(p, r)).collect();
    let t = rows_tensor(&rows);
    let lp = |p: &Policy| p.response_logprobs(&t).unwrap().0.to_device(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
    let want = text.response_logprobs(&t).unwrap().0.to_device(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(lp(&pi), want);
    let view = pi.with_weights(goodhart::model::frozen(&map.unwrap(), &common::device())).unwrap();
    assert_eq!(lp(&view), want, "a graph-free view over the same variables");

    // Rewards of the same rows through the set API (ends: each row's last real position).
    let (rm, _) = TextReward::from_trunk(&Checkpoint::open(&fixture("llama")).unwrap(), &common::device(), 3, Trainable::All).unwrap();
    let mut set = goodhart::world::SeqSet::new(28);
    for row in &rows {
        let end = row.iter().rposition(|&id| id != text.pad_id()).unwrap();
        set.push_row(row, end as u32);
    }
    let wrapped = RewardModel::text(rm.clone(), &common::device());
    assert!(wrapped.config().is_none());
    let got = wrapped.raw_set(&set, 4).unwrap();
    let want = rm.score(&t).unwrap().to_device(&Device::Cpu).unwrap().to_vec1::<f32>().unwrap();
    let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d < 1e-5, "the set API's rewards differ by {d}");
}

/// A policy at temperature T is the checkpoint's distribution with logits divided by T: its
/// log-probabilities are transformers' logits over T, log-softmaxed.
#[test]
fn a_tempered_policy_reads_the_tempered_distribution() {
    let (json, refs) = reference("llama");
    let ids = &prompt_ids(&json)[1];
    let layout = TextLayout { prefix_len: 4, max_response: 18, stop: vec![], temperature: 2.0 };
    let (pi, _) = policy(layout, false);
    let row = pi.encode(&pi.prefix(&ids[..2]).unwrap(), &Response { tokens: ids[2..].to_vec(), finished: false });
    let (logp, _) = pi.response_logprobs(&rows_tensor(&[row])).unwrap();
    let logp = logp.to_device(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
    let want = candle_nn::ops::log_softmax(&(&refs["logits.1"] / 2.0).unwrap(), D::Minus1).unwrap().to_vec2::<f32>().unwrap();
    for j in 0..ids.len() - 2 {
        let d = (logp[0][j] - want[j + 1][ids[j + 2] as usize]).abs();
        assert!(d < TOL, "position {j}: {d}");
    }
    let bad = TextLayout { prefix_len: 4, max_response: 18, stop: vec![], temperature: 0.0 };
    let err = TextPolicy::load(&Checkpoint::open(&fixture("llama")).unwrap(), bad, &Device::Cpu, false).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("temperature"), "{err}");
}
