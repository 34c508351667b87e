//! A hand-written client over a real TCP socket: garbage options and bad requests get the exact
//! replies the spec asks for, the export keeps working, and only a bad request magic closes it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use nbd::proto::*;

fn opt(o: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&o.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn read_opt_reply(s: &mut TcpStream) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    assert_eq!(u64::from_be_bytes(h[0..8].try_into().unwrap()), REPLY_MAGIC);
    let n = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
    let mut d = vec![0u8; n];
    s.read_exact(&mut d).unwrap();
    (
        u32::from_be_bytes(h[8..12].try_into().unwrap()),
        u32::from_be_bytes(h[12..16].try_into().unwrap()),
        d,
    )
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

fn read_reply(s: &mut TcpStream) -> (u32, u64) {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    assert_eq!(
        u32::from_be_bytes(h[0..4].try_into().unwrap()),
        SIMPLE_REPLY_MAGIC
    );
    (
        u32::from_be_bytes(h[4..8].try_into().unwrap()),
        u64::from_be_bytes(h[8..16].try_into().unwrap()),
    )
}

#[test]
fn garbage_options_and_bad_requests_over_tcp() {
    let d = Scratch::new("raw");
    let img = d.path("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let srv = serve_file(&img, "disk");
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
    s.write_all(&3u32.to_be_bytes()).unwrap();
    // Unknown options and garbage payloads: errors, the handshake goes on.
    s.write_all(&opt(0x7fff_0000, &[0xde, 0xad])).unwrap();
    assert_eq!(read_opt_reply(&mut s).1, REP_ERR_UNSUP);
    s.write_all(&opt(OPT_GO, &[0xff; 3])).unwrap();
    assert_eq!(read_opt_reply(&mut s).1, REP_ERR_INVALID);
    s.write_all(&opt(OPT_LIST, b"x")).unwrap();
    assert_eq!(read_opt_reply(&mut s).1, REP_ERR_INVALID);
    s.write_all(&opt(OPT_STARTTLS, &[])).unwrap();
    assert_eq!(read_opt_reply(&mut s).1, REP_ERR_UNSUP);
    // GO on "disk".
    let mut go = 4u32.to_be_bytes().to_vec();
    go.extend_from_slice(b"disk");
    go.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&opt(OPT_GO, &go)).unwrap();
    loop {
        let (_, t, _) = read_opt_reply(&mut s);
        if t == REP_ACK {
            break;
        }
        assert_eq!(t, REP_INFO);
    }
    // Bad requests: errors, connection and export survive.
    s.write_all(&req(0, 42, 1, 0, 512)).unwrap();
    assert_eq!(read_reply(&mut s), (22, 1));
    s.write_all(&req(0, CMD_READ, 2, 1 << 20, 512)).unwrap();
    assert_eq!(read_reply(&mut s), (22, 2));
    let mut w = req(0, CMD_WRITE, 3, (1 << 20) - 256, 512);
    w.extend_from_slice(&[9u8; 512]);
    s.write_all(&w).unwrap();
    assert_eq!(read_reply(&mut s), (28, 3));
    // Good write + FUA, read back.
    let mut w = req(CMD_FLAG_FUA, CMD_WRITE, 4, 4096, 512);
    w.extend_from_slice(&[0x42u8; 512]);
    s.write_all(&w).unwrap();
    assert_eq!(read_reply(&mut s), (0, 4));
    s.write_all(&req(0, CMD_READ, 5, 4096, 512)).unwrap();
    assert_eq!(read_reply(&mut s), (0, 5));
    let mut data = [0u8; 512];
    s.read_exact(&mut data).unwrap();
    assert_eq!(data, [0x42u8; 512]);
    assert_eq!(std::fs::read(&img).unwrap()[4096..4608], [0x42u8; 512]);
    // A bad magic closes the connection (the stream cannot be resynchronised).
    let mut bad = req(0, CMD_READ, 6, 0, 512);
    bad[..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    s.write_all(&bad).unwrap();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "no reply after a bad magic, just EOF");
    // The server still serves new clients.
    let mut s2 = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s2.read_exact(&mut g).unwrap();
    assert_eq!(&g[..8], b"NBDMAGIC");
}
