//! Closed process groups on top of the ordered stream.
//!
//! A group is a name; members are nodes (one local component per group and
//! node; the driver multiplexes local processes). Join, leave and send are
//! totally ordered messages on the ring, so every node sees the same
//! sequence of them.
//!
//! Views: after every regular configuration each node re-announces the
//! groups it is in (a "join list", ordered like everything else) and nodes
//! that left the ring are removed from every view. Once the join lists of
//! all ring members are delivered ([`Cpg::synced`]), every member holds the
//! same view of every group, and from then on join/leave keep them equal
//! because they are applied in the same total order. Messages of a group are
//! delivered to a node exactly when the node itself is in the group at that
//! point of the order (its own join delivered, its leave not yet), so
//! delivery never waits for the view synchronisation.

use crate::limits::{MAX_GROUP_NAME, MAX_LOCAL_GROUPS, MAX_PAYLOAD};
use base::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A process group's name (1..=128 bytes of UTF-8).
pub type GroupName = String;

/// Something the process-group layer tells the local node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpgEvent {
    /// The membership of a group this node is in (or just left) changed.
    ConfChange {
        /// The group.
        group: GroupName,
        /// Members after the change, sorted.
        members: Vec<NodeId>,
        /// Nodes that joined (or came back with a merged partition).
        joined: Vec<NodeId>,
        /// Nodes that left (by leaving, or by leaving the ring).
        left: Vec<NodeId>,
    },
    /// A message sent to a group this node is in, in total order.
    Deliver {
        /// The group.
        group: GroupName,
        /// Sending node.
        sender: NodeId,
        /// The bytes.
        data: Arc<[u8]>,
    },
}

const M_JOIN: u8 = 1;
const M_LEAVE: u8 = 2;
const M_SEND: u8 = 3;
const M_JOINLIST: u8 = 4;

/// Validates a group name for a command.
pub(crate) fn check_name(g: &str) -> bool {
    !g.is_empty() && g.len() <= MAX_GROUP_NAME
}

fn put_name(out: &mut Vec<u8>, g: &str) {
    out.push(g.len() as u8);
    out.extend_from_slice(g.as_bytes());
}

/// Payload of a join (`M_JOIN`) or leave message.
pub(crate) fn encode_member_op(join: bool, g: &str) -> Vec<u8> {
    let mut v = vec![if join { M_JOIN } else { M_LEAVE }];
    put_name(&mut v, g);
    v
}

/// Payload of a group message.
pub(crate) fn encode_send(g: &str, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + g.len() + data.len());
    v.push(M_SEND);
    put_name(&mut v, g);
    v.extend_from_slice(data);
    v
}

enum Msg<'a> {
    Join(String),
    Leave(String),
    Send(String, &'a [u8]),
    JoinList(Vec<String>),
}

fn decode(b: &[u8]) -> Option<Msg<'_>> {
    fn name(b: &[u8], pos: &mut usize) -> Option<String> {
        let n = *b.get(*pos)? as usize;
        let s = b.get(*pos + 1..*pos + 1 + n)?;
        *pos += 1 + n;
        let s = std::str::from_utf8(s).ok()?;
        check_name(s).then(|| s.to_string())
    }
    let mut pos = 1;
    match *b.first()? {
        M_JOIN => {
            let g = name(b, &mut pos)?;
            (pos == b.len()).then_some(Msg::Join(g))
        }
        M_LEAVE => {
            let g = name(b, &mut pos)?;
            (pos == b.len()).then_some(Msg::Leave(g))
        }
        M_SEND => {
            let g = name(b, &mut pos)?;
            Some(Msg::Send(g, &b[pos..]))
        }
        M_JOINLIST => {
            let mut v = Vec::new();
            while pos < b.len() {
                if v.len() >= MAX_LOCAL_GROUPS {
                    return None;
                }
                v.push(name(b, &mut pos)?);
            }
            Some(Msg::JoinList(v))
        }
        _ => None,
    }
}

/// Process-group state of one node (owned by [`crate::TotemNode`]).
#[derive(Debug, Default)]
pub struct Cpg {
    me: Option<NodeId>,
    /// Groups this node is in, as of the delivered order.
    local: BTreeSet<GroupName>,
    /// Groups this node asked to be in (commands accepted, maybe not yet ordered).
    intent: BTreeSet<GroupName>,
    views: BTreeMap<GroupName, BTreeSet<NodeId>>,
    ring_members: BTreeSet<NodeId>,
    joinlists: BTreeSet<NodeId>,
    /// Malformed group messages dropped.
    pub malformed: u64,
}

impl Cpg {
    pub(crate) fn new(me: NodeId) -> Cpg {
        Cpg {
            me: Some(me),
            ..Cpg::default()
        }
    }

