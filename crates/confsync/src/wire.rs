//! The messages members multicast in totem's agreed order, and their binary encoding.
//!
//! Binary rather than JSON so a 48 KiB chunk of XML never grows past totem's payload
//! limit through escaping. [`ConfSyncMsg::decode`] checks every length and field
//! against the limits below and never panics on garbage.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Largest cluster.conf text the cluster distributes (1 MiB; real files are a few KiB).
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Bytes of text per chunk message (fits totem's 60 KiB payload with the header and tag).
pub const CHUNK_BYTES: usize = 48 * 1024;
/// Most chunks one text can take.
pub const MAX_CHUNKS: usize = MAX_TEXT_BYTES.div_ceil(CHUNK_BYTES);
/// Largest encoded message.
pub const MAX_MSG_BYTES: usize = CHUNK_HEADER + CHUNK_BYTES;

const FORMAT: u8 = 1;
const KIND_ANNOUNCE: u8 = 1;
const KIND_PUSH: u8 = 2;
const KIND_TRANSFER: u8 = 3;
const ANNOUNCE_LEN: usize = 2 + 8 + 8 + 32 + 1;
// format, kind, ring, ticket, version, hash, total_len, index, count, data_len
const CHUNK_HEADER: usize = 2 + 8 + 8 + 8 + 32 + 4 + 2 + 2 + 4;

/// SHA-256 of a config text: what members compare to know they run the same file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigHash(pub [u8; 32]);

impl ConfigHash {
    /// The hash of `text`.
    pub fn of(text: &[u8]) -> Self {
        ConfigHash(Sha256::digest(text).into())
    }
    /// The first 12 hex digits, enough for logs and status lines.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl Serialize for ConfigHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ConfigHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(serde::de::Error::custom("a config hash is 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let txt = std::str::from_utf8(pair).map_err(serde::de::Error::custom)?;
            out[i] = u8::from_str_radix(txt, 16).map_err(serde::de::Error::custom)?;
        }
        Ok(ConfigHash(out))
    }
}

/// A member's config, announced after every membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The configuration (ring) this announcement belongs to.
    pub ring: u64,
    /// config_version in force on the sender.
    pub version: u64,
    /// Hash of the text in force on the sender.
    pub hash: ConfigHash,
    /// True when the sender's config was agreed by a quorate partition it was part of.
    pub agreed: bool,
}

/// Why a text travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// `quorate config push` on the sender; `ticket` identifies it there.
    Push {
        /// The pusher's ticket number.
        ticket: u64,
    },
    /// The newest config sent to members that joined with an older one.
    Transfer,
}

/// One piece of a config text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextChunk {
    /// The ring the text was sent for; other rings ignore it.
    pub ring: u64,
    /// Push or transfer.
    pub kind: ChunkKind,
    /// config_version of the whole text.
    pub version: u64,
    /// Hash of the whole text.
    pub hash: ConfigHash,
    /// Length of the whole text.
    pub total_len: u32,
    /// 0-based index of this chunk.
    pub index: u16,
    /// Number of chunks.
    pub count: u16,
    /// This chunk's bytes.
    pub data: Vec<u8>,
}

/// A config-sync message, multicast in agreed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfSyncMsg {
    /// "I run version V with hash H."
    Announce(Announce),
    /// A piece of a pushed or transferred text.
    Chunk(TextChunk),
}

/// A message that could not be decoded (it is dropped and counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing to decode.
    #[error("empty config-sync message")]
    Empty,
    /// A format this node does not know (a newer quorate?).
    #[error("config-sync message format {0} is unknown; are all nodes running the same quorate version?")]
    UnknownFormat(u8),
    /// A message kind this node does not know.
    #[error("config-sync message kind {0} is unknown")]
    UnknownKind(u8),
    /// Larger than [`MAX_MSG_BYTES`].
    #[error("config-sync message of {0} bytes exceeds the limit of {MAX_MSG_BYTES}")]
    TooLarge(usize),
    /// Shorter or longer than its fields say.
    #[error("config-sync message has the wrong length")]
    BadLength,
    /// A field out of range.
    #[error("config-sync chunk is inconsistent: {0}")]
    BadChunk(&'static str),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::BadLength);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn hash(&mut self) -> Result<ConfigHash, DecodeError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(ConfigHash(a))
    }
}

