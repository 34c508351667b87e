//! [`ConfigSync`]: the per-node state machine that keeps one cluster.conf on every member.

use crate::wire::{
    split_text, Announce, ChunkKind, ConfSyncMsg, ConfigHash, TextChunk, MAX_TEXT_BYTES,
};
use base::{Instant, NodeId};
use config::{ClusterConf, Diagnostic};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Most queued outgoing messages (an announcement plus two full texts fit many times).
const MAX_OUTBOX: usize = 256;
/// Most queued events; the oldest is dropped (and counted) past it.
const MAX_EVENTS: usize = 256;
/// Most queued actions.
const MAX_ACTIONS: usize = 64;
/// Most members of a configuration (far above cman's limits; bounds memory per ring).
const MAX_MEMBERS: usize = 1024;

/// Identifies a push on the node that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PushTicket(pub u64);

/// Why `quorate config push` was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The file has errors.
    #[error("the new config is not valid:\n{}\nfix it (quorate config validate shows the same) and push again", render(.0))]
    Invalid(Vec<Diagnostic>),
    /// Too big to distribute.
    #[error("the new config is {0} bytes; the cluster distributes at most {MAX_TEXT_BYTES} bytes")]
    TooLarge(usize),
    /// The file is for another cluster.
    #[error("the new config names cluster {new:?} but this cluster is {current:?}; fix <cluster name> in the file")]
    WrongCluster {
        /// Name in the pushed file.
        new: String,
        /// Name in force.
        current: String,
    },
    /// config_version not raised.
    #[error("the new config_version {new} is not greater than the one in force ({current}); raise config_version to at least {} and push again", .current + 1)]
    VersionNotGreater {
        /// Pushed version.
        new: u64,
        /// Highest version in the cluster.
        current: u64,
    },
    /// No quorum.
    #[error("this partition has no quorum: a partition without quorum must not change the config; restore quorum (quorate cman status) and push again")]
    Inquorate,
    /// The membership just changed.
    #[error("the members are still exchanging config versions after a membership change; push again in a few seconds")]
    Syncing,
    /// Another push from this node is in flight.
    #[error("push {0} from this node is still in flight; wait for its outcome")]
    Busy(u64),
}

fn render(d: &[Diagnostic]) -> String {
    d.iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `text` to the config file atomically (see [`crate::files::write_atomic`]),
    /// then apply it to the other layers (an [`Event::Reloaded`] follows).
    WriteConfig {
        /// The whole cluster.conf.
        text: String,
        /// Its config_version.
        version: u64,
        /// Its hash.
        hash: ConfigHash,
    },
}

/// Why the config in force changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReloadCause {
    /// A member pushed it.
    Push {
        /// The pusher.
        from: NodeId,
    },
    /// This node was stale and received the cluster's config from `from`.
    Transfer {
        /// The sender.
        from: NodeId,
    },
    /// The administrator replaced this node's file with the cluster's own.
    LocalFile,
}

/// Outcome of a push, the same on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PushOutcome {
    /// Every member adopted it at the same point of the order.
    Applied {
        /// The new config_version.
        version: u64,
    },
    /// Nobody adopted it.
    Refused {
        /// Why, in words for the administrator.
        reason: String,
    },
}

/// Something that happened, for logs, status and the admin socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The config in force changed (after [`Action::WriteConfig`], or by [`ReloadCause::LocalFile`]).
    Reloaded {
        /// Old config_version.
        from: u64,
        /// New config_version.
        to: u64,
        /// What changed, one line per change (`config diff` format).
        changes: Vec<String>,
        /// Why.
        cause: ReloadCause,
    },
    /// The members agreed on the cluster's config for this membership.
    Synced {
        /// The ring.
        ring: u64,
        /// The cluster's config_version.
        version: u64,
        /// Its hash.
        hash: ConfigHash,
        /// Members that will receive it.
        stale: Vec<NodeId>,
        /// Members refused because they hold a newer or conflicting config.
        refused: Vec<NodeId>,
    },
    /// A member joined with a newer config than the quorate cluster's and was refused.
    RefusedNewer {
        /// The member.
        node: NodeId,
        /// Its version.
        version: u64,
        /// The cluster's.
        cluster_version: u64,
        /// What to do.
        message: String,
    },
    /// A member joined with the cluster's version number but other content.
    RefusedConflict {
        /// The member.
        node: NodeId,
        /// The version both claim.
        version: u64,
        /// What to do.
        message: String,
    },
    /// Members that all have a claim hold different texts under the newest version:
    /// nobody changes until an administrator pushes a higher version.
    Conflict {
        /// The disputed version.
        version: u64,
        /// Who holds which text.
        holders: Vec<(NodeId, ConfigHash)>,
        /// What to do.
        message: String,
    },
    /// A transferred text failed its checks and was not adopted.
    TransferRejected {
        /// The sender.
        from: NodeId,
        /// The version it claimed.
        version: u64,
        /// Why.
        reason: String,
    },
    /// A push was decided (on every member; `mine` on the pusher, whose ticket resolves).
    PushResult {
        /// The pusher.
        from: NodeId,
        /// Its ticket.
        ticket: PushTicket,
        /// True on the pusher.
        mine: bool,
        /// Applied or refused.
        outcome: PushOutcome,
    },
    /// The driver could not write an adopted config to disk (this node runs it anyway).
    WriteFailed {
        /// The version that could not be written.
        version: u64,
        /// What to do.
        message: String,
    },
    /// The on-disk file differs from the config in force.
    Drift {
        /// What to do.
        message: String,
    },
}

