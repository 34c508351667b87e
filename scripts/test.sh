#!/usr/bin/env bash
# The whole test suite, as README.md names it. Run as root on a machine with the
# packages .ci/run installs (multi-node tests create network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --no-fail-fast
