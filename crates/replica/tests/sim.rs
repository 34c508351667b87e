//! Randomised failure simulation: random writes, out-of-order disk completions, partitions and
//! crashes of either side mid-write, failover after fencing, mistaken double promotion.
//! Invariants: an acknowledged write is never lost after failover; a split brain is always detected.
//! Half the seeds also run a live migration's storage steps (two primaries for a moment).
//! Seeds: `SIM_SEEDS` (default 150); `SIM_SEED=N` replays one; `SIM_TRACE_BLOCK=B` prints block
//! B's state on both nodes at every step.

mod world;

use std::collections::BTreeMap;

use base::{DetRng, Duration};
use replica::*;
use world::*;

const BLOCKS: u64 = 64;

static SKIPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn payload(id: u64) -> Vec<u8> {
    let mut v = vec![(id % 251) as u8; 4096];
    v[..8].copy_from_slice(&id.to_le_bytes());
    v
}

fn disk_id(disk: &[u8], block: u64) -> u64 {
    let o = (block * 4096) as usize;
    u64::from_le_bytes(disk[o..o + 8].try_into().unwrap())
}

struct Oracle {
    next_id: u64,
    acked: BTreeMap<u64, u64>,
    in_flight: BTreeMap<u64, (u64, u64)>, // req -> (block, id)
}

impl Oracle {
    fn collect(&mut self, node: &mut Node) {
        for (req, r) in node.done.drain(..) {
            if let Some((block, id)) = self.in_flight.remove(&req.0) {
                if r.is_ok() {
                    let e = self.acked.entry(block).or_insert(0);
                    *e = (*e).max(id);
                }
            }
        }
    }
    /// Every acknowledged write is on `disk` (or overwritten by a later write).
    fn check(&self, disk: &[u8], what: &str) {
        for (b, id) in &self.acked {
            let on = disk_id(disk, *b);
            assert!(
                on >= *id,
                "{what}: block {b} has write {on}, but write {id} was acknowledged"
            );
        }
    }
}

fn trace(w: &World, what: &str) {
    if let Some(b) = std::env::var("SIM_TRACE_BLOCK")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let bits: Vec<bool> = (0..2).map(|i| w.n[i].r.metadata().bitmap.test(b)).collect();
        eprintln!(
            "{what}: block {b} ids {} {} bitmap bits {:?} conn {:?} {:?} disk {:?} {:?} pending_io {} {} links {} {}",
            disk_id(&w.n[0].disk, b),
            disk_id(&w.n[1].disk, b),
            bits,
            w.n[0].r.conn(),
            w.n[1].r.conn(),
            w.n[0].r.disk(),
            w.n[1].r.disk(),
            w.n[0].pending_io.len(),
            w.n[1].pending_io.len(),
            w.link[0].len(),
            w.link[1].len()
        );
    }
}

