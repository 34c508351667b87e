//! The tokio driver: a [`Backend`] trait for the storage behind an export, a file implementation,
//! and listeners (TCP or Unix socket) that run one [`ServerConn`] per client.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};

use crate::server::{
    BlockOp, CloseReason, Errno, Event, ExportInfo, OpHandle, OpKind, ServerConfig, ServerConn,
    Stats,
};

/// Storage behind an export. Methods are blocking; the driver calls them from `spawn_blocking`,
/// several at once (the client may pipeline), so implementations must be thread-safe.
pub trait Backend: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `data` at `offset`; with `fua` the data is durable on return.
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Discards a range (advisory: doing nothing is correct).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()>;
    /// Makes a range read as zeroes; `may_trim` allows punching a hole.
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool, fua: bool) -> io::Result<()>;
    /// Refuse writes.
    fn read_only(&self) -> bool {
        false
    }
    /// Advertise TRIM.
    fn can_trim(&self) -> bool {
        true
    }
    /// Starts `op` and calls `done` with its result (the read bytes for a read). The default runs the
    /// blocking methods on tokio's blocking pool; backends with their own event loop (the replicated
    /// volume) override it to avoid that thread hop. Called from within the tokio runtime.
    fn submit(self: Arc<Self>, op: BlockOp, done: Done) {
        tokio::task::spawn_blocking(move || done(execute(&*self, &op)));
    }
}

/// Completion callback of [`Backend::submit`].
pub type Done = Box<dyn FnOnce(Result<Vec<u8>, Errno>) + Send>;

/// A regular file or block device, accessed with pread/pwrite; FLUSH and FUA use fdatasync.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    size: u64,
    read_only: bool,
}

impl FileBackend {
    /// Opens an existing file or block device.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open backing file {}: {e}", path.display()),
                )
            })?;
        let size = file.seek(SeekFrom::End(0))?;
        Ok(FileBackend {
            file,
            size,
            read_only,
        })
    }

    /// Creates (or extends/truncates) a sparse file of `size` bytes and opens it read-write.
    pub fn create(path: &Path, size: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.set_len(size)?;
        Ok(FileBackend {
            file,
            size,
            read_only: false,
        })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on an owned, open descriptor with plain integer arguments.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zero_bytes(&self, mut offset: u64, mut len: u64) -> io::Result<()> {
        let chunk = vec![0u8; len.min(1 << 20) as usize];
        while len > 0 {
            let n = len.min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], offset)?;
            offset += n as u64;
            len -= n as u64;
        }
        Ok(())
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

impl Backend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if !unsupported(&e) => return Err(e),
            _ => {}
        }
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool, fua: bool) -> io::Result<()> {
        let mode = if may_trim {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Ok(()) => {}
            Err(e) if unsupported(&e) => self.write_zero_bytes(offset, len)?,
            Err(e) => return Err(e),
        }
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
}

/// Runs one validated operation on a backend (blocking).
pub fn execute<B: Backend + ?Sized>(backend: &B, op: &BlockOp) -> Result<Vec<u8>, Errno> {
    let io = |r: io::Result<()>| r.map_err(|e| Errno::from_io(&e));
    match &op.kind {
        OpKind::Read => {
            let mut v = vec![0u8; op.len as usize];
            io(backend.read_at(&mut v, op.offset))?;
            Ok(v)
        }
        OpKind::Write { data } => io(backend.write_at(data, op.offset, op.fua)).map(|_| Vec::new()),
        OpKind::Flush => io(backend.flush()).map(|_| Vec::new()),
        OpKind::Trim => io(backend.trim(op.offset, op.len as u64, op.fua)).map(|_| Vec::new()),
        OpKind::WriteZeroes { no_hole } => {
            io(backend.write_zeroes(op.offset, op.len as u64, !no_hole, op.fua)).map(|_| Vec::new())
        }
    }
}

/// An export: a name and the backend behind it.
#[derive(Clone)]
pub struct Export {
    /// What clients see.
    pub info: ExportInfo,
    /// Where the data lives.
    pub backend: Arc<dyn Backend>,
}

impl Export {
    /// An export whose size, read-only and trim flags come from the backend.
    pub fn new(name: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        let mut info = ExportInfo::new(name, backend.size());
        info.read_only = backend.read_only();
        info.can_trim = backend.can_trim();
        Export { info, backend }
    }
}

/// Serves exports to any number of clients until [`Server::shutdown`].
pub struct Server {
    exports: Vec<Export>,
    config: ServerConfig,
    shutdown: watch::Sender<bool>,
}

/// How one client connection ended.
#[derive(Debug, Clone)]
pub struct ConnSummary {
    /// Protocol-level reason, or `None` if the client just closed the socket.
    pub reason: Option<CloseReason>,
    /// Counters of the connection.
    pub stats: Stats,
}

impl Server {
    /// A server for these exports (the first is the default export) with default limits.
    pub fn new(exports: Vec<Export>) -> Arc<Self> {
        Self::with_config(exports, |_| {})
    }

    /// A server whose [`ServerConfig`] limits are adjusted by `tune`.
    pub fn with_config(exports: Vec<Export>, tune: impl FnOnce(&mut ServerConfig)) -> Arc<Self> {
        let mut config = ServerConfig::new(exports.iter().map(|e| e.info.clone()).collect());
        tune(&mut config);
        Arc::new(Server {
            exports,
            config,
            shutdown: watch::channel(false).0,
        })
    }

