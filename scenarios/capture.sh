#!/usr/bin/env bash
# Regenerates the diagnosis scenarios from the local cluster: each fault is
# caused for real (or, for what kwok cannot simulate, written into the pod's
# status as a kubelet would), the operator opens the incident in DryRun mode,
# and `sre-space capture` saves what the Brain gathered with the expected
# answer. Controls (scenarios/controls/) are situations with no fault: the
# operator must open no incident for them, and their objects are saved for
# `sre-space eval` to read again. Needs `make cluster-up NODE=real` (the
# faults that need a container to really run use the real node) and a built
# operator (cargo build).
#
#   scenarios/capture.sh                 # every scenario and control
#   scenarios/capture.sh NAME...         # only these
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
    -e 's/restartThreshold: [0-9]*/restartThreshold: 1/' examples/remediation-policy.yaml | kubectl apply -n $ns -f - >/dev/null
SRE_SPACE_WATCH_NAMESPACE=$ns "$bin/sre-space" >/tmp/scenario-operator.log 2>&1 &
operator=$!
# Stopped however the script ends; once, in a failed run, the operator
# outlived a plain TERM, so it gets 10 s and then KILL.
stop_operator() {
    kill "$operator" 2>/dev/null || return 0
    for _ in $(seq 20); do kill -0 "$operator" 2>/dev/null || return 0; sleep 0.5; done
    kill -9 "$operator" 2>/dev/null || true
}
trap stop_operator EXIT

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
# Whether a scenario is asked for: every one when no names were given.
want() { (($# == 0)) && return 1; [[ ${#only[@]} -eq 0 ]] || [[ " ${only[*]} " == *" $1 "* ]]; }
only=("$@")
capture() { # workload signal expect action description file
    local inc="" deadline=$((SECONDS + 240))
    until [[ -n $inc ]] && kubectl get incident "$inc" -n $ns -o jsonpath='{.status.diagnosis.category}' 2>/dev/null | grep -q .; do
        ((SECONDS < deadline)) || { echo "no diagnosed $2 incident of $1 after 240 s" >&2; exit 1; }
        sleep 0.5
        inc=$(incident_of "$1" "$2" || true)
    done
    "$bin/sre-space" capture -n $ns --incident "$inc" --expect "$3" --action "$4" --description "$5" --out "scenarios/$6.json" 2>/dev/null
    echo "captured $6"
}
# A Deployment of one pod on the real node, where containers really run:
# NAME, then the pod spec's containers (and any other field) on stdin,
# indented as fields of the pod spec.
IMG='image: "sre.space/workload:e2e", imagePullPolicy: Never'
real_deploy() { # name
    { cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: 1
  progressDeadlineSeconds: ${PROGRESS:-600}
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1, sre.space/protected: "true"}}
    spec:
$(if [[ ${SIMULATED:-} ]]; then echo "      terminationGracePeriodSeconds: 5"; else cat <<PLACE
      nodeSelector: {sre.space/node: real}
      tolerations: [{key: sre.space/node, operator: Equal, value: real, effect: NoSchedule}]
      terminationGracePeriodSeconds: 5
PLACE
fi)
YAML
      cat; } | kubectl apply -n $ns -f - >/dev/null
}
# As real_deploy, on a simulated (kwok) node: SIMULATED=1 real_deploy NAME.
SIM='image: registry.local/app:1, resources: {limits: {memory: 64Mi}, requests: {memory: 16Mi}}'
# A Job on the real node: NAME, then its spec's extra fields and the pod
# spec's containers on stdin, as real_deploy.
real_job() { # name [spec fields as flow YAML, e.g. "backoffLimit: 1"]
    { cat <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: $1}
spec:
  ${2:-backoffLimit: 1}
  template:
    metadata: {labels: {app: $1, sre.space/protected: "true"}}
    spec:
      restartPolicy: Never
      nodeSelector: {sre.space/node: real}
      tolerations: [{key: sre.space/node, operator: Equal, value: real, effect: NoSchedule}]
      terminationGracePeriodSeconds: 5
YAML
      cat; } | kubectl apply -n $ns -f - >/dev/null
}
# Saves the objects of a control (pods and the workloads that own them, by
# the label app=NAME) for `sre-space eval`, after checking that the
# operator, watching all along, opened no incident for it.
control() { # app description file
    local incidents
    incidents=$(kubectl get incidents -n $ns -o jsonpath='{range .items[*]}{.spec.target.name}{"\n"}{end}' | grep -x "$1" || true)
    [[ -z $incidents ]] || { echo "control $3: the operator opened an incident for $1" >&2; exit 1; }
    mkdir -p scenarios/controls
    kubectl get pods,jobs,cronjobs,deployments,replicasets -n $ns -l "app=$1" -o json \
        | python3 -c 'import json, sys, datetime
items = json.load(sys.stdin)["items"]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({"name": sys.argv[1], "description": sys.argv[2], "captured_at": now, "objects": items}, indent=1))' \
            "$3" "$2" >"scenarios/controls/$3.json"
    echo "control $3: no incident"
}
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

