//! The rings' UDP sockets (unicast to each configured node, like corosync's udpu).
//!
//! One socket per ring, bound to this node's address on that ring. Received
//! datagrams go to the event loop tagged with their ring; the loop hands them to
//! totem, which authenticates them. Nothing here looks inside a packet.
//!
//! # Batching (the cost of a datagram is the kernel's, not ours)
//! Measured on the bench's namespace layout (veth + bridge), one `sendto` of a
//! 1 KiB datagram costs about 7 us of kernel time, most of it routing, the
//! bridge and netfilter, paid once per datagram. So:
//! - **Send:** [`Rings::try_send`] only queues. Consecutive datagrams to the
//!   same peer on the same ring that fit one MTU are packed into one buffer and
//!   leave in one `sendmsg` with UDP generic segmentation offload
//!   (`UDP_SEGMENT`): the kernel walks the stack once and cuts the buffer into
//!   ordinary datagrams (each at most [`MAX_GSO_SEGMENT`] bytes: no IP
//!   fragmentation) as late as possible. [`Rings::flush`] sends the queue; a
//!   driver that calls it after draining its transmits sends at once, and until
//!   a driver does, a background task flushes whenever the queue becomes
//!   non-empty. Kernels or devices without GSO get one `sendto` per datagram.
//! - **Receive:** sockets ask for `UDP_GRO`, so a batch arrives in one
//!   `recvmsg` with its segment size, and is split back into the datagrams the
//!   peer queued, in order.
//! - Socket buffers are raised to [`SOCKET_BUFFER`] so a burst of one token
//!   visit per peer never overflows them.
//!
//! On the wire nothing changes: every datagram is a separate UDP datagram of
//! at most the size totem made it.

use nix::sys::socket::{self as sock, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

/// Largest datagram read; totem never sends bigger ones.
pub const MAX_DATAGRAM: usize = 65_535;
/// Largest datagram packed into a segmentation batch: a 1500-byte Ethernet MTU
/// less the IPv4 and UDP headers. Bigger datagrams are sent on their own.
pub const MAX_GSO_SEGMENT: usize = 1472;
/// Most datagrams in one segmentation batch (the kernel's `UDP_MAX_SEGMENTS`
/// is 64 on older kernels).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest segmentation batch in bytes (one IP packet's payload, with room).
const MAX_GSO_BYTES: usize = 64_000;
/// Send and receive buffer asked for each ring socket (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// A datagram received on a ring.
#[derive(Debug)]
pub struct Datagram {
    /// Which ring (0 or 1).
    pub ring: u8,
    /// Who sent it (as the network says; totem trusts only what authenticates).
    pub from: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// Errors of the ring sockets.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// The address could not be bound.
    #[error(
        "cannot bind ring {ring} to {addr}: {source}. Is {addr} configured on a local interface \
         (the node's name in cluster.conf must resolve to it), and is no other node using the port?"
    )]
    Bind {
        /// The ring.
        ring: u8,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Counters of the ring sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UdpStats {
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Send system calls made (a segmentation batch is one).
    pub send_calls: u64,
    /// Datagrams dropped at send (full socket buffer, unreachable peer).
    pub send_dropped: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Receive system calls that returned data.
    pub recv_calls: u64,
}

/// Datagrams for one peer on one ring, packed back to back: every one
/// `seg` bytes long except possibly the last.
#[derive(Debug)]
struct Batch {
    ring: u8,
    to: SocketAddr,
    seg: usize,
    count: usize,
    /// A shorter last datagram was added: nothing more may follow.
    closed: bool,
    buf: Vec<u8>,
}

impl Batch {
    /// Append `bytes` if the batch's shape allows it.
    fn try_push(&mut self, bytes: &[u8]) -> bool {
        if self.closed
            || self.count >= MAX_GSO_SEGMENTS
            || bytes.len() > self.seg
            || self.buf.len() + bytes.len() > MAX_GSO_BYTES
        {
            return false;
        }
        if bytes.len() < self.seg {
            self.closed = true;
        }
        self.buf.extend_from_slice(bytes);
        self.count += 1;
        true
    }

    /// The datagrams of the batch, in order.
    fn datagrams(&self) -> std::slice::Chunks<'_, u8> {
        self.buf.chunks(self.seg.max(1))
    }
}

