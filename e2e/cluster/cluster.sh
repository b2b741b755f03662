#!/usr/bin/env bash
# The local Kubernetes cluster: real etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler on 127.0.0.1, with kwok
# simulating the nodes and the kubelets. Unless SIGNALS=0, also the Kafka
# broker and Jaeger of e2e/cluster/signals.sh. With SRE_SPACE_NODE=real (`make
# cluster-up NODE=real`), also one real node: a kubelet with containerd
# (e2e/cluster/real-node.sh, docs/real-node.md).
#
#   cluster.sh up       build what is missing, start everything, wait until ready
#   cluster.sh down     stop everything and drop the cluster's data
#   cluster.sh status   say what runs and how to reach it
#   cluster.sh env      print the export line for KUBECONFIG, PATH and SRE_SPACE_REAL_NODE
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PKI=$STATE_DIR/pki
# Read by the process helpers of lib.sh (start, running, wait_for, ...).
LOGS=$STATE_DIR/logs
PIDS=$STATE_DIR/pids
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
source "$E2E_DIR/cluster/real-node.sh"
SIGNALS_SH=$E2E_DIR/cluster/signals.sh

ports_of() {
    case $1 in
        etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
        kube-apiserver) echo "$APISERVER_PORT" ;;
        kube-controller-manager) echo "$KCM_PORT" ;;
        kube-scheduler) echo "$SCHEDULER_PORT" ;;
        kwok) echo "$KWOK_PORT" ;;
        kubelet) echo "$KUBELET_PORT $KUBELET_HEALTHZ_PORT" ;;
        kube-proxy) echo "$KUBE_PROXY_HEALTHZ_PORT $KUBE_PROXY_METRICS_PORT" ;;
    esac
}

# A certificate signed by the CA, made in the current folder.
cert() { # name CN O usage [SAN]
    local ext="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=$4"
    [[ -n ${5:-} ]] && ext+="\nsubjectAltName=$5"
    local subj="/CN=$2"
    [[ -n $3 ]] && subj+="/O=$3"
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -out "$1.crt" -extfile <(printf '%b' "$ext") 2>/dev/null
    rm -f "$1.csr"
}

# Certificates: one CA, a serving certificate for the API server, a client
# certificate per component (and one for the API server to call kubelets
# with), and the service-account signing key.
# The API server's names: with the real node, also the node's address,
# where its pods reach it.
apiserver_sans() {
    local sans="IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    [[ -n ${REAL_NODE_IP:-} ]] && sans+=",IP:$REAL_NODE_IP"
    echo "$sans"
}

make_pki() {
    if [[ -f $PKI/done ]]; then
        # Certificates kept from before the real node existed lack this one.
        [[ -f $PKI/apiserver-kubelet-client.crt ]] ||
            (cd "$PKI" && cert apiserver-kubelet-client kube-apiserver-kubelet-client "" clientAuth)
        # Nor does the serving certificate name the node's address (which
        # may also have changed since).
        if [[ -n ${REAL_NODE_IP:-} ]] &&
            ! openssl x509 -in "$PKI/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep -qw "IP Address:$REAL_NODE_IP"; then
            log "the API server's certificate does not name $REAL_NODE_IP: making it again"
            (cd "$PKI" && cert apiserver kube-apiserver "" serverAuth "$(apiserver_sans)")
        fi
        return 0
    fi
    log "generating certificates in $PKI"
    rm -rf "$PKI" && mkdir -p "$PKI"
    (
        cd "$PKI"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=sre-space-local-ca" 2>/dev/null
        cert apiserver kube-apiserver "" serverAuth "$(apiserver_sans)"
        cert admin sre-space-admin system:masters clientAuth
        cert kube-controller-manager system:kube-controller-manager "" clientAuth
        cert kube-scheduler system:kube-scheduler "" clientAuth
        cert kwok kwok-controller system:masters clientAuth
        cert apiserver-kubelet-client kube-apiserver-kubelet-client "" clientAuth
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        touch done
    )
}

