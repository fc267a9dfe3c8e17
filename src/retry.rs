//! When to try a failed write again.
//!
//! The seed retries three times and gives up. We retry `max_retries` times with capped exponential
//! backoff and jitter, and then do not give up: the batch stays in the journal and is tried again
//! every `parked` interval until PostgreSQL takes it.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Quick retries after the first attempt before a failure is reported as such.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each next one.
    pub base_delay: Duration,
    /// Longest wait between quick retries.
    pub max_delay: Duration,
    /// Wait between attempts once the quick retries are spent.
    pub parked_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            parked_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt number `attempt` (1 for the first retry), with up to 25% jitter so
    /// that many writers do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = if attempt > self.max_retries {
            self.parked_delay
        } else {
            let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
            self.base_delay.saturating_mul(factor).min(self.max_delay)
        };
        let jitter = rand::rng().random_range(0.75..=1.0);
        nominal.mul_f64(jitter)
    }

    /// Whether attempt number `attempt` is past the quick retries (worth an error in the log).
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt > self.max_retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_then_park() {
        let policy = RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            parked_delay: Duration::from_secs(10),
        };
        let within = |attempt, nominal: u64| {
            let delay = policy.delay(attempt);
            let nominal = Duration::from_millis(nominal);
            assert!(
                delay <= nominal && delay >= nominal.mul_f64(0.75),
                "{attempt}: {delay:?}"
            );
        };
        within(1, 100);
        within(2, 200);
        within(3, 300);
        within(4, 300);
        within(5, 10_000);
        assert!(!policy.exhausted(4));
        assert!(policy.exhausted(5));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            max_retries: u32::MAX - 1,
            ..RetryPolicy::default()
        };
        assert!(policy.delay(u32::MAX - 1) <= policy.max_delay);
    }
}
