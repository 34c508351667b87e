//! `quorate replica ...`: the replicated volumes of the node (drbd-overview, drbdadm).

use super::admin::{ask_within, print_json};
use super::out;
use crate::cli::{ReplicaCmd, EXIT_OK};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Promotion may wait for the cluster to fence a lost peer (the node gives up after 60 s).
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(90);
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

fn mib(v: &Value) -> f64 {
    v.as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "Unknown".into(),
        other => other.to_string(),
    }
}

/// A resync progress line: `[#####...............] 25.0% sending 5.0/20.0 MiB at 10.0 MiB/s, ETA 0:00:02`.
pub fn progress_line(r: &Value) -> String {
    let done = r["done_bytes"].as_u64().unwrap_or(0);
    let total = r["total_bytes"].as_u64().unwrap_or(0);
    let pct = if total > 0 {
        100.0 * done as f64 / total as f64
    } else {
        100.0
    };
    let filled = ((pct / 5.0) as usize).min(20);
    let eta = r["eta_secs"].as_u64().map_or("unknown".to_string(), |s| {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    });
    format!(
        "[{}{}] {pct:.1}% {} {:.1}/{:.1} MiB at {:.1} MiB/s, ETA {eta}",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        if r["source"] == true {
            "sending"
        } else {
            "receiving"
        },
        mib(&r["done_bytes"]),
        mib(&r["total_bytes"]),
        mib(&r["bytes_per_sec"]),
    )
}

/// One volume for people.
pub fn render(v: &Value) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{}: {}/{}  {}  {}/{}  protocol {}",
        s(&v["name"]),
        s(&v["role"]),
        s(&v["peer_role"]),
        s(&v["conn"]),
        s(&v["disk"]),
        s(&v["peer_disk"]),
        s(&v["protocol"]),
    );
    let _ = writeln!(
        t,
        "  peer         {} ({})",
        s(&v["peer"]),
        if v["peer_member"] == true {
            "cluster member"
        } else {
            "not a cluster member"
        }
    );
    let _ = writeln!(
        t,
        "  export       {}",
        v["nbd"]
            .as_str()
            .unwrap_or("none (this node is not primary)")
    );
    if v["resync"].is_object() {
        let _ = writeln!(t, "  resync       {}", progress_line(&v["resync"]));
    }
    let _ = writeln!(t, "  out of sync  {:.1} MiB", mib(&v["out_of_sync_bytes"]));
    if v["frozen"] == true {
        let _ = writeln!(
            t,
            "  I/O          FROZEN until the peer is fenced or outdated"
        );
    }
    let _ = writeln!(
        t,
        "  split brain  {}",
        if v["split_brain"].is_null() {
            "none".to_string()
        } else {
            s(&v["split_brain"])
        }
    );
    let _ = writeln!(t, "  why          {}", s(&v["why"]));
    t
}

/// `quorate replica ...`.
pub fn run(state_dir: &Path, cmd: ReplicaCmd) -> u8 {
    let (what, name, force, json) = match cmd {
        ReplicaCmd::Status {
            name,
            interval,
            json,
        } => return status(state_dir, name, interval, json),
        ReplicaCmd::Primary { name, force, json } => ("primary", name, force, json),
        ReplicaCmd::Secondary { name, json } => ("secondary", name, false, json),
        ReplicaCmd::Connect { name, json } => ("connect", name, false, json),
        ReplicaCmd::Disconnect { name, force, json } => ("disconnect", name, force, json),
        ReplicaCmd::Verify { name, json } => ("verify", name, false, json),
        ReplicaCmd::DiscardMyData { name, json } => ("discard_my_data", name, false, json),
    };
    let timeout = if what == "primary" {
        PROMOTE_TIMEOUT
    } else {
        ASK_TIMEOUT
    };
    if what == "primary" && super::is_terminal() {
        super::err("promoting (waits for a lost peer to be fenced)...\n");
    }
    let v = match ask_within(
        state_dir,
        &format!("replica.{what}"),
        json!({"name": name, "force": force}),
        timeout,
    ) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v);
    } else {
        out(&render(&v));
    }
    EXIT_OK
}

fn status(state_dir: &Path, name: Option<String>, interval: Option<u64>, json: bool) -> u8 {
    loop {
        let v = match ask_within(
            state_dir,
            "replica.status",
            json!({ "name": name }),
            ASK_TIMEOUT,
        ) {
            Ok(v) => v,
            Err(code) => return code,
        };
        if json {
            print_json(&v);
        } else {
            if interval.is_some() {
                out("\x1b[2J\x1b[H");
            }
            let list = v["replicas"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                out("no replicated volumes on this node (<replicas> in cluster.conf has none with a <node> for it)\n");
            }
            for r in &list {
                out(&render(r));
            }
        }
        match interval {
            Some(i) => std::thread::sleep(Duration::from_secs(i.max(1))),
            None => return EXIT_OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_rate_and_eta() {
        let r = json!({"source": true, "done_bytes": 5u64 << 20, "total_bytes": 20u64 << 20,
                       "bytes_per_sec": 10u64 << 20, "eta_secs": 2});
        assert_eq!(
            progress_line(&r),
            "[#####...............] 25.0% sending 5.0/20.0 MiB at 10.0 MiB/s, ETA 0:00:02"
        );
        let v = json!({"name": "r0", "role": "Primary", "peer_role": null, "conn": "WfConnection",
                       "disk": "UpToDate", "peer_disk": "DUnknown", "protocol": "C", "peer": "n2",
                       "peer_member": false, "nbd": "nbd://10.0.0.1:10809/r0", "resync": null,
                       "out_of_sync_bytes": 1u64 << 20, "frozen": true, "split_brain": null,
                       "why": "I/O frozen"});
        let t = render(&v);
        assert!(
            t.starts_with("r0: Primary/Unknown  WfConnection  UpToDate/DUnknown  protocol C"),
            "{t}"
        );
        assert!(t.contains("FROZEN"), "{t}");
        assert!(t.contains("out of sync  1.0 MiB"), "{t}");
    }
}