/// The queue of datagrams waiting for [`Rings::flush`].
#[derive(Debug, Default)]
struct Queue {
    batches: Vec<Batch>,
}

impl Queue {
    /// Queue one datagram; true if the queue was empty before.
    fn push(&mut self, ring: u8, to: SocketAddr, bytes: &[u8], gso: bool) -> bool {
        let was_empty = self.batches.is_empty();
        if gso && !bytes.is_empty() && bytes.len() <= MAX_GSO_SEGMENT {
            // only the newest batch to this peer may grow, so order per peer holds
            if let Some(b) = self
                .batches
                .iter_mut()
                .rev()
                .find(|b| b.ring == ring && b.to == to)
            {
                if b.try_push(bytes) {
                    return was_empty;
                }
            }
        }
        let mut buf = Vec::with_capacity(if gso { bytes.len() * 8 } else { bytes.len() });
        buf.extend_from_slice(bytes);
        self.batches.push(Batch {
            ring,
            to,
            seg: bytes.len(),
            count: 1,
            closed: !gso || bytes.len() > MAX_GSO_SEGMENT,
            buf,
        });
        was_empty
    }
}

#[derive(Debug)]
struct Inner {
    sockets: Vec<Arc<UdpSocket>>,
    queue: Mutex<Queue>,
    /// Wakes the background flusher.
    flush_needed: Arc<Notify>,
    /// The driver flushes by itself (no background flushes).
    manual: AtomicBool,
    /// Segmentation offload works on this host.
    gso: AtomicBool,
    /// Held while batches are taken from the queue and sent: the background
    /// flusher and a driver's `flush` may race, and two senders each holding
    /// some batches would reorder a peer's datagrams.
    send_lock: Mutex<()>,
    datagrams_sent: AtomicU64,
    send_calls: AtomicU64,
    send_dropped: AtomicU64,
    datagrams_received: AtomicU64,
    recv_calls: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush_needed.notify_one(); // the flusher sees the rings gone and ends
    }
}

/// The sending half of the rings, cheap to clone.
#[derive(Clone, Debug)]
pub struct Rings {
    inner: Arc<Inner>,
}

/// Raise the socket buffers and ask for receive coalescing; none of it is
/// required (the protocol copes with loss), so failures are only logged.
fn tune(socket: &UdpSocket, ring: u8) {
    // As root (CAP_NET_ADMIN) the FORCE variants pass net.core.rmem_max and
    // wmem_max, as knet does for corosync; otherwise the kernel caps the size.
    let rcv = sock::setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER)
        .or_else(|_| sock::setsockopt(socket, sockopt::RcvBuf, &SOCKET_BUFFER));
    let snd = sock::setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER)
        .or_else(|_| sock::setsockopt(socket, sockopt::SndBuf, &SOCKET_BUFFER));
    for (what, r) in [
        ("SO_RCVBUF", rcv),
        ("SO_SNDBUF", snd),
        (
            "UDP_GRO",
            sock::setsockopt(socket, sockopt::UdpGroSegment, &true),
        ),
    ] {
        if let Err(e) = r {
            tracing::debug!(ring, option = what, error = %e, "ring socket option not set");
        }
    }
}

/// Split one received buffer into the datagrams it holds: a coalesced batch
/// (`seg` = its segment size) or a single datagram.
fn split(bytes: &[u8], seg: Option<usize>) -> std::slice::Chunks<'_, u8> {
    match seg {
        Some(s) if s > 0 => bytes.chunks(s),
        _ => bytes.chunks(bytes.len().max(1)),
    }
}

fn recv_one(
    socket: &UdpSocket,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> std::io::Result<(usize, SocketAddr, Option<usize>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let r = sock::recvmsg::<sock::SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let from = r
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| std::io::Error::other("datagram without an IP source address"))?;
    let mut seg = None;
    if let Ok(cmsgs) = r.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(s) = c {
                seg = usize::try_from(s).ok();
            }
        }
    }
    Ok((r.bytes, from, seg))
}

