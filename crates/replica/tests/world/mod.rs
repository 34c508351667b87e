//! A deterministic two-node world for engine tests: in-memory disks, an in-order link whose messages
//! go through the real codec, and controllable disk completion.
#![allow(dead_code)]

use std::collections::VecDeque;

use base::{Duration, Instant};
use replica::*;

pub const SIZE: u64 = 16 << 20;
pub const GRAN: u32 = 4096;

pub struct Node {
    pub r: Replica,
    pub disk: Vec<u8>,
    pub stored_meta: Vec<u8>,
    pub done: Vec<(ReqId, Result<(), ReplicaError>)>,
    pub fences: usize,
    pub events: Vec<Event>,
    /// Disk actions waiting for `complete_io` when `auto_io` is off.
    pub pending_io: VecDeque<Action>,
    pub auto_io: bool,
    pub resync_bytes_sent: u64,
}

impl Node {
    pub fn new(cfg: ReplicaConfig, seed: u64, size: u64) -> Self {
        let meta = Metadata::fresh(size, GRAN, 61);
        Node::with_meta(cfg, meta, vec![0; size as usize], seed)
    }

    pub fn with_meta(cfg: ReplicaConfig, meta: Metadata, disk: Vec<u8>, seed: u64) -> Self {
        let stored_meta = meta.encode();
        Node {
            r: Replica::new(cfg, meta, Instant(0), seed),
            disk,
            stored_meta,
            done: Vec::new(),
            fences: 0,
            events: Vec::new(),
            pending_io: VecDeque::new(),
            auto_io: true,
            resync_bytes_sent: 0,
        }
    }

    pub fn result(&self, req: u64) -> Option<&Result<(), ReplicaError>> {
        self.done.iter().find(|(r, _)| r.0 == req).map(|(_, x)| x)
    }

    fn exec_io(&mut self, now: Instant, a: Action) {
        match a {
            Action::DiskWrite {
                io, offset, data, ..
            } => {
                self.disk[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                self.r.handle_io_done(now, io, Ok(vec![]));
            }
            Action::DiskRead { io, offset, len } => {
                let d = self.disk[offset as usize..(offset + len as u64) as usize].to_vec();
                self.r.handle_io_done(now, io, Ok(d));
            }
            Action::DiskFlush { io } => self.r.handle_io_done(now, io, Ok(vec![])),
            _ => unreachable!(),
        }
    }

    /// Completes the oldest pending disk action.
    pub fn complete_io(&mut self, now: Instant) -> bool {
        match self.pending_io.pop_front() {
            Some(a) => {
                self.exec_io(now, a);
                true
            }
            None => false,
        }
    }
}

pub struct World {
    pub n: [Node; 2],
    pub now: Instant,
    pub link: [VecDeque<Vec<u8>>; 2],
    pub linked: bool,
    /// Deliver messages automatically in `settle`.
    pub auto_net: bool,
}

pub fn cfg(id: u32) -> ReplicaConfig {
    let mut c = ReplicaConfig::new(id);
    c.resync_max_rate = 1 << 40;
    c
}

impl World {
    pub fn new(a: ReplicaConfig, b: ReplicaConfig) -> Self {
        Self::sized(a, b, SIZE)
    }

    pub fn sized(a: ReplicaConfig, b: ReplicaConfig, size: u64) -> Self {
        World {
            n: [Node::new(a, 1, size), Node::new(b, 2, size)],
            now: Instant(1_000_000),
            link: [VecDeque::new(), VecDeque::new()],
            linked: false,
            auto_net: true,
        }
    }

    /// Processes actions of node `i`; returns true if anything happened.
    fn drain(&mut self, i: usize) -> bool {
        let mut any = false;
        let now = self.now;
        while let Some(a) = self.n[i].r.poll_action() {
            any = true;
            match a {
                Action::Send(m) => {
                    if let Msg::ResyncData { data, .. } = &m {
                        self.n[i].resync_bytes_sent += data.len() as u64;
                    }
                    if self.linked {
                        self.link[i].push_back(m.encode());
                    }
                }
                Action::PersistMeta => self.n[i].stored_meta = self.n[i].r.metadata().encode(),
                // Only the log reaches the disk (the driver's in-place journal); the rest of
                // the stored metadata stays as it was.
                Action::PersistActivityLog => {
                    let mut m = Metadata::decode(&self.n[i].stored_meta)
                        .unwrap_or_else(|_| self.n[i].r.metadata().clone());
                    m.al = self.n[i].r.metadata().al.clone();
                    self.n[i].stored_meta = m.encode();
                }
                Action::Complete { req, result } => self.n[i].done.push((req, result)),
                Action::FencePeer => self.n[i].fences += 1,
                Action::Disconnect => self.unlink(),
                io @ (Action::DiskWrite { .. }
                | Action::DiskRead { .. }
                | Action::DiskFlush { .. }) => {
                    if self.n[i].auto_io {
                        self.n[i].exec_io(now, io);
                    } else {
                        self.n[i].pending_io.push_back(io);
                    }
                }
            }
        }
        while let Some(e) = self.n[i].r.poll_event() {
            self.n[i].events.push(e);
        }
        any
    }

