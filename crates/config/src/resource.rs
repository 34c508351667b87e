//! Resources in a service tree: typed views, reference keys and rgmanager's start order.
//!
//! A resource is a generic node `{type, attrs, children}`: the element name is the
//! agent. quorate follows rgmanager and has no `<ocf>` element: an agent resource is
//! written as an element named after the agent (`<apache .../>`, `<drbd .../>`);
//! unknown element names inside a service are kept (attributes untouched) with a
//! warning, so a later agent layer can run them.

use crate::model::Resource;

/// The resource types rgmanager knows (from its schema); others get a warning.
pub const KNOWN_TYPES: &[&str] = &[
    "lvm",
    "fs",
    "clusterfs",
    "netfs",
    "nfsexport",
    "nfsclient",
    "nfsserver",
    "ip",
    "smb",
    "samba",
    "script",
    "drbd",
    "apache",
    "mysql",
    "postgres-8",
    "tomcat-5",
    "tomcat-6",
    "openldap",
    "named",
    "oracledb",
    "orainstance",
    "oralistener",
    "SAPInstance",
    "SAPDatabase",
    "ASEHAagent",
    "vm",
    "replica",
];

/// rgmanager's implicit start level of a child by type (service.sh `<special>`);
/// `None` for types without one, which start after all typed siblings.
pub fn start_level(kind: &str) -> Option<u8> {
    Some(match kind {
        // quorate's replicated volume (DRBD's role): promoted before anything that uses the disk.
        "replica" => 0,
        "lvm" => 1,
        "fs" => 2,
        "clusterfs" => 3,
        "netfs" => 4,
        "nfsexport" => 5,
        "nfsclient" => 6,
        "ip" => 7,
        "smb" => 8,
        "script" => 9,
        _ => return None,
    })
}

/// The attribute that names a resource of `kind` for `ref=` (rgmanager's "primary" attribute).
pub fn key_attr(kind: &str) -> &'static str {
    match kind {
        "ip" => "address",
        _ => "name",
    }
}

/// Siblings in start order: by [`start_level`], untyped ones after, document order within a level.
pub fn ordered(children: &[Resource]) -> Vec<&Resource> {
    let mut v: Vec<&Resource> = children.iter().collect();
    // Stable sort keeps document order inside one level.
    v.sort_by_key(|r| start_level(&r.kind).unwrap_or(u8::MAX));
    v
}

/// Typed view of an `<ip>` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpResource<'a> {
    /// Address with optional `/prefix`.
    pub address: &'a str,
    /// Monitor the link state.
    pub monitor_link: bool,
}

/// Typed view of an `<fs>`, `<clusterfs>` or `<netfs>` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsResource<'a> {
    /// Name.
    pub name: &'a str,
    /// Block device (or host:/export for netfs).
    pub device: Option<&'a str>,
    /// Mount point.
    pub mountpoint: Option<&'a str>,
    /// Filesystem type.
    pub fstype: Option<&'a str>,
    /// Kill users on unmount.
    pub force_unmount: bool,
}

/// Typed view of a `<script>` resource (an LSB init script).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptResource<'a> {
    /// Name.
    pub name: &'a str,
    /// Script path.
    pub file: &'a str,
}

/// Typed view of a `<vm>` inside a service tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmResource<'a> {
    /// Domain name.
    pub name: &'a str,
    /// Directory of the domain definition.
    pub path: Option<&'a str>,
}

fn flag(v: Option<&String>, default: bool) -> bool {
    match v.map(|s| s.as_str()) {
        Some("1") | Some("yes") | Some("true") | Some("on") => true,
        Some("0") | Some("no") | Some("false") | Some("off") => false,
        _ => default,
    }
}

impl Resource {
    /// The value that names it for `ref=` (address for ip, name otherwise).
    pub fn key(&self) -> Option<&str> {
        self.attrs.get(key_attr(&self.kind)).map(String::as_str)
    }
    /// An attribute.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
    /// Start level ([`start_level`]).
    pub fn start_level(&self) -> Option<u8> {
        start_level(&self.kind)
    }
    /// `<ip>` view.
    pub fn as_ip(&self) -> Option<IpResource<'_>> {
        if self.kind != "ip" {
            return None;
        }
        Some(IpResource {
            address: self.attr("address")?,
            monitor_link: flag(self.attrs.get("monitor_link"), true),
        })
    }
    /// `<fs>` / `<clusterfs>` / `<netfs>` view.
    pub fn as_fs(&self) -> Option<FsResource<'_>> {
        if !matches!(self.kind.as_str(), "fs" | "clusterfs" | "netfs") {
            return None;
        }
        let device = if self.kind == "netfs" {
            self.attr("export").or(self.attr("host"))
        } else {
            self.attr("device")
        };
        Some(FsResource {
            name: self.attr("name")?,
            device,
            mountpoint: self.attr("mountpoint"),
            fstype: self.attr("fstype"),
            force_unmount: flag(self.attrs.get("force_unmount"), false),
        })
    }
    /// `<script>` view.
    pub fn as_script(&self) -> Option<ScriptResource<'_>> {
        if self.kind != "script" {
            return None;
        }
        Some(ScriptResource {
            name: self.attr("name")?,
            file: self.attr("file")?,
        })
    }
    /// `<vm>` view.
    pub fn as_vm(&self) -> Option<VmResource<'_>> {
        if self.kind != "vm" {
            return None;
        }
        Some(VmResource {
            name: self.attr("name")?,
            path: self.attr("path"),
        })
    }
    /// Children in start order.
    pub fn ordered_children(&self) -> Vec<&Resource> {
        ordered(&self.children)
    }
    pub(crate) fn push_start<'a>(&'a self, out: &mut Vec<&'a Resource>) {
        out.push(self);
        for c in self.ordered_children() {
            c.push_start(out);
        }
    }
}
