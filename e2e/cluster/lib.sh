# Shared settings of the local cluster scripts. Sourced, not run.
# shellcheck shell=bash

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)

# Built binaries are cached outside the work tree, keyed by version, so that
# every clone on this machine (and CI's fresh clone) reuses them.
CACHE_DIR=${SRE_SPACE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sre-space}
# Certificates, data, logs and the kubeconfig of the running cluster live in
# the git-ignored .local/ of this work tree.
STATE_DIR=${SRE_SPACE_STATE:-$REPO_DIR/.local/cluster}

ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
APISERVER_PORT=${APISERVER_PORT:-16443}
KCM_PORT=${KCM_PORT:-10257}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
KWOK_PORT=${KWOK_PORT:-10247}
KWOK_NODES=${KWOK_NODES:-3}
# Client rate limits of the controller-manager and the scheduler (requests per
# second). Their defaults (20 and 50) make 10,000 pods take minutes to create
# and bind; `make bench` raises them.
CLUSTER_API_QPS=${CLUSTER_API_QPS:-}

# The real node (SRE_SPACE_NODE=real, `make cluster-up NODE=real`): see
# e2e/cluster/real-node.sh and docs/real-node.md. Two clones running a real
# node at once need different names, ports, bridges and pod ranges.
SRE_SPACE_NODE=${SRE_SPACE_NODE:-kwok}
KUBELET_PORT=${KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${KUBELET_HEALTHZ_PORT:-10248}
REAL_NODE_NAME=${REAL_NODE_NAME:-sre-real-node}
REAL_NODE_BRIDGE=${REAL_NODE_BRIDGE:-sre-cni0}
REAL_NODE_POD_CIDR=${REAL_NODE_POD_CIDR:-10.244.0.0/24}
if [[ -z ${CNI_BIN_DIR:-} ]]; then
    CNI_BIN_DIR=/opt/cni/bin
    [[ -x /usr/lib/cni/bridge ]] && CNI_BIN_DIR=/usr/lib/cni # Debian's containernetworking-plugins
fi
# The business-signal services beside the cluster (e2e/cluster/signals.sh):
# a Kafka broker and Jaeger. SIGNALS=0 leaves them out of `cluster.sh up`.
SIGNALS=${SIGNALS:-1}
SIGNALS_DIR=${SRE_SPACE_SIGNALS_STATE:-$REPO_DIR/.local/signals}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
JAEGER_OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-14317}
JAEGER_OTLP_HTTP_PORT=${JAEGER_OTLP_HTTP_PORT:-14318}
JAEGER_QUERY_PORT=${JAEGER_QUERY_PORT:-16686}
JAEGER_QUERY_GRPC_PORT=${JAEGER_QUERY_GRPC_PORT:-16685}
JAEGER_HEALTH_PORT=${JAEGER_HEALTH_PORT:-13133}
JAEGER_METRICS_PORT=${JAEGER_METRICS_PORT:-18888}
# Prometheus and Alertmanager beside Kafka and Jaeger (docs/prometheus.md);
# METRICS=0 leaves them out of `signals.sh up`.
METRICS=${METRICS:-1}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-19490}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-19493}
# Where Alertmanager posts alerts by default: the operator's webhook
# receiver as the harness runs it.
ALERT_WEBHOOK_URL=${ALERT_WEBHOOK_URL:-http://127.0.0.1:18480/webhooks/alertmanager}

KUBECONFIG_PATH=$STATE_DIR/kubeconfig
LOCAL_BIN=$REPO_DIR/.local/bin

# The pinned version of a module, read from its go.mod under e2e/build/.
module_version() { # dir module
    awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && NF >= 2 { print $2 }' \
        "$E2E_DIR/build/$1/go.mod" | head -n 1
}

K8S_VERSION=$(module_version kubernetes k8s.io/kubernetes)
ETCD_VERSION=$(module_version etcd go.etcd.io/etcd/server/v3)
KWOK_VERSION=$(module_version kwok sigs.k8s.io/kwok)
HELM_VERSION=$(module_version helm helm.sh/helm/v4)
JAEGER_VERSION=$(module_version jaeger github.com/jaegertracing/jaeger)
# Jaeger v2 is published under the module's v1 tags: v1.N.0 is v2.(N-63).0.
JAEGER_RELEASE=v2.$(($(echo "$JAEGER_VERSION" | cut -d. -f2) - 63)).$(echo "$JAEGER_VERSION" | cut -d. -f3)
PROMETHEUS_VERSION=$(module_version prometheus github.com/prometheus/prometheus)
# Prometheus 3.x is published under the module's v0.3NN tags: v0.316.0 is 3.16.0.
PROMETHEUS_RELEASE=3.$(($(echo "$PROMETHEUS_VERSION" | cut -d. -f2) - 300)).$(echo "$PROMETHEUS_VERSION" | cut -d. -f3)
ALERTMANAGER_VERSION=$(module_version alertmanager github.com/prometheus/alertmanager)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$E2E_DIR/build/kafka/pom.xml")

K8S_BIN=$CACHE_DIR/bin/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE_DIR/bin/etcd-$ETCD_VERSION
KWOK_BIN=$CACHE_DIR/bin/kwok-$KWOK_VERSION
HELM_BIN=$CACHE_DIR/bin/helm-$HELM_VERSION
JAEGER_BIN=$CACHE_DIR/bin/jaeger-$JAEGER_VERSION
# Keyed by the build tags too: a binary built with other service discoveries
# is another binary.
PROMETHEUS_BIN=$CACHE_DIR/bin/prometheus-$PROMETHEUS_VERSION-k8s-sd
ALERTMANAGER_BIN=$CACHE_DIR/bin/alertmanager-$ALERTMANAGER_VERSION
# The broker's jars, as Maven resolved them from e2e/build/kafka/pom.xml.
KAFKA_HOME=$CACHE_DIR/kafka-$KAFKA_VERSION

# helm-docs writes the chart's README from the comments of its values.yaml
# (`make chart-docs`, e2e/chart-docs.sh).
HELM_DOCS_VERSION=$(module_version helm-docs github.com/norwoodj/helm-docs)
HELM_DOCS_BIN=$CACHE_DIR/bin/helm-docs-$HELM_DOCS_VERSION

# Our image packer (e2e/build/image), cached by go-containerregistry version
# and by the tool's own source, so a change to it is rebuilt.
IMAGE_TOOL_VERSION=$(module_version image github.com/google/go-containerregistry)
IMAGE_TOOL=$CACHE_DIR/bin/sre-image-ggcr-$IMAGE_TOOL_VERSION-$(sha256sum <"$E2E_DIR/build/image/main.go" | cut -c1-12)/sre-image

build_image_tool() {
    [[ -x $IMAGE_TOOL ]] && return 0
    log "building sre-image (go-containerregistry $IMAGE_TOOL_VERSION)"
    mkdir -p "$(dirname "$IMAGE_TOOL")"
    (cd "$E2E_DIR/build/image" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$IMAGE_TOOL.tmp" .)
    mv "$IMAGE_TOOL.tmp" "$IMAGE_TOOL"
}

# Messages say which script speaks: cluster.sh and what it sources, or
# signals.sh, which sets LOG_TAG=signals.
log() { printf '[%s] %s\n' "${LOG_TAG:-cluster}" "$*" >&2; }
die() { printf '[%s] error: %s\n' "${LOG_TAG:-cluster}" "$*" >&2; exit 1; }

# --- processes ---------------------------------------------------------------
# The processes cluster.sh and signals.sh run in the background: one per
# name, its pid in $PIDS/NAME, its output in $LOGS/NAME.log. The sourcing
# script sets PIDS and LOGS and defines `ports_of NAME` (the ports it
# listens on).

pid_of() { [[ -f $PIDS/$1 ]] && cat "$PIDS/$1"; }
# Alive, and not a zombie waiting to be reaped (kill -0 succeeds on those).
running() {
    local pid
    pid=$(pid_of "$1") && [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null &&
        [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}
port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# A line per process, running (with its pid) or stopped; fails when one is
# stopped.
status_of() { # name...
    local ok=0 name
    for name in "$@"; do
        if running "$name"; then printf '  %-24s running (pid %s)\n' "$name" "$(pid_of "$name")"
        else printf '  %-24s stopped\n' "$name"; ok=1; fi
    done
    return $ok
}

# Starts NAME in a session of its own (so that stopping it stops its
# children too), unless it runs already; refuses when one of its ports is
# taken.
start() { # name command...
    local name=$1; shift
    if running "$name"; then return 0; fi
    local port
    for port in $(ports_of "$name"); do
        port_in_use "$port" && die "port $port for $name is taken by another process (another clone's cluster? run its 'make cluster-down', or set the port variables in e2e/cluster/lib.sh)"
    done
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name"
}

# Waits until the command succeeds; fails with the end of NAME's log when
# NAME's process exits or the seconds pass. The command's errors go to
# $LOGS/NAME-check.log.
wait_for() { # name seconds command...
    local name=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>>"$LOGS/$name-check.log"; do
        if [[ -f $PIDS/$name ]] && ! running "$name"; then
            tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
            die "$name exited; log: $LOGS/$name.log"
        fi
        if ((SECONDS >= deadline)); then
            log "$name not ready after ${seconds}s; last log lines:"
            tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
            die "$name did not become ready"
        fi
        sleep 0.5
    done
}

# Stops NAME's session: SIGTERM, up to the seconds to exit (10 by default),
# then SIGKILL for whatever is left of it.
stop_component() { # name [seconds]
    local name=$1 seconds=${2:-10} pid _
    pid=$(pid_of "$name") || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 $((seconds * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "killed $name (it did not stop within $seconds s)"
        else
            log "stopped $name"
        fi
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$name"
}
