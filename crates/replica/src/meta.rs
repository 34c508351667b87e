//! Per-node metadata as stored on disk: generation identifiers, flags, the dirty bitmap and the
//! activity log, with a checksummed encoding whose decoder rejects anything malformed.

use std::collections::VecDeque;

use crate::bitmap::Bitmap;
use crate::gen::Gen;

/// Metadata magic ("QRMD").
pub const META_MAGIC: u32 = 0x5152_4d44;
/// Metadata format version.
pub const META_VERSION: u16 = 1;
/// Bytes covered by one activity-log extent (4 MiB, as DRBD).
pub const AL_EXTENT: u64 = 4 << 20;

/// Disk state of a node's copy (DRBD names).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum DiskState {
    /// No local disk.
    Diskless,
    /// I/O error on the local disk.
    Failed,
    /// Partially synced: unusable on its own.
    Inconsistent,
    /// Consistent but known to be older than the peer's.
    Outdated,
    /// Peer's disk state not known (disconnected).
    DUnknown,
    /// Consistent; whether it is the newest is not known.
    Consistent,
    /// Consistent and current.
    UpToDate,
}

impl DiskState {
    fn code(self) -> u8 {
        self as u8
    }
    /// Decodes a stored disk state.
    pub fn from_code(c: u8) -> Option<Self> {
        use DiskState::*;
        [
            Diskless,
            Failed,
            Inconsistent,
            Outdated,
            DUnknown,
            Consistent,
            UpToDate,
        ]
        .get(c as usize)
        .copied()
    }
}

/// Flags stored with the metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaFlags {
    /// Node is primary (set on promotion, cleared on clean demotion): still set at attach = crashed primary.
    pub primary: bool,
    /// Set while the node runs; cleared on clean shutdown.
    pub dirty_shutdown: bool,
}

/// Why metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Too short.
    #[error("metadata truncated: need {need} bytes, have {have}; re-create it with `quorate replica create-md`")]
    Truncated {
        /// Needed.
        need: usize,
        /// Present.
        have: usize,
    },
    /// Wrong magic.
    #[error("no quorate metadata here (magic {0:#x}); create it with `quorate replica create-md`")]
    BadMagic(u32),
    /// Unknown version.
    #[error("metadata version {0} is not supported by this build")]
    BadVersion(u16),
    /// Checksum mismatch.
    #[error("metadata checksum mismatch: the metadata area is corrupt")]
    BadChecksum,
    /// Inconsistent field values.
    #[error("metadata field invalid: {0}")]
    Invalid(&'static str),
}

/// The activity log: the set of "hot" 4 MiB extents that may have writes in flight. An extent must be
/// recorded durably before a write to it starts; after a primary crash, only these extents need resync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityLog {
    capacity: usize,
    extents: VecDeque<u64>,
}

impl ActivityLog {
    /// An empty log of at most `capacity` extents (DRBD's al-extents, default 1237).
    pub fn new(capacity: usize) -> Self {
        ActivityLog {
            capacity: capacity.max(1),
            extents: VecDeque::new(),
        }
    }

    /// Hot extents, most recently used last.
    pub fn extents(&self) -> impl Iterator<Item = u64> + '_ {
        self.extents.iter().copied()
    }

    /// Capacity in extents.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Marks the extents of a write hot. Returns true if the set changed (the log must be persisted
    /// before the write starts); an extent already hot only moves to the back (no persist needed).
    pub fn touch(&mut self, offset: u64, len: u64) -> bool {
        let first = offset / AL_EXTENT;
        let last = (offset + len.max(1) - 1) / AL_EXTENT;
        let mut changed = false;
        for e in first..=last {
            if let Some(p) = self.extents.iter().position(|x| *x == e) {
                self.extents.remove(p);
            } else {
                changed = true;
                if self.extents.len() >= self.capacity {
                    self.extents.pop_front();
                }
            }
            self.extents.push_back(e);
        }
        changed
    }

    /// Marks every hot extent dirty in `bm` (recovery after a primary crash).
    pub fn mark_dirty(&self, bm: &mut Bitmap) -> u64 {
        self.extents
            .iter()
            .map(|e| bm.set_range(e * AL_EXTENT, AL_EXTENT))
            .sum()
    }
}

