# syntax=docker/dockerfile:1
# sre-chaos, the fault-injection CLI, for running it inside a cluster (a Job
# or `kubectl run`); from a laptop, `cargo install --path chaos` is simpler.
# Build from the repository's root (`make images` builds both images):
#
#   docker build -f images/chaos.Dockerfile -t sre-space/chaos:0.1.0 .

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The same COPY lines as operator.Dockerfile: `make images` checks it.
COPY Cargo.toml Cargo.lock ./
COPY operator operator
COPY chaos chaos
COPY detect detect
COPY demo-apps demo-apps
COPY e2e/Cargo.toml e2e/Cargo.toml
COPY e2e/src e2e/src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sre-chaos --bin sre-chaos \
    && install -D -m 0755 target/release/sre-chaos /out/sre-chaos

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sre-chaos /usr/local/bin/sre-chaos
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sre-chaos"]
