//! A [`GuestDef`] from the attributes of a `<vm>` element of cluster.conf.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::def::{
    AccelMode, CacheMode, DirectKernel, Disk, DiskFormat, DiskSource, GuestDef, MigrationMode,
    Network, OnPanic,
};
use crate::VmError;

/// Attributes the resource manager (not the guest) reads: accepted silently.
const RM_ATTRS: &[&str] = &[
    "autostart",
    "depend",
    "depend_mode",
    "domain",
    "exclusive",
    "hardrecovery",
    "hypervisor",
    "hypervisor_uri",
    "max_restarts",
    "migration_mapping",
    "migration_uri",
    "priority",
    "recovery",
    "ref",
    // The node daemon promotes and demotes the guest's replicated volume around it.
    "replica",
    "restart_expire_time",
    "snapshot",
    "status_program",
    "tunnelled",
    "use_virsh",
];

/// Attributes this module reads (besides `name`).
const GUEST_ATTRS: &[&str] = &[
    "accel",
    "append",
    "bandwidth",
    "cpu",
    "disk",
    "disk_cache",
    "disk_format",
    "downtime_ms",
    "extra_args",
    "initrd",
    "kernel",
    "mac",
    "machine",
    "memory",
    "migrate",
    "migration_connect_timeout",
    "migration_port",
    "migration_timeout",
    "netns",
    "network",
    "on_panic",
    "path",
    "serial_log",
    "stop_timeout",
    "tap",
    "vcpus",
    "xmlfile",
];

/// A [`GuestDef`] and the warnings (unknown attributes) met while building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedVm {
    /// The definition.
    pub def: GuestDef,
    /// One line per ignored attribute.
    pub warnings: Vec<String>,
}

fn bad(guest: &str, attr: &str, value: &str, what: &str) -> VmError {
    VmError::Invalid {
        guest: guest.into(),
        message: format!("{attr}=\"{value}\" is not valid: write {what}"),
    }
}

fn parse_num<T: std::str::FromStr>(
    guest: &str,
    attr: &str,
    v: &str,
    what: &str,
) -> Result<T, VmError> {
    v.trim().parse().map_err(|_| bad(guest, attr, v, what))
}

/// `120` (seconds), `120s`, `500ms`, `2m` -> milliseconds.
fn parse_duration_ms(guest: &str, attr: &str, v: &str) -> Result<u64, VmError> {
    let what = "a duration: seconds (\"120\"), or with a unit (\"500ms\", \"30s\", \"2m\")";
    let t = v.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else {
        (t, 1000)
    };
    let n: u64 = num.trim().parse().map_err(|_| bad(guest, attr, v, what))?;
    n.checked_mul(mult).ok_or_else(|| bad(guest, attr, v, what))
}

/// `1073741824`, `512K`, `100M`, `1G` (binary multiples) -> bytes.
fn parse_bytes(guest: &str, attr: &str, v: &str) -> Result<u64, VmError> {
    let what = "bytes per second, optionally with K, M or G (x1024), e.g. \"100M\"";
    let t = v.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad(guest, attr, v, what))?;
    match n.checked_mul(mult) {
        Some(b) if b > 0 => Ok(b),
        _ => Err(bad(guest, attr, v, what)),
    }
}

