//! `fence_quorate`: the FenceAgentAPI agent for the virtual power switch.
//!
//! Reads `key=value` lines on stdin (when run without arguments), or the same
//! settings as options (`-o off -n node1 --socket PATH`). Keys: `action`
//! (alias `option`), `port`/`plug` (the outlet; wins over `nodename`), `nodename`,
//! `socket` (Unix socket path, default [`DEFAULT_SOCKET`]), `ip`/`ipaddr` and
//! `ipport` (TCP instead, default port [`DEFAULT_PORT`]), `power_timeout` (seconds).
//! Exit codes per the API: 0 success; status/monitor 0 on, 2 off, 1 error.

use crate::protocol::{PowerState, Request, Response};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Default Unix socket of `quorate power-switch`.
pub const DEFAULT_SOCKET: &str = "/run/quorate/power-switch.sock";
/// Default TCP port when `ip=` is given without `ipport=`.
pub const DEFAULT_PORT: u16 = 7779;

/// The agent's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The action (default reboot).
    pub action: String,
    /// The outlet.
    pub plug: Option<String>,
    /// Unix socket path.
    pub socket: String,
    /// TCP host, if any.
    pub ip: Option<String>,
    /// TCP port.
    pub ipport: u16,
    /// Connect/response timeout.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            action: "reboot".into(),
            plug: None,
            socket: DEFAULT_SOCKET.into(),
            ip: None,
            ipport: DEFAULT_PORT,
            timeout: Duration::from_secs(20),
        }
    }
}

/// Applies one key (stdin name or long option name without dashes). Unknown keys are reported, not fatal.
fn apply(
    o: &mut Options,
    nodename: &mut Option<String>,
    key: &str,
    value: &str,
    err: &mut dyn Write,
) -> Result<(), String> {
    match key.replace('-', "_").as_str() {
        "action" | "option" | "o" => o.action = value.trim().to_ascii_lowercase(),
        "port" | "plug" | "n" => o.plug = Some(value.trim().to_string()),
        "nodename" => *nodename = Some(value.trim().to_string()),
        "socket" | "s" => o.socket = value.trim().to_string(),
        "ip" | "ipaddr" | "a" => o.ip = Some(value.trim().to_string()),
        "ipport" | "u" => {
            o.ipport = value
                .trim()
                .parse()
                .map_err(|_| format!("ipport={value:?} is not a port number"))?
        }
        "power_timeout" | "shell_timeout" | "login_timeout" => {
            let s: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("{key}={value:?} is not a number of seconds"))?;
            if !(s.is_finite() && s > 0.0) {
                return Err(format!("{key}={value:?} must be > 0"));
            }
            o.timeout = Duration::from_secs_f64(s);
        }
        // Common FenceAgentAPI keys this agent does not need.
        "agent" | "name" | "verbose" | "debug" | "debug_file" | "delay" | "power_wait"
        | "retry_on" | "login" | "username" | "passwd" | "password" => {}
        _ => {
            let _ = writeln!(err, "fence_quorate: ignoring unknown option {key:?}");
        }
    }
    Ok(())
}

/// Parses stdin text.
pub fn parse_stdin(text: &str, err: &mut dyn Write) -> Result<Options, String> {
    let mut o = Options::default();
    let mut nodename = None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            let _ = writeln!(
                err,
                "fence_quorate: ignoring line without '=': {:?}",
                t.chars().take(40).collect::<String>()
            );
            continue;
        };
        apply(&mut o, &mut nodename, k.trim(), v, err)?;
    }
    if o.plug.is_none() {
        o.plug = nodename;
    }
    Ok(o)
}

/// Parses command-line options (`--key=value`, `--key value`, `-o value`).
pub fn parse_args(args: &[String], err: &mut dyn Write) -> Result<Options, String> {
    let mut o = Options::default();
    let mut nodename = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let (key, inline) = if let Some(l) = a.strip_prefix("--") {
            match l.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (l.to_string(), None),
            }
        } else if let Some(s) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            (
                s[..1].to_string(),
                (s.len() > 1).then(|| s[1..].to_string()),
            )
        } else {
            return Err(format!("unexpected argument {a:?}; use --action=..., --plug=..., or key=value lines on stdin"));
        };
        if matches!(key.as_str(), "verbose" | "v" | "debug") {
            i += 1;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("option {a} needs a value"))?
            }
        };
        apply(&mut o, &mut nodename, &key, &value, err)?;
        i += 1;
    }
    if o.plug.is_none() {
        o.plug = nodename;
    }
    Ok(o)
}

