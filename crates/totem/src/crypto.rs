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

use crate::wire::{DecodeError, Message};
use base::NodeId;
use chacha20poly1305::aead::{Aead, KeyInit, Payload as AeadPayload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
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

/// Seals outgoing and opens incoming frames for one node.
pub struct Codec {
    me: NodeId,
    epoch: u64,
    counter: u64,
    cipher: Option<XChaCha20Poly1305>,
    windows: BTreeMap<NodeId, Window>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("me", &self.me)
            .field("epoch", &self.epoch)
            .field("counter", &self.counter)
            .field("sealed", &self.cipher.is_some())
            .finish()
    }
}

fn nonce(sender: NodeId, epoch: u64, ctr: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[0..4].copy_from_slice(&sender.0.to_be_bytes());
    n[4..12].copy_from_slice(&epoch.to_be_bytes());
    n[12..20].copy_from_slice(&ctr.to_be_bytes());
    XNonce::from(n)
}

impl Codec {
    /// A codec sending as `me` in boot `epoch`; `key` None sends plaintext
    /// (tests and simulation only; a real cluster always has a key).
    pub fn new(me: NodeId, epoch: u64, key: Option<&ClusterKey>) -> Codec {
        Codec {
            me,
            epoch,
            counter: 0,
            cipher: key.map(|k| XChaCha20Poly1305::new((&k.key).into())),
            windows: BTreeMap::new(),
        }
    }

    /// Frames (and seals, with a key) one message.
    pub fn seal(&mut self, msg: &Message) -> Vec<u8> {
        self.counter += 1;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.push(VERSION);
        out.push(u8::from(self.cipher.is_some()));
        out.extend_from_slice(&self.me.0.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        match &self.cipher {
            None => msg.encode_into(&mut out),
            Some(c) => {
                let body = msg.encode();
                let n = nonce(self.me, self.epoch, self.counter);
                let ct = c
                    .encrypt(
                        &n,
                        AeadPayload {
                            msg: &body,
                            aad: &out[..HEADER_LEN],
                        },
                    )
                    .expect("XChaCha20-Poly1305 encryption of a bounded buffer cannot fail");
                out.extend_from_slice(&ct);
            }
        }
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
        let msg = match &self.cipher {
            None => {
                if flags != 0 {
                    return Err(FrameError::Auth);
                }
                Message::decode(body)?
            }
            Some(c) => {
                if flags != 1 {
                    return Err(FrameError::Auth);
                }
                let pt = c
                    .decrypt(
                        &nonce(sender, epoch, ctr),
                        AeadPayload {
                            msg: body,
                            aad: &frame[..HEADER_LEN],
                        },
                    )
                    .map_err(|_| FrameError::Auth)?;
                let msg = Message::decode(&pt)?;
                let w = self.windows.entry(sender).or_insert(Window {
                    epoch,
                    top: 0,
                    bits: 0,
                });
                if !w.accept(epoch, ctr) {
                    return Err(FrameError::Replay);
                }
                msg
            }
        };
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
