//! Runs seeds of the totem simulation, printing the core's logs for one
//! seed (RUST_LOG=totem=debug) or a summary for many.
//!
//! `simseed SEED [NODES]` or `simseed --seeds COUNT [--from FIRST] [--nodes K]`.
use std::time::Instant;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .without_time()
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .map(|i| args[i + 1].parse::<u64>().expect("number"))
    };
    if let Some(count) = get("--seeds") {
        let from = get("--from").unwrap_or(0);
        let nodes = get("--nodes").map(|n| n as usize);
        let t = Instant::now();
        let mut slowest = (0.0, 0);
        for seed in from..from + count {
            let s = Instant::now();
            if let Err(f) = sim::totem::run(sim::totem::SimOptions::from_seed(seed, nodes)) {
                println!("{f}");
                std::process::exit(1);
            }
            if (seed - from + 1) % 1000 == 0 {
                println!(
                    "{} seeds passed ({:.0}s)",
                    seed - from + 1,
                    t.elapsed().as_secs_f64()
                );
            }
            let e = s.elapsed().as_secs_f64();
            if e > slowest.0 {
                slowest = (e, seed);
            }
        }
        println!(
            "{count} seeds from {from} passed in {:.1}s (slowest seed {} took {:.2}s)",
            t.elapsed().as_secs_f64(),
            slowest.1,
            slowest.0
        );
        return;
    }
    let seed: u64 = args.first().expect("seed").parse().expect("seed number");
    let nodes: Option<usize> = args.get(1).map(|s| s.parse().expect("node count"));
    match sim::totem::run(sim::totem::SimOptions::from_seed(seed, nodes)) {
        Ok(r) => println!("ok {r:?}"),
        Err(f) => println!("{f}"),
    }
}