/// Sends one request to the switch and reads the answer.
pub fn request(o: &Options, req: &Request) -> Result<Response, String> {
    let line = format!("{req}\n");
    let mut answer = String::new();
    if let Some(ip) = &o.ip {
        let addr = (ip.as_str(), o.ipport)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {ip}:{}: {e}", o.ipport))?
            .next()
            .ok_or_else(|| format!("{ip}:{} resolves to nothing", o.ipport))?;
        let mut s = TcpStream::connect_timeout(&addr, o.timeout).map_err(|e| {
            format!(
                "cannot connect to power switch at {addr}: {e}; is `quorate power-switch` running?"
            )
        })?;
        s.set_read_timeout(Some(o.timeout)).ok();
        s.write_all(line.as_bytes())
            .map_err(|e| format!("write to {addr}: {e}"))?;
        BufReader::new(s)
            .read_line(&mut answer)
            .map_err(|e| format!("no answer from {addr}: {e}"))?;
    } else {
        let mut s = UnixStream::connect(&o.socket).map_err(|e| format!("cannot connect to power switch socket {}: {e}; is `quorate power-switch` running, or pass socket=PATH", o.socket))?;
        s.set_read_timeout(Some(o.timeout)).ok();
        s.write_all(line.as_bytes())
            .map_err(|e| format!("write to {}: {e}", o.socket))?;
        BufReader::new(s)
            .read_line(&mut answer)
            .map_err(|e| format!("no answer from {}: {e}", o.socket))?;
    }
    if answer.is_empty() {
        return Err("the power switch closed the connection without answering".into());
    }
    Response::parse(&answer, matches!(req, Request::List))
}

fn state_of(o: &Options, req: Request) -> Result<PowerState, String> {
    match request(o, &req)? {
        Response::State(s) => Ok(s),
        Response::Err(e) => Err(e),
        Response::List(_) => Err("unexpected LIST answer".into()),
    }
}

/// The agent's metadata, as fence-agents print it.
pub fn metadata() -> String {
    let p = |name: &str,
             getopt: &str,
             ty: &str,
             default: Option<&str>,
             required: bool,
             desc: &str| {
        let d = default
            .map(|d| format!(" default=\"{d}\""))
            .unwrap_or_default();
        format!(
            "\t<parameter name=\"{name}\" unique=\"0\" required=\"{}\">\n\t\t<getopt mixed=\"{getopt}\" />\n\t\t<content type=\"{ty}\"{d} />\n\t\t<shortdesc lang=\"en\">{desc}</shortdesc>\n\t</parameter>\n",
            u8::from(required)
        )
    };
    let mut s = String::from("<?xml version=\"1.0\" ?>\n<resource-agent name=\"fence_quorate\" shortdesc=\"Fence agent for quorate's virtual power switch\" >\n<longdesc>fence_quorate powers outlets of `quorate power-switch` on and off. Each outlet runs a node's processes; off kills the outlet's whole process group and answers only when none is left.</longdesc>\n<vendor-url>https://github.com/quorate</vendor-url>\n<parameters>\n");
    s += &p(
        "action",
        "-o, --action=[action]",
        "string",
        Some("reboot"),
        true,
        "Fencing action",
    );
    s += &p(
        "plug",
        "-n, --plug=[outlet]",
        "string",
        None,
        true,
        "Outlet name (defaults to nodename)",
    );
    s += &p(
        "port",
        "-n, --plug=[outlet]",
        "string",
        None,
        false,
        "Outlet name (alias of plug)",
    );
    s += &p(
        "nodename",
        "--nodename=[name]",
        "string",
        None,
        false,
        "Node name, used as the outlet when plug is not set",
    );
    s += &p(
        "socket",
        "-s, --socket=[path]",
        "string",
        Some(DEFAULT_SOCKET),
        false,
        "Unix socket of the power switch",
    );
    s += &p(
        "ip",
        "-a, --ip=[host]",
        "string",
        None,
        false,
        "Loopback host of the power switch (TCP instead of the socket)",
    );
    s += &p(
        "ipport",
        "-u, --ipport=[port]",
        "integer",
        Some("7779"),
        false,
        "TCP port of the power switch",
    );
    s += &p(
        "power_timeout",
        "--power-timeout=[seconds]",
        "second",
        Some("20"),
        false,
        "Seconds to wait for the switch",
    );
    s += "</parameters>\n<actions>\n";
    for a in [
        "on",
        "off",
        "reboot",
        "status",
        "list",
        "list-status",
        "monitor",
        "metadata",
        "validate-all",
    ] {
        s += &format!("\t<action name=\"{a}\" />\n");
    }
    s += "</actions>\n</resource-agent>\n";
    s
}

