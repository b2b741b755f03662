#!/usr/bin/env bash
# `make demo`: start the local cluster, install SRE-Space, break a service
# the way a memory leak does, and watch SRE-Space detect, diagnose, fix and
# verify it. The cluster and the operator keep running afterwards so you can
# look around; `make cluster-down` stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
source e2e/cluster/lib.sh
cluster=e2e/cluster/cluster.sh
target=${CARGO_TARGET_DIR:-target}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# The incident of a workload's signal, found by what it is about (its name
# ends in a hash of the workload and the signal): NAMESPACE WORKLOAD SIGNAL.
incident_of() {
    kubectl get incidents -n "$1" \
        -o jsonpath='{range .items[*]}{.spec.target.name} {.spec.signal} {.metadata.name}{"\n"}{end}' \
        | awk -v w="$2" -v s="$3" '$1 == w && $2 == s { print $3 }'
}

step "Starting the local cluster (the first run builds Kubernetes and Jaeger: ~20 min on 2 cores)"
$cluster up
eval "$($cluster env)"

step "Installing the CRDs"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

step "A fresh demo namespace with the example policy and a protected service"
kubectl delete namespace demo --ignore-not-found --wait=true >/dev/null
kubectl create namespace demo >/dev/null
until kubectl get serviceaccount default -n demo >/dev/null 2>&1; do sleep 0.5; done
kubectl apply -n demo -f examples/remediation-policy.yaml
# Incidents are reported to this repository; with no GitHub credentials
# configured, the would-be issue is kept in the Incident's status.
kubectl patch rp demo-services -n demo --type merge -p '{"spec":{"github":{"repository":"acme/demo-deploy"}}}' >/dev/null
kubectl apply -n demo -f examples/demo-workload.yaml
kubectl rollout status -n demo deployment/policy-service --timeout=120s

ln -sfn "$PWD/$target/debug/sre-chaos" "$LOCAL_BIN/sre-chaos"

step "Starting the operator (log: $STATE_DIR/logs/sre-space.log)"
mkdir -p "$STATE_DIR/logs" "$STATE_DIR/pids"
if [[ -f $STATE_DIR/pids/sre-space ]]; then kill "$(cat "$STATE_DIR/pids/sre-space")" 2>/dev/null || true; fi
dashboard=127.0.0.1:${DASHBOARD_PORT:-3001}
# The operator-side allow-list: namespace demo may report to the policy's
# repository (without it the policy is Ready=False RepositoryNotAllowed).
allowlist=$STATE_DIR/allowlist.yaml
printf 'namespaces:\n- namespace: demo\n  github:\n  - repository: acme/demo-deploy\n' >"$allowlist"
SRE_SPACE_ALLOWLIST=$allowlist SRE_SPACE_DASHBOARD_ADDR=$dashboard setsid "$target/debug/sre-space" >>"$STATE_DIR/logs/sre-space.log" 2>&1 </dev/null &
echo $! >"$STATE_DIR/pids/sre-space"
# A refused start (the dashboard's port taken, say) ends the demo with the reason.
until grep -q "operator started" "$STATE_DIR/logs/sre-space.log" 2>/dev/null; do
    kill -0 "$(cat "$STATE_DIR/pids/sre-space")" 2>/dev/null || { tail -3 "$STATE_DIR/logs/sre-space.log"; exit 1; }
    sleep 0.5
done
kubectl get rp -n demo -o wide
echo "  The dashboard (live; keep it open while the fault runs): http://$dashboard/"

step "Injecting the fault: sre-chaos oom -n demo -t policy-service"
start=$(date +%s)
"$target/debug/sre-chaos" oom -n demo -t policy-service

step "Waiting for the incident (detected → diagnosed → fixed → verified)"
inc=""
until [ -n "$inc" ]; do sleep 0.5; inc=$(incident_of demo policy-service OOMKilled || true); done
kubectl get incident -n demo -o wide
kubectl wait -n demo --for=condition=Resolved incident/"$inc" --timeout=300s
took=$(($(date +%s) - start))

step "kubectl get inc,incmem -n demo -o wide"
kubectl get inc,incmem -n demo -o wide

step "The timeline (kubectl describe incident: events)"
kubectl describe incident -n demo "$inc" | sed -n '/^Events:/,$p'

step "The fix: the memory limit now"
kubectl get deployment -n demo policy-service -o jsonpath='{.spec.template.spec.containers[0].resources.limits.memory}{"\n"}'

step "The GitHub issue it would open (status.github.preview; set SRE_SPACE_GITHUB_TOKEN to open it)"
until kubectl get incident -n demo "$inc" -o jsonpath='{.status.github.preview}' | grep -q INCIDENT; do sleep 0.5; done
kubectl get incident -n demo "$inc" -o jsonpath='{.status.github.preview}'
echo

step "The post-mortem (status.postMortem)"
kubectl get incident -n demo "$inc" -o jsonpath='{.status.postMortem}'

step "Fault to Resolved in ${took} s (of which the policy's verification window is 30 s)"
echo "  The cluster and the operator are still running:"
echo "  $($cluster env)"
echo "  sre-chaos crashloop -n demo -t policy-service   # another fault"
echo "  kubectl get incidents -A -w                      # watch"
echo "  http://$dashboard/                          # the dashboard"
echo "  make cluster-down                                # stop everything"
