//! Token sampling as a replayable rule (docs/sampling.md): repetition penalty, banned ids,
//! temperature, top-k, top-p, then Gumbel-max selection with noise from a keyed counter-based
//! PRF of (seed, position, token id). No RNG state: whoever has the logits and the parameters
//! can recompute the choice, and a verifier can measure how close each choice was (its margin).
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Domain separation of the noise PRF: the first bytes hashed for every noise value.
pub const NOISE_DOMAIN: &[u8] = b"verillm-tui/gumbel-noise/v1";

/// The uniform draw in (0, 1) for (seed, position, token): SHA-256 over
/// `NOISE_DOMAIN ‖ seed (u64 LE) ‖ position (u64 LE) ‖ token (u32 LE)`, the first 8 bytes of
/// the digest read big-endian, their top 53 bits `k`, and `u = (k + 0.5) / 2^53`.
pub fn noise_uniform(seed: u64, position: u64, token: u32) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(NOISE_DOMAIN);
    hasher.update(seed.to_le_bytes());
    hasher.update(position.to_le_bytes());
    hasher.update(token.to_le_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let k = u64::from_be_bytes(first) >> 11;
    (k as f64 + 0.5) / (1u64 << 53) as f64
}

/// Standard Gumbel noise `g = −ln(−ln u)` for (seed, position, token).
pub fn gumbel_noise(seed: u64, position: u64, token: u32) -> f64 {
    -(-noise_uniform(seed, position, token).ln()).ln()
}

/// One decoding step's candidates after every rule but the final selection: the ids that may
/// be chosen and their perturbed scores. `scale` converts a score difference back into logit
/// units (the temperature; 1 for greedy), so that one tolerance serves every temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCandidates {
    /// (token id, score), best first (score descending, lowest id first on ties); at T = 0
    /// only the first two are in order (the choice and the runner-up are all a margin needs,
    /// and a vocabulary-wide sort per token would cost more than the lm_head).
    pub scored: Vec<(u32, f64)>,
    pub scale: f64,
}

/// How one token holds up against the rule at its step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenJudgement {
    /// The token is among the candidates (not banned, inside top-k and top-p).
    pub in_set: bool,
    /// Its score minus the best other candidate's, in logit units: ≥ 0 when it is the rule's
    /// choice, +∞ when it is the only candidate, −∞ when it is outside the set.
    pub margin: f64,
}

