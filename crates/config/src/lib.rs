//! The cluster.conf model: parsing, defaults, validation with line numbers, and diffs.
