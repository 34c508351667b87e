//! Engine behaviour on a deterministic two-node world.

mod world;

use base::Duration;
use replica::*;
use world::*;

#[test]
fn initial_full_sync_after_forced_primary() {
    let mut w = World::new(cfg(1), cfg(2));
    for (i, b) in w.n[0].disk.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    w.connect();
    assert!(w.n[0]
        .events
        .contains(&Event::Decision(SyncDecision::BothFresh)));
    assert_eq!(w.n[0].r.conn(), ConnState::Connected);
    assert_eq!(w.n[0].r.disk(), DiskState::Inconsistent);
    assert_eq!(
        w.n[1].r.promote(w.now, false),
        Err(ReplicaError::DiskState(DiskState::Inconsistent))
    );
    w.n[0].r.promote(w.now, true).unwrap();
    w.advance(Duration::from_millis(100));
    assert!(w.disks_equal());
    assert_eq!(w.n[0].resync_bytes_sent, SIZE);
    assert_eq!(w.n[1].r.disk(), DiskState::UpToDate);
    assert_eq!(
        w.n[0].r.metadata().gen.current & !1,
        w.n[1].r.metadata().gen.current & !1
    );
    assert_eq!(
        w.n[1].r.metadata().gen,
        Metadata::decode(&w.n[1].stored_meta).unwrap().gen
    );
    assert_eq!(w.n[0].r.status().peer_disk, DiskState::UpToDate);
}

fn ack_timing(p: Protocol) -> (bool, bool, bool) {
    let (mut a, mut b) = (cfg(1), cfg(2));
    a.protocol = p;
    b.protocol = p;
    let mut w = World::synced_pair(a, b);
    w.n[0].auto_io = false;
    w.n[1].auto_io = false;
    w.auto_net = false;
    let now = w.now;
    w.n[0]
        .r
        .handle_write(now, ReqId(1), 8192, vec![1; 4096], false);
    w.settle();
    // Primary's disk completes; nothing delivered yet.
    assert!(w.n[0].complete_io(now));
    w.settle();
    let after_local = w.n[0].result(1).is_some();
    // Data reaches the secondary (B sends RecvAck now), disk not yet done.
    while w.deliver(0) {}
    w.settle();
    while w.deliver(1) {}
    w.settle();
    let after_recv = w.n[0].result(1).is_some();
    assert!(w.n[1].complete_io(now));
    w.settle();
    while w.deliver(1) {}
    w.settle();
    let after_peer_disk = w.n[0].result(1).is_some();
    assert_eq!(w.n[0].result(1), Some(&Ok(())));
    (after_local, after_recv, after_peer_disk)
}

#[test]
fn protocol_a_b_c_ack_timing() {
    assert_eq!(ack_timing(Protocol::A), (true, true, true));
    assert_eq!(ack_timing(Protocol::B), (false, true, true));
    assert_eq!(ack_timing(Protocol::C), (false, false, true));
}

#[test]
fn flush_waits_for_the_peer_barrier_under_protocol_c() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    w.write(0, 1, 0, 9, 4096, false);
    assert_eq!(w.n[0].result(1), Some(&Ok(())));
    w.n[1].auto_io = false;
    let now = w.now;
    w.n[0].r.handle_flush(now, ReqId(2));
    w.settle();
    assert!(w.n[0].result(2).is_none(), "peer has not flushed yet");
    assert!(matches!(
        w.n[1].pending_io.front(),
        Some(Action::DiskFlush { .. })
    ));
    w.n[1].complete_io(now);
    w.settle();
    assert_eq!(w.n[0].result(2), Some(&Ok(())));
}

#[test]
fn fua_reaches_the_peer_disk_flagged() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    w.n[1].auto_io = false;
    w.write(0, 1, 4096, 3, 512, true);
    assert!(matches!(
        w.n[1].pending_io.front(),
        Some(Action::DiskWrite { fua: true, .. })
    ));
}

