//! Packet framing, encryption and authentication, and replay protection.
//!
//! Frame layout (big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 2 | magic `0x5154` ("QT") |
//! | 1 | version (1) |
//! | 1 | flags: bit 0 = sealed (encrypted + authenticated) |
//! | 4 | sender node id |
//! | 8 | sender boot epoch |
//! | 8 | sender packet counter |
//! | .. | body: the [`Message`] encoding, or its XChaCha20-Poly1305 ciphertext + 16-byte tag |
//!
//! The 24-byte nonce is `sender ‖ epoch ‖ counter ‖ 0000`, unique as long as
//! the driver increments the persisted boot epoch at every start. The whole
//! header is authenticated as associated data. Receivers keep a sliding
//! window of 128 counters per sender and epoch and reject anything older or
//! already seen (replays); a higher epoch means the sender restarted.
//!
//! The cipher key is SHA-256 over a domain tag and the authkey file's bytes,
//! so an authkey of any length from 32 to 4096 bytes works, as corosync's.
//!
//! # Implementation
//! XChaCha20-Poly1305 is HChaCha20 (key, first 16 nonce bytes) giving a
//! subkey, then ChaCha20-Poly1305 (IETF, 12-byte nonce `0000 ‖ last 8 nonce
//! bytes`) under it. The first 16 nonce bytes here are sender, epoch and the
//! counter's high half, so the subkey changes only every 2^32 frames of one
//! sender and boot: it is derived once and cached (per sender on receive,
//! and only once a frame authenticated under it), and every frame is sealed
//! and opened by `ring`'s assembly ChaCha20-Poly1305, in place. The bytes on
//! the wire are exactly XChaCha20-Poly1305's (a test checks it against the
//! `chacha20poly1305` crate); per 1 KiB frame this is several times cheaper.

use crate::wire::{DecodeError, Message};
use base::NodeId;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// Frame magic.
pub const MAGIC: u16 = 0x5154;
/// Current wire version.
pub const VERSION: u8 = 1;
/// Bytes of frame header.
pub const HEADER_LEN: usize = 24;
/// Bytes of authentication tag added by sealing.
pub const TAG_LEN: usize = 16;
/// Smallest accepted authkey file.
pub const MIN_AUTHKEY: usize = 32;
/// Largest accepted authkey file.
pub const MAX_AUTHKEY: usize = 4096;
/// Size of a key file written by [`generate_authkey`].
pub const AUTHKEY_LEN: usize = 128;

/// The cluster's shared secret. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct ClusterKey {
    key: [u8; 32],
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Problems with an authkey file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Too short or too long.
    #[error("authkey is {0} bytes; it must be {MIN_AUTHKEY}..={MAX_AUTHKEY} bytes (generate one with `quorate keygen`)")]
    BadLength(usize),
    /// All bytes the same: surely not random.
    #[error("authkey bytes are all identical; generate a random one with `quorate keygen`")]
    NotRandom,
}

impl ClusterKey {
    /// Derives the cipher key from the raw bytes of an authkey file.
    pub fn from_authkey(bytes: &[u8]) -> Result<ClusterKey, KeyError> {
        if !(MIN_AUTHKEY..=MAX_AUTHKEY).contains(&bytes.len()) {
            return Err(KeyError::BadLength(bytes.len()));
        }
        if bytes.iter().all(|b| *b == bytes[0]) {
            return Err(KeyError::NotRandom);
        }
        let mut h = Sha256::new();
        h.update(b"quorate-totem-v1\0");
        h.update(bytes);
        Ok(ClusterKey {
            key: h.finalize().into(),
        })
    }
}

