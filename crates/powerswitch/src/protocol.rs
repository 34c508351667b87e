//! The power switch's line protocol.
//!
//! One request per line, one response line each:
//! `ON <outlet>`, `OFF <outlet>`, `REBOOT <outlet>`, `STATUS <outlet>` → `OK on` / `OK off`;
//! `LIST` → `OK <outlet>=<on|off> ...`; anything wrong → `ERR <what to do>`.
//! Commands are case-insensitive; outlet names have no whitespace.

use std::fmt;

/// Longest request line accepted.
pub const MAX_LINE: usize = 1024;

/// A power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    /// The outlet's command is running.
    On,
    /// Its process group is gone.
    Off,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        })
    }
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Start the outlet's command.
    On(String),
    /// Kill the outlet's process group; it stays off.
    Off(String),
    /// Off, then on.
    Reboot(String),
    /// Report the state.
    Status(String),
    /// Every outlet and its state.
    List,
}

impl Request {
    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut it = line.split_whitespace();
        let cmd = it
            .next()
            .ok_or("empty request; send ON|OFF|REBOOT|STATUS <outlet> or LIST")?;
        let arg = it.next();
        if it.next().is_some() {
            return Err("too many words; outlet names have no spaces".into());
        }
        let need = |a: Option<&str>| {
            a.map(str::to_string)
                .ok_or_else(|| format!("{cmd} needs an outlet name"))
        };
        match cmd.to_ascii_uppercase().as_str() {
            "ON" => Ok(Request::On(need(arg)?)),
            "OFF" => Ok(Request::Off(need(arg)?)),
            "REBOOT" => Ok(Request::Reboot(need(arg)?)),
            "STATUS" => Ok(Request::Status(need(arg)?)),
            "LIST" if arg.is_none() => Ok(Request::List),
            "LIST" => Err("LIST takes no argument".into()),
            _ => Err(format!(
                "unknown command {cmd:?}; send ON|OFF|REBOOT|STATUS <outlet> or LIST"
            )),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::On(o) => write!(f, "ON {o}"),
            Request::Off(o) => write!(f, "OFF {o}"),
            Request::Reboot(o) => write!(f, "REBOOT {o}"),
            Request::Status(o) => write!(f, "STATUS {o}"),
            Request::List => write!(f, "LIST"),
        }
    }
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The outlet's state after the request.
    State(PowerState),
    /// Every outlet.
    List(Vec<(String, PowerState)>),
    /// An error with what to do.
    Err(String),
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::State(s) => write!(f, "OK {s}"),
            Response::List(l) => {
                f.write_str("OK")?;
                for (n, s) in l {
                    write!(f, " {n}={s}")?;
                }
                Ok(())
            }
            Response::Err(e) => write!(f, "ERR {}", e.replace('\n', " ")),
        }
    }
}

impl Response {
    /// Parses a response line; `for_list` says a LIST was sent.
    pub fn parse(line: &str, for_list: bool) -> Result<Response, String> {
        let line = line.trim_end();
        if let Some(e) = line.strip_prefix("ERR ") {
            return Ok(Response::Err(e.to_string()));
        }
        let rest = line
            .strip_prefix("OK")
            .ok_or_else(|| format!("power switch answered {line:?}, not OK/ERR"))?;
        let st = |s: &str| match s {
            "on" => Ok(PowerState::On),
            "off" => Ok(PowerState::Off),
            other => Err(format!("unknown power state {other:?}")),
        };
        if for_list {
            let mut v = Vec::new();
            for w in rest.split_whitespace() {
                let (n, s) = w
                    .split_once('=')
                    .ok_or_else(|| format!("bad list entry {w:?}"))?;
                v.push((n.to_string(), st(s)?));
            }
            Ok(Response::List(v))
        } else {
            Ok(Response::State(st(rest.trim())?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for r in [
            Request::On("a".into()),
            Request::Off("n-1".into()),
            Request::Reboot("x".into()),
            Request::Status("y".into()),
            Request::List,
        ] {
            assert_eq!(Request::parse(&r.to_string()).unwrap(), r);
        }
        assert_eq!(
            Request::parse("off an-node01").unwrap(),
            Request::Off("an-node01".into())
        );
        assert!(Request::parse("").is_err());
        assert!(Request::parse("OFF").is_err());
        assert!(Request::parse("OFF a b").is_err());
        assert!(Request::parse("FROB a").is_err());
        let l = Response::List(vec![
            ("a".into(), PowerState::On),
            ("b".into(), PowerState::Off),
        ]);
        assert_eq!(l.to_string(), "OK a=on b=off");
        assert_eq!(Response::parse(&l.to_string(), true).unwrap(), l);
        assert_eq!(
            Response::parse("OK off\n", false).unwrap(),
            Response::State(PowerState::Off)
        );
        assert_eq!(
            Response::parse("ERR no", false).unwrap(),
            Response::Err("no".into())
        );
        assert!(Response::parse("garbage", false).is_err());
    }
}