#[test]
fn disconnect_then_bitmap_resync_sends_only_changes() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    let mut c = cfg(1);
    c.fencing = Fencing::DontCare;
    let _ = c;
    w.unlink();
    // Primary keeps writing: frozen first (resource-and-stonith), then the peer is fenced/outdated.
    let now = w.now;
    w.n[0]
        .r
        .handle_write(now, ReqId(1), 0, vec![5; 8192], false);
    w.settle();
    assert!(w.n[0].result(1).is_none(), "frozen until fenced");
    assert!(w.n[0].r.status().frozen);
    assert!(w.n[0].fences >= 1);
    w.n[0]
        .r
        .handle_fence_result(now, FenceOutcome::PeerOutdated);
    w.settle();
    assert_eq!(w.n[0].result(1), Some(&Ok(())));
    w.write(0, 2, 65536, 6, 4096, true);
    assert_eq!(w.n[0].result(2), Some(&Ok(())));
    assert_eq!(w.n[0].r.status().out_of_sync_bytes, 3 * 4096);
    w.connect();
    assert!(w.n[0]
        .events
        .contains(&Event::Decision(SyncDecision::BitmapSource)));
    assert!(w.n[1]
        .events
        .contains(&Event::Decision(SyncDecision::BitmapTarget)));
    assert_eq!(
        w.n[0].resync_bytes_sent,
        SIZE + 3 * 4096,
        "initial sync + 3 blocks"
    );
    assert!(w.disks_equal());
    assert_eq!(w.n[0].r.status().out_of_sync_bytes, 0);
    assert_eq!(w.n[1].r.disk(), DiskState::UpToDate);
    // In sync again: a reconnect does nothing.
    w.unlink();
    w.n[0]
        .r
        .handle_fence_result(w.now, FenceOutcome::PeerOutdated);
    w.connect();
    assert!(w.disks_equal());
}

#[test]
fn peer_loss_freezes_pending_writes_until_fenced() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    w.auto_net = false;
    let now = w.now;
    w.n[0]
        .r
        .handle_write(now, ReqId(1), 0, vec![1; 4096], false);
    w.settle();
    w.unlink(); // the Data message is lost with the link
    w.settle();
    assert!(w.n[0].r.status().frozen);
    assert_eq!(w.n[0].fences, 1);
    assert!(
        w.n[0].result(1).is_none(),
        "never acked while the peer may diverge"
    );
    w.n[0]
        .r
        .handle_write(now, ReqId(2), 4096, vec![2; 4096], false);
    w.n[0].r.handle_flush(now, ReqId(3));
    w.settle();
    assert!(w.n[0].done.is_empty());
    // Fencing fails: stays frozen, retried after fence_retry.
    w.n[0].r.handle_fence_result(now, FenceOutcome::Failed);
    w.advance(Duration::from_secs(6));
    assert_eq!(w.n[0].fences, 2);
    assert!(w.n[0].done.is_empty());
    let now = w.now;
    w.n[0].r.handle_fence_result(now, FenceOutcome::PeerFenced);
    w.settle();
    let ids: Vec<u64> = w.n[0].done.iter().map(|(r, _)| r.0).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(w.n[0].done.iter().all(|(_, r)| r.is_ok()));
    assert!(w.n[0].events.contains(&Event::Resumed));
    assert!(w.n[0].r.status().out_of_sync_bytes >= 2 * 4096);
}

#[test]
fn ping_timeout_detects_a_dead_peer() {
    let mut c0 = cfg(1);
    c0.fencing = Fencing::DontCare;
    let mut w = World::synced_pair(c0, cfg(2));
    w.auto_net = false; // peer stops answering
    w.advance(Duration::from_secs(11));
    assert_eq!(w.n[0].r.conn(), ConnState::WfConnection);
    assert!(w.n[0].events.contains(&Event::PeerLost));
}

#[test]
fn promote_while_disconnected_needs_fencing() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    let now = w.now;
    w.n[0].r.demote(now).unwrap();
    w.settle();
    w.unlink();
    assert_eq!(w.n[1].r.promote(now, false), Err(ReplicaError::NeedFencing));
    w.settle();
    assert_eq!(w.n[1].fences, 1);
    w.n[1].r.handle_fence_result(now, FenceOutcome::PeerFenced);
    w.n[1].r.promote(now, false).unwrap();
    assert_eq!(w.n[1].r.role(), Role::Primary);
}

#[test]
fn two_primaries_only_when_allowed() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    assert_eq!(
        w.n[1].r.promote(w.now, false),
        Err(ReplicaError::PeerIsPrimary)
    );
    let (mut a, mut b) = (cfg(1), cfg(2));
    a.allow_two_primaries = true;
    b.allow_two_primaries = true;
    let mut w = World::synced_pair(a, b);
    w.n[1].r.promote(w.now, false).unwrap();
    w.settle();
    assert_eq!(w.n[0].r.status().peer_role, Some(Role::Primary));
    // Live migration: the destination writes, the source sees it.
    w.write(1, 1, 0, 0x77, 4096, false);
    assert_eq!(w.n[1].result(1), Some(&Ok(())));
    assert!(w.disks_equal());
}

