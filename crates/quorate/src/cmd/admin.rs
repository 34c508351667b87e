//! Admin commands that ask a running node: `status` (clustat), `cman ...`
//! (cman_tool), `quorum` (clustat -Q), `totem status`, `fence ...`
//! (fence_node, fence_ack_manual) and `svc ...` (clusvcadm).
//!
//! Every one of them talks to the node through the admin socket in its state
//! dir, prints a table for people or the node's JSON with `--json`, and exits
//! 0 only when it did what was asked.

// Table headers are written as literals beside their columns' format, which
// keeps each table's layout readable in one line.
#![allow(clippy::write_literal)]

use super::{err, out};
use crate::cli::{CmanCmd, FenceCmd, SvcCmd, TotemCmd, EXIT_FAIL, EXIT_IO, EXIT_OK};
use daemon::ipc::{call, Request, Response};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Ask the node; on failure print why and what to do, and return the exit code.
fn ask(state_dir: &Path, cmd: &str, args: Value) -> Result<Value, u8> {
    ask_within(state_dir, cmd, args, ASK_TIMEOUT)
}

/// [`ask`] with a timeout of its own (for requests the node answers when they are done).
pub(crate) fn ask_within(
    state_dir: &Path,
    cmd: &str,
    args: Value,
    timeout: Duration,
) -> Result<Value, u8> {
    match call(
        state_dir,
        &Request {
            cmd: cmd.to_string(),
            args,
        },
        timeout,
    ) {
        Ok(Response { ok: true, data, .. }) => Ok(data),
        Ok(r) => {
            err(&format!(
                "quorate: refused: {}\n  hint: {}\n",
                r.error.unwrap_or_default(),
                r.hint.unwrap_or_else(|| "see `quorate status`".into())
            ));
            Err(EXIT_FAIL)
        }
        Err(e) => {
            err(&format!("quorate: error: {e}\n"));
            Err(EXIT_IO)
        }
    }
}

pub(crate) fn print_json(v: &Value) {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn local_time(secs: u64) -> String {
    // Seconds since the epoch, shown in UTC so that logs from all nodes compare.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The clustat screen.
pub fn render_status(v: &Value) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Cluster Status for {} @ {} UTC",
        s(&v["cluster_name"]),
        local_time(now_secs())
    );
    let _ = writeln!(
        t,
        "Member Status: {}  ({})",
        if v["quorate"] == true {
            "Quorate"
        } else {
            "Inquorate"
        },
        s(&v["quorum_reason"])
    );
    let _ = writeln!(t);
    let _ = writeln!(t, " {:<24} {:>4}  {}", "Member Name", "ID", "Status");
    let _ = writeln!(t, " {:<24} {:>4}  {}", "------ ----", "----", "------");
    let blocked: Vec<String> = v["fence_blocked"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    for m in v["members"].as_array().into_iter().flatten() {
        let name = s(&m["name"]);
        let mut flags = vec![if m["online"] == true {
            "Online"
        } else {
            "Offline"
        }
        .to_string()];
        if m["local"] == true {
            flags.push("Local".into());
        }
        if m["online"] == true {
            flags.push("rgmanager".into());
        }
        if blocked.contains(&name) {
            flags.push("waiting to be fenced".into());
        } else if m["fenced"] == true {
            flags.push("fenced".into());
        }
        let _ = writeln!(
            t,
            " {:<24} {:>4}  {}",
            name,
            s(&m["nodeid"]),
            flags.join(", ")
        );
    }
    let services = v["services"].as_array().cloned().unwrap_or_default();
    if !services.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            " {:<24} {:<28} {}",
            "Service Name", "Owner (Last)", "State"
        );
        let _ = writeln!(
            t,
            " {:<24} {:<28} {}",
            "------- ----", "----- ------", "-----"
        );
        for svc in &services {
            let prefix = if svc["kind"] == "Vm" { "vm" } else { "service" };
            let owner = match (svc["owner_name"].as_str(), svc["last_owner_name"].as_str()) {
                (Some(o), _) => o.to_string(),
                (None, Some(l)) => format!("({l})"),
                (None, None) => "(none)".into(),
            };
            let mut state = s(&svc["state"]).to_lowercase();
            if svc["frozen"] == true {
                state.push_str(" [Z]");
            }
            let _ = writeln!(
                t,
                " {:<24} {:<28} {}",
                format!("{prefix}:{}", s(&svc["name"])),
                owner,
                state
            );
            let reason = s(&svc["reason"]);
            if !reason.is_empty() {
                let _ = writeln!(t, "   why: {reason}");
            }
            for line in vm_lines(v, &svc["local"]) {
                let _ = writeln!(t, "   {line}");
            }
        }
    }
    let events = v["events"].as_array().cloned().unwrap_or_default();
    if !events.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(t, "Recent events (newest first):");
        for e in events.iter().take(8) {
            let at = e["at"].as_f64().unwrap_or(0.0) as u64;
            let _ = writeln!(t, "  {}  {}", local_time(at), s(&e["text"]));
        }
    }
    t
}

