#!/usr/bin/env bash
# The whole test suite, as README.md names it. Run as root: multi-node tests
# create network namespaces, and missing packages are installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --workspace --no-fail-fast
