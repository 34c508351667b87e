use sim::totem::{check_determinism, run, SimOptions};

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
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
