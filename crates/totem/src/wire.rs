//! Wire objects of the protocol and their checked, versioned encoding.
//!
//! Every integer has an explicit width and is big-endian. Every decode is
//! bounds-checked; lists carry a count that is checked against the limits in
//! [`crate::limits`] before anything is allocated. Decoding never panics.

use crate::limits::{MAX_NODES, MAX_PAYLOAD, MAX_RTR};
use base::NodeId;
use std::fmt;
use std::sync::Arc;

/// Identity of one ring: the sequence number it was formed with and its
/// representative (lowest node id of the membership). Ordered by sequence
/// first, so a newer ring always compares greater. Serialized (status
/// output) as `{"seq": 8, "rep": 1}`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RingId {
    /// Ring sequence number; strictly increasing over a node's life.
    pub seq: u64,
    /// Representative node (lowest node id in the ring).
    pub rep: NodeId,
}

impl RingId {
    /// "No ring yet".
    pub const ZERO: RingId = RingId {
        seq: 0,
        rep: NodeId(0),
    };
}

impl fmt::Debug for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.rep.0, self.seq)
    }
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The ordering/reliability/flow-control token that circulates the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Ring the token belongs to.
    pub ring: RingId,
    /// The token's own counter, incremented at every hop; duplicates of an
    /// already seen token (retransmissions) carry a value not above the last.
    pub token_seq: u64,
    /// Highest message sequence number assigned on this ring.
    pub seq: u64,
    /// Minimum all-received-up-to over the nodes visited in this rotation.
    pub aru: u64,
    /// Node that last lowered `aru` (the slowest receiver).
    pub aru_id: NodeId,
    /// `aru` of the previous complete rotation: every member holds every
    /// message up to here (drives freeing and safe delivery).
    pub prev_aru: u64,
    /// Messages waiting to be sent, summed over the ring.
    pub backlog: u32,
    /// Messages multicast during the last rotation (flow control count).
    pub fcc: u32,
    /// Recovery: some member still has old-ring messages to re-send.
    pub retrans_flg: bool,
    /// Recovery: `install_seq` is valid.
    pub installed: bool,
    /// Recovery: every old-ring message was sent at or below this seq.
    pub install_seq: u64,
    /// Retransmission requests (sequence numbers), at most [`MAX_RTR`].
    pub rtr: Vec<u64>,
}

/// The content of an ordered message as stored and delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// Node that originally multicast it.
    pub origin: NodeId,
    /// Safe delivery requested.
    pub safe: bool,
    /// Internal channel: 0 application, 1 process groups.
    pub channel: u8,
    /// The bytes.
    pub data: Arc<[u8]>,
}

/// An ordered (sequenced) multicast message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mcast {
    /// Ring the sequence number belongs to.
    pub ring: RingId,
    /// Sequence number in that ring.
    pub seq: u64,
    /// Set when this is an old-ring message re-sent during recovery:
    /// the old ring and the message's sequence number there.
    pub recovered: Option<(RingId, u64)>,
    /// The message itself.
    pub payload: Payload,
}

/// A membership (gather) message; a "leave" is a join with `leaving` set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// Nodes the sender believes should form the ring (sorted, unique).
    pub proc_set: Vec<NodeId>,
    /// Nodes the sender has given up on (sorted, unique).
    pub fail_set: Vec<NodeId>,
    /// Highest ring sequence number the sender has seen.
    pub ring_seq: u64,
    /// Sender's boot epoch (with `join_seq` orders its joins).
    pub epoch: u64,
    /// Per-boot counter of joins sent.
    pub join_seq: u64,
    /// The sender is leaving the cluster on purpose.
    pub leaving: bool,
}

/// One member's entry in the commit token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitEntry {
    /// The member's previous ring ([`RingId::ZERO`] if none).
    pub old_ring: RingId,
    /// Its all-received-up-to on that ring.
    pub aru: u64,
    /// The highest sequence number it delivered on that ring.
    pub high_delivered: u64,
    /// The highest sequence number it received on that ring.
    pub high_seq: u64,
}

