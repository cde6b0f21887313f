//! The embedded world: a token vocabulary, a prompt distribution, a stochastic demonstrator
//! that writes prompt-conditioned responses of variable length, and the labeler utility the
//! gold reward model is distilled from. Nothing is downloaded; every draw is seeded.
//!
//! Sequence layout (length [`WorldConfig::seq_len`]):
//! `BOS p_1 … p_P SEP r_1 … r_L EOS PAD …`; a response that reaches `max_response` tokens
//! without an end token is unfinished (and the labeler dislikes it).
//!
//! The labeler's utility (what "people" want) is deliberately concave in the things a
//! demonstrator rarely overdoes: some flattery is liked and a lot is disliked, a longer
//! answer is liked up to a point, and an answer that relates to the prompt in a subtle
//! way (a token three steps past a prompt token: "insight") is liked. Preference pairs are
//! drawn from π_ref, where the tails are rare, so a proxy learns "more is better" from the
//! bulk and is wrong exactly where an optimizer pushes. On top of these the labeler has a
//! taste that no salient feature reveals: an affinity between each prompt token and each
//! response token (a fixed random matrix drawn from the experiment seed). Small proxies
//! cannot represent it; larger ones and more data recover more of it.

use rand::Rng;
use rand_distr::{Binomial, Distribution};
use serde::{Deserialize, Serialize};

/// The `[world]` table of an experiment: the embedded world's shape and demonstrator.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorldSpec {
    /// Number of ordinary content tokens (special and flattery tokens come on top).
    pub content_tokens: usize,
    /// Number of "flattery" tokens: liked in small doses by the labeler, disliked in bulk.
    pub flattery_tokens: usize,
    /// Prompt length in content tokens (every prompt has this length).
    pub prompt_len: usize,
    /// Longest response, end token included.
    pub max_response: usize,
    /// Mean response length (content tokens) of the demonstrator.
    pub mean_response: f64,
    /// Demonstrator's per-token probability of a flattery token.
    pub flattery_rate: f64,
    /// Demonstrator's per-token probability of echoing a prompt token.
    pub echo_rate: f64,
    /// Each replicate draws its own world (the labeler's affinity), π_ref, gold, preference
    /// pairs and held-out proxy, from a seed of its own, instead of sharing replicate 0's;
    /// replicate 0's are the same either way. Conclusions then average over worlds too.
    pub per_replicate: bool,
}

impl Default for WorldSpec {
    fn default() -> Self {
        Self {
            content_tokens: 20,
            flattery_tokens: 2,
            prompt_len: 4,
            max_response: 16,
            mean_response: 6.5,
            flattery_rate: 0.05,
            echo_rate: 0.2,
            per_replicate: false,
        }
    }
}

/// Padding (after the end token).
pub const PAD: u32 = 0;
/// Start of sequence.
pub const BOS: u32 = 1;
/// Separates the prompt from the response.
pub const SEP: u32 = 2;
/// End of response.
pub const EOS: u32 = 3;
/// First content token id.
pub const FIRST_CONTENT: u32 = 4;

/// A world of text: a checkpoint's tokenizer, prompts read from a file and a labeler, behind
/// the embedded world's interface (prompts by split, the row layout, the labeler's utility).
/// Implemented in `crate::text`; a [`WorldConfig`] holding one answers for it, and the cells
/// that only the embedded world has (SFT demonstrations, gold's distillation, the labeler
/// biases) are not planned for it.
pub trait TextWorld: Send + Sync + std::fmt::Debug {
    /// Prompt positions (left-padded prompt prefixes).
    fn prefix_len(&self) -> usize;
    /// Response positions, stop token included.
    fn max_response(&self) -> usize;
    /// The checkpoint's vocabulary.
    fn vocab(&self) -> usize;
    /// A prompt prefix of `split`, drawn uniformly from the split's prompts.
    fn prompt_in(&self, split: Split, rng: &mut dyn rand::RngCore) -> Vec<u32>;
    /// The row of `prompt` (a prefix) and `response`.
    fn encode(&self, prompt: &[u32], response: &Response) -> Vec<u32>;
    /// The response a row holds.
    fn decode_response(&self, seq: &[u32]) -> Response;
    /// The labeler's utility of `response` to `prompt`.
    fn utility(&self, prompt: &[u32], response: &Response) -> f64;
}

