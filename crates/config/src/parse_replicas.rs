//! `<replicas>` (extension): volumes mirrored between two nodes, DRBD's role.
//!
//! ```xml
//! <replicas>
//!   <replica name="r0" size="20G" protocol="C" port="7789" nbd_port="10809">
//!     <node name="an-node01" disk="/var/lib/quorate/r0.img" address="an-node01.sn"/>
//!     <node name="an-node02" disk="/var/lib/quorate/r0.img" address="an-node02.sn"/>
//!   </replica>
//! </replicas>
//! ```
//!
//! It sits in `<cluster>` beside `<clusternodes>` and `<quorumd>` (storage is the cluster's, as
//! DRBD's resources sit beside cluster.conf); a service uses a volume with `<replica name="r0"/>`
//! in its resource tree, as rgmanager's `<drbd resource="r0"/>` did.

use super::{elem_name, suggest, Attrs, P};
use crate::diag::Pos;
use crate::model::{ClusterNode, Replica, ReplicaNode, Resource, Rm, Setting};
use roxmltree::Node;

/// DRBD's after-sb-0pri policies quorate implements.
pub const AFTER_SB_0PRI: &[&str] = &[
    "disconnect",
    "discard-younger-primary",
    "discard-older-primary",
    "discard-zero-changes",
    "discard-least-changes",
];
/// DRBD's after-sb-1pri policies quorate implements.
pub const AFTER_SB_1PRI: &[&str] = &["disconnect", "consensus", "discard-secondary"];
/// DRBD's after-sb-2pri policies quorate implements (the only safe one without a cluster filesystem).
pub const AFTER_SB_2PRI: &[&str] = &["disconnect"];
/// DRBD's fencing policies.
pub const FENCING: &[&str] = &["resource-and-stonith", "resource-only", "dont-care"];
/// Replication protocols.
pub const PROTOCOLS: &[&str] = &["A", "B", "C"];

const ATTRS: &[&str] = &[
    "name",
    "size",
    "protocol",
    "port",
    "nbd_port",
    "after-sb-0pri",
    "after-sb-1pri",
    "after-sb-2pri",
    "allow-two-primaries",
    "rate",
    "fencing",
];

