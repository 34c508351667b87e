//! The sans-IO QMP session: greeting, capability negotiation, id matching, events.

use std::collections::VecDeque;
use std::fmt;

use serde_json::{json, Map, Value};

use crate::QmpError;

/// Longest message accepted from QEMU, in bytes; longer lines are dropped and counted.
pub const MAX_LINE: usize = 4 << 20;
/// Most commands that may wait for an answer at once (held plus in flight).
pub const MAX_PENDING: usize = 256;
/// Most undrained events kept; older ones are dropped and counted.
pub const MAX_EVENTS: usize = 1024;

/// The id this session gives a command; QEMU echoes it in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// Where the session is in the QMP handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Waiting for QEMU's `{"QMP": ...}` greeting.
    AwaitGreeting,
    /// `qmp_capabilities` sent, waiting for its answer.
    Negotiating,
    /// Commands flow; events are delivered.
    Ready,
    /// Negotiation was refused; the session is unusable.
    Failed(String),
    /// The connection is closed.
    Closed,
}

/// The server greeting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Greeting {
    /// QEMU version as (major, minor, micro).
    pub version: (u64, u64, u64),
    /// Distribution package string, e.g. `Debian 1:7.2+dfsg-7`.
    pub package: String,
    /// Capabilities the server offers (e.g. `oob`); this session enables none.
    pub capabilities: Vec<String>,
}

/// QMP error classes (qapi `QapiErrorClass`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Most errors.
    GenericError,
    /// The command does not exist (or capabilities are not negotiated yet).
    CommandNotFound,
    /// A device exists but has no medium / is not active.
    DeviceNotActive,
    /// The named device does not exist.
    DeviceNotFound,
    /// KVM lacks a capability.
    KvmMissingCap,
    /// A class this client does not know.
    Other(String),
}

impl ErrorClass {
    fn parse(s: &str) -> Self {
        match s {
            "GenericError" => Self::GenericError,
            "CommandNotFound" => Self::CommandNotFound,
            "DeviceNotActive" => Self::DeviceNotActive,
            "DeviceNotFound" => Self::DeviceNotFound,
            "KVMMissingCap" => Self::KvmMissingCap,
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GenericError => f.write_str("GenericError"),
            Self::CommandNotFound => f.write_str("CommandNotFound"),
            Self::DeviceNotActive => f.write_str("DeviceNotActive"),
            Self::DeviceNotFound => f.write_str("DeviceNotFound"),
            Self::KvmMissingCap => f.write_str("KVMMissingCap"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// An asynchronous event (`{"event": ..., "data": ..., "timestamp": ...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Event name, e.g. `SHUTDOWN`, `RESUME`, `MIGRATION`.
    pub name: String,
    /// The event's `data` member (`Null` when absent).
    pub data: Value,
    /// QEMU's timestamp in microseconds since the epoch, when given.
    pub timestamp_us: Option<u64>,
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The id [`Session::execute`] returned.
    pub id: CommandId,
    /// The command name.
    pub command: String,
    /// `return` value, or the error reply as a typed error.
    pub result: Result<Value, QmpError>,
}

/// Counters of what the session dropped or saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Lines that were not valid QMP (bad JSON, not an object, unknown shape, too long).
    pub malformed: u64,
    /// Replies whose id matched no command in flight.
    pub unmatched_replies: u64,
    /// Events dropped because [`MAX_EVENTS`] were waiting.
    pub events_dropped: u64,
    /// Events received.
    pub events: u64,
    /// Replies received.
    pub replies: u64,
}

const NEGOTIATION_ID: u64 = 0;

/// The QMP protocol state machine for one connection.
#[derive(Debug)]
pub struct Session {
    state: SessionState,
    greeting: Option<Greeting>,
    rbuf: Vec<u8>,
    skipping: bool,
    tx: Vec<u8>,
    held: VecDeque<(CommandId, String, Value)>,
    in_flight: VecDeque<(CommandId, String)>,
    replies: VecDeque<Reply>,
    events: VecDeque<QmpEvent>,
    next_id: u64,
    stats: SessionStats,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A session waiting for the greeting.
    pub fn new() -> Self {
        Self {
            state: SessionState::AwaitGreeting,
            greeting: None,
            rbuf: Vec::new(),
            skipping: false,
            tx: Vec::new(),
            held: VecDeque::new(),
            in_flight: VecDeque::new(),
            replies: VecDeque::new(),
            events: VecDeque::new(),
            next_id: NEGOTIATION_ID + 1,
            stats: SessionStats::default(),
        }
    }

    /// Current handshake state.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The greeting, once received.
    pub fn greeting(&self) -> Option<&Greeting> {
        self.greeting.as_ref()
    }

    /// Counters of dropped and received messages.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// Commands waiting for an answer (held until negotiation plus in flight).
    pub fn pending(&self) -> usize {
        self.held.len() + self.in_flight.len()
    }

    /// Queue a command. `args` must be a JSON object or `Null` (no arguments).
    /// Commands queued before negotiation completes are sent right after it.
    pub fn execute(&mut self, command: &str, args: Value) -> Result<CommandId, QmpError> {
        match &self.state {
            SessionState::Closed => return Err(QmpError::Closed),
            SessionState::Failed(why) => return Err(QmpError::Protocol(why.clone())),
            _ => {}
        }
        if !(args.is_null() || args.is_object()) {
            return Err(QmpError::Protocol(format!(
                "arguments of {command} must be a JSON object, not {args}"
            )));
        }
        if self.pending() >= MAX_PENDING {
            return Err(QmpError::Busy(self.pending()));
        }
        let id = CommandId(self.next_id);
        self.next_id += 1;
        if self.state == SessionState::Ready {
            self.send(id, command, &args);
        } else {
            self.held.push_back((id, command.to_string(), args));
        }
        Ok(id)
    }

    fn send(&mut self, id: CommandId, command: &str, args: &Value) {
        let mut msg = Map::new();
        msg.insert("execute".into(), Value::String(command.to_string()));
        if !args.is_null() {
            msg.insert("arguments".into(), args.clone());
        }
        msg.insert("id".into(), json!(id.0));
        let mut line = serde_json::to_vec(&Value::Object(msg)).expect("a JSON value serializes");
        line.push(b'\n');
        self.tx.extend_from_slice(&line);
        if id.0 != NEGOTIATION_ID {
            self.in_flight.push_back((id, command.to_string()));
        }
    }

    /// Bytes to write to the socket, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.tx.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.tx))
        }
    }

