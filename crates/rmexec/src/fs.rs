//! `fs`: a filesystem on a device, as rgmanager's fs.sh.
//!
//! Start creates the mountpoint if missing, runs `fsck -p` first when
//! `force_fsck="1"` (exit 0 or 1 is fine), then `mount [-t fstype] [-o
//! options] device mountpoint`. Stop runs `umount`; when that fails and
//! `force_unmount="1"`, it kills the processes using the filesystem with
//! `fuser -km` (psmisc) and tries again. Status reads `/proc/self/mountinfo`
//! and matches the mountpoint and the device (by major:minor for a block
//! device, else by canonical path). These commands always run in the
//! executor's own mount namespace.

use crate::cmd::{Cmd, Runner};
use crate::exec::{Op, StepError};
use crate::ip::parse_bool;
use crate::timeout::op_timeout;
use rm::ResourceStep;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Device major:minor of the mounted filesystem.
    pub dev: (u32, u32),
    /// Where it is mounted (unescaped).
    pub mountpoint: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (device path as given to mount).
    pub source: String,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            if sep < 6 || f.len() < sep + 3 {
                return None;
            }
            let (ma, mi) = f[2].split_once(':')?;
            Some(MountEntry {
                dev: (ma.parse().ok()?, mi.parse().ok()?),
                mountpoint: PathBuf::from(unescape(f[4])),
                fstype: f[sep + 1].to_string(),
                source: unescape(f[sep + 2]),
            })
        })
        .collect()
}

fn read_mounts() -> Result<Vec<MountEntry>, StepError> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .map_err(|e| StepError::Command {
            command: "read /proc/self/mountinfo".into(),
            reason: e.to_string(),
        })
}

/// Linux `dev_t` split into major and minor.
pub fn dev_split(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// A parsed `fs` resource.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FsSpec {
    device: String,
    mountpoint: PathBuf,
    fstype: Option<String>,
    options: Option<String>,
    force_unmount: bool,
    force_fsck: bool,
}

/// Checks an `fs` resource's attributes without touching the system.
pub(crate) fn check(step: &ResourceStep) -> Result<(), StepError> {
    parse(step).map(|_| ())
}

fn parse(step: &ResourceStep) -> Result<FsSpec, StepError> {
    let get = |k: &str| {
        step.attrs
            .get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let device = get("device").ok_or_else(|| {
        StepError::Config(format!(
            "fs {}: no device attribute: write <fs device=\"/dev/sdb1\" mountpoint=\"/srv\" fstype=\"ext4\"/>",
            step.name
        ))
    })?;
    let mp = get("mountpoint").ok_or_else(|| {
        StepError::Config(format!(
            "fs {}: no mountpoint attribute: write mountpoint=\"/srv/data\"",
            step.name
        ))
    })?;
    let mountpoint = PathBuf::from(&mp);
    if !mountpoint.is_absolute() || mountpoint == Path::new("/") {
        return Err(StepError::Config(format!(
            "fs {}: mountpoint=\"{mp}\" must be an absolute path other than /",
            step.name
        )));
    }
    // Options go to mount as one argv word: refuse ones that could smuggle another argument.
    let options = get("options");
    if let Some(o) = &options {
        if o.starts_with('-') || o.contains(char::is_whitespace) {
            return Err(StepError::Config(format!(
                "fs {}: options=\"{o}\" must be a comma-separated list without spaces (e.g. noatime,nodev)",
                step.name
            )));
        }
    }
    let fstype = get("fstype");
    if let Some(t) = &fstype {
        if !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
        {
            return Err(StepError::Config(format!(
                "fs {}: fstype=\"{t}\" is not a filesystem type (ext4, xfs, ...)",
                step.name
            )));
        }
    }
    Ok(FsSpec {
        device,
        mountpoint,
        fstype,
        options,
        force_unmount: parse_bool("force_unmount", step.attrs.get("force_unmount"), false)?,
        force_fsck: parse_bool("force_fsck", step.attrs.get("force_fsck"), false)?,
    })
}

/// The device path: `LABEL=`/`UUID=` through /dev/disk/by-* (udev) or else
/// `findfs` (util-linux, reads the superblocks), symlinks resolved.
fn device_path(dev: &str) -> PathBuf {
    let by = if let Some(l) = dev.strip_prefix("LABEL=") {
        Some(Path::new("/dev/disk/by-label").join(l))
    } else {
        dev.strip_prefix("UUID=")
            .map(|u| Path::new("/dev/disk/by-uuid").join(u.to_ascii_lowercase()))
    };
    let p = match by {
        None => PathBuf::from(dev),
        Some(p) if p.exists() => p,
        Some(p) => std::process::Command::new("findfs")
            .arg(dev)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_absolute())
            .unwrap_or(p),
    };
    std::fs::canonicalize(&p).unwrap_or(p)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What is mounted on the mountpoint, and whether it is our device.
fn find<'m>(spec: &FsSpec, mounts: &'m [MountEntry]) -> (Option<&'m MountEntry>, bool) {
    let mp = canonical(&spec.mountpoint);
    let dev = device_path(&spec.device);
    let rdev = std::fs::metadata(&dev)
        .ok()
        .filter(|m| m.file_type().is_block_device())
        .map(|m| dev_split(m.rdev()));
    // The last entry on a mountpoint is the one visible there.
    let Some(e) = mounts.iter().rev().find(|e| e.mountpoint == mp) else {
        return (None, false);
    };
    let ours = match rdev {
        Some(d) => e.dev == d,
        None => canonical(Path::new(&e.source)) == dev || e.source == spec.device,
    };
    (Some(e), ours)
}