/// Where the current membership is in agreeing on a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No membership yet.
    Starting,
    /// Waiting for every member's announcement.
    Collecting,
    /// All announced, but the partition has no quorum: nothing changes.
    WaitingForQuorum,
    /// The cluster's config is decided.
    Synced,
    /// Equal versions with different texts: nobody changes.
    Conflict,
}

/// A member's standing against the cluster's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Not announced yet in this membership.
    Unknown,
    /// Announced; no decision yet.
    Announced,
    /// Runs the cluster's config.
    InSync,
    /// Older; receiving the cluster's config.
    Stale,
    /// The transfer to it failed its checks.
    TransferFailed,
    /// Newer than the quorate cluster: refused.
    RefusedNewer,
    /// Same version, other content: refused.
    RefusedConflict,
    /// Part of a conflict between claims.
    Conflict,
}

/// One member in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The node.
    pub node: NodeId,
    /// Announced config_version.
    pub version: Option<u64>,
    /// Announced hash.
    pub hash: Option<ConfigHash>,
    /// Its standing.
    pub state: MemberState,
}

/// Hand edit of the on-disk file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// config_version in the file (None when it does not parse).
    pub on_disk_version: Option<u64>,
    /// Hash of the file.
    pub on_disk_hash: ConfigHash,
    /// What to do.
    pub message: String,
}

/// The last change of the config in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastReload {
    /// When (the driver's clock).
    pub at: Instant,
    /// Old version.
    pub from: u64,
    /// New version.
    pub to: u64,
    /// Why.
    pub cause: ReloadCause,
}

/// A snapshot for `quorate config status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// This node.
    pub node: NodeId,
    /// Current ring.
    pub ring: Option<u64>,
    /// config_version in force on this node.
    pub version: u64,
    /// Hash of the text in force.
    pub hash: ConfigHash,
    /// The cluster's config_version as decided in this membership (None until decided).
    pub cluster_version: Option<u64>,
    /// True when this node runs the config the quorate cluster agreed on in this membership.
    pub in_sync: bool,
    /// Progress of the current membership.
    pub phase: Phase,
    /// Whether the local quorum view is quorate.
    pub quorate: bool,
    /// Every member.
    pub members: Vec<MemberStatus>,
    /// A hand edit of the file, if any.
    pub drift: Option<Drift>,
    /// The last reload.
    pub last_reload: Option<LastReload>,
    /// The last problem (refusal, conflict, rejected transfer), for the admin.
    pub problem: Option<String>,
    /// Messages ignored (other ring, not a member, out-of-order chunk).
    pub ignored_messages: u64,
    /// Events dropped because nobody drained them.
    pub dropped_events: u64,
}

#[derive(Debug, Clone)]
struct Member {
    ann: Option<Announce>,
    state: MemberState,
}

#[derive(Debug)]
struct Assembly {
    kind: ChunkKind,
    version: u64,
    hash: ConfigHash,
    total_len: u32,
    count: u16,
    next: u16,
    buf: Vec<u8>,
}