    fn me(&self) -> NodeId {
        self.me.unwrap_or(NodeId(0))
    }

    /// True once every ring member's join list of the current configuration
    /// has been delivered: views agree on all members from here on.
    pub fn synced(&self) -> bool {
        self.ring_members.iter().all(|n| self.joinlists.contains(n))
    }

    /// The current view of a group (sorted).
    pub fn view(&self, group: &str) -> Vec<NodeId> {
        self.views
            .get(group)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every group with a non-empty view.
    pub fn groups(&self) -> Vec<GroupName> {
        self.views
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Groups this node is in, as of the delivered order.
    pub fn local_groups(&self) -> Vec<GroupName> {
        self.local.iter().cloned().collect()
    }

    pub(crate) fn intends(&self, g: &str) -> bool {
        self.intent.contains(g)
    }

    pub(crate) fn set_intent(&mut self, g: &str, on: bool) -> bool {
        if on {
            if self.intent.len() >= MAX_LOCAL_GROUPS {
                return false;
            }
            self.intent.insert(g.to_string())
        } else {
            self.intent.remove(g)
        }
    }

    fn emit(&self, g: &str, joined: Vec<NodeId>, left: Vec<NodeId>, out: &mut Vec<CpgEvent>) {
        out.push(CpgEvent::ConfChange {
            group: g.to_string(),
            members: self.view(g),
            joined,
            left,
        });
    }

    /// A regular configuration was installed: drop departed nodes from every
    /// view and return the join-list payload to multicast first.
    pub(crate) fn on_regular_config(
        &mut self,
        members: &[NodeId],
        out: &mut Vec<CpgEvent>,
    ) -> Vec<u8> {
        self.ring_members = members.iter().copied().collect();
        self.joinlists.clear();
        let groups: Vec<GroupName> = self.views.keys().cloned().collect();
        for g in groups {
            let view = self.views.get_mut(&g).expect("key from keys()");
            let left: Vec<NodeId> = view
                .iter()
                .filter(|n| !members.contains(n))
                .copied()
                .collect();
            if left.is_empty() {
                continue;
            }
            for n in &left {
                view.remove(n);
            }
            if self.local.contains(&g) {
                self.emit(&g, vec![], left, out);
            }
        }
        let mut v = vec![M_JOINLIST];
        let mut total = 1;
        for g in &self.local {
            if total + 1 + g.len() > MAX_PAYLOAD {
                break;
            }
            total += 1 + g.len();
            put_name(&mut v, g);
        }
        v
    }

    /// An ordered group-channel message from `sender` was delivered.
    pub(crate) fn on_deliver(&mut self, sender: NodeId, data: &[u8], out: &mut Vec<CpgEvent>) {
        let me = self.me();
        let Some(msg) = decode(data) else {
            self.malformed += 1;
            return;
        };
        match msg {
            Msg::Join(g) => {
                if sender == me {
                    self.local.insert(g.clone());
                }
                if self.views.entry(g.clone()).or_default().insert(sender)
                    && self.local.contains(&g)
                {
                    self.emit(&g, vec![sender], vec![], out);
                }
            }
            Msg::Leave(g) => {
                let was_local = self.local.contains(&g);
                if sender == me {
                    self.local.remove(&g);
                }
                if self.views.entry(g.clone()).or_default().remove(&sender) && was_local {
                    self.emit(&g, vec![], vec![sender], out);
                }
            }
            Msg::Send(g, d) => {
                if self.local.contains(&g) {
                    out.push(CpgEvent::Deliver {
                        group: g,
                        sender,
                        data: Arc::from(d),
                    });
                }
            }
            Msg::JoinList(list) => {
                if !self.ring_members.contains(&sender) {
                    return;
                }
                self.joinlists.insert(sender);
                let listed: BTreeSet<String> = list.into_iter().collect();
                let mut touched: BTreeSet<String> = listed.clone();
                touched.extend(
                    self.views
                        .iter()
                        .filter(|(_, v)| v.contains(&sender))
                        .map(|(g, _)| g.clone()),
                );
                for g in touched {
                    let view = self.views.entry(g.clone()).or_default();
                    let (joined, left) = if listed.contains(&g) {
                        (
                            if view.insert(sender) {
                                vec![sender]
                            } else {
                                vec![]
                            },
                            vec![],
                        )
                    } else {
                        view.remove(&sender);
                        (vec![], vec![sender])
                    };
                    if (!joined.is_empty() || !left.is_empty()) && self.local.contains(&g) {
                        self.emit(&g, joined, left, out);
                    }
                }
            }
        }
    }
}
