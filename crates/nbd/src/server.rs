//! The server side of one NBD connection as a sans-IO state machine.
//!
//! Feed client bytes with [`ServerConn::handle_input`], send what [`ServerConn::poll_transmit`] returns,
//! execute the [`BlockOp`]s from [`ServerConn::poll_op`] on the backend and report each result with
//! [`ServerConn::handle_op_done`]. The connection never panics on hostile input: malformed options are
//! answered with an option error, malformed requests with an error reply, and only a request with a bad
//! magic (after which the byte stream cannot be re-synchronised) closes the connection.

use std::collections::{BTreeMap, VecDeque};

use base::{Duration, Instant};

use crate::proto::*;

/// An NBD error number as sent in a simple reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum Errno {
    /// Operation not permitted (write to a read-only export).
    #[error("EPERM: operation not permitted")]
    Perm,
    /// Input/output error.
    #[error("EIO: input/output error")]
    Io,
    /// Out of memory.
    #[error("ENOMEM: cannot allocate memory")]
    NoMem,
    /// Invalid argument (unknown command or flag, read past the end, oversize request).
    #[error("EINVAL: invalid argument")]
    Inval,
    /// No space (write past the end).
    #[error("ENOSPC: no space left on device")]
    NoSpc,
    /// Value too large.
    #[error("EOVERFLOW: value too large")]
    Overflow,
    /// Operation not supported.
    #[error("ENOTSUP: operation not supported")]
    NotSup,
    /// Server shutting down.
    #[error("ESHUTDOWN: server is shutting down")]
    Shutdown,
}

impl Errno {
    /// The number on the wire.
    pub fn code(self) -> u32 {
        match self {
            Errno::Perm => 1,
            Errno::Io => 5,
            Errno::NoMem => 12,
            Errno::Inval => 22,
            Errno::NoSpc => 28,
            Errno::Overflow => 75,
            Errno::NotSup => 95,
            Errno::Shutdown => 108,
        }
    }

    /// Maps an OS error to the closest NBD error (like qemu's `system_errno_to_nbd_errno`).
    pub fn from_io(e: &std::io::Error) -> Errno {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EROFS) => Errno::Perm,
            Some(libc::ENOMEM) => Errno::NoMem,
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => Errno::NoSpc,
            Some(libc::EOVERFLOW) => Errno::Overflow,
            Some(libc::EOPNOTSUPP) => Errno::NotSup,
            Some(libc::ESHUTDOWN) => Errno::Shutdown,
            Some(libc::EINVAL) => Errno::Inval,
            _ => Errno::Io,
        }
    }
}

/// What the server offers under one export name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export name clients ask for (the first export is also the default for an empty name).
    pub name: String,
    /// Human-readable description (sent with INFO_DESCRIPTION when non-empty).
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Refuse writes with EPERM and advertise READ_ONLY.
    pub read_only: bool,
    /// Advertise and accept TRIM.
    pub can_trim: bool,
    /// Advertise CAN_MULTI_CONN (a flush on one connection covers all connections).
    pub multi_conn: bool,
}

impl ExportInfo {
    /// A writable export with TRIM and multi-conn (right for a plain file).
    pub fn new(name: impl Into<String>, size: u64) -> Self {
        ExportInfo {
            name: name.into(),
            description: String::new(),
            size,
            read_only: false,
            can_trim: true,
            multi_conn: true,
        }
    }

    /// Transmission flags advertised for this export.
    pub fn transmission_flags(&self) -> u16 {
        let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA;
        if self.read_only {
            f |= TFLAG_READ_ONLY;
        } else {
            f |= TFLAG_SEND_WRITE_ZEROES;
            if self.can_trim {
                f |= TFLAG_SEND_TRIM;
            }
        }
        if self.multi_conn {
            f |= TFLAG_CAN_MULTI_CONN;
        }
        f
    }
}

/// Limits and exports of a connection.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Exports offered; the first is the default export.
    pub exports: Vec<ExportInfo>,
    /// The handshake must finish within this time or the connection is closed.
    pub handshake_timeout: Duration,
    /// Most backend operations in flight at once; further requests wait in the socket.
    pub max_in_flight: usize,
    /// Most payload bytes (reads and writes) in flight or queued for sending at once.
    pub max_buffered_bytes: usize,
}

