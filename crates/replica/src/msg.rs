//! Replication messages and their versioned wire codec. Frame: magic u32 "QRPL", version u16,
//! type u16, body length u32, body. Big-endian. The decoder returns an error for anything
//! malformed and never panics or allocates more than the frame announces (bounded by `MAX_FRAME`).

use bytes::Bytes;

use crate::gen::Gen;
use crate::meta::DiskState;

/// Frame magic ("QRPL").
pub const MSG_MAGIC: u32 = 0x5152_504c;
/// Protocol version spoken by this build.
pub const MSG_VERSION: u16 = 1;
/// Frame header length.
pub const FRAME_HEADER: usize = 12;
/// Largest body accepted (32 MiB of data plus headers).
pub const MAX_FRAME: u32 = (32 << 20) + 4096;

/// Replication protocol: when a write is acknowledged to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// Local disk done (the data is in the send queue).
    A,
    /// Local disk done and the peer received the data.
    B,
    /// Local disk done and the peer's disk has it.
    C,
}

/// Role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Serves no I/O; receives replication.
    Secondary,
    /// Serves application I/O.
    Primary,
}

/// Everything a peer says at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Sender's node id (tie-breaks use the lower id).
    pub node_id: u32,
    /// Replicated size in bytes.
    pub size: u64,
    /// Bitmap granularity in bytes.
    pub granularity: u32,
    /// Replication protocol the sender is configured with.
    pub protocol: Protocol,
    /// Sender's generation identifiers.
    pub gen: Gen,
    /// Sender's role.
    pub role: Role,
    /// Sender's disk state.
    pub disk: DiskState,
    /// Sender crashed while primary (its activity log must be resynced).
    pub crashed_primary: bool,
    /// Operator asked the sender to discard its data on split brain.
    pub discard_my_data: bool,
    /// Sender allows two primaries.
    pub allow_two_primaries: bool,
    /// Set bits in the sender's bitmap.
    pub dirty_bits: u64,
}

/// One replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Connect-time parameters.
    Hello(Hello),
    /// Application write replicated to the secondary.
    Data {
        /// Sequence number (acks refer to it).
        seq: u64,
        /// Byte offset.
        offset: u64,
        /// Must be durable before the write ack.
        fua: bool,
        /// Bytes.
        data: Bytes,
    },
    /// Protocol B: the data arrived.
    RecvAck {
        /// Acknowledged write.
        seq: u64,
    },
    /// The data is on the peer's disk (FUA honoured).
    WriteAck {
        /// Acknowledged write.
        seq: u64,
    },
    /// The peer failed to write: it marks itself failed; the primary keeps the block dirty.
    NegAck {
        /// Failed write.
        seq: u64,
    },
    /// End of a write epoch: every write with seq < `before_seq` must be durable before the ack.
    Barrier {
        /// Epoch number.
        epoch: u64,
        /// Writes before this sequence belong to the epoch.
        before_seq: u64,
    },
    /// The epoch is durable on the peer.
    BarrierAck {
        /// Epoch number.
        epoch: u64,
    },
    /// Part of the sender's dirty bitmap (ORed into the receiver's).
    Bitmap {
        /// Index of the first word.
        start_word: u64,
        /// Words.
        words: Vec<u64>,
    },
    /// The sender's bitmap was sent completely.
    BitmapDone,
    /// Resync data for a block.
    ResyncData {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        data: Bytes,
    },
    /// The resync block is on the target's disk.
    ResyncAck {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
    },
    /// Resync complete: the target adopts the source's generation identifiers.
    ResyncDone {
        /// Source's identifiers after the resync.
        gen: Gen,
    },
    /// Online verify: the source's digest of a block.
    VerifyReq {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
        /// CRC32 digest.
        digest: u32,
    },
    /// Online verify: whether the target's block matched.
    VerifyReply {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Digests matched.
        equal: bool,
    },
    /// Role or disk state changed.
    State {
        /// Role now.
        role: Role,
        /// Disk now.
        disk: DiskState,
    },
    /// Keep-alive.
    Ping,
    /// Keep-alive answer.
    PingAck,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Frame magic wrong: the stream is not ours or out of step.
    #[error("bad frame magic {0:#x}")]
    BadMagic(u32),
    /// Peer speaks another protocol version.
    #[error("peer speaks replication protocol version {0}, this build speaks {MSG_VERSION}: upgrade both nodes to the same release")]
    BadVersion(u16),
    /// Frame too large.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u32),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    UnknownType(u16),
    /// Body shorter or longer than its fields.
    #[error("malformed body of message type {0}")]
    Malformed(u16),
}

fn role_code(r: Role) -> u8 {
    r as u8
}
fn role_from(c: u8) -> Option<Role> {
    match c {
        0 => Some(Role::Secondary),
        1 => Some(Role::Primary),
        _ => None,
    }
}
fn proto_from(c: u8) -> Option<Protocol> {
    match c {
        0 => Some(Protocol::A),
        1 => Some(Protocol::B),
        2 => Some(Protocol::C),
        _ => None,
    }
}