/// Builds the content of a new authkey file from caller-supplied random
/// bytes (the driver reads them from the OS; cores never do).
pub fn generate_authkey(random: [u8; AUTHKEY_LEN]) -> Vec<u8> {
    random.to_vec()
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bad magic, version, flags or body.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Sealed frame failed authentication, or plaintext received while a key is set.
    #[error("authentication failed")]
    Auth,
    /// Counter already seen or too old.
    #[error("replayed frame")]
    Replay,
    /// The header's sender is not a configured node.
    #[error("unknown sender {0}")]
    UnknownSender(u32),
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Malformed(e.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    epoch: u64,
    top: u64,
    bits: u128,
}

impl Window {
    /// Accepts (and records) `(epoch, ctr)` if it is new.
    fn accept(&mut self, epoch: u64, ctr: u64) -> bool {
        if epoch < self.epoch {
            return false;
        }
        if epoch > self.epoch {
            *self = Window {
                epoch,
                top: ctr,
                bits: 1,
            };
            return true;
        }
        if ctr > self.top {
            let shift = ctr - self.top;
            self.bits = if shift >= 128 { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = ctr;
            true
        } else {
            let back = self.top - ctr;
            if back >= 128 || self.bits & (1u128 << back) != 0 {
                return false;
            }
            self.bits |= 1u128 << back;
            true
        }
    }
}

/// A ChaCha20-Poly1305 key derived for one (sender, epoch, counter high half).
struct Subkey {
    /// First 16 bytes of the XChaCha nonce it was derived from.
    prefix: [u8; 16],
    key: LessSafeKey,
}

impl Subkey {
    fn derive(master: &[u8; 32], prefix: [u8; 16]) -> Subkey {
        let k = chacha20::hchacha::<chacha20::cipher::consts::U10>(master.into(), (&prefix).into());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &k)
            .expect("a 32-byte key is what CHACHA20_POLY1305 takes");
        Subkey {
            prefix,
            key: LessSafeKey::new(key),
        }
    }
}

/// The 24-byte XChaCha nonce of a frame, split as the cipher uses it: the
/// subkey prefix and the 12-byte inner nonce.
fn nonce_parts(sender: NodeId, epoch: u64, ctr: u64) -> ([u8; 16], [u8; 12]) {
    let mut prefix = [0u8; 16];
    prefix[0..4].copy_from_slice(&sender.0.to_be_bytes());
    prefix[4..12].copy_from_slice(&epoch.to_be_bytes());
    prefix[12..16].copy_from_slice(&ctr.to_be_bytes()[0..4]);
    let mut inner = [0u8; 12];
    inner[4..8].copy_from_slice(&ctr.to_be_bytes()[4..8]);
    (prefix, inner)
}

/// Seals outgoing and opens incoming frames for one node.
pub struct Codec {
    me: NodeId,
    epoch: u64,
    counter: u64,
    master: Option<[u8; 32]>,
    /// Subkey for our own frames.
    own: Option<Subkey>,
    /// Last subkey that authenticated a frame, per sender.
    peers: BTreeMap<NodeId, Subkey>,
    windows: BTreeMap<NodeId, Window>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("me", &self.me)
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .field("sealed", &self.master.is_some())
            .finish()
    }
}

impl Codec {
    /// A codec sending as `me` in boot `epoch`; `key` None sends plaintext
    /// (tests and simulation only; a real cluster always has a key).
    pub fn new(me: NodeId, epoch: u64, key: Option<&ClusterKey>) -> Codec {
        Codec {
            me,
            epoch,
            counter: 0,
            master: key.map(|k| k.key),
            own: None,
            peers: BTreeMap::new(),
            windows: BTreeMap::new(),
        }
    }

