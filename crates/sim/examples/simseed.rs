//! Runs one seed, printing the core's logs (RUST_LOG=totem=debug).
fn main() {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).without_time().init();
    let seed: u64 = std::env::args().nth(1).expect("seed").parse().expect("seed number");
    let nodes: Option<usize> = std::env::args().nth(2).map(|s| s.parse().expect("node count"));
    match sim::totem::run(sim::totem::SimOptions::from_seed(seed, nodes)) {
        Ok(r) => println!("ok {r:?}"),
        Err(f) => println!("{f}"),
    }
}
