//! The tiny test guest of `scripts/guest/` as a library: build it, define it,
//! read its serial console.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::def::{CacheMode, DirectKernel, Disk, DiskSource, GuestDef};
use crate::VmError;

/// A built tiny guest: kernel, initramfs and kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyGuest {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Busybox initramfs.
    pub initrd: PathBuf,
    /// Kernel command line (`console=ttyS0 ... rdinit=/init`).
    pub cmdline: String,
}

/// `scripts/guest/build-tiny-guest.sh`, built into the binary so an installed
/// `quorate` needs no source tree to build the tiny guest.
pub const BUILD_SCRIPT: &str = include_str!("../../../scripts/guest/build-tiny-guest.sh");

impl TinyGuest {
    /// [`build`](Self::build) with the embedded [`BUILD_SCRIPT`], written to
    /// `out/build-tiny-guest.sh` (rewritten only when it changed). Blocking.
    pub fn build_embedded(out: &Path) -> Result<TinyGuest, VmError> {
        let fail = |message: String| VmError::TinyGuest { message };
        std::fs::create_dir_all(out).map_err(|e| fail(format!("{}: {e}", out.display())))?;
        let script = out.join("build-tiny-guest.sh");
        if std::fs::read_to_string(&script).ok().as_deref() != Some(BUILD_SCRIPT) {
            std::fs::write(&script, BUILD_SCRIPT)
                .map_err(|e| fail(format!("{}: {e}", script.display())))?;
        }
        Self::build(&script, out)
    }

    /// Run `script` (scripts/guest/build-tiny-guest.sh) to build, or reuse, the
    /// guest in `out`. Blocking; about 10 ms when up to date.
    pub fn build(script: &Path, out: &Path) -> Result<TinyGuest, VmError> {
        let fail = |message: String| VmError::TinyGuest { message };
        let res = std::process::Command::new("sh")
            .arg(script)
            .arg(out)
            .output()
            .map_err(|e| fail(format!("cannot run {}: {e}", script.display())))?;
        if !res.status.success() {
            return Err(fail(format!(
                "{} failed (needs Debian packages linux-image-cloud-amd64 busybox-static cpio): {}",
                script.display(),
                String::from_utf8_lossy(&res.stderr).trim()
            )));
        }
        let cmdline = std::fs::read_to_string(out.join("cmdline"))
            .map_err(|e| fail(format!("{}: {e}", out.join("cmdline").display())))?;
        Ok(TinyGuest {
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.img"),
            cmdline: cmdline.trim().to_string(),
        })
    }

    /// A 128 MiB, 1 vCPU definition booting this guest with `disk` as /dev/vda
    /// and its socket, pidfile and serial log in `run_dir`. The disk uses
    /// `cache=none` where its file system supports O_DIRECT (not tmpfs), else writeback.
    pub fn guest_def(&self, name: &str, run_dir: &Path, disk: &Path) -> GuestDef {
        let mut d = GuestDef::new(name, run_dir);
        d.memory_mib = 128;
        d.kernel = Some(DirectKernel {
            kernel: self.kernel.clone(),
            initrd: Some(self.initrd.clone()),
            append: self.cmdline.clone(),
        });
        d.disks.push(Disk {
            source: DiskSource::File(disk.to_path_buf()),
            format: Default::default(),
            cache: if supports_direct_io(disk) {
                CacheMode::None
            } else {
                CacheMode::Writeback
            },
        });
        d.stop_timeout_ms = 15_000;
        d
    }
}

impl TinyGuest {
    /// The same guest as `<vm>` attributes (what cluster.conf would say):
    /// `name`, 128 MiB, 1 vCPU, kernel/initrd/append, `disk` (cache `none`
    /// where O_DIRECT works, else `writeback`), no network, `migration_port`,
    /// `downtime_ms="100"`, `stop_timeout="15"`.
    pub fn vm_attrs(
        &self,
        name: &str,
        disk: &Path,
        migration_port: u16,
    ) -> BTreeMap<String, String> {
        let cache = if supports_direct_io(disk) {
            "none"
        } else {
            "writeback"
        };
        [
            ("name", name.to_string()),
            ("memory", "128".into()),
            ("vcpus", "1".into()),
            ("kernel", self.kernel.display().to_string()),
            ("initrd", self.initrd.display().to_string()),
            ("append", self.cmdline.clone()),
            ("disk", disk.display().to_string()),
            ("disk_format", "raw".into()),
            ("disk_cache", cache.into()),
            ("network", "none".into()),
            ("migration_port", migration_port.to_string()),
            ("downtime_ms", "100".into()),
            ("stop_timeout", "15".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Whether `path` can be opened with O_DIRECT (QEMU's `cache=none` needs it).
pub fn supports_direct_io(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

/// Create (or reset) a blank 1 MiB raw disk for the tiny guest.
pub fn blank_disk(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(1 << 20)
}

fn lines_with(serial: &Path, prefix: &str) -> Vec<u64> {
    let text = std::fs::read(serial).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| l.trim().strip_prefix(prefix)?.trim().parse().ok())
        .collect()
}

/// Every `counter N` the guest printed on its serial log, in order.
pub fn serial_counters(serial: &Path) -> Vec<u64> {
    lines_with(serial, "counter ")
}

/// Every `resumed from N` (one per boot) in the serial log.
pub fn serial_resumed(serial: &Path) -> Vec<u64> {
    lines_with(serial, "resumed from ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_parsing_and_direct_io_probe() {
        let dir = std::env::temp_dir().join(format!("vm-tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("s.log");
        std::fs::write(
            &log,
            "junk\r\nresumed from 7\r\ncounter 8\r\ncounter 9\r\ncounter x\r\ncounter 10",
        )
        .unwrap();
        assert_eq!(serial_counters(&log), vec![8, 9, 10]);
        assert_eq!(serial_resumed(&log), vec![7]);
        assert!(serial_counters(&dir.join("missing")).is_empty());
        assert!(!supports_direct_io(&dir.join("missing")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
