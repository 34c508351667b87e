//! The one place the daemon reads the monotonic clock.

use base::Instant;

/// A monotonic clock whose origin is the moment it was created.
///
/// Protocol cores only ever see the [`Instant`]s it returns; it never goes
/// backwards (`std::time::Instant` is CLOCK_MONOTONIC on Linux).
#[derive(Clone, Debug)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    /// Start a clock at zero now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: std::time::Instant::now(),
        }
    }

    /// The current time on this clock.
    pub fn now(&self) -> Instant {
        Instant(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The real instant corresponding to a core's deadline, for timers.
    pub fn to_std(&self, at: Instant) -> std::time::Instant {
        self.origin + std::time::Duration::from_nanos(at.0)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_maps_back() {
        let c = MonotonicClock::new();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = c.now();
        assert!(b > a);
        assert!(b - a >= base::Duration::from_millis(2));
        let back = c.to_std(b);
        assert!(back <= std::time::Instant::now());
    }
}