/// What the answering node knows of a vm it runs or sent away (a service's
/// `local`): the accelerator and why, a migration's progress, the last
/// migration's figures.
fn vm_lines(v: &Value, local: &Value) -> Vec<String> {
    let node = |id: &Value| {
        v["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["nodeid"] == *id))
            .map(|m| s(&m["name"]))
            .unwrap_or_else(|| format!("node {}", s(id)))
    };
    let mib = |b: &Value| b.as_u64().unwrap_or(0) as f64 / (1u64 << 20) as f64;
    let mut lines = Vec::new();
    if let Some(accel) = local["accel"].as_str() {
        lines.push(format!(
            "runs here on {accel} (QEMU pid {}): {}",
            s(&local["pid"]),
            s(&local["accel_reason"])
        ));
    }
    let m = &local["migration"];
    if m.is_object() {
        lines.push(format!(
            "migrating to {}: {} {}% ({:.1} of {:.1} MiB sent, {:.1} s)",
            node(&m["to"]),
            s(&m["status"]),
            s(&m["percent"]),
            mib(&m["transferred_bytes"]),
            mib(&m["total_bytes"]),
            m["elapsed_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
        ));
    }
    let m = &local["last_migration"];
    if m["ok"] == true {
        lines.push(format!(
            "last migration from here, to {}: downtime {} ms, total {} ms ({:.1} MiB)",
            node(&m["to"]),
            s(&m["downtime_ms"]),
            s(&m["total_time_ms"]),
            mib(&m["transferred_bytes"])
        ));
    } else if m["ok"] == false {
        lines.push(format!(
            "last migration from here, to {}, failed: {}",
            node(&m["to"]),
            s(&m["error"])
        ));
    }
    lines
}

/// `quorate status [-i SECONDS] [--json]`.
pub fn status(state_dir: &Path, interval: Option<u64>, json: bool) -> u8 {
    loop {
        let v = match ask(state_dir, "status", Value::Null) {
            Ok(v) => v,
            Err(code) => return code,
        };
        if json {
            print_json(&v);
        } else {
            if interval.is_some() {
                out("\x1b[2J\x1b[H");
            }
            out(&render_status(&v));
        }
        match interval {
            Some(i) => std::thread::sleep(Duration::from_secs(i.max(1))),
            None => return EXIT_OK,
        }
    }
}

/// `quorate quorum [--json]`: exit 0 when quorate, 1 when not (clustat -Q).
pub fn quorum(state_dir: &Path, json: bool) -> u8 {
    let v = match ask(state_dir, "quorum", Value::Null) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v);
    } else {
        out(&format!(
            "{}: {}\n",
            if v["quorate"] == true {
                "quorate"
            } else {
                "NOT quorate"
            },
            s(&v["reason"])
        ));
    }
    if v["quorate"] == true {
        EXIT_OK
    } else {
        EXIT_FAIL
    }
}