impl ServerConfig {
    /// Defaults: 10 s handshake, 64 operations and 128 MiB in flight.
    pub fn new(exports: Vec<ExportInfo>) -> Self {
        ServerConfig {
            exports,
            handshake_timeout: Duration::from_secs(10),
            max_in_flight: 64,
            max_buffered_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Identifies one backend operation of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpHandle(pub u64);

/// What the backend must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Read `len` bytes at `offset`; complete with the data.
    Read,
    /// Write `data` at `offset`.
    Write {
        /// The bytes to write (`len` of them).
        data: Vec<u8>,
    },
    /// Make every completed write durable.
    Flush,
    /// Discard the range (reads may then return anything; we punch a hole or do nothing).
    Trim,
    /// Make the range read as zeroes.
    WriteZeroes {
        /// The client forbids punching a hole (NBD_CMD_FLAG_NO_HOLE).
        no_hole: bool,
    },
}

/// One request for the backend, decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOp {
    /// Give it back to [`ServerConn::handle_op_done`].
    pub handle: OpHandle,
    /// Operation.
    pub kind: OpKind,
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes (0 for flush).
    pub len: u32,
    /// The data must be durable before completion (NBD_CMD_FLAG_FUA).
    pub fua: bool,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Client sent NBD_CMD_DISC.
    Disconnect,
    /// Client sent NBD_OPT_ABORT.
    Abort,
    /// Client set client flags this server does not know.
    UnknownClientFlags(u32),
    /// Client option did not start with IHAVEOPT.
    BadOptionMagic,
    /// EXPORT_NAME named an export that does not exist (the protocol allows no error reply).
    UnknownExport(String),
    /// A request had a bad magic: the stream cannot be re-synchronised.
    BadRequestMagic(u32),
    /// Handshake not finished in time.
    HandshakeTimeout,
    /// Server shut down during the handshake.
    Shutdown,
}

/// Observable connection milestones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Handshake done; transmission on export number `export` of the config.
    Ready {
        /// Index into [`ServerConfig::exports`].
        export: usize,
    },
    /// The connection is over; the driver closes it once output is sent.
    Closed(CloseReason),
}

/// Counters for `status` output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Options received.
    pub options: u64,
    /// Options answered with an error.
    pub option_errors: u64,
    /// Requests received.
    pub requests: u64,
    /// Requests answered with an error without reaching the backend.
    pub bad_requests: u64,
    /// Backend operations that failed.
    pub op_errors: u64,
    /// Bytes read by clients.
    pub bytes_read: u64,
    /// Bytes written by clients.
    pub bytes_written: u64,
}

#[derive(Debug)]
enum Phase {
    ClientFlags,
    OptHeader,
    OptData {
        opt: u32,
        len: usize,
    },
    OptSkip {
        opt: u32,
        remaining: u64,
    },
    ReqHeader,
    WritePayload {
        req: Request,
    },
    /// Payload of a rejected write being skipped; reply `err` once skipped.
    SkipPayload {
        cookie: u64,
        remaining: u64,
        err: Errno,
    },
    /// No more input: after DISC or ABORT (waits for in-flight ops), or closed.
    Draining,
}

#[derive(Debug, Clone, Copy)]
struct Request {
    flags: u16,
    cmd: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

#[derive(Debug)]
struct InFlight {
    cookie: u64,
    read_len: Option<u32>,
    buffered: usize,
}

/// One NBD connection, server side.
#[derive(Debug)]
pub struct ServerConn {
    cfg: ServerConfig,
    phase: Phase,
    buf: Vec<u8>,
    no_zeroes: bool,
    export: Option<usize>,
    deadline: Option<Instant>,
    shutting_down: bool,
    next_handle: u64,
    in_flight: BTreeMap<OpHandle, InFlight>,
    buffered: usize,
    out: VecDeque<Vec<u8>>,
    out_bytes: usize,
    ops: VecDeque<BlockOp>,
    events: VecDeque<Event>,
    closed: Option<CloseReason>,
    stats: Stats,
}

impl ServerConn {
    /// A new connection; the greeting is already queued for sending.
    pub fn new(now: Instant, cfg: ServerConfig) -> Self {
        let mut greet = Vec::with_capacity(18);
        greet.extend_from_slice(&NBDMAGIC.to_be_bytes());
        greet.extend_from_slice(&IHAVEOPT.to_be_bytes());
        greet.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        let deadline = Some(Instant(now.0.saturating_add(cfg.handshake_timeout.0)));
        let mut c = ServerConn {
            cfg,
            phase: Phase::ClientFlags,
            buf: Vec::new(),
            no_zeroes: false,
            export: None,
            deadline,
            shutting_down: false,
            next_handle: 1,
            in_flight: BTreeMap::new(),
            buffered: 0,
            out: VecDeque::new(),
            out_bytes: 0,
            ops: VecDeque::new(),
            events: VecDeque::new(),
            closed: None,
            stats: Stats::default(),
        };
        c.push_out(greet);
        c
    }