/// The commit token that installs a new ring (rotates twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Hop counter, for dropping retransmitted duplicates.
    pub token_seq: u64,
    /// The ring being formed.
    pub ring: RingId,
    /// Its members, sorted; `members[0]` is the representative.
    pub members: Vec<NodeId>,
    /// One entry per member, filled on the first rotation.
    pub entries: Vec<Option<CommitEntry>>,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Ordering token.
    Token(Token),
    /// Ordered multicast.
    Mcast(Mcast),
    /// Sent by a representative to configured nodes outside its ring.
    MergeDetect {
        /// The sender's ring.
        ring: RingId,
    },
    /// Membership gather message.
    Join(Join),
    /// Commit token.
    Commit(Commit),
    /// Per-link liveness probe (redundant rings).
    Heartbeat,
}

const T_TOKEN: u8 = 0;
const T_MCAST: u8 = 1;
const T_MERGE: u8 = 2;
const T_JOIN: u8 = 3;
const T_COMMIT: u8 = 4;
const T_HEARTBEAT: u8 = 5;

/// Why a message body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the message did.
    #[error("truncated message")]
    Truncated,
    /// Unknown message type byte.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A count or length exceeds its limit.
    #[error("{what} too large: {n}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The value found.
        n: u64,
    },
    /// A field has a value the protocol never produces.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// Bytes left over after the message.
    #[error("trailing bytes")]
    Trailing,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.b.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("boolean")),
        }
    }
    fn node(&mut self) -> Result<NodeId, DecodeError> {
        Ok(NodeId(self.u32()?))
    }
    fn ring(&mut self) -> Result<RingId, DecodeError> {
        let seq = self.u64()?;
        let rep = self.node()?;
        Ok(RingId { seq, rep })
    }
    fn node_set(&mut self) -> Result<Vec<NodeId>, DecodeError> {
        let n = self.u16()? as usize;
        if n > MAX_NODES {
            return Err(DecodeError::TooLarge {
                what: "node list",
                n: n as u64,
            });
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.node()?;
            if id.0 == 0 {
                return Err(DecodeError::Invalid("node id 0"));
            }
            if v.last().is_some_and(|l: &NodeId| *l >= id) {
                return Err(DecodeError::Invalid("node list not sorted/unique"));
            }
            v.push(id);
        }
        Ok(v)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn ring(&mut self, r: RingId) {
        self.u64(r.seq);
        self.u32(r.rep.0);
    }
    fn nodes(&mut self, v: &[NodeId]) {
        self.u16(v.len() as u16);
        for n in v {
            self.u32(n.0);
        }
    }
}