    /// Frames (and seals, with a key) one message.
    pub fn seal(&mut self, msg: &Message) -> Vec<u8> {
        self.counter += 1;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.push(VERSION);
        out.push(u8::from(self.master.is_some()));
        out.extend_from_slice(&self.me.0.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        msg.encode_into(&mut out);
        let Some(master) = &self.master else {
            return out;
        };
        let (prefix, inner) = nonce_parts(self.me, self.epoch, self.counter);
        if self.own.as_ref().is_none_or(|k| k.prefix != prefix) {
            self.own = Some(Subkey::derive(master, prefix));
        }
        let key = &self.own.as_ref().expect("derived just above").key;
        let mut aad = [0u8; HEADER_LEN];
        aad.copy_from_slice(&out[..HEADER_LEN]);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(inner),
                Aad::from(aad),
                &mut out[HEADER_LEN..],
            )
            .expect("ChaCha20-Poly1305 sealing of a bounded buffer cannot fail");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Checks, authenticates, decrypts and decodes one frame.
    /// `known` says whether a node id is configured.
    pub fn open(
        &mut self,
        frame: &[u8],
        known: impl Fn(NodeId) -> bool,
    ) -> Result<(NodeId, Message), FrameError> {
        if frame.len() < HEADER_LEN {
            return Err(FrameError::Malformed("shorter than header".into()));
        }
        let magic = u16::from_be_bytes([frame[0], frame[1]]);
        if magic != MAGIC {
            return Err(FrameError::Malformed(format!("bad magic {magic:#06x}")));
        }
        if frame[2] != VERSION {
            return Err(FrameError::Malformed(format!(
                "unsupported version {}",
                frame[2]
            )));
        }
        let flags = frame[3];
        if flags > 1 {
            return Err(FrameError::Malformed("bad flags".into()));
        }
        let sender = NodeId(u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]));
        let mut e = [0u8; 8];
        e.copy_from_slice(&frame[8..16]);
        let epoch = u64::from_be_bytes(e);
        e.copy_from_slice(&frame[16..24]);
        let ctr = u64::from_be_bytes(e);
        if sender == self.me || !known(sender) {
            return Err(FrameError::UnknownSender(sender.0));
        }
        let body = &frame[HEADER_LEN..];
        let Some(master) = &self.master else {
            if flags != 0 {
                return Err(FrameError::Auth);
            }
            return Ok((sender, Message::decode(body)?));
        };
        if flags != 1 {
            return Err(FrameError::Auth);
        }
        if body.len() < TAG_LEN {
            return Err(FrameError::Auth);
        }
        let (prefix, inner) = nonce_parts(sender, epoch, ctr);
        let derived;
        let key = match self.peers.get(&sender) {
            Some(k) if k.prefix == prefix => &k.key,
            _ => {
                derived = Subkey::derive(master, prefix);
                &derived.key
            }
        };
        let mut aad = [0u8; HEADER_LEN];
        aad.copy_from_slice(&frame[..HEADER_LEN]);
        let mut buf = body.to_vec();
        let pt = key
            .open_in_place(
                Nonce::assume_unique_for_key(inner),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| FrameError::Auth)?;
        let msg = Message::decode(pt)?;
        // authentic: remember the subkey (a forger cannot evict a good one)
        if self.peers.get(&sender).is_none_or(|k| k.prefix != prefix) {
            self.peers.insert(sender, Subkey::derive(master, prefix));
        }
        let w = self.windows.entry(sender).or_insert(Window {
            epoch,
            top: 0,
            bits: 0,
        });
        if !w.accept(epoch, ctr) {
            return Err(FrameError::Replay);
        }
        Ok((sender, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ClusterKey {
        let mut k = [0u8; 64];
        for (i, x) in k.iter_mut().enumerate() {
            *x = b.wrapping_add(i as u8);
        }
        ClusterKey::from_authkey(&k).unwrap()
    }

    #[test]
    fn sealed_frames_open_once_and_reject_tampering_replay_and_wrong_key() {
        let k = key(1);
        let mut a = Codec::new(NodeId(1), 3, Some(&k));
        let mut b = Codec::new(NodeId(2), 1, Some(&k));
        let f = a.seal(&Message::Heartbeat);
        let known = |n: NodeId| n.0 <= 3;
        assert_eq!(b.open(&f, known).unwrap(), (NodeId(1), Message::Heartbeat));
        assert_eq!(b.open(&f, known), Err(FrameError::Replay));
        let f2 = a.seal(&Message::Heartbeat);
        let mut bad = f2.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(b.open(&bad, known), Err(FrameError::Auth));
        let mut c = Codec::new(NodeId(3), 1, Some(&key(9)));
        assert_eq!(c.open(&f2, known), Err(FrameError::Auth));
        // header is authenticated: changing the counter breaks the tag
        let mut hdr = f2.clone();
        hdr[23] ^= 1;
        assert_eq!(b.open(&hdr, known), Err(FrameError::Auth));
        assert!(b.open(&f2, known).is_ok());
        // plaintext is refused when a key is configured
        let mut p = Codec::new(NodeId(1), 4, None);
        assert_eq!(
            b.open(&p.seal(&Message::Heartbeat), known),
            Err(FrameError::Auth)
        );
        // unknown sender
        let mut x = Codec::new(NodeId(9), 1, Some(&k));
        assert_eq!(
            b.open(&x.seal(&Message::Heartbeat), known),
            Err(FrameError::UnknownSender(9))
        );
    }

    /// The reference XChaCha20-Poly1305 opens what we seal, and we open what
    /// it seals: the wire format is exactly the documented one.
    #[test]
    fn frames_are_exactly_xchacha20_poly1305() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let k = key(4);
        let reference = XChaCha20Poly1305::new((&k.key).into());
        let xnonce = |sender: u32, epoch: u64, ctr: u64| {
            let mut n = [0u8; 24];
            n[0..4].copy_from_slice(&sender.to_be_bytes());
            n[4..12].copy_from_slice(&epoch.to_be_bytes());
            n[12..20].copy_from_slice(&ctr.to_be_bytes());
            XNonce::from(n)
        };
        let msg = Message::MergeDetect {
            ring: crate::wire::RingId {
                seq: 77,
                rep: NodeId(2),
            },
        };
        let mut a = Codec::new(NodeId(2), 9, Some(&k));
        // frames 1 and 2, and one across the counter's 2^32 boundary
        for jump in [0u64, 0, (1u64 << 32) - 3] {
            a.counter += jump;
            let f = a.seal(&msg);
            let pt = reference
                .decrypt(
                    &xnonce(2, 9, a.counter),
                    Payload {
                        msg: &f[HEADER_LEN..],
                        aad: &f[..HEADER_LEN],
                    },
                )
                .expect("reference opens our frame");
            assert_eq!(Message::decode(&pt).unwrap(), msg);
        }
        // the other way: a frame sealed by the reference opens here
        let mut b = Codec::new(NodeId(1), 1, Some(&k));
        for ctr in [5u64, 6, 1 << 40] {
            let mut hdr = Vec::new();
            hdr.extend_from_slice(&MAGIC.to_be_bytes());
            hdr.push(VERSION);
            hdr.push(1);
            hdr.extend_from_slice(&3u32.to_be_bytes());
            hdr.extend_from_slice(&4u64.to_be_bytes());
            hdr.extend_from_slice(&ctr.to_be_bytes());
            let ct = reference
                .encrypt(
                    &xnonce(3, 4, ctr),
                    Payload {
                        msg: &msg.encode(),
                        aad: &hdr,
                    },
                )
                .unwrap();
            let mut f = hdr.clone();
            f.extend_from_slice(&ct);
            assert_eq!(b.open(&f, |_| true).unwrap(), (NodeId(3), msg.clone()));
        }
    }

    #[test]
    fn a_forged_frame_does_not_evict_the_senders_key() {
        let k = key(1);
        let mut a = Codec::new(NodeId(1), 3, Some(&k));
        let mut b = Codec::new(NodeId(2), 1, Some(&k));
        let known = |_| true;
        assert!(b.open(&a.seal(&Message::Heartbeat), known).is_ok());
        // a forgery claiming another epoch fails and leaves the cache alone
        let mut forged = a.seal(&Message::Heartbeat);
        forged[15] ^= 1;
        assert_eq!(b.open(&forged, known), Err(FrameError::Auth));
        assert_eq!(b.peers[&NodeId(1)].prefix[4..12], 3u64.to_be_bytes());
        assert!(b.open(&a.seal(&Message::Heartbeat), known).is_ok());
        // too short to hold a tag
        let short = a.seal(&Message::Heartbeat)[..HEADER_LEN + 3].to_vec();
        assert_eq!(b.open(&short, known), Err(FrameError::Auth));
    }

    #[test]
    fn replay_window_accepts_reordering_within_window_and_new_epochs() {
        let mut w = Window {
            epoch: 1,
            top: 0,
            bits: 0,
        };
        assert!(w.accept(1, 5));
        assert!(w.accept(1, 3));
        assert!(!w.accept(1, 3));
        assert!(w.accept(1, 200));
        assert!(!w.accept(1, 5), "fell out of the window");
        assert!(w.accept(1, 150));
        assert!(!w.accept(0, 999), "older epoch");
        assert!(w.accept(2, 1), "restart");
        assert!(!w.accept(1, 201));
    }

    #[test]
    fn key_file_length_and_randomness_are_checked() {
        assert_eq!(
            ClusterKey::from_authkey(&[1; 8]).unwrap_err(),
            KeyError::BadLength(8)
        );
        assert_eq!(
            ClusterKey::from_authkey(&[7; 64]).unwrap_err(),
            KeyError::NotRandom
        );
        let k = generate_authkey([5; AUTHKEY_LEN]);
        assert_eq!(k.len(), AUTHKEY_LEN);
        assert!(format!("{:?}", key(3)).contains("redacted"));
    }
}