    /// Delivers one message from node `from`; returns false if none.
    pub fn deliver(&mut self, from: usize) -> bool {
        let Some(bytes) = self.link[from].pop_front() else {
            return false;
        };
        let (m, used) = Msg::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let now = self.now;
        self.n[1 - from].r.handle_msg(now, m);
        true
    }

    /// Runs until no node has actions and (with `auto_net`) no message is in flight.
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            let mut any = self.drain(0) | self.drain(1);
            if self.auto_net {
                any |= self.deliver(0) | self.deliver(1);
            }
            if !any {
                return;
            }
        }
        panic!("world did not settle");
    }

    pub fn connect(&mut self) {
        self.linked = true;
        self.link = [VecDeque::new(), VecDeque::new()];
        let now = self.now;
        for n in &mut self.n {
            n.r.connect();
        }
        for n in &mut self.n {
            n.r.handle_connected(now);
        }
        self.settle();
        self.advance(Duration::from_millis(100));
    }

    pub fn unlink(&mut self) {
        if !self.linked {
            return;
        }
        self.linked = false;
        self.link = [VecDeque::new(), VecDeque::new()];
        let now = self.now;
        for n in &mut self.n {
            n.r.handle_disconnected(now);
        }
    }

    /// Advances time by `dt`, firing timers as they come due.
    pub fn advance(&mut self, dt: Duration) {
        let end = self.now.0 + dt.0;
        loop {
            self.settle();
            let next = self
                .n
                .iter()
                .filter_map(|n| n.r.poll_deadline())
                .min()
                .filter(|d| d.0 <= end);
            let Some(d) = next else { break };
            self.now = Instant(d.0.max(self.now.0));
            let now = self.now;
            for n in &mut self.n {
                if n.r.poll_deadline().is_some_and(|x| x <= now) {
                    n.r.handle_timeout(now);
                }
            }
        }
        self.now = Instant(end);
        self.settle();
    }

    pub fn write(&mut self, i: usize, req: u64, offset: u64, byte: u8, len: usize, fua: bool) {
        let now = self.now;
        self.n[i]
            .r
            .handle_write(now, ReqId(req), offset, vec![byte; len], fua);
        self.settle();
    }

    /// A synced pair, node 0 primary.
    pub fn synced_pair(a: ReplicaConfig, b: ReplicaConfig) -> World {
        Self::synced_pair_sized(a, b, SIZE)
    }

    pub fn synced_pair_sized(a: ReplicaConfig, b: ReplicaConfig, size: u64) -> World {
        let mut w = World::sized(a, b, size);
        w.connect();
        let now = w.now;
        w.n[0].r.promote(now, true).unwrap();
        w.advance(Duration::from_millis(100));
        assert_eq!(w.n[1].r.disk(), DiskState::UpToDate, "{:?}", w.n[1].events);
        assert_eq!(w.n[0].r.conn(), ConnState::Connected);
        w
    }

    pub fn disks_equal(&self) -> bool {
        self.n[0].disk == self.n[1].disk
    }
}

impl World {
    /// Node `i` loses power: its unfinished disk I/O is lost, the link drops, and it restarts from
    /// what it persisted (metadata and disk).
    pub fn crash(&mut self, i: usize, cfg: ReplicaConfig, seed: u64) {
        let was_linked = self.linked;
        self.linked = false;
        self.link = [VecDeque::new(), VecDeque::new()];
        let now = self.now;
        if was_linked {
            self.n[1 - i].r.handle_disconnected(now);
        }
        let meta = Metadata::decode(&self.n[i].stored_meta).expect("persisted metadata decodes");
        let disk = std::mem::take(&mut self.n[i].disk);
        let auto = self.n[i].auto_io;
        self.n[i] = Node::with_meta(cfg, meta, disk, seed);
        self.n[i].auto_io = auto;
        self.settle();
    }

    /// Reconnects after a crash or partition (both sides must be willing).
    pub fn reconnect(&mut self) {
        self.link = [VecDeque::new(), VecDeque::new()];
        self.linked = true;
        let now = self.now;
        for n in &mut self.n {
            n.r.connect();
        }
        for n in &mut self.n {
            if n.r.conn() == ConnState::WfConnection {
                n.r.handle_connected(now);
            }
        }
        self.settle();
    }
}
