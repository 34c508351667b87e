//! Run cluster-simulation seeds: `cargo run -p sim --release --example clusterseed -- FIRST COUNT [NODES]`.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let first: u64 = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let count: u64 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let nodes: Option<usize> = a.get(3).and_then(|s| s.parse().ok());
    if std::env::var("SIM_PROFILE").is_ok() {
        println!("{}", sim::cluster::debug_profile(first, nodes));
    }
    let t = std::time::Instant::now();
    let mut fails = 0;
    for seed in first..first + count {
        let mut o = sim::cluster::ClusterOptions::from_seed(seed, nodes);
        if let Ok(n) = std::env::var("SIM_TAIL") {
            o.trace_lines = n.parse().unwrap_or(60);
        }
        o.echo = std::env::var("SIM_ECHO").is_ok();
        o.qdisk = std::env::var("SIM_NO_QDISK").is_err();
        o.faults = std::env::var("SIM_CALM").is_err();
        match sim::cluster::run(o) {
            Ok(r) => println!(
                "seed {seed} nodes {} ok: steps {} starts {} fenced {} crashes {} leaves {} converge {}",
                r.nodes, r.steps, r.starts, r.fenced, r.crashes, r.leaves, r.converge
            ),
            Err(f) => {
                fails += 1;
                println!("{f}");
            }
        }
    }
    println!(
        "{count} seeds, {fails} failed, {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
