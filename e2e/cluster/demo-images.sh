#!/usr/bin/env bash
# The demo business's images for the real node: builds the four binaries of
# demo-apps/ (debug), packs each with the shared libraries `ldd` lists and
# the dynamic loader into sre.space/<service>:dev, and imports the ones
# containerd does not already hold. Quick when nothing changed: cargo finds
# nothing to do, an archive newer than its binary is not packed again, and
# an image containerd already holds is not imported again. See docs/demo-apps.md.
#
#   demo-images.sh            build, pack, import
#   SRE_SPACE_DEMO_BUILD=0 demo-images.sh   use the binaries already built
#
# Needs the real node (`make cluster-up NODE=real`), and root for its
# containerd socket.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SERVICES=(frontend quote-service policy-service user-service)
TAG=${SRE_SPACE_DEMO_TAG:-dev}
OUT=$REPO_DIR/.local/demo-images
CONTAINERD_SOCK=/run/sre-space/$REAL_NODE_NAME/containerd.sock
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

[[ -S $CONTAINERD_SOCK ]] || die "no containerd at $CONTAINERD_SOCK: is the real node up (make cluster-up NODE=real)?"
started=$SECONDS
if [[ ${SRE_SPACE_DEMO_BUILD:-1} != 0 ]]; then
    (cd "$REPO_DIR" && cargo build --quiet -p sre-space-demo --bins)
fi
# The target folder cargo uses (CARGO_TARGET_DIR or the workspace's).
TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug
mkdir -p "$OUT"
# Tests running at once share the archives: one packs, the others wait.
exec 9>"$OUT/.lock"
flock 9
build_image_tool

# The shared libraries a binary loads and its loader, as absolute paths.
libraries() { # binary
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u
}

# Whether containerd's image `ref` is the one in `archive`. containerd
# rewrites the manifest on import, so the manifest digests differ; the
# image's configuration (its ID) is kept, and the manifest names it.
holds() { # ref archive
    local config manifest
    config=$(tar -xOf "$2" manifest.json | grep -o 'sha256:[0-9a-f]\{64\}' | head -n 1)
    manifest=$(ctr_ images ls "name==$1" | awk 'NR > 1 { print $3 }')
    [[ -n $config && -n $manifest ]] && ctr_ content get "$manifest" | grep -q "$config"
}

imported=0
for svc in "${SERVICES[@]}"; do
    bin=$TARGET/$svc
    [[ -x $bin ]] || die "$bin is missing (cargo build -p sre-space-demo --bins)"
    # Without the line tables: 40% smaller, so quicker to pack and import.
    if [[ ! -f $OUT/$svc || $bin -nt $OUT/$svc ]]; then
        strip --strip-debug -o "$OUT/$svc.tmp" "$bin"
        mv "$OUT/$svc.tmp" "$OUT/$svc"
    fi
    files=()
    for lib in $(libraries "$bin"); do files+=(-file "$lib"); done
    # The HTTP client's TLS verifier refuses to start without root
    # certificates, even for plain-HTTP peers.
    files+=(-file /etc/ssl/certs/ca-certificates.crt)
    ref=sre.space/$svc:$TAG
    archive=$OUT/$svc-$TAG.tar
    if [[ ! -f $archive || $OUT/$svc -nt $archive || $IMAGE_TOOL -nt $archive ]]; then
        "$IMAGE_TOOL" -binary "$OUT/$svc" -ref "$ref" -out "$archive" "${files[@]}" >/dev/null
    fi
    if ! holds "$ref" "$archive"; then
        ctr_ images import "$archive" >/dev/null
        log "imported $ref"
        imported=$((imported + 1))
    fi
done
log "demo images ready in $((SECONDS - started)) s ($imported imported, tag $TAG)"
