//! The server's command line, embeddable as `quorate power-switch`.

use crate::server::{serve_tcp, serve_unix, OutletConfig, PowerSwitch};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A virtual power switch: each outlet runs a command in its own process group; OFF kills the whole group.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "quorate-power-switch", version)]
pub struct PowerSwitchArgs {
    /// Unix socket to serve on.
    #[arg(long, default_value = crate::fence_quorate::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Also serve on this loopback TCP address (e.g. 127.0.0.1:7779).
    #[arg(long)]
    pub tcp: Option<SocketAddr>,
    /// An outlet: NAME=COMMAND (run with /bin/sh -c). Repeat for each node.
    #[arg(long = "outlet", value_name = "NAME=COMMAND", required = true)]
    pub outlets: Vec<String>,
    /// Append each outlet's output to DIR/NAME.log.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Start with every outlet off.
    #[arg(long)]
    pub start_off: bool,
}

/// Runs the power switch until SIGINT/SIGTERM, then turns every outlet off.
pub async fn run_server(args: PowerSwitchArgs) -> Result<(), String> {
    let mut outlets = Vec::new();
    for o in &args.outlets {
        let (name, cmd) = o
            .split_once('=')
            .ok_or_else(|| format!("--outlet {o:?}: expected NAME=COMMAND"))?;
        let mut c = OutletConfig::shell(name, cmd);
        c.log = args.log_dir.as_ref().map(|d| d.join(format!("{name}.log")));
        outlets.push(c);
    }
    let sw = PowerSwitch::new(outlets).map_err(|e| e.to_string())?;
    if let Some(d) = &args.log_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    if let Some(parent) = args.socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let _unix = serve_unix(sw.clone(), &args.socket)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(t) = args.tcp {
        let (bound, _tcp) = serve_tcp(sw.clone(), t).await.map_err(|e| e.to_string())?;
        eprintln!("power switch listening on {bound}");
    }
    eprintln!("power switch listening on {}", args.socket.display());
    if !args.start_off {
        sw.all_on().await.map_err(|e| e.to_string())?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sw.all_off().await;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}
