//! `quorate-power-switch`: the virtual power switch server (the integrator exposes it as `quorate power-switch`).
use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = powerswitch::PowerSwitchArgs::parse();
    if let Err(e) = powerswitch::run_server(args).await {
        eprintln!("quorate-power-switch: {e}");
        std::process::exit(1);
    }
}
