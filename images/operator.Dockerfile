# syntax=docker/dockerfile:1
# The SRE-Space operator: built with the official Rust image, run from a
# distroless image as a non-root user, with nothing else in it. Build from the
# repository's root (`make images` builds both images):
#
#   docker build -f images/operator.Dockerfile -t sre-space/operator:0.1.0 .

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The workspace's manifests and sources: cargo loads every member of the
# workspace, so each is copied (e2e/ only as far as loading it needs).
# `make images` builds from exactly these COPY lines, so a member missing
# here fails there too.
COPY Cargo.toml Cargo.lock ./
COPY operator operator
COPY chaos chaos
COPY detect detect
COPY demo-apps demo-apps
COPY e2e/Cargo.toml e2e/Cargo.toml
COPY e2e/src e2e/src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sre-space-operator --bin sre-space \
    && install -D -m 0755 target/release/sre-space /out/sre-space

# Debian 12, like the builder, for the same glibc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sre-space /usr/local/bin/sre-space
# The numeric user, so that Kubernetes can check runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sre-space"]