fn render_cman_status(v: &Value) -> String {
    let mut t = String::new();
    let flags: Vec<String> = v["flags"].as_array().into_iter().flatten().map(s).collect();
    let rows = [
        ("Version", format!("quorate {}", env!("CARGO_PKG_VERSION"))),
        ("Config Version", s(&v["config_version"])),
        ("Cluster Name", s(&v["cluster_name"])),
        ("Cluster Id", s(&v["cluster_id"])),
        (
            "Cluster Member",
            if v["membership_state"] == "Cluster-Member" {
                "Yes"
            } else {
                "No"
            }
            .to_string(),
        ),
        ("Cluster Generation", s(&v["ring_id"])),
        ("Membership state", s(&v["membership_state"])),
        ("Nodes", s(&v["nodes"])),
        ("Expected votes", s(&v["expected_votes"])),
        ("Quorum device votes", s(&v["quorum_device_votes"])),
        ("Total votes", s(&v["total_votes"])),
        ("Node votes", s(&v["node_votes"])),
        (
            "Quorum",
            format!(
                "{}{}",
                s(&v["quorum"]),
                if v["quorate"] == true {
                    ""
                } else {
                    "  Activity blocked"
                }
            ),
        ),
        ("Flags", flags.join(" ")),
        ("Ports Bound", s(&v["port"])),
        ("Node name", s(&v["node_name"])),
        ("Node ID", s(&v["node_id"])),
        (
            "Node addresses",
            v["node_addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    for (k, val) in rows {
        let _ = writeln!(t, "{:<20}{}", format!("{k}:"), val);
    }
    let _ = writeln!(t, "{:<20}{}", "Why:", s(&v["reason"]));
    t
}

fn render_cman_nodes(v: &Value) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>4}  {:<3} {:>5}  {:<19}  {}",
        "Node", "Sts", "Votes", "Joined", "Name"
    );
    for m in v.as_array().into_iter().flatten() {
        let joined = m["joined"].as_u64().map(local_time).unwrap_or_default();
        let sts = if m["online"] == true { "M" } else { "X" };
        let _ = writeln!(
            t,
            "{:>4}  {:<3} {:>5}  {:<19}  {}",
            s(&m["nodeid"]),
            sts,
            s(&m["votes"]),
            joined,
            s(&m["name"])
        );
    }
    t
}

/// `quorate cman ...`.
pub fn cman(state_dir: &Path, cmd: CmanCmd) -> u8 {
    let (req, args, json) = match &cmd {
        CmanCmd::Status { json } => ("cman.status", Value::Null, *json),
        CmanCmd::Nodes { json } => ("cman.nodes", Value::Null, *json),
        CmanCmd::Expected { votes, json } => ("cman.expected", json!({"votes": votes}), *json),
        CmanCmd::Leave { remove, json } => ("cman.leave", json!({"remove": remove}), *json),
    };
    let v = match ask(state_dir, req, args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v);
        return EXIT_OK;
    }
    match cmd {
        CmanCmd::Status { .. } => out(&render_cman_status(&v)),
        CmanCmd::Nodes { .. } => out(&render_cman_nodes(&v)),
        CmanCmd::Expected { votes, .. } => {
            out(&format!("expected votes set to {votes} on every member\n"))
        }
        CmanCmd::Leave { .. } => out(
            "leaving: this node's services move to other members first, then it leaves the ring \
             (it will not be fenced); `quorate status` on another node shows the moves\n",
        ),
    }
    EXIT_OK
}

/// `quorate totem status`.
pub fn totem(state_dir: &Path, cmd: TotemCmd) -> u8 {
    let TotemCmd::Status { json } = cmd;
    let v = match ask(state_dir, "totem.status", Value::Null) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v);
        return EXIT_OK;
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Ring ID:      {}/{}",
        s(&v["ring_rep"]),
        s(&v["ring_seq"])
    );
    let _ = writeln!(t, "State:        {}", s(&v["state"]));
    let members: Vec<String> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{} ({})", s(&m["name"]), s(&m["nodeid"])))
        .collect();
    let _ = writeln!(t, "Members:      {}", members.join(", "));
    let rings = v["rings"].as_u64().unwrap_or(1);
    for r in 0..rings {
        let faulty: Vec<String> = v["faulty_links"][r as usize]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let _ = writeln!(
            t,
            "Ring {r}:       {}",
            if faulty.is_empty() {
                "active with no faults".to_string()
            } else {
                format!("FAULTY towards node(s) {}", faulty.join(", "))
            }
        );
    }
    let _ = writeln!(t, "Counters:");
    if let Some(stats) = v["stats"].as_object() {
        for (k, val) in stats {
            let _ = writeln!(t, "  {:<20} {}", k, val);
        }
    }
    out(&t);
    EXIT_OK
}

