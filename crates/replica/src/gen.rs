//! Data generation identifiers (DRBD's UUID set) and the handshake decision built on them.
//!
//! A generation identifier is a random 64-bit value; bit 0 records whether the node was primary when
//! the value was made (DRBD does the same), and is ignored when comparing.

use serde::{Deserialize, Serialize};

/// Current value of a node that was never synced nor promoted (DRBD's `UUID_JUST_CREATED`).
pub const JUST_CREATED: u64 = 4;

/// The generation identifiers of one node's copy of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gen {
    /// Generation of the data now on disk.
    pub current: u64,
    /// Generation the dirty bitmap tracks changes against (0 while connected and in sync).
    pub bitmap: u64,
    /// Two older generations, newest first.
    pub history: [u64; 2],
}

impl Default for Gen {
    fn default() -> Self {
        Gen::fresh()
    }
}

/// Compares two identifiers ignoring the role bit; 0 never matches.
fn same(a: u64, b: u64) -> bool {
    a & !1 == b & !1 && a & !1 != 0
}

impl Gen {
    /// A never-used disk.
    pub fn fresh() -> Self {
        Gen {
            current: JUST_CREATED,
            bitmap: 0,
            history: [0, 0],
        }
    }

    /// True for a disk never synced nor promoted.
    pub fn is_fresh(&self) -> bool {
        self.current & !1 == JUST_CREATED || self.current & !1 == 0
    }

    /// Pushes `v` into the history.
    pub fn push_history(&mut self, v: u64) {
        if v & !1 != 0 {
            self.history[1] = self.history[0];
            self.history[0] = v;
        }
    }

    /// Starts a new generation (promotion while disconnected, or a primary losing its peer):
    /// the old current becomes the bitmap generation (if none is tracked yet) with bit 0 = `was_primary`,
    /// and `fresh_value` (with bit 0 = `primary_now`) becomes current.
    ///
    /// While a bitmap generation is tracked already (the peer has not caught up since), the old
    /// current is dropped, not pushed into the history: no peer can hold it (a peer adopts a
    /// current only when its resync finishes, which ends the tracking), and the bitmap still
    /// covers every change since the tracked generation. Pushing it would let a peer that keeps
    /// losing the link mid-resync fall off the two-deep history and look unrelated.
    pub fn new_current(&mut self, fresh_value: u64, was_primary: bool, primary_now: bool) {
        if self.bitmap == 0 {
            self.bitmap = (self.current & !1) | was_primary as u64;
        }
        let mut v = fresh_value & !1;
        if v == 0 || v == JUST_CREATED {
            v = 0x1000;
        }
        self.current = v | primary_now as u64;
    }

    /// Resync finished on the source: the bitmap generation moves into history and tracking stops.
    pub fn finish_resync_source(&mut self) {
        let b = self.bitmap;
        self.push_history(b);
        self.bitmap = 0;
    }
}

/// What the handshake decided, seen from the local node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncDecision {
    /// Same data generation: nothing to sync.
    NoSync,
    /// Both disks are fresh: nothing happens until an operator forces one side primary (initial sync).
    BothFresh,
    /// The peer's bitmap tracks my current: I send the blocks marked in the merged bitmaps.
    BitmapSource,
    /// Mirror of `BitmapSource`: I receive.
    BitmapTarget,
    /// The peer's data is an ancestor of mine (or fresh): I send everything.
    FullSource,
    /// Mirror of `FullSource`: I receive everything.
    FullTarget,
    /// Both sides changed since a common generation: after-split-brain policies decide.
    SplitBrain,
    /// Both sides changed and the bitmaps do not share the divergence point: manual resolution only.
    SplitBrainUnresolvable,
    /// No common history at all: refuse to connect.
    UnrelatedData,
}