fn chaos(w: &mut World, o: &mut Oracle, rng: &mut DetRng, primary: usize, steps: usize) {
    for _ in 0..steps {
        trace(w, "step");
        if rng.chance(0.03) {
            trace(w, if w.linked { "PARTITION" } else { "RECONNECT" });
            if w.linked {
                // Partition: the primary freezes and fences; the handler outdates the live secondary.
                w.unlink();
                w.settle();
                let now = w.now;
                w.n[1 - primary].r.outdate().unwrap();
                w.n[primary]
                    .r
                    .handle_fence_result(now, FenceOutcome::PeerOutdated);
            } else {
                w.reconnect();
            }
            w.settle();
            continue;
        }
        match rng.below(10) {
            0..=2 => {
                let block = rng.below(BLOCKS);
                if o.in_flight.values().any(|(b, _)| *b == block) {
                    continue;
                }
                o.next_id += 1;
                let id = o.next_id;
                let req = id;
                o.in_flight.insert(req, (block, id));
                if std::env::var("SIM_TRACE_BLOCK").is_ok_and(|s| s == block.to_string()) {
                    eprintln!("WRITE id {id} to block {block}");
                }
                let now = w.now;
                let fua = rng.chance(0.3);
                w.n[primary]
                    .r
                    .handle_write(now, ReqId(req), block * 4096, payload(id), fua);
            }
            3 => {
                let now = w.now;
                o.next_id += 1;
                w.n[primary].r.handle_flush(now, ReqId(1 << 40 | o.next_id));
            }
            4..=5 => {
                // Complete a random pending disk operation (disks reorder).
                let i = rng.below(2) as usize;
                let n = w.n[i].pending_io.len();
                if n > 0 {
                    let k = rng.below(n as u64) as usize;
                    let a = w.n[i].pending_io.remove(k).unwrap();
                    w.n[i].pending_io.push_front(a);
                    let now = w.now;
                    w.n[i].complete_io(now);
                }
            }
            _ => {
                let from = rng.below(2) as usize;
                w.deliver(from);
            }
        }
        w.settle();
        o.collect(&mut w.n[0]);
        o.collect(&mut w.n[1]);
        w.n[0].done.clear();
        w.n[1].done.clear();
    }
}

static MIGRATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A live migration's storage steps in the middle of the chaos: the target is promoted beside
/// the source (both allow two primaries), the source's last writes finish, the source demotes,
/// and the target is the primary from then on. Returns the primary afterwards. Refused (and the
/// primary unchanged) unless both copies are UpToDate with no resync running; when it happens,
/// nothing is resynced and neither copy leaves UpToDate.
fn migrate(w: &mut World, o: &mut Oracle, seed: u64, src: usize) -> usize {
    let dst = 1 - src;
    let now = w.now;
    let in_sync = w.linked
        && w.n[src].r.conn() == ConnState::Connected
        && w.n[dst].r.conn() == ConnState::Connected
        && w.n[src].r.disk() == DiskState::UpToDate
        && w.n[dst].r.disk() == DiskState::UpToDate;
    let resyncs = |w: &World| {
        w.n.iter()
            .map(|n| {
                n.events
                    .iter()
                    .filter(|e| matches!(e, Event::ResyncStarted { .. }))
                    .count()
            })
            .sum::<usize>()
    };
    let before = resyncs(w);
    match w.n[dst].r.promote(now, false) {
        Ok(()) => assert!(
            in_sync,
            "seed {seed}: promoted beside a primary while the copies may differ"
        ),
        Err(_) => return src,
    }
    w.settle();
    assert_eq!(
        resyncs(w),
        before,
        "seed {seed}: the migration target's promotion started a resync"
    );
    assert_eq!(w.n[src].r.disk(), DiskState::UpToDate, "seed {seed}");
    assert_eq!(w.n[dst].r.disk(), DiskState::UpToDate, "seed {seed}");
    // The source's guest is paused: its in-flight writes finish (disks and link deliver), then it
    // quits and the source demotes.
    for _ in 0..10_000 {
        let mut any = false;
        for i in 0..2 {
            let now = w.now;
            any |= w.n[i].complete_io(now);
        }
        any |= w.deliver(0) | w.deliver(1);
        w.settle();
        if !any {
            break;
        }
    }
    o.collect(&mut w.n[0]);
    o.collect(&mut w.n[1]);
    w.n[0].done.clear();
    w.n[1].done.clear();
    if w.n[src].r.demote(w.now).is_err() {
        // Something is still in flight (a frozen write after a partition): stay dual-primary
        // no longer than needed: the target steps back instead, as a failed migration does.
        let now = w.now;
        if w.n[dst].r.demote(now).is_ok() {
            return src;
        }
        panic!("seed {seed}: neither side could end the migration window");
    }
    w.settle();
    MIGRATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dst
}

