#!/usr/bin/env bash
# The whole test suite, as README.md names it. Run as root: multi-node tests
# create network namespaces, and missing packages are installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --workspace --no-fail-fast
# The totem simulator's CI run: 2,000 seeds of 3 to 7 nodes under faults
# (release build: about 2 minutes here; a debug build takes about 11).
cargo test -p sim --release --test totem_sim -- --ignored two_thousand_seeds
# The whole-cluster simulator (node stacks with quorum, fencing and services
# against simulated power and processes): all its tests, in release (a debug
# build is about 100 times slower), with 500 seeds of 2 to 5 nodes.
SIM_SEEDS=500 cargo test -p sim --release --test cluster_sim -- --include-ignored
# The replication engine's simulator: 5,000 seeds of crashes, partitions,
# reordered disks and messages and live-migration windows (release: seconds).
SIM_SEEDS=5000 cargo test -p replica --release --test sim