if want oom-at-limit; then
    deploy quote 64Mi
    "$bin/sre-chaos" oom -n $ns -t quote >/dev/null
    capture quote OOMKilled OutOfMemory RaiseMemoryLimit "a container is OOMKilled at its 64Mi limit" oom-at-limit
fi

if want oom-after-limit-lowered; then
    deploy ledger 256Mi
    kubectl set resources deploy ledger -n $ns -c app --limits=memory=48Mi >/dev/null
    kubectl rollout status deploy ledger -n $ns --timeout=60s >/dev/null
    "$bin/sre-chaos" oom -n $ns -t ledger >/dev/null
    capture ledger OOMKilled OutOfMemory RaiseMemoryLimit "OOMKilled right after a rollout lowered the limit from 256Mi to 48Mi" oom-after-limit-lowered
fi

if want crashloop-after-bad-args; then
    deploy policy 128Mi
    "$bin/sre-chaos" bad-rollout -n $ns -t policy >/dev/null
    capture policy CrashLoopBackOff BadRollout Rollback "a rollout adds a bad argument and the new pods crash-loop" crashloop-after-bad-args
fi

if want crashloop-no-rollout; then
    deploy user 128Mi
    "$bin/sre-chaos" crashloop -n $ns -t user >/dev/null
    capture user CrashLoopBackOff CrashLoop RestartPod "one pod crash-loops with no recent rollout" crashloop-no-rollout
fi

if want image-pull-after-rollout; then
    deploy catalog 128Mi
    kubectl set image deploy catalog -n $ns app=registry.local/catalog:does-not-exist >/dev/null
    until [[ $(kubectl get pods -n $ns -l app=catalog -o name | wc -l) -ge 2 ]]; do sleep 0.5; done
    sleep 1
    p=$(pod_of catalog)
    pod_status "$p" "{\"status\":{\"containerStatuses\":[{\"name\":\"app\",\"image\":\"registry.local/catalog:does-not-exist\",\"imageID\":\"\",\"ready\":false,\"restartCount\":0,\"state\":{\"waiting\":{\"reason\":\"ImagePullBackOff\",\"message\":\"Back-off pulling image registry.local/catalog:does-not-exist: not found\"}}}]}}"
    capture catalog ImagePullBackOff BadRollout Rollback "a rollout switches to an image tag that does not exist" image-pull-after-rollout
fi

if want image-pull-denied; then
    deploy search 128Mi
    p=$(pod_of search)
    pod_status "$p" "{\"status\":{\"containerStatuses\":[{\"name\":\"app\",\"image\":\"registry.local/search:1\",\"imageID\":\"\",\"ready\":false,\"restartCount\":0,\"state\":{\"waiting\":{\"reason\":\"ErrImagePull\",\"message\":\"pull access denied, repository does not exist or may require authorization\"}}}]}}"
    capture search ImagePullBackOff BadImage Escalate "the registry refuses the image of a long-running deployment" image-pull-denied
fi

if want unschedulable-cpu; then
    deploy batch 128Mi 1000
    capture batch Unschedulable Unschedulable Escalate "pods request 1000 CPUs; the real scheduler finds no node" unschedulable-cpu
fi

