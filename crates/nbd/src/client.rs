//! A small blocking NBD client (fixed newstyle, OPT_GO, simple replies) with pipelining, used by
//! benchmarks and tests. Not a general-purpose client: no TLS, no structured replies.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use crate::proto::*;

/// One connection to an NBD server.
pub struct Client {
    s: TcpStream,
    size: u64,
    flags: u16,
    next: u64,
    reads: BTreeMap<u64, u32>,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A completed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Cookie given when the request was sent.
    pub cookie: u64,
    /// NBD error number (0 = success).
    pub error: u32,
    /// Data of a successful read.
    pub data: Vec<u8>,
}

impl Client {
    /// Connects and selects `export` with NBD_OPT_GO.
    pub fn connect(addr: impl ToSocketAddrs, export: &str) -> io::Result<Client> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        let mut g = [0u8; 18];
        s.read_exact(&mut g)?;
        if &g[..16] != b"NBDMAGICIHAVEOPT" {
            return Err(bad("not an NBD newstyle server".into()));
        }
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())?;
        let mut o = IHAVEOPT.to_be_bytes().to_vec();
        o.extend_from_slice(&OPT_GO.to_be_bytes());
        o.extend_from_slice(&(4 + export.len() as u32 + 2).to_be_bytes());
        o.extend_from_slice(&(export.len() as u32).to_be_bytes());
        o.extend_from_slice(export.as_bytes());
        o.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&o)?;
        let (mut size, mut flags) = (0, 0);
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h)?;
            let t = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let n = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
            let mut d = vec![0u8; n];
            s.read_exact(&mut d)?;
            if t == REP_ACK {
                break;
            }
            if t & REP_FLAG_ERROR != 0 {
                return Err(bad(format!(
                    "server refused export {export:?}: {}",
                    String::from_utf8_lossy(&d)
                )));
            }
            if t == REP_INFO && n >= 12 && u16::from_be_bytes([d[0], d[1]]) == INFO_EXPORT {
                size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                flags = u16::from_be_bytes([d[10], d[11]]);
            }
        }
        Ok(Client {
            s,
            size,
            flags,
            next: 1,
            reads: BTreeMap::new(),
        })
    }

    /// Export size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Transmission flags.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    fn header(&mut self, flags: u16, cmd: u16, offset: u64, len: u32) -> (u64, [u8; 28]) {
        let cookie = self.next;
        self.next += 1;
        let mut h = [0u8; 28];
        h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&cmd.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..24].copy_from_slice(&offset.to_be_bytes());
        h[24..28].copy_from_slice(&len.to_be_bytes());
        (cookie, h)
    }

    /// Sends a write without waiting; returns its cookie.
    pub fn send_write(&mut self, offset: u64, data: &[u8], fua: bool) -> io::Result<u64> {
        let f = if fua { CMD_FLAG_FUA } else { 0 };
        let (c, h) = self.header(f, CMD_WRITE, offset, data.len() as u32);
        self.s.write_all(&h)?;
        self.s.write_all(data)?;
        Ok(c)
    }

    /// Sends a read without waiting; returns its cookie.
    pub fn send_read(&mut self, offset: u64, len: u32) -> io::Result<u64> {
        let (c, h) = self.header(0, CMD_READ, offset, len);
        self.reads.insert(c, len);
        self.s.write_all(&h)?;
        Ok(c)
    }

    /// Sends a flush without waiting; returns its cookie.
    pub fn send_flush(&mut self) -> io::Result<u64> {
        let (c, h) = self.header(0, CMD_FLUSH, 0, 0);
        self.s.write_all(&h)?;
        Ok(c)
    }

    /// Receives the next reply (any order).
    pub fn recv(&mut self) -> io::Result<Reply> {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h)?;
        if u32::from_be_bytes(h[0..4].try_into().unwrap()) != SIMPLE_REPLY_MAGIC {
            return Err(bad("bad reply magic".into()));
        }
        let error = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let mut data = Vec::new();
        if let Some(n) = self.reads.remove(&cookie) {
            if error == 0 {
                data = vec![0u8; n as usize];
                self.s.read_exact(&mut data)?;
            }
        }
        Ok(Reply {
            cookie,
            error,
            data,
        })
    }

    fn check(r: Reply) -> io::Result<Reply> {
        if r.error != 0 {
            return Err(io::Error::other(format!("NBD error {}", r.error)));
        }
        Ok(r)
    }

    /// Writes and waits.
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.send_write(offset, data, fua)?;
        Self::check(self.recv()?).map(|_| ())
    }

    /// Reads and waits.
    pub fn read(&mut self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        self.send_read(offset, len)?;
        Self::check(self.recv()?).map(|r| r.data)
    }

    /// Flushes and waits.
    pub fn flush(&mut self) -> io::Result<()> {
        self.send_flush()?;
        Self::check(self.recv()?).map(|_| ())
    }

    /// Sends NBD_CMD_DISC and closes.
    pub fn disconnect(mut self) -> io::Result<()> {
        let (_, h) = self.header(0, CMD_DISC, 0, 0);
        self.s.write_all(&h)
    }
}
