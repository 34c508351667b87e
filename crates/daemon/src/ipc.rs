//! The admin socket: how `quorate status`, `quorate svc ...` and friends talk to
//! the node running in a state dir.
//!
//! The socket is `<state-dir>/quorate.sock`, mode 0600 (only root administers a
//! cluster node). The protocol is one JSON object per line in each direction:
//! a [`Request`] `{"cmd": "status", "args": {...}}` answered by a [`Response`]
//! `{"ok": true, "data": ...}` or `{"ok": false, "error": "...", "hint": "..."}`.
//! A connection may carry several requests, answered in order.
//!
//! The server never answers by itself: it hands every request, with a one-shot
//! reply channel, to the node's event loop, which owns all state.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Longest request or response line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The socket's file name inside a state dir.
pub const SOCKET_NAME: &str = "quorate.sock";

/// The admin socket path for a state dir.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// An admin request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The command, e.g. `status`, `svc.enable`.
    pub cmd: String,
    /// Command arguments; `null` when there are none.
    #[serde(default)]
    pub args: serde_json::Value,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// True when the node did what was asked.
    pub ok: bool,
    /// The result when `ok`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    /// Why not, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the operator can do next, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Response {
    /// A successful answer.
    pub fn ok(data: serde_json::Value) -> Self {
        Response {
            ok: true,
            data,
            error: None,
            hint: None,
        }
    }

    /// A refusal with its reason and the next step.
    pub fn refused(error: impl Into<String>, hint: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: serde_json::Value::Null,
            error: Some(error.into()),
            hint: Some(hint.into()),
        }
    }
}

/// A request waiting for the event loop's answer.
#[derive(Debug)]
pub struct Pending {
    /// What was asked.
    pub request: Request,
    /// Where the answer goes; dropping it answers "node is shutting down".
    pub reply: oneshot::Sender<Response>,
}

/// Errors of the admin socket, on either side.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// Another node already serves this state dir.
    #[error("another quorate node is already running with state dir {0} (its socket answers)")]
    AlreadyRunning(PathBuf),
    /// No node serves this state dir.
    #[error(
        "no quorate node is running with state dir {dir}: {path} {why}. \
         Start one with `quorate node`, or point --state-dir / QUORATE_STATE_DIR at the node's state dir"
    )]
    NotRunning {
        /// The state dir asked for.
        dir: PathBuf,
        /// The socket path tried.
        path: PathBuf,
        /// What the connect attempt said.
        why: String,
    },
    /// The node did not answer in time.
    #[error("the node did not answer within {0:?}; it may be busy or hung (see its log)")]
    Timeout(Duration),
    /// The peer sent something that is not a protocol line.
    #[error("malformed admin message: {0}")]
    Malformed(String),
    /// Any other I/O failure.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The listening side, owned by the node.
#[derive(Debug)]
pub struct IpcServer {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

impl IpcServer {
    /// Bind `<state_dir>/quorate.sock`, replacing a stale socket left by a dead
    /// node but refusing to steal one that still answers.
    pub fn bind(state_dir: &Path) -> Result<Self, IpcError> {
        let path = socket_path(state_dir);
        let io = |source| IpcError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(IpcError::AlreadyRunning(state_dir.to_path_buf()));
            }
            std::fs::remove_file(&path).map_err(io)?;
        }
        let listener = tokio::net::UnixListener::bind(&path).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(IpcServer { listener, path })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept connections forever, forwarding every request to `to_loop`.
    /// Returns when the event loop has gone away.
    pub async fn serve(self, to_loop: mpsc::Sender<Pending>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            if to_loop.is_closed() {
                return;
            }
            let tx = to_loop.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_connection(stream, tx).await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        }
    }
}

impl Drop for IpcServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve_connection(
    stream: tokio::net::UnixStream,
    to_loop: mpsc::Sender<Pending>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut lines)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let response = if n > MAX_LINE_BYTES {
            Response::refused(
                "request too long",
                format!("requests are at most {MAX_LINE_BYTES} bytes"),
            )
        } else {
            match serde_json::from_str::<Request>(line.trim_end()) {
                Err(e) => Response::refused(
                    format!("malformed request: {e}"),
                    "send one JSON object per line: {\"cmd\": \"status\"}",
                ),
                Ok(request) => {
                    let (reply, answer) = oneshot::channel();
                    if to_loop.send(Pending { request, reply }).await.is_err() {
                        Response::refused(
                            "the node is shutting down",
                            "wait for it to stop, then start it again",
                        )
                    } else {
                        answer.await.unwrap_or_else(|_| {
                            Response::refused(
                                "the node is shutting down",
                                "wait for it to stop, then start it again",
                            )
                        })
                    }
                }
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        write.write_all(&out).await?;
        if n > MAX_LINE_BYTES {
            return Ok(());
        }
    }
}

