//! The cluster.conf model: parsing, defaults, validation with line numbers, and diffs.
//!
//! Reads `/etc/cluster/cluster.conf` as RHCS 2/3 wrote it (and as people write it in
//! the wild: dates as config_version, CRLF, single quotes, sections in any order),
//! applies the RHCS defaults (each next to its reason in `parse.rs`), and reports
//! every problem with file, line, column, message and a hint.
//!
//! ```
//! let text = r#"<cluster name="c" config_version="1">
//!   <clusternodes><clusternode name="n1" nodeid="1"/></clusternodes>
//! </cluster>"#;
//! let parsed = config::parse("cluster.conf", text);
//! let conf = parsed.config.expect("valid");
//! assert_eq!(*conf.totem.token.get(), 10_000); // RHCS default
//! assert_eq!(conf.quorum.quorum, 1);
//! ```
//!
//! The library does no I/O except [`load_file`]. Nothing in it panics on bad input:
//! `tests/fuzz.rs` feeds arbitrary and mutated XML (set `PROPTEST_CASES` for long runs,
//! see the crate README).
//!
//! Resources: quorate follows rgmanager and has no `<ocf>` element; an agent resource
//! is an element named after its agent (see [`resource`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod diag;
pub mod diff;
pub mod local;
pub mod model;
pub mod parse;
pub mod resource;
pub mod show;

pub use diag::{Diagnostic, Severity};
pub use diff::{diff, Area, Change, ChangeKind, ConfigDiff, DiffError};
pub use local::{identify_local_node, LocalNodeError};
pub use model::*;
pub use parse::{parse, Parsed};
pub use show::render_text;

use std::path::{Path, PathBuf};

/// The default configuration path, as RHCS uses it.
pub const DEFAULT_PATH: &str = "/etc/cluster/cluster.conf";

/// A file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Open or read failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not UTF-8 text.
    #[error("{path} is not UTF-8 text; cluster.conf must be UTF-8 (or ASCII) XML")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

/// Reads and parses a file; diagnostics name it as given.
pub fn load_file(path: &Path) -> Result<Parsed, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Read at most one byte past the limit, so /dev/zero or a huge file cannot exhaust memory;
    // the parser then reports the size with a position.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(parse::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let text = String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    Ok(parse(&path.display().to_string(), &text))
}