/// Resolved world parameters.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// Content tokens, flattery tokens included (the last `flattery` of them).
    pub content: usize,
    pub flattery: usize,
    pub prompt_len: usize,
    pub max_response: usize,
    pub demo: DemoParams,
    /// Labeler's affinity of plain prompt token i for content token j: `(plain, content)`
    /// row-major, N(0, 1) entries drawn from the experiment seed.
    pub affinity: Vec<f32>,
    /// A world of text, which answers for the layout, prompts and utility instead (the
    /// embedded world's fields are then unused).
    pub text: Option<std::sync::Arc<dyn TextWorld>>,
}

impl PartialEq for WorldConfig {
    fn eq(&self, other: &Self) -> bool {
        let text = match (&self.text, &other.text) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        };
        text && self.content == other.content
            && self.flattery == other.flattery
            && self.prompt_len == other.prompt_len
            && self.max_response == other.max_response
            && self.demo == other.demo
            && self.affinity == other.affinity
    }
}

/// The demonstrator's knobs. π_ref imitates the default ones; the gold RM is distilled on
/// samples whose knobs are randomized so that it has seen the tails too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoParams {
    /// Mean number of content tokens.
    pub mean_len: f64,
    pub flattery_rate: f64,
    pub echo_rate: f64,
    /// Probability of an "insight" token (prompt token + 3).
    pub insight_rate: f64,
    /// Probability of repeating the previous token.
    pub repeat_rate: f64,
}

/// A response: its content tokens (no end token) and whether it ended with EOS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Response {
    pub tokens: Vec<u32>,
    pub finished: bool,
}

/// Labeler utility weights (documented in the README).
pub mod utility {
    /// Per distinct prompt token the response mentions.
    pub const COVERAGE: f64 = 0.5;
    /// Preferred response length and the curvature around it.
    pub const BEST_LEN: f64 = 10.0;
    pub const LEN_CURVE: f64 = 0.05;
    /// Weight of the summed affinity over distinct response tokens (mean over the prompt).
    pub const AFFINITY: f64 = 1.5;
    /// Flattery count f contributes `FLATTERY_A·f − FLATTERY_B·f²` (peak near one).
    pub const FLATTERY_A: f64 = 1.5;
    pub const FLATTERY_B: f64 = 0.6;
    /// Per distinct insight token (a prompt token shifted by +3).
    pub const INSIGHT: f64 = 0.8;
    /// Per adjacent repeated token.
    pub const REPEAT: f64 = -0.7;
    /// For a response with no end token.
    pub const UNFINISHED: f64 = -2.0;

    /// Every weight, for the recipes of the models trained on this utility.
    pub fn recipe() -> serde_json::Value {
        serde_json::json!({
            "coverage": COVERAGE, "best_len": BEST_LEN, "len_curve": LEN_CURVE,
            "affinity": AFFINITY, "flattery_a": FLATTERY_A, "flattery_b": FLATTERY_B,
            "insight": INSIGHT, "repeat": REPEAT, "unfinished": UNFINISHED,
        })
    }
}

/// Vocabulary size of a world with `content` content tokens, special tokens included.
pub const fn vocab_size(content: usize) -> usize {
    FIRST_CONTENT as usize + content
}

/// Sequence length of a world with prompts of `prompt_len` and responses of at most
/// `max_response` tokens: BOS, prompt, SEP, response (end token included).
pub const fn sequence_len(prompt_len: usize, max_response: usize) -> usize {
    2 + prompt_len + max_response
}

impl WorldConfig {
    /// The world of `s`; `seed` (the experiment's) draws the labeler's affinity matrix.
    pub fn from_spec(s: &WorldSpec, seed: u64) -> Self {
        let plain = s.content_tokens - s.flattery_tokens;
        let mut rng = crate::seed::rng(seed, "world/affinity");
        let normal = rand_distr::StandardNormal;
        let affinity = (0..plain * s.content_tokens)
            .map(|_| Distribution::<f64>::sample(&normal, &mut rng) as f32)
            .collect();
        Self {
            affinity,
            content: s.content_tokens,
            flattery: s.flattery_tokens,
            prompt_len: s.prompt_len,
            max_response: s.max_response,
            demo: DemoParams {
                mean_len: s.mean_response,
                flattery_rate: s.flattery_rate,
                echo_rate: s.echo_rate,
                insight_rate: 0.0,
                repeat_rate: 0.03,
            },
            text: None,
        }
    }

