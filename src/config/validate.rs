//! Validation: every value of an experiment checked once, against the [`limits`] below and
//! the others it must agree with; a bad value is a one-line error naming its key.

use super::*;

/// Upper bounds [`Experiment::validate`] enforces. They are far above any study the
/// embedded world is meant for; they exist so that a typo (an extra digit, 2^40) is an
/// error naming the key instead of an allocation failure hours into a run.
pub mod limits {
    /// Characters of the experiment name and of a proxy size name.
    pub const NAME_LEN: usize = 64;
    /// `world.content_tokens` (the labeler's affinity matrix is quadratic in it).
    pub const CONTENT_TOKENS: usize = 4096;
    /// `world.prompt_len`.
    pub const PROMPT_LEN: usize = 256;
    /// `world.max_response`.
    pub const MAX_RESPONSE: usize = 512;
    /// Layers of any transformer.
    pub const LAYERS: usize = 64;
    /// Width of any transformer.
    pub const WIDTH: usize = 4096;
    /// Attention heads of any transformer.
    pub const HEADS: usize = 64;
    /// Any count of samples, pairs, prompts, demonstrations or a batch size.
    pub const COUNT: usize = 100_000_000;
    /// Training steps, PPO updates and epochs, and the optimizer steps of one model.
    pub const STEPS: usize = 10_000_000;
    /// `proxy.members`.
    pub const MEMBERS: usize = 256;
    /// Entries of any list.
    pub const LIST: usize = 64;
    /// Proxy models of the grid, and PPO runs of the sweep.
    pub const MODELS: usize = 10_000;
}

impl Experiment {
    /// Checks every value once and resolves derived quantities: ranges and [`limits`],
    /// distinct list entries, path-safe names, parameter counts and grid sizes by checked
    /// arithmetic. What the run needs (memory, disk, the plan's size) is checked before any
    /// work by the plan (`goodhart validate`, `plan::check`).
    pub fn validate(spec: ExperimentSpec, path: &Path) -> Result<Self> {
        let bad = |key: &str, msg: String| Error::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg,
        };
        path_safe(&bad, "name", &spec.name)?;
        if !(1..=MAX_REPLICATES).contains(&spec.replicates) {
            return Err(bad("replicates", format!("must be in 1..={MAX_REPLICATES}, got {}", spec.replicates)));
        }
        let w = &spec.world;
        count(&bad, "world.content_tokens", w.content_tokens, 4, limits::CONTENT_TOKENS)?;
        count(&bad, "world.prompt_len", w.prompt_len, 1, limits::PROMPT_LEN)?;
        count(&bad, "world.max_response", w.max_response, 2, limits::MAX_RESPONSE)?;
        if w.flattery_tokens >= w.content_tokens {
            return Err(bad(
                "world.flattery_tokens",
                format!("must be below world.content_tokens ({}), got {}", w.content_tokens, w.flattery_tokens),
            ));
        }
        if !(w.mean_response.is_finite() && w.mean_response >= 1.0 && w.mean_response < w.max_response as f64) {
            return Err(bad(
                "world.mean_response",
                format!("must be in [1, world.max_response = {}), got {}", w.max_response, w.mean_response),
            ));
        }
        probability(&bad, "world.flattery_rate", w.flattery_rate, 0.5)?;
        probability(&bad, "world.echo_rate", w.echo_rate, 0.9)?;
        if w.flattery_rate + w.echo_rate > 0.95 {
            return Err(bad(
                "world.echo_rate",
                format!("echo_rate + flattery_rate must stay below 0.95, got {}", w.flattery_rate + w.echo_rate),
            ));
        }
        // Every use of prompts draws from its own disjoint set (world::Split): there must be
        // enough distinct prompts for each set to hold many.
        let plain = (w.content_tokens - w.flattery_tokens) as u64;
        let prompts = plain.saturating_pow(w.prompt_len as u32);
        if prompts < crate::world::MIN_DISTINCT_PROMPTS {
            return Err(bad(
                "world.prompt_len",
                format!(
                    "the world has only {prompts} distinct prompts ((content_tokens − flattery_tokens)^prompt_len = {plain}^{}); \
                     the disjoint prompt sets of SFT, preference pairs, PPO and best-of-n need at least {}",
                    w.prompt_len,
                    crate::world::MIN_DISTINCT_PROMPTS
                ),
            ));
        }
        let vocab = crate::world::vocab_size(w.content_tokens);
        let seq_len = crate::world::sequence_len(w.prompt_len, w.max_response);
        let shape = |key: &str, layers, width, heads| arch(&bad, key, vocab, seq_len, layers, width, heads);