fn run_seed(seed: u64) -> usize {
    let mut rng = DetRng::new(seed);
    // Half the seeds allow two primaries and run a live migration's storage steps mid-way.
    let with_migration = rng.chance(0.5);
    let proto_cfg = move |id| {
        let mut c = cfg(id);
        c.protocol = Protocol::C;
        c.allow_two_primaries = with_migration;
        c
    };
    let mut w = World::synced_pair_sized(proto_cfg(1), proto_cfg(2), 1 << 20);
    w.auto_net = false;
    w.n[0].auto_io = false;
    w.n[1].auto_io = false;
    let mut o = Oracle {
        next_id: 0,
        acked: BTreeMap::new(),
        in_flight: BTreeMap::new(),
    };
    let steps = 20 + rng.below(60) as usize;
    chaos(&mut w, &mut o, &mut rng, 0, steps);
    let mut p = 0;
    if with_migration {
        p = migrate(&mut w, &mut o, seed, 0);
        let steps = 10 + rng.below(40) as usize;
        chaos(&mut w, &mut o, &mut rng, p, steps);
    }
    let q = 1 - p;
    let id = |i: usize| i as u32 + 1;
    let victim = rng.below(2) as usize;
    if victim == 0 {
        // The primary dies mid-write; the cluster fences it and fails over to the other node.
        w.crash(p, proto_cfg(id(p)), seed + 100);
        o.in_flight.clear();
        // The secondary's own queued disk writes still land.
        while w.n[q].complete_io(w.now) {
            w.settle();
        }
        let now = w.now;
        if w.n[q].r.disk() != DiskState::UpToDate {
            // Outdated or mid-resync: it must refuse, and the old primary's return heals it.
            assert!(matches!(
                w.n[q].r.promote(now, false),
                Err(ReplicaError::DiskState(_))
            ));
            SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            w.n[0].auto_io = true;
            w.n[1].auto_io = true;
            w.auto_net = true;
            w.reconnect();
            w.advance(Duration::from_millis(200));
            assert!(
                w.disks_equal(),
                "seed {seed}: disks differ after the primary's return"
            );
            return o.acked.len();
        }
        assert_eq!(w.n[q].r.promote(now, false), Err(ReplicaError::NeedFencing));
        w.n[q].r.handle_fence_result(now, FenceOutcome::PeerFenced);
        w.n[q].r.promote(now, false).unwrap();
        o.check(&w.n[q].disk, "after failover to the secondary");
        // New primary keeps working, degraded.
        w.n[q].auto_io = true;
        for k in 0..5 {
            o.next_id += 1;
            let id = o.next_id;
            let block = (seed + k) % BLOCKS;
            o.in_flight.insert(id, (block, id));
            w.n[q]
                .r
                .handle_write(w.now, ReqId(id), block * 4096, payload(id), false);
            w.settle();
            o.collect(&mut w.n[q]);
        }
        // The old primary returns and resyncs from the new one.
        w.n[p].auto_io = true;
        w.auto_net = true;
        w.reconnect();
        w.advance(Duration::from_millis(200));
        assert_eq!(
            w.n[p].r.disk(),
            DiskState::UpToDate,
            "seed {seed}: {:?}",
            w.n[p].events
        );
        assert!(w.disks_equal(), "seed {seed}: disks differ after resync");
        o.check(&w.n[p].disk, "old primary after resync");
    } else {
        // The secondary dies; the primary freezes, fences it, resumes.
        // Freezing happens when a replicating link is lost (not a handshake that never finished).
        let was_linked = !matches!(
            w.n[p].r.conn(),
            ConnState::WfConnection | ConnState::WfReportParams | ConnState::StandAlone
        );
        trace(&w, "CRASH secondary");
        w.crash(q, proto_cfg(id(q)), seed + 200);
        trace(&w, "after crash");
        let now = w.now;
        assert_eq!(w.n[p].r.status().frozen, was_linked);
        w.n[p].r.handle_fence_result(now, FenceOutcome::PeerFenced);
        w.settle();
        while w.n[p].complete_io(w.now) {
            w.settle();
        }
        o.collect(&mut w.n[p]);
        assert!(
            o.in_flight.is_empty(),
            "seed {seed}: writes stuck after fencing: {:?}",
            o.in_flight
        );
        o.check(&w.n[p].disk, "primary after losing the secondary");
        w.n[0].auto_io = true;
        w.n[1].auto_io = true;
        w.auto_net = true;
        w.reconnect();
        w.advance(Duration::from_millis(200));
        let differ: Vec<(u64, u64, u64)> = (0..BLOCKS)
            .map(|b| (b, disk_id(&w.n[0].disk, b), disk_id(&w.n[1].disk, b)))
            .filter(|(_, a, b)| a != b)
            .collect();
        assert!(
            w.disks_equal(),
            "seed {seed} (migrated: {}): disks differ after resync (block, id on n1, id on n2): {differ:?}\n{:?}\n{:?}",
            p == 1,
            w.n[0].events,
            w.n[1].events
        );
        o.check(&w.n[q].disk, "secondary after resync");
    }
    o.acked.len()
}