if want readiness-failing; then
    deploy front 128Mi
    p=$(pod_of front)
    pod_status "$p" "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"ContainersNotReady\",\"lastTransitionTime\":\"$(now)\"}],\"containerStatuses\":[{\"name\":\"app\",\"image\":\"registry.local/front:1\",\"imageID\":\"\",\"ready\":false,\"started\":true,\"restartCount\":0,\"state\":{\"running\":{\"startedAt\":\"$(now)\"}}}]}}"
    capture front ReadinessFailing ProbeFailure RestartPod "a running pod fails its readiness probe for longer than the grace period" readiness-failing
fi

# Faults no kubelet simulation shows: the real node's kubelet refuses or
# fails the containers itself.
if want config-missing-configmap; then
    real_deploy web <<YAML
      containers:
      - {name: app, $IMG, args: [sleep], envFrom: [{configMapRef: {name: app-config}}]}
YAML
    capture web ConfigError ConfigError Escalate "envFrom names a ConfigMap that does not exist" config-missing-configmap
fi

if want config-missing-secret-key; then
    kubectl create secret generic payments-api -n $ns --from-literal=url=https://payments.example >/dev/null
    real_deploy payments <<YAML
      containers:
      - {name: app, $IMG, args: [sleep], env: [{name: API_TOKEN, valueFrom: {secretKeyRef: {name: payments-api, key: token}}}]}
YAML
    capture payments ConfigError ConfigError Escalate "an env variable reads a key the Secret does not have" config-missing-secret-key
fi

if want config-missing-executable; then
    real_deploy runner <<YAML
      containers:
      - {name: app, $IMG, command: [/bin/report-runner]}
YAML
    capture runner ConfigError ConfigError Escalate "the container's command names an executable the image does not have" config-missing-executable
fi

if want config-failed-mount; then
    real_deploy mounter <<YAML
      containers:
      - {name: app, $IMG, args: [sleep], volumeMounts: [{name: settings, mountPath: /etc/settings}]}
      volumes: [{name: settings, configMap: {name: mounter-settings}}]
YAML
    capture mounter ConfigError ConfigError Escalate "a configMap volume names a ConfigMap that does not exist; the pod stays ContainerCreating" config-failed-mount
fi

if want config-added-by-rollout; then
    real_deploy checkout <<YAML
      containers:
      - {name: app, $IMG, args: [sleep]}
YAML
    kubectl rollout status deploy checkout -n $ns --timeout=90s >/dev/null
    kubectl set env deploy/checkout -n $ns --from=configmap/checkout-flags >/dev/null 2>&1 ||
        kubectl patch deploy checkout -n $ns --type json \
            -p '[{"op":"add","path":"/spec/template/spec/containers/0/envFrom","value":[{"configMapRef":{"name":"checkout-flags"}}]}]' >/dev/null
    capture checkout ConfigError BadRollout Rollback "a rollout adds a reference to a ConfigMap that does not exist" config-added-by-rollout
fi

if want init-crashloop; then
    real_deploy ledger-init <<YAML
      initContainers:
      - {name: migrate, $IMG, args: [exit, "3", "error: migration 0042 failed: relation accounts already exists"]}
      containers:
      - {name: app, $IMG, args: [sleep]}
YAML
    capture ledger-init InitContainerFailed InitFailure Escalate "an init container that migrates the schema exits 3 on every start" init-crashloop
fi

if want init-wait-for-dependency; then
    real_deploy accounts <<YAML
      initContainers:
      - {name: wait-for-db, $IMG, args: [exit, "1", "error: timed out after 30s waiting for postgres at db:5432"]}
      containers:
      - {name: app, $IMG, args: [sleep]}
YAML
    capture accounts InitContainerFailed InitFailure Escalate "an init container waits for a database that never answers and exits 1" init-wait-for-dependency
fi

if want init-error-bare-pod; then
    kubectl apply -n $ns -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: seed-data, labels: {app: seed-data, sre.space/protected: "true"}}
spec:
  restartPolicy: Never
  nodeSelector: {sre.space/node: real}
  tolerations: [{key: sre.space/node, operator: Equal, value: real, effect: NoSchedule}]
  terminationGracePeriodSeconds: 5
  initContainers:
  - {name: fetch-fixtures, $IMG, args: [exit, "4", "error: fixtures bucket returned 403 Forbidden"]}
  containers:
  - {name: app, $IMG, args: [sleep]}