impl Rings {
    /// Bind one socket per ring address and start forwarding what they receive
    /// into `to_loop`.
    pub async fn bind(
        addrs: &[SocketAddr],
        to_loop: mpsc::Sender<Datagram>,
    ) -> Result<Rings, UdpError> {
        let mut sockets = Vec::new();
        for (ring, addr) in addrs.iter().enumerate() {
            let ring = ring as u8;
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| UdpError::Bind {
                    ring,
                    addr: *addr,
                    source,
                })?;
            tune(&socket, ring);
            sockets.push(Arc::new(socket));
        }
        let inner = Arc::new(Inner {
            sockets,
            queue: Mutex::new(Queue::default()),
            flush_needed: Arc::new(Notify::new()),
            manual: AtomicBool::new(false),
            gso: AtomicBool::new(cfg!(target_os = "linux")),
            send_lock: Mutex::new(()),
            datagrams_sent: AtomicU64::new(0),
            send_calls: AtomicU64::new(0),
            send_dropped: AtomicU64::new(0),
            datagrams_received: AtomicU64::new(0),
            recv_calls: AtomicU64::new(0),
        });
        for (ring, socket) in inner.sockets.iter().enumerate() {
            let ring = ring as u8;
            let rx = socket.clone();
            let tx = to_loop.clone();
            let stats = Arc::downgrade(&inner);
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                let mut cmsg = nix::cmsg_space!(i32);
                loop {
                    let r = rx
                        .async_io(Interest::READABLE, || recv_one(&rx, &mut buf, &mut cmsg))
                        .await;
                    match r {
                        Ok((n, from, seg)) => {
                            let mut count = 0;
                            for d in split(&buf[..n], seg) {
                                count += 1;
                                let d = Datagram {
                                    ring,
                                    from,
                                    bytes: d.to_vec(),
                                };
                                if tx.send(d).await.is_err() {
                                    return;
                                }
                            }
                            let Some(inner) = stats.upgrade() else { return };
                            inner.recv_calls.fetch_add(1, Ordering::Relaxed);
                            inner.datagrams_received.fetch_add(count, Ordering::Relaxed);
                        }
                        // ICMP errors surface here on Linux (a peer's port closed): not fatal.
                        Err(e) => tracing::trace!(ring, error = %e, "ring receive error"),
                    }
                }
            });
        }
        let flusher = Arc::downgrade(&inner);
        let wake = inner.flush_needed.clone();
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let Some(inner) = flusher.upgrade() else {
                    return;
                };
                if inner.manual.load(Ordering::Relaxed) {
                    return;
                }
                Rings { inner }.send_queued();
            }
        });
        Ok(Rings { inner })
    }

    /// Send one datagram on `ring` now, waiting for buffer space; failures (a
    /// down interface, an unreachable peer) are the protocol's business and
    /// only logged at trace level.
    pub async fn send(&self, ring: u8, to: SocketAddr, bytes: &[u8]) {
        if let Some(s) = self.inner.sockets.get(usize::from(ring)) {
            self.inner.send_calls.fetch_add(1, Ordering::Relaxed);
            match s.send_to(bytes, to).await {
                Ok(_) => {
                    self.inner.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.inner.send_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(ring, %to, error = %e, "ring send error");
                }
            }
        }
    }

    /// Queue a datagram for `to` on `ring`, sent by the next [`Rings::flush`]
    /// (or by the background flusher while the driver never calls `flush`).
    /// Never waits: a datagram that finds the socket buffer full is dropped,
    /// exactly as the network may drop it.
    pub fn try_send(&self, ring: u8, to: SocketAddr, bytes: &[u8]) {
        if usize::from(ring) >= self.inner.sockets.len() {
            return;
        }
        let gso = self.inner.gso.load(Ordering::Relaxed);
        let first = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ring, to, bytes, gso);
        if first && !self.inner.manual.load(Ordering::Relaxed) {
            self.inner.flush_needed.notify_one();
        }
    }

    /// Send everything queued, in order per peer, one system call per batch.
    /// A driver that calls this after each round of [`Rings::try_send`]
    /// switches the background flusher off (it would only add wake-ups).
    pub fn flush(&self) {
        if !self.inner.manual.swap(true, Ordering::Relaxed) {
            self.inner.flush_needed.notify_one(); // lets the flusher see it and end
        }
        self.send_queued();
    }

    fn send_queued(&self) {
        let _order = self
            .inner
            .send_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let batches = std::mem::take(
            &mut self
                .inner
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .batches,
        );
        for b in &batches {
            self.send_batch(b);
        }
    }

    fn send_batch(&self, b: &Batch) {
        let Some(s) = self.inner.sockets.get(usize::from(b.ring)) else {
            return;
        };
        let inner = &self.inner;
        if b.count > 1 && inner.gso.load(Ordering::Relaxed) {
            let seg = b.seg as u16;
            let addr = sock::SockaddrStorage::from(b.to);
            // Straight to the non-blocking socket: tokio's readiness cache
            // would refuse a socket it has not yet seen writable.
            let r = sock::sendmsg(
                s.as_raw_fd(),
                &[IoSlice::new(&b.buf)],
                &[ControlMessage::UdpGsoSegments(&seg)],
                MsgFlags::empty(),
                Some(&addr),
            )
            .map_err(std::io::Error::from);
            inner.send_calls.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(_) => {
                    inner
                        .datagrams_sent
                        .fetch_add(b.count as u64, Ordering::Relaxed);
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    inner
                        .send_dropped
                        .fetch_add(b.count as u64, Ordering::Relaxed);
                    tracing::trace!(ring = b.ring, to = %b.to, "ring send buffer full; batch dropped");
                    return;
                }
                Err(e) => {
                    // EIO: the device cannot segment; EINVAL/EMSGSIZE: a smaller
                    // MTU on this path. Either way, datagram by datagram works.
                    if e.raw_os_error() == Some(nix::libc::EIO)
                        || e.raw_os_error() == Some(nix::libc::ENOPROTOOPT)
                    {
                        tracing::info!(ring = b.ring, error = %e, "UDP segmentation offload unavailable; sending datagram by datagram");
                        inner.gso.store(false, Ordering::Relaxed);
                    } else {
                        tracing::debug!(ring = b.ring, to = %b.to, error = %e, "segmented send refused; sending datagram by datagram");
                    }
                }
            }
        }
        let addr = sock::SockaddrStorage::from(b.to);
        for d in b.datagrams() {
            inner.send_calls.fetch_add(1, Ordering::Relaxed);
            match sock::sendto(s.as_raw_fd(), d, &addr, MsgFlags::empty()) {
                Ok(_) => {
                    inner.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    inner.send_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(ring = b.ring, to = %b.to, error = %e, "ring send dropped");
                }
            }
        }
    }

    /// Counters since bind.
    pub fn stats(&self) -> UdpStats {
        let i = &self.inner;
        UdpStats {
            datagrams_sent: i.datagrams_sent.load(Ordering::Relaxed),
            send_calls: i.send_calls.load(Ordering::Relaxed),
            send_dropped: i.send_dropped.load(Ordering::Relaxed),
            datagrams_received: i.datagrams_received.load(Ordering::Relaxed),
            recv_calls: i.recv_calls.load(Ordering::Relaxed),
        }
    }

    /// The local address of each ring.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn recv_n(rx: &mut mpsc::Receiver<Datagram>, n: usize) -> Vec<Datagram> {
        let mut v = Vec::new();
        for _ in 0..n {
            let d = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("datagram {} of {n} within 5 s", v.len()))
                .expect("channel open");
            v.push(d);
        }
        v
    }

    #[tokio::test]
    async fn datagrams_arrive_tagged_with_their_ring() {
        let (tx_a, _rx_a) = mpsc::channel(16);
        let (tx_b, mut rx_b) = mpsc::channel(16);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let a = Rings::bind(&[any, any], tx_a).await.unwrap();
        let b = Rings::bind(&[any, any], tx_b).await.unwrap();
        let b_addrs = b.local_addrs();
        a.send(1, b_addrs[1], b"on ring one").await;
        a.send(0, b_addrs[0], b"on ring zero").await;
        let mut got = recv_n(&mut rx_b, 2).await;
        got.sort_by_key(|d| d.ring);
        assert_eq!(
            (got[0].ring, got[0].bytes.as_slice()),
            (0, &b"on ring zero"[..])
        );
        assert_eq!(
            (got[1].ring, got[1].bytes.as_slice()),
            (1, &b"on ring one"[..])
        );
        assert_eq!(got[0].from, a.local_addrs()[0]);
    }

    /// What one token visit queues: equal-sized messages to two peers, then
    /// a shorter token to one of them, then a datagram too big to batch.
    fn visit(a: &Rings, peers: &[SocketAddr]) -> Vec<(usize, Vec<u8>)> {
        let mut sent = Vec::new();
        for i in 0..40u8 {
            for (p, addr) in peers.iter().enumerate() {
                let body = vec![i; 1100];
                a.try_send(0, *addr, &body);
                sent.push((p, body));
            }
        }
        let token = b"token".to_vec();
        a.try_send(0, peers[0], &token);
        sent.push((0, token));
        let big = vec![7u8; 3000];
        a.try_send(0, peers[1], &big);
        sent.push((1, big));
        sent
    }

    async fn check_visit(flush: bool) {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (tx_a, _rx_a) = mpsc::channel(16);
        let a = Rings::bind(&[any], tx_a).await.unwrap();
        let (tx_b, mut rx_b) = mpsc::channel(4096);
        let b = Rings::bind(&[any], tx_b).await.unwrap();
        let (tx_c, mut rx_c) = mpsc::channel(4096);
        let c = Rings::bind(&[any], tx_c).await.unwrap();
        let peers = [b.local_addrs()[0], c.local_addrs()[0]];
        if flush {
            // The driver's mode from the start: the background flusher is
            // off, so one flush sends exactly one visit's batches.
            a.flush();
        }
        let sent = visit(&a, &peers);
        if flush {
            a.flush();
        }
        for (p, rx) in [(0, &mut rx_b), (1, &mut rx_c)] {
            let want: Vec<&Vec<u8>> = sent.iter().filter(|s| s.0 == p).map(|s| &s.1).collect();
            let got = recv_n(rx, want.len()).await;
            let got: Vec<&Vec<u8>> = got.iter().map(|d| &d.bytes).collect();
            assert_eq!(
                got, want,
                "peer {p} receives every datagram, in order, unchanged"
            );
        }
        let s = a.stats();
        assert_eq!(s.datagrams_sent, sent.len() as u64);
        if flush && a.inner.gso.load(Ordering::Relaxed) {
            // 40 messages + token to peer 0: one call; 40 to peer 1 and the
            // big one: two. (Without the driver's flush the background
            // flusher may wake mid-visit and send it in more pieces, still
            // in order.)
            assert_eq!(s.send_calls, 3, "{s:?}");
            assert!(
                b.stats().recv_calls < 41,
                "receive coalescing: {:?}",
                b.stats()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_visit_leaves_in_one_call_per_peer_and_arrives_in_order() {
        check_visit(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_datagrams_leave_without_an_explicit_flush() {
        check_visit(false).await;
    }

    #[test]
    fn batches_keep_one_shape_and_the_order_per_peer() {
        let p: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let q: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut queue = Queue::default();
        assert!(queue.push(0, p, &[1; 100], true));
        assert!(!queue.push(0, q, &[2; 100], true));
        queue.push(0, p, &[3; 100], true);
        queue.push(0, p, &[4; 50], true); // shorter: closes the batch
        queue.push(0, p, &[5; 50], true); // must start a new batch
        queue.push(1, p, &[6; 100], true); // other ring, other batch
        queue.push(0, q, &[7; 2000], true); // too big to segment
        queue.push(0, q, &[8; 100], true);
        let shape: Vec<(u8, SocketAddr, usize, usize)> = queue
            .batches
            .iter()
            .map(|b| (b.ring, b.to, b.seg, b.count))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, p, 100, 3),
                (0, q, 100, 1),
                (0, p, 50, 1),
                (1, p, 100, 1),
                (0, q, 2000, 1),
                (0, q, 100, 1),
            ]
        );
        let first: Vec<u8> = queue.batches[0].datagrams().map(|d| d[0]).collect();
        assert_eq!(first, vec![1, 3, 4]);
        for _ in 0..MAX_GSO_SEGMENTS {
            queue.push(0, p, &[9; 50], true);
        }
        assert_eq!(
            queue.batches[2].count, MAX_GSO_SEGMENTS,
            "batch size capped"
        );
        let mut no_gso = Queue::default();
        no_gso.push(0, p, &[1; 100], false);
        no_gso.push(0, p, &[1; 100], false);
        assert_eq!(no_gso.batches.len(), 2);
    }

    #[tokio::test]
    async fn binding_an_address_we_do_not_have_says_what_to_check() {
        let (tx, _rx) = mpsc::channel(1);
        let foreign: SocketAddr = "192.0.2.1:5405".parse().unwrap();
        let e = Rings::bind(&[foreign], tx).await.unwrap_err().to_string();
        assert!(e.contains("cannot bind ring 0"), "{e}");
        assert!(e.contains("resolve"), "{e}");
    }
}
