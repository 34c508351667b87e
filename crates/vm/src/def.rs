//! The guest definition an administrator writes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a disk's data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskSource {
    /// An image file (absolute path).
    File(PathBuf),
    /// An NBD URL QEMU opens itself, e.g. `nbd://10.0.0.1:10809/r0` or
    /// `nbd+unix:///r0?socket=/run/quorate/r0.sock`.
    Nbd(String),
}

/// Image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Raw image (required for replicated volumes).
    #[default]
    Raw,
    /// qcow2 image.
    Qcow2,
}

/// QEMU `cache=` mode. `none` (O_DIRECT) is what live migration with shared storage needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// O_DIRECT, no host page cache (default; safe for migration).
    #[default]
    None,
    /// Host page cache, flushes honoured.
    Writeback,
    /// Host page cache, every write synchronous.
    Writethrough,
    /// O_DIRECT and every write synchronous.
    Directsync,
    /// Flushes ignored: for throwaway test guests only.
    Unsafe,
}

impl CacheMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Writeback => "writeback",
            Self::Writethrough => "writethrough",
            Self::Directsync => "directsync",
            Self::Unsafe => "unsafe",
        }
    }
}

impl DiskFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// One virtio disk; the first is `/dev/vda` in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// File or NBD URL.
    pub source: DiskSource,
    /// Image format.
    #[serde(default)]
    pub format: DiskFormat,
    /// Cache mode.
    #[serde(default)]
    pub cache: CacheMode,
}

/// The guest's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No network device.
    #[default]
    None,
    /// A virtio NIC on a tap device that the driver attaches to `bridge`.
    Tap {
        /// The host bridge, e.g. `br0`.
        bridge: String,
        /// Tap device name (at most 15 bytes); default `qt-<name>` truncated.
        #[serde(default)]
        ifname: Option<String>,
        /// Guest MAC address; keep it fixed so the guest keeps it across migrations.
        #[serde(default)]
        mac: Option<String>,
    },
}

/// Which accelerator an administrator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    /// KVM where it really works, TCG otherwise.
    #[default]
    Auto,
    /// Always KVM (fails to start where /dev/kvm is unusable).
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

/// Boot a kernel directly (`-kernel/-initrd/-append`) instead of from disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectKernel {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default)]
    pub append: String,
}

/// What QEMU does when the guest kernel panics (reported through the pvpanic device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnPanic {
    /// QEMU pauses the guest in run state `guest-panicked`; status reports a
    /// failed guest and the resource manager's recovery policy applies.
    #[default]
    Fail,
    /// QEMU does nothing; the guest's own setting (e.g. `panic=10`: reboot) decides.
    Guest,
}

/// How a guest moves between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MigrationMode {
    /// Live migration: the guest runs while its memory is copied.
    #[default]
    Live,
    /// The guest is paused on the source, copied, and resumed on the target.
    Pause,
}

/// Migration knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSettings {
    /// Address the target listens on for the migration stream (back-channel network).
    pub listen_address: String,
    /// TCP port the target listens on.
    pub port: u16,
    /// Longest pause QEMU may impose at switch-over, in ms (QEMU's `downtime-limit`).
    pub downtime_limit_ms: u64,
    /// Bandwidth cap in bytes/s (QEMU's `max-bandwidth`).
    pub max_bandwidth: u64,
    /// Give up (and keep the guest on the source) after this many ms.
    pub timeout_ms: u64,
    /// How long the source keeps retrying while the target's port refuses
    /// connections (the target is still starting its incoming QEMU), in ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Live or pause.
    pub mode: MigrationMode,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        Self {
            listen_address: "0.0.0.0".into(),
            port: 49152,
            downtime_limit_ms: 300,
            max_bandwidth: 1 << 30,
            timeout_ms: 120_000,
            connect_timeout_ms: default_connect_timeout_ms(),
            mode: MigrationMode::Live,
        }
    }
}

