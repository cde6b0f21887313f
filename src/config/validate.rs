//! Validation: every value of an experiment checked once, against the [`limits`] below and
//! the others it must agree with; a bad value is a one-line error naming its key.

use super::*;
use super::fields::*;


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
        labeler_bias(&bad, &spec.preferences.bias, w)?;

        let x = &spec.proxy;
        list(&bad, "proxy.sizes", x.sizes.len(), 1)?;
        let mut proxies: Vec<(String, usize)> = Vec::new();
        for (i, s) in x.sizes.iter().enumerate() {
            let key = format!("proxy.sizes[{i}]");
            path_safe(&bad, &format!("{key}.name"), &s.name)?;
            if let Some(j) = x.sizes[..i].iter().position(|t| t.name == s.name) {
                return Err(bad(&format!("{key}.name"), format!("{:?} repeats proxy.sizes[{j}].name; names must be unique", s.name)));
            }
            if spec.text.is_some() {
                // A text study's proxy is its trunk checkpoint with a head (counted below).
                if (s.layers, s.width, s.heads) != (0, 0, 0) {
                    return Err(bad(&key, "a text study's proxies take their trunk checkpoint's shape: leave layers, width and heads out".into()));
                }
                proxies.push((s.name.clone(), 0));
                continue;
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
        sources(&bad, x)?;
        let grid = [x.sizes.len(), x.data_sizes.len(), x.noise.len(), x.members, x.sources.len()]
            .iter()
            .try_fold(1usize, |acc, &n| acc.checked_mul(n));
        if grid.is_none_or(|n| n > limits::MODELS) {
            return Err(bad(
                "proxy.members",
                format!(
                    "the proxy grid (proxy.sizes {} × proxy.data_sizes {} × proxy.noise {} × proxy.members {} × proxy.sources {}) must be at most {} models",
                    x.sizes.len(),
                    x.data_sizes.len(),
                    x.noise.len(),
                    x.members,
                    x.sources.len(),
                    limits::MODELS
                ),
            ));
        }


        spec.bon.validate(&bad)?;
        spec.ppo.validate(&bad, x)?;
        spec.grpo.validate("grpo", &bad, &spec.ppo, x)?;
        spec.rloo.validate("rloo", &bad, &spec.ppo, x)?;
        spec.daa.validate(&bad, x)?;
        validate_conclusions(&bad, &spec.conclusions)?;

        let gold_params = reward_params(&bad, "gold", &gold_arch)?;
        let (largest_name, largest) = proxies
            .iter()
            .max_by_key(|(_, n)| *n)
            .cloned()
            .expect("at least one proxy size");
        if spec.text.is_none() && largest.checked_mul(4).is_none_or(|four| gold_params < four) {
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
        let mut params = ParamCounts {
            policy,
            gold: gold_params,
            proxies,
        };
        let text_task = match &spec.text {
            Some(t) => {
                let task = text_study(&bad, &spec, t, path)?;
                params = text_params(&task, &spec.proxy)?;
                Some(std::sync::Arc::new(task))
            }
            None => None,
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
            grpo: spec.grpo,
            rloo: spec.rloo,
            daa: spec.daa,
            conclusions: spec.conclusions,
            text: spec.text,
            text_task,
            params,
        };
        Ok(exp)
    }
}

/// A study on checkpoints (`[text]`): what it supports so far, checked, and its world of
/// text opened (checkpoints' configs and tokenizers, the prompt file).
fn text_study(bad: Bad, spec: &ExperimentSpec, t: &TextSpec, path: &Path) -> Result<crate::text::TextTask> {
    if spec.world.per_replicate {
        return Err(bad("world.per_replicate", "a text study has one world, its checkpoints and prompts; leave it false".into()));
    }
    if spec.proxy.sizes.len() != 1 {
        return Err(bad(
            "proxy.sizes",
            format!("a text study's proxies are its trunk checkpoint with a scalar head: give one size (its name labels them), got {}", spec.proxy.sizes.len()),
        ));
    }
    if let Some(s) = spec.proxy.sources.iter().find(|s| !matches!(s, Source::Finetune | Source::Bootstrap)) {
        return Err(bad(
            "proxy.sources",
            format!("{:?}: a text study's proxies fine-tune the trunk checkpoint (finetune, bootstrap); other sources are not yet supported on checkpoints", s.name()),
        ));
    }
    if !spec.preferences.bias.is_off() {
        return Err(bad("preferences.bias", "the labelers' biases are features of the embedded world; a text study has none yet".into()));
    }
    crate::text::TextTask::open(t, spec.seed, path)
}

/// Parameter counts of a text study: the checkpoints'.
fn text_params(task: &crate::text::TextTask, x: &ProxySpec) -> Result<ParamCounts> {
    let s = task.spec();
    let open = |p: &Path| crate::model::hf::Checkpoint::open(p).map(|c| c.config().params());
    let policy = open(&s.policy)?;
    let gold = match &s.gold {
        Some(g) => open(g)?,
        None => 0,
    };
    let trunk = crate::model::hf::Checkpoint::open(s.proxy_trunk.as_deref().unwrap_or(&s.policy))?;
    let cfg = trunk.config();
    let head = cfg.hidden;
    // The trunk's decoder (no language-model head) and a scalar head.
    let lm_head = if cfg.tied_embeddings || cfg.head != crate::model::hf::Head::CausalLm { 0 } else { cfg.vocab * cfg.hidden };
    let score = if cfg.head == crate::model::hf::Head::Score { cfg.hidden } else { 0 };
    let proxy = cfg.params() - lm_head - score + head;
    Ok(ParamCounts {
        policy,
        gold,
        proxies: vec![(x.sizes[0].name.clone(), proxy)],
    })
}

fn validate_conclusions(bad: Bad, c: &ConclusionsSpec) -> Result<()> {
    for (i, s) in c.primary.iter().enumerate() {
        let key = |f: &str| format!("conclusions.primary[{i}].{f}");
        if !["overopt", "peak", "gap", "source", "stop"].contains(&s.kind.as_str()) {
            return Err(bad(&key("kind"), format!("must be overopt, peak, gap, source or stop, got '{}'", s.kind)));
        }
        if !METHOD_NAMES.contains(&s.method.as_str()) {
            return Err(bad(&key("method"), format!("must be one of {}, got '{}'", METHOD_NAMES.join(", "), s.method)));
        }
        if s.aggregator.is_empty() {
            return Err(bad(&key("aggregator"), "must name an aggregator (single, mean, wco, uwo, …) or a rule".into()));
        }
        let compares = s.kind == "gap" || s.kind == "source";
        if compares != !s.baseline.is_empty() {
            return Err(bad(&key("baseline"), "a gap needs a baseline (single, mean, or a shaped group's unshaped one), a source claim one like \"finetune mean\", and only they have one".into()));
        }
        if s.kind == "source" && s.ensemble.is_none() {
            return Err(bad(&key("ensemble"), "a source claim names its ensemble (e.g. \"s/d500/n0.25/pretrain\")".into()));
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








/// `[preferences.bias]`: each weight finite and of a sane size, and none on a feature the
/// world does not have (flattery in a world without flattery tokens).
fn labeler_bias(bad: Bad, b: &LabelerBias, w: &WorldSpec) -> Result<()> {
    for (name, v) in b.weights() {
        signed(bad, &format!("preferences.bias.{name}"), v, limits::LABELER_BIAS, "a weight in standardized gold units")?;
    }
    if b.flattery != 0.0 && w.flattery_tokens == 0 {
        return Err(bad(
            "preferences.bias.flattery",
            format!("is {} but the world has no flattery tokens (world.flattery_tokens = 0); leave it 0", b.flattery),
        ));
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

/// `proxy.sources` and `proxy.pretrain`: distinct sources; WARM averages the `finetune`
/// ensemble, so it needs one; a multi-head model needs two heads; the pretraining is checked
/// only where a source reads it.
fn sources(bad: Bad, x: &super::ProxySpec) -> Result<()> {
    use super::Source;
    list(bad, "proxy.sources", x.sources.len(), 1)?;
    distinct(bad, "proxy.sources", &x.sources)?;
    let has = |s: Source| x.sources.contains(&s);
    if has(Source::Warm) && !has(Source::Finetune) {
        return Err(bad("proxy.sources", "\"warm\" averages the weights of the \"finetune\" ensemble's members; list \"finetune\" too".to_string()));
    }
    for s in [Source::Warm, Source::Multihead] {
        if has(s) && x.members < 2 {
            return Err(bad("proxy.members", format!("\"{}\" in proxy.sources needs at least 2 members, got {}", s.name(), x.members)));
        }
    }
    if x.sources.iter().any(|s| s.pretrained()) {
        let p = &x.pretrain;
        count(bad, "proxy.pretrain.demonstrations", p.demonstrations, 1, limits::COUNT)?;
        steps(bad, "proxy.pretrain.steps", p.steps)?;
        count(bad, "proxy.pretrain.batch", p.batch, 1, limits::COUNT)?;
        rate(bad, "proxy.pretrain.lr", p.lr)?;
    }
    Ok(())
}
