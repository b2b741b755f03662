#!/usr/bin/env bash
# `make demo`: start the local cluster, install SRE-Space's CRDs and the
# example policy, and show what a user sees. The cluster keeps running
# afterwards so you can look around; `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=e2e/cluster/cluster.sh

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Starting the local cluster (first run builds Kubernetes: ~15 min on 2 cores)"
$cluster up
eval "$($cluster env)"

step "Installing the CRDs"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

step "Applying the example RemediationPolicy (examples/remediation-policy.yaml)"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n demo -f examples/remediation-policy.yaml

step "kubectl get rp,inc -n demo -o wide"
kubectl get rp,inc -n demo -o wide

step "The cluster is still running"
echo "  $($cluster env)"
echo "  kubectl get incidents -A        # watch incidents"
echo "  make cluster-down               # stop it"
