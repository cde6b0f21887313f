//! The programmatic text labeler: a stand-in gold for a study without a gold reward model.
//! It is not a model of human preference; it is a fixed, documented function of the text,
//! with features a reader can check by eye, shaped like the embedded world's labeler: things
//! a reference policy rarely overdoes are liked in moderation and disliked in excess, so a
//! proxy trained on π_ref's samples learns "more is better" where an optimizer then pushes.
//!
//! On words (maximal runs of letters and digits, lower-cased) of the response, given the
//! prompt:
//!
//! - length: `−length_curve · (words − best_words)²`;
//! - coverage: `+coverage` per distinct prompt word of four or more letters the response uses;
//! - required words: `+required_weight` per distinct word of `required` present;
//! - banned phrases: `−banned_weight` per occurrence of each phrase of `banned` (matched on
//!   the words, so case and punctuation do not matter);
//! - repetition: `−repeat_weight` per word equal to the one before it;
//! - taste: `+taste_weight ×` the mean, over the response's distinct words, of a fixed
//!   pseudo-random value per word (unit variance, from the experiment seed): a preference
//!   no salient feature reveals, which proxies learn only in part from finitely many pairs;
//! - unfinished: `−unfinished` when the response did not end with a stop token.

use serde::{Deserialize, Serialize};

/// The `[text.labeler]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LabelerSpec {
    pub best_words: f64,
    pub length_curve: f64,
    pub coverage: f64,
    pub required: Vec<String>,
    pub required_weight: f64,
    pub banned: Vec<String>,
    pub banned_weight: f64,
    pub repeat_weight: f64,
    pub taste_weight: f64,
    pub unfinished: f64,
}

impl Default for LabelerSpec {
    fn default() -> Self {
        Self {
            best_words: 12.0,
            length_curve: 0.02,
            coverage: 0.5,
            required: Vec::new(),
            required_weight: 1.0,
            banned: Vec::new(),
            banned_weight: 2.0,
            repeat_weight: 0.5,
            taste_weight: 1.0,
            unfinished: 1.0,
        }
    }
}

impl LabelerSpec {
    /// Every weight finite, at least 0 and at most 10⁶ (each part's sign is in its formula),
    /// and every required word and banned phrase holding a word; the error names the key
    /// under `[text.labeler]`.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        let weights = [
            ("best_words", self.best_words),
            ("length_curve", self.length_curve),
            ("coverage", self.coverage),
            ("required_weight", self.required_weight),
            ("banned_weight", self.banned_weight),
            ("repeat_weight", self.repeat_weight),
            ("taste_weight", self.taste_weight),
            ("unfinished", self.unfinished),
        ];
        for (key, v) in weights {
            if !(v.is_finite() && (0.0..=1e6).contains(&v)) {
                return Err((key.into(), format!("must be a finite number in [0, 1e6] (the part's sign is in its formula), got {v}")));
            }
        }
        for (key, list) in [("required", &self.required), ("banned", &self.banned)] {
            if let Some((i, w)) = list.iter().enumerate().find(|(_, w)| words(w).is_empty()) {
                return Err((format!("{key}[{i}]"), format!("{w:?} holds no word (letters or digits), so it would match nothing")));
            }
        }
        Ok(())
    }
}

/// The labeler of one experiment (its taste drawn from `seed`).
#[derive(Debug, Clone)]
pub struct Labeler {
    spec: LabelerSpec,
    seed: u64,
    required: Vec<String>,
    banned: Vec<Vec<String>>,
}

/// The parts of one score, for tables and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Parts {
    pub words: usize,
    pub length: f64,
    pub coverage: f64,
    pub required: f64,
    pub banned: f64,
    pub repeat: f64,
    pub taste: f64,
    pub unfinished: f64,
}

impl Parts {
    pub fn total(&self) -> f64 {
        self.length + self.coverage + self.required + self.banned + self.repeat + self.taste + self.unfinished
    }
}

/// Words of `text`: maximal runs of alphanumeric characters, lower-cased.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

impl Labeler {
    pub fn new(spec: &LabelerSpec, seed: u64) -> Self {
        let mut required: Vec<String> = spec.required.iter().flat_map(|w| words(w)).collect();
        required.sort();
        required.dedup();
        let banned = spec.banned.iter().map(|p| words(p)).filter(|w| !w.is_empty()).collect();
        Self {
            spec: spec.clone(),
            seed,
            required,
            banned,
        }
    }

