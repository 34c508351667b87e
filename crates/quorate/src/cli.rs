//! The clap command tree. Later layers add their subcommands here and a file under `cmd/`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the command ran but the answer is "no" (invalid config, refused diff, node not found).
pub const EXIT_FAIL: u8 = 1;
// Exit status 2: bad command line (clap exits with it itself).
/// Exit status: a file could not be read.
pub const EXIT_IO: u8 = 3;

/// quorate: a high-availability cluster suite (cman, fenced, rgmanager, DRBD and VMs, in one binary).
#[derive(Debug, Parser)]
#[command(
    name = "quorate",
    version,
    about,
    after_help = "Exit status: 0 done; 1 the answer is no (invalid config, refused diff, ...); 2 bad command line; 3 a file could not be read."
)]
pub struct Cli {
    /// The cluster configuration file.
    #[arg(
        long,
        global = true,
        env = "QUORATE_CONFIG",
        value_name = "FILE",
        default_value = config::DEFAULT_PATH
    )]
    pub config: PathBuf,

    /// The node's state directory (its admin socket and on-disk state live there).
    #[arg(
        long,
        global = true,
        env = "QUORATE_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/quorate"
    )]
    pub state_dir: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, explain and compare cluster.conf files.
    #[command(subcommand)]
    Config(ConfigCmd),
}

/// `quorate config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a cluster.conf: exit 0 when valid (warnings are printed), 1 with the errors otherwise.
    Validate {
        /// The file to check (default: --config; `-` reads standard input).
        file: Option<PathBuf>,
        /// Print {file, valid, errors, warnings, diagnostics[]} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration, every default applied and marked "(default)".
    Show {
        /// Print the model as JSON (settings are {"value", "default"}; secrets are hidden).
        #[arg(long)]
        json: bool,
    },
    /// Show what NEW changes relative to OLD; refuses a NEW whose config_version is not greater.
    Diff {
        /// The configuration in force.
        old: PathBuf,
        /// The proposed configuration.
        new: PathBuf,
        /// Print {old_version, new_version, changes[{area, kind, subject, detail}]} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Say which <clusternode> this machine is: the one whose name resolves to a local address.
    LocalNode {
        /// Print {name, nodeid, votes} as JSON.
        #[arg(long)]
        json: bool,
    },
}
