//! Human-readable status, the manual-ack warning, and the outcome's wire form.

use crate::domain::{FenceOutcome, FenceStatus, VictimState};
use std::fmt;

/// Longest encoded [`FenceOutcome`] accepted by [`FenceOutcome::decode`].
pub const MAX_OUTCOME_BYTES: usize = 4096;

/// Why an outcome message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_OUTCOME_BYTES`].
    #[error("fence outcome message of {0} bytes exceeds {MAX_OUTCOME_BYTES}")]
    TooLong(usize),
    /// Not a valid outcome.
    #[error("malformed fence outcome message: {0}")]
    Malformed(String),
}

impl FenceOutcome {
    /// The bytes to broadcast through totem (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a FenceOutcome always serializes")
    }
    /// Parses a received message; hostile input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<FenceOutcome, DecodeError> {
        if bytes.len() > MAX_OUTCOME_BYTES {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// What `quorate fence ack NODE` must show (and have confirmed) before acknowledging.
pub fn manual_ack_warning(node: &str) -> String {
    format!(
        "WARNING: you are about to declare node {node} fenced WITHOUT a fence device.\n\
         Do this only if you have made sure {node} is powered off (pulled its power,\n\
         checked its console). Its services, file systems and replicated disks will be\n\
         recovered on other nodes right away: if {node} is in fact still running, both\n\
         copies will write to shared data and corrupt it."
    )
}

impl fmt::Display for FenceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let members: Vec<String> = self.members.iter().map(|m| m.to_string()).collect();
        writeln!(
            f,
            "fence domain: node {} | members [{}] | {}",
            self.me,
            members.join(" "),
            if self.quorate {
                "quorate"
            } else {
                "INQUORATE (fencing postponed)"
            }
        )?;
        if let Some(t) = self.startup_fencing_at {
            writeln!(f, "startup fencing of absent nodes at {t}")?;
        }
        if self.victims.is_empty() {
            writeln!(f, "no victims: nothing is blocked on fencing")?;
        } else {
            writeln!(
                f,
                "BLOCKED waiting on fencing of {} node(s):",
                self.victims.len()
            )?;
            for v in &self.victims {
                let state = match v.state {
                    VictimState::PostFailDelay => "waiting post_fail_delay",
                    VictimState::WaitingQuorum => "waiting for quorum",
                    VictimState::WaitingFencer => "being fenced by another member",
                    VictimState::Queued => "queued",
                    VictimState::DeviceDelay => "waiting device delay",
                    VictimState::RunningAgent => "agent running",
                    VictimState::RetryWait => "all methods failed, retrying",
                    VictimState::Announced => "outcome sent, awaiting delivery",
                };
                write!(
                    f,
                    "  {} (node {}): {state}; fencer {}; tries {}, rounds {}",
                    v.name, v.node, v.fencer, v.tries, v.rounds
                )?;
                if let (Some(m), Some(d)) = (&v.last_method, &v.last_device) {
                    write!(f, "; last method {m} device {d}")?;
                }
                if let Some(t) = v.next_at {
                    write!(f, "; next at {t}")?;
                }
                writeln!(f)?;
                if let Some(e) = &v.last_error {
                    writeln!(f, "    last error: {e}")?;
                }
            }
        }
        for r in &self.fenced {
            writeln!(
                f,
                "fenced: node {} by node {} with method {} ({}) at {}",
                r.node, r.by, r.method, r.device, r.at
            )?;
        }
        for n in &self.unfencing {
            writeln!(f, "unfencing: node {n}")?;
        }
        Ok(())
    }
}
