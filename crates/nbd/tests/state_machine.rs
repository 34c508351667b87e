//! Sans-IO tests of the NBD server state machine: exact bytes in, exact bytes out.

use base::{Duration, Instant};
use nbd::proto::*;
use nbd::{BlockOp, CloseReason, Errno, ExportInfo, OpKind, ServerConfig, ServerConn};

const T0: Instant = Instant(0);

fn cfg() -> ServerConfig {
    let mut ro = ExportInfo::new("ro", 1 << 20);
    ro.read_only = true;
    let mut disk = ExportInfo::new("disk", 1 << 20);
    disk.description = "test disk".into();
    ServerConfig::new(vec![disk, ro])
}

fn out(c: &mut ServerConn) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(b) = c.poll_transmit() {
        v.extend_from_slice(&b);
    }
    v
}

fn opt(o: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&o.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn go_data(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// Parses option replies: (option, type, data).
fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut v = Vec::new();
    while !b.is_empty() {
        assert_eq!(u64::from_be_bytes(b[0..8].try_into().unwrap()), REPLY_MAGIC);
        let o = u32::from_be_bytes(b[8..12].try_into().unwrap());
        let t = u32::from_be_bytes(b[12..16].try_into().unwrap());
        let n = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
        v.push((o, t, b[20..20 + n].to_vec()));
        b = &b[20 + n..];
    }
    v
}

fn req(flags: u16, cmd: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&cmd.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// Simple replies: (error, cookie, following bytes are not parsed).
fn simple(b: &[u8]) -> (u32, u64) {
    assert_eq!(
        u32::from_be_bytes(b[0..4].try_into().unwrap()),
        SIMPLE_REPLY_MAGIC
    );
    (
        u32::from_be_bytes(b[4..8].try_into().unwrap()),
        u64::from_be_bytes(b[8..16].try_into().unwrap()),
    )
}

fn feed(c: &mut ServerConn, b: &[u8]) {
    assert_eq!(c.handle_input(T0, b), b.len());
}

/// Connected on export `name` via GO, output drained.
fn connected(name: &str) -> ServerConn {
    let mut c = ServerConn::new(T0, cfg());
    let g = out(&mut c);
    assert_eq!(&g[0..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    assert_eq!(u16::from_be_bytes([g[16], g[17]]), 3);
    feed(&mut c, &3u32.to_be_bytes());
    feed(&mut c, &opt(OPT_GO, &go_data(name, &[])));
    let r = replies(&out(&mut c));
    assert_eq!(r.last().unwrap().1, REP_ACK, "{r:?}");
    assert!(c.export().is_some());
    c
}

#[test]
fn go_info_list_and_unknown_options() {
    let mut c = ServerConn::new(T0, cfg());
    out(&mut c);
    feed(&mut c, &1u32.to_be_bytes());
    // unknown option 99, STRUCTURED_REPLY, then LIST, then INFO with NAME+DESCRIPTION+BLOCK_SIZE.
    feed(&mut c, &opt(99, b"junk"));
    feed(&mut c, &opt(OPT_STRUCTURED_REPLY, &[]));
    feed(&mut c, &opt(OPT_LIST, &[]));
    feed(
        &mut c,
        &opt(
            OPT_INFO,
            &go_data("disk", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]),
        ),
    );
    let r = replies(&out(&mut c));
    assert_eq!(r[0].0, 99);
    assert_eq!(r[0].1, REP_ERR_UNSUP);
    assert_eq!(r[1].1, REP_ERR_UNSUP);
    assert_eq!(
        r[2],
        (
            OPT_LIST,
            REP_SERVER,
            [&4u32.to_be_bytes()[..], b"disk"].concat()
        )
    );
    assert_eq!(
        r[3],
        (
            OPT_LIST,
            REP_SERVER,
            [&2u32.to_be_bytes()[..], b"ro"].concat()
        )
    );
    assert_eq!(r[4], (OPT_LIST, REP_ACK, vec![]));
    let (o, t, d) = &r[5];
    assert_eq!((*o, *t), (OPT_INFO, REP_INFO));
    assert_eq!(u16::from_be_bytes([d[0], d[1]]), INFO_EXPORT);
    assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), 1 << 20);
    let flags = u16::from_be_bytes([d[10], d[11]]);
    assert_eq!(flags & TFLAG_READ_ONLY, 0);
    assert_ne!(flags & TFLAG_SEND_FUA, 0);
    assert_eq!(r[6].2, [&INFO_NAME.to_be_bytes()[..], b"disk"].concat());
    assert_eq!(
        r[7].2,
        [&INFO_DESCRIPTION.to_be_bytes()[..], b"test disk"].concat()
    );
    let bs = &r[8].2;
    assert_eq!(u16::from_be_bytes([bs[0], bs[1]]), INFO_BLOCK_SIZE);
    assert_eq!(
        u32::from_be_bytes(bs[10..14].try_into().unwrap()),
        MAX_PAYLOAD
    );
    assert_eq!(r[9], (OPT_INFO, REP_ACK, vec![]));
    assert_eq!(c.export(), None, "INFO does not enter transmission");
    // Unknown export name and malformed GO data are option errors; the handshake continues.
    feed(&mut c, &opt(OPT_GO, &go_data("nope", &[])));
    feed(&mut c, &opt(OPT_GO, &[0, 0, 0, 200, b'x']));
    let r = replies(&out(&mut c));
    assert_eq!(r[0].1, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&r[0].2).contains("disk, ro"));
    assert_eq!(r[1].1, REP_ERR_INVALID);
    // Too-big option is skipped and refused.
    feed(
        &mut c,
        &opt(OPT_INFO, &vec![0u8; MAX_OPTION_LEN as usize + 1]),
    );
    assert_eq!(replies(&out(&mut c))[0].1, REP_ERR_TOO_BIG);
    // Empty name = default export.
    feed(&mut c, &opt(OPT_GO, &go_data("", &[])));
    let r = replies(&out(&mut c));
    assert_eq!(r.last().unwrap().1, REP_ACK);
    assert_eq!(c.export(), Some(0));
    assert_eq!(c.stats().option_errors, 5);
}