/// Activity-log record magic ("QRAL").
pub const AL_MAGIC: u32 = 0x5152_414c;

impl ActivityLog {
    /// Bytes of an encoded record of a log of `capacity` extents.
    pub fn record_len(capacity: usize) -> usize {
        4 + 8 + 4 + 4 + 8 * capacity.max(1) + 4
    }

    /// One activity-log transaction as written in place (the driver keeps two slots and writes
    /// them alternately, so a torn write leaves the other intact): magic, sequence number,
    /// capacity, extents (oldest first), CRC32. Big-endian; always [`record_len`] bytes, zero
    /// padded.
    ///
    /// [`record_len`]: ActivityLog::record_len
    pub fn encode_record(&self, seq: u64) -> Vec<u8> {
        let len = Self::record_len(self.capacity);
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&AL_MAGIC.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&(self.capacity as u32).to_be_bytes());
        b.extend_from_slice(&(self.extents.len() as u32).to_be_bytes());
        for e in &self.extents {
            b.extend_from_slice(&e.to_be_bytes());
        }
        b.resize(len - 4, 0);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes a record: its sequence number and log. Never panics on arbitrary input.
    pub fn decode_record(b: &[u8]) -> Result<(u64, ActivityLog), MetaError> {
        let head = 4 + 8 + 4 + 4;
        if b.len() < head + 4 {
            return Err(MetaError::Truncated {
                need: head + 4,
                have: b.len(),
            });
        }
        let mut r = Reader(b, 0);
        let magic = r.u32();
        if magic != AL_MAGIC {
            return Err(MetaError::BadMagic(magic));
        }
        let seq = r.u64();
        let cap = r.u32() as usize;
        let n = r.u32() as usize;
        if cap == 0 || n > cap || cap > 1 << 24 {
            return Err(MetaError::Invalid("activity log size"));
        }
        let len = Self::record_len(cap);
        if b.len() < len {
            return Err(MetaError::Truncated {
                need: len,
                have: b.len(),
            });
        }
        let crc = u32::from_be_bytes([b[len - 4], b[len - 3], b[len - 2], b[len - 1]]);
        if crc32fast::hash(&b[..len - 4]) != crc {
            return Err(MetaError::BadChecksum);
        }
        let mut al = ActivityLog::new(cap);
        for _ in 0..n {
            al.extents.push_back(r.u64());
        }
        Ok((seq, al))
    }
}

/// Everything a node persists about its copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Size of the replicated data in bytes.
    pub size: u64,
    /// Generation identifiers.
    pub gen: Gen,
    /// Local disk state.
    pub disk: DiskState,
    /// Flags.
    pub flags: MetaFlags,
    /// Dirty bitmap.
    pub bitmap: Bitmap,
    /// Activity log.
    pub al: ActivityLog,
}

const HEADER_LEN: usize = 4 + 2 + 8 + 8 + 8 + 16 + 1 + 1 + 4 + 4 + 8 + 4;

impl Metadata {
    /// Metadata of a fresh disk: Inconsistent, generation JUST_CREATED, clean bitmap.
    pub fn fresh(size: u64, granularity: u32, al_extents: usize) -> Self {
        Metadata {
            size,
            gen: Gen::fresh(),
            disk: DiskState::Inconsistent,
            flags: MetaFlags::default(),
            bitmap: Bitmap::new(size, granularity),
            al: ActivityLog::new(al_extents),
        }
    }