/// `quorate fence ...`.
pub fn fence(state_dir: &Path, cmd: FenceCmd) -> u8 {
    match cmd {
        FenceCmd::Status { json } => {
            let v = match ask(state_dir, "fence.status", Value::Null) {
                Ok(v) => v,
                Err(code) => return code,
            };
            if json {
                print_json(&v);
            } else {
                out(&render_fence_status(&v));
            }
            EXIT_OK
        }
        FenceCmd::Node { node, wait } => {
            if let Err(code) = ask(state_dir, "fence.node", json!({"node": node})) {
                return code;
            }
            out(&format!(
                "fencing {node}: the fence domain runs its methods in order until one succeeds\n"
            ));
            if wait == 0 {
                return EXIT_OK;
            }
            wait_fenced(state_dir, &node, Duration::from_secs(wait))
        }
        FenceCmd::Ack { node, yes } => {
            if !yes {
                err(&format!(
                    "quorate: refused: acknowledging {node} as fenced tells the cluster that {node} is powered off \
                     and holds nothing.\n  If it is in fact still running, its services will run twice and shared \
                     data can be destroyed.\n  hint: check {node} by hand (power it off), then run \
                     `quorate fence ack {node} --yes-it-is-off`\n"
                ));
                return EXIT_FAIL;
            }
            match ask(state_dir, "fence.ack", json!({"node": node})) {
                Ok(_) => {
                    out(&format!("{node} acknowledged as fenced by an operator; recovery of what it held may proceed\n"));
                    EXIT_OK
                }
                Err(code) => code,
            }
        }
        FenceCmd::Unfence { node } => {
            match ask(state_dir, "fence.unfence", json!({"node": node})) {
                Ok(_) => {
                    out(&format!(
                        "unfencing {node}: its <unfence> devices run now\n"
                    ));
                    EXIT_OK
                }
                Err(code) => code,
            }
        }
    }
}

fn render_fence_status(v: &Value) -> String {
    let names = &v["names"];
    let name = |id: &Value| names.get(s(id)).map(s).unwrap_or_else(|| s(id));
    let mut t = String::new();
    let _ = writeln!(
        t,
        "fence domain: {}",
        if v["quorate"] == true {
            "quorate"
        } else {
            "NOT quorate (fencing postponed)"
        }
    );
    let victims = v["victims"].as_array().cloned().unwrap_or_default();
    if victims.is_empty() {
        let _ = writeln!(t, "victims: none; nothing is waiting on fencing");
    }
    for vic in &victims {
        let _ = writeln!(
            t,
            "victim {}: {} (fencer {}), tries {}, last error: {}",
            name(&vic["node"]),
            victim_state(&s(&vic["state"])),
            name(&vic["fencer"]),
            s(&vic["tries"]),
            if vic["last_error"].is_null() {
                "none".to_string()
            } else {
                s(&vic["last_error"])
            }
        );
    }
    for f in v["fenced"].as_array().into_iter().flatten() {
        let _ = writeln!(
            t,
            "fenced {}: method {} by {}",
            name(&f["node"]),
            s(&f["method"]),
            name(&f["by"])
        );
    }
    t
}

/// A victim's state (`fence status --json` field `state`) in words.
fn victim_state(state: &str) -> String {
    match state {
        "post_fail_delay" => "waiting out post_fail_delay (post_join_delay after a join)".into(),
        "waiting_quorum" => "postponed until quorum returns".into(),
        "waiting_fencer" => "another member is fencing it".into(),
        "queued" => "queued for the next agent run".into(),
        "device_delay" => "waiting out the device's delay".into(),
        "running_agent" => "fence agent running".into(),
        "retry_wait" => "every method failed; waiting to retry".into(),
        "announced" => "fenced; outcome being agreed".into(),
        other => other.replace('_', " "),
    }
}