YAML
    capture seed-data InitContainerFailed InitFailure Escalate "a bare pod with restartPolicy Never whose init container exits 4 (Init:Error)" init-error-bare-pod
fi

if want init-added-by-rollout; then
    real_deploy orders <<YAML
      containers:
      - {name: app, $IMG, args: [sleep]}
YAML
    kubectl rollout status deploy orders -n $ns --timeout=90s >/dev/null
    kubectl patch deploy orders -n $ns --type json -p '[{"op":"add","path":"/spec/template/spec/initContainers","value":[{"name":"wait-for-db","image":"sre.space/workload:e2e","imagePullPolicy":"Never","args":["exit","1","error: db:5432 did not answer"]}]}]' >/dev/null
    capture orders InitContainerFailed BadRollout Rollback "a rollout adds an init container that fails" init-added-by-rollout
fi

if want job-backoff-limit; then
    real_job nightly-report "backoffLimit: 1" <<YAML
      containers:
      - {name: app, $IMG, args: [exit, "1", "error: upstream export returned 503"]}
YAML
    capture nightly-report JobFailed JobFailure Escalate "a Job's pod exits 1 until the backoff limit is reached" job-backoff-limit
fi

if want job-deadline; then
    real_job reindex "activeDeadlineSeconds: 5" <<YAML
      containers:
      - {name: app, $IMG, args: [sleep]}
YAML
    capture reindex JobFailed JobFailure Escalate "a Job runs past its activeDeadlineSeconds" job-deadline
fi

if want job-oom; then
    real_job thumbnails "backoffLimit: 0" <<YAML
      containers:
      - {name: app, $IMG, args: [alloc, "256"], resources: {limits: {memory: 64Mi}, requests: {memory: 64Mi}}}
YAML
    capture thumbnails OOMKilled OutOfMemory Escalate "a Job's only pod is OOMKilled at its 64Mi limit; the Job fails, and its failure joins the OOM incident" job-oom
fi

if want liveness-nothing-listens; then
    real_deploy gateway <<YAML
      containers:
      - name: app
        image: sre.space/workload:e2e
        imagePullPolicy: Never
        args: [serve, "8080"]
        livenessProbe: {httpGet: {path: /healthz, port: 8081}, periodSeconds: 1, failureThreshold: 1}
YAML
    capture gateway CrashLoopBackOff ProbeFailure Escalate "the liveness probe asks port 8081, where nothing listens; the kubelet kills the container" liveness-nothing-listens
fi

if want liveness-wrong-path; then
    real_deploy profile <<YAML
      containers:
      - name: app
        image: sre.space/workload:e2e
        imagePullPolicy: Never
        args: [serve, "8080"]
        livenessProbe: {httpGet: {path: /fail, port: 8080}, periodSeconds: 1, failureThreshold: 1}
YAML
    capture profile CrashLoopBackOff ProbeFailure Escalate "the liveness probe asks a path that answers 405; the kubelet kills the container" liveness-wrong-path
fi

if want crashloop-logged-error; then
    real_deploy inventory <<YAML
      containers:
      - {name: app, $IMG, args: [exit, "1", "error: cannot connect to postgres at db:5432: connection refused"]}
YAML
    capture inventory CrashLoopBackOff CrashLoop RestartPod "the process logs a connection error and exits 1 on every start" crashloop-logged-error
fi

if want oom-real-node; then
    real_deploy resize <<YAML
      containers:
      - {name: app, $IMG, args: [alloc, "256"], resources: {limits: {memory: 64Mi}, requests: {memory: 64Mi}}}
YAML
    capture resize OOMKilled OutOfMemory RaiseMemoryLimit "the kernel OOM-kills a process allocating 256 MiB under a 64Mi limit" oom-real-node
fi

if want rollout-stalled; then
    PROGRESS=10 real_deploy pricing <<YAML
      containers:
      - {name: app, $IMG, args: [sleep]}
YAML
    kubectl rollout status deploy pricing -n $ns --timeout=90s >/dev/null
    kubectl set image deploy pricing -n $ns app=sre.space/workload:missing >/dev/null
    capture pricing RolloutStalled BadRollout Rollback "a rollout to an image the node does not have passes its progress deadline" rollout-stalled