    /// Encodes: header, AL extents, bitmap words, CRC32 of everything before it. Big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let al: Vec<u64> = self.al.extents().collect();
        let words = self.bitmap.words();
        let mut b = Vec::with_capacity(HEADER_LEN + 8 * (al.len() + words.len()) + 4);
        b.extend_from_slice(&META_MAGIC.to_be_bytes());
        b.extend_from_slice(&META_VERSION.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.gen.current.to_be_bytes());
        b.extend_from_slice(&self.gen.bitmap.to_be_bytes());
        b.extend_from_slice(&self.gen.history[0].to_be_bytes());
        b.extend_from_slice(&self.gen.history[1].to_be_bytes());
        b.push(self.disk.code());
        b.push(self.flags.primary as u8 | (self.flags.dirty_shutdown as u8) << 1);
        b.extend_from_slice(&self.bitmap.granularity().to_be_bytes());
        b.extend_from_slice(&(self.al.capacity() as u32).to_be_bytes());
        b.extend_from_slice(&(words.len() as u64).to_be_bytes());
        b.extend_from_slice(&(al.len() as u32).to_be_bytes());
        for e in &al {
            b.extend_from_slice(&e.to_be_bytes());
        }
        for w in words {
            b.extend_from_slice(&w.to_be_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes and validates; never panics on arbitrary input.
    pub fn decode(b: &[u8]) -> Result<Self, MetaError> {
        let need = HEADER_LEN + 4;
        if b.len() < need {
            return Err(MetaError::Truncated {
                need,
                have: b.len(),
            });
        }
        let mut r = Reader(b, 0);
        let magic = r.u32();
        if magic != META_MAGIC {
            return Err(MetaError::BadMagic(magic));
        }
        let version = r.u16();
        if version != META_VERSION {
            return Err(MetaError::BadVersion(version));
        }
        let size = r.u64();
        let gen = Gen {
            current: r.u64(),
            bitmap: r.u64(),
            history: [r.u64(), r.u64()],
        };
        let disk = DiskState::from_code(r.u8()).ok_or(MetaError::Invalid("disk state"))?;
        let fl = r.u8();
        let granularity = r.u32();
        let al_cap = r.u32();
        let nwords = r.u64();
        let nal = r.u32() as u64;
        if !granularity.is_power_of_two() || granularity < 512 {
            return Err(MetaError::Invalid("bitmap granularity"));
        }
        if al_cap == 0 || nal > al_cap as u64 {
            return Err(MetaError::Invalid("activity log size"));
        }
        let expect_words = size.div_ceil(granularity as u64).div_ceil(64);
        if nwords != expect_words {
            return Err(MetaError::Invalid("bitmap length does not match size"));
        }
        let total = (nal + nwords)
            .checked_mul(8)
            .and_then(|x| x.checked_add(need as u64))
            .ok_or(MetaError::Invalid("lengths overflow"))?;
        if (b.len() as u64) < total {
            return Err(MetaError::Truncated {
                need: total.min(usize::MAX as u64) as usize,
                have: b.len(),
            });
        }
        let body = total as usize - 4;
        let crc = u32::from_be_bytes([b[body], b[body + 1], b[body + 2], b[body + 3]]);
        if crc32fast::hash(&b[..body]) != crc {
            return Err(MetaError::BadChecksum);
        }
        let mut al = ActivityLog::new(al_cap as usize);
        for _ in 0..nal {
            let e = r.u64();
            al.extents.push_back(e);
        }
        let words: Vec<u64> = (0..nwords).map(|_| r.u64()).collect();
        Ok(Metadata {
            size,
            gen,
            disk,
            flags: MetaFlags {
                primary: fl & 1 != 0,
                dirty_shutdown: fl & 2 != 0,
            },
            bitmap: Bitmap::from_words(size, granularity, words),
            al,
        })
    }
}

/// Bounds-checked only by the callers above (lengths validated before reading).
struct Reader<'a>(&'a [u8], usize);
impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.0[self.1..self.1 + N]);
        self.1 += N;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}