    /// Export chosen by the client, once in transmission.
    pub fn export(&self) -> Option<usize> {
        self.export
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Why the connection ended, if it did (input is no longer accepted).
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    /// True when the driver should send remaining output and close the socket: the connection
    /// ended and no backend operation is still in flight.
    pub fn is_finished(&self) -> bool {
        self.closed.is_some() && self.in_flight.is_empty() && self.ops.is_empty()
    }

    /// Number of backend operations handed out and not completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True if the connection can consume input now (not closed and under its in-flight limits).
    pub fn wants_input(&self) -> bool {
        if self.closed.is_some() || matches!(self.phase, Phase::Draining) {
            return false;
        }
        match self.phase {
            Phase::ReqHeader => self.may_start_request(),
            _ => true,
        }
    }

    fn may_start_request(&self) -> bool {
        self.in_flight.len() < self.cfg.max_in_flight
            && self.buffered + self.out_bytes < self.cfg.max_buffered_bytes
    }

    /// Deadline for [`ServerConn::handle_timeout`] (the handshake timeout), if any.
    pub fn poll_deadline(&self) -> Option<Instant> {
        if self.closed.is_some() {
            None
        } else {
            self.deadline
        }
    }

    /// Timer expiry: closes a connection whose handshake is late.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.deadline {
            if now >= d && self.closed.is_none() && self.export.is_none() {
                self.close(CloseReason::HandshakeTimeout);
            }
        }
    }

    /// Server shutdown: a connection still negotiating is closed; in transmission, in-flight operations
    /// complete and every later request fails with ESHUTDOWN until the client disconnects.
    pub fn handle_shutdown(&mut self) {
        self.shutting_down = true;
        if self.export.is_none() && self.closed.is_none() {
            self.close(CloseReason::Shutdown);
        }
    }