/// How many chunks a text of `len` bytes takes (at least one, even when empty).
pub fn chunk_count(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES).max(1)
}

impl TextChunk {
    /// Checks that the chunk is consistent with itself and the limits.
    fn check(&self) -> Result<(), DecodeError> {
        let total = self.total_len as usize;
        if total > MAX_TEXT_BYTES {
            return Err(DecodeError::BadChunk("text larger than the 1 MiB limit"));
        }
        if usize::from(self.count) != chunk_count(total) {
            return Err(DecodeError::BadChunk("chunk count does not fit the length"));
        }
        if self.index >= self.count {
            return Err(DecodeError::BadChunk("chunk index past the count"));
        }
        let start = usize::from(self.index) * CHUNK_BYTES;
        let expect = (total - start).min(CHUNK_BYTES);
        if self.data.len() != expect {
            return Err(DecodeError::BadChunk("chunk size does not fit the length"));
        }
        Ok(())
    }
}

/// Splits `text` into the chunks that carry it.
pub fn split_text(
    ring: u64,
    kind: ChunkKind,
    version: u64,
    hash: ConfigHash,
    text: &[u8],
) -> Vec<TextChunk> {
    let count = chunk_count(text.len());
    (0..count)
        .map(|i| {
            let start = i * CHUNK_BYTES;
            let end = (start + CHUNK_BYTES).min(text.len());
            TextChunk {
                ring,
                kind,
                version,
                hash,
                total_len: text.len() as u32,
                index: i as u16,
                count: count as u16,
                data: text[start..end].to_vec(),
            }
        })
        .collect()
}

