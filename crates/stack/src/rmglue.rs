//! The resource manager's replica on this node, and how replicas stay equal.
//!
//! Every node runs an [`rm::Scheduler`] and feeds it the same inputs in the
//! same order: everything that changes placement travels through totem as an
//! [`RmMsg::Input`] stamped by its sender, and membership and quorum changes
//! are applied at the point of the ordered stream where totem and the vote
//! core delivered them.
//!
//! # Time
//! The scheduler's clock is the *agreed* time: the sender's wall clock (ns
//! since the Unix epoch) carried in each message, made monotonic by taking the
//! maximum with the previous agreed time. Every replica sees the same stamps in
//! the same order, so every replica computes the same times. Restart windows
//! (`restart_expire_time`) are therefore wall-clock durations, as rgmanager's.
//!
//! # State transfer
//! Nodes that were apart have diverged (a restarted node knows nothing; a
//! partition that lost quorum stopped everything). At every regular
//! configuration, every member multicasts an [`RmMsg::Sync`] carrying its
//! snapshot *as of that configuration change* and the last ring in which it
//! was quorate. Until every member's sync message is delivered the replica
//! only buffers inputs. Then every member adopts the same snapshot: the one
//! of the replica that was quorate most recently (the highest such ring,
//! then the most messages taken from that ring's stream; ties: the lowest
//! node id; a cold start still waiting for absent nodes yields to an absent
//! node that joins with a quorate state), applies the new membership,
//! replays the buffered inputs, and settles the operations the adopted
//! state waits on from what each member reports it was handed
//! ([`rm::Input::Held`]). All members receive the same sync messages and buffered
//! inputs (virtual synchrony), so all end equal. A further configuration
//! change during a sync restarts it.
//!
//! Why every configuration and not only those with joiners: members can
//! disagree on who joined (a node that was paused through a partition never
//! saw the others leave), so a rule based on joins lets some members wait for
//! sync messages that others never send.

