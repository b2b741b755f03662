#!/usr/bin/env bash
# `make images`: the operator's and sre-chaos's container images, built
# without a Docker engine, and imported into the real node when it runs.
#
# 1. The build context is assembled from the COPY lines of the build stage of
#    images/operator.Dockerfile (and chaos.Dockerfile, which must copy the
#    same), into a folder of the cache: the release build runs there, so it
#    sees exactly what `docker build` would, and a workspace member the
#    Dockerfiles forget fails here as it would there.
# 2. Each binary is packed with the shared libraries `ldd` lists, the
#    dynamic loader, the CA certificates and a passwd line for the non-root
#    user 65532 (distroless's `nonroot`), into a one-layer image running as
#    65532:65532 with the OCI image spec's labels. No shell, nothing else.
# 3. The image archives (the `docker save` layout) are written to
#    .local/images/, where `docker load`, `kind load image-archive` or
#    `ctr images import` take them, and imported into the real node's
#    containerd when that runs (`make cluster-up NODE=real`).
#
#   images.sh            build, pack, import when the real node runs
#   images.sh import     only import the archives built before
#
# IMAGE_REPO (default sre-space) and IMAGE_TAG (default: the chart's
# appVersion) name the images: $IMAGE_REPO/operator:$IMAGE_TAG and
# $IMAGE_REPO/chaos:$IMAGE_TAG. See docs/images.md.
set -euo pipefail
LOG_TAG=images
source "$(dirname "$0")/lib.sh"

IMAGE_REPO=${IMAGE_REPO:-sre-space}
IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^appVersion: *"*\([^"]*\)"*$/\1/p' "$REPO_DIR/charts/sre-space/Chart.yaml")}
OUT=$REPO_DIR/.local/images
# The build context and the release build's target folder live in the cache,
# at fixed paths, so that CI's fresh clones rebuild only what changed.
CONTEXT=$CACHE_DIR/images/context
TARGET=${SRE_SPACE_IMAGES_TARGET:-$CACHE_DIR/images/target}
CONTAINERD_SOCK=/run/sre-space/$REAL_NODE_NAME/containerd.sock
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
# NAME BINARY PACKAGE DOCKERFILE
IMAGES=(
    "operator sre-space sre-space-operator images/operator.Dockerfile"
    "chaos sre-chaos sre-chaos images/chaos.Dockerfile"
)

# The sources and destinations of the COPY lines of a Dockerfile's first
# stage, one "SOURCE DEST" per line (a COPY of several sources gives several
# lines with the same DEST).
copies() { # dockerfile
    awk '
        /^FROM / { stage++ }
        stage == 1 && /^COPY / && !/--from/ {
            dest = $NF
            for (i = 2; i < NF; i++) print $i, dest
        }' "$REPO_DIR/$1"
}

# Makes $CONTEXT hold exactly what the Dockerfile copies.
assemble_context() { # dockerfile
    local src dest target
    rm -rf "$CONTEXT.new" && mkdir -p "$CONTEXT.new"
    while read -r src dest; do
        [[ -e $REPO_DIR/$src ]] || die "$1 copies $src, which does not exist"
        if [[ $dest == */ || $dest == . ]]; then target=$CONTEXT.new/${dest%/}/$(basename "$src")
        else target=$CONTEXT.new/$dest; fi
        mkdir -p "$(dirname "$target")"
        cp -a "$REPO_DIR/$src" "$target"
    done < <(copies "$1")
    # A file with the same content as in the last context keeps that
    # context's time: a fresh clone (every file new) rebuilds only what
    # really changed since the last `make images` on this machine.
    if [[ -d $CONTEXT ]]; then
        local f
        while IFS= read -r -d '' f; do
            if [[ -f $CONTEXT/$f ]] && cmp -s "$CONTEXT/$f" "$CONTEXT.new/$f"; then
                touch -r "$CONTEXT/$f" "$CONTEXT.new/$f"
            fi
        done < <(cd "$CONTEXT.new" && find . -type f -print0)
    fi
    rm -rf "$CONTEXT" && mv "$CONTEXT.new" "$CONTEXT"
}

# The shared libraries a binary loads and its loader, as absolute paths.
libraries() { # binary
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u
}