impl ConfSyncMsg {
    /// The bytes to multicast (the driver prepends its layer tag).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ConfSyncMsg::Announce(a) => {
                let mut b = Vec::with_capacity(ANNOUNCE_LEN);
                b.extend_from_slice(&[FORMAT, KIND_ANNOUNCE]);
                b.extend_from_slice(&a.ring.to_le_bytes());
                b.extend_from_slice(&a.version.to_le_bytes());
                b.extend_from_slice(&a.hash.0);
                b.push(u8::from(a.agreed));
                b
            }
            ConfSyncMsg::Chunk(c) => {
                let mut b = Vec::with_capacity(CHUNK_HEADER + c.data.len());
                let (kind, ticket) = match c.kind {
                    ChunkKind::Push { ticket } => (KIND_PUSH, ticket),
                    ChunkKind::Transfer => (KIND_TRANSFER, 0),
                };
                b.extend_from_slice(&[FORMAT, kind]);
                b.extend_from_slice(&c.ring.to_le_bytes());
                b.extend_from_slice(&ticket.to_le_bytes());
                b.extend_from_slice(&c.version.to_le_bytes());
                b.extend_from_slice(&c.hash.0);
                b.extend_from_slice(&c.total_len.to_le_bytes());
                b.extend_from_slice(&c.index.to_le_bytes());
                b.extend_from_slice(&c.count.to_le_bytes());
                b.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
                b.extend_from_slice(&c.data);
                b
            }
        }
    }

    /// Decodes a message received through totem (without the layer tag).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MSG_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut r = Reader { b: bytes };
        let format = r.u8().map_err(|_| DecodeError::Empty)?;
        if format != FORMAT {
            return Err(DecodeError::UnknownFormat(format));
        }
        let kind = r.u8()?;
        let msg = match kind {
            KIND_ANNOUNCE => {
                let ring = r.u64()?;
                let version = r.u64()?;
                let hash = r.hash()?;
                let agreed = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadChunk("agreed flag is not 0 or 1")),
                };
                ConfSyncMsg::Announce(Announce {
                    ring,
                    version,
                    hash,
                    agreed,
                })
            }
            KIND_PUSH | KIND_TRANSFER => {
                let ring = r.u64()?;
                let ticket = r.u64()?;
                let version = r.u64()?;
                let hash = r.hash()?;
                let total_len = r.u32()?;
                let index = r.u16()?;
                let count = r.u16()?;
                let len = r.u32()? as usize;
                if len > CHUNK_BYTES {
                    return Err(DecodeError::BadChunk("chunk larger than 48 KiB"));
                }
                let data = r.take(len)?.to_vec();
                let kind = if kind == KIND_PUSH {
                    ChunkKind::Push { ticket }
                } else if ticket == 0 {
                    ChunkKind::Transfer
                } else {
                    return Err(DecodeError::BadChunk("a transfer carries no ticket"));
                };
                let c = TextChunk {
                    ring,
                    kind,
                    version,
                    hash,
                    total_len,
                    index,
                    count,
                    data,
                };
                c.check()?;
                ConfSyncMsg::Chunk(c)
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if !r.b.is_empty() {
            return Err(DecodeError::BadLength);
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn announce_round_trips() {
        let m = ConfSyncMsg::Announce(Announce {
            ring: 7,
            version: 2013060401,
            hash: ConfigHash::of(b"x"),
            agreed: true,
        });
        assert_eq!(ConfSyncMsg::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn big_text_splits_and_every_chunk_round_trips_within_the_limit() {
        let text = vec![b'a'; CHUNK_BYTES * 2 + 5];
        let h = ConfigHash::of(&text);
        let chunks = split_text(3, ChunkKind::Push { ticket: 9 }, 4, h, &text);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2].data.len(), 5);
        for c in chunks {
            let bytes = ConfSyncMsg::Chunk(c.clone()).encode();
            assert!(bytes.len() <= MAX_MSG_BYTES);
            assert!(
                bytes.len() < 60 * 1024,
                "must fit totem's payload with the tag"
            );
            assert_eq!(ConfSyncMsg::decode(&bytes), Ok(ConfSyncMsg::Chunk(c)));
        }
    }

    #[test]
    fn inconsistent_chunks_are_refused() {
        let text = b"hello".to_vec();
        let mut c = split_text(1, ChunkKind::Transfer, 1, ConfigHash::of(&text), &text).remove(0);
        c.count = 2;
        assert!(matches!(
            ConfSyncMsg::decode(&ConfSyncMsg::Chunk(c.clone()).encode()),
            Err(DecodeError::BadChunk(_))
        ));
        c.count = 1;
        c.total_len = 6;
        assert!(matches!(
            ConfSyncMsg::decode(&ConfSyncMsg::Chunk(c).encode()),
            Err(DecodeError::BadChunk(_))
        ));
        assert_eq!(ConfSyncMsg::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            ConfSyncMsg::decode(&[9]),
            Err(DecodeError::UnknownFormat(9))
        );
        assert_eq!(ConfSyncMsg::decode(&[1, 1, 0]), Err(DecodeError::BadLength));
    }

    #[test]
    fn hash_serializes_as_hex_and_back() {
        let h = ConfigHash::of(b"abc");
        let j = serde_json::to_string(&h).unwrap();
        assert!(j.starts_with("\"ba7816bf"));
        assert_eq!(serde_json::from_str::<ConfigHash>(&j).unwrap(), h);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ConfSyncMsg::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(pos in 0usize..120, val in any::<u8>(), len in 0usize..300) {
            let text = vec![b'z'; len];
            let m = ConfSyncMsg::Chunk(split_text(1, ChunkKind::Transfer, 1, ConfigHash::of(&text), &text).remove(0));
            let mut b = m.encode();
            let p = pos % b.len();
            b[p] = val;
            if let Ok(d) = ConfSyncMsg::decode(&b) {
                prop_assert_eq!(d.encode(), b);
            }
        }
    }
}