use base::{Instant, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A message of the resource manager, multicast in agreed order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RmMsg {
    /// An input for every replica, with the sender's wall-clock stamp (ns).
    Input {
        /// Sender's wall clock, ns since the Unix epoch.
        at_ns: u64,
        /// The input.
        input: rm::Input,
    },
    /// State transfer at a configuration change.
    Sync {
        /// The configuration this sync belongs to.
        ring: u64,
        /// The last ring in which the sender's replica was quorate (0:
        /// never); a sender quorate right before this configuration reports
        /// the previous ring.
        quorate_ring: u64,
        /// How many resource-manager messages the sender's state had taken
        /// from `quorate_ring`'s ordered stream (members of one ring deliver
        /// prefixes of the same stream: the longer prefix knows more).
        #[serde(default)]
        quorate_progress: u64,
        /// The sender's agreed clock at the configuration change (ns), or its
        /// wall clock if later: the agreed clock also moves at membership
        /// changes.
        #[serde(default)]
        agreed_ns: u64,
        /// Nodes the sender's fence domain still holds as victims.
        #[serde(default)]
        fencing: Vec<NodeId>,
        /// The sender's incarnation (boot epoch of its node daemon).
        #[serde(default)]
        incarnation: u64,
        /// The incarnations of members as the sender's state knows them.
        #[serde(default)]
        incarnations: BTreeMap<NodeId, u64>,
        /// The last operation of each service the sender was handed, and
        /// its outcome once finished (see [`rm::Input::Held`]).
        #[serde(default)]
        held: Held,
        /// The sender's state at the configuration change.
        snapshot: Box<rm::Snapshot>,
    },
}

/// Service name → the last operation this node was handed for it, and its
/// outcome once it finished here.
pub type Held = BTreeMap<String, (rm::OpId, Option<rm::Outcome>)>;

impl RmMsg {
    /// Encode for totem.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    /// Decode what totem delivered; garbage is an error, never a panic.
    pub fn decode(b: &[u8]) -> Result<RmMsg, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

/// What one member's sync message offers.
#[derive(Debug)]
struct Offer {
    /// (last quorate ring, messages of that ring its state took).
    recency: (u64, u64),
    /// Its agreed clock (ns).
    agreed_ns: u64,
    snapshot: Box<rm::Snapshot>,
}

#[derive(Debug)]
struct Syncing {
    ring: u64,
    members: Vec<NodeId>,
    quorate: bool,
    /// Each member's offer.
    got: BTreeMap<NodeId, Offer>,
    /// Victims any member's fence domain still holds.
    fencing: std::collections::BTreeSet<NodeId>,
    /// Each member's reported incarnation and known incarnations.
    incarnations: BTreeMap<NodeId, (u64, BTreeMap<NodeId, u64>)>,
    /// Each member's operations as it reported them.
    held: BTreeMap<NodeId, Held>,
    /// Inputs delivered during the sync, with the sender's stamp for those
    /// that came as messages (the others take the agreed time as it is when
    /// they are replayed).
    buffered: Vec<(Option<u64>, rm::Input)>,
}

/// One node's replica.
#[derive(Debug)]
pub struct RmReplica {
    me: NodeId,
    sched: rm::Scheduler,
    agreed: Instant,
    sync: Option<Syncing>,
    outbox: Vec<RmMsg>,
    /// The ring of the current configuration.
    ring: u64,
    /// The last ring in which this replica was quorate (0: never).
    quorate_ring: u64,
    /// Messages of `quorate_ring`'s stream this replica's state has taken.
    quorate_progress: u64,
    /// Messages delivered in the current ring.
    delivered: u64,
    /// This node daemon's incarnation.
    incarnation: u64,
    /// Members' incarnations as of the last state transfer (agreed).
    incarnations: BTreeMap<NodeId, u64>,
}

impl RmReplica {
    /// A fresh replica (nothing running, no members).
    pub fn new(me: NodeId, spec: rm::ClusterSpec) -> Result<RmReplica, rm::ConfigError> {
        Ok(RmReplica {
            me,
            sched: rm::Scheduler::new(me, spec)?,
            agreed: Instant::ZERO,
            sync: None,
            outbox: Vec::new(),
            ring: 0,
            quorate_ring: 0,
            quorate_progress: 0,
            delivered: 0,
            incarnation: 0,
            incarnations: BTreeMap::new(),
        })
    }

    /// Set this node daemon's incarnation (its boot epoch).
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
    }

    /// The scheduler (views, actions, events).
    pub fn scheduler(&mut self) -> &mut rm::Scheduler {
        &mut self.sched
    }

    /// The scheduler, read-only.
    pub fn scheduler_ref(&self) -> &rm::Scheduler {
        &self.sched
    }

    /// Read-only scheduler.
    pub fn view(&self) -> rm::View {
        self.sched.view()
    }

    /// True while waiting for state transfer.
    pub fn syncing(&self) -> bool {
        self.sync.is_some()
    }

    /// The agreed time of the last ordered input.
    pub fn agreed(&self) -> Instant {
        self.agreed
    }

    /// Messages to multicast.
    pub fn drain_outbox(&mut self) -> Vec<RmMsg> {
        std::mem::take(&mut self.outbox)
    }

    fn apply(&mut self, at: Instant, input: rm::Input) {
        if let Err(e) = self.sched.handle(at, input) {
            // Refusals are also logged by the scheduler; the requester learns
            // of them by watching the service (see the admin command).
            tracing::info!("resource manager refused an input: {e}");
        }
        if self.sched.quorate() && self.ring > self.quorate_ring {
            self.quorate_ring = self.ring;
            self.quorate_progress = self.delivered;
        }
    }

    /// A regular configuration, at its place in the order, with the quorum
    /// that holds at that point.
    ///
    /// `wall` is this node's wall clock; `fencing` the victims its fence
    /// domain holds; `held` the operations this node was handed (the
    /// stack's record). A member that the resource manager waits to see fenced
    /// but that no member's fence domain holds will never be fenced (its
    /// fencer died, say): it is treated as rejoined without fencing.
    pub fn handle_membership(
        &mut self,
        ring: u64,
        members: Vec<NodeId>,
        quorate: bool,
        wall: Instant,
        fencing: Vec<NodeId>,
        held: Held,
    ) {
        // A sync in progress restarts. The inputs it buffered (a start's
        // result, say) must not be lost: they are applied to this replica's
        // own state first, so the snapshot it offers now includes them. Every
        // member that delivered them delivered the same ones (virtual
        // synchrony), and the snapshot adopted comes from such a member
        // whenever one was quorate most recently.
        if let Some(old) = self.sync.take() {
            for (stamp, input) in old.buffered {
                if let Some(ns) = stamp {
                    self.agreed = self.agreed.max(Instant(ns));
                }
                let at = self.agreed;
                self.apply(at, input);
            }
        }
        self.ring = ring;
        self.delivered = 0;
        // Every configuration change starts a state transfer, whoever joined
        // or left: members can disagree on who joined (a node that was
        // paused never saw the others leave), and only a rule that depends
        // on nothing but the configuration itself makes them all wait for
        // the same sync messages.
        let quorate_ring = self.quorate_ring;
        let snapshot = Box::new(self.sched.snapshot());
        self.outbox.push(RmMsg::Sync {
            ring,
            quorate_ring,
            quorate_progress: self.quorate_progress,
            agreed_ns: self.agreed.max(wall).0,
            fencing,
            incarnation: self.incarnation,
            incarnations: self.incarnations.clone(),
            held,
            snapshot,
        });
        self.sync = Some(Syncing {
            ring,
            members,
            quorate,
            got: BTreeMap::new(),
            fencing: Default::default(),
            incarnations: BTreeMap::new(),
            held: BTreeMap::new(),
            buffered: Vec::new(),
        });
    }

    /// Quorum changed without a membership change. During a state transfer
    /// the change is not applied: the quorum that holds when the transfer
    /// completes is (see [`RmReplica::handle_message`]).
    pub fn handle_quorum(&mut self, quorate: bool) {
        let at = self.agreed;
        if self.sync.is_none() {
            self.apply(at, rm::Input::Quorum { quorate });
        }
    }

    /// A new configuration was adopted at this point of the order (on every
    /// member alike).
    pub fn handle_config(&mut self, spec: rm::ClusterSpec) {
        let at = self.agreed;
        self.ordered(at, rm::Input::Config(spec));
    }

    /// A node was fenced (its outcome was agreed through totem); `stamp` is
    /// the fencer's wall clock when it announced it.
    pub fn handle_fenced(&mut self, victim: NodeId, method: String, stamp: Instant) {
        self.stamped(stamp, rm::Input::Fenced { victim, method });
    }

    /// A lost node rejoined and will not be fenced (agreed through totem).
    pub fn handle_rejoined(&mut self, node: NodeId, stamp: Instant) {
        self.stamped(stamp, rm::Input::Rejoined { node });
    }

    /// An ordered input that carried its sender's wall clock.
    fn stamped(&mut self, stamp: Instant, input: rm::Input) {
        match &mut self.sync {
            Some(s) => s.buffered.push((Some(stamp.0), input)),
            None => {
                self.agreed = self.agreed.max(stamp);
                let at = self.agreed;
                self.apply(at, input);
            }
        }
    }

    fn ordered(&mut self, at: Instant, input: rm::Input) {
        match &mut self.sync {
            Some(s) => s.buffered.push((None, input)),
            None => self.apply(at, input),
        }
    }

    /// An ordered message from `from`. `quorate` is the vote core's answer at
    /// this point of the order: a state transfer that completes here applies
    /// the membership with it. Every member agrees on it, because each member
    /// multicasts its quorum state before its sync message, so all quorum
    /// states precede the last sync message in the order.
    pub fn handle_message(&mut self, from: NodeId, msg: RmMsg, quorate: bool) {
        // Every member of this ring counts the same stream.
        self.delivered += 1;
        if self.quorate_ring == self.ring && self.ring != 0 {
            self.quorate_progress = self.delivered;
        }
        match msg {
            RmMsg::Input { at_ns, input } => match &mut self.sync {
                // Replicas may enter a sync with different clocks: the stamp
                // is applied after the sync, from the agreed clock then.
                Some(s) => s.buffered.push((Some(at_ns), input)),
                None => {
                    self.agreed = self.agreed.max(Instant(at_ns));
                    let at = self.agreed;
                    self.apply(at, input);
                }
            },
            RmMsg::Sync {
                ring,
                quorate_ring,
                quorate_progress,
                agreed_ns,
                fencing,
                incarnation,
                incarnations,
                held,
                snapshot,
            } => {
                if let Some(s) = &mut self.sync {
                    if s.ring == ring && s.members.contains(&from) {
                        s.got.insert(
                            from,
                            Offer {
                                recency: (quorate_ring, quorate_progress),
                                agreed_ns,
                                snapshot,
                            },
                        );
                        s.fencing.extend(fencing);
                        s.incarnations.insert(from, (incarnation, incarnations));
                        s.held.insert(from, held);
                    }
                    s.quorate = quorate;
                }
                self.try_finish_sync();
            }
        }
    }

    fn try_finish_sync(&mut self) {
        let done = self
            .sync
            .as_ref()
            .is_some_and(|s| s.members.iter().all(|m| s.got.contains_key(m)));
        if !done {
            return;
        }
        let Some(s) = self.sync.take() else { return };
        // Adopt the state of the replica that was quorate most recently:
        // ring sequences only grow, and two quorate partitions always share
        // a member, so the highest ring in which a replica was quorate is the
        // latest state that was allowed to act. Of replicas quorate last in
        // the same ring, the one that took more of that ring's stream: the
        // members of a ring deliver prefixes of one order, and one that
        // left early (paused, say) misses its tail (a start's result, the
        // loss of quorum and the stops that followed), so its state can say
        // "starting" for a start that has long finished. A node that was
        // never quorate (one that just booted, say) offers nothing. Ties:
        // the lowest id.
        let mut best = s.got.values().map(|o| o.recency).max().unwrap_or((0, 0));
        // Unless that state is a cold start still waiting for absent nodes
        // (startup fencing): it has placed nothing, and its quorate members
        // restarted, so it knows nothing of what the absent ones ran. An
        // absent node that joins with a state that was quorate brings that
        // knowledge: the most recent such state is adopted instead (a node
        // that kept a service through its peers' power loss keeps it).
        let waiting: std::collections::BTreeSet<NodeId> = s
            .got
            .values()
            .find(|o| o.recency == best)
            .map(|o| o.snapshot.startup_unseen().clone())
            .unwrap_or_default();
        if let Some(r) = s
            .got
            .iter()
            .filter(|(n, o)| waiting.contains(n) && o.recency.0 > 0)
            .map(|(_, o)| o.recency)
            .max()
        {
            best = r;
        }
        let chosen = s
            .got
            .iter()
            .find(|(_, o)| o.recency == best)
            .map(|(_, o)| (*o.snapshot).clone());
        // Every member leaves the sync with the same clock: the latest of
        // the clocks the members reported.
        self.agreed = Instant(s.got.values().map(|o| o.agreed_ns).max().unwrap_or(0));
        if let Some(snap) = chosen {
            let at = self.agreed;
            self.sched = rm::Scheduler::from_snapshot(self.me, snap, at);
            (self.quorate_ring, self.quorate_progress) = best;
        }
        // The members' reports of what they hold describe the operations
        // decided up to here.
        let upto = self.sched.last_op();
        let at = self.agreed;
        self.apply(
            at,
            rm::Input::Membership {
                members: s.members,
                quorate: s.quorate,
            },
        );
        // Members still waited on for fencing that no fence domain holds.
        let orphans: Vec<NodeId> = self
            .sched
            .view()
            .members
            .iter()
            .filter(|m| m.online && m.fence_pending && !s.fencing.contains(&m.id))
            .map(|m| m.id)
            .collect();
        for node in orphans {
            let at = self.agreed;
            self.apply(at, rm::Input::Rejoined { node });
        }
        // Members whose node daemon restarted since the chosen state last saw
        // them (a restart quicker than the token timeout is never seen as a
        // departure): what the old incarnation ran is stopped there first.
        let known = s
            .got
            .iter()
            .find(|(_, o)| o.recency == best)
            .and_then(|(n, _)| s.incarnations.get(n))
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        // Only members are remembered: a node that left the membership had
        // its departure handled (a clean leave, or fencing), so when it comes
        // back with a new incarnation nothing of the old one is left to stop.
        let mut now_known = BTreeMap::new();
        for (n, (inc, _)) in &s.incarnations {
            if *inc == 0 {
                // An older peer that does not report it.
                if let Some(old) = known.get(n) {
                    now_known.insert(*n, *old);
                }
                continue;
            }
            if known.get(n).is_some_and(|old| old != inc) {
                let at = self.agreed;
                self.apply(at, rm::Input::Restarted { node: *n });
            }
            now_known.insert(*n, *inc);
        }
        self.incarnations = now_known;
        for (stamp, input) in s.buffered {
            if let Some(ns) = stamp {
                self.agreed = self.agreed.max(Instant(ns));
            }
            let at = self.agreed;
            self.apply(at, input);
        }
        // Last, with everything delivered meanwhile applied: operations the
        // adopted state waits on that a member finished (its report was
        // lost with a ring) or never ran (the state was decided along a
        // branch of the order that member did not follow). Every member
        // applies the same reports here, so all stay equal.
        for (node, ops) in s.held {
            let at = self.agreed;
            self.apply(at, rm::Input::Held { node, ops, upto });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm::{ClusterSpec, NodeSpec, ServiceKind, ServiceSpec};

    fn spec() -> ClusterSpec {
        ClusterSpec {
            config_version: 1,
            startup_fencing: false,
            two_node: false,
            nodes: (1..=3)
                .map(|i| NodeSpec {
                    id: NodeId(i),
                    name: format!("n{i}"),
                })
                .collect(),
            services: vec![ServiceSpec::new("web", ServiceKind::Service)],
        }
    }

    /// Deliver `msgs` (sender, message) to every replica in the same order.
    fn deliver(reps: &mut [RmReplica], msgs: &[(NodeId, RmMsg)]) {
        for r in reps.iter_mut() {
            for (from, m) in msgs {
                r.handle_message(*from, m.clone(), true);
            }
        }
    }

    fn owner(r: &RmReplica) -> Option<NodeId> {
        r.view().services[0].owner
    }

    #[test]
    fn replicas_agree_after_a_fresh_node_joins_a_running_cluster() {
        let mut reps: Vec<RmReplica> = (1..=3)
            .map(|i| RmReplica::new(NodeId(i), spec()).unwrap())
            .collect();
        // Nodes 1 and 2 form a quorate cluster; web is placed on one of them.
        let m12 = vec![NodeId(1), NodeId(2)];
        for r in reps.iter_mut().take(2) {
            r.handle_membership(
                10,
                m12.clone(),
                true,
                Instant::ZERO,
                Vec::new(),
                Held::new(),
            );
        }
        let syncs: Vec<(NodeId, RmMsg)> = reps
            .iter_mut()
            .take(2)
            .flat_map(|r| r.drain_outbox().into_iter().map(|m| (r.me, m)))
            .collect();
        deliver(&mut reps[..2], &syncs);
        assert!(!reps[0].syncing() && !reps[1].syncing());
        let placed = owner(&reps[0]);
        assert!(
            placed.is_some(),
            "web should be placed: {:?}",
            reps[0].view()
        );
        assert_eq!(placed, owner(&reps[1]));
        let started: Vec<rm::Action> = reps[placed.unwrap().0 as usize - 1]
            .scheduler()
            .drain_actions();
        let op = match &started[0] {
            rm::Action::StartService { op, .. } => *op,
            other => panic!("expected a start, got {other:?}"),
        };
        let ok = RmMsg::Input {
            at_ns: 5,
            input: rm::Input::Result(rm::Report {
                node: placed.unwrap(),
                service: "web".into(),
                op,
                outcome: rm::Outcome::StartOk,
            }),
        };
        deliver(&mut reps[..2], &[(placed.unwrap(), ok)]);
        assert_eq!(reps[0].view().services[0].state, rm::State::Started);

        // Node 3 starts fresh and joins: all three sync to the quorate state.
        let m123 = vec![NodeId(1), NodeId(2), NodeId(3)];
        for r in reps.iter_mut() {
            r.handle_membership(
                20,
                m123.clone(),
                true,
                Instant::ZERO,
                Vec::new(),
                Held::new(),
            );
        }
        let syncs: Vec<(NodeId, RmMsg)> = reps
            .iter_mut()
            .flat_map(|r| r.drain_outbox().into_iter().map(|m| (r.me, m)))
            .collect();
        assert_eq!(syncs.len(), 3);
        // An input delivered before the last sync is buffered and replayed.
        let stop = RmMsg::Input {
            at_ns: 9,
            input: rm::Input::Request {
                from: NodeId(3),
                request: rm::Request::Freeze {
                    service: "web".into(),
                },
            },
        };
        let order = vec![
            syncs[0].clone(),
            (NodeId(3), stop),
            syncs[1].clone(),
            syncs[2].clone(),
        ];
        deliver(&mut reps, &order);
        for r in &reps {
            assert!(!r.syncing());
            assert_eq!(
                r.view().services[0].state,
                rm::State::Started,
                "node {:?}",
                r.me
            );
            assert_eq!(owner(r), placed);
            assert!(
                r.view().services[0].frozen,
                "the buffered freeze is replayed on {:?}",
                r.me
            );
        }
        assert_eq!(reps[2].view(), reps[0].view());
    }

    /// One configuration for `ids`: every replica there takes part, and
    /// all sync messages are delivered in one order.
    fn configure(reps: &mut [RmReplica], ring: u64, ids: &[u32], quorate: bool) {
        let members: Vec<NodeId> = ids.iter().map(|i| NodeId(*i)).collect();
        let mut syncs = Vec::new();
        for i in ids {
            let r = &mut reps[*i as usize - 1];
            r.handle_membership(
                ring,
                members.clone(),
                quorate,
                Instant::ZERO,
                Vec::new(),
                Held::new(),
            );
            syncs.extend(r.drain_outbox().into_iter().map(|m| (NodeId(*i), m)));
        }
        for i in ids {
            for (from, m) in &syncs {
                reps[*i as usize - 1].handle_message(*from, m.clone(), quorate);
            }
        }
    }

    #[test]
    fn a_cold_start_does_not_win_over_a_node_that_kept_its_service() {
        let mut sp = spec();
        sp.startup_fencing = true;
        let mut reps: Vec<RmReplica> = (1..=3)
            .map(|i| RmReplica::new(NodeId(i), sp.clone()).unwrap())
            .collect();
        configure(&mut reps, 10, &[1, 2, 3], true);
        let o = owner(&reps[0]).expect("web placed");
        let op = match &reps[o.0 as usize - 1].scheduler().drain_actions()[..] {
            [rm::Action::StartService { op, .. }] => *op,
            other => panic!("expected a start, got {other:?}"),
        };
        let ok = RmMsg::Input {
            at_ns: 5,
            input: rm::Input::Result(rm::Report {
                node: o,
                service: "web".into(),
                op,
                outcome: rm::Outcome::StartOk,
            }),
        };
        deliver(&mut reps, &[(o, ok)]);
        // The other two lose power, come back fresh and form a quorate pair:
        // a cold start that waits for the owner (startup fencing).
        let others: Vec<u32> = (1..=3).filter(|i| *i != o.0).collect();
        for i in &others {
            reps[*i as usize - 1] = RmReplica::new(NodeId(*i), sp.clone()).unwrap();
        }
        configure(&mut reps, 20, &others, true);
        assert_eq!(owner(&reps[others[0] as usize - 1]), None);
        // The owner joins: its state, not the cold one, is adopted.
        configure(&mut reps, 30, &[1, 2, 3], true);
        for r in &reps {
            let v = r.view();
            assert_eq!(v.services[0].state, rm::State::Started, "{:?}", r.me);
            assert_eq!(v.services[0].owner, Some(o));
        }
        for i in &others {
            assert!(
                !reps[*i as usize - 1]
                    .scheduler()
                    .drain_actions()
                    .iter()
                    .any(|a| matches!(a, rm::Action::StartService { .. })),
                "no second copy on n{i}"
            );
        }
    }
}