impl Message {
    /// Appends the encoding of the message to `out`.
    ///
    /// Lists longer than the limits are the caller's bug; they are
    /// truncated so the output always decodes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer(std::mem::take(out));
        match self {
            Message::Token(t) => {
                w.u8(T_TOKEN);
                w.ring(t.ring);
                w.u64(t.token_seq);
                w.u64(t.seq);
                w.u64(t.aru);
                w.u32(t.aru_id.0);
                w.u64(t.prev_aru);
                w.u32(t.backlog);
                w.u32(t.fcc);
                w.u8(u8::from(t.retrans_flg));
                w.u8(u8::from(t.installed));
                w.u64(t.install_seq);
                let n = t.rtr.len().min(MAX_RTR);
                w.u16(n as u16);
                for s in &t.rtr[..n] {
                    w.u64(*s);
                }
            }
            Message::Mcast(m) => {
                w.u8(T_MCAST);
                w.ring(m.ring);
                w.u64(m.seq);
                let flags = u8::from(m.payload.safe) | (u8::from(m.recovered.is_some()) << 1);
                w.u8(flags);
                w.u8(m.payload.channel);
                w.u32(m.payload.origin.0);
                if let Some((r, s)) = m.recovered {
                    w.ring(r);
                    w.u64(s);
                }
                let n = m.payload.data.len().min(MAX_PAYLOAD);
                w.u32(n as u32);
                w.0.extend_from_slice(&m.payload.data[..n]);
            }
            Message::MergeDetect { ring } => {
                w.u8(T_MERGE);
                w.ring(*ring);
            }
            Message::Join(j) => {
                w.u8(T_JOIN);
                w.nodes(&j.proc_set[..j.proc_set.len().min(MAX_NODES)]);
                w.nodes(&j.fail_set[..j.fail_set.len().min(MAX_NODES)]);
                w.u64(j.ring_seq);
                w.u64(j.epoch);
                w.u64(j.join_seq);
                w.u8(u8::from(j.leaving));
            }
            Message::Commit(c) => {
                w.u8(T_COMMIT);
                w.u64(c.token_seq);
                w.ring(c.ring);
                let n = c.members.len().min(MAX_NODES);
                w.nodes(&c.members[..n]);
                for i in 0..n {
                    match c.entries.get(i).copied().flatten() {
                        None => w.u8(0),
                        Some(e) => {
                            w.u8(1);
                            w.ring(e.old_ring);
                            w.u64(e.aru);
                            w.u64(e.high_delivered);
                            w.u64(e.high_seq);
                        }
                    }
                }
            }
            Message::Heartbeat => w.u8(T_HEARTBEAT),
        }
        *out = w.0;
    }

    /// The encoding of the message as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Decodes one message occupying all of `b`.
    pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { b, pos: 0 };
        let m = match r.u8()? {
            T_TOKEN => {
                let ring = r.ring()?;
                let token_seq = r.u64()?;
                let seq = r.u64()?;
                let aru = r.u64()?;
                let aru_id = r.node()?;
                let prev_aru = r.u64()?;
                let backlog = r.u32()?;
                let fcc = r.u32()?;
                let retrans_flg = r.bool()?;
                let installed = r.bool()?;
                let install_seq = r.u64()?;
                let n = r.u16()? as usize;
                if n > MAX_RTR {
                    return Err(DecodeError::TooLarge {
                        what: "retransmit list",
                        n: n as u64,
                    });
                }
                let mut rtr = Vec::with_capacity(n);
                for _ in 0..n {
                    rtr.push(r.u64()?);
                }
                if aru > seq || prev_aru > seq || install_seq > seq {
                    return Err(DecodeError::Invalid("token aru above seq"));
                }
                Message::Token(Token {
                    ring,
                    token_seq,
                    seq,
                    aru,
                    aru_id,
                    prev_aru,
                    backlog,
                    fcc,
                    retrans_flg,
                    installed,
                    install_seq,
                    rtr,
                })
            }
            T_MCAST => {
                let ring = r.ring()?;
                let seq = r.u64()?;
                let flags = r.u8()?;
                if flags & !3 != 0 {
                    return Err(DecodeError::Invalid("mcast flags"));
                }
                let channel = r.u8()?;
                if channel > 1 {
                    return Err(DecodeError::Invalid("mcast channel"));
                }
                let origin = r.node()?;
                let recovered = if flags & 2 != 0 {
                    let or = r.ring()?;
                    let os = r.u64()?;
                    Some((or, os))
                } else {
                    None
                };
                let n = r.u32()? as usize;
                if n > MAX_PAYLOAD {
                    return Err(DecodeError::TooLarge {
                        what: "payload",
                        n: n as u64,
                    });
                }
                let data: Arc<[u8]> = Arc::from(r.take(n)?);
                if seq == 0 {
                    return Err(DecodeError::Invalid("mcast seq 0"));
                }
                Message::Mcast(Mcast {
                    ring,
                    seq,
                    recovered,
                    payload: Payload {
                        origin,
                        safe: flags & 1 != 0,
                        channel,
                        data,
                    },
                })
            }
            T_MERGE => Message::MergeDetect { ring: r.ring()? },
            T_JOIN => {
                let proc_set = r.node_set()?;
                let fail_set = r.node_set()?;
                let ring_seq = r.u64()?;
                let epoch = r.u64()?;
                let join_seq = r.u64()?;
                let leaving = r.bool()?;
                Message::Join(Join {
                    proc_set,
                    fail_set,
                    ring_seq,
                    epoch,
                    join_seq,
                    leaving,
                })
            }
            T_COMMIT => {
                let token_seq = r.u64()?;
                let ring = r.ring()?;
                let members = r.node_set()?;
                if members.is_empty() || members[0] != ring.rep {
                    return Err(DecodeError::Invalid("commit members/representative"));
                }
                let mut entries = Vec::with_capacity(members.len());
                for _ in 0..members.len() {
                    entries.push(if r.bool()? {
                        Some(CommitEntry {
                            old_ring: r.ring()?,
                            aru: r.u64()?,
                            high_delivered: r.u64()?,
                            high_seq: r.u64()?,
                        })
                    } else {
                        None
                    });
                }
                Message::Commit(Commit {
                    token_seq,
                    ring,
                    members,
                    entries,
                })
            }
            T_HEARTBEAT => Message::Heartbeat,
            t => return Err(DecodeError::UnknownType(t)),
        };
        if r.pos != b.len() {
            return Err(DecodeError::Trailing);
        }
        Ok(m)
    }

    /// Short name of the message kind, for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Token(_) => "token",
            Message::Mcast(_) => "mcast",
            Message::MergeDetect { .. } => "merge",
            Message::Join(_) => "join",
            Message::Commit(_) => "commit",
            Message::Heartbeat => "heartbeat",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let ring = RingId {
            seq: 8,
            rep: NodeId(1),
        };
        vec![
            Message::Token(Token {
                ring,
                token_seq: 5,
                seq: 10,
                aru: 9,
                aru_id: NodeId(2),
                prev_aru: 8,
                backlog: 3,
                fcc: 4,
                retrans_flg: true,
                installed: false,
                install_seq: 0,
                rtr: vec![9, 10],
            }),
            Message::Mcast(Mcast {
                ring,
                seq: 3,
                recovered: Some((
                    RingId {
                        seq: 4,
                        rep: NodeId(2),
                    },
                    7,
                )),
                payload: Payload {
                    origin: NodeId(3),
                    safe: true,
                    channel: 1,
                    data: Arc::from(&b"hi"[..]),
                },
            }),
            Message::MergeDetect { ring },
            Message::Join(Join {
                proc_set: vec![NodeId(1), NodeId(2)],
                fail_set: vec![NodeId(3)],
                ring_seq: 8,
                epoch: 2,
                join_seq: 9,
                leaving: false,
            }),
            Message::Commit(Commit {
                token_seq: 1,
                ring,
                members: vec![NodeId(1), NodeId(4)],
                entries: vec![
                    Some(CommitEntry {
                        old_ring: ring,
                        aru: 1,
                        high_delivered: 1,
                        high_seq: 2,
                    }),
                    None,
                ],
            }),
            Message::Heartbeat,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let b = m.encode();
            assert_eq!(Message::decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        for m in samples() {
            let b = m.encode();
            for n in 0..b.len() {
                assert!(
                    Message::decode(&b[..n]).is_err(),
                    "{} truncated to {n}",
                    m.kind()
                );
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Message::decode(&longer), Err(DecodeError::Trailing));
        }
    }

    #[test]
    fn unsorted_node_lists_are_invalid() {
        let j = Message::Join(Join {
            proc_set: vec![NodeId(2), NodeId(1)],
            fail_set: vec![],
            ring_seq: 0,
            epoch: 0,
            join_seq: 0,
            leaving: false,
        });
        assert!(matches!(
            Message::decode(&j.encode()),
            Err(DecodeError::Invalid(_))
        ));
    }
}