        let p = &spec.policy;
        let policy_arch = shape("policy", p.layers, p.width, p.heads)?;
        count(&bad, "policy.demonstrations", p.demonstrations, 1, limits::COUNT)?;
        steps(&bad, "policy.sft_steps", p.sft_steps)?;
        count(&bad, "policy.sft_batch", p.sft_batch, 1, limits::COUNT)?;
        rate(&bad, "policy.sft_lr", p.sft_lr)?;

        count(&bad, "reference.standardize_samples", spec.reference.standardize_samples, 2, limits::COUNT)?;
        count(&bad, "reference.diversity_pool", spec.reference.diversity_pool, 1, limits::COUNT)?;

        let g = &spec.gold;
        let gold_arch = shape("gold", g.layers, g.width, g.heads)?;
        count(&bad, "gold.samples", g.samples, 2, limits::COUNT)?;
        steps(&bad, "gold.steps", g.steps)?;
        count(&bad, "gold.batch", g.batch, 1, limits::COUNT)?;
        rate(&bad, "gold.lr", g.lr)?;

        count(&bad, "preferences.val_pairs", spec.preferences.val_pairs, 1, limits::COUNT)?;

        let x = &spec.proxy;
        list(&bad, "proxy.sizes", x.sizes.len(), 1)?;
        let mut proxies: Vec<(String, usize)> = Vec::new();
        for (i, s) in x.sizes.iter().enumerate() {
            let key = format!("proxy.sizes[{i}]");
            path_safe(&bad, &format!("{key}.name"), &s.name)?;
            if let Some(j) = x.sizes[..i].iter().position(|t| t.name == s.name) {
                return Err(bad(&format!("{key}.name"), format!("{:?} repeats proxy.sizes[{j}].name; names must be unique", s.name)));
            }
            let a = shape(&key, s.layers, s.width, s.heads)?;
            if let Some(j) = x.sizes[..i].iter().position(|t| (t.layers, t.width, t.heads) == (s.layers, s.width, s.heads)) {
                return Err(bad(
                    &key,
                    format!(
                        "shape {}x{} with {} heads repeats proxy.sizes[{j}] ({:?}); every size must differ",
                        s.layers, s.width, s.heads, x.sizes[j].name
                    ),
                ));
            }
            proxies.push((s.name.clone(), reward_params(&bad, &key, &a)?));
        }
        list(&bad, "proxy.data_sizes", x.data_sizes.len(), 1)?;
        for (i, &d) in x.data_sizes.iter().enumerate() {
            count(&bad, &format!("proxy.data_sizes[{i}]"), d, 1, limits::COUNT)?;
        }
        distinct(&bad, "proxy.data_sizes", &x.data_sizes)?;
        list(&bad, "proxy.noise", x.noise.len(), 1)?;
        for (i, &n) in x.noise.iter().enumerate() {
            probability(&bad, &format!("proxy.noise[{i}]"), n, 0.5)?;
        }
        distinct(&bad, "proxy.noise", &x.noise)?;
        noise_ids(&bad, &x.noise)?;
        count(&bad, "proxy.members", x.members, 1, limits::MEMBERS)?;
        if x.heldout_like && !x.heldout {
            return Err(bad("proxy.heldout_like", "needs proxy.heldout = true".to_string()));
        }
        steps(&bad, "proxy.epochs", x.epochs)?;
        count(&bad, "proxy.batch", x.batch, 1, limits::COUNT)?;
        rate(&bad, "proxy.lr", x.lr)?;
        let largest_data = *x.data_sizes.iter().max().expect("checked non-empty");
        let proxy_steps = x.epochs.checked_mul(largest_data.div_ceil(x.batch));
        if proxy_steps.is_none_or(|n| n > limits::STEPS) {
            return Err(bad(
                "proxy.epochs",
                format!(
                    "proxy.epochs ({}) × batches per epoch of the largest data size ({}) must be at most {} steps",
                    x.epochs,
                    largest_data.div_ceil(x.batch),
                    limits::STEPS
                ),
            ));
        }
        let grid = [x.sizes.len(), x.data_sizes.len(), x.noise.len(), x.members]
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n));
        if grid.is_none_or(|n| n > limits::MODELS) {
            return Err(bad(
                "proxy.members",
                format!(
                    "the proxy grid (proxy.sizes {} × proxy.data_sizes {} × proxy.noise {} × proxy.members {}) must be at most {} models",
                    x.sizes.len(),
                    x.data_sizes.len(),
                    x.noise.len(),
                    x.members,
                    limits::MODELS
                ),
            ));
        }

        let b = &spec.bon;
        count(&bad, "bon.prompts", b.prompts, 1, limits::COUNT)?;
        count(&bad, "bon.pool", b.pool, 2, limits::COUNT)?;
        count(&bad, "bon.prompts_per_cell", b.prompts_per_cell, 1, limits::COUNT)?;
        for (key, l) in [("bon.uwo_lambdas", &b.uwo_lambdas), ("bon.mean_std_lambdas", &b.mean_std_lambdas)] {
            list(&bad, key, l.len(), 0)?;
            for (i, &v) in l.iter().enumerate() {
                non_negative(&bad, &format!("{key}[{i}]"), v, "a finite λ ≥ 0")?;
            }
            distinct(&bad, key, l)?;
        }

        validate_ppo(&bad, &spec.ppo, x)?;
        validate_conclusions(&bad, &spec.conclusions)?;

        let gold_params = reward_params(&bad, "gold", &gold_arch)?;
        let (largest_name, largest) = proxies
            .iter()
            .max_by_key(|(_, n)| *n)
            .cloned()
            .expect("at least one proxy size");
        if largest.checked_mul(4).is_none_or(|four| gold_params < four) {
            return Err(bad(
                "gold.width",
                format!(
                    "gold RM has {gold_params} params, needs at least 4x the largest proxy ('{largest_name}', {largest} params)"
                ),
            ));
        }
        let policy = policy_arch.checked_policy_params().ok_or_else(|| {
            bad("policy.width", format!("the policy's parameter count overflows ({} layers × width {})", p.layers, p.width))
        })?;
        let params = ParamCounts {
            policy,
            gold: gold_params,
            proxies,
        };
        let exp = Experiment {
            name: spec.name,
            seed: spec.seed,
            replicates: spec.replicates,
            world: spec.world,
            policy: spec.policy,
            reference: spec.reference,
            gold: spec.gold,
            preferences: spec.preferences,
            proxy: spec.proxy,
            bon: spec.bon,
            ppo: spec.ppo,
            conclusions: spec.conclusions,
            params,
        };
        Ok(exp)
    }
}