impl SyncDecision {
    /// The decision the peer computes from the same two identifier sets.
    pub fn mirror(self) -> Self {
        use SyncDecision::*;
        match self {
            BitmapSource => BitmapTarget,
            BitmapTarget => BitmapSource,
            FullSource => FullTarget,
            FullTarget => FullSource,
            other => other,
        }
    }
}

/// Crash information that changes the decision when the currents are equal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashFlags {
    /// This node was primary and did not shut down cleanly: its activity-log extents may differ.
    pub crashed_primary: bool,
}

/// DRBD's `uuid_compare` rules, seen from `me`. `tie_me_first` breaks the case where both sides
/// crashed as primary (the caller passes a value both nodes agree on, e.g. lower node id wins).
pub fn uuid_compare(
    me: &Gen,
    my_crash: CrashFlags,
    peer: &Gen,
    peer_crash: CrashFlags,
    tie_me_first: bool,
) -> SyncDecision {
    use SyncDecision::*;
    match (me.is_fresh(), peer.is_fresh()) {
        (true, true) => return BothFresh,
        (true, false) => return FullTarget,
        (false, true) => return FullSource,
        _ => {}
    }
    if same(me.current, peer.current) {
        // Equal data generations; only a crashed primary's hot extents may differ.
        return match (my_crash.crashed_primary, peer_crash.crashed_primary) {
            (true, false) => BitmapSource,
            (false, true) => BitmapTarget,
            (true, true) if tie_me_first => BitmapSource,
            (true, true) => BitmapTarget,
            (false, false) => NoSync,
        };
    }
    if peer.bitmap != 0 && same(me.current, peer.bitmap) && me.bitmap == 0 {
        return BitmapTarget;
    }
    if me.bitmap != 0 && same(me.bitmap, peer.current) && peer.bitmap == 0 {
        return BitmapSource;
    }
    let mine_is_old = peer.history.iter().any(|h| same(me.current, *h));
    let peer_is_old = me.history.iter().any(|h| same(peer.current, *h));
    match (mine_is_old, peer_is_old) {
        (true, false) => return FullTarget,
        (false, true) => return FullSource,
        // Each is an ancestor of the other: impossible unless metadata was tampered with.
        (true, true) => return SplitBrainUnresolvable,
        _ => {}
    }
    if same(me.bitmap, peer.bitmap) {
        return SplitBrain;
    }
    // My current equal to the peer's bitmap while I track changes too (or mirror): both diverged
    // after the same generation but we cannot tell who started later.
    if same(me.current, peer.bitmap) || same(me.bitmap, peer.current) {
        return SplitBrain;
    }
    let mine = [me.bitmap, me.history[0], me.history[1]];
    let theirs = [peer.bitmap, peer.history[0], peer.history[1]];
    if mine.iter().any(|a| theirs.iter().any(|b| same(*a, *b))) {
        return SplitBrainUnresolvable;
    }
    UnrelatedData
}

/// after-sb-0pri: neither side is primary now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterSb0Pri {
    /// Stop and wait for the operator.
    Disconnect,
    /// Keep the side that became primary first (its bitmap generation carries the primary bit).
    DiscardYoungerPrimary,
    /// Keep the side that became primary last.
    DiscardOlderPrimary,
    /// If exactly one side wrote nothing, it becomes the target; otherwise disconnect.
    DiscardZeroChanges,
    /// The side with fewer changed blocks becomes the target.
    DiscardLeastChanges,
}

/// after-sb-1pri: exactly one side is primary now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterSb1Pri {
    /// Stop and wait for the operator.
    Disconnect,
    /// Discard the secondary only if the 0pri policy would also discard it.
    Consensus,
    /// The secondary always becomes the target.
    DiscardSecondary,
}

/// after-sb-2pri: both sides are primary now (only `Disconnect` is safe without a cluster FS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterSb2Pri {
    /// Stop and wait for the operator.
    Disconnect,
}