fn wait_fenced(state_dir: &Path, node: &str, timeout: Duration) -> u8 {
    let start = Instant::now();
    let tty = super::is_terminal();
    while start.elapsed() < timeout {
        let v = match ask(state_dir, "status", Value::Null) {
            Ok(v) => v,
            Err(code) => return code,
        };
        let m = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| s(&m["name"]) == node)
            .cloned();
        if m.as_ref().is_some_and(|m| m["fenced"] == true) {
            if tty {
                err("\n");
            }
            out(&format!(
                "{node} is fenced ({:.1} s)\n",
                start.elapsed().as_secs_f64()
            ));
            return EXIT_OK;
        }
        if tty {
            err(&format!(
                "\rwaiting for {node} to be fenced... {:>4.0} s",
                start.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    err(&format!("\nquorate: {node} is not fenced after {} s\n  hint: `quorate fence status` shows the tries and the last error\n", timeout.as_secs()));
    EXIT_FAIL
}

/// `quorate svc ...` (clusvcadm): submit, then wait for the outcome.
pub fn svc(state_dir: &Path, cmd: SvcCmd) -> u8 {
    let (verb, name, node, want): (&str, String, Option<String>, &[&str]) = match cmd.action {
        crate::cli::SvcAction::Enable { name, member } => ("enable", name, member, &["Started"]),
        crate::cli::SvcAction::Disable { name } => ("disable", name, None, &["Disabled"]),
        crate::cli::SvcAction::Relocate { name, member } => {
            ("relocate", name, member, &["Started"])
        }
        crate::cli::SvcAction::Restart { name } => ("restart", name, None, &["Started"]),
        crate::cli::SvcAction::Stop { name } => ("stop", name, None, &["Stopped"]),
        crate::cli::SvcAction::Freeze { name } => ("freeze", name, None, &[]),
        crate::cli::SvcAction::Unfreeze { name } => ("unfreeze", name, None, &[]),
        crate::cli::SvcAction::Migrate { name, member } => {
            ("migrate", name, Some(member), &["Started"])
        }
    };
    let before = match ask(state_dir, "status", Value::Null) {
        Ok(v) => find_service(&v, &name),
        Err(code) => return code,
    };
    let mut args = json!({"service": name});
    if let Some(n) = &node {
        args["node"] = json!(n);
    }
    if let Err(code) = ask(state_dir, &format!("svc.{verb}"), args) {
        return code;
    }
    if want.is_empty() || cmd.no_wait {
        out(&format!("{verb} {name}: done\n"));
        return EXIT_OK;
    }
    let timeout = Duration::from_secs(cmd.timeout);
    let start = Instant::now();
    let tty = super::is_terminal();
    let before_owner = before
        .as_ref()
        .map(|b| b["owner_name"].clone())
        .unwrap_or(Value::Null);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let v = match ask(state_dir, "status", Value::Null) {
            Ok(v) => v,
            Err(code) => return code,
        };
        let Some(svc) = find_service(&v, &name) else {
            err(&format!(
                "quorate: {name} disappeared from the configuration\n"
            ));
            return EXIT_FAIL;
        };
        let state = s(&svc["state"]);
        let owner = s(&svc["owner_name"]);
        let moved = !matches!(verb, "relocate" | "migrate") || svc["owner_name"] != before_owner;
        let on_target = node
            .as_ref()
            .is_none_or(|n| &owner == n || verb == "disable");
        if want.contains(&state.as_str()) && moved && on_target {
            if tty {
                err("\n");
            }
            out(&format!(
                "{verb} {name}: {}{} ({:.1} s)\n",
                state.to_lowercase(),
                if owner.is_empty() {
                    String::new()
                } else {
                    format!(" on {owner}")
                },
                start.elapsed().as_secs_f64()
            ));
            return EXIT_OK;
        }
        let reason = s(&svc["reason"]);
        if verb == "migrate"
            && state == "Started"
            && !moved
            && reason.starts_with(&format!("migration of {name} failed"))
            && before.as_ref().map(|b| s(&b["reason"])) != Some(reason.clone())
        {
            if tty {
                err("\n");
            }
            err(&format!("quorate: migrate {name} failed: {reason}\n  hint: `quorate status` on {owner} shows why (its last migration); fix the cause and migrate again, or relocate to stop and start it there\n"));
            return EXIT_FAIL;
        }
        if matches!(state.as_str(), "Failed" | "Disabled") && !want.contains(&state.as_str()) {
            if tty {
                err("\n");
            }
            err(&format!("quorate: {verb} {name} failed: {}: {}\n  hint: `quorate status` shows the event log\n", state.to_lowercase(), s(&svc["reason"])));
            return EXIT_FAIL;
        }
        if start.elapsed() > timeout {
            err(&format!(
                "\nquorate: {verb} {name} did not finish within {} s: now {} ({})\n  hint: it may still finish; watch `quorate status -i 2`\n",
                timeout.as_secs(),
                state.to_lowercase(),
                s(&svc["reason"])
            ));
            return EXIT_FAIL;
        }
        if tty {
            // The source node knows how far a migration is.
            let m = &svc["local"]["migration"];
            let progress = if m.is_object() {
                format!("{}% sent; ", s(&m["percent"]))
            } else {
                String::new()
            };
            err(&format!(
                "\r{verb} {name}: {} {:<40}",
                state.to_lowercase(),
                format!(
                    "({:.0} s) {progress}{}",
                    start.elapsed().as_secs_f64(),
                    s(&svc["reason"])
                )
                .chars()
                .take(60)
                .collect::<String>()
            ));
        }
    }
}

/// `quorate config push [FILE]`.
pub fn config_push(state_dir: &Path, file: &Path, json: bool) -> u8 {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            err(&format!(
                "quorate: error: cannot read {}: {e}\n",
                file.display()
            ));
            return EXIT_IO;
        }
    };
    let v = match ask(state_dir, "config.push", json!({"text": text})) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json {
        print_json(&v);
    } else {
        out(&format!(
            "config_version {} is in force on every member (each wrote it to its cluster.conf)\n",
            s(&v["config_version"])
        ));
    }
    EXIT_OK
}