#[test]
fn export_name_with_and_without_zeroes() {
    for (cflags, len) in [(1u32, 8 + 2 + 124), (3, 10)] {
        let mut c = ServerConn::new(T0, cfg());
        out(&mut c);
        feed(&mut c, &cflags.to_be_bytes());
        feed(&mut c, &opt(OPT_EXPORT_NAME, b"ro"));
        let o = out(&mut c);
        assert_eq!(o.len(), len);
        assert_eq!(u64::from_be_bytes(o[0..8].try_into().unwrap()), 1 << 20);
        assert_ne!(u16::from_be_bytes([o[8], o[9]]) & TFLAG_READ_ONLY, 0);
        assert_eq!(c.export(), Some(1));
    }
    let mut c = ServerConn::new(T0, cfg());
    feed(&mut c, &1u32.to_be_bytes());
    feed(&mut c, &opt(OPT_EXPORT_NAME, b"missing"));
    assert_eq!(
        c.close_reason(),
        Some(&CloseReason::UnknownExport("missing".into()))
    );
}

#[test]
fn bad_client_flags_abort_and_timeout_close() {
    let mut c = ServerConn::new(T0, cfg());
    c.handle_input(T0, &0x80u32.to_be_bytes());
    assert_eq!(
        c.close_reason(),
        Some(&CloseReason::UnknownClientFlags(0x80))
    );
    assert!(c.is_finished());

    let mut c = ServerConn::new(T0, cfg());
    out(&mut c);
    feed(&mut c, &1u32.to_be_bytes());
    feed(&mut c, &opt(OPT_ABORT, &[]));
    assert_eq!(replies(&out(&mut c)), vec![(OPT_ABORT, REP_ACK, vec![])]);
    assert_eq!(c.close_reason(), Some(&CloseReason::Abort));
    assert_eq!(c.handle_input(T0, b"more"), 0, "no input after close");

    let mut c = ServerConn::new(T0, cfg());
    let d = c.poll_deadline().unwrap();
    c.handle_timeout(Instant(d.0 - 1));
    assert!(c.close_reason().is_none());
    c.handle_timeout(d);
    assert_eq!(c.close_reason(), Some(&CloseReason::HandshakeTimeout));
    let _ = Duration::ZERO;
}

