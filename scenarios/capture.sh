#!/usr/bin/env bash
# Regenerates the diagnosis scenarios from the local cluster: each fault is
# caused for real (or, for what kwok cannot simulate, written into the pod's
# status as a kubelet would), the operator opens the incident in DryRun mode,
# and `sre-space capture` saves what the Brain gathered with the expected
# answer. Needs `make cluster-up` and a built operator (cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(e2e/cluster/cluster.sh env)"
bin=${CARGO_TARGET_DIR:-target}/debug
ns=scenarios
kubectl apply --server-side -f crds/ >/dev/null
kubectl delete namespace $ns --ignore-not-found --wait=true >/dev/null
kubectl create namespace $ns >/dev/null
until kubectl get serviceaccount default -n $ns >/dev/null 2>&1; do sleep 0.5; done
sed -e 's/mode: Automatic/mode: DryRun/' -e 's/gracePeriodSeconds: [0-9]*/gracePeriodSeconds: 5/' \
    examples/remediation-policy.yaml | kubectl apply -n $ns -f - >/dev/null
SRE_SPACE_WATCH_NAMESPACE=$ns "$bin/sre-space" >/tmp/scenario-operator.log 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null' EXIT

deploy() { # name memory [cpu]
    sed -e "s/policy-service/$1/g" -e "s/64Mi/$2/" examples/demo-workload.yaml | kubectl apply -n $ns -f - >/dev/null
    if [[ -n ${3:-} ]]; then
        kubectl patch deploy "$1" -n $ns --type json -p "[{\"op\":\"add\",\"path\":\"/spec/template/spec/containers/0/resources/requests/cpu\",\"value\":\"$3\"}]" >/dev/null
    else
        kubectl rollout status deploy "$1" -n $ns --timeout=60s >/dev/null
    fi
}
pod_of() { kubectl get pods -n $ns -l "app=$1" --sort-by=.metadata.creationTimestamp -o name | tail -n 1 | cut -d/ -f2; }
# Writes a status into a pod as its kubelet would, with kwok told to keep out.
pod_status() { # pod json
    kubectl annotate pod "$1" -n $ns kwok.x-k8s.io/status=custom --overwrite >/dev/null
    kubectl patch pod "$1" -n $ns --subresource=status --type=merge -p "$2" >/dev/null
}
# The incident of a workload's signal, found by what it is about (its name
# ends in a hash of the workload and the signal): WORKLOAD SIGNAL.
incident_of() {
    kubectl get incidents -n $ns \
        -o jsonpath='{range .items[*]}{.spec.target.name} {.spec.signal} {.metadata.name}{"\n"}{end}' \
        | awk -v w="$1" -v s="$2" '$1 == w && $2 == s { print $3 }'
}
capture() { # workload signal expect description file
    local inc=""
    until [[ -n $inc ]] && kubectl get incident "$inc" -n $ns -o jsonpath='{.status.diagnosis.category}' 2>/dev/null | grep -q .; do
        sleep 0.5
        inc=$(incident_of "$1" "$2" || true)
    done
    "$bin/sre-space" capture -n $ns --incident "$inc" --expect "$3" --description "$4" --out "scenarios/$5.json" 2>/dev/null
    echo "captured $5"
}
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

deploy quote 64Mi
"$bin/sre-chaos" oom -n $ns -t quote >/dev/null
capture quote OOMKilled OutOfMemory "a container is OOMKilled at its 64Mi limit" oom-at-limit

deploy ledger 256Mi
kubectl set resources deploy ledger -n $ns -c app --limits=memory=48Mi >/dev/null
kubectl rollout status deploy ledger -n $ns --timeout=60s >/dev/null
"$bin/sre-chaos" oom -n $ns -t ledger >/dev/null
capture ledger OOMKilled OutOfMemory "OOMKilled right after a rollout lowered the limit from 256Mi to 48Mi" oom-after-limit-lowered

deploy policy 128Mi
"$bin/sre-chaos" bad-rollout -n $ns -t policy >/dev/null
capture policy CrashLoopBackOff BadRollout "a rollout adds a bad argument and the new pods crash-loop" crashloop-after-bad-args

deploy user 128Mi
"$bin/sre-chaos" crashloop -n $ns -t user >/dev/null
capture user CrashLoopBackOff CrashLoop "one pod crash-loops with no recent rollout" crashloop-no-rollout

deploy catalog 128Mi
kubectl set image deploy catalog -n $ns app=registry.local/catalog:does-not-exist >/dev/null
until [[ $(kubectl get pods -n $ns -l app=catalog -o name | wc -l) -ge 2 ]]; do sleep 0.5; done
sleep 1
p=$(pod_of catalog)
pod_status "$p" "{\"status\":{\"containerStatuses\":[{\"name\":\"app\",\"image\":\"registry.local/catalog:does-not-exist\",\"imageID\":\"\",\"ready\":false,\"restartCount\":0,\"state\":{\"waiting\":{\"reason\":\"ImagePullBackOff\",\"message\":\"Back-off pulling image registry.local/catalog:does-not-exist: not found\"}}}]}}"
capture catalog ImagePullBackOff BadRollout "a rollout switches to an image tag that does not exist" image-pull-after-rollout

deploy search 128Mi
p=$(pod_of search)
pod_status "$p" "{\"status\":{\"containerStatuses\":[{\"name\":\"app\",\"image\":\"registry.local/search:1\",\"imageID\":\"\",\"ready\":false,\"restartCount\":0,\"state\":{\"waiting\":{\"reason\":\"ErrImagePull\",\"message\":\"pull access denied, repository does not exist or may require authorization\"}}}]}}"
capture search ImagePullBackOff BadImage "the registry refuses the image of a long-running deployment" image-pull-denied

deploy batch 128Mi 1000
capture batch Unschedulable Unschedulable "pods request 1000 CPUs; the real scheduler finds no node" unschedulable-cpu

deploy front 128Mi
p=$(pod_of front)
pod_status "$p" "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"ContainersNotReady\",\"lastTransitionTime\":\"$(now)\"}],\"containerStatuses\":[{\"name\":\"app\",\"image\":\"registry.local/front:1\",\"imageID\":\"\",\"ready\":false,\"started\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$(now)\"}}}]}}"
capture front ReadinessFailing ProbeFailure "a running pod fails its readiness probe for longer than the grace period" readiness-failing

kubectl delete namespace $ns --wait=false >/dev/null