/// One node's config distribution core.
///
/// Every member feeds it the same totem-ordered inputs ([`handle_membership`],
/// [`handle_message`]) and, right after each ordered input handed to the quorum core,
/// [`handle_quorum`] with the quorum core's *settled* view (quorate and not in its sync
/// phase), so every member sees quorum change at the same point of the order. Decisions
/// depend only on that ordered stream, so all members decide alike. (A transfer is
/// planned from the announcements alone, so a member whose quorum view arrives later
/// still collects the text.)
///
/// Rules, per membership: every member announces (version, hash, agreed); once all have
/// announced and the partition is quorate, the newest version among members whose config
/// was *agreed* by an earlier quorate partition wins (among all members on a cold start);
/// two texts under that version are a conflict and nobody changes. Older members receive
/// the text from the lowest-numbered holder; unagreed members with a newer or conflicting
/// config are refused and keep their own file. A push is adopted by every member at the
/// point of the order where its last chunk is delivered, if the partition is quorate and
/// its version is greater than any member's.
///
/// Recommended driver behaviour for a refused node: stay in the ring (its votes keep
/// counting toward quorum, so the cluster does not split), report "not in sync" in
/// status, and take no part in service placement or recovery until it is in sync.
///
/// The core has no timers: everything is driven by the ordered inputs.
///
/// [`handle_membership`]: ConfigSync::handle_membership
/// [`handle_message`]: ConfigSync::handle_message
/// [`handle_quorum`]: ConfigSync::handle_quorum
#[derive(Debug)]
pub struct ConfigSync {
    me: NodeId,
    name: String,
    text: String,
    conf: ClusterConf,
    hash: ConfigHash,
    agreed: bool,
    quorate: bool,
    ring: Option<u64>,
    phase: Phase,
    members: BTreeMap<NodeId, Member>,
    cluster: Option<(u64, ConfigHash)>,
    /// The transfer this membership expects: sender, version, hash (fixed once all announced).
    transfer: Option<(NodeId, u64, ConfigHash)>,
    /// A transfer that completed before this node's quorum view allowed a decision.
    early: Option<(NodeId, Assembly, Checked)>,
    /// Announcements that arrived after the set was complete, before this node decided.
    late_anns: BTreeMap<NodeId, Announce>,
    assemblies: BTreeMap<(NodeId, bool), Assembly>,
    next_ticket: u64,
    pending: Option<(PushTicket, u64)>,
    drift: Option<Drift>,
    last_reload: Option<LastReload>,
    problem: Option<String>,
    ignored: u64,
    dropped_events: u64,
    outbox: VecDeque<ConfSyncMsg>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

/// The config this node starts with is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// It has errors.
    #[error("the config in force is not valid:\n{}", render(.0))]
    Invalid(Vec<Diagnostic>),
    /// Too big to distribute.
    #[error(
        "the config in force is {0} bytes; the cluster distributes at most {MAX_TEXT_BYTES} bytes"
    )]
    TooLarge(usize),
}

/// A reassembled text after its checks: the text and its model, or why it was rejected.
type Checked = Result<(String, ClusterConf), String>;
/// The winning (version, hash) and its lowest-numbered holder.
type Winner = (u64, ConfigHash, NodeId);

fn parse_checked(text: &str) -> Result<ClusterConf, Vec<Diagnostic>> {
    let p = config::parse("cluster.conf", text);
    match p.config {
        Some(c) => Ok(c),
        None => Err(p.diagnostics),
    }
}

