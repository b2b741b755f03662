# The real node: a kubelet built from the same Kubernetes release as the
# control plane, with containerd, runc and the bridge CNI plugin, registered
# beside the kwok nodes. Sourced by cluster.sh, whose helpers it uses (start,
# wait_for, running, pid_of, status_of, stop_component from lib.sh; kubectl_).
# See docs/real-node.md.
# shellcheck shell=bash

NODE_DIR=$STATE_DIR/real-node
# containerd's state and sockets: a short path, since a unix socket's path
# must stay under 108 bytes whatever the clone's folder.
NODE_RUN=/run/sre-space/$REAL_NODE_NAME
CONTAINERD_SOCK=$NODE_RUN/containerd.sock
NODE_COMPONENTS=(containerd kubelet kube-proxy)
KUBE_PROXY_HEALTHZ_PORT=${KUBE_PROXY_HEALTHZ_PORT:-10256}
KUBE_PROXY_METRICS_PORT=${KUBE_PROXY_METRICS_PORT:-10249}
# The label and taint of the real node: a pod lands there only with a
# matching nodeSelector and toleration, so ordinary test pods stay on kwok.
REAL_NODE_LABEL=sre.space/node=real
# The test workload, imported into containerd under both names; the pause
# name is the pod sandbox image (the workload's default command is `sleep`).
WORKLOAD_IMAGE=sre.space/workload:e2e
PAUSE_IMAGE=sre.space/pause:e2e
# The kernel settings the kubelet (the first six) and the bridge plugin
# (forwarding) change; saved before the node starts and restored by `down`.
HOST_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
    kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/ip_forward)

real_node_enabled() { [[ -f $NODE_DIR/enabled ]]; }
kubelet_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" >/dev/null 2>&1; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# The v1 hierarchies the kubelet and runc use: every mounted controller
# except the unified (v2) part of a hybrid layout.
cgroup_v1_dirs() {
    awk '$3 == "cgroup" { print $2 }' /proc/self/mounts
}
# All hierarchies, the unified one included: runc makes each container's
# cgroup there too on a hybrid host.
cgroup_all_dirs() {
    awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts
}

real_node_preflight() {
    ((EUID == 0)) || die "the real node needs root (the kubelet and containerd manage cgroups, mounts and network namespaces)"
    SRE_SPACE_NODE=real "$E2E_DIR/install-deps.sh"
    local tool
    for tool in containerd containerd-shim-runc-v2 runc ctr ip iptables; do
        command -v "$tool" >/dev/null || die "$tool is missing (run: make deps NODE=real)"
    done
    [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local && -x $CNI_BIN_DIR/loopback ]] ||
        die "the CNI plugins are missing from $CNI_BIN_DIR (Debian package containernetworking-plugins)"
    if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
        die "this host uses cgroup v2 only; the real node is set up and tested for cgroup v1 (see docs/real-node.md)"
    fi
    [[ -w /sys/fs/cgroup/memory ]] || die "no writable cgroup v1 memory controller at /sys/fs/cgroup/memory"
    real_node_ip
}

# The node's address: REAL_NODE_IP, or the source address of the default
# route. The API server also listens there when the node runs, so that the
# node's pods reach it (through the `kubernetes` Service and kube-proxy).
real_node_ip() {
    REAL_NODE_IP=${REAL_NODE_IP:-$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1) }')}
    [[ -n $REAL_NODE_IP ]] || die "cannot tell this host's address for the node (set REAL_NODE_IP)"
}