/// Runs the agent: `args` without argv\[0\]; stdin is read only when `args` is empty. Returns the exit code.
pub fn main_with(
    args: &[String],
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        let _ = writeln!(out, "usage: fence_quorate [-o ACTION] [-n OUTLET] [--socket PATH | -a HOST -u PORT]\n       or key=value lines on stdin (action=, port=/plug=, nodename=, socket=, ip=, ipport=)\nactions: on off reboot status list list-status monitor metadata validate-all");
        return 0;
    }
    let parsed = if args.is_empty() {
        let mut text = String::new();
        if let Err(e) = stdin.take(1 << 20).read_to_string(&mut text) {
            let _ = writeln!(err, "fence_quorate: cannot read stdin: {e}");
            return 1;
        }
        parse_stdin(&text, err)
    } else {
        parse_args(args, err)
    };
    let o = match parsed {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "fence_quorate: {e}");
            return 1;
        }
    };
    let plug = || {
        o.plug
            .clone()
            .ok_or_else(|| "no outlet: set port= (or plug=, or nodename=)".to_string())
    };
    let result: Result<i32, String> = (|| {
        match o.action.as_str() {
        "metadata" => {
            let _ = out.write_all(metadata().as_bytes());
            Ok(0)
        }
        "validate-all" => plug().map(|_| 0),
        "monitor" => match request(&o, &Request::List)? {
            Response::List(_) => Ok(0),
            Response::Err(e) => Err(e),
            Response::State(_) => Err("unexpected answer to LIST".into()),
        },
        "list" | "list-status" => match request(&o, &Request::List)? {
            Response::List(l) => {
                for (n, s) in l {
                    if o.action == "list" {
                        let _ = writeln!(out, "{n},");
                    } else {
                        let _ = writeln!(out, "{n},,{}", if s == PowerState::On { "on" } else { "off" });
                    }
                }
                Ok(0)
            }
            Response::Err(e) => Err(e),
            Response::State(_) => Err("unexpected answer to LIST".into()),
        },
        "status" => match state_of(&o, Request::Status(plug()?))? {
            PowerState::On => {
                let _ = writeln!(out, "Status: ON");
                Ok(0)
            }
            PowerState::Off => {
                let _ = writeln!(out, "Status: OFF");
                Ok(2)
            }
        },
        "off" => {
            let p = plug()?;
            state_of(&o, Request::Off(p.clone()))?;
            match state_of(&o, Request::Status(p))? {
                PowerState::Off => {
                    let _ = writeln!(out, "Success: Powered OFF");
                    Ok(0)
                }
                PowerState::On => Err("outlet still on after OFF".into()),
            }
        }
        "on" => {
            let p = plug()?;
            state_of(&o, Request::On(p.clone()))?;
            match state_of(&o, Request::Status(p))? {
                PowerState::On => {
                    let _ = writeln!(out, "Success: Powered ON");
                    Ok(0)
                }
                PowerState::Off => Err("outlet still off after ON".into()),
            }
        }
        "reboot" => {
            let p = plug()?;
            if state_of(&o, Request::Off(p.clone()))? != PowerState::Off {
                return Err("outlet not off after OFF".into());
            }
            // The API: reboot succeeds when the off part did; a failed on is reported only.
            if let Err(e) = state_of(&o, Request::On(p)) {
                let _ = writeln!(err, "fence_quorate: power on after off failed: {e}");
            }
            let _ = writeln!(out, "Success: Rebooted");
            Ok(0)
        }
        other => Err(format!("unknown action {other:?}; use on, off, reboot, status, list, list-status, monitor, metadata or validate-all")),
    }
    })();
    match result {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "fence_quorate: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_and_options_agree() {
        let mut e = Vec::new();
        let a = parse_stdin(
            "# x\naction=off\nnodename=n1\nport=outlet1\nsocket=/tmp/s\npasswd=zz\nweird=1\n",
            &mut e,
        )
        .unwrap();
        let b = parse_args(
            &[
                "-o".into(),
                "off".into(),
                "--plug=outlet1".into(),
                "--socket".into(),
                "/tmp/s".into(),
            ],
            &mut e,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.plug.as_deref(), Some("outlet1"));
        let msg = String::from_utf8(e).unwrap();
        assert!(msg.contains("\"weird\"") && !msg.contains("zz"), "{msg}");
        let c = parse_stdin("nodename=n1\nip=127.0.0.1\nipport=9\n", &mut Vec::new()).unwrap();
        assert_eq!(
            (
                c.plug.as_deref(),
                c.ip.as_deref(),
                c.ipport,
                c.action.as_str()
            ),
            (Some("n1"), Some("127.0.0.1"), 9, "reboot")
        );
        assert!(parse_stdin("ipport=x\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn metadata_is_well_formed_and_errors_exit_1() {
        let m = metadata();
        assert!(m.starts_with("<?xml") && m.contains("<action name=\"off\" />"));
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = main_with(
            &[
                "-o".into(),
                "off".into(),
                "-n".into(),
                "x".into(),
                "--socket=/nonexistent/s".into(),
            ],
            &mut std::io::empty(),
            &mut out,
            &mut err,
        );
        assert_eq!(code, 1);
        assert!(String::from_utf8(err)
            .unwrap()
            .contains("is `quorate power-switch` running"));
    }
}