    /// The next command answer, in arrival order.
    pub fn poll_reply(&mut self) -> Option<Reply> {
        self.replies.pop_front()
    }

    /// The next asynchronous event.
    pub fn poll_event(&mut self) -> Option<QmpEvent> {
        self.events.pop_front()
    }

    /// The peer closed the connection: every waiting command fails with [`QmpError::Closed`].
    pub fn handle_close(&mut self) {
        self.state = SessionState::Closed;
        self.fail_all(QmpError::Closed);
    }

    fn fail_all(&mut self, err: QmpError) {
        for (id, command, _) in std::mem::take(&mut self.held) {
            self.replies.push_back(Reply {
                id,
                command,
                result: Err(err.clone()),
            });
        }
        for (id, command) in std::mem::take(&mut self.in_flight) {
            self.replies.push_back(Reply {
                id,
                command,
                result: Err(err.clone()),
            });
        }
    }

    /// Bytes read from the socket. Messages are newline separated JSON objects.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if self.state == SessionState::Closed {
            return;
        }
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (chunk, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.skipping {
                self.skipping = false;
                self.rbuf.clear();
                continue;
            }
            if self.rbuf.len() + chunk.len() > MAX_LINE {
                self.stats.malformed += 1;
                self.rbuf.clear();
                continue;
            }
            self.rbuf.extend_from_slice(chunk);
            let line = std::mem::take(&mut self.rbuf);
            self.handle_line(&line);
        }
        if self.skipping {
            return;
        }
        if self.rbuf.len() + rest.len() > MAX_LINE {
            self.stats.malformed += 1;
            self.rbuf.clear();
            self.skipping = true;
        } else {
            self.rbuf.extend_from_slice(rest);
        }
    }

    fn handle_line(&mut self, line: &[u8]) {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(trimmed) else {
            self.stats.malformed += 1;
            return;
        };
        if let Some(qmp) = obj.get("QMP") {
            self.handle_greeting(qmp);
        } else if let Some(Value::String(name)) = obj.get("event") {
            self.handle_event(name.clone(), &obj);
        } else if obj.contains_key("return") || obj.contains_key("error") {
            self.handle_reply(obj);
        } else {
            self.stats.malformed += 1;
        }
    }

    fn handle_greeting(&mut self, qmp: &Value) {
        if self.state != SessionState::AwaitGreeting {
            self.stats.malformed += 1;
            return;
        }
        let v = &qmp["version"]["qemu"];
        let num = |k: &str| v[k].as_u64().unwrap_or(0);
        let greeting = Greeting {
            version: (num("major"), num("minor"), num("micro")),
            package: qmp["version"]["package"]
                .as_str()
                .unwrap_or("")
                .trim()
                .to_string(),
            capabilities: qmp["capabilities"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        };
        self.greeting = Some(greeting);
        self.state = SessionState::Negotiating;
        self.send(CommandId(NEGOTIATION_ID), "qmp_capabilities", &Value::Null);
    }

    fn handle_event(&mut self, name: String, obj: &Map<String, Value>) {
        self.stats.events += 1;
        let ts = &obj.get("timestamp");
        let timestamp_us = ts.and_then(|t| {
            let s = t["seconds"].as_i64()?;
            let us = t["microseconds"].as_i64()?;
            u64::try_from(s)
                .ok()?
                .checked_mul(1_000_000)?
                .checked_add(u64::try_from(us).ok()?)
        });
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(QmpEvent {
            name,
            data: obj.get("data").cloned().unwrap_or(Value::Null),
            timestamp_us,
        });
    }

    fn handle_reply(&mut self, mut obj: Map<String, Value>) {
        self.stats.replies += 1;
        let id = obj.get("id").and_then(Value::as_u64);
        if self.state == SessionState::Negotiating
            && (id == Some(NEGOTIATION_ID) || (id.is_none() && obj.contains_key("error")))
        {
            if obj.contains_key("return") {
                self.state = SessionState::Ready;
                for (id, command, args) in std::mem::take(&mut self.held) {
                    self.send(id, &command, &args);
                }
            } else {
                let why = format!("qmp_capabilities refused: {}", obj["error"]);
                self.state = SessionState::Failed(why.clone());
                self.fail_all(QmpError::Protocol(why));
            }
            return;
        }
        // Replies come in order; one without id (QEMU could not parse the
        // request) belongs to the oldest command in flight.
        let pos = match id {
            Some(id) => self.in_flight.iter().position(|(c, _)| c.0 == id),
            None if !self.in_flight.is_empty() => Some(0),
            None => None,
        };
        let Some(pos) = pos else {
            self.stats.unmatched_replies += 1;
            return;
        };
        let (id, command) = self.in_flight.remove(pos).expect("position is in range");
        let result = if let Some(ret) = obj.remove("return") {
            Ok(ret)
        } else {
            let err = &obj["error"];
            Err(QmpError::Command {
                command: command.clone(),
                class: ErrorClass::parse(err["class"].as_str().unwrap_or("GenericError")),
                desc: err["desc"].as_str().unwrap_or("").to_string(),
            })
        };
        self.replies.push_back(Reply {
            id,
            command,
            result,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"Debian 1:7.2\"}, \"capabilities\": [\"oob\"]}}\r\n";

    fn ready() -> Session {
        let mut s = Session::new();
        s.handle_bytes(GREETING);
        assert_eq!(s.state(), &SessionState::Negotiating);
        let out = s.poll_transmit().unwrap();
        assert_eq!(out, b"{\"execute\":\"qmp_capabilities\",\"id\":0}\n");
        s.handle_bytes(b"{\"return\": {}, \"id\": 0}\r\n");
        assert_eq!(s.state(), &SessionState::Ready);
        s
    }

    #[test]
    fn greeting_is_parsed_and_negotiated() {
        let s = ready();
        let g = s.greeting().unwrap();
        assert_eq!(g.version, (7, 2, 22));
        assert_eq!(g.package, "Debian 1:7.2");
        assert_eq!(g.capabilities, vec!["oob".to_string()]);
    }

    #[test]
    fn commands_before_negotiation_are_held() {
        let mut s = Session::new();
        let id = s.execute("query-status", Value::Null).unwrap();
        assert!(s.poll_transmit().is_none());
        s.handle_bytes(GREETING);
        s.poll_transmit().unwrap();
        s.handle_bytes(b"{\"return\": {}, \"id\": 0}\n");
        let out = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            out,
            format!("{{\"execute\":\"query-status\",\"id\":{}}}\n", id.0)
        );
    }

    #[test]
    fn replies_match_ids_and_errors_are_typed() {
        let mut s = ready();
        let a = s.execute("query-status", Value::Null).unwrap();
        let b = s.execute("frob", json!({"x": 1})).unwrap();
        let out = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
        assert!(out.contains("\"arguments\":{\"x\":1}"));
        // Answers split across reads, second first.
        let msg = format!(
            "{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"The command frob has not been found\"}}, \"id\": {}}}\r\n{{\"return\": {{\"status\": \"running\", \"running\": true}}, \"id\": {}}}\r\n",
            b.0, a.0
        );
        let (x, y) = msg.as_bytes().split_at(17);
        s.handle_bytes(x);
        assert!(s.poll_reply().is_none());
        s.handle_bytes(y);
        let r1 = s.poll_reply().unwrap();
        assert_eq!(r1.id, b);
        match r1.result {
            Err(QmpError::Command { class, command, .. }) => {
                assert_eq!(class, ErrorClass::CommandNotFound);
                assert_eq!(command, "frob");
            }
            other => panic!("expected error, got {other:?}"),
        }
        let r2 = s.poll_reply().unwrap();
        assert_eq!(r2.id, a);
        assert_eq!(r2.result.unwrap()["status"], "running");
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn events_are_routed_and_bounded() {
        let mut s = ready();
        let id = s.execute("stop", Value::Null).unwrap();
        s.handle_bytes(
            format!("{{\"timestamp\": {{\"seconds\": 2, \"microseconds\": 5}}, \"event\": \"STOP\"}}\n{{\"return\": {{}}, \"id\": {}}}\n", id.0)
                .as_bytes(),
        );
        let ev = s.poll_event().unwrap();
        assert_eq!(ev.name, "STOP");
        assert_eq!(ev.timestamp_us, Some(2_000_005));
        assert_eq!(s.poll_reply().unwrap().id, id);
        for _ in 0..MAX_EVENTS + 5 {
            s.handle_bytes(b"{\"event\": \"RESET\", \"data\": {\"guest\": true}}\n");
        }
        assert_eq!(s.stats().events_dropped, 5);
        assert_eq!(std::iter::from_fn(|| s.poll_event()).count(), MAX_EVENTS);
    }

    #[test]
    fn close_fails_waiting_commands() {
        let mut s = ready();
        let id = s.execute("query-status", Value::Null).unwrap();
        s.handle_close();
        let r = s.poll_reply().unwrap();
        assert_eq!((r.id, r.result), (id, Err(QmpError::Closed)));
        assert_eq!(s.execute("cont", Value::Null), Err(QmpError::Closed));
    }

    #[test]
    fn refused_negotiation_fails_the_session() {
        let mut s = Session::new();
        let id = s.execute("query-status", Value::Null).unwrap();
        s.handle_bytes(GREETING);
        s.handle_bytes(
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 0}\n",
        );
        assert!(matches!(s.state(), SessionState::Failed(_)));
        let r = s.poll_reply().unwrap();
        assert_eq!(r.id, id);
        assert!(matches!(r.result, Err(QmpError::Protocol(_))));
    }

    #[test]
    fn malformed_input_is_counted_not_fatal() {
        let mut s = ready();
        s.handle_bytes(b"not json\n[1,2]\n{\"foo\": 1}\n{\"return\": 1, \"id\": 99}\n");
        assert_eq!(s.stats().malformed, 3);
        assert_eq!(s.stats().unmatched_replies, 1);
        let big = vec![b'x'; MAX_LINE + 10];
        s.handle_bytes(&big);
        s.handle_bytes(b"yyy\n{\"event\": \"RESUME\"}\n");
        assert_eq!(s.stats().malformed, 4);
        assert_eq!(s.poll_event().unwrap().name, "RESUME");
        assert_eq!(s.state(), &SessionState::Ready);
    }

    #[test]
    fn non_object_arguments_are_refused() {
        let mut s = ready();
        assert!(matches!(
            s.execute("cont", json!([1])),
            Err(QmpError::Protocol(_))
        ));
    }

    #[test]
    fn in_flight_is_bounded() {
        let mut s = ready();
        for _ in 0..MAX_PENDING {
            s.execute("query-status", Value::Null).unwrap();
        }
        assert_eq!(
            s.execute("query-status", Value::Null),
            Err(QmpError::Busy(MAX_PENDING))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..20)) {
            let mut s = Session::new();
            s.handle_bytes(GREETING);
            let _ = s.execute("query-status", Value::Null);
            for c in &chunks {
                s.handle_bytes(c);
            }
            while s.poll_reply().is_some() {}
            while s.poll_event().is_some() {}
        }
    }
}
