//! Choosing between KVM and TCG by what the host really supports.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::def::AccelMode;

/// The accelerator a guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The chosen accelerator and why, for status output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// The accelerator.
    pub accel: Accel,
    /// One sentence saying why it was chosen.
    pub reason: String,
}

/// Facts about the host that decide the accelerator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// `Ok` when /dev/kvm opened read-write, else the OS error.
    pub dev_kvm: Result<(), String>,
    /// Loaded kernel modules whose name starts with `kvm` (from /sys/module).
    pub kvm_modules: BTreeSet<String>,
}

impl HostProbe {
    /// Look at this host: open /dev/kvm and list /sys/module/kvm*.
    pub fn gather() -> Self {
        Self::gather_at(Path::new("/dev/kvm"), Path::new("/sys/module"))
    }

    /// [`gather`](Self::gather) with other paths (for tests).
    pub fn gather_at(dev_kvm: &Path, sys_module: &Path) -> Self {
        let dev_kvm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev_kvm)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", dev_kvm.display()));
        let kvm_modules = std::fs::read_dir(sys_module)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("kvm"))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            dev_kvm,
            kvm_modules,
        }
    }
}

/// Decide the accelerator. `Auto` picks KVM only when /dev/kvm opens and is
/// served by a hardware module (`kvm_intel`/`kvm_amd`); the software hypervisor
/// module `kvm_pvm` (under which stock distribution kernels do not boot) and
/// anything unknown mean TCG. `Kvm`/`Tcg` are the administrator's override.
pub fn detect_accel(mode: AccelMode, probe: &HostProbe) -> AccelChoice {
    let choice = |accel, reason: String| AccelChoice { accel, reason };
    match mode {
        AccelMode::Kvm => choice(
            Accel::Kvm,
            "kvm forced by the guest definition (accel=kvm)".into(),
        ),
        AccelMode::Tcg => choice(
            Accel::Tcg,
            "tcg forced by the guest definition (accel=tcg)".into(),
        ),
        AccelMode::Auto => {
            if let Err(e) = &probe.dev_kvm {
                return choice(Accel::Tcg, format!("tcg: /dev/kvm unusable ({e})"));
            }
            if probe.kvm_modules.contains("kvm_pvm") {
                return choice(
                    Accel::Tcg,
                    "tcg: /dev/kvm is served by kvm_pvm, a software hypervisor under which stock \
                     kernels do not boot (set accel=kvm to force it)"
                        .into(),
                );
            }
            for hw in ["kvm_intel", "kvm_amd"] {
                if probe.kvm_modules.contains(hw) {
                    return choice(Accel::Kvm, format!("kvm: /dev/kvm usable, served by {hw}"));
                }
            }
            choice(
                Accel::Tcg,
                format!(
                    "tcg: /dev/kvm opens but no hardware kvm module (kvm_intel/kvm_amd) is loaded \
                     (found: {}); set accel=kvm to force it",
                    probe
                        .kvm_modules
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ok: bool, mods: &[&str]) -> HostProbe {
        HostProbe {
            dev_kvm: if ok {
                Ok(())
            } else {
                Err("/dev/kvm: No such file".into())
            },
            kvm_modules: mods.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn auto_uses_hardware_kvm_only() {
        assert_eq!(
            detect_accel(AccelMode::Auto, &probe(true, &["kvm", "kvm_intel"])).accel,
            Accel::Kvm
        );
        assert_eq!(
            detect_accel(AccelMode::Auto, &probe(true, &["kvm", "kvm_amd"])).accel,
            Accel::Kvm
        );
        let pvm = detect_accel(AccelMode::Auto, &probe(true, &["kvm", "kvm_pvm"]));
        assert_eq!(pvm.accel, Accel::Tcg);
        assert!(pvm.reason.contains("kvm_pvm"), "{}", pvm.reason);
        let none = detect_accel(AccelMode::Auto, &probe(false, &["kvm", "kvm_intel"]));
        assert_eq!(none.accel, Accel::Tcg);
        assert!(none.reason.contains("unusable"));
        assert_eq!(
            detect_accel(AccelMode::Auto, &probe(true, &["kvm"])).accel,
            Accel::Tcg
        );
    }

    #[test]
    fn overrides_win() {
        assert_eq!(
            detect_accel(AccelMode::Kvm, &probe(false, &[])).accel,
            Accel::Kvm
        );
        assert_eq!(
            detect_accel(AccelMode::Tcg, &probe(true, &["kvm_intel"])).accel,
            Accel::Tcg
        );
    }

    #[test]
    fn gather_reads_a_fake_sysfs() {
        let dir = std::env::temp_dir().join(format!("vm-accel-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        std::fs::create_dir_all(dir.join("ext4")).unwrap();
        let p = HostProbe::gather_at(&dir.join("nokvm"), &dir);
        assert!(p.dev_kvm.is_err());
        assert_eq!(p.kvm_modules.iter().collect::<Vec<_>>(), vec!["kvm_pvm"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