fn validate_conclusions(bad: Bad, c: &ConclusionsSpec) -> Result<()> {
    for (i, s) in c.primary.iter().enumerate() {
        let key = |f: &str| format!("conclusions.primary[{i}].{f}");
        if !["overopt", "peak", "gap", "stop"].contains(&s.kind.as_str()) {
            return Err(bad(&key("kind"), format!("must be overopt, peak, gap or stop, got '{}'", s.kind)));
        }
        if !["bon", "ppo"].contains(&s.method.as_str()) {
            return Err(bad(&key("method"), format!("must be bon or ppo, got '{}'", s.method)));
        }
        if s.aggregator.is_empty() {
            return Err(bad(&key("aggregator"), "must name an aggregator (single, mean, wco, uwo, …) or a rule".into()));
        }
        if (s.kind == "gap") != !s.baseline.is_empty() {
            return Err(bad(&key("baseline"), "a gap needs a baseline (single or mean), and only a gap has one".into()));
        }
        if let Some(b) = s.kl_penalty {
            if !(b.is_finite() && b >= 0.0) {
                return Err(bad(&key("kl_penalty"), format!("must be a finite β ≥ 0, got {b}")));
            }
        }
    }
    if !(c.smallest_effect.is_finite() && c.smallest_effect > 0.0) {
        return Err(bad("conclusions.smallest_effect", format!("must be a finite effect > 0, got {}", c.smallest_effect)));
    }
    if !(c.power > 0.05 && c.power < 1.0) {
        return Err(bad("conclusions.power", format!("must be in (0.05, 1), got {}", c.power)));
    }
    if c.cluster_nodes == 0 || c.cluster_cores == 0 {
        return Err(bad("conclusions.cluster_nodes", "the cluster needs at least one node of at least one core".into()));
    }
    Ok(())
}

