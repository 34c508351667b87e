//! One file per command group; each returns the process exit status.

pub mod admin;
pub mod bench;
pub mod config;
pub mod demo;
pub mod node;
pub mod replica;
pub mod tools;

use crate::cli::{Cli, Command, FenceCmd, FenceSub};
use std::io::{IsTerminal, Write};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> u8 {
    let state = cli.state_dir.as_path();
    match cli.command {
        Command::Config(crate::cli::ConfigCmd::Push { file, json }) => {
            admin::config_push(state, file.as_deref().unwrap_or(&cli.config), json)
        }
        Command::Config(crate::cli::ConfigCmd::Status { json }) => {
            admin::config_status(state, json)
        }
        Command::Config(c) => config::run(&cli.config, c),
        Command::Node { node } => node::run(&cli.config, state, node),
        Command::Status { interval, json } => admin::status(state, interval, json),
        Command::Quorum { json } => admin::quorum(state, json),
        Command::Cman(c) => admin::cman(state, c),
        Command::Totem(c) => admin::totem(state, c),
        Command::Fence(f) => {
            let cmd = match (f.cmd, f.node) {
                (Some(FenceSub::Status { json }), _) => FenceCmd::Status { json },
                (Some(FenceSub::Ack { node, yes }), _) => FenceCmd::Ack { node, yes },
                (Some(FenceSub::Unfence { node }), _) => FenceCmd::Unfence { node },
                (None, Some(node)) => FenceCmd::Node { node, wait: f.wait },
                (None, None) => {
                    err("quorate: usage: quorate fence NODE | quorate fence status|ack NODE|unfence NODE\n");
                    return 2;
                }
            };
            admin::fence(state, cmd)
        }
        Command::Svc(c) => admin::svc(state, c),
        Command::Replica(c) => replica::run(state, c),
        Command::Keygen { file } => tools::keygen(&file),
        Command::PowerSwitch(args) => tools::power_switch(args),
        Command::Demo { quiet, dir } => demo::run(quiet, dir),
        Command::Bench(b) => bench::run(b),
        Command::Qdisk(q) => tools::qdisk(q),
        Command::Sim {
            layer,
            seeds,
            seed,
            nodes,
        } => tools::sim(&layer, seeds, seed, nodes),
    }
}

/// The tokio runtime of the commands that need one (two workers: the node
/// and the tools do little work at once); says why when it cannot start.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            err(&format!("quorate: error: cannot start the runtime: {e}\n"));
            None
        }
    }
}

/// True when stderr is a terminal (progress lines go there).
pub fn is_terminal() -> bool {
    std::io::stderr().is_terminal()
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
