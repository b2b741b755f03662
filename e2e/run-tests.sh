#!/usr/bin/env bash
# `make test`: the unit tests, then the cluster tests against a local cluster
# that this run starts (unless one is already up) and stops again.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=e2e/cluster/cluster.sh

echo "== unit tests"
cargo test --workspace

started=0
if ! $cluster status >/dev/null 2>&1; then
    echo "== starting the local cluster"
    $cluster up
    started=1
fi
# A cluster someone left running may lack Kafka and Jaeger: start them for
# this run only.
signals_started=0
if ((!started)) && [[ ${SIGNALS:-1} == 1 ]] && ! e2e/cluster/signals.sh status >/dev/null 2>&1; then
    echo "== starting Kafka and Jaeger"
    e2e/cluster/signals.sh up
    signals_started=1
fi
stop() {
    if ((started)); then echo "== stopping the local cluster"; $cluster down
    elif ((signals_started)); then echo "== stopping Kafka and Jaeger"; e2e/cluster/signals.sh down; fi
}
trap stop EXIT

# The scenario tests run the real operator binary.
cargo build -p sre-space-operator -p sre-chaos --bins

eval "$($cluster env)"
echo "== cluster tests (KUBECONFIG=$KUBECONFIG)"
cargo test -p sre-space-e2e --features cluster -- --test-threads 8
