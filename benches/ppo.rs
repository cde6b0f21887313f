//! PPO at the default sizes (src/config/) (policy 2×48, rollout 64, 4 epochs of minibatches of
//! 32, an ensemble of three xs proxies, mean aggregator, β = 0.1):
//! - `ppo_rollout`: `ppo::rollout::collect`: sampling 64 responses at temperature 1 with the
//!   KV cache, the policy's and π_ref's log-probs, scoring by the three members;
//! - `ppo_minibatch`: one minibatch of the update (forward, clipped surrogate + value loss,
//!   backward, clipping, AdamW);
//! - `ppo_update`: the optimization of one update (every epoch and minibatch: the body of
//!   `ppo::optimize`, which is private, copied here call for call);
//! - `ppo_update_full`: `ppo::update`, the whole update, rollout and advantages included.
//!
//! Weights are seeded, not trained: the cost of an update does not depend on them. Run with
//! `GOODHART_BENCH_THREADS=1 cargo bench --bench ppo`.

#[macro_use]
mod common;

use candle_core::Tensor;
use criterion::{criterion_group, Criterion};
use goodhart::stats::aggregate::{mean, Aggregator};
use goodhart::model::{Policy, RewardModel};
use goodhart::train::optim::Trainer;
use goodhart::methods::ppo::loss::{ppo_loss, LossConfig, Targets};
use goodhart::methods::ppo::rollout::Rollout;
use rand::seq::SliceRandom;

struct Fixture {
    exp: goodhart::Experiment,
    world: goodhart::world::WorldConfig,
    reference: Policy,
    policy: Policy,
    /// `policy`'s weights without a graph: what a run's rollouts sample with.
    view: Policy,
    varmap: candle_nn::VarMap,
    members: Vec<RewardModel>,
    gold: RewardModel,
}

fn fixture() -> Fixture {
    let exp = common::defaults();
    let world = exp.world_config(0);
    let cfg = exp.policy_arch();
    let (ref_vars, _) = common::policy(&cfg, &world, 1);
    let reference = common::frozen_policy(&cfg, &world, &ref_vars);
    let (varmap, policy) = common::policy(&cfg, &world, 1);
    let view = common::frozen_policy(&cfg, &world, &varmap);
    let xs = &exp.proxy.sizes[0];
    assert_eq!(xs.name, "xs", "PPO optimizes against the first proxy size");
    let members = (0..exp.proxy.members as u64).map(|i| common::frozen_reward_model(&exp.proxy_arch(xs), 10 + i)).collect();
    let gold = common::frozen_reward_model(&exp.gold_arch(), 2);
    Fixture {
        exp,
        world,
        reference,
        policy,
        view,
        varmap,
        members,
        gold,
    }
}

fn loss_config(s: &goodhart::config::PpoSpec) -> LossConfig {
    LossConfig {
        clip: s.clip,
        value_clip: s.value_clip,
        value_coef: s.value_coef,
        entropy_coef: s.entropy_coef,
    }
}

/// Everything `ppo::optimize` builds before its loop.
struct Prepared {
    tokens: Tensor,
    all: Targets,
    rewards: Vec<f32>,
    ret: Vec<f32>,
}

fn prepare(ro: &Rollout, policy: &Policy, s: &goodhart::config::PpoSpec, beta: f64) -> Prepared {
    let rewards = goodhart::methods::ppo::rollout::rewards(ro, &ro.score, beta);
    let (adv, ret) = goodhart::methods::ppo::advantages(ro, &rewards, s.gamma, s.gae_lambda);
    let (b, w) = (ro.len(), ro.width);
    let t = |x: &[f32]| Tensor::from_slice(x, (b, w), policy.device()).unwrap();
    Prepared {
        tokens: ro.tokens(policy).unwrap(),
        all: Targets {
            old_logp: t(&ro.logp),
            old_values: t(&ro.values),
            advantages: t(&adv),
            returns: t(&ret),
            mask: t(&ro.mask),
        },
        rewards,
        ret,
    }
}