/// The three after-split-brain policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBrainPolicy {
    /// Neither primary.
    pub zero: AfterSb0Pri,
    /// One primary.
    pub one: AfterSb1Pri,
    /// Both primary.
    pub two: AfterSb2Pri,
}

impl Default for SplitBrainPolicy {
    /// The tutorial's settings: discard-zero-changes, discard-secondary, disconnect.
    fn default() -> Self {
        SplitBrainPolicy {
            zero: AfterSb0Pri::DiscardZeroChanges,
            one: AfterSb1Pri::DiscardSecondary,
            two: AfterSb2Pri::Disconnect,
        }
    }
}

/// One side's facts for split-brain resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbSide {
    /// Primary right now.
    pub primary: bool,
    /// Blocks changed since the divergence (set bits in the bitmap).
    pub changes: u64,
    /// Bit 0 of the bitmap generation: was primary when the divergence started (the older primary).
    pub was_primary_at_split: bool,
    /// Operator chose this side as the victim (`discard-my-data`).
    pub discard_my_data: bool,
}

/// How a split brain is resolved, seen from the local node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SbResolution {
    /// My changes survive; the peer becomes sync target (bitmap-based).
    IAmSource,
    /// My changes are discarded; I become sync target.
    IAmTarget,
    /// Nobody decides: disconnect and wait for the operator.
    Disconnect,
}

/// Applies the operator's victim choice, then the after-split-brain policies. `tie_me_first` is the
/// agreed tie-breaker (both sides must compute mirrored answers).
pub fn resolve_split_brain(
    policy: &SplitBrainPolicy,
    me: SbSide,
    peer: SbSide,
    tie_me_first: bool,
) -> SbResolution {
    use SbResolution::*;
    match (me.discard_my_data, peer.discard_my_data) {
        (true, false) => return IAmTarget,
        (false, true) => return IAmSource,
        (true, true) => return Disconnect,
        _ => {}
    }
    let zero = |p: AfterSb0Pri| -> SbResolution {
        let least = || match me.changes.cmp(&peer.changes) {
            std::cmp::Ordering::Less => IAmTarget,
            std::cmp::Ordering::Greater => IAmSource,
            std::cmp::Ordering::Equal if tie_me_first => IAmSource,
            std::cmp::Ordering::Equal => IAmTarget,
        };
        match p {
            AfterSb0Pri::Disconnect => Disconnect,
            AfterSb0Pri::DiscardZeroChanges => match (me.changes, peer.changes) {
                (0, 0) if tie_me_first => IAmSource,
                (0, 0) => IAmTarget,
                (0, _) => IAmTarget,
                (_, 0) => IAmSource,
                _ => Disconnect,
            },
            AfterSb0Pri::DiscardLeastChanges => least(),
            AfterSb0Pri::DiscardYoungerPrimary | AfterSb0Pri::DiscardOlderPrimary => {
                let keep_older = p == AfterSb0Pri::DiscardYoungerPrimary;
                match (me.was_primary_at_split, peer.was_primary_at_split) {
                    (true, false) if keep_older => IAmSource,
                    (false, true) if keep_older => IAmTarget,
                    (true, false) => IAmTarget,
                    (false, true) => IAmSource,
                    _ => least(),
                }
            }
        }
    };
    match (me.primary, peer.primary) {
        (false, false) => zero(policy.zero),
        (true, true) => match policy.two {
            AfterSb2Pri::Disconnect => Disconnect,
        },
        (i_am_primary, _) => match policy.one {
            AfterSb1Pri::Disconnect => Disconnect,
            AfterSb1Pri::DiscardSecondary => {
                if i_am_primary {
                    IAmSource
                } else {
                    IAmTarget
                }
            }
            AfterSb1Pri::Consensus => {
                let r = zero(policy.zero);
                match (i_am_primary, r) {
                    (true, IAmSource) => IAmSource,
                    (false, IAmTarget) => IAmTarget,
                    _ => Disconnect,
                }
            }
        },
    }
}
