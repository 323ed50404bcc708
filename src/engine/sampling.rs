//! Token sampling: temperature, top-k, top-p, repetition penalty, seeded. Temperature 0 is
//! greedy. Same seed and logits ⇒ same token.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Keep only the k most likely tokens; 0 disables it.
    pub top_k: usize,
    /// Divides positive (multiplies negative) logits of tokens already present; 1 disables it.
    pub repetition_penalty: f64,
    pub seed: u64,
    pub min_new_tokens: usize,
    pub max_new_tokens: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 0,
            repetition_penalty: 1.1,
            seed: 42,
            min_new_tokens: 0,
            max_new_tokens: 128,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature {} must be ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(format!(
                "repetition penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        if self.max_new_tokens == 0 {
            return Err("max new tokens must be at least 1".into());
        }
        if self.min_new_tokens > self.max_new_tokens {
            return Err(format!(
                "min new tokens {} exceeds max new tokens {}",
                self.min_new_tokens, self.max_new_tokens
            ));
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Sampler { params, rng }
    }

    /// Picks the next token. `history` = tokens so far (for the repetition penalty);
    /// `banned` = tokens that must not be chosen now (end tokens below the minimum length).
    pub fn sample(&mut self, logits: &[f32], history: &[u32], banned: &[u32]) -> u32 {
        let mut logits: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
        if self.params.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / self.params.repetition_penalty
                    } else {
                        *l * self.params.repetition_penalty
                    };
                }
            }
        }
        for &id in banned {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f64::NEG_INFINITY;
            }
        }
        if self.params.temperature == 0.0 {
            return argmax(&logits);
        }
        // Candidates sorted by logit, best first (ties by id, for determinism).
        let mut order: Vec<usize> = (0..logits.len())
            .filter(|&i| logits[i].is_finite())
            .collect();
        if order.is_empty() {
            return argmax(&logits);
        }
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.params.top_k > 0 {
            order.truncate(self.params.top_k);
        }
        let max = logits[order[0]];
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] - max) / self.params.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.params.top_p < 1.0 {
            let mut mass = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                mass += p;
                if mass >= self.params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut r: f64 = self.rng.random();
        for (p, &id) in probs.iter().zip(&order) {
            if r < *p {
                return id as u32;
            }
            r -= p;
        }
        order[order.len() - 1] as u32
    }
}

/// Index of the largest value, the first one on ties. NaN never wins (it compares false with
/// everything, so a NaN in front would otherwise stay "best" forever), matching the sampling
/// path, which drops non-finite logits; all-NaN gives 0.
fn argmax(v: &[f64]) -> u32 {
    let mut best: Option<usize> = None;
    for (i, x) in v.iter().enumerate() {
        if !x.is_nan() && best.is_none_or(|b| *x > v[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_choice_skips_nan_and_takes_the_first_of_ties() {
        assert_eq!(argmax(&[f64::NAN, 1.0, 2.0]), 2);
        assert_eq!(argmax(&[1.0, f64::NAN, 3.0, 3.0]), 2);
        assert_eq!(argmax(&[f64::NEG_INFINITY, f64::NAN, -5.0]), 2);
        assert_eq!(argmax(&[f64::NAN, f64::NAN]), 0);
    }

    fn params(temperature: f64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_picks_the_largest_logit() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[], &[]), 1);
        assert_eq!(
            s.sample(&[0.1, 3.0, 2.0], &[], &[1]),
            2,
            "banned tokens are never chosen"
        );
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            });
            (0..20)
                .map(|_| s.sample(&logits, &[], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.5)
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.0, 1.0, 0.9], &[], &[]), 1);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // Token 0 holds ~88% of the mass; top-p 0.5 keeps only it.
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            ..params(1.0)
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[3.0, 1.0, 0.0], &[], &[]), 0);
        }
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        });
        assert_eq!(s.sample(&[2.0, 1.5], &[0], &[]), 1);
    }

    #[test]
    fn validation_names_the_bad_value() {
        let e = SamplingParams {
            top_p: 1.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("1.5"), "{e}");
        let e = SamplingParams {
            min_new_tokens: 10,
            max_new_tokens: 5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("10") && e.contains("5"), "{e}");
    }
}