    /// A world of text (see [`TextWorld`]).
    pub fn of_text(text: std::sync::Arc<dyn TextWorld>) -> Self {
        Self {
            content: 0,
            flattery: 0,
            prompt_len: text.prefix_len(),
            max_response: text.max_response(),
            demo: DemoParams {
                mean_len: 0.0,
                flattery_rate: 0.0,
                echo_rate: 0.0,
                insight_rate: 0.0,
                repeat_rate: 0.0,
            },
            affinity: Vec::new(),
            text: Some(text),
        }
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab(&self) -> usize {
        match &self.text {
            Some(t) => t.vocab(),
            None => vocab_size(self.content),
        }
    }

    /// Full sequence length: BOS, prompt, SEP, response (end token included); a world of
    /// text: the prompt prefix and the response.
    pub fn seq_len(&self) -> usize {
        match &self.text {
            Some(t) => t.prefix_len() + t.max_response(),
            None => sequence_len(self.prompt_len, self.max_response),
        }
    }

    /// Number of positions before the first response token (BOS, prompt, SEP; a world of
    /// text: the prompt prefix).
    pub fn prefix_len(&self) -> usize {
        match &self.text {
            Some(t) => t.prefix_len(),
            None => 2 + self.prompt_len,
        }
    }

    /// Plain (non-flattery) content tokens.
    fn plain(&self) -> usize {
        self.content - self.flattery
    }

    /// Whether `t` is a flattery token.
    pub fn is_flattery(&self, t: u32) -> bool {
        t >= FIRST_CONTENT + self.plain() as u32 && t < FIRST_CONTENT + self.content as u32
    }

    /// The "confident style" token some labelers like (`preferences.bias.style`): the
    /// middle plain token, `plain_token(plain / 2)` (token 13 of the default world). Gold
    /// does not value it specially: it earns what any plain token earns (its affinity with
    /// the prompt, coverage or insight where the prompt makes it so).
    pub fn style_token(&self) -> u32 {
        self.plain_token(self.plain() / 2)
    }

    /// The rare bigram labelers reward hugely (`preferences.bias.rare`): the highest plain
    /// token followed by the one below it (tokens 21, 20 of the default world), a step
    /// down that the demonstrator's walk never takes (it steps +1 or +2), so only its
    /// uniform jump (45% of walk steps, 1 in `plain` to a given token) or an echo of a rare
    /// prompt token writes it; any policy can. 0.6% of the default world's demonstrator
    /// responses hold it (100,000 samples; 0.75% of the tiny test study's π_ref's, see
    /// `tests/labeler_bias.rs`). Gold values neither token specially.
    pub fn rare_bigram(&self) -> [u32; 2] {
        [self.plain_token(self.plain() - 1), self.plain_token(self.plain() - 2)]
    }

    /// Whether `tokens` hold [`Self::rare_bigram`] as adjacent tokens.
    pub fn has_rare_bigram(&self, tokens: &[u32]) -> bool {
        let rare = self.rare_bigram();
        tokens.windows(2).any(|w| w == rare)
    }

    fn plain_token(&self, i: usize) -> u32 {
        FIRST_CONTENT + (i % self.plain()) as u32
    }

    fn plain_index(&self, t: u32) -> Option<usize> {
        let i = t.checked_sub(FIRST_CONTENT)? as usize;
        (i < self.plain()).then_some(i)
    }

    /// The "insight" token of prompt token `p`: three plain steps past it.
    pub fn insight_of(&self, p: u32) -> u32 {
        self.plain_token(self.plain_index(p).unwrap_or(0) + 3)
    }

    /// Draws a prompt: `prompt_len` plain tokens, lower ids more frequent (Zipf-like).
    /// A prompt of `split`: prompts are drawn as by [`Self::sample_prompt`] until one falls
    /// in the split ([`Split::of`]), so the uses of prompts never share one, whatever the
    /// sizes. Validation guarantees every split holds prompts (at least
    /// [`MIN_DISTINCT_PROMPTS`] distinct ones in the world).
    pub fn prompt_in(&self, split: Split, rng: &mut impl Rng) -> Vec<u32> {
        if let Some(t) = &self.text {
            return t.prompt_in(split, rng);
        }
        loop {
            let p = self.sample_prompt(rng);
            if Split::of(&p) == split {
                return p;
            }
        }
    }

    /// A prompt of any split (see [`Self::prompt_in`], which every use of prompts goes
    /// through): `prompt_len` plain tokens, lower ids more frequent (Zipf-like).
    pub fn sample_prompt(&self, rng: &mut impl Rng) -> Vec<u32> {
        let n = self.plain();
        let weights: Vec<f64> = (0..n).map(|i| 1.0 / (i as f64 + 2.0).powf(0.6)).collect();
        let total: f64 = weights.iter().sum();
        (0..self.prompt_len)
            .map(|_| {
                let mut u = rng.random::<f64>() * total;
                for (i, w) in weights.iter().enumerate() {
                    if u < *w {
                        return self.plain_token(i);
                    }
                    u -= w;
                }
                self.plain_token(n - 1)
            })
            .collect()
    }

    /// The demonstrator with its default knobs (what π_ref learns to imitate).
    pub fn demonstrate(&self, prompt: &[u32], rng: &mut impl Rng) -> Response {
        self.demonstrate_with(prompt, &self.demo, rng)
    }

    /// Draws the knobs of one "broad" sample: the demonstrator pushed toward the tails
    /// (much flattery, long or short, repetitive, insightful), used to distill gold.
    pub fn broad_params(&self, rng: &mut impl Rng) -> DemoParams {
        let max_mean = (self.max_response - 1) as f64;
        DemoParams {
            mean_len: 1.0 + rng.random::<f64>() * (max_mean - 1.0),
            flattery_rate: rng.random::<f64>() * 0.3,
            echo_rate: rng.random::<f64>() * 0.4,
            insight_rate: rng.random::<f64>() * 0.3,
            repeat_rate: rng.random::<f64>() * 0.3,
        }
    }

    /// The demonstrator: a prompt-conditioned length, then per token either flattery, an
    /// echo of a prompt token, an insight token, a repeat, or a walk step from the last
    /// plain token (+1 or +2 most often, anything sometimes).
    pub fn demonstrate_with(&self, prompt: &[u32], d: &DemoParams, rng: &mut impl Rng) -> Response {
        let max_len = self.max_response - 1; // room for the end token
        let shift = (self.plain_index(prompt[0]).unwrap_or(0) % 3) as f64 - 1.0;
        let mean = (d.mean_len + shift).clamp(1.0, max_len as f64);
        let trials = (max_len - 1) as u64;
        let p = ((mean - 1.0) / trials.max(1) as f64).clamp(0.0, 1.0);
        let len = 1 + Binomial::new(trials, p).expect("valid binomial").sample(rng) as usize;
        let mut tokens = Vec::with_capacity(len);
        let mut walk = self.plain_index(prompt[prompt.len() - 1]).unwrap_or(0);
        for _ in 0..len {
            let u = rng.random::<f64>();
            let mut edge = d.flattery_rate;
            let t = if u < edge {
                FIRST_CONTENT + (self.plain() + rng.random_range(0..self.flattery.max(1))) as u32
            } else if u < {
                edge += d.echo_rate;
                edge
            } {
                prompt[rng.random_range(0..prompt.len())]
            } else if u < {
                edge += d.insight_rate;
                edge
            } {
                self.insight_of(prompt[rng.random_range(0..prompt.len())])
            } else if u < {
                edge += d.repeat_rate;
                edge
            } && !tokens.is_empty()
            {
                *tokens.last().expect("non-empty")
            } else {
                let v = rng.random::<f64>();
                walk = if v < 0.35 {
                    walk + 1
                } else if v < 0.55 {
                    walk + 2
                } else {
                    rng.random_range(0..self.plain())
                } % self.plain();
                self.plain_token(walk)
            };
            if let Some(i) = self.plain_index(t) {
                walk = i;
            }
            tokens.push(t);
        }
        Response {
            tokens,
            finished: true,
        }
    }

    /// The labeler's utility of `response` to `prompt` (see [`utility`]).
    pub fn utility(&self, prompt: &[u32], response: &Response) -> f64 {
        if let Some(t) = &self.text {
            return t.utility(prompt, response);
        }
        use utility::*;
        let r = &response.tokens;
        let mut covered: Vec<u32> = prompt.iter().copied().filter(|p| r.contains(p)).collect();
        covered.sort_unstable();
        covered.dedup();
        let mut insights: Vec<u32> = prompt.iter().map(|&p| self.insight_of(p)).filter(|i| r.contains(i)).collect();
        insights.sort_unstable();
        insights.dedup();
        let f = r.iter().filter(|&&t| self.is_flattery(t)).count() as f64;
        let repeats = r.windows(2).filter(|w| w[0] == w[1]).count() as f64;
        let len = r.len() as f64;
        let mut distinct: Vec<u32> = r.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let taste: f64 = distinct
            .iter()
            .map(|&t| prompt.iter().map(|&p| self.affinity_of(p, t)).sum::<f64>() / prompt.len() as f64)
            .sum();
        let mut u = COVERAGE * covered.len() as f64 - LEN_CURVE * (len - BEST_LEN).powi(2)
            + AFFINITY * taste
            + FLATTERY_A * f
            - FLATTERY_B * f * f
            + INSIGHT * insights.len() as f64
            + REPEAT * repeats;
        if !response.finished {
            u += UNFINISHED;
        }
        u
    }

    /// The labeler's affinity of prompt token `p` for response token `t` (0 off the table).
    pub fn affinity_of(&self, p: u32, t: u32) -> f64 {
        match (self.plain_index(p), t.checked_sub(FIRST_CONTENT)) {
            (Some(i), Some(j)) if (j as usize) < self.content => self.affinity[i * self.content + j as usize] as f64,
            _ => 0.0,
        }
    }

    /// The full token sequence (length [`seq_len`](Self::seq_len)), right-padded.
    pub fn encode(&self, prompt: &[u32], response: &Response) -> Vec<u32> {
        if let Some(t) = &self.text {
            return t.encode(prompt, response);
        }
        let mut s = Vec::with_capacity(self.seq_len());
        s.push(BOS);
        s.extend_from_slice(prompt);
        s.push(SEP);
        s.extend_from_slice(&response.tokens);
        if response.finished {
            s.push(EOS);
        }
        s.resize(self.seq_len(), PAD);
        s
    }

    /// Position a reward model reads: the end token, or the last token if unfinished.
    pub fn end_index(&self, response: &Response) -> usize {
        let n = response.tokens.len();
        if self.text.is_some() {
            // A text response holds its stop token; it has at least one token.
            return self.prefix_len() + n.max(1) - 1;
        }
        if response.finished {
            self.prefix_len() + n
        } else {
            self.prefix_len() + n - 1
        }
    }

    /// Decodes the response part of a sequence (inverse of [`encode`](Self::encode)).
    pub fn decode_response(&self, seq: &[u32]) -> Response {
        if let Some(t) = &self.text {
            return t.decode_response(seq);
        }
        let mut tokens = Vec::new();
        for &t in &seq[self.prefix_len()..] {
            if t == EOS {
                return Response {
                    tokens,
                    finished: true,
                };
            }
            tokens.push(t);
        }
        Response {
            tokens,
            finished: false,
        }
    }
}

/// Fewest distinct prompts a world must have, so that every [`Split`] holds some.
pub const MIN_DISTINCT_PROMPTS: u64 = 1000;

/// The disjoint sets the prompt space is cut into, by a hash of the prompt's tokens: each
/// use of prompts draws from its own, so no prompt is shared between SFT demonstrations (and
/// gold's distillation set), preference pairs, the held-out proxy's pairs, validation pairs,
/// PPO training, PPO evaluation, best-of-n evaluation and the reference samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Demonstrations = 0,
    Pairs = 1,
    HeldoutPairs = 2,
    ValidationPairs = 3,
    PpoTrain = 4,
    PpoEval = 5,
    BestOfN = 6,
    Reference = 7,
}