fi

# The control plane alone refuses these: no container needs to run.
if want storage-missing-class; then
    kubectl apply -n $ns -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: reports}
spec: {accessModes: [ReadWriteOnce], storageClassName: fast-ssd, resources: {requests: {storage: 1Gi}}}
YAML
    SIMULATED=1 real_deploy archive <<YAML
      containers: [{name: app, $SIM}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: reports}}]
YAML
    capture archive Unschedulable StorageUnavailable Escalate "a claim names a StorageClass that does not exist" storage-missing-class
fi

if want storage-no-matching-volume; then
    kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: scenarios-small-pv}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], storageClassName: "", hostPath: {path: /tmp/scenarios-small-pv}}
YAML
    kubectl apply -n $ns -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: media}
spec: {accessModes: [ReadWriteOnce], storageClassName: "", resources: {requests: {storage: 50Gi}}}
YAML
    SIMULATED=1 real_deploy gallery <<YAML
      containers: [{name: app, $SIM}]
      volumes: [{name: media, persistentVolumeClaim: {claimName: media}}]
YAML
    capture gallery Unschedulable StorageUnavailable Escalate "a claim of 50Gi without a class; the only volume has 1Gi" storage-no-matching-volume
fi

if want storage-access-mode; then
    kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: scenarios-rwo-pv}
spec: {capacity: {storage: 5Gi}, accessModes: [ReadWriteOnce], storageClassName: manual, hostPath: {path: /tmp/scenarios-rwo-pv}}
YAML
    kubectl apply -n $ns -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: shared}
spec: {accessModes: [ReadWriteMany], storageClassName: manual, resources: {requests: {storage: 1Gi}}}
YAML
    SIMULATED=1 real_deploy uploads <<YAML
      containers: [{name: app, $SIM}]
      volumes: [{name: shared, persistentVolumeClaim: {claimName: shared}}]
YAML
    capture uploads Unschedulable StorageUnavailable Escalate "a claim asks ReadWriteMany; the class's only volume offers ReadWriteOnce" storage-access-mode
fi

# Node pressure, written into a simulated pod's status as the kubelet's
# eviction manager does.
if want node-evicted-memory; then
    deploy cache 64Mi
    p=$(pod_of cache)
    node=$(kubectl get pod "$p" -n $ns -o jsonpath='{.spec.nodeName}')
    pod_status "$p" "{\"status\":{\"phase\":\"Failed\",\"reason\":\"Evicted\",\"message\":\"The node was low on resource: memory. Threshold quantity: 100Mi, available: 61440Ki. Container app was using 48Mi, request is 16Mi, has larger consumption of memory. \",\"conditions\":[{\"type\":\"DisruptionTarget\",\"status\":\"True\",\"reason\":\"TerminationByKubelet\",\"message\":\"The node was low on resource: memory. Threshold quantity: 100Mi, available: 61440Ki. \",\"lastTransitionTime\":\"$(now)\"}],\"containerStatuses\":[{\"name\":\"app\",\"image\":\"registry.local/cache:1\",\"imageID\":\"\",\"ready\":false,\"restartCount\":0,\"state\":{\"terminated\":{\"exitCode\":137,\"reason\":\"ContainerStatusUnknown\",\"message\":\"The container could not be located when the pod was terminated\"}}}]}}"
    capture cache NodeFailure NodeFailure Escalate "the kubelet evicts a pod because its node ($node) is low on memory" node-evicted-memory
fi

if want node-evicted-disk; then
    deploy indexer 64Mi
    p=$(pod_of indexer)
    pod_status "$p" "{\"status\":{\"phase\":\"Failed\",\"reason\":\"Evicted\",\"message\":\"The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 512Mi. \",\"conditions\":[{\"type\":\"DisruptionTarget\",\"status\":\"True\",\"reason\":\"TerminationByKubelet\",\"message\":\"The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 512Mi. \",\"lastTransitionTime\":\"$(now)\"}]}}"
    capture indexer NodeFailure NodeFailure Escalate "the kubelet evicts a pod because its node is low on disk" node-evicted-disk
fi