#[test]
fn acknowledged_writes_survive_crashes_and_failover() {
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    // SIM_SEED=N replays one seed.
    let range = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(one) => one..one + 1,
        None => 0..seeds,
    };
    let seeds = range.end - range.start;
    let mut checked = 0;
    for seed in range {
        checked += run_seed(seed);
    }
    // The invariant was exercised, not vacuously true, and migrations happened.
    assert!(
        checked as u64 > seeds * 5,
        "only {checked} acknowledged blocks checked"
    );
    let migrated = MIGRATED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{seeds} seeds, {checked} acknowledged blocks checked, {migrated} migrations");
    assert!(
        migrated * 10 > seeds,
        "only {migrated} migrations in {seeds} seeds"
    );
}

#[test]
fn double_promotion_is_always_detected() {
    for seed in 0..40u64 {
        let mut rng = DetRng::new(seed);
        let mut w = World::synced_pair_sized(cfg(1), cfg(2), 1 << 20);
        w.unlink();
        let now = w.now;
        // Operator mistake: both forced primary during a partition, both write.
        w.n[0].r.handle_fence_result(now, FenceOutcome::PeerFenced);
        w.n[1].r.promote(now, true).unwrap();
        let a = 1 + rng.below(5);
        let b = 1 + rng.below(5);
        for k in 0..a {
            w.write(0, k, rng.below(BLOCKS) * 4096, 0xA, 4096, false);
        }
        for k in 0..b {
            w.write(1, 100 + k, rng.below(BLOCKS) * 4096, 0xB, 4096, false);
        }
        // Sometimes one or both are demoted before the link returns.
        match rng.below(3) {
            0 => {}
            1 => w.n[1].r.demote(now).unwrap(),
            _ => {
                w.n[0].r.demote(now).unwrap();
                w.n[1].r.demote(now).unwrap();
            }
        }
        w.settle();
        let before = (w.n[0].disk.clone(), w.n[1].disk.clone());
        w.reconnect();
        w.advance(Duration::from_millis(100));
        for n in &w.n {
            let detected = n.events.iter().any(|e| {
                matches!(
                    e,
                    Event::Decision(SyncDecision::SplitBrain) | Event::SplitBrain(_)
                ) || matches!(e, Event::Refused(r) if r.contains("both nodes are Primary"))
            });
            assert!(
                detected,
                "seed {seed}: split brain not detected: {:?}",
                n.events
            );
        }
        // Never merged: either refused (disks untouched), or one side's data wins wholesale.
        if w.n[0].r.conn() == ConnState::StandAlone {
            assert_eq!((w.n[0].disk.clone(), w.n[1].disk.clone()), before);
        } else {
            assert!(w.disks_equal());
            assert!(
                w.n[0].disk == before.0 || w.n[0].disk == before.1,
                "seed {seed}: merged data"
            );
        }
    }
}