    /// The taste value of `word`: a fixed function of (seed, word), uniform on
    /// [−√3, √3] (mean 0, variance 1).
    pub fn taste_of(&self, word: &str) -> f64 {
        let h = crate::seed::derive(self.seed, &format!("text-labeler/taste/{word}"));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        (2.0 * u - 1.0) * 3f64.sqrt()
    }

    /// The score of `response` to `prompt`, by part.
    pub fn parts(&self, prompt: &str, response: &str, finished: bool) -> Parts {
        let s = &self.spec;
        let w = words(response);
        let n = w.len();
        let mut distinct: Vec<&str> = w.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut prompt_words: Vec<String> = words(prompt).into_iter().filter(|x| x.chars().count() >= 4).collect();
        prompt_words.sort();
        prompt_words.dedup();
        let covered = prompt_words.iter().filter(|p| distinct.binary_search(&p.as_str()).is_ok()).count();
        let required = self.required.iter().filter(|r| distinct.binary_search(&r.as_str()).is_ok()).count();
        let banned: usize = self.banned.iter().map(|phrase| w.windows(phrase.len()).filter(|win| *win == phrase.as_slice()).count()).sum();
        let repeats = w.windows(2).filter(|p| p[0] == p[1]).count();
        let taste = if distinct.is_empty() { 0.0 } else { distinct.iter().map(|d| self.taste_of(d)).sum::<f64>() / distinct.len() as f64 };
        Parts {
            words: n,
            length: -s.length_curve * (n as f64 - s.best_words).powi(2),
            coverage: s.coverage * covered as f64,
            required: s.required_weight * required as f64,
            banned: -s.banned_weight * banned as f64,
            repeat: -s.repeat_weight * repeats as f64,
            taste: s.taste_weight * taste,
            unfinished: if finished { 0.0 } else { -s.unfinished },
        }
    }

    /// The score of `response` to `prompt`.
    pub fn score(&self, prompt: &str, response: &str, finished: bool) -> f64 {
        self.parts(prompt, response, finished).total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labeler() -> Labeler {
        let spec = LabelerSpec {
            required: vec!["River".into()],
            banned: vec!["As an AI".into()],
            ..LabelerSpec::default()
        };
        Labeler::new(&spec, 7)
    }

    #[test]
    fn each_part_is_what_the_module_says() {
        let l = labeler();
        let p = l.parts("Tell me about the mountain river.", "The river, the river river: as an AI, as an ai!", true);
        assert_eq!(p.words, 11);
        assert!((p.length - (-0.02 * 1.0)).abs() < 1e-12);
        assert_eq!(p.coverage, 0.5, "river (mountain is not used; the, me are short)");
        assert_eq!(p.required, 1.0);
        assert_eq!(p.banned, -4.0, "two occurrences, case and punctuation ignored");
        assert_eq!(p.repeat, -0.5, "river river");
        assert_eq!(p.unfinished, 0.0);
        let distinct = ["the", "river", "as", "an", "ai"];
        let taste = distinct.iter().map(|w| l.taste_of(w)).sum::<f64>() / 5.0;
        assert!((p.taste - taste).abs() < 1e-12);
        assert!((l.score("Tell me about the mountain river.", "The river, the river river: as an AI, as an ai!", true) - p.total()).abs() < 1e-12);
        assert_eq!(l.parts("x", "fine", false).unfinished, -1.0);
    }

    #[test]
    fn length_is_liked_up_to_a_point() {
        let l = Labeler::new(&LabelerSpec { taste_weight: 0.0, ..LabelerSpec::default() }, 1);
        let text = |n: usize| (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let s: Vec<f64> = [2, 8, 12, 16, 30].iter().map(|&n| l.score("", &text(n), true)).collect();
        assert!(s[0] < s[1] && s[1] < s[2] && s[2] > s[3] && s[3] > s[4], "{s:?}");
    }

    #[test]
    fn taste_is_fixed_by_the_seed_with_unit_variance() {
        let a = Labeler::new(&LabelerSpec::default(), 3);
        let b = Labeler::new(&LabelerSpec::default(), 4);
        assert_eq!(a.taste_of("river"), Labeler::new(&LabelerSpec::default(), 3).taste_of("river"));
        assert_ne!(a.taste_of("river"), b.taste_of("river"));
        let v: Vec<f64> = (0..20_000).map(|i| a.taste_of(&format!("w{i}"))).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean}, variance {var}");
        assert!(v.iter().all(|x| x.abs() <= 3f64.sqrt()));
    }
}