/// The target of a live migration becomes primary beside the source without any resync: the
/// source's copy (which its running guest writes) is never overwritten, whatever the target's
/// handshake said about the source's identifiers back when the volume was new.
#[test]
fn a_second_primary_for_a_migration_syncs_nothing_and_the_source_stays_up_to_date() {
    let (mut a, mut b) = (cfg(1), cfg(2));
    a.allow_two_primaries = true;
    b.allow_two_primaries = true;
    let mut w = World::synced_pair(a, b);
    w.write(0, 1, 0, 0x42, 4096, false);
    w.settle();
    let sent = (w.n[0].resync_bytes_sent, w.n[1].resync_bytes_sent);
    w.n[1].r.promote(w.now, false).unwrap();
    w.advance(Duration::from_millis(100));
    assert_eq!(
        (w.n[0].resync_bytes_sent, w.n[1].resync_bytes_sent),
        sent,
        "a resync ran"
    );
    for n in &w.n {
        assert_eq!(n.r.role(), Role::Primary);
        assert_eq!(n.r.disk(), DiskState::UpToDate);
        assert_eq!(n.r.conn(), ConnState::Connected);
    }
    assert_eq!(
        w.n[0].r.metadata().gen.current & !1,
        w.n[1].r.metadata().gen.current & !1
    );
    // The source's guest still writes (its last writes before the switch), the target sees them.
    w.write(0, 2, 8192, 0x43, 4096, true);
    assert_eq!(w.n[0].result(2), Some(&Ok(())));
    assert!(w.disks_equal());
    // The source quits and demotes; the target goes on alone as the primary.
    w.n[0].r.demote(w.now).unwrap();
    w.settle();
    w.write(1, 3, 0, 0x44, 4096, true);
    assert_eq!(w.n[1].result(3), Some(&Ok(())));
    assert!(w.disks_equal());
}

/// A second primary is refused while the copies may differ (a resync is running).
#[test]
fn a_second_primary_is_refused_while_a_resync_runs() {
    let (mut a, mut b) = (cfg(1), cfg(2));
    a.allow_two_primaries = true;
    b.allow_two_primaries = true;
    a.resync_max_rate = 4 << 20;
    a.resync_min_rate = 1 << 20;
    a.resync_chunk = 64 << 10;
    a.resync_in_flight = 2;
    let mut w = World::new(a, b);
    w.connect();
    w.n[0].r.promote(w.now, true).unwrap();
    // The initial full sync has started but not finished (4 MiB/s).
    w.settle();
    assert_eq!(w.n[1].r.conn(), ConnState::SyncTarget);
    assert!(w.n[1].r.promote(w.now, false).is_err());
    assert_eq!(w.n[0].r.role(), Role::Primary);
}

/// A resync never reads a block whose application write is still on its way to the local disk:
/// it would send the older data, the peer's acknowledgement would clear the bit, and the newer
/// data would never reach the peer (found by the simulator, seed 22150 of 60,000).
#[test]
fn a_resync_waits_for_a_local_write_still_on_its_way_to_disk() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    w.auto_net = false;
    w.n[0].auto_io = false;
    // The write goes out to the peer, but the link drops before the peer gets it; the local
    // disk has not finished it either.
    w.write(0, 1, 8192, 0x99, 4096, false);
    w.unlink();
    let now = w.now;
    w.n[1].r.outdate().unwrap();
    w.n[0]
        .r
        .handle_fence_result(now, FenceOutcome::PeerOutdated);
    w.settle();
    w.auto_net = true;
    w.reconnect();
    w.settle();
    let reads_block = |a: &Action| matches!(a, Action::DiskRead { offset, len, .. } if *offset < 8192 + 4096 && 8192 < offset + *len as u64);
    assert!(
        !w.n[0].pending_io.iter().any(reads_block),
        "a resync read of the block was started before its write reached the disk: {:?}",
        w.n[0].pending_io
    );
    // Once the write is on disk, the resync reads and sends it.
    w.n[0].auto_io = true;
    while w.n[0].complete_io(w.now) {
        w.settle();
    }
    w.advance(Duration::from_millis(100));
    assert_eq!(w.n[1].r.disk(), DiskState::UpToDate);
    assert!(w.disks_equal());
}