/// Ask the node serving `state_dir` one question, waiting at most `timeout`.
///
/// Blocking: admin commands are short-lived and need no runtime.
pub fn call(state_dir: &Path, request: &Request, timeout: Duration) -> Result<Response, IpcError> {
    let path = socket_path(state_dir);
    let stream =
        std::os::unix::net::UnixStream::connect(&path).map_err(|e| IpcError::NotRunning {
            dir: state_dir.to_path_buf(),
            path: path.clone(),
            why: match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_string(),
                std::io::ErrorKind::ConnectionRefused => "is stale (nobody listens)".to_string(),
                _ => e.to_string(),
            },
        })?;
    let io = |source| IpcError::Io {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| IpcError::Malformed(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut reader = BufReader::new((&stream).take(MAX_LINE_BYTES as u64 + 1));
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => Err(IpcError::Malformed(
            "the node closed the connection without answering".into(),
        )),
        Ok(_) => {
            serde_json::from_str(answer.trim_end()).map_err(|e| IpcError::Malformed(e.to_string()))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(IpcError::Timeout(timeout))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A stand-in event loop: answers `echo` with its args, refuses the rest.
    async fn event_loop(mut rx: mpsc::Receiver<Pending>) {
        while let Some(p) = rx.recv().await {
            let r = if p.request.cmd == "echo" {
                Response::ok(p.request.args.clone())
            } else {
                Response::refused(
                    format!("unknown command {}", p.request.cmd),
                    "see quorate --help",
                )
            };
            let _ = p.reply.send(r);
        }
    }

    #[test]
    fn request_reaches_the_loop_and_the_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let server = rt.block_on(async { IpcServer::bind(dir.path()) }).unwrap();
        let (tx, rx) = mpsc::channel(4);
        rt.spawn(server.serve(tx));
        rt.spawn(event_loop(rx));
        let req = Request {
            cmd: "echo".into(),
            args: serde_json::json!({"n": 7}),
        };
        let r = call(dir.path(), &req, Duration::from_secs(5)).unwrap();
        assert!(r.ok);
        assert_eq!(r.data, serde_json::json!({"n": 7}));
        let r = call(
            dir.path(),
            &Request {
                cmd: "nope".into(),
                args: serde_json::Value::Null,
            },
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some("unknown command nope"));
    }

    #[test]
    fn second_node_on_one_state_dir_is_refused_and_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let first = rt.block_on(async { IpcServer::bind(dir.path()) }).unwrap();
        let second = rt.block_on(async { IpcServer::bind(dir.path()) });
        assert!(
            matches!(second, Err(IpcError::AlreadyRunning(_))),
            "{second:?}"
        );
        drop(first);
        // A dead node leaves its socket file behind, with nobody listening.
        let path = socket_path(dir.path());
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let again = rt.block_on(async { IpcServer::bind(dir.path()) });
        assert!(again.is_ok(), "stale socket not replaced: {again:?}");
    }

    #[test]
    fn no_node_gives_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = call(
            dir.path(),
            &Request {
                cmd: "status".into(),
                args: serde_json::Value::Null,
            },
            Duration::from_secs(1),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("no quorate node is running"), "{msg}");
        assert!(msg.contains("QUORATE_STATE_DIR"), "{msg}");
    }

    #[test]
    fn garbage_line_is_answered_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let server = rt.block_on(async { IpcServer::bind(dir.path()) }).unwrap();
        let (tx, rx) = mpsc::channel(4);
        rt.spawn(server.serve(tx));
        rt.spawn(event_loop(rx));
        let mut s = std::os::unix::net::UnixStream::connect(socket_path(dir.path())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"this is not json\n{\"cmd\":\"echo\",\"args\":1}\n")
            .unwrap();
        let mut r = BufReader::new(s);
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let first: Response = serde_json::from_str(&l).unwrap();
        assert!(!first.ok);
        assert!(first.error.unwrap().starts_with("malformed request"));
        l.clear();
        r.read_line(&mut l).unwrap();
        let second: Response = serde_json::from_str(&l).unwrap();
        assert!(second.ok);
        assert_eq!(second.data, serde_json::json!(1));
    }
}
