//! `ip`: a floating address, as rgmanager's ip.sh.
//!
//! The address (`address="10.0.0.5/24"`, or without `/prefix` to take the
//! prefix of the interface's subnet) goes on the interface that already has
//! an address in a subnet containing it. Start adds it (`ip addr add`; already
//! there = success) after checking the link, stop removes it (absent =
//! success), status checks it is present and, with `monitor_link="1"` (the
//! default), that the link is up (flags `UP` and `LOWER_UP` in `ip -j addr`).
//! After adding an IPv4 address a gratuitous ARP is sent if `arping` exists.

use crate::cmd::{have_program, Cmd, Runner};
use crate::exec::{Op, StepError};
use rm::ResourceStep;
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `ip` resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSpec {
    /// The floating address.
    pub addr: IpAddr,
    /// The prefix length, if given with `/N`.
    pub prefix: Option<u8>,
    /// Check the link's state (`monitor_link`, default on).
    pub monitor_link: bool,
}

/// Parses a boolean attribute as rgmanager does (`1`/`yes`/`true`/`on`, `0`/`no`/`false`/`off`).
pub fn parse_bool(key: &str, v: Option<&String>, default: bool) -> Result<bool, StepError> {
    match v.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) if s.is_empty() => Ok(default),
        Some(s) if ["1", "yes", "true", "on"].contains(&s.as_str()) => Ok(true),
        Some(s) if ["0", "no", "false", "off"].contains(&s.as_str()) => Ok(false),
        Some(s) => Err(StepError::Config(format!(
            "{key}=\"{s}\" is not a boolean: write 1 or 0"
        ))),
    }
}

impl IpSpec {
    /// Parses the resource's `address` and `monitor_link`.
    pub fn parse(step: &ResourceStep) -> Result<IpSpec, StepError> {
        let raw = step
            .attrs
            .get("address")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                StepError::Config(format!(
                    "ip {}: no address attribute: write <ip address=\"10.0.0.5/24\"/>",
                    step.name
                ))
            })?;
        let (a, p) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            StepError::Config(format!(
                "ip {}: address=\"{raw}\" is not an IPv4 or IPv6 address (write 10.0.0.5/24)",
                step.name
            ))
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => None,
            Some(p) => Some(p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| {
                StepError::Config(format!(
                    "ip {}: address=\"{raw}\": prefix must be 0 to {max}",
                    step.name
                ))
            })?),
        };
        if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
            return Err(StepError::Config(format!(
                "ip {}: {addr} cannot be a floating address (unspecified, loopback or multicast)",
                step.name
            )));
        }
        let monitor_link = parse_bool("monitor_link", step.attrs.get("monitor_link"), true)?;
        Ok(IpSpec {
            addr,
            prefix,
            monitor_link,
        })
    }
}

/// One interface from `ip -j addr show`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Iface {
    /// Interface name.
    pub ifname: String,
    /// Link flags (`UP`, `LOWER_UP`, ...).
    #[serde(default)]
    pub flags: Vec<String>,
    /// Addresses.
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

/// One address of an interface.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AddrInfo {
    /// `inet` or `inet6`.
    #[serde(default)]
    pub family: String,
    /// The address.
    #[serde(default)]
    pub local: Option<String>,
    /// Prefix length.
    #[serde(default)]
    pub prefixlen: Option<u8>,
}

impl Iface {
    /// Administratively up and carrier present.
    pub fn link_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP") && self.flags.iter().any(|f| f == "LOWER_UP")
    }

    fn addrs(&self) -> impl Iterator<Item = (IpAddr, u8)> + '_ {
        self.addr_info.iter().filter_map(|a| {
            let ip: IpAddr = a.local.as_deref()?.parse().ok()?;
            Some((ip, a.prefixlen?))
        })
    }
}

/// Parses `ip -j addr show` output; garbage is an error.
pub fn parse_ifaces(json: &str) -> Result<Vec<Iface>, StepError> {
    serde_json::from_str(json).map_err(|e| StepError::Command {
        command: "ip -j addr show".into(),
        reason: format!("unreadable JSON ({e}); iproute2 too old? (needs -j)"),
    })
}

