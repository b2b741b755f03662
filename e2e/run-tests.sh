#!/usr/bin/env bash
# `make test`: the unit tests, then the cluster tests against a local cluster
# that this run starts (unless one is already up) and stops again.
#
# The real-node tests (e2e/tests/real_node.rs, cargo feature `real-node`)
# run only when the cluster has its real node: `make test NODE=real` starts
# one, and `cluster.sh env` reports it in SRE_SPACE_REAL_NODE. Without it,
# they are not compiled, and this script says so at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=e2e/cluster/cluster.sh

echo "== unit tests"
cargo test --workspace

started=0
if ! $cluster status >/dev/null 2>&1; then
    echo "== starting the local cluster${SRE_SPACE_NODE:+ (node: $SRE_SPACE_NODE)}"
    $cluster up
    started=1
elif [[ ${SRE_SPACE_NODE:-kwok} == real ]]; then
    # A running cluster without its real node gets one (idempotent).
    $cluster up
fi
# The operator `make demo` leaves running watches every namespace and would
# compete with the operators the tests start.
demo_pid=${SRE_SPACE_STATE:-.local/cluster}/pids/sre-space
if [[ -f $demo_pid ]] && kill -0 "$(cat "$demo_pid")" 2>/dev/null; then
    echo "== stopping the demo's operator (pid $(cat "$demo_pid")) for the tests; make demo starts it again"
    kill "$(cat "$demo_pid")" || true
    rm -f "$demo_pid"
fi
# A cluster someone left running may lack Kafka, Jaeger, Prometheus or
# Alertmanager: start them for this run only (signals.sh up starts only
# what is missing).
signals_started=0
if ((!started)) && [[ ${SIGNALS:-1} == 1 ]] && ! e2e/cluster/signals.sh status >/dev/null 2>&1; then
    echo "== starting the signal services (Kafka, Jaeger, Prometheus, Alertmanager)"
    e2e/cluster/signals.sh up
    signals_started=1
fi
stop() {
    local rc=$?
    if ((rc != 0)); then
        # CI's clone goes away after the run: keep the logs where the next
        # engineer can read them.
        local keep=${SRE_SPACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sre-space}/last-failure
        rm -rf "$keep" && mkdir -p "$keep"
        cp -r "${SRE_SPACE_STATE:-.local/cluster}/logs" "$keep/cluster" 2>/dev/null || true
        cp -r "${SRE_SPACE_SIGNALS_STATE:-.local/signals}/logs" "$keep/signals" 2>/dev/null || true
        echo "== the run failed; component logs kept in $keep"
    fi
    if ((started)); then echo "== stopping the local cluster"; $cluster down
    elif ((signals_started)); then echo "== stopping the signal services"; e2e/cluster/signals.sh down; fi
}
trap stop EXIT

# The scenario tests run the real operator binary; tests/demo_apps.rs packs
# the demo services' binaries into images for the real node.
cargo build -p sre-space-operator -p sre-chaos -p sre-space-demo --bins

eval "$($cluster env)"
features=cluster
if [[ -n ${SRE_SPACE_REAL_NODE:-} ]]; then
    features=real-node
elif [[ ${SRE_SPACE_NODE:-kwok} == real ]]; then
    echo "error: NODE=real was asked for, but the real node is not running" >&2
    exit 1
fi
if [[ $features == real-node ]]; then
    # tests/install.rs installs the chart with the operator's own image:
    # built by `make images` (quick when it already ran), imported here.
    echo "== the operator's images (make images)"
    IMAGE_TAG= e2e/cluster/images.sh
fi
echo "== cluster tests (KUBECONFIG=$KUBECONFIG, features: $features)"
cargo test -p sre-space-e2e --features "$features" -- --test-threads 8
if [[ $features != real-node ]]; then
    echo "== SKIPPED, NOT PASSED: the real-node tests (e2e/tests/real_node.rs, demo_apps.rs, install.rs) were not run,"
    echo "   because this cluster has no real node. Run them with: make test NODE=real"
    echo "   (see docs/real-node.md)"
fi