impl ConfigSync {
    /// A core for node `me` running `text` (the file it started with).
    pub fn new(me: NodeId, text: String) -> Result<Self, StartError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(StartError::TooLarge(text.len()));
        }
        let conf = parse_checked(&text).map_err(StartError::Invalid)?;
        let name = conf
            .nodes
            .iter()
            .find(|n| n.nodeid == me.0)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("node {me}"));
        Ok(ConfigSync {
            me,
            name,
            hash: ConfigHash::of(text.as_bytes()),
            text,
            conf,
            agreed: false,
            quorate: false,
            ring: None,
            phase: Phase::Starting,
            members: BTreeMap::new(),
            cluster: None,
            transfer: None,
            early: None,
            late_anns: BTreeMap::new(),
            assemblies: BTreeMap::new(),
            next_ticket: 1,
            pending: None,
            drift: None,
            last_reload: None,
            problem: None,
            ignored: 0,
            dropped_events: 0,
            outbox: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The config in force.
    pub fn config(&self) -> &ClusterConf {
        &self.conf
    }

    /// The text in force.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when this node runs the config the quorate cluster agreed on in this membership.
    pub fn in_sync(&self) -> bool {
        self.phase == Phase::Synced
            && self.cluster == Some((self.conf.config_version, self.hash))
            && self.members.get(&self.me).map(|m| m.state) == Some(MemberState::InSync)
    }

    /// A new regular configuration: `members` of ring `ring` (`joined` are the newcomers).
    pub fn handle_membership(
        &mut self,
        now: Instant,
        ring: u64,
        members: &[NodeId],
        joined: &[NodeId],
    ) {
        tracing::debug!(ring, ?members, ?joined, "config sync: new membership");
        if members.len() > MAX_MEMBERS {
            self.ignored += 1;
            tracing::error!(
                members = members.len(),
                "membership larger than {MAX_MEMBERS} nodes ignored"
            );
            return;
        }
        if let Some((ticket, version)) = self.pending.take() {
            self.emit(Event::PushResult {
                from: self.me,
                ticket,
                mine: true,
                outcome: PushOutcome::Refused {
                    reason: format!(
                        "the membership changed before push of config_version {version} was delivered; \
                         nothing was applied; run quorate config push again"
                    ),
                },
            });
        }
        self.ring = Some(ring);
        self.members = members
            .iter()
            .map(|n| {
                (
                    *n,
                    Member {
                        ann: None,
                        state: MemberState::Unknown,
                    },
                )
            })
            .collect();
        self.assemblies.clear();
        self.transfer = None;
        self.early = None;
        self.late_anns.clear();
        self.cluster = None;
        self.outbox.clear();
        if !self.members.contains_key(&self.me) {
            self.phase = Phase::Starting;
            return;
        }
        self.phase = Phase::Collecting;
        self.send(ConfSyncMsg::Announce(Announce {
            ring,
            version: self.conf.config_version,
            hash: self.hash,
            agreed: self.agreed,
        }));
        let _ = now;
    }

    /// The quorum core's settled view (`quorate && !syncing`), fed right after every
    /// ordered input given to the quorum core (membership and each quorum message).
    pub fn handle_quorum(&mut self, now: Instant, quorate: bool) {
        self.quorate = quorate;
        if quorate && self.phase == Phase::WaitingForQuorum {
            self.decide(now);
        }
    }

    /// A message delivered in agreed order from `from`.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: ConfSyncMsg) {
        match msg {
            ConfSyncMsg::Announce(a) => self.on_announce(now, from, a),
            ConfSyncMsg::Chunk(c) => self.on_chunk(now, from, c),
        }
    }

    /// `quorate config push`: validate `text` and multicast it. The ticket resolves with
    /// [`Event::PushResult`] (`mine: true`) when the push is delivered.
    pub fn push(&mut self, now: Instant, text: String) -> Result<PushTicket, PushError> {
        let _ = now;
        if text.len() > MAX_TEXT_BYTES {
            return Err(PushError::TooLarge(text.len()));
        }
        let conf = parse_checked(&text).map_err(PushError::Invalid)?;
        if conf.name != self.conf.name {
            return Err(PushError::WrongCluster {
                new: conf.name,
                current: self.conf.name.clone(),
            });
        }
        let highest = self.highest_known();
        if conf.config_version <= highest {
            return Err(PushError::VersionNotGreater {
                new: conf.config_version,
                current: highest,
            });
        }
        if !self.quorate {
            return Err(PushError::Inquorate);
        }
        if !matches!(self.phase, Phase::Synced | Phase::Conflict) {
            return Err(PushError::Syncing);
        }
        if let Some((t, _)) = self.pending {
            return Err(PushError::Busy(t.0));
        }
        let ring = self.ring.unwrap_or(0);
        let ticket = PushTicket(self.next_ticket);
        self.next_ticket += 1;
        let hash = ConfigHash::of(text.as_bytes());
        for c in split_text(
            ring,
            ChunkKind::Push { ticket: ticket.0 },
            conf.config_version,
            hash,
            text.as_bytes(),
        ) {
            self.send(ConfSyncMsg::Chunk(c));
        }
        self.pending = Some((ticket, conf.config_version));
        Ok(ticket)
    }

    /// The driver read the on-disk file (it polls every few seconds, see
    /// [`crate::files::check_drift`]). Reports a hand edit once per distinct content;
    /// a refused node whose file was replaced by the cluster's own adopts it.
    pub fn handle_local_file(&mut self, now: Instant, text: &str) {
        let h = ConfigHash::of(text.as_bytes());
        if h == self.hash {
            self.drift = None;
            if self
                .problem
                .as_deref()
                .is_some_and(|p| p.starts_with("cannot write"))
            {
                self.problem = None;
            }
            return;
        }
        if self.drift.as_ref().map(|d| d.on_disk_hash) == Some(h) {
            return;
        }
        let parsed = parse_checked(text).ok();
        // The administrator copied the cluster's file onto a refused or stale node.
        if let (Some(conf), Some((cv, ch)), Some(ring)) = (&parsed, self.cluster, self.ring) {
            if self.phase == Phase::Synced && h == ch && conf.config_version == cv {
                let conf = conf.clone();
                self.adopt(now, text.to_string(), conf, ReloadCause::LocalFile, false);
                self.agreed = true;
                self.drift = None;
                self.send(ConfSyncMsg::Announce(Announce {
                    ring,
                    version: cv,
                    hash: ch,
                    agreed: true,
                }));
                return;
            }
        }
        let cluster_version = self
            .cluster
            .map(|c| c.0)
            .unwrap_or(self.conf.config_version);
        let message = match &parsed {
            Some(c) if c.config_version == cluster_version => format!(
                "hand edit on {}: the on-disk file has config_version {} like the cluster's, \
                 but different content; raise config_version and push it with quorate config push, or revert it",
                self.name, c.config_version
            ),
            Some(c) => format!(
                "hand edit on {}: on-disk config_version {} differs from the cluster's {}; \
                 push it with quorate config push or revert it",
                self.name, c.config_version, cluster_version
            ),
            None => format!(
                "hand edit on {}: the on-disk file is not a valid cluster.conf (quorate config validate \
                 shows why) and differs from the cluster's config_version {}; revert it",
                self.name, cluster_version
            ),
        };
        tracing::warn!("{message}");
        self.drift = Some(Drift {
            on_disk_version: parsed.map(|c| c.config_version),
            on_disk_hash: h,
            message: message.clone(),
        });
        self.emit(Event::Drift { message });
    }

    /// The driver could not carry out [`Action::WriteConfig`] for `version` (`error` is
    /// the I/O error). The node keeps running the adopted config; status shows the problem
    /// until a later write or drift poll finds the file right.
    pub fn handle_write_failed(&mut self, now: Instant, version: u64, error: &str) {
        let _ = now;
        let message = format!(
            "cannot write config_version {version} to disk on {}: {error}; this node runs it \
             from memory and would start with the old file: fix the disk or the permissions, \
             then copy the cluster's file there (quorate config show) or push a new version",
            self.name
        );
        tracing::error!("{message}");
        self.problem = Some(message.clone());
        self.emit(Event::WriteFailed { version, message });
    }

    /// The next message to multicast (the driver prepends its layer tag to `encode()`).
    pub fn poll_message(&mut self) -> Option<ConfSyncMsg> {
        self.outbox.pop_front()
    }

    /// The next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A snapshot for status.
    pub fn status(&self) -> Status {
        Status {
            node: self.me,
            ring: self.ring,
            version: self.conf.config_version,
            hash: self.hash,
            cluster_version: self.cluster.map(|c| c.0),
            in_sync: self.in_sync(),
            phase: self.phase,
            quorate: self.quorate,
            members: self
                .members
                .iter()
                .map(|(n, m)| MemberStatus {
                    node: *n,
                    version: m.ann.map(|a| a.version),
                    hash: m.ann.map(|a| a.hash),
                    state: m.state,
                })
                .collect(),
            drift: self.drift.clone(),
            last_reload: self.last_reload.clone(),
            problem: self.problem.clone(),
            ignored_messages: self.ignored,
            dropped_events: self.dropped_events,
        }
    }

    // ---- internals ----

    fn highest_known(&self) -> u64 {
        let members = self
            .members
            .values()
            .filter_map(|m| m.ann.map(|a| a.version));
        members
            .chain(self.cluster.map(|c| c.0))
            .chain(std::iter::once(self.conf.config_version))
            .max()
            .unwrap_or(0)
    }

    fn send(&mut self, m: ConfSyncMsg) {
        if self.outbox.len() >= MAX_OUTBOX {
            self.ignored += 1;
            tracing::warn!("config sync outbox full; message dropped");
            return;
        }
        self.outbox.push_back(m);
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(e);
    }

    fn act(&mut self, a: Action) {
        if self.actions.len() >= MAX_ACTIONS {
            // A newer WriteConfig supersedes an older one; keep the newest.
            self.actions.pop_front();
        }
        self.actions.push_back(a);
    }

    fn ignore(&mut self, why: &str, from: NodeId) {
        self.ignored += 1;
        tracing::debug!(from = from.0, why, "config sync message ignored");
    }

    fn on_announce(&mut self, now: Instant, from: NodeId, a: Announce) {
        if Some(a.ring) != self.ring {
            return self.ignore("announce for another ring", from);
        }
        let Some(m) = self.members.get_mut(&from) else {
            return self.ignore("announce from a non-member", from);
        };
        match self.phase {
            Phase::Collecting | Phase::Starting => {
                m.ann = Some(a);
                m.state = MemberState::Announced;
                if self.phase == Phase::Collecting && self.members.values().all(|m| m.ann.is_some())
                {
                    self.transfer = self.plan_transfer();
                    if self.quorate {
                        self.decide(now);
                    } else {
                        self.phase = Phase::WaitingForQuorum;
                    }
                }
            }
            // The announcements are frozen for the decision this node has yet to make
            // (others may have made it already); apply the newcomer after it.
            Phase::WaitingForQuorum => {
                self.late_anns.insert(from, a);
            }
            // A late announcement (a refused node adopted the cluster's file).
            Phase::Synced | Phase::Conflict => self.apply_late_announce(from, a),
        }
    }

    /// Only "I now run the cluster's config" is news after the decision; anything else
    /// was overtaken by a push every member has since adopted, and is ignored.
    fn apply_late_announce(&mut self, from: NodeId, a: Announce) {
        if self.cluster != Some((a.version, a.hash)) {
            return self.ignore("late announcement overtaken", from);
        }
        if let Some(m) = self.members.get_mut(&from) {
            m.ann = Some(a);
            m.state = MemberState::InSync;
        }
    }

    /// The winner among the announcements: Ok((version, hash, lowest holder)) or the
    /// conflicting holders. A pure function of the ordered announcements.
    fn winner(&self) -> Option<Result<Winner, Vec<(NodeId, ConfigHash)>>> {
        let anns: Vec<(NodeId, Announce)> = self
            .members
            .iter()
            .filter_map(|(n, m)| m.ann.map(|a| (*n, a)))
            .collect();
        let any_agreed = anns.iter().any(|(_, a)| a.agreed);
        let candidates: Vec<&(NodeId, Announce)> = anns
            .iter()
            .filter(|(_, a)| a.agreed || !any_agreed)
            .collect();
        let top = candidates.iter().map(|(_, a)| a.version).max()?;
        let holders: Vec<(NodeId, ConfigHash)> = candidates
            .iter()
            .filter(|(_, a)| a.version == top)
            .map(|(n, a)| (*n, a.hash))
            .collect();
        let (sender, first) = holders[0];
        if holders.iter().any(|(_, h)| *h != first) {
            return Some(Err(holders));
        }
        Some(Ok((top, first, sender)))
    }

    /// Which transfer the members expect once all announced (whatever each one's quorum
    /// view at that point: a joining node may learn quorum later than the old members,
    /// and must not miss the text the sender sends meanwhile).
    fn plan_transfer(&self) -> Option<(NodeId, u64, ConfigHash)> {
        let (top, hash, sender) = self.winner()?.ok()?;
        let any_stale = self
            .members
            .values()
            .any(|m| m.ann.is_some_and(|a| a.version < top));
        any_stale.then_some((sender, top, hash))
    }

    /// All members announced and the partition is quorate: pick the cluster's config.
    fn decide(&mut self, now: Instant) {
        self.decide_frozen(now);
        for (from, a) in std::mem::take(&mut self.late_anns) {
            self.apply_late_announce(from, a);
        }
    }

    fn decide_frozen(&mut self, now: Instant) {
        let anns: Vec<(NodeId, Announce)> = self
            .members
            .iter()
            .filter_map(|(n, m)| m.ann.map(|a| (*n, a)))
            .collect();
        let (top, first, sender) = match self.winner() {
            None => return,
            Some(Ok(w)) => w,
            Some(Err(holders)) => {
                let top = holders
                    .first()
                    .and_then(|(n, _)| self.members.get(n))
                    .and_then(|m| m.ann)
                    .map_or(0, |a| a.version);
                self.phase = Phase::Conflict;
                for (n, _) in &holders {
                    if let Some(m) = self.members.get_mut(n) {
                        m.state = MemberState::Conflict;
                    }
                }
                let list = holders
                    .iter()
                    .map(|(n, h)| format!("node {n} has {}", h.short()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = format!(
                    "CONFIG CONFLICT: members hold different files under config_version {top} ({list}); \
                     every node keeps running its own config and nothing is changed. Pick the right file, \
                     set config_version to {} and push it with quorate config push from a quorate node",
                    top + 1
                );
                tracing::error!("{message}");
                self.problem = Some(message.clone());
                self.emit(Event::Conflict {
                    version: top,
                    holders,
                    message,
                });
                return;
            }
        };
        let winner = (top, first);
        self.cluster = Some(winner);
        self.phase = Phase::Synced;
        let mut stale = Vec::new();
        let mut refused = Vec::new();
        let mut refusal_events = Vec::new();
        for (n, a) in &anns {
            let state = if (a.version, a.hash) == winner {
                MemberState::InSync
            } else if a.version < top {
                MemberState::Stale
            } else if a.version > top {
                MemberState::RefusedNewer
            } else {
                MemberState::RefusedConflict
            };
            if let Some(m) = self.members.get_mut(n) {
                m.state = state;
            }
            let who = if *n == self.me {
                format!("this node ({})", self.name)
            } else {
                format!("node {n}")
            };
            match state {
                MemberState::Stale => stale.push(*n),
                MemberState::RefusedNewer => {
                    refused.push(*n);
                    refusal_events.push(Event::RefusedNewer {
                        node: *n,
                        version: a.version,
                        cluster_version: top,
                        message: format!(
                            "{who} has config_version {} but the quorate cluster runs {top}: it will not \
                             override the cluster; push version {} from a quorate node, or replace {} file",
                            a.version,
                            a.version + 1,
                            if *n == self.me { "this node's".to_string() } else { format!("node {n}'s") }
                        ),
                    });
                }
                MemberState::RefusedConflict => {
                    refused.push(*n);
                    refusal_events.push(Event::RefusedConflict {
                        node: *n,
                        version: top,
                        message: format!(
                            "{who} has config_version {top} like the quorate cluster but different content: \
                             it will not override the cluster; push version {} from a quorate node, or \
                             replace {} file with the cluster's",
                            top + 1,
                            if *n == self.me { "this node's".to_string() } else { format!("node {n}'s") }
                        ),
                    });
                }
                _ => {}
            }
        }
        let ring = self.ring.unwrap_or(0);
        self.emit(Event::Synced {
            ring,
            version: top,
            hash: first,
            stale: stale.clone(),
            refused: refused.clone(),
        });
        for e in refusal_events {
            if let Event::RefusedNewer { message, .. } | Event::RefusedConflict { message, .. } = &e
            {
                tracing::warn!("{message}");
                self.problem = Some(message.clone());
            }
            self.emit(e);
        }
        let my_state = self.members.get(&self.me).map(|m| m.state);
        match my_state {
            Some(MemberState::InSync) => self.agreed = true,
            Some(MemberState::RefusedNewer | MemberState::RefusedConflict) => self.agreed = false,
            _ => {}
        }
        if !stale.is_empty() && sender == self.me {
            for c in split_text(ring, ChunkKind::Transfer, top, first, self.text.as_bytes()) {
                self.send(ConfSyncMsg::Chunk(c));
            }
        }
        if let Some((from, a, checked)) = self.early.take() {
            self.on_transfer(now, from, a, checked);
        }
    }

    fn on_chunk(&mut self, now: Instant, from: NodeId, c: TextChunk) {
        if Some(c.ring) != self.ring {
            return self.ignore("chunk for another ring", from);
        }
        if !self.members.contains_key(&from) {
            return self.ignore("chunk from a non-member", from);
        }
        let is_push = matches!(c.kind, ChunkKind::Push { .. });
        if !is_push {
            let expected = self.transfer == Some((from, c.version, c.hash))
                && matches!(self.phase, Phase::Synced | Phase::WaitingForQuorum);
            if !expected {
                return self.ignore("transfer not expected", from);
            }
        }
        let key = (from, is_push);
        if c.index == 0 {
            self.assemblies.insert(
                key,
                Assembly {
                    kind: c.kind,
                    version: c.version,
                    hash: c.hash,
                    total_len: c.total_len,
                    count: c.count,
                    next: 0,
                    buf: Vec::with_capacity(c.total_len as usize),
                },
            );
        }
        let fits = self.assemblies.get(&key).is_some_and(|a| {
            a.kind == c.kind
                && a.version == c.version
                && a.hash == c.hash
                && a.total_len == c.total_len
                && a.count == c.count
                && a.next == c.index
        });
        if !fits {
            self.assemblies.remove(&key);
            return self.ignore("chunk out of sequence", from);
        }
        let done = {
            let Some(a) = self.assemblies.get_mut(&key) else {
                return;
            };
            a.buf.extend_from_slice(&c.data);
            a.next += 1;
            a.next == a.count
        };
        if !done {
            return;
        }
        let Some(a) = self.assemblies.remove(&key) else {
            return;
        };
        let checked = check_text(&a, &self.conf.name);
        match c.kind {
            ChunkKind::Push { ticket } => self.on_push(now, from, PushTicket(ticket), a, checked),
            ChunkKind::Transfer if self.phase == Phase::WaitingForQuorum => {
                self.early = Some((from, a, checked));
            }
            ChunkKind::Transfer => self.on_transfer(now, from, a, checked),
        }
    }

    fn on_transfer(&mut self, now: Instant, from: NodeId, a: Assembly, checked: Checked) {
        self.transfer = None;
        let stale: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Stale)
            .map(|(n, _)| *n)
            .collect();
        match checked {
            Ok((text, conf)) => {
                for n in &stale {
                    if let Some(m) = self.members.get_mut(n) {
                        m.state = MemberState::InSync;
                    }
                }
                if stale.contains(&self.me) {
                    self.adopt(now, text, conf, ReloadCause::Transfer { from }, true);
                    self.agreed = true;
                }
            }
            Err(reason) => {
                for n in &stale {
                    if let Some(m) = self.members.get_mut(n) {
                        m.state = MemberState::TransferFailed;
                    }
                }
                let reason = format!(
                    "config_version {} from node {from} rejected: {reason}; this node keeps its config \
                     and retries on the next membership change",
                    a.version
                );
                tracing::error!("{reason}");
                if stale.contains(&self.me) {
                    self.problem = Some(reason.clone());
                }
                self.emit(Event::TransferRejected {
                    from,
                    version: a.version,
                    reason,
                });
            }
        }
    }

    fn on_push(
        &mut self,
        now: Instant,
        from: NodeId,
        ticket: PushTicket,
        a: Assembly,
        checked: Checked,
    ) {
        let mine = from == self.me && self.pending.map(|p| p.0) == Some(ticket);
        if mine {
            self.pending = None;
        }
        let highest = self
            .members
            .values()
            .filter_map(|m| m.ann.map(|x| x.version))
            .chain(self.cluster.map(|c| c.0))
            .max()
            .unwrap_or(0);
        let verdict = match checked {
            Err(e) => Err(e),
            Ok(_) if !self.quorate => Err(
                "the partition lost quorum before the push was delivered; a partition without quorum \
                 must not change the config"
                    .to_string(),
            ),
            Ok(_) if !matches!(self.phase, Phase::Synced | Phase::Conflict) => Err(
                "the members were still exchanging config versions; push again in a few seconds"
                    .to_string(),
            ),
            Ok(_) if a.version <= highest => Err(format!(
                "config_version {} is not greater than {highest}, which a member already holds \
                 (another push won?); raise it to at least {} and push again",
                a.version,
                highest + 1
            )),
            Ok(v) => Ok(v),
        };
        let outcome = match verdict {
            Ok((text, conf)) => {
                let version = conf.config_version;
                let ring = self.ring.unwrap_or(0);
                self.cluster = Some((version, a.hash));
                self.phase = Phase::Synced;
                self.transfer = None;
                self.early = None;
                self.assemblies.retain(|(_, push), _| *push);
                for m in self.members.values_mut() {
                    m.ann = Some(Announce {
                        ring,
                        version,
                        hash: a.hash,
                        agreed: true,
                    });
                    m.state = MemberState::InSync;
                }
                self.adopt(now, text, conf, ReloadCause::Push { from }, true);
                self.agreed = true;
                self.problem = None;
                PushOutcome::Applied { version }
            }
            Err(reason) => PushOutcome::Refused { reason },
        };
        self.emit(Event::PushResult {
            from,
            ticket,
            mine,
            outcome,
        });
    }

    /// Makes `text` the config in force.
    fn adopt(
        &mut self,
        now: Instant,
        text: String,
        conf: ClusterConf,
        cause: ReloadCause,
        write: bool,
    ) {
        let hash = ConfigHash::of(text.as_bytes());
        if hash == self.hash {
            return;
        }
        let from = self.conf.config_version;
        let to = conf.config_version;
        let changes = match config::diff(&self.conf, &conf) {
            Ok(d) => d.changes.iter().map(|c| c.to_string()).collect(),
            Err(_) => vec![format!("replaced config_version {from} with {to}")],
        };
        if write {
            self.act(Action::WriteConfig {
                text: text.clone(),
                version: to,
                hash,
            });
        }
        self.text = text;
        self.conf = conf;
        self.hash = hash;
        self.drift = None;
        self.last_reload = Some(LastReload {
            at: now,
            from,
            to,
            cause,
        });
        tracing::info!(from, to, "config reloaded");
        self.emit(Event::Reloaded {
            from,
            to,
            changes,
            cause,
        });
    }
}

/// Verifies a reassembled text: length, hash, UTF-8, validity, version and cluster name.
fn check_text(a: &Assembly, cluster_name: &str) -> Checked {
    if a.buf.len() != a.total_len as usize {
        return Err("length does not match".into());
    }
    let h = ConfigHash::of(&a.buf);
    if h != a.hash {
        return Err(format!(
            "hash mismatch: the text hashes to {} but was announced as {}",
            h.short(),
            a.hash.short()
        ));
    }
    let text = String::from_utf8(a.buf.clone()).map_err(|_| "the text is not UTF-8".to_string())?;
    let conf =
        parse_checked(&text).map_err(|d| format!("the text is not valid: {}", render(&d)))?;
    if conf.config_version != a.version {
        return Err(format!(
            "the text has config_version {} but was sent as {}",
            conf.config_version, a.version
        ));
    }
    if conf.name != cluster_name {
        return Err(format!(
            "the text names cluster {:?}, not {cluster_name:?}",
            conf.name
        ));
    }
    Ok((text, conf))
}