/// One minibatch of `ppo::optimize`: returns (loss parts, grad norm).
fn minibatch(policy: &Policy, trainer: &mut Trainer, p: &Prepared, chunk: &[u32], cfg: LossConfig, update: usize) -> ([f32; 5], f64) {
    let device = policy.device();
    let idx = Tensor::from_slice(chunk, chunk.len(), device).unwrap();
    let pick = |x: &Tensor| x.index_select(&idx, 0).unwrap();
    let view = policy.response_view(&pick(&p.tokens)).unwrap();
    let mb = Targets {
        old_logp: pick(&p.all.old_logp),
        old_values: pick(&p.all.old_values),
        advantages: pick(&p.all.advantages),
        returns: pick(&p.all.returns),
        mask: pick(&p.all.mask),
    };
    let l = ppo_loss(&mb, &view.logp, &view.values, &view.entropy, cfg).unwrap();
    let st = trainer.step(&l.total, update).unwrap();
    ([l.policy, l.value, l.entropy, l.approx_kl, l.clipfrac], st.grad_norm)
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let s = &f.exp.ppo;
    let members: Vec<&RewardModel> = f.members.iter().collect();
    let run = goodhart::methods::ppo::RunSpec {
        id: "bench".into(),
        aggregator: Aggregator::Mean,
        shaping: goodhart::stats::shaping::Shaping::None,
        beta: 0.1,
    };
    let ctx = goodhart::methods::ppo::Context {
        world: &f.world,
        reference: &f.reference,
        gold: &f.gold,
        members: members.clone(),
        heldout: None,
        spec: s,
        seed: 1,
        eval_prompts: &[],
    };
    let mut rng = goodhart::seed::rng(1, "bench/rollout");
    let prompts: Vec<Vec<u32>> = (0..s.rollout).map(|_| f.world.sample_prompt(&mut rng)).collect();
    let collect = |rng: &mut rand::rngs::StdRng| {
        goodhart::methods::ppo::rollout::collect(&f.world, &f.view, &f.reference, &members, run.aggregator, &prompts, rng).unwrap()
    };
    let ro = collect(&mut rng);
    let prep = prepare(&ro, &f.policy, s, run.beta);
    let cfg = loss_config(s);
    let mut trainer = Trainer::constant(&f.varmap, s.lr, s.max_grad_norm, "bench").unwrap();

    let mut g = common::group(c);
    g.bench_function("ppo_rollout", |b| b.iter(|| collect(&mut rng)));

    let first: Vec<u32> = (0..s.minibatch as u32).collect();
    g.bench_function("ppo_minibatch", |b| b.iter(|| minibatch(&f.policy, &mut trainer, &prep, &first, cfg, 1)));

    let mut update = 0;
    g.bench_function("ppo_update", |b| {
        b.iter(|| {
            // The body of ppo::optimize (its set-up is `prepare`, done once).
            update += 1;
            let mut order: Vec<u32> = (0..ro.len() as u32).collect();
            let mut rng = goodhart::seed::rng(1, &format!("{}/minibatches{update}", run.id));
            let (mut sums, mut count, mut grad_norm) = ([0f64; 5], 0usize, 0f64);
            for _ in 0..s.epochs {
                order.shuffle(&mut rng);
                for chunk in order.chunks(s.minibatch) {
                    let (parts, gn) = minibatch(&f.policy, &mut trainer, &prep, chunk, cfg, update);
                    grad_norm = grad_norm.max(gn);
                    for (acc, v) in sums.iter_mut().zip(parts) {
                        *acc += v as f64;
                    }
                    count += 1;
                }
            }
            let (k1s, _) = goodhart::methods::ppo::kl::sequence_kl(&ro.logp, &ro.ref_logp, &ro.mask, ro.width);
            let ev = goodhart::methods::ppo::explained_variance(&ro.values, &prep.ret, &ro.mask);
            (sums, count, grad_norm, mean(&ro.score), k1s, ev, prep.rewards.len())
        })
    });

    let mut u = 0;
    g.bench_function("ppo_update_full", |b| {
        b.iter(|| {
            u += 1;
            goodhart::methods::ppo::update(&ctx, &run, &f.policy, &f.view, &mut trainer, u).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
bench_main!(benches);
