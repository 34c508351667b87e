//! Helpers shared by the real-client tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nbd::{Export, FileBackend, Server};

/// Fails with a clear message if an external program is missing.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}`: install the Debian package `{package}` (apt-get install {package})"
    );
}

/// A running in-process NBD server on 127.0.0.1.
pub struct Running {
    pub port: u16,
    pub server: Arc<Server>,
    _rt: tokio::runtime::Runtime,
}

impl Running {
    pub fn url(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.port, export)
    }
}

/// Serves `path` as `name` (plus read-only `ro` of the same file).
pub fn serve_file(path: &Path, name: &str) -> Running {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rw = Arc::new(FileBackend::open(path, false).unwrap());
    let ro = Arc::new(FileBackend::open(path, true).unwrap());
    let mut e = Export::new(name, rw);
    e.info.description = "quorate test export".into();
    let server = Server::new(vec![e, Export::new("ro", ro)]);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(server.clone().serve_tcp(listener));
    Running {
        port,
        server,
        _rt: rt,
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);
impl Scratch {
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("nbd-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes with a zero hole in the middle (exercises zero detection).
pub fn image_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = base::DetRng::new(seed);
    let mut v = vec![0u8; size];
    for c in v.chunks_mut(8) {
        let x = rng.next_u64().to_le_bytes();
        c.copy_from_slice(&x[..c.len()]);
    }
    let hole = size / 4;
    v[hole..hole + size / 8].fill(0);
    v
}

/// Runs a command, failing with its output if it does not succeed.
pub fn run(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
