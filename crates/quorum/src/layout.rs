//! On-disk format of the quorum disk.
//!
//! The device is [`DISK_BLOCKS`] blocks of [`BLOCK_SIZE`] bytes (4096, so
//! `O_DIRECT` works on 512e and 4Kn devices alike):
//!
//! * block 0: the header written once by `quorate qdisk format` (mkqdisk):
//!   magic, version, block size, node slots, cluster name, label, CRC32.
//! * block n (1..=16): the status block of node n, written only by node n:
//!   magic, node id, incarnation, sequence counter, timestamp, state, score,
//!   bid, master mask, CRC32.
//!
//! All integers are little endian. A block of zeros was never written; any
//! other block whose magic or checksum is wrong is corrupt (torn write, foreign
//! data) and is treated as "no update" by the readers. Each block has exactly
//! one writer, so a torn block is only ever the writer's own previous cycle.

use base::NodeId;
use serde::Serialize;
use thiserror::Error;

/// Bytes per block.
pub const BLOCK_SIZE: usize = 4096;
/// Node slots on the disk (qdiskd's limit).
pub const MAX_NODES: u32 = 16;
/// Blocks on the disk: the header and one per node.
pub const DISK_BLOCKS: usize = 1 + MAX_NODES as usize;
/// Bytes the quorum disk needs.
pub const DISK_BYTES: usize = DISK_BLOCKS * BLOCK_SIZE;
/// Format version.
pub const VERSION: u32 = 1;
/// Longest cluster name or label, in bytes.
pub const MAX_NAME: usize = 64;

const HEADER_MAGIC: &[u8; 8] = b"QRTQDSK1";
const STATUS_MAGIC: &[u8; 8] = b"QRTQSTS1";
const HEADER_LEN: usize = 8 + 4 + 4 + 4 + MAX_NAME + MAX_NAME;
const STATUS_LEN: usize = 8 + 4 + 8 + 8 + 8 + 1 + 4 + 4 + 4 + 4;

/// Byte offset of node `n`'s status block.
pub fn block_offset(node: NodeId) -> u64 {
    u64::from(node.0) * BLOCK_SIZE as u64
}

/// The disk header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Header {
    /// Cluster the disk belongs to.
    pub cluster_name: String,
    /// Free-form label (mkqdisk -l).
    pub label: String,
}

/// What a node advertises in its status block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum DiskState {
    /// Starting: learning who is on the disk, not advertising.
    Init = 1,
    /// Online, score high enough, not master.
    Run = 2,
    /// Online and the disk master.
    Master = 3,
    /// Alive but not advertising (score below min_score, or I/O trouble).
    Down = 4,
}

impl DiskState {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(DiskState::Init),
            2 => Some(DiskState::Run),
            3 => Some(DiskState::Master),
            4 => Some(DiskState::Down),
            _ => None,
        }
    }

    /// Online for elections and votes.
    pub fn is_online(self) -> bool {
        matches!(self, DiskState::Run | DiskState::Master)
    }
}

/// One node's status block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StatusBlock {
    /// The writer.
    pub node_id: NodeId,
    /// Changes every time the writer's qdisk process starts.
    pub incarnation: u64,
    /// Incremented on every write: liveness is judged by this counter.
    pub seq: u64,
    /// Writer's monotonic time in nanoseconds (informational only).
    pub timestamp: u64,
    /// Advertised state.
    pub state: DiskState,
    /// Heuristic score.
    pub score: u32,
    /// Highest possible score.
    pub score_max: u32,
    /// Node this writer wants as master (0: none).
    pub bid_for: u32,
    /// Written by the master: bit n-1 set = node n gets the disk votes.
    pub master_mask: u32,
}

