#!/usr/bin/env bash
# `make bench-conversion`: the conversion story (e2e/tests/conversion_story.rs,
# a bad release rolled back) run RUNS times on the real node, then a table of
# the time from the fault to the Incident and to the recovered conversion.
# Figures, not a pass/fail limit. Starts the cluster with its real node
# unless one is up, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=e2e/cluster/cluster.sh
runs=${RUNS:-3}
export SRE_SPACE_NODE=real
started=0
if ! $cluster status >/dev/null 2>&1; then $cluster up; started=1; else $cluster up >/dev/null; fi
trap 'if ((started)); then $cluster down; fi' EXIT
cargo build -q -p sre-space-operator -p sre-chaos -p sre-space-demo --bins
eval "$($cluster env)"
out=$(mktemp)
for i in $(seq 1 "$runs"); do
    echo "== run $i of $runs"
    cargo test -q -p sre-space-e2e --features real-node --test conversion_story \
        a_release_that_breaks_purchases -- --nocapture 2>&1 | tee -a "$out" | grep -E "conversion story|fault →" || true
done
awk -v runs="$runs" '
    /conversion story/ { load = $0; sub(/.*: /, "", load) }
    /fault → Incident/ { d[++nd] = $(NF - 1) }
    /fault → conversion recovered/ && $(NF) == "s" { r[++nr] = $(NF - 1) }
    function median(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n ? (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) : "n/a"
    }
    function list(a, n,   i, s) { for (i = 1; i <= n; i++) s = s (i > 1 ? ", " : "") a[i]; return s }
    END {
        printf "\nconversion story, %d run(s); load: %s\n", runs, load
        printf "| measure | median | runs (s) | goal |\n|---|---|---|---|\n"
        printf "| fault → Incident | %s s | %s | ≤ 15 s |\n", median(d, nd), list(d, nd)
        printf "| fault → conversion recovered | %s s | %s | |\n", median(r, nr), list(r, nr)
    }' "$out"
rm -f "$out"