kubeconfig() { # user file
    cat >"$2" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: sre-space-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: sre-space-local
  context:
    cluster: sre-space-local
    user: $1
current-context: sre-space-local
YAML
}

healthz() { # port path
    curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://127.0.0.1:$1$2"
}

# The controller manager and scheduler serve /healthz with a self-signed
# certificate of their own, on loopback.
local_healthz() { # port
    curl -fsSk --max-time 2 "https://127.0.0.1:$1/healthz"
}

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

nodes_yaml() {
    for i in $(seq 0 $((KWOK_NODES - 1))); do
        cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
    topology.kubernetes.io/zone: zone-$((i % 3))
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
YAML
    done
}

# kwok's stages (how simulated nodes and pods move through their lives) are
# the defaults kwokctl uses, taken from the pinned kwok module itself.
kwok_config() {
    local dir
    dir=$(cd "$E2E_DIR/build/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
    [[ -d $dir/kustomize/stage ]] || die "kwok module source not found (run: cd e2e/build/kwok && go mod download)"
    local f
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        echo "---"
        cat "$dir/kustomize/stage/$f"
    done
    # Our own stages, which simulate the faults SRE-Space must handle.
    for f in "$E2E_DIR"/cluster/stages/*.yaml; do
        echo "---"
        cat "$f"
    done
}

cmd_up() {
    local start_time=$SECONDS
    "$E2E_DIR/cluster/build.sh"
    mkdir -p "$LOGS" "$PIDS"
    if cmd_status >/dev/null 2>&1 && healthz "$APISERVER_PORT" /readyz >/dev/null 2>&1; then
        if [[ $SRE_SPACE_NODE == real ]] && ! real_node_status >/dev/null 2>&1; then
            log "already running; adding the real node"
            real_node_up
        else
            log "already running"
        fi
        if [[ $SIGNALS == 1 ]]; then "$SIGNALS_SH" up >/dev/null; fi
        cmd_status
        return 0
    fi
    # Kafka and Jaeger start first and get ready while the control plane does.
    if [[ $SIGNALS == 1 ]]; then "$SIGNALS_SH" start; fi
    [[ $SRE_SPACE_NODE == real ]] && real_node_ip
    make_pki
    kwok_config >"$STATE_DIR/kwok.yaml"
    kubeconfig admin "$KUBECONFIG_PATH"
    for c in kube-controller-manager kube-scheduler kwok; do kubeconfig "$c" "$STATE_DIR/$c.kubeconfig"; done

    start etcd "$ETCD_BIN/etcd" \
        --name local --data-dir "$STATE_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
        --quota-backend-bytes 4294967296 --unsafe-no-fsync --log-level warn
    wait_for etcd 60 curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

    # Loopback only, unless the real node's pods must reach it: then on
    # every address, published as the `kubernetes` Service's endpoint.
    local listen=(--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --endpoint-reconciler-type none)
    if [[ $SRE_SPACE_NODE == real ]]; then
        listen=(--bind-address 0.0.0.0 --advertise-address "$REAL_NODE_IP")
    fi
    start kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        "${listen[@]}" --secure-port "$APISERVER_PORT" \
        --cert-dir "$STATE_DIR/apiserver-certs" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --service-cluster-ip-range 10.96.0.0/16 \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP,Hostname \
        --allow-privileged=true \
        --profiling=false --v 1
    wait_for kube-apiserver 120 healthz "$APISERVER_PORT" /readyz

    local qps_flags=()
    if [[ -n $CLUSTER_API_QPS ]]; then
        qps_flags=(--kube-api-qps "$CLUSTER_API_QPS" --kube-api-burst "$((CLUSTER_API_QPS * 2))")
    fi
    start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
        --kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --use-service-account-credentials=true --leader-elect=false \
        "${qps_flags[@]}" --profiling=false --v 1
    start kube-scheduler "$K8S_BIN/kube-scheduler" \
        --kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false \
        "${qps_flags[@]}" --profiling=false --v 1
    wait_for kube-controller-manager 60 local_healthz "$KCM_PORT"
    wait_for kube-scheduler 60 local_healthz "$SCHEDULER_PORT"

    start kwok "$KWOK_BIN/kwok" \
        --kubeconfig "$STATE_DIR/kwok.kubeconfig" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
        --disregard-status-with-annotation-selector kwok.x-k8s.io/status=custom \
        --node-ip 10.0.0.1 --cidr 10.0.0.1/16 \
        --server-address "127.0.0.1:$KWOK_PORT" \
        --node-lease-duration-seconds 40 \
        --config "$STATE_DIR/kwok.yaml"
    wait_for kwok 60 curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"

    nodes_yaml | kubectl_ apply -f - >/dev/null
    wait_for kube-apiserver 60 kubectl_ wait --for=condition=Ready node --all --timeout=5s
    # Pods are refused until the service-account controller made `default`.
    wait_for kube-controller-manager 60 kubectl_ get serviceaccount default -n default
    [[ $SRE_SPACE_NODE == real ]] && real_node_up
    if [[ $SIGNALS == 1 ]]; then "$SIGNALS_SH" up >/dev/null; fi
    log "ready in $((SECONDS - start_time)) s"
    cmd_status
}

cmd_down() {
    # The operator started by `make demo`, if any, goes first.
    local extra
    for extra in "$PIDS"/*; do
        [[ -f $extra ]] || continue
        local name=${extra##*/}
        [[ " ${COMPONENTS[*]} ${NODE_COMPONENTS[*]} " == *" $name "* ]] && continue
        kill -TERM "$(cat "$extra")" 2>/dev/null && log "stopped $name"
        rm -f "$extra"
    done
    # The real node, if any, while the API server can still drain it.
    real_node_down
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        stop_component "${COMPONENTS[i]}"
    done
    # The next cluster starts from empty data; certificates are kept.
    rm -rf "$STATE_DIR/etcd" "$LOGS"
    # Kafka and Jaeger too, whether or not SIGNALS is set now.
    "$SIGNALS_SH" down
}

