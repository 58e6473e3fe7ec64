//! Choosing the next token from logits: greedy, or sampled with temperature, top-k, top-p,
//! min-p and a repetition penalty. The sampler's whole state is its seed and the step's index:
//! the random draw of step `i` is a pure function of `(seed, i)`, so a generation replayed from
//! the host's record (after a device reset, or on another worker) draws exactly the same.

use rand::{Rng, SeedableRng};

use super::LlmError;

/// How to sample. The defaults are greedy decoding.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0: greedy (the most likely token; the lowest id of a tie).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least `top_p` (1: all).
    pub top_p: f32,
    /// Drop the tokens less likely than `min_p` × the most likely one's (0: none).
    pub min_p: f32,
    /// Logits of tokens already in the prompt or output are divided by this (when positive,
    /// else multiplied): 1 changes nothing (Hugging Face's `repetition_penalty`).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Every value in its range, or an error naming the parameter.
    pub fn validate(&self) -> Result<(), LlmError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(LlmError::argument(
                "temperature",
                format!("{} must be 0 or more (0: greedy)", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(LlmError::argument(
                "top_p",
                format!("{} must be in (0, 1]", self.top_p),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(LlmError::argument(
                "min_p",
                format!("{} must be in [0, 1]", self.min_p),
            ));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(LlmError::argument(
                "repetition_penalty",
                format!("{} must be positive (1: none)", self.repetition_penalty),
            ));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// The index of the largest value (the first of a tie, as `torch.argmax`).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The uniform draw in `[0, 1)` of step `step` of a generation seeded `seed`.
fn draw(seed: u64, step: u64) -> f64 {
    // SplitMix64's finalizer spreads (seed, step) over the generator's seed space.
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    rand::rngs::StdRng::seed_from_u64(z).random::<f64>()
}

/// The token of step `step` from `logits` (changed in place), `history` the prompt and the
/// tokens generated so far (for the repetition penalty).
pub fn sample(params: &SamplingParams, logits: &mut [f32], history: &[u32], step: u64) -> u32 {
    if params.repetition_penalty != 1.0 {
        let mut seen = vec![false; logits.len()];
        for &id in history {
            if let Some(s) = seen.get_mut(id as usize) {
                if !*s {
                    *s = true;
                    let l = &mut logits[id as usize];
                    *l = if *l > 0.0 {
                        *l / params.repetition_penalty
                    } else {
                        *l * params.repetition_penalty
                    };
                }
            }
        }
    }
    if params.is_greedy() {
        return argmax(logits);
    }
    // Candidates, most likely first (ties: lower id first, so the order is deterministic).
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let keep = if params.top_k > 0 && params.top_k < order.len() {
        order.select_nth_unstable_by(params.top_k - 1, by_logit);
        order.truncate(params.top_k);
        params.top_k
    } else {
        order.len()
    };
    order.sort_unstable_by(by_logit);
    order.truncate(keep);
    let max = logits[order[0] as usize];
    let inverse_t = 1.0 / params.temperature as f64;
    let mut probabilities: Vec<f64> = order
        .iter()
        .map(|&id| ((logits[id as usize] - max) as f64 * inverse_t).exp())
        .collect();
    let total: f64 = probabilities.iter().sum();
    probabilities.iter_mut().for_each(|p| *p /= total);
    // top-p: the shortest prefix reaching `top_p`; min-p: relative to the most likely.
    let mut cut = probabilities.len();
    if params.top_p < 1.0 {
        let mut cumulative = 0.0;
        for (i, p) in probabilities.iter().enumerate() {
            cumulative += p;
            if cumulative >= params.top_p as f64 {
                cut = i + 1;
                break;
            }
        }
    }
    if params.min_p > 0.0 {
        let floor = params.min_p as f64 * probabilities[0];
        cut = cut.min(
            probabilities
                .iter()
                .take_while(|&&p| p >= floor)
                .count()
                .max(1),
        );
    }
    let kept = &probabilities[..cut];
    let total: f64 = kept.iter().sum();
    let mut target = draw(params.seed, step) * total;
    for (i, p) in kept.iter().enumerate() {
        if target < *p {
            return order[i];
        }
        target -= p;
    }
    order[cut - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let params = SamplingParams::default();
        assert_eq!(sample(&params, &mut [1.0, 3.0, 3.0, 2.0], &[], 0), 1);
    }

    #[test]
    fn the_same_seed_and_step_draw_the_same() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..SamplingParams::default()
        };
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let picks: Vec<u32> = (0..20)
            .map(|step| sample(&params, &mut logits.clone(), &[], step))
            .collect();
        let again: Vec<u32> = (0..20)
            .map(|step| sample(&params, &mut logits.clone(), &[], step))
            .collect();
        assert_eq!(picks, again);
        assert!(
            picks.iter().any(|&p| p != picks[0]),
            "a sampler that never varies"
        );
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.5f32, 2.0, 1.0, 1.9];
        for params in [
            SamplingParams {
                temperature: 1.0,
                top_k: 1,
                ..SamplingParams::default()
            },
            SamplingParams {
                temperature: 1.0,
                top_p: 1e-6,
                ..SamplingParams::default()
            },
            SamplingParams {
                temperature: 1.0,
                min_p: 1.0,
                ..SamplingParams::default()
            },
        ] {
            for step in 0..50 {
                assert_eq!(
                    sample(&params, &mut logits.clone(), &[], step),
                    1,
                    "{params:?}"
                );
            }
        }
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::default()
        };
        assert_eq!(sample(&params, &mut [1.0, 1.5, -1.0], &[1], 0), 0);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (params, name) in [
            (
                SamplingParams {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    min_p: 2.0,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
        ] {
            let error = params.validate().unwrap_err().to_string();
            assert!(error.starts_with(name), "{error}");
        }
    }
}
