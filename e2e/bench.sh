#!/usr/bin/env bash
# `make bench`: builds release binaries, starts the local cluster unless one is
# up, prints the benchmark table, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=e2e/cluster/cluster.sh
cargo build --release -p sre-space-operator -p sre-space-e2e --bins
export SRE_SPACE_OPERATOR_BIN=${CARGO_TARGET_DIR:-target}/release/sre-space
started=0
if ! $cluster status >/dev/null 2>&1; then $cluster up; started=1; fi
trap 'if ((started)); then $cluster down; fi' EXIT
eval "$($cluster env)"
"${CARGO_TARGET_DIR:-target}/release/bench"