type Bad<'a> = &'a dyn Fn(&str, String) -> Error;

fn validate_ppo(bad: Bad, p: &PpoSpec, x: &ProxySpec) -> Result<()> {
    list(bad, "ppo.sizes", p.sizes.len(), 0)?;
    for (i, name) in p.sizes.iter().enumerate() {
        if !x.sizes.iter().any(|s| &s.name == name) {
            return Err(bad(&format!("ppo.sizes[{i}]"), format!("no proxy size named {:?} in proxy.sizes", shown(name))));
        }
    }
    distinct(bad, "ppo.sizes", &p.sizes)?;
    list(bad, "ppo.data_sizes", p.data_sizes.len(), 0)?;
    for (i, d) in p.data_sizes.iter().enumerate() {
        if !x.data_sizes.contains(d) {
            return Err(bad(&format!("ppo.data_sizes[{i}]"), format!("{d} is not in proxy.data_sizes")));
        }
    }
    distinct(bad, "ppo.data_sizes", &p.data_sizes)?;
    list(bad, "ppo.noise", p.noise.len(), 0)?;
    for (i, n) in p.noise.iter().enumerate() {
        if !x.noise.contains(n) {
            return Err(bad(&format!("ppo.noise[{i}]"), format!("{n} is not in proxy.noise")));
        }
    }
    distinct(bad, "ppo.noise", &p.noise)?;
    list(bad, "ppo.kl_penalties", p.kl_penalties.len(), 1)?;
    for (key, l) in [
        ("ppo.kl_penalties", &p.kl_penalties),
        ("ppo.uwo_lambdas", &p.uwo_lambdas),
        ("ppo.mean_std_lambdas", &p.mean_std_lambdas),
    ] {
        list(bad, key, l.len(), 0)?;
        for (i, &v) in l.iter().enumerate() {
            non_negative(bad, &format!("{key}[{i}]"), v, "finite and ≥ 0")?;
        }
        distinct(bad, key, l)?;
    }
    const KNOWN: [&str; 5] = ["mean", "wco", "uwo", "median", "mean_std"];
    list(bad, "ppo.aggregators", p.aggregators.len(), 0)?;
    for (i, a) in p.aggregators.iter().enumerate() {
        if !KNOWN.contains(&a.as_str()) {
            return Err(bad(&format!("ppo.aggregators[{i}]"), format!("unknown aggregator {:?}; one of {KNOWN:?}", shown(a))));
        }
    }
    distinct(bad, "ppo.aggregators", &p.aggregators)?;
    if p.aggregators.iter().any(|a| a == "uwo") && p.uwo_lambdas.is_empty() {
        return Err(bad("ppo.uwo_lambdas", "aggregator \"uwo\" needs at least one λ".into()));
    }
    if p.aggregators.iter().any(|a| a == "mean_std") && p.mean_std_lambdas.is_empty() {
        return Err(bad("ppo.mean_std_lambdas", "aggregator \"mean_std\" needs at least one λ".into()));
    }
    if p.single_members > x.members {
        return Err(bad(
            "ppo.single_members",
            format!("must be at most proxy.members ({}), got {}", x.members, p.single_members),
        ));
    }
    if p.enabled && p.single_members == 0 && (p.aggregators.is_empty() || x.members == 1) {
        return Err(bad("ppo.aggregators", "nothing to optimize: no single member and no aggregate".into()));
    }
    steps(bad, "ppo.updates", p.updates)?;
    count(bad, "ppo.rollout", p.rollout, 2, limits::COUNT)?;
    count(bad, "ppo.minibatch", p.minibatch, 1, limits::COUNT)?;
    if p.minibatch > p.rollout {
        return Err(bad("ppo.minibatch", format!("must be at most ppo.rollout ({}), got {}", p.rollout, p.minibatch)));
    }
    steps(bad, "ppo.epochs", p.epochs)?;
    let per_update = p.epochs.checked_mul(p.rollout.div_ceil(p.minibatch));
    if per_update.and_then(|n| n.checked_mul(p.updates)).is_none_or(|n| n > limits::STEPS) {
        return Err(bad(
            "ppo.updates",
            format!(
                "ppo.updates ({}) × ppo.epochs ({}) × minibatches per rollout ({}) must be at most {} optimizer steps per run",
                p.updates,
                p.epochs,
                p.rollout.div_ceil(p.minibatch),
                limits::STEPS
            ),
        ));
    }
    rate(bad, "ppo.lr", p.lr)?;
    for (key, v) in [("ppo.clip", p.clip), ("ppo.value_clip", p.value_clip)] {
        if !(v.is_finite() && v > 0.0 && v < 1.0) {
            return Err(bad(key, format!("must be in (0, 1), got {v}")));
        }
    }
    for (key, v) in [("ppo.value_coef", p.value_coef), ("ppo.entropy_coef", p.entropy_coef)] {
        non_negative(bad, key, v, "finite and ≥ 0")?;
    }
    probability(bad, "ppo.gae_lambda", p.gae_lambda, 1.0)?;
    probability(bad, "ppo.gamma", p.gamma, 1.0)?;
    if !(p.max_grad_norm.is_finite() && p.max_grad_norm > 0.0) {
        return Err(bad("ppo.max_grad_norm", format!("must be > 0, got {}", p.max_grad_norm)));
    }
    steps(bad, "ppo.eval_every", p.eval_every)?;
    count(bad, "ppo.eval_prompts", p.eval_prompts, 2, limits::COUNT)?;
    if let Some(b) = p.kl_budget {
        if !(b.is_finite() && b > 0.0) {
            return Err(bad("ppo.kl_budget", format!("must be > 0 nats, got {b}")));
        }
    }
    if p.enabled && ppo_runs(p, x).is_none_or(|n| n > limits::MODELS) {
        return Err(bad(
            "ppo.kl_penalties",
            format!("the PPO sweep (ensembles × aggregators × ppo.kl_penalties) must be at most {} runs", limits::MODELS),
        ));
    }
    Ok(())
}