fn default_connect_timeout_ms() -> u64 {
    30_000
}

/// Everything needed to run one guest on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDef {
    /// Guest name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// QEMU machine type (`q35`; pin e.g. `pc-q35-7.2` across QEMU versions).
    pub machine: String,
    /// CPU model; `None` is QEMU's default (migratable everywhere).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Accelerator request.
    #[serde(default)]
    pub accel: AccelMode,
    /// Direct kernel boot, if any.
    #[serde(default)]
    pub kernel: Option<DirectKernel>,
    /// Virtio disks in order.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Network.
    #[serde(default)]
    pub network: Network,
    /// Extra QEMU arguments appended verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// File receiving the serial console (appended to).
    pub serial_log: PathBuf,
    /// QMP Unix socket path.
    pub qmp_socket: PathBuf,
    /// QEMU pidfile.
    pub pidfile: PathBuf,
    /// Migration knobs.
    #[serde(default)]
    pub migration: MigrationSettings,
    /// How long `stop` waits for an ACPI powerdown before `quit`, in ms.
    pub stop_timeout_ms: u64,
    /// What a guest kernel panic does.
    #[serde(default)]
    pub on_panic: OnPanic,
    /// Run QEMU (and the tap setup) inside this network namespace
    /// (`ip netns exec NAME`); `None` runs in the daemon's own namespace.
    #[serde(default)]
    pub netns: Option<String>,
}

impl GuestDef {
    /// A definition with defaults (256 MiB, 1 vCPU, q35, auto accelerator) whose
    /// socket, pidfile and serial log are `run_dir/NAME.{qmp,pid,serial}`.
    pub fn new(name: &str, run_dir: &Path) -> Self {
        Self {
            name: name.to_string(),
            memory_mib: 256,
            vcpus: 1,
            machine: "q35".into(),
            cpu: None,
            accel: AccelMode::Auto,
            kernel: None,
            disks: Vec::new(),
            network: Network::None,
            extra_args: Vec::new(),
            serial_log: run_dir.join(format!("{name}.serial")),
            qmp_socket: run_dir.join(format!("{name}.qmp")),
            pidfile: run_dir.join(format!("{name}.pid")),
            migration: MigrationSettings::default(),
            stop_timeout_ms: 30_000,
            on_panic: OnPanic::Fail,
            netns: None,
        }
    }

    /// The tap device name this guest uses (explicit, or `qt-<name>` cut to 15 bytes).
    pub fn tap_name(&self) -> Option<String> {
        match &self.network {
            Network::None => None,
            Network::Tap {
                ifname: Some(i), ..
            } => Some(i.clone()),
            Network::Tap { ifname: None, .. } => {
                let mut s = format!("qt-{}", self.name);
                s.truncate(15);
                Some(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip_through_json() {
        let mut d = GuestDef::new("db1", Path::new("/run/quorate/vm"));
        d.disks.push(Disk {
            source: DiskSource::Nbd("nbd://10.0.0.1:10809/r0".into()),
            format: DiskFormat::Raw,
            cache: CacheMode::None,
        });
        d.network = Network::Tap {
            bridge: "br0".into(),
            ifname: None,
            mac: None,
        };
        d.accel = AccelMode::Tcg;
        let text = serde_json::to_string_pretty(&d).unwrap();
        assert!(text.contains("\"accel\": \"tcg\""), "{text}");
        let back: GuestDef = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
        // Optional fields may be left out by an administrator.
        let min = r#"{"name":"x","memory_mib":64,"vcpus":1,"machine":"q35","serial_log":"/a","qmp_socket":"/b","pidfile":"/c","stop_timeout_ms":1000}"#;
        let m: GuestDef = serde_json::from_str(min).unwrap();
        assert_eq!(m.accel, AccelMode::Auto);
        assert_eq!(m.migration.downtime_limit_ms, 300);
        assert!(m.netns.is_none() && m.disks.is_empty());
    }
}