#[test]
fn read_write_flush_roundtrip_with_ops() {
    let mut c = connected("disk");
    let mut w = req(CMD_FLAG_FUA, CMD_WRITE, 7, 4096, 5);
    w.extend_from_slice(b"hello");
    // Feed byte by byte: the parser must cope with any split.
    for b in &w {
        c.handle_input(T0, std::slice::from_ref(b));
    }
    let op = c.poll_op().unwrap();
    assert_eq!(
        op.kind,
        OpKind::Write {
            data: b"hello".to_vec()
        }
    );
    assert_eq!((op.offset, op.len, op.fua), (4096, 5, true));
    assert!(
        out(&mut c).is_empty(),
        "no reply before the backend completes"
    );
    c.handle_op_done(op.handle, Ok(vec![]));
    assert_eq!(simple(&out(&mut c)), (0, 7));

    feed(&mut c, &req(0, CMD_READ, 8, 4096, 5));
    feed(&mut c, &req(0, CMD_FLUSH, 9, 0, 0));
    let r = c.poll_op().unwrap();
    let f = c.poll_op().unwrap();
    assert_eq!(f.kind, OpKind::Flush);
    // Out of order completion is fine in NBD.
    c.handle_op_done(f.handle, Ok(vec![]));
    c.handle_op_done(r.handle, Ok(b"hello".to_vec()));
    let o = out(&mut c);
    assert_eq!(simple(&o[0..16]), (0, 9));
    assert_eq!(simple(&o[16..32]), (0, 8));
    assert_eq!(&o[32..], b"hello");
    // A backend error reaches the client; a short read is EIO.
    feed(&mut c, &req(0, CMD_READ, 10, 0, 512));
    let r = c.poll_op().unwrap();
    c.handle_op_done(r.handle, Ok(vec![0; 10]));
    assert_eq!(simple(&out(&mut c)), (Errno::Io.code(), 10));
    feed(&mut c, &req(0, CMD_WRITE_ZEROES, 11, 0, 512));
    let z = c.poll_op().unwrap();
    assert_eq!(z.kind, OpKind::WriteZeroes { no_hole: false });
    c.handle_op_done(z.handle, Err(Errno::NoSpc));
    assert_eq!(simple(&out(&mut c)), (28, 11));
    feed(&mut c, &req(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 12, 0, 512));
    assert_eq!(
        c.poll_op().unwrap().kind,
        OpKind::WriteZeroes { no_hole: true }
    );
}

#[test]
fn bad_requests_get_errors_and_the_export_survives() {
    let mut c = connected("disk");
    let size = 1u64 << 20;
    let cases: Vec<(Vec<u8>, u32)> = vec![
        (req(0, CMD_READ, 1, size - 1, 2), 22),        // read past end
        (req(0, CMD_READ, 2, u64::MAX, 1), 22),        // offset overflow
        (req(0, CMD_READ, 3, 0, MAX_PAYLOAD + 1), 22), // oversize read
        (req(0, CMD_READ, 4, 0, 0), 22),               // zero length
        (req(0, CMD_CACHE, 5, 0, 512), 22),            // not advertised
        (req(0, CMD_BLOCK_STATUS, 6, 0, 512), 22),     // not negotiated
        (req(0, 77, 7, 0, 512), 22),                   // unknown command
        (req(CMD_FLAG_DF, CMD_READ, 8, 0, 512), 22),   // DF without structured replies
        (req(CMD_FLAG_NO_HOLE, CMD_WRITE, 9, 0, 0), 22), // NO_HOLE on write (no payload)
        (req(CMD_FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 10, 0, 512), 22),
        (req(0, CMD_TRIM, 11, size, 512), 28), // trim past end
        (req(0, CMD_WRITE_ZEROES, 12, size - 511, 512), 28), // zero past end
    ];
    for (r, e) in &cases {
        feed(&mut c, r);
        let o = out(&mut c);
        assert_eq!(o.len(), 16);
        assert_eq!(simple(&o).0, *e, "request {r:?}");
        assert!(c.poll_op().is_none());
    }
    // A write past the end and an oversize write: the payload is skipped, then the error is sent.
    let mut w = req(0, CMD_WRITE, 20, size - 2, 4);
    w.extend_from_slice(&[1, 2, 3, 4]);
    feed(&mut c, &w);
    assert_eq!(simple(&out(&mut c)), (28, 20));
    let big = MAX_PAYLOAD + 4096;
    feed(&mut c, &req(0, CMD_WRITE, 21, 0, big));
    let chunk = vec![0xAAu8; 1 << 20];
    let mut left = big as usize;
    while left > 0 {
        let n = left.min(chunk.len());
        feed(&mut c, &chunk[..n]);
        left -= n;
    }
    assert_eq!(simple(&out(&mut c)), (22, 21));
    assert!(c.poll_op().is_none(), "payload never reached the backend");
    // The export still works.
    feed(&mut c, &req(0, CMD_READ, 22, 0, 512));
    let op = c.poll_op().unwrap();
    c.handle_op_done(op.handle, Ok(vec![0; 512]));
    assert_eq!(simple(&out(&mut c)[..16]), (0, 22));
    assert_eq!(c.stats().bad_requests, cases.len() as u64 + 2);
    // A bad magic cannot be resynchronised: the connection closes.
    let mut bad = req(0, CMD_READ, 23, 0, 512);
    bad[0] ^= 0xff;
    c.handle_input(T0, &bad);
    assert!(matches!(
        c.close_reason(),
        Some(CloseReason::BadRequestMagic(_))
    ));
    assert!(out(&mut c).is_empty());
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let mut c = connected("ro");
    let mut w = req(0, CMD_WRITE, 1, 0, 3);
    w.extend_from_slice(b"abc");
    feed(&mut c, &w);
    feed(&mut c, &req(0, CMD_TRIM, 2, 0, 512));
    feed(&mut c, &req(0, CMD_WRITE_ZEROES, 3, 0, 512));
    let o = out(&mut c);
    for (i, ck) in [1u64, 2, 3].iter().enumerate() {
        assert_eq!(simple(&o[i * 16..]), (1, *ck));
    }
    feed(&mut c, &req(0, CMD_FLUSH, 4, 0, 0));
    assert_eq!(c.poll_op().unwrap().kind, OpKind::Flush);
}

