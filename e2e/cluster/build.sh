#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok, helm and (with SIGNALS=1) Jaeger from their Go modules at
# the versions pinned in e2e/build/*/go.mod, and the kubelet and kube-proxy
# when the real node is wanted (SRE_SPACE_NODE=real, or `build.sh kubelet`).
# A binary already in the cache is not built again. `build.sh jaeger` builds
# Jaeger alone.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

command -v go >/dev/null || die "go is not installed"

# build DIR OUT_DIR LDFLAGS NAME=PACKAGE...
build() {
    local dir=$1 out=$2 ldflags=$3; shift 3
    local entry name pkg start
    for entry in "$@"; do
        name=${entry%%=*} pkg=${entry#*=}
        [[ -x $out/$name ]] && continue
        log "building $name from $pkg (cold: minutes; cached after)"
        start=$SECONDS
        mkdir -p "$out"
        # A name of its own per build, so two clones building at once do
        # not write the same file.
        (cd "$E2E_DIR/build/$dir" && go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp.$$" "$pkg")
        mv "$out/$name.tmp.$$" "$out/$name"
        log "built $name in $((SECONDS - start)) s"
    done
}

build_jaeger() {
    build jaeger "$JAEGER_BIN" "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_RELEASE" \
        jaeger=github.com/jaegertracing/jaeger/cmd/jaeger
    mkdir -p "$LOCAL_BIN"
    ln -sfn "$JAEGER_BIN/jaeger" "$LOCAL_BIN/jaeger"
}

if [[ ${1:-} == jaeger ]]; then
    build_jaeger
    exit 0
fi

k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done

build kubernetes "$K8S_BIN" "$k8s_ldflags" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
    kubectl=k8s.io/kubernetes/cmd/kubectl
if [[ ${SRE_SPACE_NODE:-kwok} == real || ${1:-} == kubelet ]]; then
    build kubernetes "$K8S_BIN" "$k8s_ldflags" kubelet=k8s.io/kubernetes/cmd/kubelet \
        kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
fi
build etcd "$ETCD_BIN" "-s -w" etcd=go.etcd.io/etcd/server/v3
build kwok "$KWOK_BIN" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" kwok=sigs.k8s.io/kwok/cmd/kwok
build helm "$HELM_BIN" "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" helm=helm.sh/helm/v4/cmd/helm

# One folder of links per work tree, so PATH needs a single entry and two
# clones pinning different versions do not clash.
mkdir -p "$LOCAL_BIN"
for bin in "$K8S_BIN"/* "$ETCD_BIN/etcd" "$KWOK_BIN/kwok" "$HELM_BIN/helm"; do
    ln -sfn "$bin" "$LOCAL_BIN/$(basename "$bin")"
done
if [[ $SIGNALS == 1 ]]; then build_jaeger; fi