/// `20G`, `512M`, `4096`, `1T`, `20GiB`: bytes, with K/M/G/T as powers of 1024.
pub fn parse_bytes(v: &str) -> Option<u64> {
    let t = v.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        'T' | 't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

impl<'a, 'i: 'a> P<'i> {
    fn bytes_attr(&mut self, a: &mut Attrs, name: &str, example: &str) -> Option<u64> {
        let v = a.take(name)?;
        match parse_bytes(&v) {
            Some(b) if b > 0 => Some(b),
            _ => {
                let pos = self.attr_pos(a.node, name);
                self.d.error(
                    pos,
                    format!(
                        "<{}> {name}=\"{v}\" is not a size",
                        elem_name(&a.node)
                    ),
                    format!("write a positive number of bytes with an optional K, M, G or T (powers of 1024), e.g. {name}=\"{example}\""),
                );
                None
            }
        }
    }

    /// One of `allowed`, else an error naming them.
    fn choice(&mut self, a: &mut Attrs, name: &str, allowed: &[&str]) -> Option<String> {
        let v = a.take(name)?;
        let t = v.trim();
        if let Some(ok) = allowed.iter().find(|x| x.eq_ignore_ascii_case(t)) {
            return Some(ok.to_string());
        }
        let pos = self.attr_pos(a.node, name);
        self.d.error(
            pos,
            format!(
                "<{}> {name}=\"{v}\" is not a policy quorate knows",
                elem_name(&a.node)
            ),
            match suggest(t, allowed) {
                Some(m) => format!(
                    "did you mean {name}=\"{m}\"? choose one of: {}",
                    allowed.join(", ")
                ),
                None => format!("choose one of: {}", allowed.join(", ")),
            },
        );
        None
    }

    /// `<replicas>`, checked against the cluster's nodes.
    pub(super) fn replicas(&mut self, n: Node<'a, 'i>, nodes: &[ClusterNode]) -> Vec<Replica> {
        let mut out: Vec<Replica> = Vec::new();
        for c in Self::elements(n) {
            if elem_name(&c) != "replica" {
                self.warn_unknown_element(c, "replicas", &["replica"]);
                continue;
            }
            let Some(r) = self.replica(c, nodes) else {
                continue;
            };
            if let Some(first) = out.iter().find(|o| o.name == r.name) {
                let pos = self.attr_pos(c, "name");
                self.d.error(
                    pos,
                    format!(
                        "two <replica>s named \"{}\" (first at line {})",
                        r.name, first.line
                    ),
                    "replica names must be unique; rename one",
                );
                continue;
            }
            // Ports are TCP listeners on each node's storage address: one listener per port.
            let mut clash = None;
            for o in &out {
                let shared = r.nodes.iter().any(|rn| {
                    o.nodes
                        .iter()
                        .any(|on| on.name == rn.name && on.address.value == rn.address.value)
                });
                if !shared {
                    continue;
                }
                for (what, p) in [("port", r.port.value), ("nbd_port", r.nbd_port.value)] {
                    if p == o.port.value || p == o.nbd_port.value {
                        clash = Some((what, p, o.name.clone(), o.line));
                    }
                }
            }
            if let Some((what, p, other, line)) = clash {
                let pos = self.attr_pos(c, what);
                self.d.error(
                    pos,
                    format!("<replica name=\"{}\"> {what}=\"{p}\" is already used by replica \"{other}\" (line {line}) on the same node address", r.name),
                    "give every replica its own port and nbd_port (DRBD's habit: 7789, 7790, ... and 10809, 10810, ...)",
                );
                continue;
            }
            out.push(r);
        }
        out
    }

    fn replica(&mut self, c: Node<'a, 'i>, nodes: &[ClusterNode]) -> Option<Replica> {
        let mut a = Attrs::new(c);
        let name = self.required_name(&mut a, "name", "r0");
        let size = self.bytes_attr(&mut a, "size", "20G");
        if size.is_none() && !c.has_attribute("size") {
            let pos = self.pos(c);
            self.d.error(
                pos,
                "<replica> has no size=",
                "add size=\"20G\" (the volume's size; each node's disk must be at least that big)",
            );
        }
        let protocol = self.choice(&mut a, "protocol", PROTOCOLS);
        let port = self.u16a(&mut a, "port", 7789);
        let nbd_port = self.u16a(&mut a, "nbd_port", 10809);
        let sb0 = self.choice(&mut a, "after-sb-0pri", AFTER_SB_0PRI);
        let sb1 = self.choice(&mut a, "after-sb-1pri", AFTER_SB_1PRI);
        let sb2 = self.choice(&mut a, "after-sb-2pri", AFTER_SB_2PRI);
        let two = self.boolean(&mut a, "allow-two-primaries");
        let rate = self.bytes_attr(&mut a, "rate", "100M");
        let fencing = self.choice(&mut a, "fencing", FENCING);
        self.warn_unknown_attrs(&a, ATTRS);
        // DRBD's habit: the first resource replicates on 7789.
        let port = Setting::or(port, 7789);
        // IANA's NBD port (qemu's and nbdkit's default).
        let nbd_port = Setting::or(nbd_port, 10809);
        if port.value == nbd_port.value {
            let pos = self.attr_pos(c, "nbd_port");
            self.d.error(
                pos,
                format!("<replica> port and nbd_port are both {}", port.value),
                "the replication link and the NBD export need different ports, e.g. port=\"7789\" nbd_port=\"10809\"",
            );
        }
        let mut rnodes: Vec<ReplicaNode> = Vec::new();
        for e in Self::elements(c) {
            if elem_name(&e) != "node" {
                self.warn_unknown_element(e, "replica", &["node"]);
                continue;
            }
            if let Some(rn) = self.replica_node(e, nodes) {
                if rnodes.iter().any(|o| o.name == rn.name) {
                    let pos = self.attr_pos(e, "name");
                    self.d.error(
                        pos,
                        format!("node \"{}\" is listed twice in this <replica>", rn.name),
                        "a replica has one <node> per side: list two different nodes",
                    );
                    continue;
                }
                rnodes.push(rn);
            }
        }
        let count = Self::elements(c).filter(|e| elem_name(e) == "node").count();
        if count != 2 {
            let pos = self.pos(c);
            self.d.error(
                pos,
                format!("<replica> has {count} <node>s; a replica mirrors between exactly two"),
                "list two <node name=\"...\" disk=\"...\" address=\"...\"/> children, one per side",
            );
            return None;
        }
        if rnodes.len() != 2 {
            return None; // each missing side was reported above
        }
        let two = Setting::or(two, false);
        Some(Replica {
            name: name?,
            size: size?,
            // DRBD's and the seed's protocol: a write completes only when both disks have it.
            protocol: Setting::or(protocol, "C".into()),
            port,
            nbd_port,
            // The seed's choice: a side that wrote nothing while split is resynced without asking.
            after_sb_0pri: Setting::or(sb0, "discard-zero-changes".into()),
            // The seed's choice: the secondary of a split brain is the victim.
            after_sb_1pri: Setting::or(sb1, "discard-secondary".into()),
            // Both sides wrote as primaries: only a human can choose (DRBD's default too).
            after_sb_2pri: Setting::or(sb2, "disconnect".into()),
            // DRBD's default: two primaries without a cluster filesystem corrupt data; with 1 the
            // resource manager opens the window only while a live migration is in flight.
            allow_two_primaries: two,
            // Resync ceiling that leaves room for guests' I/O on a gigabit storage network.
            rate: Setting::or(rate, 100 << 20),
            // The seed's and DRBD's recommendation for clusters: freeze I/O until the peer is fenced.
            fencing: Setting::or(fencing, "resource-and-stonith".into()),
            nodes: rnodes,
            line: self.line(c),
        })
    }

    fn replica_node(&mut self, e: Node<'a, 'i>, nodes: &[ClusterNode]) -> Option<ReplicaNode> {
        let mut a = Attrs::new(e);
        let name = self.required_name(&mut a, "name", "an-node01");
        let disk = self.required_name(&mut a, "disk", "/var/lib/quorate/r0.img");
        let meta = a.take("meta").filter(|m| !m.trim().is_empty());
        let address = a.take("address").filter(|m| !m.trim().is_empty());
        self.warn_unknown_attrs(&a, &["name", "disk", "meta", "address"]);
        let name = name?;
        let Some(cn) = nodes.iter().find(|n| n.name == name) else {
            let pos = self.attr_pos(e, "name");
            let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            self.d.error(
                pos,
                format!("<replica><node name=\"{name}\"> is not a <clusternode>"),
                match suggest(&name, &known) {
                    Some(m) => format!(
                        "did you mean \"{m}\"? use a node name from <clusternodes> ({})",
                        known.join(", ")
                    ),
                    None => format!("use a node name from <clusternodes> ({})", known.join(", ")),
                },
            );
            return None;
        };
        let disk = disk?;
        if meta.is_none() && disk.starts_with("/dev/") {
            let pos = self.attr_pos(e, "disk");
            self.d.error(
                pos,
                format!("disk=\"{disk}\" is a device, so its metadata cannot sit beside it"),
                "add meta=\"/var/lib/quorate/NAME.md\" (a file on another filesystem)",
            );
        }
        Some(ReplicaNode {
            name,
            // External metadata beside the backing file (DRBD's meta-disk, as a file).
            meta: Setting::or(meta, format!("{disk}.md")),
            disk,
            // The seed's second network is its storage network: the node's <altname>, else its name.
            address: Setting::or(
                address,
                cn.altnames
                    .first()
                    .map_or(cn.name.clone(), |a| a.name.clone()),
            ),
            line: self.line(e),
        })
    }

    /// Every `<replica name=...>` resource in a service names a defined replica.
    pub(super) fn check_replica_refs(
        &mut self,
        resources: &[(Resource, Pos)],
        defined: &[Replica],
    ) {
        for (r, pos) in resources {
            let name = r.attrs.get("name").map(String::as_str).unwrap_or("");
            if !defined.iter().any(|d| d.name == name) {
                let known: Vec<&str> = defined.iter().map(|d| d.name.as_str()).collect();
                self.d.error(
                    *pos,
                    format!("<replica name=\"{name}\"> names no <replica> in <replicas>"),
                    if known.is_empty() {
                        format!("define <replicas><replica name=\"{name}\" size=\"...\">...</replica></replicas> inside <cluster>")
                    } else {
                        format!("use a defined replica ({})", known.join(", "))
                    },
                );
            }
        }
    }

    /// Services and vms that use a volume can only run where it lives: a `<vm replica=>` names a
    /// defined volume, and a warning when the failover domain allows other nodes.
    pub(super) fn check_replica_placement(&mut self, rm: &Rm, defined: &[Replica], nodes: usize) {
        fn names(rs: &[Resource], out: &mut Vec<String>) {
            for r in rs {
                if r.kind == "replica" {
                    out.extend(r.attrs.get("name").cloned());
                }
                names(&r.children, out);
            }
        }
        let mut users: Vec<(String, Option<String>, u32, Vec<String>)> = Vec::new();
        for s in &rm.services {
            let mut v = Vec::new();
            names(&s.resources, &mut v);
            users.push((
                format!("service \"{}\"", s.name),
                s.domain.clone(),
                s.line,
                v,
            ));
        }
        for vm in &rm.vms {
            let Some(r) = vm.attrs.get("replica") else {
                continue;
            };
            if !defined.iter().any(|d| &d.name == r) {
                let known: Vec<&str> = defined.iter().map(|d| d.name.as_str()).collect();
                self.d.error(
                    Pos {
                        line: vm.line,
                        column: 1,
                    },
                    format!(
                        "<vm name=\"{}\" replica=\"{r}\"> names no <replica> in <replicas>",
                        vm.name
                    ),
                    if known.is_empty() {
                        "define the volume in <replicas> inside <cluster>".to_string()
                    } else {
                        format!("use a defined replica ({})", known.join(", "))
                    },
                );
                continue;
            }
            users.push((
                format!("vm \"{}\"", vm.name),
                vm.domain.clone(),
                vm.line,
                vec![r.clone()],
            ));
        }
        for (what, domain, line, used) in users {
            for r in used {
                let Some(rep) = defined.iter().find(|d| d.name == r) else {
                    continue;
                };
                let holders: Vec<&str> = rep.nodes.iter().map(|n| n.name.as_str()).collect();
                let fits = domain
                    .as_deref()
                    .and_then(|d| rm.domain(d))
                    .is_some_and(|d| {
                        *d.restricted.get()
                            && d.nodes.iter().all(|m| holders.contains(&m.name.as_str()))
                    });
                if !fits && nodes > holders.len() {
                    self.d.warn(
                        Pos { line, column: 1 },
                        format!("{what} uses replica \"{r}\", which lives only on {}, but may be placed on other nodes", holders.join(" and ")),
                        format!("give it a restricted failover domain of {}", holders.join(" and ")),
                    );
                }
            }
        }
    }
}
