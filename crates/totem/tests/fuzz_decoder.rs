//! Fuzz-style property tests: no input makes the decoder or a node panic.
//! Cases per property: `TOTEM_FUZZ_CASES` (default 2000); for a long run
//! set e.g. `TOTEM_FUZZ_CASES=5000000`.

use base::{Instant, NodeId};
use proptest::prelude::*;
use totem::crypto::Codec;
use totem::wire::Message;
use totem::{ClusterKey, TotemConfig, TotemNode};

fn cases() -> u32 {
    std::env::var("TOTEM_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

fn node(key: Option<ClusterKey>) -> TotemNode {
    let mut c = TotemConfig::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
    c.key = key;
    TotemNode::new(c, Instant(1)).expect("valid config")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_plausible_frames(ty in 0u8..7, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut b = vec![ty];
        b.extend(body);
        if let Ok(m) = Message::decode(&b) {
            // whatever decodes re-encodes to the same bytes
            prop_assert_eq!(m.encode(), b);
        }
    }

    #[test]
    fn node_counts_and_drops_garbage(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let mut n = node(None);
        let mut t = 10;
        for f in &frames {
            // a valid header from node 2 so the body reaches the decoder
            let mut framed = vec![0x51, 0x54, 1, 0, 0, 0, 0, 2];
            framed.extend_from_slice(&[0; 16]);
            framed.extend_from_slice(f);
            t += 1_000;
            n.handle_packet(Instant(t), 0, None, &framed);
            n.handle_packet(Instant(t), 0, None, f);
        }
        n.handle_timeout(Instant(t + 1));
        let s = n.stats();
        prop_assert_eq!(s.packets_received, 2 * frames.len() as u64);
    }

    #[test]
    fn sealed_node_rejects_every_forgery(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 1..10)) {
        let key = ClusterKey::from_authkey(&(0u8..64).collect::<Vec<_>>()).expect("key");
        let mut n = node(Some(key.clone()));
        let mut peer = Codec::new(NodeId(2), 1, Some(&key));
        for f in &frames {
            let mut sealed = peer.seal(&Message::Heartbeat);
            // flip bytes of a genuine frame according to the input
            let len = sealed.len();
            for (i, x) in f.iter().enumerate().take(len) {
                // skip some positions, always change at least the first
                if i == 0 || x & 2 != 0 {
                    sealed[i] ^= x | 1;
                }
            }
            n.handle_packet(Instant(5), 0, None, &sealed);
        }
        let s = n.stats();
        prop_assert_eq!(s.auth_failures + s.malformed + s.unknown_sender + s.replays, frames.len() as u64);
    }
}
