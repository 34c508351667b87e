//! Test load for `quorate bench totem`: ordered messages that no layer acts on.
//!
//! A node asked to generate load multicasts `count` messages of `size` bytes
//! at `rate` messages/s (0: as fast as totem accepts them), each carrying the
//! sender's wall-clock send time and a sequence number. Every member counts
//! what it delivers and records the send-to-agreed-delivery latency (all
//! nodes of a bench share one host clock). Nothing here changes protocol
//! behaviour; the messages travel like any other ordered message.

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest latency record kept per node.
const MAX_SAMPLES: usize = 1 << 20;

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What this node is sending.
#[derive(Debug, Default)]
pub struct Generator {
    remaining: u64,
    size: usize,
    rate: u64,
    started_ns: u64,
    sent: u64,
    seq: u64,
}

impl Generator {
    /// Start sending `count` messages of `size` bytes at `rate`/s (0 = unpaced).
    pub fn start(&mut self, count: u64, size: usize, rate: u64) {
        *self = Generator {
            remaining: count,
            size: size.max(16),
            rate,
            started_ns: wall_ns(),
            sent: 0,
            seq: self.seq,
        };
    }

    /// True while messages remain.
    pub fn active(&self) -> bool {
        self.remaining > 0
    }

    /// How many messages are due now (pacing).
    pub fn due(&self) -> u64 {
        if self.rate == 0 {
            return self.remaining;
        }
        let elapsed = wall_ns().saturating_sub(self.started_ns);
        let allowed = (u128::from(elapsed) * u128::from(self.rate) / 1_000_000_000) as u64 + 1;
        allowed.saturating_sub(self.sent).min(self.remaining)
    }

    /// The next message body.
    pub fn next_body(&mut self) -> Vec<u8> {
        let mut b = vec![0u8; self.size];
        b[..8].copy_from_slice(&wall_ns().to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// The message was accepted by totem.
    pub fn accepted(&mut self) {
        self.seq += 1;
        self.sent += 1;
        self.remaining -= 1;
    }
}

/// CPU time (user + system, all threads) this process has used, from
/// `/proc/self/stat`, in nanoseconds; `None` where there is no procfs.
pub fn process_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name: state is the first,
    // utime and stime are the 12th and 13th
    let mut f = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)?;
    Some((utime + stime).saturating_mul(1_000_000_000 / tick))
}

/// What this node delivered.
#[derive(Debug, Default)]
pub struct Receiver {
    /// Process CPU time at the last reset.
    cpu_at_reset_ns: Option<u64>,
    count: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    latencies_us: Vec<u32>,
}

impl Receiver {
    /// Record one delivered load message.
    pub fn deliver(&mut self, body: &[u8]) {
        let now = wall_ns();
        if self.count == 0 {
            self.first_ns = now;
        }
        self.last_ns = now;
        self.count += 1;
        self.bytes += body.len() as u64 + 1;
        if let Some(sent) = body
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        {
            if self.latencies_us.len() < MAX_SAMPLES {
                self.latencies_us
                    .push((now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
            }
        }
    }

    /// Forget everything (before a new run).
    pub fn reset(&mut self) {
        *self = Receiver {
            cpu_at_reset_ns: process_cpu_ns(),
            ..Receiver::default()
        };
    }

    /// Counters, latency percentiles and the CPU time this process used
    /// since the last reset (`cpu_ns`, absent without procfs), as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let pct = |p: f64| -> u32 {
            if l.is_empty() {
                0
            } else {
                l[((l.len() - 1) as f64 * p).round() as usize]
            }
        };
        serde_json::json!({
            "count": self.count,
            "bytes": self.bytes,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "latency_p50_us": pct(0.5),
            "latency_p99_us": pct(0.99),
            "cpu_ns": self
                .cpu_at_reset_ns
                .and_then(|at| Some(process_cpu_ns()?.saturating_sub(at))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaced_generator_offers_everything_and_counts_down() {
        let mut g = Generator::default();
        g.start(3, 1024, 0);
        assert_eq!(g.due(), 3);
        let b = g.next_body();
        assert_eq!(b.len(), 1024);
        g.accepted();
        assert_eq!(g.due(), 2);
        g.accepted();
        g.accepted();
        assert!(!g.active());
    }

    #[test]
    fn receiver_reports_count_and_latency_percentiles() {
        let mut g = Generator::default();
        g.start(100, 64, 0);
        let mut r = Receiver::default();
        for _ in 0..100 {
            r.deliver(&g.next_body());
            g.accepted();
        }
        let s = r.stats();
        assert_eq!(s["count"], 100);
        assert!(s["latency_p99_us"].as_u64().unwrap() >= s["latency_p50_us"].as_u64().unwrap());
        r.reset();
        assert_eq!(r.stats()["count"], 0);
    }

    #[test]
    fn cpu_time_since_reset_grows_with_work() {
        let mut r = Receiver::default();
        r.reset();
        let before = r.stats()["cpu_ns"].as_u64().expect("procfs is mounted");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = r.stats()["cpu_ns"].as_u64().unwrap();
        assert!(after >= before + 20_000_000, "{before} -> {after} ns");
    }
}