#[test]
fn disc_waits_for_in_flight_and_limits_apply_back_pressure() {
    let mut cfg = cfg();
    cfg.max_in_flight = 2;
    let mut c = ServerConn::new(T0, cfg);
    out(&mut c);
    feed(&mut c, &3u32.to_be_bytes());
    feed(&mut c, &opt(OPT_GO, &go_data("disk", &[])));
    out(&mut c);
    let mut stream = Vec::new();
    for i in 0..3 {
        stream.extend_from_slice(&req(0, CMD_READ, i, 0, 512));
    }
    stream.extend_from_slice(&req(0, CMD_DISC, 99, 0, 0));
    let n = c.handle_input(T0, &stream);
    assert_eq!(n, 56, "third request waits until an op completes");
    assert!(!c.wants_input());
    let ops: Vec<BlockOp> = std::iter::from_fn(|| c.poll_op()).collect();
    assert_eq!(ops.len(), 2);
    c.handle_op_done(ops[0].handle, Ok(vec![0; 512]));
    let m = c.handle_input(T0, &stream[n..]);
    assert_eq!(m, 28, "one slot freed: one more request, DISC still waits");
    c.handle_op_done(ops[1].handle, Ok(vec![0; 512]));
    let k = c.handle_input(T0, &stream[n + m..]);
    assert_eq!(n + m + k, stream.len());
    assert_eq!(c.close_reason(), Some(&CloseReason::Disconnect));
    assert!(!c.is_finished(), "in-flight op still running");
    let rest: Vec<BlockOp> = std::iter::from_fn(|| c.poll_op()).collect();
    c.handle_op_done(rest[0].handle, Ok(vec![0; 512]));
    assert!(c.is_finished());
    assert_eq!(
        out(&mut c).len(),
        3 * (16 + 512),
        "every reply before closing"
    );
}

#[test]
fn shutdown_fails_new_requests_with_eshutdown() {
    let mut c = connected("disk");
    feed(&mut c, &req(0, CMD_READ, 1, 0, 512));
    let op = c.poll_op().unwrap();
    c.handle_shutdown();
    let mut w = req(0, CMD_WRITE, 2, 0, 4);
    w.extend_from_slice(b"abcd");
    feed(&mut c, &w);
    assert_eq!(simple(&out(&mut c)), (108, 2));
    c.handle_op_done(op.handle, Ok(vec![1; 512]));
    assert_eq!(simple(&out(&mut c)), (0, 1));
    // During the handshake, shutdown closes.
    let mut h = ServerConn::new(T0, cfg());
    h.handle_shutdown();
    assert_eq!(h.close_reason(), Some(&CloseReason::Shutdown));
}
