//! quorate: one binary for every node service and admin command of the cluster.
//!
//! `main` parses the command line, sends logs to stderr (`QUORATE_LOG` or `RUST_LOG`
//! filters, default `warn`), dispatches to `cmd::*` and turns the result into the
//! exit status documented in `cli.rs`.
#![forbid(unsafe_code)]

mod cli;
mod cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Installed (or symlinked) as `fence_quorate`, the binary is the power
    // switch's fence agent, as fenced and fence_node call agents by name.
    let argv0 = std::env::args().next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "fence_quorate")
    {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let code = powerswitch::fence_quorate::main_with(
            &args,
            &mut std::io::stdin(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = cli::Cli::parse();
    let filter = std::env::var("QUORATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        // The simulator runs thousands of nodes whose warnings are expected
        // faults; its own report says what matters.
        .unwrap_or_else(|_| {
            if matches!(cli.command, cli::Command::Sim { .. }) {
                "error"
            } else {
                "warn"
            }
            .to_string()
        });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    tracing::debug!(state_dir = %cli.state_dir.display(), "quorate starting");
    ExitCode::from(cmd::run(cli))
}