# Admission: a quota or a limit refuses the pods, so no pod exists. Last,
# because they refuse every later pod of the namespace too.
if want quota-memory; then
    kubectl apply -n $ns -f - >/dev/null <<YAML
apiVersion: v1
kind: ResourceQuota
metadata: {name: team-memory}
spec: {hard: {limits.memory: 32Mi}}
YAML
    SIMULATED=1 real_deploy billing <<YAML
      containers: [{name: app, $SIM}]
YAML
    capture billing FailedCreate QuotaExceeded Escalate "a ResourceQuota of 32Mi of limits refuses a pod limited to 64Mi" quota-memory
    kubectl delete resourcequota team-memory -n $ns >/dev/null
fi

if want limitrange-max; then
    kubectl apply -n $ns -f - >/dev/null <<YAML
apiVersion: v1
kind: LimitRange
metadata: {name: container-max}
spec: {limits: [{type: Container, max: {memory: 32Mi}}]}
YAML
    SIMULATED=1 real_deploy reports <<YAML
      containers: [{name: app, $SIM}]
YAML
    capture reports FailedCreate QuotaExceeded Escalate "a LimitRange's maximum of 32Mi refuses a container limited to 64Mi" limitrange-max
    kubectl delete limitrange container-max -n $ns >/dev/null
fi

if want pod-security-refusal; then
    kubectl label namespace $ns pod-security.kubernetes.io/enforce=baseline --overwrite >/dev/null
    SIMULATED=1 real_deploy sniffer <<YAML
      hostNetwork: true
      containers: [{name: app, $SIM}]
YAML
    capture sniffer FailedCreate ConfigError Escalate "Pod Security (baseline) refuses a pod on the host network" pod-security-refusal
    kubectl label namespace $ns pod-security.kubernetes.io/enforce- >/dev/null
fi

# Controls: nothing is wrong, and nothing may be opened.
if want job-completes; then
    real_job export-ok "backoffLimit: 1" <<YAML
      containers:
      - {name: app, $IMG, args: [exit, "0", "export done"]}
YAML
    kubectl wait --for=condition=Complete job/export-ok -n $ns --timeout=90s >/dev/null
    sleep 10
    control export-ok "a Job whose pod exits 0 completes" job-completes
fi

if want cronjob-succeeds; then
    kubectl apply -n $ns -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: CronJob
metadata: {name: cleanup, labels: {app: cleanup}}
spec:
  schedule: "* * * * *"
  jobTemplate:
    metadata: {labels: {app: cleanup}}
    spec:
      template:
        metadata: {labels: {app: cleanup, sre.space/protected: "true"}}
        spec:
          restartPolicy: Never
          nodeSelector: {sre.space/node: real}
          tolerations: [{key: sre.space/node, operator: Equal, value: real, effect: NoSchedule}]
          containers:
          - {name: app, $IMG, args: [exit, "0"]}
YAML
    until kubectl get jobs -n $ns -l app=cleanup -o jsonpath='{.items[*].status.succeeded}' | grep -q 1; do sleep 2; done
    sleep 10
    control cleanup "a CronJob's run succeeds" cronjob-succeeds
fi

if want rollout-changes-image; then
    deploy storefront 64Mi
    kubectl set image deploy storefront -n $ns app=registry.local/storefront:2 >/dev/null
    kubectl rollout status deploy storefront -n $ns --timeout=90s >/dev/null
    sleep 10
    control storefront "a rollout changes the image and completes" rollout-changes-image
fi

if want pod-deleted-by-person; then
    real_deploy notes <<YAML
      containers:
      - {name: app, $IMG, args: [sleep]}
YAML
    kubectl rollout status deploy notes -n $ns --timeout=90s >/dev/null
    kubectl delete pod -n $ns "$(pod_of notes)" --wait=false >/dev/null
    sleep 1
    control notes "a person deletes a pod; its replacement starts" pod-deleted-by-person-terminating
    kubectl rollout status deploy notes -n $ns --timeout=90s >/dev/null
    sleep 10
    control notes "a person deletes a pod; its replacement runs" pod-deleted-by-person
fi

kubectl delete pv scenarios-small-pv scenarios-rwo-pv --ignore-not-found >/dev/null

kubectl delete namespace $ns --wait=false >/dev/null
