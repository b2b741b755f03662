#!/usr/bin/env bash
# `make bench`: builds release binaries, starts the local cluster unless one is
# up, prints the benchmark table, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=e2e/cluster/cluster.sh
cargo build --release -p sre-space-operator -p sre-space-e2e --bins
export SRE_SPACE_OPERATOR_BIN=${CARGO_TARGET_DIR:-target}/release/sre-space
# A cluster started here gets client rate limits fit for 10,000 pods and no
# Kafka or Jaeger (the benchmark's policy has only pod triggers).
export CLUSTER_API_QPS=${CLUSTER_API_QPS:-500} SIGNALS=${SIGNALS:-0}
started=0
if ! $cluster status >/dev/null 2>&1; then $cluster up; started=1; fi
trap 'if ((started)); then $cluster down; fi' EXIT
eval "$($cluster env)"
"${CARGO_TARGET_DIR:-target}/release/bench"
