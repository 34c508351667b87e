//! XML to model: one pass over the tree, then cross-reference checks and defaults.

use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::model::*;
use crate::resource::{key_attr, KNOWN_TYPES};
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

#[path = "parse_replicas.rs"]
mod replicas;
pub use replicas::{parse_bytes, AFTER_SB_0PRI, AFTER_SB_1PRI, AFTER_SB_2PRI, FENCING, PROTOCOLS};

/// Marks an error that a parser bug produced (tests assert it never appears).
pub const INTERNAL: &str = "internal error";

/// Largest file the parser accepts (cluster.conf files are a few KiB).
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Deepest element nesting accepted (the XML parser recurses; real files nest < 15 deep).
pub const MAX_XML_DEPTH: usize = 256;
/// Deepest resource tree accepted inside a service.
pub const MAX_RESOURCE_DEPTH: usize = 32;

/// The result of parsing: the model (only when there is no error) and every diagnostic.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The effective model; `None` when an error was found.
    pub config: Option<ClusterConf>,
    /// Errors and warnings sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    /// True when there is no error (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.config.is_some()
    }
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// Parses and validates cluster.conf text. `file` is only used in diagnostics. Never panics.
pub fn parse(file: &str, text: &str) -> Parsed {
    let mut d = Diagnostics::new(file);
    if text.len() > MAX_FILE_BYTES {
        d.error(
            Pos { line: 1, column: 1 },
            format!("file is larger than the {MAX_FILE_BYTES} byte limit"),
            "check that this is really a cluster.conf",
        );
        return Parsed {
            config: None,
            diagnostics: d.into_sorted(),
        };
    }
    if let Some(at) = too_deep(text, MAX_XML_DEPTH) {
        d.error(
            text_pos(text, at),
            format!("elements nested deeper than {MAX_XML_DEPTH} levels"),
            "this is not a cluster.conf quorate can read; real files nest a few levels deep",
        );
        return Parsed {
            config: None,
            diagnostics: d.into_sorted(),
        };
    }
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: 200_000,
    };
    let doc = match Document::parse_with_options(text, opts) {
        Ok(doc) => doc,
        Err(e) => {
            if matches!(e, roxmltree::Error::DtdDetected) {
                let at = text.find("<!DOCTYPE").unwrap_or(0);
                let tp = text_pos(text, at);
                d.error(
                    tp,
                    "a <!DOCTYPE> is not allowed in cluster.conf",
                    "remove the <!DOCTYPE ...> declaration; quorate refuses DTDs and entities so a file cannot expand or pull in other files",
                );
                return Parsed {
                    config: None,
                    diagnostics: d.into_sorted(),
                };
            }
            let tp = e.pos();
            let msg = e.to_string();
            let msg = match msg.rfind(" at ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            d.error(
                Pos {
                    line: tp.row,
                    column: tp.col,
                },
                format!("malformed XML: {msg}"),
                "fix the XML syntax here (unclosed tag, stray '<' or '&', unquoted attribute?); `xmllint --noout FILE` shows the same",
            );
            return Parsed {
                config: None,
                diagnostics: d.into_sorted(),
            };
        }
    };
    let mut p = P {
        lines: Lines::new(text),
        d,
        pending: Pending::default(),
    };
    let config = p.cluster(doc.root_element());
    if config.is_none() && !p.d.has_errors() {
        // Every path that yields no model reports why; this only guards against a missed one.
        p.d.error(
            Pos { line: 1, column: 1 },
            format!("{INTERNAL}: the file could not be turned into a configuration"),
            "please report this file to the quorate developers",
        );
    }
    let has_errors = p.d.has_errors();
    Parsed {
        config: if has_errors { None } else { config },
        diagnostics: p.d.into_sorted(),
    }
}

/// Byte offset of the first element nested deeper than `max`, by a conservative scan
/// (it never counts less depth than the XML parser will see).
fn too_deep(text: &str, max: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let start = i;
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = find(b, i + 4, b"-->").map_or(b.len(), |e| e + 3);
        } else if rest.starts_with(b"<![CDATA[") {
            i = find(b, i + 9, b"]]>").map_or(b.len(), |e| e + 3);
        } else if rest.starts_with(b"<?") || rest.starts_with(b"<!") {
            i = find(b, i + 2, b">").map_or(b.len(), |e| e + 1);
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = find(b, i + 2, b">").map_or(b.len(), |e| e + 1);
        } else {
            // An opening tag: skip to its '>' outside quotes.
            let mut j = i + 1;
            let mut quote = 0u8;
            while j < b.len() {
                let c = b[j];
                if quote != 0 {
                    if c == quote {
                        quote = 0;
                    }
                } else if c == b'"' || c == b'\'' {
                    quote = c;
                } else if c == b'>' || c == b'<' {
                    break;
                }
                j += 1;
            }
            let self_closing = j < b.len() && b[j] == b'>' && j > 0 && b[j - 1] == b'/';
            if !self_closing {
                depth += 1;
                if depth > max {
                    return Some(start);
                }
            }
            i = if j < b.len() && b[j] == b'>' {
                j + 1
            } else {
                j.max(i + 1)
            };
        }
    }
    None
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Levenshtein distance, for "did you mean" hints (inputs are short names).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance, if any.
fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    if word.len() > 64 {
        return None;
    }
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn text_pos(text: &str, at: usize) -> Pos {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() as u32 + 1;
    let col_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[col_start..].chars().count() as u32 + 1;
    Pos { line, column }
}

/// References checked once the whole file is read (sections come in any order).
#[derive(Default)]
struct Pending {
    device_refs: Vec<(String, Pos)>,
    domain_nodes: Vec<(String, Pos)>,
    inline_keys: BTreeMap<(String, String), u32>,
}

/// Byte offsets of line starts, for O(log n) offset -> line:column.
struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
    cache: std::cell::Cell<(usize, usize, usize)>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines {
            text,
            starts,
            cache: std::cell::Cell::new((0, 0, 0)),
        }
    }
    fn pos(&self, at: usize) -> Pos {
        let at = at.min(self.text.len());
        let idx = self.starts.partition_point(|&s| s <= at).saturating_sub(1);
        let start = self.starts[idx];
        // Columns count characters; continue from the last lookup on the same line so
        // a file that is one huge line stays linear.
        let (c_start, c_at, c_chars) = self.cache.get();
        let chars = if c_start == start && c_at <= at {
            c_chars + self.text.get(c_at..at).map_or(0, |t| t.chars().count())
        } else {
            self.text.get(start..at).map_or(0, |t| t.chars().count())
        };
        self.cache.set((start, at, chars));
        let column = chars + 1;
        Pos {
            line: idx as u32 + 1,
            column: column as u32,
        }
    }
}

struct P<'i> {
    lines: Lines<'i>,
    d: Diagnostics,
    pending: Pending,
}

/// The attributes of one element, taken one by one; what is left is unknown.
struct Attrs<'a, 'i> {
    node: Node<'a, 'i>,
    left: BTreeMap<String, String>,
}

