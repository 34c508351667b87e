//! Generation-identifier comparison (DRBD's uuid_compare rules) and after-split-brain policies.

use proptest::prelude::*;
use replica::*;

const NC: CrashFlags = CrashFlags {
    crashed_primary: false,
};
const CR: CrashFlags = CrashFlags {
    crashed_primary: true,
};

fn g(current: u64, bitmap: u64, h0: u64, h1: u64) -> Gen {
    Gen {
        current,
        bitmap,
        history: [h0, h1],
    }
}

fn cmp(a: &Gen, b: &Gen) -> SyncDecision {
    uuid_compare(a, NC, b, NC, true)
}

#[test]
fn decision_table() {
    use SyncDecision::*;
    let fresh = Gen::fresh();
    let x = 0x1000;
    let y = 0x2000;
    let z = 0x3000;
    // Fresh disks.
    assert_eq!(cmp(&fresh, &fresh), BothFresh);
    assert_eq!(cmp(&fresh, &g(x, 0, 0, 0)), FullTarget);
    assert_eq!(cmp(&g(x, 0, 0, 0), &fresh), FullSource);
    // Equal (role bit ignored).
    assert_eq!(cmp(&g(x | 1, 0, 0, 0), &g(x, 0, 0, 0)), NoSync);
    // Primary lost its peer: new current y, bitmap x; peer still at x.
    let pri = g(y | 1, x | 1, 0, 0);
    let sec = g(x, 0, 0, 0);
    assert_eq!(cmp(&pri, &sec), BitmapSource);
    assert_eq!(cmp(&sec, &pri), BitmapTarget);
    // Peer's current is in my history: full sync.
    assert_eq!(cmp(&g(z, 0, y, x), &g(x, 0, 0, 0)), FullSource);
    assert_eq!(cmp(&g(x, 0, 0, 0), &g(z, 0, y, x)), FullTarget);
    // Both diverged from x: split brain with a common ancestor.
    assert_eq!(cmp(&g(y | 1, x | 1, 0, 0), &g(z | 1, x, 0, 0)), SplitBrain);
    // Diverged from different points but share history: unresolvable.
    assert_eq!(
        cmp(&g(y, 0x5000, x, 0), &g(z, 0x6000, x, 0)),
        SplitBrainUnresolvable
    );
    // Nothing in common.
    assert_eq!(cmp(&g(y, 0, 0, 0), &g(z, 0, 0, 0)), UnrelatedData);
    // Equal currents but a crashed primary: its activity log is resynced from it.
    assert_eq!(uuid_compare(&sec, CR, &sec, NC, false), BitmapSource);
    assert_eq!(uuid_compare(&sec, NC, &sec, CR, false), BitmapTarget);
    assert_eq!(uuid_compare(&sec, CR, &sec, CR, true), BitmapSource);
    assert_eq!(uuid_compare(&sec, CR, &sec, CR, false), BitmapTarget);
}

#[test]
fn new_current_and_resync_rotation() {
    let mut a = g(0x1000, 0, 0, 0);
    a.new_current(0x2222, true, true);
    assert_eq!(a.bitmap, 0x1001);
    assert_eq!(a.current, 0x2223);
    // A second new generation keeps the bitmap (still tracking against the peer's data) and
    // leaves the history alone: nobody can hold the dropped 0x2223.
    a.new_current(0x4444, true, true);
    assert_eq!(a.bitmap, 0x1001);
    assert_eq!(a.current, 0x4445);
    assert_eq!(a.history, [0, 0]);
    a.finish_resync_source();
    assert_eq!(a.bitmap, 0);
    assert_eq!(a.history, [0x1001, 0]);
}

/// A peer that keeps losing the link while it is being resynced stays recognisable however often
/// the primary starts a new generation meanwhile (it fell off the history before).
#[test]
fn a_stale_peer_stays_related_through_repeated_new_generations() {
    let mut p = g(0x1000, 0, 0, 0);
    p.new_current(0x2000, true, true);
    p.finish_resync_source();
    // The peer never saw the end of that resync: it still holds 0x1000, now in p's history.
    let stale = g(0x1000, 0, 0, 0);
    for k in 0..10u64 {
        p.new_current(0x3000 + 0x100 * k, true, true);
        let d = uuid_compare(
            &p,
            CrashFlags::default(),
            &stale,
            CrashFlags::default(),
            true,
        );
        assert!(
            matches!(d, SyncDecision::FullSource | SyncDecision::BitmapSource),
            "after {} new generations: {d:?} ({p:?})",
            k + 1
        );
    }
}

fn side(primary: bool, changes: u64, older: bool, victim: bool) -> SbSide {
    SbSide {
        primary,
        changes,
        was_primary_at_split: older,
        discard_my_data: victim,
    }
}