pub(crate) async fn run(r: &mut Runner<'_>, step: &ResourceStep, op: Op) -> Result<(), StepError> {
    let spec = parse(step)?;
    let timeout = op_timeout(&step.attrs, op)?;
    let name = &step.name;
    let mp = spec.mountpoint.display().to_string();
    match op {
        Op::Status => {
            let mounts = read_mounts()?;
            match find(&spec, &mounts) {
                (Some(_), true) => Ok(()),
                (Some(e), false) => Err(StepError::Failed(format!(
                    "fs {name}: {mp} has {} mounted, not {}",
                    e.source, spec.device
                ))),
                (None, _) => Err(StepError::Failed(format!(
                    "fs {name}: {} is not mounted on {mp}",
                    spec.device
                ))),
            }
        }
        Op::Start => {
            let mounts = read_mounts()?;
            match find(&spec, &mounts) {
                (Some(_), true) => {
                    r.note(format!("{} already mounted on {mp}", spec.device));
                    return Ok(());
                }
                (Some(e), false) => {
                    return Err(StepError::Failed(format!(
                        "fs {name}: {mp} already has {} mounted: unmount it or choose another mountpoint",
                        e.source
                    )))
                }
                (None, _) => {}
            }
            let dev = device_path(&spec.device);
            if !dev.exists() {
                return Err(StepError::Config(format!(
                    "fs {name}: device {} does not exist on this node: is the disk attached here?",
                    spec.device
                )));
            }
            let devs = dev.display().to_string();
            if !spec.mountpoint.is_dir() {
                std::fs::create_dir_all(&spec.mountpoint).map_err(|e| StepError::Command {
                    command: format!("mkdir -p {mp}"),
                    reason: e.to_string(),
                })?;
                r.note(format!("created mountpoint {mp}"));
            }
            if spec.force_fsck {
                let mut args = vec!["-p"];
                if let Some(t) = &spec.fstype {
                    args.extend(["-t", t.as_str()]);
                }
                args.push(&devs);
                let out = r
                    .run(Cmd::new(
                        "fsck",
                        &args,
                        timeout,
                        "util-linux (and e2fsprogs)",
                    ))
                    .await?;
                match out.code {
                    Some(0) | Some(1) => {}
                    c => {
                        let said = format!("{} {}", out.stdout.trim(), out.stderr.trim());
                        return Err(StepError::Failed(format!(
                            "fs {name}: fsck -p {devs} exited {} ({}): repair it by hand (fsck {devs})",
                            c.unwrap_or(-1),
                            said.trim().lines().last().unwrap_or("")
                        )));
                    }
                }
            }
            let mut args: Vec<&str> = Vec::new();
            if let Some(t) = &spec.fstype {
                args.extend(["-t", t.as_str()]);
            }
            if let Some(o) = &spec.options {
                args.extend(["-o", o.as_str()]);
            }
            args.extend([devs.as_str(), mp.as_str()]);
            r.run_ok(Cmd::new("mount", &args, timeout, "mount")).await?;
            let mounts = read_mounts()?;
            match find(&spec, &mounts) {
                (Some(_), true) => Ok(()),
                _ => Err(StepError::Failed(format!(
                    "fs {name}: mount said yes but {devs} is not on {mp}"
                ))),
            }
        }
        Op::Stop => {
            let mounts = read_mounts()?;
            match find(&spec, &mounts) {
                (None, _) => {
                    r.note(format!("nothing mounted on {mp}: already stopped"));
                    return Ok(());
                }
                (Some(e), false) => {
                    r.note(format!(
                        "{mp} has {} mounted, not ours: leaving it",
                        e.source
                    ));
                    return Ok(());
                }
                (Some(_), true) => {}
            }
            let mut last = String::new();
            let tries = if spec.force_unmount { 4 } else { 1 };
            for attempt in 0..tries {
                if attempt > 0 {
                    // Only while our filesystem is still mounted there: `fuser -km` on a
                    // plain directory would kill every user of the parent filesystem.
                    let mounts = read_mounts()?;
                    if !matches!(find(&spec, &mounts), (Some(_), true)) {
                        return Ok(());
                    }
                    r.run(Cmd::new(
                        "fuser",
                        &["-k", "-m", mp.as_str()],
                        Duration::from_secs(10),
                        "psmisc",
                    ))
                    .await?;
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                let out = r
                    .run(Cmd::new("umount", &[mp.as_str()], timeout, "mount"))
                    .await?;
                if out.code == Some(0) {
                    return Ok(());
                }
                last = out.stderr.trim().to_string();
            }
            let mounts = read_mounts()?;
            if !matches!(find(&spec, &mounts), (Some(_), true)) {
                return Ok(());
            }
            Err(StepError::Failed(if spec.force_unmount {
                format!("fs {name}: cannot unmount {mp} even after killing its users: {last}")
            } else {
                format!(
                    "fs {name}: cannot unmount {mp}: {last}; set force_unmount=\"1\" to kill the processes using it"
                )
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes_and_optional_fields() {
        let t = "22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw\n\
                 101 22 7:3 / /srv/my\\040data rw,relatime shared:80 master:1 - ext4 /dev/loop3 rw\n\
                 garbage line\n\
                 102 22 7:3 / /x rw - ext4\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].dev, (7, 3));
        assert_eq!(m[1].mountpoint, PathBuf::from("/srv/my data"));
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].source, "/dev/loop3");
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trail\\04"), "trail\\04");
    }

    #[test]
    fn splits_dev_t() {
        // makedev(259, 65536 + 5) as glibc packs it.
        let major: u64 = 259;
        let minor: u64 = 65541;
        let dev = ((major & 0xfff) << 8)
            | ((major & !0xfff) << 32)
            | (minor & 0xff)
            | ((minor & !0xff) << 12);
        assert_eq!(dev_split(dev), (259, 65541));
        assert_eq!(dev_split((7 << 8) | 3), (7, 3));
    }

    #[test]
    fn rejects_bad_attributes() {
        let mk = |a: &[(&str, &str)]| ResourceStep {
            rtype: "fs".into(),
            name: "data".into(),
            attrs: a
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            depth: 0,
        };
        for (a, want) in [
            (vec![("mountpoint", "/srv")], "no device"),
            (vec![("device", "/dev/sdb1")], "no mountpoint"),
            (
                vec![("device", "/dev/sdb1"), ("mountpoint", "srv")],
                "absolute",
            ),
            (
                vec![("device", "/dev/sdb1"), ("mountpoint", "/")],
                "absolute",
            ),
            (
                vec![
                    ("device", "/dev/sdb1"),
                    ("mountpoint", "/srv"),
                    ("options", "ro --bind"),
                ],
                "comma-separated",
            ),
            (
                vec![
                    ("device", "/dev/sdb1"),
                    ("mountpoint", "/srv"),
                    ("fstype", "ext4;x"),
                ],
                "filesystem type",
            ),
            (
                vec![
                    ("device", "/dev/sdb1"),
                    ("mountpoint", "/srv"),
                    ("force_unmount", "2"),
                ],
                "force_unmount",
            ),
        ] {
            let e = parse(&mk(&a)).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let s = parse(&mk(&[
            ("device", "/dev/sdb1"),
            ("mountpoint", "/srv"),
            ("force_unmount", "1"),
        ]))
        .unwrap();
        assert!(s.force_unmount && !s.force_fsck);
    }
}
