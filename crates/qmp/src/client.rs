//! A tokio QMP client over a Unix socket, driving a [`Session`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::session::{CommandId, Greeting, QmpEvent, Session, SessionState, MAX_EVENTS};
use crate::QmpError;

/// How long [`QmpClient::connect`] waits for the greeting and negotiation.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Request {
    command: String,
    args: Value,
    reply: oneshot::Sender<Result<Value, QmpError>>,
}

/// A connected, negotiated QMP client. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct QmpClient {
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<QmpEvent>,
    greeting: Greeting,
    path: PathBuf,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient")
            .field("path", &self.path)
            .finish()
    }
}

fn io_err(path: &Path, e: std::io::Error) -> QmpError {
    QmpError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl QmpClient {
    /// Connect to QEMU's QMP Unix socket, read the greeting and negotiate
    /// capabilities. Fails with [`QmpError::Io`] when nobody listens and
    /// [`QmpError::Timeout`] when QEMU does not greet within 10 s.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, QmpError> {
        let path = path.as_ref().to_path_buf();
        let mut stream = UnixStream::connect(&path)
            .await
            .map_err(|e| io_err(&path, e))?;
        let mut session = Session::new();
        let handshake = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match session.state() {
                    SessionState::Ready => return Ok(()),
                    SessionState::Failed(why) => return Err(QmpError::Protocol(why.clone())),
                    SessionState::Closed => return Err(QmpError::Closed),
                    _ => {}
                }
                let n = stream.read(&mut buf).await.map_err(|e| io_err(&path, e))?;
                if n == 0 {
                    session.handle_close();
                    continue;
                }
                session.handle_bytes(&buf[..n]);
                if let Some(out) = session.poll_transmit() {
                    stream.write_all(&out).await.map_err(|e| io_err(&path, e))?;
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| QmpError::Timeout {
                what: format!("greeting on {}", path.display()),
                ms: HANDSHAKE_TIMEOUT.as_millis() as u64,
            })??;
        let greeting = session.greeting().cloned().unwrap_or_default();
        tracing::debug!(path = %path.display(), version = ?greeting.version, "QMP connected");
        let (req_tx, req_rx) = mpsc::channel(64);
        let (ev_tx, _) = broadcast::channel(MAX_EVENTS);
        tokio::spawn(run(stream, session, req_rx, ev_tx.clone(), path.clone()));
        Ok(Self {
            requests: req_tx,
            events: ev_tx,
            greeting,
            path,
        })
    }

    /// The server greeting (QEMU version).
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// The socket path this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `command` with `args` (a JSON object, or `Value::Null` for none) and
    /// return QEMU's `return` value; an error reply becomes [`QmpError::Command`].
    pub async fn execute(&self, command: &str, args: Value) -> Result<Value, QmpError> {
        let (tx, rx) = oneshot::channel();
        let req = Request {
            command: command.to_string(),
            args,
            reply: tx,
        };
        self.requests
            .send(req)
            .await
            .map_err(|_| QmpError::Closed)?;
        rx.await.map_err(|_| QmpError::Closed)?
    }

    /// [`execute`](Self::execute) bounded by `timeout`.
    pub async fn execute_timeout(
        &self,
        command: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        tokio::time::timeout(timeout, self.execute(command, args))
            .await
            .map_err(|_| QmpError::Timeout {
                what: command.to_string(),
                ms: timeout.as_millis() as u64,
            })?
    }

    /// Subscribe to events that arrive from now on. A receiver that falls more
    /// than 1024 events behind loses the oldest (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Resolves when the connection is gone (QEMU exited or closed the socket).
    pub async fn closed(&self) {
        self.requests.closed().await
    }

    /// Whether the connection is gone (QEMU exited or closed the socket).
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }
}

/// A command's arguments as the debug log shows them: withheld when they
/// might carry a secret (a password, a `secret` object's data).
fn loggable(args: &Value) -> String {
    let text = args.to_string();
    let lower = text.to_ascii_lowercase();
    if ["password", "secret", "\"data\"", "key"]
        .iter()
        .any(|w| lower.contains(w))
    {
        "(withheld: may hold a secret)".into()
    } else {
        text
    }
}

async fn run(
    mut stream: UnixStream,
    mut session: Session,
    mut requests: mpsc::Receiver<Request>,
    events: broadcast::Sender<QmpEvent>,
    path: PathBuf,
) {
    let mut waiting: BTreeMap<CommandId, oneshot::Sender<Result<Value, QmpError>>> =
        BTreeMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) => session.handle_close(),
                Ok(n) => session.handle_bytes(&buf[..n]),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "QMP read failed");
                    session.handle_close();
                }
            },
            req = requests.recv() => match req {
                None => break,
                Some(req) => {
                    tracing::debug!(path = %path.display(), command = %req.command, args = %loggable(&req.args), "QMP command");
                    match session.execute(&req.command, req.args) {
                        Ok(id) => { waiting.insert(id, req.reply); }
                        Err(e) => { let _ = req.reply.send(Err(e)); }
                    }
                }
            },
        }
        if let Some(out) = session.poll_transmit() {
            if let Err(e) = stream.write_all(&out).await {
                tracing::debug!(path = %path.display(), error = %e, "QMP write failed");
                session.handle_close();
            }
        }
        while let Some(reply) = session.poll_reply() {
            if let Some(tx) = waiting.remove(&reply.id) {
                let _ = tx.send(reply.result);
            }
        }
        while let Some(ev) = session.poll_event() {
            tracing::debug!(path = %path.display(), event = %ev.name, data = %ev.data, "QMP event");
            let _ = events.send(ev);
        }
        if *session.state() == SessionState::Closed {
            break;
        }
    }
    requests.close();
    while let Ok(req) = requests.try_recv() {
        let _ = req.reply.send(Err(QmpError::Closed));
    }
    for (_, tx) in waiting {
        let _ = tx.send(Err(QmpError::Closed));
    }
}

#[cfg(test)]
mod tests {
    use super::loggable;
    use serde_json::json;

    #[test]
    fn arguments_that_may_hold_a_secret_are_withheld_from_the_log() {
        assert_eq!(
            loggable(&json!({"uri": "tcp:10.0.0.2:49152"})),
            r#"{"uri":"tcp:10.0.0.2:49152"}"#
        );
        assert_eq!(loggable(&serde_json::Value::Null), "null");
        for secret in [
            json!({"password": "hunter2"}),
            json!({"qom-type": "secret", "id": "s0", "data": "hunter2"}),
            json!({"options": {"key-secret": "s0"}}),
        ] {
            assert!(
                !loggable(&secret).contains("hunter2") && loggable(&secret).contains("withheld")
            );
        }
    }
}