fn split(w: &mut World, a_writes: bool, b_writes: bool) {
    let now = w.now;
    w.unlink();
    w.n[0].r.handle_fence_result(now, FenceOutcome::PeerFenced); // fence "succeeded" wrongly
    w.n[1].r.handle_fence_result(now, FenceOutcome::PeerFenced);
    w.n[1].r.promote(now, false).unwrap();
    if a_writes {
        w.write(0, 100, 0, 0xA0, 8192, false);
    }
    if b_writes {
        w.write(1, 200, 16384, 0xB0, 4096, false);
    }
    w.settle();
    w.n[0].r.demote(now).unwrap();
    w.n[1].r.demote(now).unwrap();
    w.settle();
}

#[test]
fn split_brain_is_detected_and_never_merged() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    split(&mut w, true, true);
    w.connect();
    for n in &w.n {
        assert!(
            n.events
                .contains(&Event::Decision(SyncDecision::SplitBrain)),
            "{:?}",
            n.events
        );
        assert!(n
            .events
            .contains(&Event::SplitBrain(SbResolution::Disconnect)));
        assert_eq!(n.r.conn(), ConnState::StandAlone);
        assert_eq!(n.r.status().split_brain, Some(SyncDecision::SplitBrain));
    }
    assert!(!w.disks_equal());
    // Operator picks node 1 as the victim.
    w.n[1].r.discard_my_data();
    w.connect();
    assert!(w.n[1]
        .events
        .contains(&Event::SplitBrain(SbResolution::IAmTarget)));
    assert!(w.disks_equal());
    assert_eq!(w.n[1].disk[16384], 0, "victim's change discarded");
    assert_eq!(w.n[1].disk[0], 0xA0, "survivor's change kept");
    assert_eq!(w.n[1].r.disk(), DiskState::UpToDate);
}

#[test]
fn discard_zero_changes_resolves_automatically() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    split(&mut w, true, false);
    w.connect();
    assert!(w.n[0]
        .events
        .contains(&Event::SplitBrain(SbResolution::IAmSource)));
    assert!(w.disks_equal());
    assert_eq!(w.n[1].disk[0], 0xA0);
}

#[test]
fn online_verify_finds_and_resync_repairs_divergence() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    w.n[1].disk[300_000] ^= 0xff; // silent corruption on the secondary
    w.n[0].r.start_verify(w.now).unwrap();
    w.advance(Duration::from_millis(100));
    let mism: Vec<&Event> = w.n[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::VerifyMismatch { .. }))
        .collect();
    assert_eq!(mism.len(), 1);
    assert!(w.n[0].events.contains(&Event::VerifyFinished {
        out_of_sync: 256 << 10
    }));
    assert!(!w.disks_equal());
    // Disconnect/connect resyncs the marked blocks from the primary.
    w.unlink();
    w.n[0]
        .r
        .handle_fence_result(w.now, FenceOutcome::PeerOutdated);
    w.connect();
    assert!(w.disks_equal());
}

#[test]
fn crashed_primary_resyncs_its_activity_log() {
    let mut w = World::synced_pair(cfg(1), cfg(2));
    w.auto_net = false;
    let now = w.now;
    // A write reaches the primary's disk but never the peer; then the primary crashes.
    w.n[0]
        .r
        .handle_write(now, ReqId(1), 4 << 20 >> 3, vec![0xCC; 4096], false);
    w.settle();
    w.link = Default::default();
    let stored = Metadata::decode(&w.n[0].stored_meta).unwrap();
    assert!(stored.flags.primary, "primary flag persisted");
    let disk = w.n[0].disk.clone();
    w.n[0] = Node::with_meta(cfg(1), stored, disk, 9);
    w.n[1].r.handle_disconnected(now);
    w.auto_net = true;
    w.linked = false;
    w.connect();
    assert!(
        w.n[0]
            .events
            .contains(&Event::Decision(SyncDecision::BitmapSource)),
        "{:?}",
        w.n[0].events
    );
    assert!(w.disks_equal());
    // The restarted node sends exactly the one hot 4 MiB activity-log extent.
    assert_eq!(w.n[0].resync_bytes_sent, 4 << 20);
}