# The workload binary (static, CGO_ENABLED=0) packed into an image archive
# by our go-containerregistry tool. Both builds are quick with a warm Go
# cache; the archive's digest depends only on the binary.
real_node_image() {
    build_image_tool
    mkdir -p "$NODE_DIR"
    (cd "$E2E_DIR/build/workload" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$NODE_DIR/sre-workload" .)
    "$IMAGE_TOOL" -binary "$NODE_DIR/sre-workload" -ref "$WORKLOAD_IMAGE" -ref "$PAUSE_IMAGE" \
        -arg sleep -out "$NODE_DIR/workload.tar"
}

real_node_import() { # digest
    local ref missing=0
    for ref in "$WORKLOAD_IMAGE" "$PAUSE_IMAGE"; do
        [[ $(ctr_ images ls "name==$ref" | awk 'NR > 1 { print $3 }') == "$1" ]] || missing=1
    done
    ((missing)) || return 0
    log "importing $WORKLOAD_IMAGE and $PAUSE_IMAGE ($1) into containerd"
    ctr_ images import "$NODE_DIR/workload.tar" >/dev/null
}

real_node_pki() {
    if [[ ! -f $PKI/kubelet-$REAL_NODE_NAME.crt ]]; then
        log "making the client certificate of node $REAL_NODE_NAME"
        (cd "$PKI" && cert "kubelet-$REAL_NODE_NAME" "system:node:$REAL_NODE_NAME" system:nodes clientAuth)
    fi
    # kube-proxy's user: the default ClusterRoleBinding system:node-proxier
    # grants it what it reads (Services, EndpointSlices, Nodes).
    if [[ ! -f $PKI/kube-proxy.crt ]]; then
        (cd "$PKI" && cert kube-proxy system:kube-proxy "" clientAuth)
    fi
}

# Whether this process may lower an oom_score_adj (CAP_SYS_RESOURCE, bit 24
# of the effective capabilities). Some VMs and containers drop it; runc then
# cannot give a sandbox the -998 the kubelet asks for, and fails.
can_lower_oom_score() {
    local caps
    caps=$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status)
    (((0x$caps >> 24) & 1))
}

real_node_configs() {
    mkdir -p "$NODE_DIR/net.d" "$NODE_RUN"
    local restrict_oom=false
    if ! can_lower_oom_score; then
        restrict_oom=true
        log "no CAP_SYS_RESOURCE here: containers' oom_score_adj will not go below containerd's own"
    fi
    cat >"$NODE_DIR/containerd.toml" <<TOML
version = 2
root = "$NODE_DIR/containerd"
state = "$NODE_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = $restrict_oom
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "$NODE_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_DIR/net.d"
TOML
    # One bridge on the host, one address per pod from host-local: pods reach
    # each other over the bridge and the host through its gateway address.
    local bridge
    bridge=$(
        cat <<JSON
    "type": "bridge",
    "bridge": "$REAL_NODE_BRIDGE",
    "isGateway": true,
    "ipMasq": true,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{ "subnet": "$REAL_NODE_POD_CIDR" }]],
      "routes": [{ "dst": "0.0.0.0/0" }],
      "dataDir": "$NODE_DIR/cni-ipam"
    }
JSON
    )
    local network="\"cniVersion\": \"1.0.0\", \"name\": \"sre-space-$REAL_NODE_NAME\""
    printf '{ %s,\n  "plugins": [{\n%s\n  }]\n}\n' "$network" "$bridge" >"$NODE_DIR/net.d/10-sre-space.conflist"
    # The same network as one plugin's configuration, for `down` to call
    # the plugin itself when the kubelet could not tear a pod down.
    printf '{ %s,\n%s\n}\n' "$network" "$bridge" >"$NODE_DIR/bridge.json"
    cat >"$NODE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1, which the kubelet refuses since 1.35 unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
# Pods' cgroups go under /$REAL_NODE_NAME/kubepods in each hierarchy.
cgroupRoot: /$REAL_NODE_NAME
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $REAL_NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
failSwapOn: false
podLogsDir: $NODE_DIR/pod-logs
makeIPTablesUtilChains: false
registerWithTaints:
- {key: sre.space/node, value: real, effect: NoSchedule}
# The images have no registry to come back from: never collect them, and
# evict only when the machine is really out of room.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
resolvConf: /etc/resolv.conf
maxPods: 30
YAML
    kubeconfig "kubelet-$REAL_NODE_NAME" "$NODE_DIR/kubelet.kubeconfig"
    kubeconfig kube-proxy "$NODE_DIR/kube-proxy.kubeconfig"
}

# The kubelet's cgroup root must exist in every hierarchy before it starts;
# a new cpuset cgroup starts with no CPUs or memory nodes, so it gets its
# parent's.
real_node_cgroups() {
    local dir f
    for dir in $(cgroup_v1_dirs); do
        mkdir -p "$dir/$REAL_NODE_NAME"
        for f in cpuset.cpus cpuset.mems; do
            if [[ -f $dir/$f && -z $(cat "$dir/$REAL_NODE_NAME/$f") ]]; then
                cat "$dir/$f" >"$dir/$REAL_NODE_NAME/$f"
            fi
        done
    done
}