/// A block that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// Too few bytes.
    #[error("quorum disk area is {0} bytes, it needs {DISK_BYTES}: use a device or file of at least 68 KiB")]
    Short(usize),
    /// All zeros: not formatted.
    #[error("the quorum disk is not formatted: run `quorate qdisk format --cluster NAME DEVICE`")]
    Unformatted,
    /// Wrong magic.
    #[error("not a quorate quorum disk (bad magic): check the device path, or format it with `quorate qdisk format`")]
    BadMagic,
    /// CRC mismatch.
    #[error("checksum mismatch (torn or corrupted block)")]
    BadChecksum,
    /// Unknown version.
    #[error("quorum disk format version {0} is not supported (this build reads version 1)")]
    Version(u32),
    /// Field out of range.
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}

/// A name too long or empty for the header.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what} must be 1 to 64 bytes without NUL, got {len} bytes")]
pub struct NameError {
    what: &'static str,
    len: usize,
}

fn put_name(
    buf: &mut [u8],
    name: &str,
    what: &'static str,
    allow_empty: bool,
) -> Result<(), NameError> {
    let b = name.as_bytes();
    if b.len() > MAX_NAME || (b.is_empty() && !allow_empty) || b.contains(&0) {
        return Err(NameError { what, len: b.len() });
    }
    buf[..b.len()].copy_from_slice(b);
    Ok(())
}