/// True when `a` lies in the subnet `net/prefix` (same family only).
pub fn in_subnet(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The interface (and its prefix) whose subnet contains `addr`, not counting `addr` itself.
pub fn home_of(ifaces: &[Iface], addr: IpAddr) -> Option<(&Iface, u8)> {
    ifaces.iter().find_map(|i| {
        i.addrs()
            .find(|(l, p)| *l != addr && in_subnet(addr, *l, *p))
            .map(|(_, p)| (i, p))
    })
}

/// The interface holding `addr`, with the prefix it was added with.
pub fn holder_of(ifaces: &[Iface], addr: IpAddr) -> Option<(&Iface, u8)> {
    ifaces
        .iter()
        .find_map(|i| i.addrs().find(|(l, _)| *l == addr).map(|(_, p)| (i, p)))
}

async fn list(r: &mut Runner<'_>) -> Result<Vec<Iface>, StepError> {
    let out = r
        .run_ok(Cmd::new("ip", &["-j", "addr", "show"], IP_TIMEOUT, "iproute2").netns())
        .await?;
    parse_ifaces(&out.stdout)
}

pub(crate) async fn run(r: &mut Runner<'_>, step: &ResourceStep, op: Op) -> Result<(), StepError> {
    let spec = IpSpec::parse(step)?;
    let a = spec.addr;
    let ifaces = list(r).await?;
    match op {
        Op::Status => {
            let (i, _) = holder_of(&ifaces, a).ok_or_else(|| {
                StepError::Failed(format!("ip {}: {a} is not on any interface", step.name))
            })?;
            if spec.monitor_link && !i.link_up() {
                return Err(StepError::Failed(format!(
                    "ip {}: link {} holding {a} is down (monitor_link=1)",
                    step.name, i.ifname
                )));
            }
            Ok(())
        }
        Op::Start => {
            if let Some((i, _)) = holder_of(&ifaces, a) {
                if spec.monitor_link && !i.link_up() {
                    return Err(StepError::Failed(format!(
                        "ip {}: {a} is on {} but its link is down",
                        step.name, i.ifname
                    )));
                }
                r.note(format!("{a} already on {}", i.ifname));
                return Ok(());
            }
            let (i, p) = home_of(&ifaces, a).ok_or_else(|| {
                StepError::Config(format!(
                    "ip {}: no interface has a subnet containing {a}: give an interface an address in that subnet first \
                     (the floating address joins the interface whose subnet matches)",
                    step.name
                ))
            })?;
            if spec.monitor_link && !i.link_up() {
                return Err(StepError::Failed(format!(
                    "ip {}: link {} is down (no carrier or set down); not adding {a} (monitor_link=1)",
                    step.name, i.ifname
                )));
            }
            let ifname = i.ifname.clone();
            let full = format!("{a}/{}", spec.prefix.unwrap_or(p));
            let mut args = vec!["addr", "add", full.as_str(), "dev", ifname.as_str()];
            if a.is_ipv6() {
                args.push("nodad");
            }
            let out = r
                .run(Cmd::new("ip", &args, IP_TIMEOUT, "iproute2").netns())
                .await?;
            if out.code != Some(0) {
                // Lost a race with another add? Then it is there, which is what we want.
                let again = list(r).await?;
                if holder_of(&again, a).is_none() {
                    return Err(StepError::Command {
                        command: format!("ip addr add {full} dev {ifname}"),
                        reason: out.stderr.trim().to_string(),
                    });
                }
            }
            if a.is_ipv4() && have_program("arping") {
                // Best effort: tell neighbours the address moved.
                let ip = a.to_string();
                let _ = r
                    .run(
                        Cmd::new(
                            "arping",
                            &["-U", "-c", "1", "-I", &ifname, &ip],
                            Duration::from_secs(5),
                            "iputils-arping",
                        )
                        .netns(),
                    )
                    .await;
            }
            Ok(())
        }
        Op::Stop => {
            let Some((i, p)) = holder_of(&ifaces, a) else {
                r.note(format!("{a} is on no interface: already stopped"));
                return Ok(());
            };
            let ifname = i.ifname.clone();
            let full = format!("{a}/{p}");
            let out = r
                .run(
                    Cmd::new(
                        "ip",
                        &["addr", "del", &full, "dev", &ifname],
                        IP_TIMEOUT,
                        "iproute2",
                    )
                    .netns(),
                )
                .await?;
            if out.code != Some(0) {
                let again = list(r).await?;
                if holder_of(&again, a).is_some() {
                    return Err(StepError::Command {
                        command: format!("ip addr del {full} dev {ifname}"),
                        reason: out.stderr.trim().to_string(),
                    });
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const JSON: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
      {"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"addr_info":[{"family":"inet","local":"10.0.0.1","prefixlen":24},{"family":"inet","local":"10.0.0.5","prefixlen":24},{"family":"inet6","local":"fd00::1","prefixlen":64}]},
      {"ifindex":3,"ifname":"eth1","flags":["BROADCAST","MULTICAST","UP","NO-CARRIER"],"addr_info":[{"family":"inet","local":"192.168.2.71","prefixlen":24}]},
      {"ifindex":4,"ifname":"weird"}]"#;

    fn step(attrs: &[(&str, &str)]) -> ResourceStep {
        ResourceStep {
            rtype: "ip".into(),
            name: "vip".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            depth: 0,
        }
    }

    #[test]
    fn finds_home_holder_and_link_state() {
        let v = parse_ifaces(JSON).unwrap();
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            home_of(&v, a).map(|(i, p)| (i.ifname.as_str(), p)),
            Some(("eth0", 24))
        );
        assert_eq!(holder_of(&v, a).unwrap().0.ifname, "eth0");
        let b: IpAddr = "192.168.2.200".parse().unwrap();
        let (i, p) = home_of(&v, b).unwrap();
        assert_eq!((i.ifname.as_str(), p, i.link_up()), ("eth1", 24, false));
        assert!(holder_of(&v, b).is_none());
        assert!(home_of(&v, "172.16.0.1".parse().unwrap()).is_none());
        let c: IpAddr = "fd00::99".parse().unwrap();
        assert_eq!(home_of(&v, c).unwrap().0.ifname, "eth0");
        assert!(parse_ifaces("not json").is_err());
    }

    #[test]
    fn subnet_math() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_subnet(ip("10.0.0.200"), ip("10.0.0.1"), 24));
        assert!(!in_subnet(ip("10.0.1.200"), ip("10.0.0.1"), 24));
        assert!(in_subnet(ip("10.0.1.200"), ip("10.0.0.1"), 0));
        assert!(in_subnet(ip("10.0.0.1"), ip("10.0.0.1"), 32));
        assert!(!in_subnet(ip("fd00::1"), ip("10.0.0.1"), 0));
        assert!(in_subnet(ip("fd00::1:2"), ip("fd00::9"), 64));
        assert!(!in_subnet(ip("fd01::1"), ip("fd00::9"), 64));
    }

    #[test]
    fn parses_attributes_with_clear_errors() {
        let s = IpSpec::parse(&step(&[("address", "10.0.0.5/24")])).unwrap();
        assert_eq!((s.prefix, s.monitor_link), (Some(24), true));
        let s = IpSpec::parse(&step(&[("address", "10.0.0.5"), ("monitor_link", "0")])).unwrap();
        assert_eq!((s.prefix, s.monitor_link), (None, false));
        for (attrs, want) in [
            (vec![], "no address"),
            (vec![("address", "10.0.0.300")], "not an IPv4"),
            (vec![("address", "10.0.0.5/33")], "prefix must be"),
            (vec![("address", "127.0.0.2")], "loopback"),
            (
                vec![("address", "10.0.0.5"), ("monitor_link", "maybe")],
                "write 1 or 0",
            ),
        ] {
            let e = IpSpec::parse(&step(&attrs)).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }
}