real_node_save_sysctls() {
    [[ -f $NODE_DIR/sysctl.saved ]] && return 0
    local k
    for k in "${HOST_SYSCTLS[@]}"; do echo "$k $(cat "/proc/sys/$k")"; done >"$NODE_DIR/sysctl.saved"
}

real_node_up() {
    local start_time=$SECONDS digest
    real_node_preflight
    mkdir -p "$NODE_DIR"
    touch "$NODE_DIR/enabled"
    digest=$(real_node_image | tail -n 1)
    real_node_pki
    real_node_configs

    start containerd containerd --config "$NODE_DIR/containerd.toml"
    wait_for containerd 30 ctr_ version
    real_node_import "$digest"

    real_node_cgroups
    real_node_save_sysctls
    kubectl_ apply -f - >/dev/null <<YAML
# The API server reaches the kubelet (logs, exec) with this client
# certificate; the kubelet asks the API server whether it may.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: sre-space:kube-apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
YAML
    start kubelet "$K8S_BIN/kubelet" \
        --config "$NODE_DIR/kubelet.yaml" \
        --kubeconfig "$NODE_DIR/kubelet.kubeconfig" \
        --hostname-override "$REAL_NODE_NAME" --node-ip "$REAL_NODE_IP" \
        --node-labels "$REAL_NODE_LABEL" \
        --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet-certs" \
        --v 1
    wait_for kubelet 60 kubelet_healthy
    wait_for kubelet 120 kubectl_ wait --for=condition=Ready "node/$REAL_NODE_NAME" --timeout=5s
    real_node_proxy
    log "real node $REAL_NODE_NAME ($REAL_NODE_IP, pods in $REAL_NODE_POD_CIDR) ready in $((SECONDS - start_time)) s"
}

# kube-proxy (iptables mode) makes Services' cluster addresses answer on
# the node, the `kubernetes` Service among them: a pod there reaches the API
# server with in-cluster configuration, as in any cluster. It leaves the
# kernel's conntrack settings and localhost node ports alone (the VM refuses
# some of those writes, and nothing here needs them).
real_node_proxy() {
    if ! kubectl_ get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o name 2>/dev/null | grep -q .; then
        log "warning: the API server publishes no address for the kubernetes Service (it was started without NODE=real): pods on $REAL_NODE_NAME cannot reach it; restart the cluster with NODE=real"
    fi
    start kube-proxy "$K8S_BIN/kube-proxy" \
        --kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" \
        --hostname-override "$REAL_NODE_NAME" \
        --proxy-mode iptables --cluster-cidr "$REAL_NODE_POD_CIDR" \
        --conntrack-max-per-core 0 \
        --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
        --iptables-localhost-nodeports=false \
        --healthz-bind-address "127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT" \
        --metrics-bind-address "127.0.0.1:$KUBE_PROXY_METRICS_PORT" \
        --v 1
    wait_for kube-proxy 60 curl -fsS --max-time 2 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
}

