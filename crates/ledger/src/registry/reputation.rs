//! Beta reputation (as Storj uses): alpha <- lambda*alpha + w(1+v)/2,
//! beta <- lambda*beta + w(1-v)/2, score = alpha / (alpha + beta). Fixed point in
//! micro-units so that every node computes the same score.

use borsh::{BorshDeserialize, BorshSerialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Reputation {
    pub alpha_micro: u64,
    pub beta_micro: u64,
}

impl Reputation {
    /// Records one outcome of weight 1: `success` is v = +1, failure v = -1.
    pub fn record(self, success: bool, lambda_ppm: u32) -> Reputation {
        let decay = |x: u64| ((x as u128 * lambda_ppm as u128) / 1_000_000) as u64;
        let (da, db) = if success { (1_000_000, 0) } else { (0, 1_000_000) };
        Reputation {
            alpha_micro: decay(self.alpha_micro).saturating_add(da),
            beta_micro: decay(self.beta_micro).saturating_add(db),
        }
    }

    /// alpha / (alpha + beta) in parts per million.
    pub fn score_ppm(self) -> u32 {
        let total = self.alpha_micro as u128 + self.beta_micro as u128;
        if total == 0 {
            return 0;
        }
        ((self.alpha_micro as u128 * 1_000_000) / total) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lower_and_successes_raise_the_score() {
        let start = Reputation { alpha_micro: 49_000_000, beta_micro: 1_000_000 };
        assert_eq!(start.score_ppm(), 980_000);
        let worse = start.record(false, 999_000);
        assert!(worse.score_ppm() < start.score_ppm());
        let better = start.record(true, 999_000);
        assert!(better.score_ppm() > start.score_ppm());
    }
}