impl<'a, 'i> Attrs<'a, 'i> {
    fn new(node: Node<'a, 'i>) -> Self {
        let left = node
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect();
        Attrs { node, left }
    }
    fn take(&mut self, name: &str) -> Option<String> {
        self.left.remove(name)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn elem_name<'a>(n: &Node<'a, '_>) -> &'a str {
    n.tag_name().name()
}

impl<'a, 'i: 'a> P<'i> {
    fn pos(&self, n: Node) -> Pos {
        self.lines.pos(n.range().start)
    }
    fn line(&self, n: Node) -> u32 {
        self.pos(n).line
    }
    fn attr_pos(&self, n: Node, name: &str) -> Pos {
        match n.attribute_node(name) {
            Some(a) => self.lines.pos(a.range().start),
            None => self.pos(n),
        }
    }

    fn elements(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
        n.children().filter(|c| c.is_element())
    }

    /// Warn about the attributes left in `a` that `accepted` does not list,
    /// suggesting spellings from `suggested`.
    fn warn_unknown_except(&mut self, a: &Attrs, accepted: &[&str], suggested: &[&str]) {
        let unknown = Attrs {
            node: a.node,
            left: a
                .left
                .iter()
                .filter(|(k, _)| !accepted.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        self.warn_unknown_attrs(&unknown, suggested);
    }

    fn warn_unknown_attrs(&mut self, a: &Attrs, known: &[&str]) {
        let el = elem_name(&a.node).to_string();
        for k in a.left.keys() {
            let pos = self.attr_pos(a.node, k);
            let hint = match suggest(k, known) {
                Some(m) => format!("did you mean {m}=? <{el}> knows: {}", known.join(", ")),
                None => format!("check the spelling; <{el}> knows: {}", known.join(", ")),
            };
            self.d.warn(
                pos,
                format!("unknown attribute `{k}` on <{el}>; quorate ignores it"),
                hint,
            );
        }
    }

    fn warn_unknown_element(&mut self, n: Node, parent: &str, known: &[&str]) {
        let pos = self.pos(n);
        self.d.warn(
            pos,
            format!(
                "unknown element <{}> inside <{parent}>; quorate ignores it",
                elem_name(&n)
            ),
            match suggest(elem_name(&n), known) {
                Some(m) => format!(
                    "did you mean <{m}>? <{parent}> may contain: {}",
                    known.join(", ")
                ),
                None => format!(
                    "check the spelling or remove it; <{parent}> may contain: {}",
                    known.join(", ")
                ),
            },
        );
    }

    /// A non-negative integer attribute; an error (and `None`) when it is not one.
    fn uint(&mut self, a: &mut Attrs, name: &str, unit: &str, example: u64) -> Option<u64> {
        let v = a.take(name)?;
        match v.trim().parse::<u64>() {
            Ok(x) => Some(x),
            Err(_) => {
                let pos = self.attr_pos(a.node, name);
                let negative = v.trim().starts_with('-') && v.trim()[1..].parse::<u64>().is_ok();
                let what = if negative {
                    "must not be negative"
                } else {
                    "must be a whole number"
                };
                self.d.error(
                    pos,
                    format!(
                        "<{}> {name}=\"{v}\" {what}{unit}",
                        elem_name(&a.node),
                        unit = if unit.is_empty() || negative {
                            String::new()
                        } else {
                            format!(" ({unit})")
                        }
                    ),
                    format!("write a non-negative whole number, e.g. {name}=\"{example}\""),
                );
                None
            }
        }
    }

    fn u32a(&mut self, a: &mut Attrs, name: &str, unit: &str, example: u64) -> Option<u32> {
        let pos = self.attr_pos(a.node, name);
        let el = elem_name(&a.node).to_string();
        let v = self.uint(a, name, unit, example)?;
        match u32::try_from(v) {
            Ok(x) => Some(x),
            Err(_) => {
                self.d.error(
                    pos,
                    format!("<{el}> {name}=\"{v}\" is too large"),
                    format!("use a value below {}", u32::MAX),
                );
                None
            }
        }
    }

    fn u16a(&mut self, a: &mut Attrs, name: &str, example: u64) -> Option<u16> {
        let pos = self.attr_pos(a.node, name);
        let el = elem_name(&a.node).to_string();
        let v = self.uint(a, name, "", example)?;
        match u16::try_from(v) {
            Ok(x) => Some(x),
            Err(_) => {
                self.d.error(
                    pos,
                    format!("<{el}> {name}=\"{v}\" is out of range (0..65535)"),
                    format!("use a value from 0 to 65535, e.g. {name}=\"{example}\""),
                );
                None
            }
        }
    }

    /// A signed integer of seconds with a lower bound.
    fn secs(&mut self, a: &mut Attrs, name: &str, min: i64, example: i64) -> Option<i64> {
        let v = a.take(name)?;
        let pos = self.attr_pos(a.node, name);
        let el = elem_name(&a.node).to_string();
        match v.trim().parse::<i64>() {
            Ok(x) if x >= min => Some(x),
            Ok(x) => {
                self.d.error(
                    pos,
                    format!("<{el}> {name}=\"{x}\" is below the minimum {min}"),
                    format!("use a number of seconds >= {min}, e.g. {name}=\"{example}\""),
                );
                None
            }
            Err(_) => {
                self.d.error(
                    pos,
                    format!("<{el}> {name}=\"{v}\" must be a whole number of seconds"),
                    format!("write a number, e.g. {name}=\"{example}\""),
                );
                None
            }
        }
    }

    fn boolean(&mut self, a: &mut Attrs, name: &str) -> Option<bool> {
        let v = a.take(name)?;
        match parse_bool(&v) {
            Some(b) => Some(b),
            None => {
                let pos = self.attr_pos(a.node, name);
                self.d.error(
                    pos,
                    format!("<{}> {name}=\"{v}\" is not a boolean", elem_name(&a.node)),
                    format!("write {name}=\"1\" or {name}=\"0\" (yes/no, on/off also work)"),
                );
                None
            }
        }
    }

    fn required_name(&mut self, a: &mut Attrs, attr: &str, example: &str) -> Option<String> {
        match a.take(attr) {
            Some(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
            other => {
                let pos = self.pos(a.node);
                let el = elem_name(&a.node).to_string();
                let what = if other.is_some() { "an empty" } else { "no" };
                self.d.error(
                    pos,
                    format!("<{el}> has {what} {attr}="),
                    format!("add {attr}=\"{example}\" to this <{el}>"),
                );
                None
            }
        }
    }

    /// Errors for a second occurrence of a section that may appear once.
    fn single(&mut self, seen: &mut BTreeMap<String, u32>, n: Node) -> bool {
        let name = elem_name(&n).to_string();
        let line = self.line(n);
        if let Some(first) = seen.get(&name) {
            let pos = self.pos(n);
            self.d.error(
                pos,
                format!("second <{name}> section (the first is at line {first})"),
                format!("merge the two into the <{name}> at line {first}"),
            );
            false
        } else {
            seen.insert(name, line);
            true
        }
    }

    fn cluster(&mut self, root: Node<'a, 'i>) -> Option<ClusterConf> {
        if elem_name(&root) != "cluster" {
            let pos = self.pos(root);
            self.d.error(
                pos,
                format!(
                    "the root element is <{}>, not <cluster>",
                    elem_name(&root)
                ),
                "a cluster.conf starts with <cluster name=\"...\" config_version=\"1\">; is this the right file?",
            );
            return None;
        }
        let mut a = Attrs::new(root);
        let name = self.required_name(&mut a, "name", "an-cluster");
        if let Some(n) = &name {
            if n.len() > 15 {
                let pos = self.attr_pos(root, "name");
                self.d.warn(
                    pos,
                    format!("cluster name \"{n}\" is longer than 15 characters"),
                    "RHCS cman refuses names over 15 characters; shorten it if RHCS nodes must read this file",
                );
            }
        }
        let version_pos = self.attr_pos(root, "config_version");
        let config_version = match a.take("config_version") {
            None => {
                self.d.error(
                    version_pos,
                    "<cluster> has no config_version=",
                    "add config_version=\"1\" and raise it with every change",
                );
                None
            }
            Some(v) => match v.trim().parse::<u64>() {
                Ok(x) => Some(x),
                Err(_) => {
                    self.d.error(
                        version_pos,
                        format!("config_version=\"{v}\" is not a whole number"),
                        "use a positive integer such as config_version=\"7\" or a date such as \"2013060401\"",
                    );
                    None
                }
            },
        };
        self.warn_unknown_attrs(&a, &["name", "config_version", "alias"]);

        // Sections, in any order.
        const KNOWN: &[&str] = &[
            "cman",
            "totem",
            "quorum",
            "quorumd",
            "fence_daemon",
            "clusternodes",
            "fencedevices",
            "rm",
            "logging",
            "dlm",
            "replicas",
        ];
        const UNUSED: &[&str] = &["fence_xvmd", "gfs_controld", "group", "clvmd"];
        let mut seen = BTreeMap::new();
        let (mut cman_n, mut totem_n, mut quorum_n, mut quorumd_n, mut fd_n) =
            (None, None, None, None, None);
        let (mut nodes_n, mut devs_n, mut rm_n, mut log_n, mut dlm_n) =
            (None, None, None, None, None);
        let mut replicas_n = None;
        for c in Self::elements(root) {
            let en = elem_name(&c);
            if KNOWN.contains(&en) && !self.single(&mut seen, c) {
                continue;
            }
            match en {
                "cman" => cman_n = Some(c),
                "totem" => totem_n = Some(c),
                "quorum" => quorum_n = Some(c),
                "quorumd" => quorumd_n = Some(c),
                "fence_daemon" => fd_n = Some(c),
                "clusternodes" => nodes_n = Some(c),
                "fencedevices" => devs_n = Some(c),
                "rm" => rm_n = Some(c),
                "logging" => log_n = Some(c),
                "dlm" => dlm_n = Some(c),
                "replicas" => replicas_n = Some(c),
                _ if UNUSED.contains(&en) => {
                    let pos = self.pos(c);
                    self.d.warn(
                        pos,
                        format!("<{en}> is an RHCS section quorate does not use; it is ignored"),
                        "remove it, or keep it if RHCS nodes still read this file",
                    );
                }
                _ => self.warn_unknown_element(c, "cluster", KNOWN),
            }
        }

        let nodes = match nodes_n {
            Some(n) => self.clusternodes(n),
            None => {
                let pos = self.pos(root);
                self.d.error(
                    pos,
                    "incomplete configuration: no <clusternodes>; a cluster needs at least one node",
                    "add <clusternodes> with one <clusternode name=\"...\" nodeid=\"N\"/> per node (the seed's config_version 3 step)",
                );
                Vec::new()
            }
        };
        let fence_devices = match devs_n {
            Some(n) => self.fencedevices(n),
            None => Vec::new(),
        };
        let raw_cman = cman_n.map(|n| self.cman(n)).unwrap_or_default();
        let raw_quorum = quorum_n.map(|n| self.quorum_ext(n)).unwrap_or_default();
        let raw_totem = totem_n.map(|n| self.totem(n)).unwrap_or_default();
        let quorumd = quorumd_n.and_then(|n| self.quorumd(n, nodes.len()));
        let fence_daemon = self.fence_daemon(fd_n);
        let rm = self.rm(rm_n);
        let logging = self.logging(log_n);
        let dlm = self.dlm(dlm_n);
        let replicas = match replicas_n {
            Some(n) => self.replicas(n, &nodes),
            None => Vec::new(),
        };
        let mut replica_refs = Vec::new();
        fn walk(rs: &[Resource], out: &mut Vec<(Resource, Pos)>) {
            for r in rs {
                if r.kind == "replica" {
                    out.push((
                        r.clone(),
                        Pos {
                            line: r.line,
                            column: 1,
                        },
                    ));
                }
                walk(&r.children, out);
            }
        }
        for s in &rm.services {
            walk(&s.resources, &mut replica_refs);
        }
        self.check_replica_refs(&replica_refs, &replicas);
        self.check_replica_placement(&rm, &replicas, nodes.len());

        // Cross references.
        let dev_names: BTreeSet<&str> = fence_devices.iter().map(|d| d.name.as_str()).collect();
        for (name, pos) in std::mem::take(&mut self.pending.device_refs) {
            if !dev_names.contains(name.as_str()) {
                let known = if dev_names.is_empty() {
                    "none are defined yet".to_string()
                } else {
                    dev_names.iter().copied().collect::<Vec<_>>().join(", ")
                };
                self.d.error(
                    pos,
                    format!("<device name=\"{name}\"> names no <fencedevice>"),
                    format!("define <fencedevice name=\"{name}\" agent=\"fence_...\"/> in <fencedevices>, or use a defined one ({known})"),
                );
            }
        }
        let node_names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        for (name, pos) in std::mem::take(&mut self.pending.domain_nodes) {
            if !node_names.contains(name.as_str()) {
                self.d.error(
                    pos,
                    format!("<failoverdomainnode name=\"{name}\"> is not a <clusternode>"),
                    format!(
                        "use a node name from <clusternodes> ({})",
                        node_names.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }

        // cman and quorum.
        let two_node = raw_cman.two_node.unwrap_or(false);
        if two_node && !nodes.is_empty() {
            let pos = self.attr_pos(cman_n.unwrap_or(root), "two_node");
            let count = nodes_n.map_or(0, |n| {
                Self::elements(n)
                    .filter(|c| elem_name(c) == "clusternode")
                    .count()
            });
            if count != 2 {
                self.d.error(
                    pos,
                    format!(
                        "two_node=\"1\" needs exactly two <clusternode>s, but there are {count}"
                    ),
                    "set two_node=\"0\" (and drop expected_votes=\"1\") for a cluster of more than two nodes",
                );
            }
            if raw_cman.expected_votes != Some(1) {
                self.d.error(
                    pos,
                    "two_node=\"1\" requires expected_votes=\"1\" in <cman>",
                    "add expected_votes=\"1\" to <cman> (one vote must be quorate in a two-node cluster)",
                );
            }
            if quorumd.is_some() {
                self.d.warn(
                    pos,
                    "two_node=\"1\" together with a <quorumd>",
                    "with a quorum disk use two_node=\"0\" and expected_votes=\"3\" (qdisk gives the third vote)",
                );
            }
        }
        let node_votes: u32 = nodes
            .iter()
            .fold(0u32, |s, n| s.saturating_add(*n.votes.get()));
        let qd_votes = quorumd.as_ref().map(|q| *q.votes.get()).unwrap_or(0);
        let total_votes = node_votes.saturating_add(qd_votes);
        // cman: expected_votes defaults to the sum of all votes (nodes plus quorum disk).
        let expected = Setting::or(raw_cman.expected_votes, total_votes);
        // cman: quorum = expected/2 + 1 (more than half); two_node makes one vote quorate.
        let quorum = if two_node { 1 } else { expected.value / 2 + 1 };
        if !nodes.is_empty() && total_votes == 0 {
            let pos = self.pos(nodes_n.unwrap_or(root));
            self.d.error(
                pos,
                "every node has votes=\"0\"; the cluster can never be quorate",
                "give at least one node votes=\"1\" (or remove votes= for the default 1)",
            );
        } else if !nodes.is_empty() && quorum > total_votes {
            let pos = self.attr_pos(cman_n.unwrap_or(root), "expected_votes");
            self.d.error(
                pos,
                format!(
                    "expected_votes={} needs {quorum} votes for quorum but all nodes together have {total_votes}; the cluster could never be quorate",
                    expected.value
                ),
                format!("lower expected_votes to {total_votes} or less, or remove it so it is computed"),
            );
        }
        let wait_for_all = raw_quorum.wait_for_all.or(raw_cman.wait_for_all);
        let lms = raw_quorum.last_man_standing.or(raw_cman.last_man_standing);
        let lmsw = raw_quorum
            .last_man_standing_window
            .or(raw_cman.last_man_standing_window);
        let quorum = Quorum {
            total_votes,
            expected_votes: expected,
            quorum,
            // RHCS cman has no wait_for_all; off unless asked for (votequorum's option).
            wait_for_all: Setting::or(wait_for_all, false),
            // Off as in votequorum: expected votes never shrink on their own.
            last_man_standing: Setting::or(lms, false),
            // votequorum's default window: 10 s of stable membership before recalculating.
            last_man_standing_window: Setting::or(lmsw, 10_000),
        };

        let name = name?;
        // cman: cluster id = shift-and-add hash of the name, 16 bits (generate_cluster_id).
        let hashed = name
            .bytes()
            .fold(0u32, |v, b| (v << 1).wrapping_add(b as u32))
            & 0xffff;
        let cluster_id = Setting::or(raw_cman.cluster_id, hashed as u16);
        let id = *cluster_id.get();
        let cman = Cman {
            two_node: Setting::or(raw_cman.two_node, false), // cman: off; needs expected_votes=1
            expected_votes: raw_cman.expected_votes,
            port: Setting::or(raw_cman.port, 5405), // cman DEFAULT_PORT (totem's UDP port)
            cluster_id,
            // cman default_mcast: 239.192.(id>>8).(id%255) for IPv4 rings.
            multicast: Setting::or(
                raw_cman.multicast,
                format!("239.192.{}.{}", id >> 8, id % 0xff),
            ),
            keyfile: raw_cman.keyfile,
        };
        let has_alt = nodes.iter().any(|n| !n.altnames.is_empty());
        if has_alt {
            if let Some(n) = nodes.iter().find(|n| n.altnames.is_empty()) {
                self.d.warn(
                    Pos {
                        line: n.line,
                        column: 1,
                    },
                    format!(
                        "node \"{}\" has no <altname> while other nodes do; the second ring needs every node",
                        n.name
                    ),
                    "add <altname name=\"...\"/> with this node's second-network name, or remove the other <altname>s",
                );
            }
        } else if matches!(raw_totem.rrp_mode, Some(RrpMode::Active | RrpMode::Passive)) {
            let pos = self.attr_pos(totem_n.unwrap_or(root), "rrp_mode");
            self.d.warn(
                pos,
                "rrp_mode is set but no node has an <altname>, so there is only one ring",
                "add <altname name=\"...\"/> to every <clusternode> for a second ring, or remove rrp_mode",
            );
        }
        let token = Setting::or(raw_totem.token, 10_000); // cman: 10 s token, longer than corosync's 3 s
        let t = *token.get();
        // cman: two-node clusters get consensus = 0.2*token clamped to [200, 2000] ms,
        // others token + 2000 ms.
        let consensus_default = if two_node {
            (t / 5).clamp(200, 2000)
        } else {
            t.saturating_add(2000)
        };
        let totem = Totem {
            token,
            join: Setting::or(raw_totem.join, 60), // cman: 60 ms join (bz#214290)
            consensus: Setting::or(raw_totem.consensus, consensus_default),
            // corosync 1.x default, not overridden by current cman.
            token_retransmits_before_loss_const: Setting::or(raw_totem.retransmits, 4),
            fail_recv_const: Setting::or(raw_totem.fail_recv_const, 2500), // cman and corosync: 2500 rotations
            // cman: active when a node has a second ring (<altname>), else none.
            rrp_mode: Setting::or(
                raw_totem.rrp_mode,
                if has_alt {
                    RrpMode::Active
                } else {
                    RrpMode::None
                },
            ),
            secauth: Setting::or(raw_totem.secauth, true), // cman: always authenticate; key from cluster name if no keyfile
            keyfile: raw_totem.keyfile.or(cman.keyfile.clone()),
            interfaces: raw_totem.interfaces,
        };
        if !two_node && !totem.consensus.default {
            let c = u64::from(*totem.consensus.get());
            if c * 5 < u64::from(t) * 6 {
                let pos = self.attr_pos(totem_n.unwrap_or(root), "consensus");
                self.d.warn(
                    pos,
                    format!("consensus {c} ms is less than 1.2 x token ({t} ms)"),
                    format!("remove consensus (default token + 2000 = {} ms) or set it to at least {} ms", t.saturating_add(2000), u64::from(t) * 6 / 5),
                );
            }
        }
        if let Some(q) = &quorumd {
            // qdisk.5: the token timeout must outlast a quorum-disk master election.
            let cycles = u64::from(*q.tko.get())
                + u64::from(*q.master_wait.get())
                + u64::from(*q.upgrade_wait.get());
            let need = u64::from(*q.interval.get())
                .saturating_mul(cycles)
                .saturating_mul(1000);
            if u64::from(t) <= need {
                let pos = self.attr_pos(totem_n.or(quorumd_n).unwrap_or(root), "token");
                self.d.warn(
                    pos,
                    format!("totem token {t} ms does not exceed qdisk's interval*(tko+master_wait+upgrade_wait) = {need} ms; membership may change before the quorum disk settles"),
                    format!("set <totem token=\"{}\"/> or more, or lower <quorumd> interval/tko", need + 4000),
                );
            }
        }
        let config_version = config_version?;
        if nodes.is_empty() {
            return None;
        }
        Some(ClusterConf {
            name,
            config_version,
            cman,
            totem,
            quorum,
            quorumd,
            fence_daemon,
            nodes,
            fence_devices,
            rm,
            logging,
            dlm,
            replicas,
        })
    }

    fn cman(&mut self, n: Node<'a, 'i>) -> RawCman {
        let mut a = Attrs::new(n);
        let mut r = RawCman {
            two_node: self.boolean(&mut a, "two_node"),
            ..Default::default()
        };
        let ev_pos = self.attr_pos(n, "expected_votes");
        r.expected_votes = self.u32a(&mut a, "expected_votes", "votes", 1);
        if r.expected_votes == Some(0) {
            self.d.error(
                ev_pos,
                "expected_votes=\"0\": expected votes must be at least 1",
                "remove expected_votes (it defaults to the sum of the node votes) or set a positive number",
            );
        }
        r.port = self.u16a(&mut a, "port", 5405);
        r.cluster_id = self.u16a(&mut a, "cluster_id", 1);
        r.keyfile = a.take("keyfile");
        r.wait_for_all = self.boolean(&mut a, "wait_for_all");
        r.last_man_standing = self.boolean(&mut a, "last_man_standing");
        r.last_man_standing_window =
            self.u32a(&mut a, "last_man_standing_window", "milliseconds", 10000);
        const IGNORED: &[&str] = &[
            "quorum_dev_poll",
            "shutdown_timeout",
            "upgrading",
            "disallowed",
            "broadcast",
            "hash_cluster_id",
            "disable_openais",
            "debug_mask",
            "ccsd_poll",
            "nodename",
            "transport",
        ];
        for k in IGNORED {
            a.take(k);
        }
        self.warn_unknown_attrs(
            &a,
            &[
                "two_node",
                "expected_votes",
                "port",
                "cluster_id",
                "keyfile",
                "wait_for_all",
                "last_man_standing",
                "last_man_standing_window",
                "quorum_dev_poll",
                "shutdown_timeout",
                "transport",
            ],
        );
        for c in Self::elements(n) {
            if elem_name(&c) == "multicast" {
                let mut ma = Attrs::new(c);
                if let Some(addr) = self.required_name(&mut ma, "addr", "239.192.1.1") {
                    if addr.parse::<IpAddr>().is_err() {
                        let pos = self.attr_pos(c, "addr");
                        self.d.error(
                            pos,
                            format!("<multicast addr=\"{addr}\"> is not an IP address"),
                            "use a multicast address such as 239.192.1.1",
                        );
                    }
                    r.multicast = Some(addr);
                }
            } else {
                self.warn_unknown_element(c, "cman", &["multicast"]);
            }
        }
        r
    }

    fn quorum_ext(&mut self, n: Node<'a, 'i>) -> RawCman {
        let mut a = Attrs::new(n);
        let r = RawCman {
            wait_for_all: self.boolean(&mut a, "wait_for_all"),
            last_man_standing: self.boolean(&mut a, "last_man_standing"),
            last_man_standing_window: self.u32a(
                &mut a,
                "last_man_standing_window",
                "milliseconds",
                10000,
            ),
            ..Default::default()
        };
        self.warn_unknown_attrs(
            &a,
            &[
                "wait_for_all",
                "last_man_standing",
                "last_man_standing_window",
            ],
        );
        r
    }

    fn totem(&mut self, n: Node<'a, 'i>) -> RawTotem {
        let mut a = Attrs::new(n);
        let mut r = RawTotem {
            token: self.u32a(&mut a, "token", "milliseconds", 10000),
            join: self.u32a(&mut a, "join", "milliseconds", 60),
            consensus: self.u32a(&mut a, "consensus", "milliseconds", 2000),
            retransmits: self.u32a(&mut a, "token_retransmits_before_loss_const", "", 4),
            fail_recv_const: self.u32a(&mut a, "fail_recv_const", "", 2500),
            ..Default::default()
        };
        for (k, v) in [
            ("token", r.token),
            ("join", r.join),
            ("consensus", r.consensus),
        ] {
            if v == Some(0) {
                let pos = self.attr_pos(n, k);
                self.d.error(
                    pos,
                    format!("<totem> {k}=\"0\": a timeout of zero never lets the ring form"),
                    format!(
                        "remove {k} to use the default or give a positive number of milliseconds"
                    ),
                );
            }
        }
        if let Some(v) = a.take("rrp_mode") {
            r.rrp_mode = match v.as_str() {
                "none" => Some(RrpMode::None),
                "active" => Some(RrpMode::Active),
                "passive" => Some(RrpMode::Passive),
                _ => {
                    let pos = self.attr_pos(n, "rrp_mode");
                    self.d.error(
                        pos,
                        format!("rrp_mode=\"{v}\" is not none, active or passive"),
                        "write rrp_mode=\"passive\" (or active, or none)",
                    );
                    None
                }
            };
        }
        r.secauth = self.boolean(&mut a, "secauth");
        r.keyfile = a.take("keyfile");
        const IGNORED: &[&str] = &[
            "version",
            "nodeid",
            "vsftype",
            "hold",
            "merge",
            "downcheck",
            "window_size",
            "max_messages",
            "miss_count_const",
            "netmtu",
            "threads",
            "send_join",
            "seqno_unchanged_const",
            "heartbeat_failures_allowed",
            "max_network_delay",
            "rrp_problem_count_timeout",
            "rrp_problem_count_threshold",
            "rrp_token_expired_timeout",
            "token_retransmit",
            "clear_node_high_bit",
            "transport",
            "ip_version",
        ];
        for k in IGNORED {
            a.take(k);
        }
        self.warn_unknown_attrs(
            &a,
            &[
                "token",
                "join",
                "consensus",
                "token_retransmits_before_loss_const",
                "fail_recv_const",
                "rrp_mode",
                "secauth",
                "keyfile",
            ],
        );
        for c in Self::elements(n) {
            if elem_name(&c) == "interface" {
                let mut ia = Attrs::new(c);
                let ringnumber = self.u32a(&mut ia, "ringnumber", "", 0).unwrap_or(0);
                let iface = TotemInterface {
                    ringnumber,
                    bindnetaddr: ia.take("bindnetaddr"),
                    mcastaddr: ia.take("mcastaddr"),
                    mcastport: self.u16a(&mut ia, "mcastport", 5405),
                };
                ia.take("broadcast");
                ia.take("ttl");
                self.warn_unknown_attrs(
                    &ia,
                    &[
                        "ringnumber",
                        "bindnetaddr",
                        "mcastaddr",
                        "mcastport",
                        "broadcast",
                        "ttl",
                    ],
                );
                r.interfaces.push(iface);
            } else {
                self.warn_unknown_element(c, "totem", &["interface"]);
            }
        }
        r
    }

    fn quorumd(&mut self, n: Node<'a, 'i>, node_count: usize) -> Option<Quorumd> {
        let mut a = Attrs::new(n);
        let interval = self.u32a(&mut a, "interval", "seconds", 1);
        let tko = self.u32a(&mut a, "tko", "cycles", 10);
        let master_wait = self.u32a(&mut a, "master_wait", "cycles", 5);
        let upgrade_wait = self.u32a(&mut a, "upgrade_wait", "cycles", 2);
        let votes = self.u32a(&mut a, "votes", "votes", 1);
        let min_score = self.u32a(&mut a, "min_score", "", 1);
        let device = a.take("device");
        let label = a.take("label");
        let master_wins = self.boolean(&mut a, "master_wins");
        let reboot = self.boolean(&mut a, "reboot");
        const IGNORED: &[&str] = &[
            "tko_up",
            "allow_kill",
            "paranoid",
            "io_timeout",
            "stop_cman",
            "max_error_cycles",
            "scheduler",
            "priority",
            "status_file",
            "cman_label",
            "use_uptime",
            "log_level",
            "log_facility",
        ];
        for k in IGNORED {
            a.take(k);
        }
        self.warn_unknown_attrs(
            &a,
            &[
                "interval",
                "tko",
                "votes",
                "min_score",
                "device",
                "label",
                "master_wins",
                "reboot",
            ],
        );
        if device.is_none() && label.is_none() {
            let pos = self.pos(n);
            self.d.error(
                pos,
                "<quorumd> has neither device= nor label=",
                "add label=\"...\" (as written by mkqdisk -l) or device=\"/dev/...\"",
            );
        }
        let mut heuristics = Vec::new();
        for c in Self::elements(n) {
            if elem_name(&c) != "heuristic" {
                self.warn_unknown_element(c, "quorumd", &["heuristic"]);
                continue;
            }
            let mut ha = Attrs::new(c);
            let program = self.required_name(&mut ha, "program", "ping -c1 -w1 10.0.0.1");
            let h = Heuristic {
                program: program.unwrap_or_default(),
                score: Setting::or(self.u32a(&mut ha, "score", "", 1), 1), // qdisk: score 1
                interval: Setting::or(self.u32a(&mut ha, "interval", "seconds", 2), 2), // qdisk: every 2 s
                tko: Setting::or(self.u32a(&mut ha, "tko", "", 1), 1), // qdisk: one failure loses the score
                line: self.line(c),
            };
            self.warn_unknown_attrs(&ha, &["program", "score", "interval", "tko"]);
            heuristics.push(h);
        }
        if heuristics.len() > 10 {
            let pos = self.pos(n);
            self.d.warn(
                pos,
                format!("{} heuristics; qdiskd uses at most 10", heuristics.len()),
                "keep the 10 that matter most",
            );
        }
        let auto_master_wins = node_count == 2 && heuristics.is_empty();
        Some(Quorumd {
            interval: Setting::or(interval, 1), // qdisk: one read/write cycle per second
            tko: Setting::or(tko, 10),          // qdisk: 10 missed cycles = dead
            // qdisk: master_wait = floor(tko/2), upgrade_wait = 2 cycles.
            master_wait: Setting::or(master_wait, tko.unwrap_or(10) / 2),
            upgrade_wait: Setting::or(upgrade_wait, 2),
            votes: Setting::or(votes, (node_count as u32).saturating_sub(1).max(1)), // qdisk: nodes - 1
            min_score: Setting::or(min_score, 0), // qdisk: 0 = derived from the heuristics
            device,
            label,
            // qdisk: automatic in two-node clusters without heuristics.
            master_wins: Setting::or(master_wins, auto_master_wins),
            reboot: Setting::or(reboot, true), // qdisk: reboot when the score drops
            heuristics,
        })
    }

    fn fence_daemon(&mut self, n: Option<Node<'a, 'i>>) -> FenceDaemon {
        let (mut pjd, mut pfd, mut cs, mut su, mut ot, mut op) =
            (None, None, None, None, None, None);
        if let Some(n) = n {
            let mut a = Attrs::new(n);
            pjd = self.secs(&mut a, "post_join_delay", -1, 6);
            pfd = self.secs(&mut a, "post_fail_delay", 0, 0);
            cs = self.boolean(&mut a, "clean_start");
            su = self.boolean(&mut a, "skip_undefined");
            ot = self.secs(&mut a, "override_time", 0, 3);
            op = a.take("override_path");
            self.warn_unknown_attrs(
                &a,
                &[
                    "post_join_delay",
                    "post_fail_delay",
                    "clean_start",
                    "skip_undefined",
                    "override_time",
                    "override_path",
                ],
            );
            for c in Self::elements(n) {
                self.warn_unknown_element(c, "fence_daemon", &[]);
            }
        }
        FenceDaemon {
            post_join_delay: Setting::or(pjd, 6), // fenced: 6 s for peers to join before startup fencing
            post_fail_delay: Setting::or(pfd, 0), // fenced: fence a failed node at once
            clean_start: Setting::or(cs, false),  // fenced: do startup fencing (safe)
            skip_undefined: Setting::or(su, false), // fenced: also fence nodes without methods
            override_time: Setting::or(ot, 3),    // fenced: 3 s for fence_ack_manual between rounds
            override_path: Setting::or(op, "/var/run/cluster/fenced_override".to_string()), // fenced's FIFO
        }
    }

    fn clusternodes(&mut self, n: Node<'a, 'i>) -> Vec<ClusterNode> {
        let mut nodes: Vec<ClusterNode> = Vec::new();
        let mut names: BTreeMap<String, u32> = BTreeMap::new();
        let mut ids: BTreeMap<u32, u32> = BTreeMap::new();
        for c in Self::elements(n) {
            if elem_name(&c) != "clusternode" {
                self.warn_unknown_element(c, "clusternodes", &["clusternode"]);
                continue;
            }
            if let Some(node) = self.clusternode(c) {
                let pos = self.attr_pos(c, "name");
                if let Some(first) = names.get(&node.name) {
                    self.d.error(
                        pos,
                        format!(
                            "duplicate node name \"{}\" (first defined at line {first})",
                            node.name
                        ),
                        "every <clusternode> needs its own name; rename or remove one",
                    );
                    continue;
                }
                let pos = self.attr_pos(c, "nodeid");
                if let Some(first) = ids.get(&node.nodeid) {
                    self.d.error(
                        pos,
                        format!(
                            "duplicate nodeid=\"{}\" (already used at line {first})",
                            node.nodeid
                        ),
                        "give every node a different nodeid (1, 2, 3, ...)",
                    );
                    continue;
                }
                names.insert(node.name.clone(), node.line);
                ids.insert(node.nodeid, node.line);
                nodes.push(node);
            }
        }
        if !Self::elements(n).any(|c| elem_name(&c) == "clusternode") {
            let pos = self.pos(n);
            self.d.error(
                pos,
                "incomplete configuration: <clusternodes> has no <clusternode>; a cluster needs at least one node",
                "add one <clusternode name=\"...\" nodeid=\"N\"/> per node",
            );
        }
        nodes
    }

    fn clusternode(&mut self, c: Node<'a, 'i>) -> Option<ClusterNode> {
        let mut a = Attrs::new(c);
        let name = self.required_name(&mut a, "name", "an-node01.alteeve.com");
        let idpos = self.attr_pos(c, "nodeid");
        let nodeid = match a.take("nodeid") {
            None => {
                self.d.error(
                    idpos,
                    format!(
                        "<clusternode name=\"{}\"> has no nodeid=",
                        name.as_deref().unwrap_or("?")
                    ),
                    "add nodeid=\"N\" with a positive integer unique among the nodes",
                );
                None
            }
            Some(v) => match v.trim().parse::<u32>() {
                Ok(0) | Err(_) => {
                    self.d.error(
                        idpos,
                        format!("nodeid=\"{v}\" is not a positive integer"),
                        "use a positive whole number unique among the nodes, e.g. nodeid=\"1\"",
                    );
                    None
                }
                Ok(x) => Some(x),
            },
        };
        let votes = self.u32a(&mut a, "votes", "votes", 1);
        let weight = self.u32a(&mut a, "weight", "", 1);
        self.warn_unknown_attrs(&a, &["name", "nodeid", "votes", "weight"]);
        let mut altnames = Vec::new();
        let mut fence = Vec::new();
        let mut unfence = Vec::new();
        let mut fence_seen = false;
        for e in Self::elements(c) {
            match elem_name(&e) {
                "altname" => {
                    let mut aa = Attrs::new(e);
                    if let Some(an) = self.required_name(&mut aa, "name", "an-node01-sn") {
                        let port = self.u16a(&mut aa, "port", 5405);
                        altnames.push(AltName {
                            name: an,
                            port,
                            mcast: aa.take("mcast"),
                        });
                    }
                    self.warn_unknown_attrs(&aa, &["name", "port", "mcast"]);
                }
                "fence" => {
                    if fence_seen {
                        let pos = self.pos(e);
                        self.d.error(
                            pos,
                            "second <fence> in one <clusternode>",
                            "put all <method>s inside a single <fence>",
                        );
                        continue;
                    }
                    fence_seen = true;
                    let mut mnames = BTreeSet::new();
                    for m in Self::elements(e) {
                        if elem_name(&m) != "method" {
                            self.warn_unknown_element(m, "fence", &["method"]);
                            continue;
                        }
                        let mut ma = Attrs::new(m);
                        let mname = self.required_name(&mut ma, "name", "1");
                        self.warn_unknown_attrs(&ma, &["name"]);
                        let Some(mname) = mname else { continue };
                        if !mnames.insert(mname.clone()) {
                            let pos = self.attr_pos(m, "name");
                            self.d.error(
                                pos,
                                format!("two fence methods named \"{mname}\" in one node"),
                                "give each <method> of a node its own name",
                            );
                        }
                        let devices = self.device_refs(m, "method");
                        if devices.is_empty() {
                            let pos = self.pos(m);
                            self.d.warn(
                                pos,
                                format!("fence method \"{mname}\" has no <device>; it can never succeed"),
                                "add <device name=\"...\"/> lines to it or remove it",
                            );
                        }
                        fence.push(FenceMethod {
                            name: mname,
                            devices,
                            line: self.line(m),
                        });
                    }
                }
                "unfence" => unfence.extend(self.device_refs(e, "unfence")),
                _ => self.warn_unknown_element(e, "clusternode", &["altname", "fence", "unfence"]),
            }
        }
        if fence.is_empty() {
            if let Some(name) = &name {
                let pos = self.pos(c);
                self.d.warn(
                    pos,
                    format!("node \"{name}\" has no fence method; if it fails, its services cannot be recovered safely"),
                    "add <fence><method name=\"1\"><device name=\"...\" port=\"...\"/></method></fence> to this node",
                );
            }
        }
        Some(ClusterNode {
            name: name?,
            nodeid: nodeid?,
            votes: Setting::or(votes, 1), // cman: one vote per node
            weight,
            altnames,
            fence,
            unfence,
            line: self.line(c),
        })
    }

    fn device_refs(&mut self, parent: Node<'a, 'i>, pname: &str) -> Vec<FenceDeviceRef> {
        let mut out = Vec::new();
        for dv in Self::elements(parent) {
            if elem_name(&dv) != "device" {
                self.warn_unknown_element(dv, pname, &["device"]);
                continue;
            }
            let mut da = Attrs::new(dv);
            let Some(dname) = self.required_name(&mut da, "name", "ipmi_n01") else {
                continue;
            };
            let pos = self.attr_pos(dv, "name");
            self.pending.device_refs.push((dname.clone(), pos));
            out.push(FenceDeviceRef {
                name: dname,
                attrs: da.left,
                line: self.line(dv),
            });
        }
        out
    }

    fn fencedevices(&mut self, n: Node<'a, 'i>) -> Vec<FenceDevice> {
        let mut out: Vec<FenceDevice> = Vec::new();
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for c in Self::elements(n) {
            if elem_name(&c) != "fencedevice" {
                self.warn_unknown_element(c, "fencedevices", &["fencedevice"]);
                continue;
            }
            let mut a = Attrs::new(c);
            let name = self.required_name(&mut a, "name", "ipmi_n01");
            let agent = self.required_name(&mut a, "agent", "fence_ipmilan");
            let (Some(name), Some(agent)) = (name, agent) else {
                continue;
            };
            let line = self.line(c);
            if let Some(first) = seen.get(&name) {
                let pos = self.attr_pos(c, "name");
                self.d.error(
                    pos,
                    format!("duplicate fence device name \"{name}\" (first defined at line {first})"),
                    "fence device names must be unique; rename one and update the <device name=...> that uses it",
                );
                continue;
            }
            seen.insert(name.clone(), line);
            out.push(FenceDevice {
                name,
                agent,
                attrs: a.left,
                line,
            });
        }
        out
    }

    fn rm(&mut self, n: Option<Node<'a, 'i>>) -> Rm {
        let mut rm = Rm {
            status_poll_interval: Setting::defaulted(10), // rgmanager: status checks every 10 s
            status_child_max: Setting::defaulted(5),      // rgmanager: 5 parallel status checks
            transition_throttling: Setting::defaulted(5), // rgmanager: 5 s between transitions
            central_processing: Setting::defaulted(false), // rgmanager: no event scripts
            failover_domains: Vec::new(),
            resources: Vec::new(),
            services: Vec::new(),
            vms: Vec::new(),
        };
        let Some(n) = n else { return rm };
        let mut a = Attrs::new(n);
        if let Some(v) = self.u32a(&mut a, "status_poll_interval", "seconds", 10) {
            rm.status_poll_interval = Setting::explicit(v);
        }
        if let Some(v) = self.u32a(&mut a, "status_child_max", "", 5) {
            rm.status_child_max = Setting::explicit(v);
        }
        if let Some(v) = self.u32a(&mut a, "transition_throttling", "seconds", 5) {
            rm.transition_throttling = Setting::explicit(v);
        }
        if let Some(v) = self.boolean(&mut a, "central_processing") {
            rm.central_processing = Setting::explicit(v);
        }
        a.take("log_level");
        a.take("log_facility");
        self.warn_unknown_attrs(
            &a,
            &[
                "status_poll_interval",
                "status_child_max",
                "transition_throttling",
                "central_processing",
                "log_level",
                "log_facility",
            ],
        );
        // Pass 1: definitions (they may come after the services that use them).
        let mut seen_sections = BTreeMap::new();
        for c in Self::elements(n) {
            match elem_name(&c) {
                "failoverdomains" if self.single(&mut seen_sections, c) => {
                    rm.failover_domains = self.domains(c);
                }
                "resources" if self.single(&mut seen_sections, c) => {
                    rm.resources = self.global_resources(c);
                }
                _ => {}
            }
        }
        // Pass 2: services and vms.
        let mut svc_seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut vm_seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut depends: Vec<(String, Pos)> = Vec::new();
        for c in Self::elements(n) {
            match elem_name(&c) {
                "failoverdomains" | "resources" | "events" | "resource-defaults" => {}
                "service" => {
                    if let Some(s) = self.service(c, &rm) {
                        if let Some(first) = svc_seen.get(&s.name) {
                            let pos = self.attr_pos(c, "name");
                            self.d.error(
                                pos,
                                format!(
                                    "two <service>s named \"{}\" (first at line {first})",
                                    s.name
                                ),
                                "service names must be unique; rename one",
                            );
                            continue;
                        }
                        if let Some(dep) = &s.depend {
                            depends.push((dep.clone(), self.attr_pos(c, "depend")));
                        }
                        svc_seen.insert(s.name.clone(), s.line);
                        rm.services.push(s);
                    }
                }
                "vm" => {
                    if let Some(v) = self.vm(c, &rm) {
                        if let Some(first) = vm_seen.get(&v.name) {
                            let pos = self.attr_pos(c, "name");
                            self.d.error(
                                pos,
                                format!("two <vm>s named \"{}\" (first at line {first})", v.name),
                                "vm names must be unique; rename one",
                            );
                            continue;
                        }
                        if let Some(dep) = &v.depend {
                            depends.push((dep.clone(), self.attr_pos(c, "depend")));
                        }
                        vm_seen.insert(v.name.clone(), v.line);
                        rm.vms.push(v);
                    }
                }
                _ => self.warn_unknown_element(
                    c,
                    "rm",
                    &["failoverdomains", "resources", "service", "vm", "events"],
                ),
            }
        }
        for (dep, pos) in depends {
            let (kind, name) = match dep.split_once(':') {
                Some((k, n)) => (k, n),
                None => ("service", dep.as_str()),
            };
            let ok = match kind {
                "service" => svc_seen.contains_key(name),
                "vm" => vm_seen.contains_key(name),
                _ => false,
            };
            if !ok {
                self.d.error(
                    pos,
                    format!("depend=\"{dep}\" names no <{kind}>"),
                    format!(
                        "write depend=\"service:NAME\" with a defined service ({})",
                        svc_seen.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        rm
    }

    fn domains(&mut self, n: Node<'a, 'i>) -> Vec<FailoverDomain> {
        let mut out: Vec<FailoverDomain> = Vec::new();
        for c in Self::elements(n) {
            if elem_name(&c) != "failoverdomain" {
                self.warn_unknown_element(c, "failoverdomains", &["failoverdomain"]);
                continue;
            }
            let mut a = Attrs::new(c);
            let name = self.required_name(&mut a, "name", "only_n01");
            let ordered = self.boolean(&mut a, "ordered");
            let restricted = self.boolean(&mut a, "restricted");
            let nofailback = self.boolean(&mut a, "nofailback");
            self.warn_unknown_attrs(&a, &["name", "ordered", "restricted", "nofailback"]);
            let mut nodes = Vec::new();
            let mut member_names = BTreeSet::new();
            for m in Self::elements(c) {
                if elem_name(&m) != "failoverdomainnode" {
                    self.warn_unknown_element(m, "failoverdomain", &["failoverdomainnode"]);
                    continue;
                }
                let mut ma = Attrs::new(m);
                let mname = self.required_name(&mut ma, "name", "an-node01.alteeve.com");
                let ppos = self.attr_pos(m, "priority");
                let prio = self.u32a(&mut ma, "priority", "1 = most preferred", 1);
                if let Some(p) = prio {
                    if !(1..=100).contains(&p) {
                        self.d.error(
                            ppos,
                            format!("priority=\"{p}\" is outside 1..100"),
                            "use 1 for the most preferred node, larger numbers for less preferred ones (up to 100)",
                        );
                    }
                }
                self.warn_unknown_attrs(&ma, &["name", "priority"]);
                let Some(mname) = mname else { continue };
                let pos = self.attr_pos(m, "name");
                if !member_names.insert(mname.clone()) {
                    self.d.error(
                        pos,
                        format!("node \"{mname}\" is listed twice in one failover domain"),
                        "remove the second <failoverdomainnode>",
                    );
                    continue;
                }
                self.pending.domain_nodes.push((mname.clone(), pos));
                nodes.push(DomainNode {
                    name: mname,
                    priority: Setting::or(prio, 1), // rgmanager: unprioritised members rank first
                });
            }
            let Some(name) = name else { continue };
            if let Some(first) = out.iter().find(|d| d.name == name) {
                let pos = self.attr_pos(c, "name");
                self.d.error(
                    pos,
                    format!(
                        "two failover domains named \"{name}\" (first at line {})",
                        first.line
                    ),
                    "failover domain names must be unique; rename one",
                );
                continue;
            }
            out.push(FailoverDomain {
                name,
                ordered: Setting::or(ordered, false), // rgmanager: any member is as good as another
                restricted: Setting::or(restricted, false), // rgmanager: may run outside the domain
                nofailback: Setting::or(nofailback, false), // rgmanager: fail back to a preferred member
                nodes,
                line: self.line(c),
            });
        }
        out
    }

    fn global_resources(&mut self, n: Node<'a, 'i>) -> Vec<Resource> {
        let mut out: Vec<Resource> = Vec::new();
        let mut keys: BTreeMap<(String, String), u32> = BTreeMap::new();
        for c in Self::elements(n) {
            let Some(r) = self.resource(c, 0, None) else {
                continue;
            };
            if let Some(k) = r.key() {
                let key = (r.kind.clone(), k.to_string());
                if let Some(first) = keys.get(&key) {
                    let pos = self.attr_pos(c, key_attr(&r.kind));
                    self.d.error(
                        pos,
                        format!(
                            "two <{}> resources with {}=\"{}\" (first at line {first})",
                            r.kind,
                            key_attr(&r.kind),
                            k
                        ),
                        format!(
                            "names must be unique per resource type; rename one of the <{}>s",
                            r.kind
                        ),
                    );
                    continue;
                }
                keys.insert(key, r.line);
            }
            out.push(r);
        }
        out
    }

    /// Parses a resource element; `defs` are the `<resources>` definitions when inside a service.
    fn resource(
        &mut self,
        c: Node<'a, 'i>,
        depth: usize,
        defs: Option<&[Resource]>,
    ) -> Option<Resource> {
        let kind = elem_name(&c).to_string();
        let pos = self.pos(c);
        if depth > MAX_RESOURCE_DEPTH {
            self.d.error(
                pos,
                format!("resource tree deeper than {MAX_RESOURCE_DEPTH} levels"),
                "flatten the service: nest a resource only when it must start after its parent",
            );
            return None;
        }
        if kind == "service" {
            self.d.error(
                pos,
                "a <service> cannot be nested inside another service or <resources>",
                "move it to <rm> and use depend=\"service:NAME\" to order the two",
            );
            return None;
        }
        if !KNOWN_TYPES.contains(&kind.as_str()) {
            self.d.warn(
                pos,
                format!("unknown resource type <{kind}>; it is kept, but quorate has no agent for it yet"),
                match suggest(&kind, KNOWN_TYPES) {
                    Some(m) => format!("did you mean <{m}>? (an agent resource is an element named after its agent)"),
                    None => format!("check the spelling; known types: {}", KNOWN_TYPES.join(", ")),
                },
            );
        }
        let mut attrs: BTreeMap<String, String> = c
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect();
        let reference = attrs.remove("ref");
        let line = self.line(c);
        match (&reference, defs) {
            (Some(r), Some(defs)) => {
                match defs
                    .iter()
                    .find(|d| d.kind == kind && d.key() == Some(r.as_str()))
                {
                    Some(def) => {
                        let mut merged = def.attrs.clone();
                        merged.extend(attrs);
                        attrs = merged;
                    }
                    None => {
                        let rpos = self.attr_pos(c, "ref");
                        let same: Vec<&str> = defs
                            .iter()
                            .filter(|d| d.kind == kind)
                            .filter_map(|d| d.key())
                            .collect();
                        self.d.error(
                            rpos,
                            format!("<{kind} ref=\"{r}\"> names no <{kind}> in <rm><resources>"),
                            if same.is_empty() {
                                format!("define <{kind} {}=\"{r}\" .../> inside <rm><resources>, or fix the name", key_attr(&kind))
                            } else {
                                format!("use one of the defined <{kind}>s: {}", same.join(", "))
                            },
                        );
                        return None;
                    }
                }
            }
            (Some(_), None) => {
                let rpos = self.attr_pos(c, "ref");
                self.d.warn(
                    rpos,
                    format!("ref= on a <{kind}> inside <resources> has no effect"),
                    "definitions in <resources> are named with name= (address= for ip); use ref= inside a <service>",
                );
            }
            (None, _) => {}
        }
        self.check_resource_attrs(c, &kind, &attrs);
        if defs.is_some() && reference.is_none() {
            // Inline resources must not be defined twice across services.
            if let Some(k) = attrs.get(key_attr(&kind)) {
                let key = (kind.clone(), k.clone());
                if let Some(first) = self.pending.inline_keys.get(&key) {
                    self.d.error(
                        pos,
                        format!(
                            "<{kind} {}=\"{k}\"> is defined inline twice (first at line {first})",
                            key_attr(&kind)
                        ),
                        "define it once in <rm><resources> and use ref= where it is needed",
                    );
                } else {
                    self.pending.inline_keys.insert(key, line);
                }
            }
        }
        let mut children = Vec::new();
        let mut actions = Vec::new();
        for e in Self::elements(c) {
            if elem_name(&e) == "action" {
                actions.push(
                    e.attributes()
                        .map(|a| (a.name().to_string(), a.value().to_string()))
                        .collect(),
                );
                continue;
            }
            if let Some(r) = self.resource(e, depth + 1, defs) {
                children.push(r);
            }
        }
        Some(Resource {
            kind,
            reference,
            attrs,
            children,
            actions,
            line,
        })
    }

    fn check_resource_attrs(&mut self, c: Node, kind: &str, attrs: &BTreeMap<String, String>) {
        let required: &[&str] = match kind {
            "ip" => &["address"],
            "fs" | "clusterfs" => &["name", "device", "mountpoint"],
            "netfs" => &["name", "host", "export", "mountpoint"],
            "script" => &["name", "file"],
            "lvm" => &["name", "vg_name"],
            k if KNOWN_TYPES.contains(&k) => &["name"],
            _ => &[],
        };
        for r in required {
            let present = matches!(attrs.get(*r), Some(v) if !v.trim().is_empty());
            if !present {
                let pos = self.pos(c);
                self.d.error(
                    pos,
                    format!("<{kind}> resource has no {r}="),
                    format!("add {r}=\"...\" (or ref= to a definition in <rm><resources>)"),
                );
            }
        }
        if kind == "ip" {
            if let Some(addr) = attrs.get("address") {
                if !valid_ip_with_prefix(addr) {
                    let pos = self.attr_pos(c, "address");
                    self.d.error(
                        pos,
                        format!("<ip address=\"{addr}\"> is not an IP address (optionally with /prefix)"),
                        "write the address as 10.0.0.5 or 10.0.0.5/24",
                    );
                }
            }
        }
        for flag in [
            "monitor_link",
            "force_unmount",
            "self_fence",
            "force_fsck",
            "__independent_subtree",
        ] {
            if let Some(v) = attrs.get(flag) {
                if parse_bool(v).is_none() && !(flag == "__independent_subtree" && v == "2") {
                    let pos = self.attr_pos(c, flag);
                    self.d.error(
                        pos,
                        format!("<{kind}> {flag}=\"{v}\" is not a boolean"),
                        format!("write {flag}=\"1\" or {flag}=\"0\""),
                    );
                }
            }
        }
        for num in [
            "__max_failures",
            "__failure_expire_time",
            "__max_restarts",
            "__restart_expire_time",
            "sleeptime",
        ] {
            if let Some(v) = attrs.get(num) {
                if v.trim().parse::<u32>().is_err() {
                    let pos = self.attr_pos(c, num);
                    self.d.error(
                        pos,
                        format!("<{kind}> {num}=\"{v}\" must be a non-negative whole number"),
                        format!("write e.g. {num}=\"0\""),
                    );
                }
            }
        }
    }

    /// Common attributes of services and vms.
    fn group_common(&mut self, a: &mut Attrs, rm: &Rm) -> GroupCommon {
        let domain = a.take("domain").filter(|d| !d.is_empty());
        if let Some(d) = &domain {
            if rm.domain(d).is_none() {
                let pos = self.attr_pos(a.node, "domain");
                let known: Vec<&str> = rm
                    .failover_domains
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect();
                self.d.error(
                    pos,
                    format!("domain=\"{d}\" names no <failoverdomain>"),
                    if known.is_empty() {
                        format!("define <failoverdomain name=\"{d}\"> in <rm><failoverdomains>, or remove domain=")
                    } else {
                        format!("use a defined failover domain ({})", known.join(", "))
                    },
                );
            }
        }
        let autostart = self.boolean(a, "autostart");
        let exclusive = self.boolean(a, "exclusive");
        let recovery = match a.take("recovery") {
            None => None,
            Some(v) => match Recovery::parse(v.trim()) {
                Some(r) => Some(r),
                None => {
                    let pos = self.attr_pos(a.node, "recovery");
                    self.d.error(
                        pos,
                        format!("recovery=\"{v}\" is not a recovery policy"),
                        "write recovery=\"restart\", \"relocate\", \"disable\" or \"restart-disable\"",
                    );
                    None
                }
            },
        };
        let max_restarts = self.u32a(a, "max_restarts", "restarts", 0);
        let ret = self.u32a(a, "restart_expire_time", "seconds", 0);
        GroupCommon {
            domain,
            autostart,
            exclusive,
            recovery,
            max_restarts,
            restart_expire_time: ret,
            depend: a.take("depend"),
        }
    }

    fn service(&mut self, c: Node<'a, 'i>, rm: &Rm) -> Option<Service> {
        let mut a = Attrs::new(c);
        let name = self.required_name(&mut a, "name", "www");
        let g = self.group_common(&mut a, rm);
        const KNOWN: &[&str] = &[
            "name",
            "domain",
            "autostart",
            "exclusive",
            "recovery",
            "depend",
            "depend_mode",
            "max_restarts",
            "restart_expire_time",
            "priority",
            "nfslock",
            "nfs_client_cache",
            "__independent_subtree",
            "__enforce_timeouts",
            "__max_failures",
            "__failure_expire_time",
            "__max_restarts",
            "__restart_expire_time",
        ];
        self.warn_unknown_except(&a, KNOWN, &KNOWN[..10]);
        let mut resources = Vec::new();
        for e in Self::elements(c) {
            if elem_name(&e) == "action" {
                continue;
            }
            if let Some(r) = self.resource(e, 1, Some(&rm.resources)) {
                resources.push(r);
            }
        }
        Some(Service {
            name: name?,
            domain: g.domain,
            autostart: Setting::or(g.autostart, true), // rgmanager: start services when quorate
            exclusive: Setting::or(g.exclusive, false), // rgmanager: may share a node
            recovery: Setting::or(g.recovery, Recovery::Restart), // rgmanager: restart in place first
            max_restarts: Setting::or(g.max_restarts, 0),         // rgmanager: no restart limit
            restart_expire_time: Setting::or(g.restart_expire_time, 0), // rgmanager: restarts never expire
            depend: g.depend,
            resources,
            attrs: a.left,
            line: self.line(c),
        })
    }

    fn vm(&mut self, c: Node<'a, 'i>, rm: &Rm) -> Option<Vm> {
        let mut a = Attrs::new(c);
        let name = self.required_name(&mut a, "name", "vm01");
        let g = self.group_common(&mut a, rm);
        let migrate = match a.take("migrate") {
            None => None,
            Some(v) => match v.trim() {
                "live" => Some(Migrate::Live),
                "pause" => Some(Migrate::Pause),
                _ => {
                    let pos = self.attr_pos(c, "migrate");
                    self.d.error(
                        pos,
                        format!("migrate=\"{v}\" is not live or pause"),
                        "write migrate=\"live\" (or \"pause\")",
                    );
                    None
                }
            },
        };
        const KNOWN: &[&str] = &[
            "name",
            "domain",
            "autostart",
            "exclusive",
            "recovery",
            "migrate",
            "path",
            "use_virsh",
            "xmlfile",
            "snapshot",
            "migration_mapping",
            "depend",
            "depend_mode",
            "max_restarts",
            "restart_expire_time",
            "status_program",
            "hypervisor",
            "hypervisor_uri",
            "migration_uri",
            "priority",
            "tunnelled",
            "__independent_subtree",
            "__enforce_timeouts",
            "__max_failures",
            "__failure_expire_time",
            "replica",
        ];
        self.warn_unknown_except(&a, KNOWN, &KNOWN[..9]);
        for e in Self::elements(c) {
            if elem_name(&e) != "action" {
                self.warn_unknown_element(e, "vm", &["action"]);
            }
        }
        Some(Vm {
            name: name?,
            domain: g.domain,
            autostart: Setting::or(g.autostart, true), // rgmanager: start when quorate
            exclusive: Setting::or(g.exclusive, false), // rgmanager: may share a node
            recovery: Setting::or(g.recovery, Recovery::Restart), // rgmanager: restart in place first
            migrate: Setting::or(migrate, Migrate::Live),         // vm.sh: live migration
            max_restarts: Setting::or(g.max_restarts, 0),         // rgmanager: no restart limit
            restart_expire_time: Setting::or(g.restart_expire_time, 0), // rgmanager: never expire
            depend: g.depend,
            attrs: a.left,
            line: self.line(c),
        })
    }

    fn logging(&mut self, n: Option<Node<'a, 'i>>) -> Logging {
        let (mut ts, mut tl, mut sf, mut sp, mut lp, mut lf, mut dbg) =
            (None, None, None, None, None, None, None);
        let mut daemons = Vec::new();
        if let Some(n) = n {
            let mut a = Attrs::new(n);
            ts = self.boolean(&mut a, "to_syslog");
            tl = self.boolean(&mut a, "to_logfile");
            sf = a.take("syslog_facility");
            sp = a.take("syslog_priority");
            lp = a.take("logfile_priority");
            lf = a.take("logfile");
            dbg = self.boolean(&mut a, "debug");
            a.take("timestamp");
            self.warn_unknown_attrs(
                &a,
                &[
                    "to_syslog",
                    "to_logfile",
                    "syslog_facility",
                    "syslog_priority",
                    "logfile_priority",
                    "logfile",
                    "debug",
                ],
            );
            for c in Self::elements(n) {
                if elem_name(&c) == "logging_daemon" {
                    daemons.push(
                        c.attributes()
                            .map(|a| (a.name().to_string(), a.value().to_string()))
                            .collect(),
                    );
                } else {
                    self.warn_unknown_element(c, "logging", &["logging_daemon"]);
                }
            }
        }
        Logging {
            to_syslog: Setting::or(ts, true),  // RHCS: log to syslog
            to_logfile: Setting::or(tl, true), // RHCS: and to /var/log/cluster
            syslog_facility: Setting::or(sf, "local4".to_string()), // RHCS build default LOG_LOCAL4
            syslog_priority: Setting::or(sp, "info".to_string()), // RHCS build default LOG_INFO
            logfile_priority: Setting::or(lp, "info".to_string()), // RHCS: same as syslog
            logfile: Setting::or(lf, "/var/log/cluster/quorate.log".to_string()), // RHCS LOGDIR, one file for our one daemon
            debug: Setting::or(dbg, false),                                       // RHCS: debug off
            daemons,
        }
    }

    fn dlm(&mut self, n: Option<Node<'a, 'i>>) -> Dlm {
        let (mut ef, mut eq, mut ep, mut prl, mut po) = (None, None, None, None, None);
        let mut attrs = BTreeMap::new();
        if let Some(n) = n {
            let mut a = Attrs::new(n);
            ef = self.boolean(&mut a, "enable_fencing");
            eq = self.boolean(&mut a, "enable_quorum");
            ep = self.boolean(&mut a, "enable_plock");
            prl = self.u32a(&mut a, "plock_rate_limit", "operations per second", 0);
            po = self.boolean(&mut a, "plock_ownership");
            attrs = a.left;
        }
        Dlm {
            enable_fencing: Setting::or(ef, true), // dlm_controld: recovery waits for fencing
            enable_quorum: Setting::or(eq, true),  // dlm_controld: recovery waits for quorum
            enable_plock: Setting::or(ep, true),   // dlm_controld: cluster-wide POSIX locks
            plock_rate_limit: Setting::or(prl, 0), // dlm_controld (cluster 3): unlimited
            plock_ownership: Setting::or(po, false), // dlm_controld (cluster 3): off
            attrs,
        }
    }
}

struct GroupCommon {
    domain: Option<String>,
    autostart: Option<bool>,
    exclusive: Option<bool>,
    recovery: Option<Recovery>,
    max_restarts: Option<u32>,
    restart_expire_time: Option<u32>,
    depend: Option<String>,
}

#[derive(Default)]
struct RawCman {
    two_node: Option<bool>,
    expected_votes: Option<u32>,
    port: Option<u16>,
    cluster_id: Option<u16>,
    keyfile: Option<String>,
    multicast: Option<String>,
    wait_for_all: Option<bool>,
    last_man_standing: Option<bool>,
    last_man_standing_window: Option<u32>,
}

#[derive(Default)]
struct RawTotem {
    token: Option<u32>,
    join: Option<u32>,
    consensus: Option<u32>,
    retransmits: Option<u32>,
    fail_recv_const: Option<u32>,
    rrp_mode: Option<RrpMode>,
    secauth: Option<bool>,
    keyfile: Option<String>,
    interfaces: Vec<TotemInterface>,
}

fn valid_ip_with_prefix(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(ip) = addr.trim().parse::<IpAddr>() else {
        return false;
    };
    match prefix {
        None => true,
        Some(p) => match p.parse::<u8>() {
            Ok(n) => n <= if ip.is_ipv4() { 32 } else { 128 },
            Err(_) => false,
        },
    }
}