impl StepCandidates {
    /// Applies the rule of docs/sampling.md to one step's logits. `context` = prompt ids and
    /// the tokens generated before this step (the repetition penalty applies once to each
    /// distinct id in it); `banned` = ids that may not be chosen now (EOS before
    /// `min_new_tokens`); `position` = index of the token being generated (0 = first).
    pub fn build(
        params: &SamplingParams,
        logits: &[f32],
        context: &[u32],
        banned: &[u32],
        position: u64,
    ) -> StepCandidates {
        let processed = processed_logits(params, logits, context, banned);
        let finite = |i: &usize| processed[*i].is_finite();
        if params.temperature == 0.0 {
            let mut scored: Vec<(u32, f64)> = (0..processed.len())
                .filter(finite)
                .map(|i| (i as u32, processed[i]))
                .collect();
            best_first_prefix(&mut scored, 2);
            return StepCandidates { scored, scale: 1.0 };
        }
        let t = params.temperature;
        let mut kept: Vec<(u32, f64)> = (0..processed.len())
            .filter(finite)
            .map(|i| (i as u32, processed[i] / t))
            .collect();
        if params.top_k > 0 {
            best_first_prefix(&mut kept, params.top_k);
            kept.truncate(params.top_k);
        } else {
            sort_best_first(&mut kept);
        }
        if params.top_p < 1.0 && !kept.is_empty() {
            let max = kept[0].1;
            let weights: Vec<f64> = kept.iter().map(|(_, z)| (z - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut mass = 0.0;
            let mut keep = kept.len();
            for (i, w) in weights.iter().enumerate() {
                mass += w / total;
                if mass >= params.top_p {
                    keep = i + 1;
                    break;
                }
            }
            kept.truncate(keep);
        }
        let mut scored: Vec<(u32, f64)> = kept
            .into_iter()
            .map(|(id, z)| (id, z + gumbel_noise(params.seed, position, id)))
            .collect();
        sort_best_first(&mut scored);
        StepCandidates { scored, scale: t }
    }

    /// The rule's choice: the best score, the lowest id on ties; None when no logit is finite.
    pub fn choice(&self) -> Option<u32> {
        self.scored.first().map(|(id, _)| *id)
    }

    /// How `token` fares here: in the set or not, and its margin over the best other candidate.
    pub fn judge(&self, token: u32) -> TokenJudgement {
        let Some(score) = self
            .scored
            .iter()
            .find(|(id, _)| *id == token)
            .map(|(_, s)| *s)
        else {
            return TokenJudgement {
                in_set: false,
                margin: f64::NEG_INFINITY,
            };
        };
        let best_other = self
            .scored
            .iter()
            .find(|(id, _)| *id != token)
            .map(|(_, s)| *s);
        TokenJudgement {
            in_set: true,
            margin: best_other.map_or(f64::INFINITY, |other| (score - other) * self.scale),
        }
    }
}

/// A token outside the verifier's own candidate set, given the benefit of the doubt at the
/// top-k / top-p boundary (docs/sampling.md, "Tokens at the boundary"): honest engines disagree
/// on logits by up to δ (the tier's tolerance, logit units), so the set's edge moves with them
/// (measured: an honest native run at T = 0.7, top-p 0.9 lost one of 96 tokens to it). The
/// token counts as a candidate when the logits could be moved by δ, relative to it, to put it
/// inside: fewer than k ids lie more than δ above it, and the ids more than δ above it hold
/// less than p of the mass with the token's own weight raised by δ. Its margin is then taken
/// against the verifier's candidates as for any token. Banned ids, non-finite logits and greedy
/// steps get no such doubt: −∞, as before.
pub fn judge_at_boundary(
    params: &SamplingParams,
    logits: &[f32],
    context: &[u32],
    banned: &[u32],
    position: u64,
    token: u32,
    tolerance: f64,
) -> TokenJudgement {
    let outside = TokenJudgement {
        in_set: false,
        margin: f64::NEG_INFINITY,
    };
    let t = params.temperature;
    if t == 0.0 || !(tolerance > 0.0 && tolerance.is_finite()) {
        return outside;
    }
    let processed = processed_logits(params, logits, context, banned);
    let Some(&own) = processed.get(token as usize).filter(|l| l.is_finite()) else {
        return outside;
    };
    // Logits (not z): the tolerance is in logit units at every temperature.
    let above: Vec<f64> = processed
        .iter()
        .enumerate()
        .filter(|&(id, l)| id != token as usize && l.is_finite() && *l - own > tolerance)
        .map(|(_, &l)| l)
        .collect();
    if params.top_k > 0 && above.len() >= params.top_k {
        return outside;
    }
    if params.top_p < 1.0 {
        // The mass is normalised over the top-k survivors (all finite ids without top-k), with
        // the token itself among them at its raised weight.
        let mut pool: Vec<f64> = processed
            .iter()
            .enumerate()
            .filter(|&(id, l)| id != token as usize && l.is_finite())
            .map(|(_, &l)| l)
            .collect();
        if params.top_k > 0 && pool.len() > params.top_k - 1 {
            pool.select_nth_unstable_by(params.top_k - 1, |a, b| b.total_cmp(a));
            pool.truncate(params.top_k - 1);
        }
        let raised = own + tolerance;
        let max = pool.iter().copied().fold(raised, f64::max);
        let weight = |l: f64| ((l - max) / t).exp();
        let total: f64 = pool.iter().map(|&l| weight(l)).sum::<f64>() + weight(raised);
        let mass_above: f64 = above.iter().map(|&l| weight(l)).sum::<f64>() / total;
        if mass_above >= params.top_p {
            return outside;
        }
    }
    let candidates = StepCandidates::build(params, logits, context, banned, position);
    let score = own / t + gumbel_noise(params.seed, position, token);
    let best_other = candidates
        .scored
        .iter()
        .find(|(id, _)| *id != token)
        .map(|(_, s)| *s);
    TokenJudgement {
        in_set: false,
        margin: best_other.map_or(f64::INFINITY, |other| (score - other) * t),
    }
}

/// Steps 1–2 of the rule: the repetition penalty, once per distinct id of `context`, then the
/// banned ids at −∞ (docs/sampling.md).
fn processed_logits(
    params: &SamplingParams,
    logits: &[f32],
    context: &[u32],
    banned: &[u32],
) -> Vec<f64> {
    let mut processed: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    if params.repetition_penalty != 1.0 {
        let mut seen = context.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for id in seen {
            if let Some(l) = processed.get_mut(id as usize) {
                *l = if *l > 0.0 {
                    *l / params.repetition_penalty
                } else {
                    *l * params.repetition_penalty
                };
            }
        }
    }
    for &id in banned {
        if let Some(l) = processed.get_mut(id as usize) {
            *l = f64::NEG_INFINITY;
        }
    }
    processed
}

/// Score descending, lowest id first among equal scores.
fn best_first(a: &(u32, f64), b: &(u32, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn sort_best_first(scored: &mut [(u32, f64)]) {
    scored.sort_by(best_first);
}

/// Puts the `n` best first, in order (the rest after them, in no order): linear time.
fn best_first_prefix(scored: &mut [(u32, f64)], n: usize) {
    if n == 0 {
        return;
    }
    if scored.len() > n {
        scored.select_nth_unstable_by(n - 1, best_first);
    }
    let n = n.min(scored.len());
    scored[..n].sort_by(best_first);
}

/// The inferencer's sampler: the rule above, one step at a time.
pub struct Sampler {
    params: SamplingParams,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Sampler { params }
    }

    /// Picks the token at generated index `position`. `history` = prompt and tokens so far
    /// (for the repetition penalty); `banned` = tokens that must not be chosen now (end tokens
    /// below the minimum length). None when no logit is finite.
    pub fn sample(
        &self,
        logits: &[f32],
        history: &[u32],
        banned: &[u32],
        position: usize,
    ) -> Option<u32> {
        StepCandidates::build(&self.params, logits, history, banned, position as u64).choice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            ..Default::default()
        }
    }

    /// The noise values of docs/sampling.md, which its Python snippet reproduces.
    #[test]
    fn noise_matches_the_documented_vectors() {
        let cases: [(u64, u64, u32, f64, f64); 4] = [
            (0, 0, 0, 0.8154596541613017, 1.5896189524796016),
            (42, 0, 1, 0.8970462662396017, 2.2196434584318445),
            (42, 7, 3, 0.9340099567102556, 2.6843114991336683),
            (
                u64::MAX,
                1 << 40,
                49151,
                0.5793020672441163,
                0.6052622592186269,
            ),
        ];
        for (seed, position, token, u, g) in cases {
            assert_eq!(
                noise_uniform(seed, position, token),
                u,
                "u({seed}, {position}, {token})"
            );
            let got = gumbel_noise(seed, position, token);
            assert!(
                (got - g).abs() < 1e-12,
                "g({seed}, {position}, {token}) = {got}, not {g}"
            );
        }
    }

    /// Every (parameters, logits → token, margin) vector of docs/sampling.md.
    #[test]
    fn choices_match_the_documented_vectors() {
        let logits = [1.0f32, 3.0, 2.5, -1.0, 2.9, 0.0];
        #[allow(clippy::type_complexity)]
        let cases: [(f64, usize, f64, f64, u64, u64, &[u32], &[u32], u32, f64); 10] = [
            (0.0, 0, 1.0, 1.0, 42, 0, &[], &[], 1, 0.09999990463256836),
            (0.0, 0, 1.0, 1.3, 42, 0, &[1], &[], 4, 0.40000009536743164),
            (0.0, 0, 1.0, 1.0, 42, 0, &[], &[1], 4, 0.40000009536743164),
            (1.0, 0, 1.0, 1.0, 42, 0, &[], &[], 1, 1.707530937959353),
            (1.0, 0, 1.0, 1.0, 42, 1, &[], &[], 4, 0.9071285642076323),
            (1.0, 0, 1.0, 1.0, 7, 0, &[], &[], 2, 0.04499259117811949),
            (0.7, 3, 1.0, 1.0, 42, 0, &[], &[], 1, 1.2252716279613167),
            (0.7, 0, 0.5, 1.0, 42, 0, &[], &[], 1, 1.2252716279613167),
            (0.7, 0, 0.9, 1.1, 42, 5, &[4, 2], &[], 1, 1.5534366506102877),
            (2.0, 2, 1.0, 1.0, 3, 9, &[], &[1], 2, 6.294387110581965),
        ];
        for (t, top_k, top_p, rep, seed, position, context, banned, token, margin) in cases {
            let p = SamplingParams {
                temperature: t,
                top_k,
                top_p,
                repetition_penalty: rep,
                seed,
                ..Default::default()
            };
            let step = StepCandidates::build(&p, &logits, context, banned, position);
            assert_eq!(step.choice(), Some(token), "{p:?} at {position}");
            let judged = step.judge(token);
            assert!(judged.in_set);
            assert!(
                (judged.margin - margin).abs() < 1e-9,
                "{p:?}: {}",
                judged.margin
            );
            // Any other token of the set has a negative margin, of the same size.
            let other = step.scored[1].0;
            assert!((step.judge(other).margin + margin).abs() < 1e-9);
        }
    }

    #[test]
    fn greedy_skips_nan_and_takes_the_lowest_id_of_ties() {
        let choose = |l: &[f32]| StepCandidates::build(&params(0.0), l, &[], &[], 0).choice();
        assert_eq!(choose(&[f32::NAN, 1.0, 2.0]), Some(2));
        assert_eq!(choose(&[1.0, f32::NAN, 3.0, 3.0]), Some(2));
        assert_eq!(choose(&[f32::NEG_INFINITY, f32::NAN, -5.0]), Some(2));
        assert_eq!(choose(&[f32::NAN, f32::NAN]), None);
        let tie = StepCandidates::build(&params(0.0), &[3.0, 3.0], &[], &[], 0);
        assert_eq!(tie.judge(0).margin, 0.0);
        assert_eq!(tie.judge(1).margin, 0.0);
    }

    #[test]
    fn banned_tokens_and_tokens_outside_top_k_or_top_p_are_out_of_the_set() {
        let s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[], &[], 0), Some(1));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[], &[1], 0), Some(2));
        let banned = StepCandidates::build(&params(0.0), &[0.1, 3.0, 2.0], &[], &[1], 0);
        assert!(!banned.judge(1).in_set);
        assert_eq!(banned.judge(1).margin, f64::NEG_INFINITY);
        let top_k = SamplingParams {
            top_k: 2,
            ..params(1.0)
        };
        let step = StepCandidates::build(&top_k, &[0.0, 1.0, 0.9, 0.95], &[], &[], 3);
        assert_eq!(step.scored.len(), 2);
        assert!(!step.judge(2).in_set && step.judge(3).in_set);
        // Token 0 holds ~84% of the mass: top-p 0.5 keeps it alone, whatever the noise.
        let top_p = SamplingParams {
            top_p: 0.5,
            ..params(1.0)
        };
        for position in 0..20 {
            let step = StepCandidates::build(&top_p, &[3.0, 1.0, 0.0], &[], &[], position);
            assert_eq!(step.choice(), Some(0));
            assert_eq!(step.judge(0).margin, f64::INFINITY);
        }
    }

    #[test]
    fn a_token_just_past_the_top_p_edge_is_judged_with_the_tolerance_and_only_so() {
        // Logits 2.0, 1.0, 0.9, -3 at T = 1, top-p 0.7: token 0 holds 0.59 of the mass, 0 and 1
        // hold 0.80, so the set is {0, 1} and token 2 (0.1 below token 1) is just outside.
        let p = SamplingParams {
            top_p: 0.7,
            ..params(1.0)
        };
        let logits = [2.0, 1.0, 0.9, -3.0];
        let strict = StepCandidates::build(&p, &logits, &[], &[], 5);
        assert!(!strict.judge(2).in_set);
        // Raised by 0.2 it would outrank token 1, leaving only token 0's 0.56 < 0.7 above it.
        let near = judge_at_boundary(&p, &logits, &[], &[], 5, 2, 0.2);
        assert!(!near.in_set && near.margin.is_finite(), "{near:?}");
        let other = strict.scored.iter().find(|(id, _)| *id != 2).unwrap().1;
        let own = 0.9_f32 as f64 + gumbel_noise(p.seed, 5, 2);
        assert!((near.margin - (own - other)).abs() < 1e-12);
        // docs/sampling.md's Python prints the same value.
        assert!(
            (near.margin - -2.3202425172818835).abs() < 1e-12,
            "{near:?}"
        );
        // With δ 0.05 token 1 stays more than δ above it: 0.79 ≥ 0.7, outside.
        let far = judge_at_boundary(&p, &logits, &[], &[], 5, 2, 0.05);
        assert_eq!(far.margin, f64::NEG_INFINITY);
        // Token 3 lies 4 below: no tolerance of this size helps.
        assert_eq!(
            judge_at_boundary(&p, &logits, &[], &[], 5, 3, 2.0).margin,
            f64::NEG_INFINITY
        );
        // Banned ids and greedy steps get no doubt.
        assert_eq!(
            judge_at_boundary(&p, &logits, &[], &[2], 5, 2, 0.2).margin,
            f64::NEG_INFINITY
        );
        assert_eq!(
            judge_at_boundary(&params(0.0), &logits, &[], &[], 5, 2, 0.2).margin,
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn a_token_just_past_the_top_k_edge_counts_the_ids_more_than_the_tolerance_above_it() {
        let k = SamplingParams {
            top_k: 2,
            ..params(0.7)
        };
        let logits = [3.0, 1.0, 0.95, 0.0];
        assert!(
            !StepCandidates::build(&k, &logits, &[], &[], 0)
                .judge(2)
                .in_set
        );
        // Only token 0 is more than 0.1 above token 2: one id < k = 2 (docs/sampling.md's
        // Python prints this margin).
        let near = judge_at_boundary(&k, &logits, &[], &[], 0, 2, 0.1);
        assert!(
            (near.margin - -1.9399491283939954).abs() < 1e-12,
            "{near:?}"
        );
        // With 0.01, tokens 0 and 1 both are: 2 ≥ k.
        assert_eq!(
            judge_at_boundary(&k, &logits, &[], &[], 0, 2, 0.01).margin,
            f64::NEG_INFINITY
        );
        // Token 3: tokens 0, 1 and 2 lie more than 0.1 above it.
        assert_eq!(
            judge_at_boundary(&k, &logits, &[], &[], 0, 3, 0.1).margin,
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn same_seed_and_position_same_token_other_seeds_differ() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            });
            (0..20)
                .map(|position| s.sample(&logits, &[], &[], position).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // Different positions draw different noise: not one token repeated.
        let tokens = draw(7);
        assert!(tokens.iter().any(|t| *t != tokens[0]));
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        });
        assert_eq!(s.sample(&[2.0, 1.5], &[0], &[], 0), Some(1));
        assert_eq!(s.sample(&[-1.0, -1.5], &[0, 0], &[], 0), Some(1));
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