cmd_status() {
    local ok=0
    status_of "${COMPONENTS[@]}" || ok=1
    if real_node_enabled; then real_node_status || ok=1; fi
    if ((ok == 0)); then
        echo "  Kubernetes $K8S_VERSION at https://127.0.0.1:$APISERVER_PORT, $(kubectl_ get nodes --no-headers -l type=kwok 2>/dev/null | wc -l) kwok nodes"
        echo "  kubeconfig: $KUBECONFIG_PATH"
        echo "  to use it:  $(cmd_env)"
    fi
    if [[ $SIGNALS == 1 ]]; then "$SIGNALS_SH" status || true; fi
    return $ok
}

# SRE_SPACE_REAL_NODE names the real node when it runs, and is empty
# otherwise: run-tests.sh runs the real-node tests only when it is set.
cmd_env() {
    local node=""
    real_node_enabled && real_node_status >/dev/null 2>&1 && node=$REAL_NODE_NAME
    echo "export KUBECONFIG=$KUBECONFIG_PATH PATH=$LOCAL_BIN:\$PATH SRE_SPACE_REAL_NODE=$node"
    if [[ $SIGNALS == 1 ]]; then "$SIGNALS_SH" env; fi
}

# Stops the named components (their data is kept) and starts them again,
# as a crash and restart of the control plane would.
cmd_restart() {
    local c pid
    for c in "$@"; do
        [[ " ${COMPONENTS[*]} " == *" $c "* ]] || die "unknown component $c (one of: ${COMPONENTS[*]})"
        pid=$(pid_of "$c") || continue
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$PIDS/$c"
        log "killed $c"
    done
    cmd_up >/dev/null
    log "restarted $*"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    restart) shift; cmd_restart "$@" ;;
    *) echo "usage: $0 up|down|status|env|restart COMPONENT..." >&2; exit 2 ;;
esac