    /// Next bytes to send to the client.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let b = self.out.pop_front()?;
        self.out_bytes -= b.len();
        Some(b)
    }

    /// True if output is queued.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Next backend operation to execute.
    pub fn poll_op(&mut self) -> Option<BlockOp> {
        self.ops.pop_front()
    }

    /// Next milestone.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A backend operation finished: `Ok(data)` (the read bytes for a read, empty otherwise) or an error.
    /// Unknown handles are ignored; a read that returns the wrong number of bytes is answered with EIO.
    pub fn handle_op_done(&mut self, handle: OpHandle, result: Result<Vec<u8>, Errno>) {
        let Some(f) = self.in_flight.remove(&handle) else {
            return;
        };
        self.buffered -= f.buffered;
        let result = match (result, f.read_len) {
            (Ok(d), Some(n)) if d.len() != n as usize => Err(Errno::Io),
            (r, _) => r,
        };
        match result {
            Ok(data) => {
                self.push_reply(f.cookie, 0);
                if f.read_len.is_some() {
                    self.stats.bytes_read += data.len() as u64;
                    self.push_out(data);
                }
            }
            Err(e) => {
                self.stats.op_errors += 1;
                self.push_reply(f.cookie, e.code());
            }
        }
    }

    /// Consumes client bytes; returns how many were used. Fewer than `data.len()` means the connection
    /// is at its in-flight limit (or closed): keep the rest and offer it again after completions.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) -> usize {
        let _ = now;
        let mut pos = 0;
        while pos < data.len() && self.wants_input() {
            pos += self.step(&data[pos..]);
        }
        pos
    }

    /// Takes bytes into `self.buf` until it holds `want`; returns bytes used.
    fn fill(&mut self, data: &[u8], want: usize) -> usize {
        let need = want.saturating_sub(self.buf.len());
        let n = need.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    fn step(&mut self, data: &[u8]) -> usize {
        match std::mem::replace(&mut self.phase, Phase::Draining) {
            Phase::ClientFlags => {
                self.phase = Phase::ClientFlags;
                let n = self.fill(data, 4);
                if self.buf.len() == 4 {
                    let flags = be32(&self.buf);
                    self.buf.clear();
                    if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
                        self.close(CloseReason::UnknownClientFlags(flags));
                    } else {
                        self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
                        self.phase = Phase::OptHeader;
                    }
                }
                n
            }
            Phase::OptHeader => {
                self.phase = Phase::OptHeader;
                let n = self.fill(data, 16);
                if self.buf.len() == 16 {
                    let magic = be64(&self.buf[0..8]);
                    let opt = be32(&self.buf[8..12]);
                    let len = be32(&self.buf[12..16]);
                    self.buf.clear();
                    self.stats.options += 1;
                    if magic != IHAVEOPT {
                        self.close(CloseReason::BadOptionMagic);
                    } else if len > MAX_OPTION_LEN {
                        self.phase = Phase::OptSkip {
                            opt,
                            remaining: len as u64,
                        };
                    } else if len == 0 {
                        self.handle_option(opt, &[]);
                    } else {
                        self.phase = Phase::OptData {
                            opt,
                            len: len as usize,
                        };
                    }
                }
                n
            }
            Phase::OptData { opt, len } => {
                self.phase = Phase::OptData { opt, len };
                let n = self.fill(data, len);
                if self.buf.len() == len {
                    let payload = std::mem::take(&mut self.buf);
                    self.phase = Phase::OptHeader;
                    self.handle_option(opt, &payload);
                }
                n
            }
            Phase::OptSkip { opt, remaining } => {
                let n = (remaining.min(data.len() as u64)) as usize;
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.phase = Phase::OptHeader;
                    if opt == OPT_EXPORT_NAME {
                        self.close(CloseReason::UnknownExport(
                            "<name longer than 16 KiB>".into(),
                        ));
                    } else {
                        self.option_error(opt, REP_ERR_TOO_BIG, "option data longer than 16 KiB");
                    }
                } else {
                    self.phase = Phase::OptSkip { opt, remaining };
                }
                n
            }
            Phase::ReqHeader => {
                self.phase = Phase::ReqHeader;
                let n = self.fill(data, REQUEST_HEADER_LEN);
                if self.buf.len() == REQUEST_HEADER_LEN {
                    let b = std::mem::take(&mut self.buf);
                    let magic = be32(&b[0..4]);
                    if magic != REQUEST_MAGIC {
                        self.close(CloseReason::BadRequestMagic(magic));
                    } else {
                        let req = Request {
                            flags: be16(&b[4..6]),
                            cmd: be16(&b[6..8]),
                            cookie: be64(&b[8..16]),
                            offset: be64(&b[16..24]),
                            len: be32(&b[24..28]),
                        };
                        self.buf = b;
                        self.buf.clear();
                        self.handle_request(req);
                    }
                }
                n
            }
            Phase::WritePayload { req } => {
                let want = req.len as usize;
                if self.buf.capacity() < want {
                    self.buf.reserve_exact(want - self.buf.len());
                }
                let n = self.fill(data, want);
                if self.buf.len() == want {
                    let payload = std::mem::take(&mut self.buf);
                    self.phase = Phase::ReqHeader;
                    self.stats.bytes_written += want as u64;
                    self.start_op(req, OpKind::Write { data: payload }, None);
                } else {
                    self.phase = Phase::WritePayload { req };
                }
                n
            }
            Phase::SkipPayload {
                cookie,
                remaining,
                err,
            } => {
                let n = (remaining.min(data.len() as u64)) as usize;
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.phase = Phase::ReqHeader;
                    self.push_reply(cookie, err.code());
                } else {
                    self.phase = Phase::SkipPayload {
                        cookie,
                        remaining,
                        err,
                    };
                }
                n
            }
            Phase::Draining => 0,
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            tracing::debug!(?reason, "nbd connection closing");
            self.closed = Some(reason.clone());
            self.events.push_back(Event::Closed(reason));
        }
        self.phase = Phase::Draining;
        self.buf = Vec::new();
    }

    fn push_out(&mut self, b: Vec<u8>) {
        if b.is_empty() {
            return;
        }
        self.out_bytes += b.len();
        self.out.push_back(b);
    }

    fn option_reply(&mut self, opt: u32, rtype: u32, data: &[u8]) {
        let mut b = Vec::with_capacity(20 + data.len());
        b.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&rtype.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.push_out(b);
    }

    fn option_error(&mut self, opt: u32, rtype: u32, msg: &str) {
        self.stats.option_errors += 1;
        self.option_reply(opt, rtype, msg.as_bytes());
    }

    fn find_export(&self, name: &[u8]) -> Option<usize> {
        if name.is_empty() && !self.cfg.exports.is_empty() {
            return Some(0);
        }
        self.cfg
            .exports
            .iter()
            .position(|e| e.name.as_bytes() == name)
    }

    fn unknown_export_msg(&self, name: &[u8]) -> String {
        let names: Vec<&str> = self.cfg.exports.iter().map(|e| e.name.as_str()).collect();
        format!(
            "no export named '{}'; this server exports: {}",
            String::from_utf8_lossy(name),
            names.join(", ")
        )
    }

    fn handle_option(&mut self, opt: u32, data: &[u8]) {
        if self.shutting_down {
            self.option_error(opt, REP_ERR_SHUTDOWN, "server is shutting down");
            return;
        }
        match opt {
            OPT_EXPORT_NAME => match self.find_export(data) {
                Some(i) => {
                    let e = &self.cfg.exports[i];
                    let mut b = Vec::with_capacity(134);
                    b.extend_from_slice(&e.size.to_be_bytes());
                    b.extend_from_slice(&e.transmission_flags().to_be_bytes());
                    if !self.no_zeroes {
                        b.extend_from_slice(&[0u8; 124]);
                    }
                    self.push_out(b);
                    self.enter_transmission(i);
                }
                None => self.close(CloseReason::UnknownExport(
                    String::from_utf8_lossy(data).into_owned(),
                )),
            },
            OPT_ABORT => {
                self.option_reply(opt, REP_ACK, &[]);
                self.close(CloseReason::Abort);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    self.option_error(opt, REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
                    return;
                }
                let names: Vec<Vec<u8>> = self
                    .cfg
                    .exports
                    .iter()
                    .map(|e| e.name.as_bytes().to_vec())
                    .collect();
                for n in names {
                    let mut d = Vec::with_capacity(4 + n.len());
                    d.extend_from_slice(&(n.len() as u32).to_be_bytes());
                    d.extend_from_slice(&n);
                    self.option_reply(opt, REP_SERVER, &d);
                }
                self.option_reply(opt, REP_ACK, &[]);
            }
            OPT_INFO | OPT_GO => self.handle_info_go(opt, data),
            OPT_STARTTLS => self.option_error(opt, REP_ERR_UNSUP, "TLS is not supported"),
            OPT_STRUCTURED_REPLY
            | OPT_LIST_META_CONTEXT
            | OPT_SET_META_CONTEXT
            | OPT_EXTENDED_HEADERS => {
                self.option_error(opt, REP_ERR_UNSUP, "only simple replies are supported")
            }
            _ => self.option_error(opt, REP_ERR_UNSUP, "unknown option"),
        }
    }

    fn handle_info_go(&mut self, opt: u32, data: &[u8]) {
        // u32 namelen, name, u16 n, n x u16
        let parsed = (|| {
            let namelen = be32(data.get(0..4)?) as usize;
            let name = data.get(4..4usize.checked_add(namelen)?)?;
            let rest = &data[4 + namelen..];
            let n = be16(rest.get(0..2)?) as usize;
            let reqs = &rest[2..];
            if reqs.len() != n * 2 {
                return None;
            }
            let infos: Vec<u16> = reqs.chunks_exact(2).map(be16).collect();
            Some((name.to_vec(), infos))
        })();
        let Some((name, infos)) = parsed else {
            self.option_error(
                opt,
                REP_ERR_INVALID,
                "malformed INFO/GO data: expected u32 name length, name, u16 count, count x u16",
            );
            return;
        };
        let Some(i) = self.find_export(&name) else {
            let msg = self.unknown_export_msg(&name);
            self.option_error(opt, REP_ERR_UNKNOWN, &msg);
            return;
        };
        let e = self.cfg.exports[i].clone();
        let mut d = Vec::with_capacity(12);
        d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        d.extend_from_slice(&e.size.to_be_bytes());
        d.extend_from_slice(&e.transmission_flags().to_be_bytes());
        self.option_reply(opt, REP_INFO, &d);
        if infos.contains(&INFO_NAME) {
            let mut d = INFO_NAME.to_be_bytes().to_vec();
            d.extend_from_slice(e.name.as_bytes());
            self.option_reply(opt, REP_INFO, &d);
        }
        if infos.contains(&INFO_DESCRIPTION) && !e.description.is_empty() {
            let mut d = INFO_DESCRIPTION.to_be_bytes().to_vec();
            d.extend_from_slice(e.description.as_bytes());
            self.option_reply(opt, REP_INFO, &d);
        }
        // Always advertise block sizes: any alignment works, 4 KiB preferred, 32 MiB max payload.
        let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
        d.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
        self.option_reply(opt, REP_INFO, &d);
        self.option_reply(opt, REP_ACK, &[]);
        if opt == OPT_GO {
            self.enter_transmission(i);
        }
    }

    fn enter_transmission(&mut self, export: usize) {
        self.export = Some(export);
        self.deadline = None;
        self.phase = Phase::ReqHeader;
        self.events.push_back(Event::Ready { export });
    }

    fn push_reply(&mut self, cookie: u64, err: u32) {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&err.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        self.push_out(b);
    }

    fn reject(&mut self, req: Request, err: Errno) {
        self.stats.bad_requests += 1;
        if req.cmd == CMD_WRITE && req.len > 0 {
            self.phase = Phase::SkipPayload {
                cookie: req.cookie,
                remaining: req.len as u64,
                err,
            };
        } else {
            self.push_reply(req.cookie, err.code());
        }
    }

    fn handle_request(&mut self, req: Request) {
        self.stats.requests += 1;
        let Some(ei) = self.export else {
            return;
        };
        if req.cmd == CMD_DISC {
            self.close(CloseReason::Disconnect);
            return;
        }
        if self.shutting_down {
            self.reject(req, Errno::Shutdown);
            return;
        }
        let e = &self.cfg.exports[ei];
        let (size, read_only, can_trim) = (e.size, e.read_only, e.can_trim);
        let allowed = match req.cmd {
            CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM => CMD_FLAG_FUA,
            CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
            _ => 0,
        };
        let known_cmd = matches!(
            req.cmd,
            CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_WRITE_ZEROES
        );
        if !known_cmd || req.flags & !allowed != 0 {
            // Unknown command (CACHE, BLOCK_STATUS, ...) or a flag not negotiated (DF, FAST_ZERO, ...).
            self.reject(req, Errno::Inval);
            return;
        }
        let writes = matches!(req.cmd, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
        if writes && read_only {
            self.reject(req, Errno::Perm);
            return;
        }
        if req.cmd == CMD_FLUSH {
            self.start_op(req, OpKind::Flush, None);
            return;
        }
        if req.cmd == CMD_TRIM && !can_trim {
            self.reject(req, Errno::Inval);
            return;
        }
        if req.len == 0 {
            self.reject(req, Errno::Inval);
            return;
        }
        if matches!(req.cmd, CMD_READ | CMD_WRITE) && req.len > MAX_PAYLOAD {
            self.reject(req, Errno::Inval);
            return;
        }
        let in_range = req
            .offset
            .checked_add(req.len as u64)
            .is_some_and(|end| end <= size);
        if !in_range {
            self.reject(
                req,
                if req.cmd == CMD_READ {
                    Errno::Inval
                } else {
                    Errno::NoSpc
                },
            );
            return;
        }
        match req.cmd {
            CMD_READ => self.start_op(req, OpKind::Read, Some(req.len)),
            CMD_WRITE => self.phase = Phase::WritePayload { req },
            CMD_TRIM => self.start_op(req, OpKind::Trim, None),
            _ => self.start_op(
                req,
                OpKind::WriteZeroes {
                    no_hole: req.flags & CMD_FLAG_NO_HOLE != 0,
                },
                None,
            ),
        }
    }

    fn start_op(&mut self, req: Request, kind: OpKind, read_len: Option<u32>) {
        let handle = OpHandle(self.next_handle);
        self.next_handle += 1;
        let buffered = match &kind {
            OpKind::Read | OpKind::Write { .. } => req.len as usize,
            _ => 0,
        };
        self.buffered += buffered;
        self.in_flight.insert(
            handle,
            InFlight {
                cookie: req.cookie,
                read_len,
                buffered,
            },
        );
        let len = if matches!(kind, OpKind::Flush) {
            0
        } else {
            req.len
        };
        self.ops.push_back(BlockOp {
            handle,
            kind,
            offset: if len == 0 { 0 } else { req.offset },
            len,
            fua: req.flags & CMD_FLAG_FUA != 0,
        });
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
