#!/usr/bin/env bash
# `make demo STORY=conversion`: the business breaks while every pod looks
# healthy. The four demo services run as real pods on the real node, with
# customers arriving through the frontend; a release ships a broken payment
# configuration; SRE-Space sees purchases per quote fall on Kafka, reads the
# traces in Jaeger, blames the rollout, rolls it back and verifies that
# customers buy again. Needs root (the real node). The cluster, the
# operator (dashboard on 127.0.0.1:3001) and the customers keep running
# afterwards; `make cluster-down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export SRE_SPACE_NODE=real
source e2e/cluster/lib.sh
cluster=e2e/cluster/cluster.sh
target=${CARGO_TARGET_DIR:-target}
ns=shop

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# The incident of a workload's signal, found by what it is about (its name
# ends in a hash of the workload and the signal): NAMESPACE WORKLOAD SIGNAL.
incident_of() {
    kubectl get incidents -n "$1" \
        -o jsonpath='{range .items[*]}{.spec.target.name} {.spec.signal} {.metadata.name}{"\n"}{end}' \
        | awk -v w="$2" -v s="$3" '$1 == w && $2 == s { print $3 }'
}

step "Starting the local cluster with its real node, Kafka and Jaeger (the first run builds them: ~30 min on 2 cores)"
$cluster up
eval "$($cluster env)"
cargo build -q -p sre-space-operator -p sre-chaos -p sre-space-demo --bins

step "Installing the CRDs"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

step "The demo business: frontend, quote, policy and user services as real pods"
SRE_SPACE_DEMO_BUILD=0 e2e/cluster/demo-images.sh
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
until kubectl get serviceaccount default -n "$ns" >/dev/null 2>&1; do sleep 0.5; done
token=demo-$RANDOM$RANDOM
helm install demo charts/demo-services -n "$ns" --wait --timeout 120s \
    --set apps.enabled=true --set apps.hostNetwork=true \
    --set-string 'apps.nodeSelector.sre\.space/node=real' \
    --set 'apps.tolerations[0].key=sre.space/node' --set 'apps.tolerations[0].operator=Equal' \
    --set 'apps.tolerations[0].value=real' --set 'apps.tolerations[0].effect=NoSchedule' \
    --set "apps.kafkaBootstrap=$SRE_SPACE_KAFKA_BOOTSTRAP" --set "apps.otlpEndpoint=$SRE_SPACE_OTLP_HTTP" \
    --set "apps.chaosToken=$token" --set policyService.replicas=1 >/dev/null
kubectl get pods -n "$ns" -o wide

step "The policy: conversion on Kafka, traces in Jaeger, roll back a bad release, else escalate"
kubectl apply -n "$ns" -f examples/business-policy.yaml
kubectl get rp -n "$ns" -o wide

step "Starting the operator (log: $STATE_DIR/logs/sre-space.log; dashboard: http://127.0.0.1:3001)"
mkdir -p "$STATE_DIR/logs" "$STATE_DIR/pids"
if [[ -f $STATE_DIR/pids/sre-space ]]; then kill "$(cat "$STATE_DIR/pids/sre-space")" 2>/dev/null || true; fi
SRE_SPACE_DASHBOARD_ADDR=127.0.0.1:${DASHBOARD_PORT:-3001} setsid "$target/debug/sre-space" \
    >>"$STATE_DIR/logs/sre-space.log" 2>&1 </dev/null &
echo $! >"$STATE_DIR/pids/sre-space"
until grep -q "operator started" "$STATE_DIR/logs/sre-space.log" 2>/dev/null; do sleep 0.5; done

step "Customers: 8 a second through the frontend, half of them buy (log: $STATE_DIR/logs/customers.log)"
if [[ -f $STATE_DIR/pids/customers ]]; then kill "$(cat "$STATE_DIR/pids/customers")" 2>/dev/null || true; fi
setsid "$target/debug/sre-chaos" load --frontend http://127.0.0.1:18080 --rate 8 --buy-ratio 0.5 \
    --duration 60m >>"$STATE_DIR/logs/customers.log" 2>&1 </dev/null &
echo $! >"$STATE_DIR/pids/customers"
until kubectl get rp business -n "$ns" -o jsonpath='{.status.conditions[?(@.type=="KafkaAvailable")].status}' | grep -q True; do sleep 1; done
sleep 20
tail -n 3 "$STATE_DIR/logs/customers.log"

step "The bad release: PAYMENT_MODE=broken (every pod stays Ready; purchases fail)"
start=$(date +%s)
helm upgrade demo charts/demo-services -n "$ns" --reuse-values --set apps.paymentMode=broken --wait --timeout 90s >/dev/null
kubectl get pods -n "$ns"

step "Waiting for the incident (conversion on Kafka → diagnosis with traces → rollback → verified)"
inc=""
until [ -n "$inc" ]; do sleep 0.5; inc=$(incident_of "$ns" policy-service ConversionRate || true); done
detected=$(($(date +%s) - start))
kubectl get incident -n "$ns" -o wide
kubectl wait -n "$ns" --for=condition=Resolved incident/"$inc" --timeout=300s
took=$(($(date +%s) - start))

step "The diagnosis (status.diagnosis)"
kubectl get incident -n "$ns" "$inc" \
    -o jsonpath='{.status.diagnosis.category}: {.status.diagnosis.rootCause}{"\n"}{range .status.diagnosis.evidence[*]}  [{.kind}] {.source}: {.summary}{"\n"}{end}'

step "The timeline (kubectl describe incident: events)"
kubectl describe incident -n "$ns" "$inc" | sed -n '/^Events:/,$p'

step "Customers now"
tail -n 3 "$STATE_DIR/logs/customers.log"

step "Fault to Incident in ${detected} s; fault to Resolved in ${took} s (verification window 30 s)"
echo "  Dashboard: http://127.0.0.1:${DASHBOARD_PORT:-3001}"
echo "  Another fault, with no rollout to blame (escalated):"
echo "    $target/debug/sre-chaos conversion --url http://127.0.0.1:18082 --token $token"
echo "  kubectl get incidents -A -w; make cluster-down stops everything"
