use sim::totem::{check_determinism, run, SimOptions};

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

#[test]
fn calm_cluster_forms_one_ring_and_delivers_everything() {
    for nodes in [1, 2, 3, 5] {
        let mut o = SimOptions::from_seed(7, Some(nodes));
        o.faults = false;
        let r = run(o).unwrap_or_else(|f| panic!("{f}"));
        assert!(r.deliveries > 100, "{r:?}");
    }
}

#[test]
fn many_seeds_with_faults_keep_every_invariant() {
    for seed in 0..seeds() {
        if let Err(f) = run(SimOptions::from_seed(seed, None)) {
            panic!("{f}");
        }
    }
}

#[test]
fn same_seed_same_trace() {
    for seed in [1, 2, 3] {
        check_determinism(SimOptions::from_seed(seed, None)).unwrap();
    }
}

#[test]
fn a_killed_node_is_detected_within_token_plus_200ms() {
    use base::Duration;
    for (nodes, token) in [(2, 300), (3, 300), (5, 1000)] {
        let mut times: Vec<u64> = (0..9)
            .map(|seed| {
                sim::totem::detection_time(seed, nodes, Duration::from_millis(token))
                    .unwrap_or_else(|f| panic!("{f}"))
                    .as_millis()
            })
            .collect();
        times.sort();
        let p50 = times[times.len() / 2];
        eprintln!("detection, {nodes} nodes, token {token} ms: p50 {p50} ms, all {times:?}");
        assert!(
            p50 <= token + 200,
            "{nodes} nodes token {token}: p50 {p50} ms ({times:?})"
        );
        assert!(
            p50 >= token / 2,
            "{nodes} nodes: detection {p50} ms is faster than the token timeout allows ({times:?})"
        );
    }
}

/// CI's run: `cargo test -p sim --release -- --ignored` (SIM_SEEDS to change
/// the count, SIM_JOBS to use that many threads).
#[test]
#[ignore]
fn two_thousand_seeds() {
    fn env<T: std::str::FromStr>(k: &str) -> Option<T> {
        std::env::var(k).ok().and_then(|s| s.parse().ok())
    }
    let n: u64 = env("SIM_SEEDS").unwrap_or(2000);
    let jobs: usize = env("SIM_JOBS").unwrap_or(1);
    let t = std::time::Instant::now();
    // in chunks, with a progress line each, so a long soak shows where it is
    let chunk = 5000;
    let mut s = sim::totem::Summary::default();
    let mut first = 0;
    while first < n {
        let c = sim::totem::run_seeds_jobs(first, chunk.min(n - first), None, jobs)
            .unwrap_or_else(|f| panic!("{f}"));
        s.runs += c.runs;
        s.steps += c.steps;
        s.worst_converge = s.worst_converge.max(c.worst_converge);
        first += c.runs;
        if n > chunk {
            eprintln!("seeds 0..{first} pass ({:.0} s)", t.elapsed().as_secs_f64());
        }
    }
    eprintln!(
        "{} seeds on {jobs} threads, {} steps, worst convergence {}, {:.1}s",
        s.runs,
        s.steps,
        s.worst_converge,
        t.elapsed().as_secs_f64()
    );
}