# Stops the real node and undoes what it did to the host: pods first,
# through the kubelet, so that their network and mounts are torn down as
# usual; then anything left.
real_node_down() {
    real_node_enabled || [[ -d $NODE_RUN ]] || return 0
    if kubelet_healthy && running kube-apiserver; then
        kubectl_ delete pods --all-namespaces --field-selector "spec.nodeName=$REAL_NODE_NAME" \
            --grace-period 5 --wait --timeout 60s >/dev/null 2>&1 ||
            log "warning: the pods of $REAL_NODE_NAME did not all go within 60 s"
    fi
    stop_component kubelet
    stop_component kube-proxy
    # Its chains (KUBE-*) in the host's tables.
    [[ -x $K8S_BIN/kube-proxy ]] && "$K8S_BIN/kube-proxy" --cleanup --proxy-mode iptables >/dev/null 2>&1 || true
    if running containerd; then
        # Pods the kubelet did not tear down (it had crashed, say) still
        # have a network namespace, an address and masquerading rules.
        local id netns
        for id in $(ctr_ containers ls -q 'labels."io.cri-containerd.kind"==sandbox' 2>/dev/null); do
            # Host-network pods (the demo services) have no namespace of
            # their own: nothing to find, nothing to undo.
            netns=$(ctr_ containers info "$id" 2>/dev/null | grep -o '"/[^"]*/netns/[^"]*"' | tr -d '"' | head -n 1 || true)
            [[ -n $netns && -e $netns ]] || continue
            CNI_COMMAND=DEL CNI_CONTAINERID=$id CNI_NETNS=$netns CNI_IFNAME=eth0 CNI_PATH=$CNI_BIN_DIR \
                "$CNI_BIN_DIR/bridge" <"$NODE_DIR/bridge.json" >/dev/null 2>&1 ||
                log "warning: the bridge plugin could not release sandbox $id"
            umount "$netns" 2>/dev/null || true
            rm -f "$netns"
        done
        local c
        for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
        sleep 0.5
        for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true; done
        for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
    fi
    stop_component containerd
    # A container's shim outlives containerd by design; ours are the ones
    # serving our containerd's socket.
    local pid
    for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK( |$)" || true); do
        if kill -KILL "$pid" 2>/dev/null; then log "stopped a leftover shim (pid $pid)"; fi
    done
    # Mounts under the node's folders (pod volumes, container root
    # filesystems, sandbox /dev/shm), deepest first.
    local mnt
    while IFS= read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" || log "warning: cannot unmount $mnt"
    done < <(awk -v a="$NODE_DIR/" -v b="$NODE_RUN/" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/self/mounts | sort -r)
    local dir
    for dir in $(cgroup_all_dirs); do
        [[ -d $dir/$REAL_NODE_NAME ]] || continue
        find "$dir/$REAL_NODE_NAME" -depth -type d -exec rmdir {} + 2>/dev/null ||
            log "warning: cgroup $dir/$REAL_NODE_NAME is still in use"
    done
    real_node_forget_nat_rules
    if ip link show "$REAL_NODE_BRIDGE" >/dev/null 2>&1; then
        ip link delete "$REAL_NODE_BRIDGE" || log "warning: cannot delete the bridge $REAL_NODE_BRIDGE"
    fi
    # The kubelet's links to our pods' logs; containerd's fixed folders for
    # shim sockets and fifos, if nothing else uses them.
    find /var/log/containers -maxdepth 1 -lname "$NODE_DIR/*" -delete 2>/dev/null || true
    rmdir /run/containerd/s /run/containerd/fifo /run/containerd 2>/dev/null || true
    if [[ -f $NODE_DIR/sysctl.saved ]]; then
        local k v
        while read -r k v; do echo "$v" >"/proc/sys/$k"; done <"$NODE_DIR/sysctl.saved"
    fi
    if awk -v a="$NODE_DIR/" -v b="$NODE_RUN/" 'index($2, a) == 1 || index($2, b) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
        log "warning: mounts remain under $NODE_DIR or $NODE_RUN; not deleting them"
    else
        rm -rf "$NODE_DIR" "$NODE_RUN"
        rmdir "$(dirname "$NODE_RUN")" 2>/dev/null || true
    fi
    log "stopped the real node $REAL_NODE_NAME"
}

# The bridge plugin's masquerading rules carry our network's name in their
# comment; any left by a pod that was never torn down go, with their chains.
real_node_forget_nat_rules() {
    command -v iptables >/dev/null || return 0
    local rule chain
    while IFS= read -r rule; do
        chain=$(grep -o -- '-j CNI-[0-9a-f]*' <<<"$rule" | cut -c4-) || true
        eval "iptables -t nat ${rule/#-A/-D}" 2>/dev/null || true
        if [[ -n $chain ]]; then
            iptables -t nat -F "$chain" 2>/dev/null || true
            iptables -t nat -X "$chain" 2>/dev/null || true
        fi
    done < <(iptables -t nat -S POSTROUTING 2>/dev/null | grep -F "name: \\\"sre-space-$REAL_NODE_NAME\\\"" || true)
}

real_node_status() {
    local ok=0
    status_of "${NODE_COMPONENTS[@]}" || ok=1
    if ((ok == 0)) && ! kubelet_healthy; then
        echo "  kubelet does not answer on 127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
        ok=1
    fi
    if ((ok == 0)); then
        echo "  real node $REAL_NODE_NAME: $(kubectl_ get node "$REAL_NODE_NAME" --no-headers 2>/dev/null | awk '{ print $2 }'), label $REAL_NODE_LABEL, taint sre.space/node=real:NoSchedule, image $WORKLOAD_IMAGE"
    fi
    return $ok
}