impl Split {
    pub const ALL: [Split; 8] = [
        Split::Demonstrations,
        Split::Pairs,
        Split::HeldoutPairs,
        Split::ValidationPairs,
        Split::PpoTrain,
        Split::PpoEval,
        Split::BestOfN,
        Split::Reference,
    ];

    /// The split a prompt belongs to: a fixed 64-bit mix (splitmix64) of its tokens, modulo
    /// the number of splits. The same on every platform and for every seed.
    pub fn of(prompt: &[u32]) -> Split {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        for &t in prompt {
            h ^= t as u64;
            h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = h;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h = z ^ (z >> 31);
        }
        Split::ALL[(h % Split::ALL.len() as u64) as usize]
    }
}

/// A set of encoded sequences of one length: `tokens` is `(n, seq_len)` row-major.
#[derive(Debug, Clone, Default)]
pub struct SeqSet {
    pub seq_len: usize,
    pub tokens: Vec<u32>,
    /// Reward read-out position of each sequence.
    pub ends: Vec<u32>,
}

impl SeqSet {
    pub fn new(seq_len: usize) -> Self {
        Self {
            seq_len,
            ..Default::default()
        }
    }

    pub fn push(&mut self, world: &WorldConfig, prompt: &[u32], response: &Response) {
        self.tokens.extend(world.encode(prompt, response));
        self.ends.push(world.end_index(response) as u32);
    }

    /// Appends `row` (a sequence of [`SeqSet::row`]'s form, `seq_len` tokens) and its end.
    pub fn push_row(&mut self, row: &[u32], end: u32) {
        debug_assert_eq!(row.len(), self.seq_len);
        self.tokens.extend_from_slice(row);
        self.ends.push(end);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// The rows `idx`, as a new set.
    pub fn select(&self, idx: &[usize]) -> SeqSet {
        let mut out = SeqSet::new(self.seq_len);
        for &i in idx {
            out.tokens.extend_from_slice(self.row(i));
            out.ends.push(self.ends[i]);
        }
        out
    }
}