/// `quorate config status`.
pub fn config_status(state_dir: &Path, json: bool) -> u8 {
    let v = match ask(state_dir, "config.status", Value::Null) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if json || !v.is_object() {
        print_json(&v);
        return EXIT_OK;
    }
    let mut t = String::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        let _ = writeln!(
            t,
            "{:<16} {}",
            format!("{k}:"),
            if val.is_string() {
                s(val)
            } else {
                val.to_string()
            }
        );
    }
    out(&t);
    EXIT_OK
}

fn find_service(status: &Value, name: &str) -> Option<Value> {
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(local_time(0), "1970-01-01 00:00:00");
        assert_eq!(local_time(1_795_622_166), "2026-11-25 15:56:06");
    }

    #[test]
    fn clustat_screen_shows_members_services_and_why() {
        let v = json!({
            "cluster_name": "an-cluster", "quorate": true, "quorum_reason": "2 of 2 votes present",
            "fence_blocked": ["an-node02"],
            "members": [
                {"name": "an-node01", "nodeid": 1, "online": true, "local": true, "fenced": false},
                {"name": "an-node02", "nodeid": 2, "online": false, "local": false, "fenced": false}
            ],
            "services": [{"name": "web", "kind": "Service", "state": "Recovering", "owner_name": null,
                          "last_owner_name": "an-node02", "frozen": false,
                          "reason": "an-node02 lost; waiting for it to be fenced"}],
            "events": []
        });
        let t = render_status(&v);
        assert!(t.contains("Member Status: Quorate"), "{t}");
        assert!(
            t.contains("an-node01") && t.contains("Online, Local, rgmanager"),
            "{t}"
        );
        assert!(t.contains("Offline, waiting to be fenced"), "{t}");
        assert!(
            t.contains("service:web") && t.contains("(an-node02)") && t.contains("recovering"),
            "{t}"
        );
        assert!(
            t.contains("why: an-node02 lost; waiting for it to be fenced"),
            "{t}"
        );
    }
}
