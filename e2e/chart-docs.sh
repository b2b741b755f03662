#!/usr/bin/env bash
# `make chart-docs`: writes charts/sre-space/README.md from its
# README.md.gotmpl and the `# --` comments of its values.yaml, with helm-docs
# built once at the version pinned in e2e/build/helm-docs/go.mod.
# `--check` writes nothing and fails, showing the difference, when the README
# is not what the values say (e2e/tests/helm.rs runs it).
set -euo pipefail
LOG_TAG=chart-docs
source "$(dirname "$0")/cluster/lib.sh"

command -v go >/dev/null || die "go is not installed (make deps)"
helm_docs=$HELM_DOCS_BIN/helm-docs
if [[ ! -x $helm_docs ]]; then
    log "building helm-docs $HELM_DOCS_VERSION (once; cached after)"
    mkdir -p "$HELM_DOCS_BIN"
    tmp=$helm_docs.tmp.$$
    (cd "$E2E_DIR/build/helm-docs" && go build -trimpath -ldflags "-s -w" -o "$tmp" github.com/norwoodj/helm-docs/cmd/helm-docs)
    mv "$tmp" "$helm_docs"
fi

chart=$REPO_DIR/charts/sre-space
args=(--chart-search-root "$chart" --sort-values-order file --skip-version-footer --log-level warning)
if [[ ${1:-} == --check ]]; then
    if ! diff -u "$chart/README.md" <("$helm_docs" "${args[@]}" --dry-run) >&2; then
        die "charts/sre-space/README.md is out of date with values.yaml (or README.md.gotmpl): run \`make chart-docs\` and commit the README"
    fi
    exit 0
fi
"$helm_docs" "${args[@]}"
log "wrote charts/sre-space/README.md"
