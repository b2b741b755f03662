# SRE-Space. The two commands a new machine needs: `make demo` and `make test`.
SHELL := /bin/bash
CLUSTER := e2e/cluster/cluster.sh
# NODE=real adds one real node (a kubelet with containerd) beside the kwok
# nodes, for `cluster-up`, `test` and `deps`: see docs/real-node.md.
NODE ?= $(or $(SRE_SPACE_NODE),kwok)
export SRE_SPACE_NODE := $(NODE)

.PHONY: demo test unit-test e2e-test lint fmt crds build cluster-up cluster-down cluster-status deps

## demo: set everything up, start the local cluster, install SRE-Space, show it working
demo: deps build
	@e2e/demo.sh

## test: unit tests, then the cluster tests on a local cluster this run starts and stops
test: deps
	@e2e/run-tests.sh

## unit-test: the fast tests, no cluster
unit-test:
	cargo test --workspace

## lint: formatting and clippy, as CI checks them
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --features sre-space-e2e/real-node -- -D warnings

fmt:
	cargo fmt --all

## crds: regenerate crds/ from the Rust types
crds:
	cargo run -q -p sre-space-operator --bin crdgen -- --out-dir crds

build:
	cargo build --workspace --bins

## deps: install the system packages the build and the cluster need
deps:
	@e2e/install-deps.sh

cluster-up:
	@$(CLUSTER) up

cluster-down:
	@$(CLUSTER) down

cluster-status:
	@$(CLUSTER) status