#[test]
fn resync_rate_is_limited() {
    let (mut a, b) = (cfg(1), cfg(2));
    a.resync_max_rate = 4 << 20; // 4 MiB/s
    a.resync_min_rate = 1 << 20;
    a.resync_chunk = 64 << 10;
    a.resync_in_flight = 2; // burst: 128 KiB
    let mut w = World::new(a, b);
    w.connect();
    w.n[0].r.promote(w.now, true).unwrap();
    w.settle();
    assert!(
        w.n[1].r.disk() != DiskState::UpToDate,
        "16 MiB cannot sync instantly at 4 MiB/s"
    );
    let start = w.now;
    for _ in 0..100 {
        if w.n[1].r.disk() == DiskState::UpToDate {
            break;
        }
        w.advance(Duration::from_millis(100));
    }
    assert_eq!(w.n[1].r.disk(), DiskState::UpToDate);
    let secs = (w.now.0 - start.0) as f64 / 1e9;
    // (16 MiB - 128 KiB burst) at 4 MiB/s = 3.97 s.
    assert!(secs > 3.7 && secs < 4.3, "took {secs} s");
    assert!(w.disks_equal());
}

#[test]
fn forcing_a_fresh_node_primary_overwrites_a_connected_peer() {
    let mut w = World::new(cfg(1), cfg(2));
    w.connect();
    w.n[1].r.promote(w.now, true).unwrap();
    w.advance(Duration::from_millis(100));
    w.n[1].r.demote(w.now).unwrap();
    w.write(1, 1, 0, 1, 10, false); // refused: secondary
    assert_eq!(w.n[1].result(1), Some(&Err(ReplicaError::NotPrimary)));
    // Node 1 is UpToDate; node 0 holds different data but is re-created (fresh metadata) and forced.
    w.n[0].disk[0] = 0xEE;
    w.unlink();
    let meta = Metadata::fresh(SIZE, GRAN, 61);
    let disk = w.n[0].disk.clone();
    w.n[0] = Node::with_meta(cfg(1), meta, disk, 5);
    w.reconnect();
    // Fresh vs UpToDate: full sync from node 1.
    w.advance(Duration::from_millis(100));
    assert!(w.disks_equal());
    assert_eq!(w.n[0].disk[0], 0);
}

#[test]
fn status_shows_resync_progress_rate_and_eta() {
    let (mut a, b) = (cfg(1), cfg(2));
    a.resync_max_rate = 4 << 20;
    a.resync_chunk = 64 << 10;
    a.resync_in_flight = 2;
    let mut w = World::new(a, b);
    w.connect();
    w.n[0].r.promote(w.now, true).unwrap();
    w.advance(Duration::from_secs(2));
    let s = w.n[0].r.status();
    let r = s.resync.clone().expect("resync in progress");
    assert!(r.source);
    assert!(r.done_bytes > 0 && r.done_bytes < r.total_bytes);
    let rate = r.bytes_per_sec as f64 / (4 << 20) as f64;
    assert!(rate > 0.9 && rate < 1.2, "rate {rate} of the 4 MiB/s limit");
    assert!(r.eta_secs.is_some_and(|e| (1..=3).contains(&e)), "{r:?}");
    let text = s.to_string();
    assert!(text.contains("connection:  SyncSource"), "{text}");
    assert!(text.contains("% sending"), "{text}");
    assert!(text.contains("MiB/s, ETA 0:00:0"), "{text}");
    assert!(
        text.contains("disk:        UpToDate/Inconsistent"),
        "{text}"
    );
}

#[test]
fn a_peer_that_answers_pings_but_never_acks_writes_is_expelled() {
    let mut c0 = cfg(1);
    c0.fencing = Fencing::DontCare;
    c0.ping_interval = Duration::from_secs(1);
    let mut w = World::synced_pair(c0, cfg(2));
    // The peer's disk hangs: its writes never complete, but its network side still answers.
    w.n[1].auto_io = false;
    w.write(0, 1, 0, 1, 4096, false);
    assert!(w.n[0].result(1).is_none());
    w.advance(Duration::from_secs(5));
    assert_eq!(
        w.n[0].r.conn(),
        ConnState::Connected,
        "pings keep the link up"
    );
    w.advance(Duration::from_secs(2));
    assert_eq!(
        w.n[0].r.conn(),
        ConnState::WfConnection,
        "expelled after the 6 s ack timeout"
    );
    assert_eq!(w.n[0].result(1), Some(&Ok(())));
    assert_eq!(w.n[0].r.status().out_of_sync_bytes, 4096);
}