/// PPO runs of a sweep (0 when PPO is off); `None` if the count overflows.
pub(super) fn ppo_runs(p: &PpoSpec, x: &ProxySpec) -> Option<usize> {
    if !p.enabled {
        return Some(0);
    }
    let sizes = if p.sizes.is_empty() { 1 } else { p.sizes.len() };
    let data = if p.data_sizes.is_empty() { 1 } else { p.data_sizes.len() };
    let noise = if p.noise.is_empty() { x.noise.len() } else { p.noise.len() };
    sizes
        .checked_mul(data)?
        .checked_mul(noise)?
        .checked_mul(p.aggregator_list(x.members).len())?
        .checked_mul(p.kl_penalties.len())
}

fn count(bad: Bad, key: &str, v: usize, min: usize, max: usize) -> Result<()> {
    if v < min {
        return Err(bad(key, format!("must be at least {min}, got {v}")));
    }
    if v > max {
        return Err(bad(key, format!("must be at most {max} (goodhart's limit), got {v}")));
    }
    Ok(())
}

fn steps(bad: Bad, key: &str, v: usize) -> Result<()> {
    count(bad, key, v, 1, limits::STEPS)
}

fn list(bad: Bad, key: &str, len: usize, min: usize) -> Result<()> {
    if len < min {
        return Err(bad(key, format!("needs at least {min} entr{}, got {len}", if min == 1 { "y" } else { "ies" })));
    }
    if len > limits::LIST {
        return Err(bad(key, format!("must have at most {} entries, got {len}", limits::LIST)));
    }
    Ok(())
}

