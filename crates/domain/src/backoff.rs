//! Exponential backoff: the delays between retries, doubling from an initial delay up to a cap.
//! Pure arithmetic: the caller sleeps, and supplies the randomness when it wants jitter.

use std::time::Duration;

/// Delays that double from `initial` up to `cap`: `next()` gives the delay to wait now and
/// doubles the one after it; `reset()` (after a success) starts again from `initial`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial` and never exceeds `cap` (an `initial` above `cap` starts at `cap`).
    pub fn new(initial: Duration, cap: Duration) -> Self {
        let initial = initial.min(cap);
        Self {
            initial,
            cap,
            current: initial,
        }
    }

    /// The delay to wait now; the next one is twice as long, up to the cap.
    #[allow(
        clippy::should_implement_trait,
        reason = "the delays never end: a delay, not an Option of one as Iterator::next gives"
    )]
    pub fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.cap);
        delay
    }

    /// As [`Backoff::next`], spread by [`jittered`] with `fraction`.
    pub fn next_jittered(&mut self, fraction: f64) -> Duration {
        jittered(self.next(), fraction)
    }

    /// The delay [`Backoff::next`] would give, without advancing.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// Starts again from the initial delay: the call succeeded.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// `delay` scaled by a factor from 0.5 to 1.5: `fraction` (from 0 to 1, clamped; typically
/// random) picks where in that range, so that clients cut off together do not all come back at
/// the same instant.
pub fn jittered(delay: Duration, fraction: f64) -> Duration {
    let fraction = if fraction.is_nan() {
        0.5
    } else {
        fraction.clamp(0.0, 1.0)
    };
    delay.mul_f64(0.5 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut backoff = Backoff::new(millis(200), Duration::from_secs(30));
        let delays: Vec<u64> = (0..10).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
    }

    #[test]
    fn peek_does_not_advance() {
        let mut backoff = Backoff::new(millis(250), millis(1000));
        assert_eq!(backoff.peek(), millis(250));
        assert_eq!(backoff.peek(), millis(250));
        assert_eq!(backoff.next(), millis(250));
        assert_eq!(backoff.peek(), millis(500));
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut backoff = Backoff::new(millis(500), Duration::from_secs(30));
        for _ in 0..5 {
            backoff.next();
        }
        assert_eq!(backoff.peek(), millis(16_000));
        backoff.reset();
        assert_eq!(backoff.next(), millis(500));
        assert_eq!(backoff.next(), millis(1000));
    }

    #[test]
    fn an_initial_delay_above_the_cap_starts_at_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(30));
        assert_eq!(backoff.next(), Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_secs(30));
    }

    #[test]
    fn a_huge_cap_does_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        for _ in 0..4 {
            backoff.next();
        }
        assert_eq!(backoff.next(), Duration::MAX);
    }

    #[test]
    fn jitter_spreads_from_half_to_one_and_a_half_times() {
        assert_eq!(jittered(millis(1000), 0.0), millis(500));
        assert_eq!(jittered(millis(1000), 0.5), millis(1000));
        assert_eq!(jittered(millis(1000), 1.0), millis(1500));
        assert_eq!(jittered(millis(1000), -3.0), millis(500));
        assert_eq!(jittered(millis(1000), 7.0), millis(1500));
        assert_eq!(jittered(millis(1000), f64::NAN), millis(1000));
        let mut backoff = Backoff::new(millis(400), millis(1000));
        assert_eq!(backoff.next_jittered(0.25), millis(300));
        assert_eq!(backoff.next_jittered(0.25), millis(600));
        assert_eq!(backoff.next_jittered(0.25), millis(750));
    }
}
