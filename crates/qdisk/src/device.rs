//! The shared device: positioned, flushed, optionally direct I/O.

use quorum::layout::{self, Header, StatusBlock, BLOCK_SIZE, DISK_BYTES, MAX_NODES};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A device problem, with what to do about it.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// Could not open.
    #[error("cannot open quorum disk {path}: {source} (check <quorumd device> and permissions)")]
    Open {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// O_DIRECT refused by the filesystem.
    #[error("quorum disk {path} does not support O_DIRECT ({source}): use a block device, or turn direct I/O off for a plain file")]
    Direct {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Too small.
    #[error("quorum disk {path} has {size} bytes, it needs at least {DISK_BYTES} (68 KiB)")]
    TooSmall {
        /// Path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// An I/O call failed.
    #[error("quorum disk {path}: {op} failed: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Operation.
        op: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad cluster name or label.
    #[error(transparent)]
    Name(#[from] layout::NameError),
    /// The header is not valid.
    #[error("quorum disk {path}: {source}")]
    Layout {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: layout::LayoutError,
    },
}

/// An open quorum disk.
#[derive(Debug)]
pub struct Device {
    path: PathBuf,
    file: File,
    direct: bool,
    buf: Vec<u8>,
}

/// A buffer of `len` bytes aligned to the block size, inside `v` (no unsafe).
fn aligned(v: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if v.len() < len + BLOCK_SIZE {
        v.resize(len + BLOCK_SIZE, 0);
    }
    let off = v.as_ptr().align_offset(BLOCK_SIZE).min(BLOCK_SIZE);
    &mut v[off..off + len]
}

impl Device {
    /// Open an existing quorum disk (file or block device) for reading and writing.
    pub fn open(path: &Path, direct: bool) -> Result<Device, DeviceError> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        let file = o.open(path).map_err(|source| {
            if direct && source.raw_os_error() == Some(libc::EINVAL) {
                DeviceError::Direct {
                    path: path.into(),
                    source,
                }
            } else {
                DeviceError::Open {
                    path: path.into(),
                    source,
                }
            }
        })?;
        let mut d = Device {
            path: path.into(),
            file,
            direct,
            buf: Vec::new(),
        };
        let size = d.size()?;
        if size < DISK_BYTES as u64 {
            return Err(DeviceError::TooSmall {
                path: path.into(),
                size,
            });
        }
        d.probe_direct()
    }

    fn probe_direct(mut self) -> Result<Device, DeviceError> {
        if self.direct {
            // tmpfs and some filesystems accept the flag but refuse the I/O.
            if let Err(source) = self.read_all() {
                return Err(match source {
                    DeviceError::Io { source, .. }
                        if source.raw_os_error() == Some(libc::EINVAL) =>
                    {
                        DeviceError::Direct {
                            path: self.path.clone(),
                            source,
                        }
                    }
                    e => e,
                });
            }
        }
        Ok(self)
    }

    fn size(&mut self) -> Result<u64, DeviceError> {
        use std::io::{Seek, SeekFrom};
        // Works for block devices too, where metadata().len() is 0.
        self.file
            .seek(SeekFrom::End(0))
            .map_err(|source| DeviceError::Io {
                path: self.path.clone(),
                op: "seek",
                source,
            })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the whole quorum disk area.
    pub fn read_all(&mut self) -> Result<&[u8], DeviceError> {
        let path = &self.path;
        let buf = aligned(&mut self.buf, DISK_BYTES);
        self.file
            .read_exact_at(buf, 0)
            .map_err(|source| DeviceError::Io {
                path: path.clone(),
                op: "read",
                source,
            })?;
        Ok(buf)
    }

    /// Write one block at `offset` and flush it to stable storage.
    pub fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let path = &self.path;
        let buf = aligned(&mut self.buf, data.len());
        buf.copy_from_slice(data);
        self.file
            .write_all_at(buf, offset)
            .map_err(|source| DeviceError::Io {
                path: path.clone(),
                op: "write",
                source,
            })?;
        self.file.sync_data().map_err(|source| DeviceError::Io {
            path: path.clone(),
            op: "fdatasync",
            source,
        })
    }
}

/// `mkqdisk -c DEVICE -l LABEL`: write a fresh header and empty node slots.
/// Creates `path` as a plain file if it does not exist.
pub fn format(path: &Path, cluster_name: &str, label: &str) -> Result<(), DeviceError> {
    let img = layout::format_image(cluster_name, label)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| DeviceError::Open {
            path: path.into(),
            source,
        })?;
    let io = |op, source| DeviceError::Io {
        path: path.into(),
        op,
        source,
    };
    file.write_all_at(&img, 0).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("fsync", e))
}

/// What `mkqdisk -L` shows.
#[derive(Clone, Debug, Serialize)]
pub struct DiskListing {
    /// The header.
    pub header: Header,
    /// Written node blocks (corrupt ones are reported as `None` entries in `corrupt`).
    pub nodes: Vec<StatusBlock>,
    /// Node slots whose block is torn or foreign.
    pub corrupt: Vec<u32>,
}

/// `mkqdisk -L`: read the header and every status block.
pub fn list(path: &Path) -> Result<DiskListing, DeviceError> {
    let file = File::open(path).map_err(|source| DeviceError::Open {
        path: path.into(),
        source,
    })?;
    let mut img = vec![0u8; DISK_BYTES];
    file.read_exact_at(&mut img, 0)
        .map_err(|source| DeviceError::Io {
            path: path.into(),
            op: "read",
            source,
        })?;
    let header = Header::decode(&img[..BLOCK_SIZE]).map_err(|source| DeviceError::Layout {
        path: path.into(),
        source,
    })?;
    let mut nodes = Vec::new();
    let mut corrupt = Vec::new();
    for n in 1..=MAX_NODES {
        let o = n as usize * BLOCK_SIZE;
        match StatusBlock::decode(&img[o..o + BLOCK_SIZE]) {
            Ok(Some(b)) => nodes.push(b),
            Ok(None) => {}
            Err(_) => corrupt.push(n),
        }
    }
    Ok(DiskListing {
        header,
        nodes,
        corrupt,
    })
}