/// Every entry of `items` differs from the ones before it.
fn distinct<T: PartialEq + std::fmt::Debug>(bad: Bad, key: &str, items: &[T]) -> Result<()> {
    for (i, v) in items.iter().enumerate() {
        if let Some(j) = items[..i].iter().position(|u| u == v) {
            return Err(bad(&format!("{key}[{i}]"), format!("{v:?} repeats {key}[{j}]; entries must be distinct")));
        }
    }
    Ok(())
}

/// Label-noise levels appear in ensemble ids with 2 decimals (`n0.25`): two levels must not
/// share an id, and a level must be exactly what its id shows.
fn noise_ids(bad: Bad, noise: &[f64]) -> Result<()> {
    let id = |n: f64| format!("n{n:.2}");
    for (i, &n) in noise.iter().enumerate() {
        if let Some(j) = noise[..i].iter().position(|&m| id(m) == id(n)) {
            return Err(bad(
                &format!("proxy.noise[{i}]"),
                format!("{n} and proxy.noise[{j}] = {} share the ensemble id {}; use levels that differ in 2 decimals", noise[j], id(n)),
            ));
        }
    }
    for (i, &n) in noise.iter().enumerate() {
        if format!("{n:.2}").parse::<f64>() != Ok(n) {
            return Err(bad(
                &format!("proxy.noise[{i}]"),
                format!("{n} has more precision than its ensemble id {} shows; use at most 2 decimals", id(n)),
            ));
        }
    }
    Ok(())
}

/// A value in [0, max] (negative zero excluded: it would print as `-0`).
fn probability(bad: Bad, key: &str, v: f64, max: f64) -> Result<()> {
    if !(v.is_finite() && (0.0..=max).contains(&v) && v.is_sign_positive()) {
        return Err(bad(key, format!("must be in [0, {max}], got {v}")));
    }
    Ok(())
}

/// A finite value ≥ 0 (negative zero excluded: it would print as `-0` in run ids).
fn non_negative(bad: Bad, key: &str, v: f64, what: &str) -> Result<()> {
    if !(v.is_finite() && v >= 0.0 && v.is_sign_positive()) {
        return Err(bad(key, format!("must be {what}, got {v}")));
    }
    Ok(())
}

fn rate(bad: Bad, key: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return Err(bad(key, format!("learning rate must be in (0, 1), got {v}")));
    }
    Ok(())
}

/// A name that is safe as one path component and in ids: 1 to [`limits::NAME_LEN`]
/// characters of letters, digits, `_`, `-` and `.`, not starting with `.`, without `..`.
fn path_safe(bad: Bad, key: &str, name: &str) -> Result<()> {
    let chars_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let len = name.chars().count();
    if len == 0 || len > limits::NAME_LEN || !chars_ok || name.starts_with('.') || name.contains("..") {
        return Err(bad(
            key,
            format!(
                "must be 1 to {} characters of letters, digits, '_', '-' and '.', not starting with '.' and without '..' \
                 (it names files and ids), got {:?}{}",
                limits::NAME_LEN,
                shown(name),
                if len > 40 { format!(" ({len} characters)") } else { String::new() }
            ),
        ));
    }
    Ok(())
}

/// `s`, cut to its first 40 characters for an error message.
fn shown(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn arch(bad: Bad, key: &str, vocab: usize, max_len: usize, layers: usize, width: usize, heads: usize) -> Result<TransformerConfig> {
    count(bad, &format!("{key}.layers"), layers, 1, limits::LAYERS)?;
    count(bad, &format!("{key}.width"), width, 2, limits::WIDTH)?;
    count(bad, &format!("{key}.heads"), heads, 1, limits::HEADS)?;
    if !width.is_multiple_of(heads) {
        return Err(bad(
            &format!("{key}.heads"),
            format!("width {width} must be divisible by heads {heads}"),
        ));
    }
    Ok(TransformerConfig::with_dims(vocab, max_len, layers, width, heads))
}

fn reward_params(bad: Bad, key: &str, a: &TransformerConfig) -> Result<usize> {
    a.checked_reward_params()
        .ok_or_else(|| bad(&format!("{key}.width"), format!("the parameter count overflows ({} layers × width {})", a.layers, a.width)))
}
