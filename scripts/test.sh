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
