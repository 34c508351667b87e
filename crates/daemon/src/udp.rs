//! The rings' UDP sockets (unicast to each configured node, like corosync's udpu).
//!
//! One socket per ring, bound to this node's address on that ring. Received
//! datagrams go to the event loop tagged with their ring; the loop hands them to
//! totem, which authenticates them. Nothing here looks inside a packet.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Largest datagram read; totem never sends bigger ones.
pub const MAX_DATAGRAM: usize = 65_535;

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

/// The sending half of the rings, cheap to clone.
#[derive(Clone, Debug)]
pub struct Rings {
    sockets: Vec<Arc<UdpSocket>>,
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
            let socket = Arc::new(socket);
            let rx = socket.clone();
            let tx = to_loop.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                loop {
                    match rx.recv_from(&mut buf).await {
                        Ok((n, from)) => {
                            let d = Datagram {
                                ring,
                                from,
                                bytes: buf[..n].to_vec(),
                            };
                            if tx.send(d).await.is_err() {
                                return;
                            }
                        }
                        // ICMP errors surface here on Linux (a peer's port closed): not fatal.
                        Err(e) => tracing::trace!(ring, error = %e, "ring receive error"),
                    }
                }
            });
            sockets.push(socket);
        }
        Ok(Rings { sockets })
    }

    /// Send one datagram on `ring`; failures (a down interface, an unreachable
    /// peer) are the protocol's business and only logged at trace level.
    pub async fn send(&self, ring: u8, to: SocketAddr, bytes: &[u8]) {
        if let Some(s) = self.sockets.get(usize::from(ring)) {
            if let Err(e) = s.send_to(bytes, to).await {
                tracing::trace!(ring, %to, error = %e, "ring send error");
            }
        }
    }

    /// Send without waiting: drops the datagram when the socket buffer is full,
    /// exactly as the network may.
    pub fn try_send(&self, ring: u8, to: SocketAddr, bytes: &[u8]) {
        if let Some(s) = self.sockets.get(usize::from(ring)) {
            if let Err(e) = s.try_send_to(bytes, to) {
                tracing::trace!(ring, %to, error = %e, "ring send dropped");
            }
        }
    }

    /// The local address of each ring.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut got = [rx_b.recv().await.unwrap(), rx_b.recv().await.unwrap()];
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

    #[tokio::test]
    async fn binding_an_address_we_do_not_have_says_what_to_check() {
        let (tx, _rx) = mpsc::channel(1);
        let foreign: SocketAddr = "192.0.2.1:5405".parse().unwrap();
        let e = Rings::bind(&[foreign], tx).await.unwrap_err().to_string();
        assert!(e.contains("cannot bind ring 0"), "{e}");
        assert!(e.contains("resolve"), "{e}");
    }
}