fn parse_disk_source(guest: &str, v: &str) -> Result<DiskSource, VmError> {
    let s = v.trim();
    if s.starts_with("nbd://") || s.starts_with("nbd+") || s.starts_with("nbds://") {
        Ok(DiskSource::Nbd(s.to_string()))
    } else if s.starts_with('/') {
        Ok(DiskSource::File(PathBuf::from(s)))
    } else {
        Err(bad(
            guest,
            "disk",
            v,
            "an absolute image path or an NBD URL (\"/var/lib/quorate/g1.img\" or \
             \"nbd://10.0.0.1:10809/r0\"); several disks are separated by commas",
        ))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Overlay `over` onto `base`; objects merge key by key, anything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

impl GuestDef {
    /// Build a definition from a `<vm>` element's attributes (`name` included):
    /// defaults of [`GuestDef::new`] (files in `run_dir/NAME.*`), then the JSON
    /// file named by `path` if any, then the attributes. Unknown attributes are
    /// returned as warnings; a bad value is an error naming the attribute and
    /// what to write. See the crate README for the attribute list.
    pub fn from_attrs(
        attrs: &BTreeMap<String, String>,
        run_dir: &Path,
    ) -> Result<ParsedVm, VmError> {
        let name = attrs.get("name").map(|s| s.trim()).unwrap_or("");
        if !valid_name(name) {
            return Err(VmError::Invalid {
                guest: name.into(),
                message: format!(
                    "<vm name=\"{name}\">: a vm needs a name of 1-64 letters, digits, '-', '_' \
                     or '.' (not starting with '.')"
                ),
            });
        }
        let g = name;
        let mut warnings = Vec::new();
        for k in attrs.keys() {
            if k != "name"
                && !k.starts_with("__")
                && !RM_ATTRS.contains(&k.as_str())
                && !GUEST_ATTRS.contains(&k.as_str())
            {
                warnings.push(format!(
                    "vm {g}: attribute {k}=\"{}\" is not known and is ignored",
                    attrs[k]
                ));
            }
        }
        if let Some(x) = attrs.get("xmlfile") {
            return Err(bad(
                g,
                "xmlfile",
                x,
                "a JSON guest definition in path=\"...\" instead (libvirt XML is not read)",
            ));
        }
        let mut def = GuestDef::new(g, run_dir);
        if let Some(p) = attrs.get("path") {
            let invalid = |message: String| VmError::Invalid {
                guest: g.into(),
                message,
            };
            let text = std::fs::read_to_string(p).map_err(|e| {
                invalid(format!(
                    "path=\"{p}\": cannot read the guest definition ({e}); write the path of a \
                     JSON file as described in the vm README"
                ))
            })?;
            let file: Value = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("path=\"{p}\": not valid JSON: {e}")))?;
            if !file.is_object() {
                return Err(invalid(format!("path=\"{p}\": must hold a JSON object")));
            }
            let mut base = serde_json::to_value(&def).expect("GuestDef serializes");
            merge(&mut base, file);
            base["name"] = Value::String(g.into());
            def = serde_path_to_error::deserialize(base).map_err(|e| {
                invalid(format!(
                    "path=\"{p}\": field {}: {} (field names and values as in the vm README)",
                    e.path(),
                    e.inner()
                ))
            })?;
        }
        let get = |k: &str| attrs.get(k).map(|s| s.as_str());
        if let Some(v) = get("memory") {
            def.memory_mib = parse_num(g, "memory", v, "the memory size in MiB, e.g. \"1024\"")?;
        }
        if let Some(v) = get("vcpus") {
            def.vcpus = parse_num(g, "vcpus", v, "a number of virtual CPUs, e.g. \"2\"")?;
        }
        if let Some(v) = get("machine") {
            def.machine = v.trim().to_string();
        }
        if let Some(v) = get("cpu") {
            def.cpu = Some(v.trim().to_string()).filter(|s| !s.is_empty());
        }
        if let Some(v) = get("accel") {
            def.accel = match v.trim() {
                "auto" => AccelMode::Auto,
                "kvm" => AccelMode::Kvm,
                "tcg" => AccelMode::Tcg,
                _ => return Err(bad(g, "accel", v, "auto, kvm or tcg")),
            };
        }
        if let Some(v) = get("kernel") {
            let prev = def.kernel.take();
            def.kernel = Some(DirectKernel {
                kernel: PathBuf::from(v.trim()),
                initrd: prev.as_ref().and_then(|k| k.initrd.clone()),
                append: prev.map(|k| k.append).unwrap_or_default(),
            });
        }
        for (attr, is_initrd) in [("initrd", true), ("append", false)] {
            if let Some(v) = get(attr) {
                let Some(k) = def.kernel.as_mut() else {
                    return Err(bad(
                        g,
                        attr,
                        v,
                        "it together with kernel=\"/path/to/vmlinuz\" (direct kernel boot)",
                    ));
                };
                if is_initrd {
                    k.initrd = Some(PathBuf::from(v.trim()));
                } else {
                    k.append = v.to_string();
                }
            }
        }
        if let Some(v) = get("disk") {
            def.disks = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    Ok(Disk {
                        source: parse_disk_source(g, s)?,
                        format: DiskFormat::default(),
                        cache: CacheMode::default(),
                    })
                })
                .collect::<Result<_, VmError>>()?;
        }
        if let Some(v) = get("disk_format") {
            let f = match v.trim() {
                "raw" => DiskFormat::Raw,
                "qcow2" => DiskFormat::Qcow2,
                _ => return Err(bad(g, "disk_format", v, "raw or qcow2")),
            };
            def.disks.iter_mut().for_each(|d| d.format = f);
        }
        if let Some(v) = get("disk_cache") {
            let c = match v.trim() {
                "none" => CacheMode::None,
                "writeback" => CacheMode::Writeback,
                "writethrough" => CacheMode::Writethrough,
                "directsync" => CacheMode::Directsync,
                "unsafe" => CacheMode::Unsafe,
                _ => {
                    return Err(bad(
                        g,
                        "disk_cache",
                        v,
                        "none, writeback, writethrough, directsync or unsafe",
                    ))
                }
            };
            def.disks.iter_mut().for_each(|d| d.cache = c);
        }
        if let Some(v) = get("network") {
            let t = v.trim();
            def.network = if t == "none" {
                Network::None
            } else if let Some(br) = t.strip_prefix("bridge:").filter(|b| !b.is_empty()) {
                Network::Tap {
                    bridge: br.to_string(),
                    ifname: None,
                    mac: None,
                }
            } else {
                return Err(bad(
                    g,
                    "network",
                    v,
                    "none or bridge:BRIDGE, e.g. \"bridge:br0\"",
                ));
            };
        }
        for attr in ["tap", "mac"] {
            if let Some(v) = get(attr) {
                let Network::Tap { ifname, mac, .. } = &mut def.network else {
                    return Err(bad(
                        g,
                        attr,
                        v,
                        "it together with network=\"bridge:BRIDGE\"",
                    ));
                };
                let v = v.trim().to_string();
                if attr == "tap" {
                    if v.is_empty() || v.len() > 15 {
                        return Err(bad(g, "tap", &v, "a tap device name of 1-15 characters"));
                    }
                    *ifname = Some(v);
                } else {
                    *mac = Some(v);
                }
            }
        }
        if let Some(v) = get("extra_args") {
            def.extra_args = v.split_whitespace().map(String::from).collect();
        }
        if let Some(v) = get("migration_port") {
            def.migration.port = match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(bad(
                        g,
                        "migration_port",
                        v,
                        "a TCP port 1-65535, e.g. \"49152\"",
                    ))
                }
            };
        }
        if let Some(v) = get("downtime_ms") {
            def.migration.downtime_limit_ms = parse_num(
                g,
                "downtime_ms",
                v,
                "the longest switch-over pause in milliseconds, e.g. \"100\"",
            )?;
        }
        if let Some(v) = get("bandwidth") {
            def.migration.max_bandwidth = parse_bytes(g, "bandwidth", v)?;
        }
        if let Some(v) = get("migration_timeout") {
            def.migration.timeout_ms = parse_duration_ms(g, "migration_timeout", v)?;
        }
        if let Some(v) = get("migration_connect_timeout") {
            def.migration.connect_timeout_ms =
                parse_duration_ms(g, "migration_connect_timeout", v)?;
        }
        if let Some(v) = get("migrate") {
            def.migration.mode = match v.trim() {
                "live" => MigrationMode::Live,
                "pause" => MigrationMode::Pause,
                _ => return Err(bad(g, "migrate", v, "live or pause")),
            };
        }
        if let Some(v) = get("stop_timeout") {
            def.stop_timeout_ms = parse_duration_ms(g, "stop_timeout", v)?;
        }
        if let Some(v) = get("on_panic") {
            def.on_panic = match v.trim() {
                "fail" => OnPanic::Fail,
                "guest" => OnPanic::Guest,
                _ => return Err(bad(g, "on_panic", v, "fail or guest")),
            };
        }
        if let Some(v) = get("netns") {
            def.netns = Some(v.trim().to_string()).filter(|s| !s.is_empty());
        }
        if let Some(v) = get("serial_log") {
            if !v.starts_with('/') {
                return Err(bad(g, "serial_log", v, "an absolute path"));
            }
            def.serial_log = PathBuf::from(v);
        }
        Ok(ParsedVm { def, warnings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_rhcs_vm_element_becomes_a_definition() {
        let run = Path::new("/run/quorate/vm");
        let p = GuestDef::from_attrs(
            &attrs(&[
                ("name", "guest1"),
                ("memory", "512"),
                ("vcpus", "2"),
                ("disk", "nbd://192.168.2.71:10809/r0, /var/lib/g1-data.img"),
                ("disk_format", "raw"),
                ("disk_cache", "writeback"),
                ("kernel", "/k/vmlinuz"),
                ("initrd", "/k/initrd"),
                ("append", "console=ttyS0 quiet"),
                ("network", "bridge:br0"),
                ("mac", "52:54:00:00:00:01"),
                ("accel", "tcg"),
                ("migration_port", "49200"),
                ("downtime_ms", "100"),
                ("bandwidth", "100M"),
                ("migrate", "pause"),
                ("stop_timeout", "120"),
                ("migration_connect_timeout", "1500ms"),
                ("extra_args", "-rtc base=utc"),
                ("domain", "d1"),
                ("recovery", "relocate"),
                ("__independent_subtree", "1"),
                ("colour", "blue"),
            ]),
            run,
        )
        .unwrap();
        let d = &p.def;
        assert_eq!((d.name.as_str(), d.memory_mib, d.vcpus), ("guest1", 512, 2));
        assert_eq!(d.disks.len(), 2);
        assert_eq!(
            d.disks[0].source,
            DiskSource::Nbd("nbd://192.168.2.71:10809/r0".into())
        );
        assert_eq!(
            d.disks[1].source,
            DiskSource::File("/var/lib/g1-data.img".into())
        );
        assert!(d.disks.iter().all(|x| x.cache == CacheMode::Writeback));
        let k = d.kernel.as_ref().unwrap();
        assert_eq!(k.initrd.as_deref(), Some(Path::new("/k/initrd")));
        assert_eq!(k.append, "console=ttyS0 quiet");
        assert_eq!(d.tap_name().as_deref(), Some("qt-guest1"));
        assert_eq!(d.accel, AccelMode::Tcg);
        assert_eq!(d.migration.port, 49200);
        assert_eq!(d.migration.downtime_limit_ms, 100);
        assert_eq!(d.migration.max_bandwidth, 100 << 20);
        assert_eq!(d.migration.mode, MigrationMode::Pause);
        assert_eq!(d.migration.connect_timeout_ms, 1500);
        assert_eq!(d.stop_timeout_ms, 120_000);
        assert_eq!(d.extra_args, vec!["-rtc", "base=utc"]);
        assert_eq!(d.pidfile, run.join("guest1.pid"));
        // Only the truly unknown attribute is warned about.
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("colour"));
    }

    #[test]
    fn bad_values_name_the_attribute_and_what_to_write() {
        let run = Path::new("/run/q");
        let cases = [
            ("memory", "lots", "MiB"),
            ("vcpus", "-1", "virtual CPUs"),
            ("accel", "xen", "auto, kvm or tcg"),
            ("disk", "relative.img", "absolute image path"),
            ("disk_format", "vmdk", "raw or qcow2"),
            ("network", "br0", "bridge:BRIDGE"),
            ("migration_port", "70000", "1-65535"),
            ("bandwidth", "fast", "K, M or G"),
            ("stop_timeout", "soon", "duration"),
            ("migrate", "cold", "live or pause"),
            ("initrd", "/x", "kernel="),
            ("mac", "52:54:00:00:00:01", "network=\"bridge:BRIDGE\""),
            ("xmlfile", "/etc/libvirt/qemu/g.xml", "JSON"),
            ("path", "/nonexistent/g.json", "cannot read"),
        ];
        for (k, v, hint) in cases {
            let e = GuestDef::from_attrs(&attrs(&[("name", "g"), (k, v)]), run)
                .expect_err(k)
                .to_string();
            assert!(e.contains(k) && e.contains(hint), "{k}: {e}");
        }
        for name in ["", "../etc", "a/b", ".hidden"] {
            let e = GuestDef::from_attrs(&attrs(&[("name", name)]), run).unwrap_err();
            assert!(e.to_string().contains("needs a name"), "{e}");
        }
    }

    #[test]
    fn a_json_file_is_the_base_and_attributes_override_it() {
        let dir = std::env::temp_dir().join(format!("vm-attrs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("g.json");
        std::fs::write(
            &f,
            r#"{"name": "other", "memory_mib": 2048, "vcpus": 4, "cpu": "host",
                "disks": [{"source": {"file": "/srv/g.img"}, "format": "qcow2"}],
                "migration": {"downtime_limit_ms": 50},
                "extra_args": ["-k", "de"]}"#,
        )
        .unwrap();
        let p = GuestDef::from_attrs(
            &attrs(&[("name", "g"), ("path", f.to_str().unwrap()), ("vcpus", "1")]),
            &dir,
        )
        .unwrap();
        let d = p.def;
        assert_eq!(d.name, "g");
        assert_eq!((d.memory_mib, d.vcpus), (2048, 1));
        assert_eq!(d.cpu.as_deref(), Some("host"));
        assert_eq!(d.disks[0].format, DiskFormat::Qcow2);
        assert_eq!(d.migration.downtime_limit_ms, 50);
        assert_eq!(d.migration.port, 49152, "unset nested fields keep defaults");
        assert_eq!(d.extra_args, vec!["-k", "de"]);
        assert_eq!(d.qmp_socket, dir.join("g.qmp"));
        std::fs::write(&f, r#"{"memory_mib": "big"}"#).unwrap();
        let e = GuestDef::from_attrs(
            &attrs(&[("name", "g"), ("path", f.to_str().unwrap())]),
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("path=") && e.contains("memory_mib"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
