//! The packet decoder and the node under a time budget: `TOTEM_FUZZ_SECS`
//! seconds (default 5) of generated input, counted and reported.
//!
//! `TOTEM_FUZZ_SECS=600 cargo test -p totem --release --test fuzz_timed -- --ignored --nocapture`
//!
//! Each input comes from its own seed; a panic prints
//! `TOTEM_FUZZ_REPLAY=<seed>`, and setting it runs exactly that input.
//! Inputs: random bytes for the decoder; well-formed messages with random
//! fields, then mutated (bit flips, byte overwrites, truncation, insertion),
//! for the decoder (whatever decodes must re-encode to the same bytes);
//! sequences of such frames (plaintext and sealed, some genuine, some
//! forged) fed to a node between timer expiries.

// a fuzz budget is wall-clock time; the core under test never reads a clock
#![allow(clippy::disallowed_methods)]

use base::{DetRng, Instant, NodeId};
use std::sync::Arc;
use totem::crypto::Codec;
use totem::wire::{Commit, CommitEntry, Join, Mcast, Message, Payload, RingId, Token};
use totem::{ClusterKey, Command, TotemConfig, TotemNode};

fn node_id(r: &mut DetRng) -> NodeId {
    // mostly configured nodes, sometimes not, sometimes 0
    NodeId([1, 2, 3, 3, 2, 0, 9, u32::MAX][r.below(8) as usize])
}

fn ring(r: &mut DetRng) -> RingId {
    RingId {
        seq: [0, 1, 4, 8, r.next_u64(), u64::MAX][r.below(6) as usize],
        rep: node_id(r),
    }
}

fn small(r: &mut DetRng) -> u64 {
    match r.below(4) {
        0 => r.below(4),
        1 => r.below(100),
        2 => r.next_u64(),
        _ => u64::MAX - r.below(3),
    }
}

fn nodes(r: &mut DetRng) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = (0..r.below(5)).map(|_| node_id(r)).collect();
    if r.chance(0.8) {
        v.sort();
        v.dedup();
    }
    v
}

/// A message with random, often plausible, fields.
fn message(r: &mut DetRng) -> Message {
    match r.below(6) {
        0 => {
            let seq = small(r);
            Message::Token(Token {
                ring: ring(r),
                token_seq: small(r),
                seq,
                aru: seq.saturating_sub(r.below(3)),
                aru_id: node_id(r),
                prev_aru: seq.saturating_sub(r.below(5)),
                backlog: r.below(1000) as u32,
                fcc: r.below(300) as u32,
                retrans_flg: r.chance(0.5),
                installed: r.chance(0.5),
                install_seq: seq.saturating_sub(r.below(2)),
                rtr: (0..r.below(40)).map(|_| small(r)).collect(),
            })
        }
        1 => Message::Mcast(Mcast {
            ring: ring(r),
            seq: small(r).max(1),
            recovered: r.chance(0.3).then(|| (ring(r), small(r))),
            payload: Payload {
                origin: node_id(r),
                safe: r.chance(0.3),
                channel: r.below(2) as u8,
                data: Arc::from(
                    (0..r.below(300))
                        .map(|_| r.next_u64() as u8)
                        .collect::<Vec<u8>>(),
                ),
            },
        }),
        2 => Message::MergeDetect { ring: ring(r) },
        3 => Message::Join(Join {
            proc_set: nodes(r),
            fail_set: nodes(r),
            ring_seq: small(r),
            epoch: small(r),
            join_seq: small(r),
            leaving: r.chance(0.1),
        }),
        4 => {
            let members = nodes(r);
            let rep = members.first().copied().unwrap_or(NodeId(1));
            let entries = members
                .iter()
                .map(|_| {
                    r.chance(0.7).then(|| CommitEntry {
                        old_ring: ring(r),
                        aru: small(r),
                        high_delivered: small(r),
                        high_seq: small(r),
                    })
                })
                .collect();
            Message::Commit(Commit {
                token_seq: small(r),
                ring: RingId { seq: small(r), rep },
                members,
                entries,
            })
        }
        _ => Message::Heartbeat,
    }
}

