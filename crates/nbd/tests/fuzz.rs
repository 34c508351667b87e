//! Arbitrary bytes into the state machine never panic and never grow buffers without bound.
//! Cases: `PROPTEST_CASES` (default 256); the 10-minute fuzz run sets it high.

use base::Instant;
use nbd::proto::*;
use nbd::{ExportInfo, ServerConfig, ServerConn};
use proptest::prelude::*;

fn go_prefix() -> Vec<u8> {
    let mut v = 3u32.to_be_bytes().to_vec();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&OPT_GO.to_be_bytes());
    v.extend_from_slice(&10u32.to_be_bytes());
    v.extend_from_slice(&4u32.to_be_bytes());
    v.extend_from_slice(b"disk");
    v.extend_from_slice(&0u16.to_be_bytes());
    v
}

fn drive(prefix: bool, chunks: Vec<Vec<u8>>, complete_every: usize) {
    let mut cfg = ServerConfig::new(vec![ExportInfo::new("disk", 1 << 16)]);
    cfg.max_in_flight = 4;
    let mut c = ServerConn::new(Instant(0), cfg);
    if prefix {
        let p = go_prefix();
        assert_eq!(c.handle_input(Instant(0), &p), p.len());
        assert!(c.export().is_some());
    }
    let mut pending = Vec::new();
    for (i, ch) in chunks.iter().enumerate() {
        let mut off = 0;
        for _ in 0..8 {
            off += c.handle_input(Instant(i as u64), &ch[off..]);
            while let Some(op) = c.poll_op() {
                assert!(op.offset + op.len as u64 <= 1 << 16, "validated range");
                pending.push(op);
            }
            if i % complete_every.max(1) == 0 || off < ch.len() {
                for op in pending.drain(..) {
                    let data = vec![
                        0u8;
                        if matches!(op.kind, nbd::OpKind::Read) {
                            op.len as usize
                        } else {
                            0
                        }
                    ];
                    c.handle_op_done(op.handle, Ok(data));
                }
            }
            while c.poll_transmit().is_some() {}
            if off == ch.len() {
                break;
            }
        }
        c.handle_timeout(Instant(u64::MAX));
        let _ = c.poll_event();
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        prefix in any::<bool>(),
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
        every in 1usize..4,
    ) {
        drive(prefix, chunks, every);
    }

    #[test]
    fn mutated_requests_never_panic(
        reqs in prop::collection::vec((any::<u16>(), 0u16..10, any::<u64>(), any::<u32>(), any::<u8>()), 1..30),
    ) {
        // Mostly-valid requests with random flags, commands, offsets and lengths (write payloads kept small).
        let mut stream = Vec::new();
        for (flags, cmd, offset, len, fill) in reqs {
            let len = if cmd == CMD_WRITE { len % 4096 } else { len };
            let offset = offset % (1 << 17);
            stream.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
            stream.extend_from_slice(&flags.to_be_bytes());
            stream.extend_from_slice(&cmd.to_be_bytes());
            stream.extend_from_slice(&offset.to_be_bytes());
            stream.extend_from_slice(&offset.to_be_bytes());
            stream.extend_from_slice(&len.to_be_bytes());
            if cmd == CMD_WRITE {
                stream.extend(std::iter::repeat_n(fill, len as usize));
            }
        }
        drive(true, stream.chunks(97).map(|c| c.to_vec()).collect(), 2);
    }
}
