//! One file per command group; each returns the process exit status.

pub mod config;

use crate::cli::{Cli, Command};
use std::io::Write;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Config(c) => config::run(&cli.config, c),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// Writes to stderr.
pub fn err(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
}