impl Msg {
    fn type_code(&self) -> u16 {
        match self {
            Msg::Hello(_) => 1,
            Msg::Data { .. } => 2,
            Msg::RecvAck { .. } => 3,
            Msg::WriteAck { .. } => 4,
            Msg::NegAck { .. } => 5,
            Msg::Barrier { .. } => 6,
            Msg::BarrierAck { .. } => 7,
            Msg::Bitmap { .. } => 8,
            Msg::BitmapDone => 9,
            Msg::ResyncData { .. } => 10,
            Msg::ResyncAck { .. } => 11,
            Msg::ResyncDone { .. } => 12,
            Msg::VerifyReq { .. } => 13,
            Msg::VerifyReply { .. } => 14,
            Msg::State { .. } => 15,
            Msg::Ping => 16,
            Msg::PingAck => 17,
        }
    }

    /// Encodes one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&MSG_MAGIC.to_be_bytes());
        b.extend_from_slice(&MSG_VERSION.to_be_bytes());
        b.extend_from_slice(&self.type_code().to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        let gen = |b: &mut Vec<u8>, g: &Gen| {
            for v in [g.current, g.bitmap, g.history[0], g.history[1]] {
                b.extend_from_slice(&v.to_be_bytes());
            }
        };
        match self {
            Msg::Hello(h) => {
                b.extend_from_slice(&h.node_id.to_be_bytes());
                b.extend_from_slice(&h.size.to_be_bytes());
                b.extend_from_slice(&h.granularity.to_be_bytes());
                b.push(h.protocol as u8);
                gen(&mut b, &h.gen);
                b.push(role_code(h.role));
                b.push(h.disk as u8);
                b.push(
                    h.crashed_primary as u8
                        | (h.discard_my_data as u8) << 1
                        | (h.allow_two_primaries as u8) << 2,
                );
                b.extend_from_slice(&h.dirty_bits.to_be_bytes());
            }
            Msg::Data {
                seq,
                offset,
                fua,
                data,
            } => {
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&offset.to_be_bytes());
                b.push(*fua as u8);
                b.extend_from_slice(data);
            }
            Msg::RecvAck { seq } | Msg::WriteAck { seq } | Msg::NegAck { seq } => {
                b.extend_from_slice(&seq.to_be_bytes())
            }
            Msg::Barrier { epoch, before_seq } => {
                b.extend_from_slice(&epoch.to_be_bytes());
                b.extend_from_slice(&before_seq.to_be_bytes());
            }
            Msg::BarrierAck { epoch } => b.extend_from_slice(&epoch.to_be_bytes()),
            Msg::Bitmap { start_word, words } => {
                b.extend_from_slice(&start_word.to_be_bytes());
                for w in words {
                    b.extend_from_slice(&w.to_be_bytes());
                }
            }
            Msg::BitmapDone | Msg::Ping | Msg::PingAck => {}
            Msg::ResyncData { offset, data } => {
                b.extend_from_slice(&offset.to_be_bytes());
                b.extend_from_slice(data);
            }
            Msg::ResyncAck { offset, len } => {
                b.extend_from_slice(&offset.to_be_bytes());
                b.extend_from_slice(&len.to_be_bytes());
            }
            Msg::ResyncDone { gen: g } => gen(&mut b, g),
            Msg::VerifyReq {
                offset,
                len,
                digest,
            } => {
                b.extend_from_slice(&offset.to_be_bytes());
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(&digest.to_be_bytes());
            }
            Msg::VerifyReply { offset, len, equal } => {
                b.extend_from_slice(&offset.to_be_bytes());
                b.extend_from_slice(&len.to_be_bytes());
                b.push(*equal as u8);
            }
            Msg::State { role, disk } => {
                b.push(role_code(*role));
                b.push(*disk as u8);
            }
        }
        let len = (b.len() - FRAME_HEADER) as u32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// Encodes one frame as a header and a payload, moving (not copying) the data of `Data` and
    /// `ResyncData`; sending both back to back gives exactly [`Msg::encode`].
    pub fn encode_parts(self) -> (Vec<u8>, Bytes) {
        match self {
            Msg::Data {
                seq,
                offset,
                fua,
                data,
            } => {
                let mut h = Msg::Data {
                    seq,
                    offset,
                    fua,
                    data: Bytes::new(),
                }
                .encode();
                let len = (h.len() - FRAME_HEADER + data.len()) as u32;
                h[8..12].copy_from_slice(&len.to_be_bytes());
                (h, data)
            }
            Msg::ResyncData { offset, data } => {
                let mut h = Msg::ResyncData {
                    offset,
                    data: Bytes::new(),
                }
                .encode();
                let len = (h.len() - FRAME_HEADER + data.len()) as u32;
                h[8..12].copy_from_slice(&len.to_be_bytes());
                (h, data)
            }
            other => (other.encode(), Bytes::new()),
        }
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` if more bytes are needed, otherwise the
    /// message and the bytes it used. Errors mean the connection must be dropped. Payloads are copied
    /// out of `buf`; [`Msg::decode_frame`] shares them instead.
    pub fn decode(buf: &[u8]) -> Result<Option<(Msg, usize)>, DecodeError> {
        let Some(total) = Msg::frame_len(buf)? else {
            return Ok(None);
        };
        let msg = decode_body(
            u16::from_be_bytes([buf[6], buf[7]]),
            &buf[FRAME_HEADER..total],
            None,
        )?;
        Ok(Some((msg, total)))
    }

    /// The length of the frame at the front of `buf` once its header is there (`Ok(None)` before),
    /// after checking magic, version and size.
    pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() < FRAME_HEADER {
            return Ok(None);
        }
        let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if magic != MSG_MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([buf[4], buf[5]]);
        if version != MSG_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len > MAX_FRAME {
            return Err(DecodeError::TooLarge(len));
        }
        let total = FRAME_HEADER + len as usize;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Decodes exactly one whole frame (as cut by [`Msg::frame_len`]); the payload of `Data` and
    /// `ResyncData` is a view of `frame`, not a copy.
    pub fn decode_frame(frame: &Bytes) -> Result<Msg, DecodeError> {
        match Msg::frame_len(frame)? {
            Some(total) if total == frame.len() => decode_body(
                u16::from_be_bytes([frame[6], frame[7]]),
                &frame[FRAME_HEADER..],
                Some(frame),
            ),
            _ => Err(DecodeError::Malformed(
                frame
                    .get(6..8)
                    .map_or(0, |t| u16::from_be_bytes([t[0], t[1]])),
            )),
        }
    }
}

struct R<'a> {
    b: &'a [u8],
    ty: u16,
    /// The whole frame when payloads may be shared with it.
    src: Option<&'a Bytes>,
}
impl<'a> R<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Malformed(self.ty));
        }
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn gen(&mut self) -> Result<Gen, DecodeError> {
        Ok(Gen {
            current: self.u64()?,
            bitmap: self.u64()?,
            history: [self.u64()?, self.u64()?],
        })
    }
    fn rest(&mut self) -> Bytes {
        let b = std::mem::take(&mut self.b);
        match self.src {
            Some(src) => src.slice_ref(b),
            None => Bytes::copy_from_slice(b),
        }
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(self.ty))
        }
    }
}

fn decode_body<'a>(ty: u16, body: &'a [u8], src: Option<&'a Bytes>) -> Result<Msg, DecodeError> {
    let mut r = R { b: body, ty, src };
    let bad = DecodeError::Malformed(ty);
    let m = match ty {
        1 => {
            let node_id = r.u32()?;
            let size = r.u64()?;
            let granularity = r.u32()?;
            let protocol = proto_from(r.u8()?).ok_or(bad.clone())?;
            let gen = r.gen()?;
            let role = role_from(r.u8()?).ok_or(bad.clone())?;
            let disk = DiskState::from_code(r.u8()?).ok_or(bad.clone())?;
            let f = r.u8()?;
            if f & !7 != 0 {
                return Err(bad);
            }
            let dirty_bits = r.u64()?;
            Msg::Hello(Hello {
                node_id,
                size,
                granularity,
                protocol,
                gen,
                role,
                disk,
                crashed_primary: f & 1 != 0,
                discard_my_data: f & 2 != 0,
                allow_two_primaries: f & 4 != 0,
                dirty_bits,
            })
        }
        2 => {
            let seq = r.u64()?;
            let offset = r.u64()?;
            let fua = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(bad),
            };
            Msg::Data {
                seq,
                offset,
                fua,
                data: r.rest(),
            }
        }
        3 => Msg::RecvAck { seq: r.u64()? },
        4 => Msg::WriteAck { seq: r.u64()? },
        5 => Msg::NegAck { seq: r.u64()? },
        6 => Msg::Barrier {
            epoch: r.u64()?,
            before_seq: r.u64()?,
        },
        7 => Msg::BarrierAck { epoch: r.u64()? },
        8 => {
            let start_word = r.u64()?;
            if !r.b.len().is_multiple_of(8) {
                return Err(bad);
            }
            let mut words = Vec::with_capacity(r.b.len() / 8);
            while !r.b.is_empty() {
                words.push(r.u64()?);
            }
            Msg::Bitmap { start_word, words }
        }
        9 => Msg::BitmapDone,
        10 => {
            let offset = r.u64()?;
            Msg::ResyncData {
                offset,
                data: r.rest(),
            }
        }
        11 => Msg::ResyncAck {
            offset: r.u64()?,
            len: r.u32()?,
        },
        12 => Msg::ResyncDone { gen: r.gen()? },
        13 => Msg::VerifyReq {
            offset: r.u64()?,
            len: r.u32()?,
            digest: r.u32()?,
        },
        14 => {
            let offset = r.u64()?;
            let len = r.u32()?;
            let equal = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(bad),
            };
            Msg::VerifyReply { offset, len, equal }
        }
        15 => {
            let role = role_from(r.u8()?).ok_or(bad.clone())?;
            let disk = DiskState::from_code(r.u8()?).ok_or(bad)?;
            Msg::State { role, disk }
        }
        16 => Msg::Ping,
        17 => Msg::PingAck,
        other => return Err(DecodeError::UnknownType(other)),
    };
    r.end()?;
    Ok(m)
}