    /// Stops accepting; connections still negotiating close, connections in transmission answer
    /// every new request with ESHUTDOWN.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Accepts TCP clients until shutdown.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        let mut sd = self.shutdown.subscribe();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let (sock, peer) = r?;
                    let _ = sock.set_nodelay(true);
                    tracing::debug!(%peer, "nbd client connected");
                    let s = self.clone();
                    tokio::spawn(async move { s.serve_connection(sock).await });
                }
                _ = sd.wait_for(|v| *v) => return Ok(()),
            }
        }
    }

    /// Accepts Unix-socket clients until shutdown.
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) -> io::Result<()> {
        let mut sd = self.shutdown.subscribe();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let (sock, _) = r?;
                    let s = self.clone();
                    tokio::spawn(async move { s.serve_connection(sock).await });
                }
                _ = sd.wait_for(|v| *v) => return Ok(()),
            }
        }
    }

    /// Runs the protocol on one connected stream until the client leaves.
    pub async fn serve_connection<S>(&self, stream: S) -> ConnSummary
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let start = std::time::Instant::now();
        let now = || base::Instant(start.elapsed().as_nanos() as u64);
        let (mut rd, wr) = tokio::io::split(stream);
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(async move {
            let mut w = BufWriter::with_capacity(64 * 1024, wr);
            while let Some(b) = wrx.recv().await {
                if w.write_all(&b).await.is_err() {
                    return;
                }
                while let Ok(b) = wrx.try_recv() {
                    if w.write_all(&b).await.is_err() {
                        return;
                    }
                }
                if w.flush().await.is_err() {
                    return;
                }
            }
            let _ = w.shutdown().await;
        });
        let (dtx, mut drx) = mpsc::unbounded_channel::<(OpHandle, Result<Vec<u8>, Errno>)>();
        let mut sd = self.shutdown.subscribe();
        let mut sd_live = true;
        let mut conn = ServerConn::new(now(), self.config.clone());
        if *sd.borrow_and_update() {
            conn.handle_shutdown();
        }
        let mut buf = vec![0u8; 256 * 1024];
        let (mut pos, mut filled) = (0usize, 0usize);
        let mut eof = false;
        let mut export: Option<usize> = None;
        loop {
            if pos < filled {
                pos += conn.handle_input(now(), &buf[pos..filled]);
                if pos == filled {
                    pos = 0;
                    filled = 0;
                }
            }
            while let Some(ev) = conn.poll_event() {
                match ev {
                    Event::Ready { export: i } => {
                        tracing::debug!(export = %self.exports[i].info.name, "nbd transmission");
                        export = Some(i);
                    }
                    Event::Closed(r) => tracing::debug!(reason = ?r, "nbd connection ends"),
                }
            }
            while let Some(op) = conn.poll_op() {
                let Some(i) = export else { break };
                let backend = self.exports[i].backend.clone();
                let dtx = dtx.clone();
                let h = op.handle;
                backend.submit(
                    op,
                    Box::new(move |r| {
                        let _ = dtx.send((h, r));
                    }),
                );
            }
            if !conn.has_output()
                && (conn.is_finished() || (eof && conn.in_flight() == 0 && pos == filled))
            {
                break;
            }
            let deadline = conn.poll_deadline().map(|d| {
                tokio::time::Instant::from_std(start + std::time::Duration::from_nanos(d.0))
            });
            let can_read = !eof && pos == filled && conn.wants_input();
            tokio::select! {
                r = rd.read(&mut buf), if can_read => match r {
                    Ok(0) | Err(_) => eof = true,
                    Ok(n) => { pos = 0; filled = n; }
                },
                Some((h, r)) = drx.recv() => conn.handle_op_done(h, r),
                p = wtx.reserve(), if conn.has_output() => match p {
                    Ok(p) => { if let Some(b) = conn.poll_transmit() { p.send(b) } }
                    // The writer saw a socket error: the client is gone, nothing more to send.
                    Err(_) => break,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    conn.handle_timeout(now());
                }
                r = sd.changed(), if sd_live => match r {
                    Ok(()) => if *sd.borrow_and_update() { conn.handle_shutdown() },
                    Err(_) => sd_live = false,
                },
            }
            if eof && !conn.has_output() && conn.close_reason().is_none() && conn.in_flight() == 0 {
                break;
            }
        }
        // Late completions can still queue replies: send what remains.
        while let Some(b) = conn.poll_transmit() {
            if wtx.send(b).await.is_err() {
                break;
            }
        }
        drop(wtx);
        let _ = writer.await;
        ConnSummary {
            reason: conn.close_reason().cloned(),
            stats: conn.stats().clone(),
        }
    }
}

/// Serves one backend as `export_name` on a TCP listener until accepting fails (drop the future
/// to stop). Convenience for `Server::new(vec![Export::new(..)])` + `serve_tcp`; use [`Server`]
/// directly for several exports or a graceful shutdown.
pub async fn serve(
    listener: TcpListener,
    export_name: &str,
    backend: Arc<dyn Backend>,
) -> io::Result<()> {
    Server::new(vec![Export::new(export_name, backend)])
        .serve_tcp(listener)
        .await
}
