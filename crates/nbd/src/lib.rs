//! NBD server: the fixed-newstyle protocol as a sans-IO state machine, and a tokio driver that serves a block backend.
