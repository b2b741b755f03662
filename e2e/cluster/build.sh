#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, kwok, helm and (with SIGNALS=1) Jaeger from their Go modules at
# the versions pinned in e2e/build/*/go.mod, and the kubelet and kube-proxy
# when the real node is wanted (SRE_SPACE_NODE=real, or `build.sh kubelet`).
# A binary already in the cache is not built again. `build.sh jaeger` builds
# Jaeger alone; `build.sh prometheus` builds Prometheus and Alertmanager
# (also built with SIGNALS=1 unless METRICS=0).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

command -v go >/dev/null || die "go is not installed"

# Further `go build` flags for the next build (build tags, an overlay).
go_flags=()

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
        (cd "$E2E_DIR/build/$dir" && go build -trimpath ${go_flags[@]+"${go_flags[@]}"} -ldflags "$ldflags" -o "$out/$name.tmp.$$" "$pkg")
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

# Prometheus without the service discoveries of the clouds (file_sd, http_sd
# and kubernetes_sd stay): a third of the build. Its web UI is served from
# the module's files at run time (no `builtinassets` tag), and the harness
# does not need it.
build_prometheus() {
    local v=github.com/prometheus/common/version
    go_flags=(-tags remove_all_sd,enable_kubernetes_sd)
    build prometheus "$PROMETHEUS_BIN" "-s -w -X $v.Version=$PROMETHEUS_RELEASE -X $v.Branch=HEAD -X $v.BuildUser=sre-space" \
        prometheus=github.com/prometheus/prometheus/cmd/prometheus
    go_flags=()
    mkdir -p "$LOCAL_BIN"
    ln -sfn "$PROMETHEUS_BIN/prometheus" "$LOCAL_BIN/prometheus"
}

# Alertmanager's ui package embeds app/dist, the compiled web UI, which is
# not in the module's zip (and Go refuses overlays inside the module cache):
# it is built from a copy of the module with a placeholder page there (as
# both UIs' gzipped index.html), named
# by a `replace` in a copy of go.mod, so the committed go.mod stays plain.
build_alertmanager() {
    if [[ ! -x $ALERTMANAGER_BIN/alertmanager ]]; then
        local dir src=$CACHE_DIR/src/alertmanager-$ALERTMANAGER_VERSION
        if [[ ! -f $src/ui/app/dist/elm/index.html.gz ]]; then
            dir=$(cd "$E2E_DIR/build/alertmanager" && go mod download -json github.com/prometheus/alertmanager |
                sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
            [[ -d $dir/ui ]] || die "alertmanager's module is not in the module cache ($dir)"
            rm -rf "$src.tmp" && mkdir -p "$(dirname "$src")"
            cp -r "$dir" "$src.tmp" && chmod -R u+w "$src.tmp"
            # Both UIs (/ and /ui/) serve their index.html from a .gz.
            local ui
            for ui in elm mantine; do
                mkdir -p "$src.tmp/ui/app/dist/$ui"
                gzip -9n <"$E2E_DIR/build/alertmanager/placeholder.html" >"$src.tmp/ui/app/dist/$ui/index.html.gz"
            done
            rm -rf "$src" && mv "$src.tmp" "$src"
        fi
        # A subshell, so that the copied go.mod goes away however the build ends.
        (
            modfile=$src.modfile.$$
            trap 'rm -rf "$modfile"' EXIT
            mkdir -p "$modfile"
            cp "$E2E_DIR/build/alertmanager/go.mod" "$E2E_DIR/build/alertmanager/go.sum" "$modfile/"
            go mod edit -replace "github.com/prometheus/alertmanager=$src" "$modfile/go.mod"
            go_flags=(-modfile "$modfile/go.mod")
            v=github.com/prometheus/common/version
            build alertmanager "$ALERTMANAGER_BIN" "-s -w -X $v.Version=${ALERTMANAGER_VERSION#v} -X $v.Branch=HEAD -X $v.BuildUser=sre-space" \
                alertmanager=github.com/prometheus/alertmanager/cmd/alertmanager
        )
    fi
    mkdir -p "$LOCAL_BIN"
    ln -sfn "$ALERTMANAGER_BIN/alertmanager" "$LOCAL_BIN/alertmanager"
}

case ${1:-} in
    jaeger) build_jaeger; exit 0 ;;
    prometheus) build_alertmanager; build_prometheus; exit 0 ;;
esac

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
if [[ $SIGNALS == 1 && $METRICS == 1 ]]; then build_alertmanager; build_prometheus; fi
