//! Driver helpers (std only): writing the config file atomically and reading it for
//! drift checks.
//!
//! The daemon writes every [`crate::Action::WriteConfig`] with [`write_atomic`] and
//! polls the file every few seconds (5 s is plenty) with [`check_drift`], handing the
//! text to [`crate::ConfigSync::handle_local_file`]. No file watcher: polling is simple,
//! works on every filesystem and catches editors that replace the file.

use crate::wire::MAX_TEXT_BYTES;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// An I/O call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than the cluster distributes.
    #[error("{path} is larger than {MAX_TEXT_BYTES} bytes; is it really a cluster.conf?")]
    TooLarge {
        /// The path.
        path: PathBuf,
    },
    /// Not UTF-8.
    #[error("{path} is not UTF-8 text; cluster.conf must be UTF-8 (or ASCII) XML")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `path` with `text` so that a crash leaves either the old or the new file:
/// write a temporary file next to it, fsync it, rename it over `path`, fsync the directory.
/// The file mode of an existing `path` is kept (0644 for a new file).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cluster.conf".into());
    let tmp = dir.join(format!(".{file_name}.quorate-tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io("cannot create", &tmp))?;
        if let Ok(meta) = fs::metadata(path) {
            f.set_permissions(meta.permissions())
                .map_err(io("cannot set permissions of", &tmp))?;
        }
        f.write_all(text.as_bytes())
            .map_err(io("cannot write", &tmp))?;
        f.sync_all().map_err(io("cannot fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("cannot rename onto", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot fsync directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads the config file for a drift check: at most [`MAX_TEXT_BYTES`], UTF-8.
pub fn check_drift(path: &Path) -> Result<String, FileError> {
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io("cannot open", path))?
        .take(MAX_TEXT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io("cannot read", path))?;
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_keeps_mode_and_leaves_no_temp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster.conf");
        write_atomic(&p, "one").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, "two").unwrap();
        assert_eq!(check_drift(&p).unwrap(), "two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn write_atomic_into_a_missing_directory_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope/cluster.conf");
        let e = write_atomic(&p, "x").unwrap_err().to_string();
        assert!(e.contains("cannot create"), "{e}");
    }

    #[test]
    fn check_drift_refuses_huge_and_binary_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![b'a'; MAX_TEXT_BYTES + 1]).unwrap();
        assert!(matches!(check_drift(&big), Err(FileError::TooLarge { .. })));
        let bin = dir.path().join("bin");
        fs::write(&bin, [0xff, 0xfe]).unwrap();
        assert!(matches!(check_drift(&bin), Err(FileError::NotUtf8 { .. })));
        assert!(check_drift(&dir.path().join("missing"))
            .unwrap_err()
            .to_string()
            .contains("cannot open"));
    }
}