build_images() {
    local started=$SECONDS line name bin pkg dockerfile first packages=()
    first=$(copies images/operator.Dockerfile)
    for line in "${IMAGES[@]}"; do
        read -r name bin pkg dockerfile <<<"$line"
        [[ $(copies "$dockerfile") == "$first" ]] ||
            die "$dockerfile and images/operator.Dockerfile copy different paths; make them copy the same workspace"
        packages+=(-p "$pkg" --bin "$bin")
    done
    log "assembling the build context from the COPY lines of images/operator.Dockerfile"
    assemble_context images/operator.Dockerfile
    log "building ${packages[*]} (release; cold: several minutes)"
    (cd "$CONTEXT" && CARGO_TARGET_DIR=$TARGET cargo build --quiet --release --locked "${packages[@]}")

    build_image_tool
    mkdir -p "$OUT"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$OUT/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$OUT/group"
    local revision="" created="1970-01-01T00:00:00Z"
    if git -C "$REPO_DIR" rev-parse HEAD >/dev/null 2>&1; then
        revision=$(git -C "$REPO_DIR" rev-parse HEAD)
        # The commit's time, so that the same commit gives the same image.
        created=$(git -C "$REPO_DIR" log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ)
    fi
    for line in "${IMAGES[@]}"; do
        read -r name bin pkg dockerfile <<<"$line"
        local stripped=$OUT/$bin files=() lib
        strip --strip-debug -o "$stripped" "$TARGET/release/$bin"
        for lib in $(libraries "$stripped"); do files+=(-file "$lib"); done
        "$IMAGE_TOOL" -binary "$stripped" -at "/usr/local/bin/$bin" \
            -ref "$IMAGE_REPO/$name:$IMAGE_TAG" -out "$OUT/$name-$IMAGE_TAG.tar" \
            -user 65532:65532 "${files[@]}" \
            -file /etc/ssl/certs/ca-certificates.crt \
            -file-at "/etc/passwd=$OUT/passwd" -file-at "/etc/group=$OUT/group" \
            -label "org.opencontainers.image.title=sre-space-$name" \
            -label "org.opencontainers.image.description=$(description "$name")" \
            -label "org.opencontainers.image.version=$IMAGE_TAG" \
            -label "org.opencontainers.image.revision=$revision" \
            -label "org.opencontainers.image.created=$created" \
            -label "org.opencontainers.image.licenses=Apache-2.0" \
            -label "org.opencontainers.image.base.name=scratch" >/dev/null
        log "$IMAGE_REPO/$name:$IMAGE_TAG: $(du -h "$OUT/$name-$IMAGE_TAG.tar" | cut -f1) ($OUT/$name-$IMAGE_TAG.tar)"
    done
    log "images built in $((SECONDS - started)) s"
}

description() { # name
    case $1 in
        operator) echo "SRE-Space, a Kubernetes operator that detects, diagnoses, remediates and verifies workload incidents" ;;
        chaos) echo "sre-chaos, the fault-injection CLI of SRE-Space's demo business" ;;
    esac
}

# Whether containerd's image `ref` is the one in `archive`: containerd
# rewrites the manifest on import, but keeps the configuration (the image's
# ID), which the manifest names.
holds() { # ref archive
    local config manifest
    config=$(tar -xOf "$2" manifest.json | grep -o 'sha256:[0-9a-f]\{64\}' | head -n 1)
    manifest=$(ctr_ images ls "name==$1" | awk 'NR > 1 { print $3 }')
    [[ -n $config && -n $manifest ]] && ctr_ content get "$manifest" | grep -q "$config"
}

import_images() {
    if [[ ! -S $CONTAINERD_SOCK ]]; then
        log "the real node is not running: not imported (make cluster-up NODE=real, then make images)"
        return 0
    fi
    local line name ref archive
    for line in "${IMAGES[@]}"; do
        read -r name _ <<<"$line"
        # The kubelet asks containerd for the normalized name.
        ref=docker.io/$IMAGE_REPO/$name:$IMAGE_TAG
        [[ $IMAGE_REPO == *.*/* || $IMAGE_REPO == *:*/* || $IMAGE_REPO == localhost/* ]] && ref=$IMAGE_REPO/$name:$IMAGE_TAG
        archive=$OUT/$name-$IMAGE_TAG.tar
        [[ -f $archive ]] || die "$archive is missing: run make images"
        if holds "$ref" "$archive"; then continue; fi
        ctr_ images import "$archive" >/dev/null
        holds "$ref" "$archive" || die "imported $archive, but containerd has no $ref"
        log "imported $ref into $REAL_NODE_NAME"
    done
}

case ${1:-build} in
    build) build_images; import_images ;;
    import) import_images ;;
    *) die "usage: images.sh [build|import]" ;;
esac
