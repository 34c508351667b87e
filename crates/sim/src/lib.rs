//! Deterministic simulator: whole clusters of the real protocol cores under
//! seeded faults, with invariant checks after every step.
//!
//! Everything runs in one thread on a virtual clock; an event queue ordered
//! by `(time, insertion seq)` makes every run a pure function of its seed.
//! See [`totem`] for the Totem cluster simulation (`quorate sim totem`) and
//! [`cluster`] for whole node stacks with fencing and services (`quorate sim
//! cluster`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod totem;

use base::Instant;
use std::fmt;

/// A violated invariant (or a liveness bound exceeded) in a simulated run.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Which simulator: `totem` or `cluster`.
    pub layer: &'static str,
    /// The seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// Simulated time of detection.
    pub at: Instant,
    /// Which invariant, and how.
    pub invariant: String,
    /// The last trace lines before the failure.
    pub tail: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} simulation failed: seed {} nodes {} at {}",
            self.layer, self.seed, self.nodes, self.at
        )?;
        writeln!(f, "invariant: {}", self.invariant)?;
        writeln!(
            f,
            "replay: quorate sim {} --seeds 1 --seed {} --nodes {}",
            self.layer, self.seed, self.nodes
        )?;
        writeln!(f, "trace tail:")?;
        for l in &self.tail {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// FNV-1a, folding trace bytes into a run's hash.
pub(crate) fn fnv(h: &mut u64, b: &[u8]) {
    for x in b {
        *h ^= u64::from(*x);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// A node's monotonic clock: an offset and a rate drift (ppm) from the
/// simulator's global time.
pub(crate) struct DriftClock {
    pub(crate) offset: u64,
    pub(crate) ppm: i64,
}

impl DriftClock {
    /// Global time to this node's clock.
    pub(crate) fn local(&self, g: Instant) -> Instant {
        let t = g.0 as i128;
        Instant((t + t * self.ppm as i128 / 1_000_000 + self.offset as i128) as u64)
    }

    /// The first global time, not before `now`, at which this clock reads `l`.
    pub(crate) fn global(&self, l: Instant, now: Instant) -> Instant {
        let l = (l.0 as i128 - self.offset as i128).max(0);
        let mut g = (l * 1_000_000 / (1_000_000 + self.ppm as i128)) as u64;
        g = g.max(now.0);
        while self.local(Instant(g)) < Instant(l as u64 + self.offset) {
            g += 1;
        }
        Instant(g)
    }
}