#[test]
fn split_brain_policies() {
    use SbResolution::*;
    let p = |zero, one| SplitBrainPolicy {
        zero,
        one,
        two: AfterSb2Pri::Disconnect,
    };
    let dzc = p(AfterSb0Pri::DiscardZeroChanges, AfterSb1Pri::Disconnect);
    assert_eq!(
        resolve_split_brain(
            &dzc,
            side(false, 0, false, false),
            side(false, 5, false, false),
            true
        ),
        IAmTarget
    );
    assert_eq!(
        resolve_split_brain(
            &dzc,
            side(false, 5, false, false),
            side(false, 0, false, false),
            true
        ),
        IAmSource
    );
    assert_eq!(
        resolve_split_brain(
            &dzc,
            side(false, 5, false, false),
            side(false, 5, false, false),
            true
        ),
        Disconnect
    );
    // Operator's victim overrides policies; two victims is a conflict.
    assert_eq!(
        resolve_split_brain(
            &dzc,
            side(false, 5, false, true),
            side(false, 5, false, false),
            true
        ),
        IAmTarget
    );
    assert_eq!(
        resolve_split_brain(
            &dzc,
            side(false, 5, false, true),
            side(false, 5, false, true),
            true
        ),
        Disconnect
    );
    let dyp = p(AfterSb0Pri::DiscardYoungerPrimary, AfterSb1Pri::Disconnect);
    assert_eq!(
        resolve_split_brain(
            &dyp,
            side(false, 1, true, false),
            side(false, 9, false, false),
            true
        ),
        IAmSource
    );
    assert_eq!(
        resolve_split_brain(
            &dyp,
            side(false, 9, false, false),
            side(false, 1, true, false),
            true
        ),
        IAmTarget
    );
    let dop = p(AfterSb0Pri::DiscardOlderPrimary, AfterSb1Pri::Disconnect);
    assert_eq!(
        resolve_split_brain(
            &dop,
            side(false, 1, true, false),
            side(false, 9, false, false),
            true
        ),
        IAmTarget
    );
    let dlc = p(AfterSb0Pri::DiscardLeastChanges, AfterSb1Pri::Disconnect);
    assert_eq!(
        resolve_split_brain(
            &dlc,
            side(false, 1, false, false),
            side(false, 9, false, false),
            true
        ),
        IAmTarget
    );
    let ds = p(AfterSb0Pri::Disconnect, AfterSb1Pri::DiscardSecondary);
    assert_eq!(
        resolve_split_brain(
            &ds,
            side(true, 1, false, false),
            side(false, 9, false, false),
            true
        ),
        IAmSource
    );
    assert_eq!(
        resolve_split_brain(
            &ds,
            side(false, 1, false, false),
            side(true, 9, false, false),
            true
        ),
        IAmTarget
    );
    let cons = p(AfterSb0Pri::DiscardZeroChanges, AfterSb1Pri::Consensus);
    assert_eq!(
        resolve_split_brain(
            &cons,
            side(true, 3, false, false),
            side(false, 0, false, false),
            true
        ),
        IAmSource
    );
    assert_eq!(
        resolve_split_brain(
            &cons,
            side(true, 3, false, false),
            side(false, 2, false, false),
            true
        ),
        Disconnect
    );
    let two = SplitBrainPolicy::default();
    assert_eq!(
        resolve_split_brain(
            &two,
            side(true, 0, false, false),
            side(true, 0, false, false),
            true
        ),
        Disconnect
    );
}

fn arb_id() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(4u64),
        (1u64..6).prop_map(|x| x << 12 | (x & 1))
    ]
}

fn arb_gen() -> impl Strategy<Value = Gen> {
    (arb_id(), arb_id(), arb_id(), arb_id()).prop_map(|(c, b, h0, h1)| g(c, b, h0, h1))
}

proptest! {
    /// Both nodes must reach mirrored decisions from the same facts, or they would both sync the
    /// same direction (or one would connect while the other refuses).
    #[test]
    fn decisions_are_mirrored(a in arb_gen(), b in arb_gen(), ca in any::<bool>(), cb in any::<bool>()) {
        let fa = CrashFlags { crashed_primary: ca };
        let fb = CrashFlags { crashed_primary: cb };
        prop_assert_eq!(uuid_compare(&a, fa, &b, fb, true), uuid_compare(&b, fb, &a, fa, false).mirror());
    }

    #[test]
    fn split_brain_resolutions_are_mirrored(
        pa in any::<bool>(), pb in any::<bool>(), ca in 0u64..3, cb in 0u64..3,
        oa in any::<bool>(), ob in any::<bool>(), va in any::<bool>(), vb in any::<bool>(),
        z in 0usize..5, o in 0usize..3,
    ) {
        let zero = [AfterSb0Pri::Disconnect, AfterSb0Pri::DiscardYoungerPrimary, AfterSb0Pri::DiscardOlderPrimary,
                    AfterSb0Pri::DiscardZeroChanges, AfterSb0Pri::DiscardLeastChanges][z];
        let one = [AfterSb1Pri::Disconnect, AfterSb1Pri::Consensus, AfterSb1Pri::DiscardSecondary][o];
        let pol = SplitBrainPolicy { zero, one, two: AfterSb2Pri::Disconnect };
        let a = side(pa, ca, oa, va);
        let b = side(pb, cb, ob, vb);
        let ra = resolve_split_brain(&pol, a, b, true);
        let rb = resolve_split_brain(&pol, b, a, false);
        let expect = match ra {
            SbResolution::IAmSource => SbResolution::IAmTarget,
            SbResolution::IAmTarget => SbResolution::IAmSource,
            SbResolution::Disconnect => SbResolution::Disconnect,
        };
        prop_assert_eq!(rb, expect);
    }
}
