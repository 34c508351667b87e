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

use base::{DetRng, Duration, Instant};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
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

/// The events still to come, in order of `(time, insertion)`: a run is a
/// pure function of its seed.
pub(crate) struct Agenda<E> {
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, E>,
}

impl<E> Agenda<E> {
    pub(crate) fn new() -> Agenda<E> {
        Agenda {
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
        }
    }

    /// Schedule `ev` at `t`.
    pub(crate) fn at(&mut self, t: Instant, ev: E) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// When the next event is due.
    pub(crate) fn next_time(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }

    /// Take the next event.
    pub(crate) fn pop(&mut self) -> Option<(Instant, E)> {
        let Reverse((t, s)) = self.queue.pop()?;
        let ev = self
            .events
            .remove(&s)
            .expect("every queued seq has an event");
        Some((t, ev))
    }
}

/// The trace of a run: a rolling hash of everything that happened (for
/// determinism checks) and the last lines (for a failure's report).
pub(crate) struct Trace {
    lines: VecDeque<String>,
    cap: usize,
    hash: u64,
    echo: bool,
}

impl Trace {
    pub(crate) fn new(cap: usize, echo: bool) -> Trace {
        Trace {
            lines: VecDeque::new(),
            cap,
            hash: 0xcbf2_9ce4_8422_2325,
            echo,
        }
    }

    /// Record a line at simulated time `now`.
    pub(crate) fn log(&mut self, now: Instant, s: &str) {
        fnv(&mut self.hash, s.as_bytes());
        if self.echo {
            eprintln!("{now} {s}");
        }
        if self.lines.len() >= self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(format!("{now} {s}"));
    }

    /// Fold bytes into the hash without a line.
    pub(crate) fn fold(&mut self, b: &[u8]) {
        fnv(&mut self.hash, b);
    }

    /// The hash so far.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// The last lines.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// An exponentially distributed delay with the given mean.
pub(crate) fn exp(rng: &mut DetRng, mean: Duration) -> Duration {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_nanos((-(1.0 - u).ln() * mean.as_nanos() as f64) as u64)
}