fn get_name(buf: &[u8]) -> Result<String, LayoutError> {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).map_err(|_| LayoutError::Invalid("name is not UTF-8"))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl Header {
    /// Encode into one block.
    pub fn encode(&self) -> Result<Vec<u8>, NameError> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[0..8].copy_from_slice(HEADER_MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        b[16..20].copy_from_slice(&MAX_NODES.to_le_bytes());
        put_name(
            &mut b[20..20 + MAX_NAME],
            &self.cluster_name,
            "cluster name",
            false,
        )?;
        put_name(
            &mut b[20 + MAX_NAME..HEADER_LEN],
            &self.label,
            "label",
            true,
        )?;
        let crc = crc32fast::hash(&b[..HEADER_LEN]);
        b[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    /// Decode block 0.
    pub fn decode(b: &[u8]) -> Result<Header, LayoutError> {
        if b.len() < HEADER_LEN + 4 {
            return Err(LayoutError::Short(b.len()));
        }
        if b[..HEADER_LEN + 4].iter().all(|&c| c == 0) {
            return Err(LayoutError::Unformatted);
        }
        if &b[0..8] != HEADER_MAGIC {
            return Err(LayoutError::BadMagic);
        }
        if crc32fast::hash(&b[..HEADER_LEN]) != u32_at(b, HEADER_LEN) {
            return Err(LayoutError::BadChecksum);
        }
        let v = u32_at(b, 8);
        if v != VERSION {
            return Err(LayoutError::Version(v));
        }
        if u32_at(b, 12) as usize != BLOCK_SIZE || u32_at(b, 16) != MAX_NODES {
            return Err(LayoutError::Invalid("block size or node slots"));
        }
        Ok(Header {
            cluster_name: get_name(&b[20..20 + MAX_NAME])?,
            label: get_name(&b[20 + MAX_NAME..HEADER_LEN])?,
        })
    }
}

/// A freshly formatted disk image (mkqdisk): header plus empty node slots.
pub fn format_image(cluster_name: &str, label: &str) -> Result<Vec<u8>, NameError> {
    let mut img = Header {
        cluster_name: cluster_name.to_string(),
        label: label.to_string(),
    }
    .encode()?;
    img.resize(DISK_BYTES, 0);
    Ok(img)
}

impl StatusBlock {
    /// Encode into one block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[0..8].copy_from_slice(STATUS_MAGIC);
        b[8..12].copy_from_slice(&self.node_id.0.to_le_bytes());
        b[12..20].copy_from_slice(&self.incarnation.to_le_bytes());
        b[20..28].copy_from_slice(&self.seq.to_le_bytes());
        b[28..36].copy_from_slice(&self.timestamp.to_le_bytes());
        b[36] = self.state as u8;
        b[37..41].copy_from_slice(&self.score.to_le_bytes());
        b[41..45].copy_from_slice(&self.score_max.to_le_bytes());
        b[45..49].copy_from_slice(&self.bid_for.to_le_bytes());
        b[49..53].copy_from_slice(&self.master_mask.to_le_bytes());
        let crc = crc32fast::hash(&b[..STATUS_LEN]);
        b[STATUS_LEN..STATUS_LEN + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode a status block; `Ok(None)` for a never-written (zero) block.
    pub fn decode(b: &[u8]) -> Result<Option<StatusBlock>, LayoutError> {
        if b.len() < STATUS_LEN + 4 {
            return Err(LayoutError::Short(b.len()));
        }
        if b[..STATUS_LEN + 4].iter().all(|&c| c == 0) {
            return Ok(None);
        }
        if &b[0..8] != STATUS_MAGIC {
            return Err(LayoutError::BadMagic);
        }
        if crc32fast::hash(&b[..STATUS_LEN]) != u32_at(b, STATUS_LEN) {
            return Err(LayoutError::BadChecksum);
        }
        let node_id = u32_at(b, 8);
        if node_id == 0 || node_id > MAX_NODES {
            return Err(LayoutError::Invalid("node id"));
        }
        Ok(Some(StatusBlock {
            node_id: NodeId(node_id),
            incarnation: u64_at(b, 12),
            seq: u64_at(b, 20),
            timestamp: u64_at(b, 28),
            state: DiskState::from_u8(b[36]).ok_or(LayoutError::Invalid("state"))?,
            score: u32_at(b, 37),
            score_max: u32_at(b, 41),
            bid_for: u32_at(b, 45),
            master_mask: u32_at(b, 49),
        }))
    }
}

/// Bit for node `n` in a master mask.
pub fn mask_bit(n: NodeId) -> u32 {
    if n.0 == 0 || n.0 > MAX_NODES {
        0
    } else {
        1 << (n.0 - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusBlock {
        StatusBlock {
            node_id: NodeId(3),
            incarnation: 0xdead_beef,
            seq: 42,
            timestamp: 7,
            state: DiskState::Master,
            score: 2,
            score_max: 3,
            bid_for: 3,
            master_mask: 0b101,
        }
    }

    #[test]
    fn status_block_round_trips_and_detects_any_flipped_byte() {
        let s = sample();
        let b = s.encode();
        assert_eq!(StatusBlock::decode(&b), Ok(Some(s)));
        for i in 0..STATUS_LEN + 4 {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(
                StatusBlock::decode(&c).is_err(),
                "flip at byte {i} not detected"
            );
        }
    }

    #[test]
    fn torn_block_is_corrupt_and_zero_block_is_empty() {
        let old = sample().encode();
        let new = StatusBlock {
            seq: 43,
            state: DiskState::Run,
            ..sample()
        }
        .encode();
        let mut torn = new.clone();
        torn[30..].copy_from_slice(&old[30..]);
        assert_eq!(StatusBlock::decode(&torn), Err(LayoutError::BadChecksum));
        assert_eq!(StatusBlock::decode(&vec![0u8; BLOCK_SIZE]), Ok(None));
    }

    #[test]
    fn header_round_trips_and_rejects_bad_names() {
        let img = format_image("an-cluster-A", "qdisk1").unwrap();
        assert_eq!(img.len(), DISK_BYTES);
        let h = Header::decode(&img[..BLOCK_SIZE]).unwrap();
        assert_eq!(h.cluster_name, "an-cluster-A");
        assert_eq!(h.label, "qdisk1");
        assert!(format_image("", "x").is_err());
        assert!(format_image(&"x".repeat(65), "x").is_err());
        assert_eq!(
            Header::decode(&vec![0u8; BLOCK_SIZE]),
            Err(LayoutError::Unformatted)
        );
        let mut bad = img[..BLOCK_SIZE].to_vec();
        bad[25] ^= 1;
        assert_eq!(Header::decode(&bad), Err(LayoutError::BadChecksum));
    }
}