fn mutate(r: &mut DetRng, b: &mut Vec<u8>) {
    for _ in 0..r.range(1, 4) {
        match r.below(5) {
            0 if !b.is_empty() => {
                let i = r.below(b.len() as u64) as usize;
                b[i] ^= 1 << r.below(8);
            }
            1 if !b.is_empty() => {
                let i = r.below(b.len() as u64) as usize;
                b[i] = [0, 0xff, 0x7f, 0x80, r.next_u64() as u8][r.below(5) as usize];
            }
            2 => {
                let n = r.below(b.len() as u64 + 1) as usize;
                b.truncate(n);
            }
            3 => {
                let i = r.below(b.len() as u64 + 1) as usize;
                b.insert(i, r.next_u64() as u8);
            }
            _ => {}
        }
    }
}

fn check_decoder(r: &mut DetRng) {
    let bytes: Vec<u8> = if r.chance(0.2) {
        (0..r.below(600)).map(|_| r.next_u64() as u8).collect()
    } else {
        let mut b = message(r).encode();
        if r.chance(0.9) {
            mutate(r, &mut b);
        }
        b
    };
    if let Ok(m) = Message::decode(&bytes) {
        assert_eq!(m.encode(), bytes, "decoded {m:?} re-encodes differently");
    }
}

fn check_node(r: &mut DetRng, key: &ClusterKey) {
    let sealed = r.chance(0.5);
    let mut cfg = TotemConfig::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
    cfg.key = sealed.then(|| key.clone());
    cfg.window_size = [256, 50, 4][r.below(3) as usize];
    cfg.max_messages = cfg.max_messages.min(cfg.window_size);
    let mut t = 1_000u64;
    let mut n = TotemNode::new(cfg, Instant(t)).expect("valid config");
    let mut peers = [
        Codec::new(NodeId(2), 1, sealed.then_some(key)),
        Codec::new(NodeId(3), 1, sealed.then_some(key)),
    ];
    let steps = r.range(1, 40);
    for _ in 0..steps {
        t += r.below(400_000_000);
        match r.below(10) {
            0 => n.handle_timeout(Instant(t)),
            1 => {
                let _ = n.handle_command(
                    Instant(t),
                    Command::Multicast {
                        payload: vec![7; r.below(100) as usize],
                        safe: r.chance(0.5),
                    },
                );
            }
            _ => {
                let p = r.below(2) as usize;
                let mut f = peers[p].seal(&message(r));
                if r.chance(0.3) {
                    mutate(r, &mut f);
                }
                let from = r.chance(0.9).then_some(NodeId(2 + p as u32));
                n.handle_packet(Instant(t), r.below(3) as u8, from, &f);
            }
        }
        while n.poll_transmit().is_some() {}
        while n.poll_event().is_some() {}
        if let Some(d) = n.poll_deadline() {
            assert!(d.0 > 0, "a deadline at time zero");
        }
    }
    let s = n.stats();
    assert!(s.packets_received <= steps, "{s:?}");
}

fn one(seed: u64, key: &ClusterKey) {
    let mut r = DetRng::new(seed);
    if r.chance(0.5) {
        check_decoder(&mut r);
    } else {
        check_node(&mut r, key);
    }
}

#[test]
#[ignore]
fn fuzz_for_a_time_budget() {
    let key = ClusterKey::from_authkey(&(0u8..64).collect::<Vec<_>>()).expect("key");
    if let Some(seed) = std::env::var("TOTEM_FUZZ_REPLAY")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        one(seed, &key);
        return;
    }
    let secs: u64 = std::env::var("TOTEM_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let master: u64 = std::env::var("TOTEM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("fuzz: {secs} s from TOTEM_FUZZ_SEED={master}");
    let mut seeds = DetRng::new(master);
    let start = std::time::Instant::now();
    let budget = std::time::Duration::from_secs(secs);
    let mut inputs = 0u64;
    while start.elapsed() < budget {
        for _ in 0..256 {
            let seed = seeds.next_u64();
            let r = std::panic::catch_unwind(|| one(seed, &key));
            if r.is_err() {
                panic!("fuzz input panicked; replay with TOTEM_FUZZ_REPLAY={seed}");
            }
            inputs += 1;
        }
    }
    eprintln!(
        "fuzz: {inputs} inputs in {:.0} s without a panic",
        start.elapsed().as_secs_f64()
    );
}

/// The same generators, briefly, in every test run.
#[test]
fn a_few_thousand_generated_inputs() {
    let key = ClusterKey::from_authkey(&(0u8..64).collect::<Vec<_>>()).expect("key");
    for seed in 0..3000 {
        one(seed, &key);
    }
}
