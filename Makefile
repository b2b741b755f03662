# SRE-Space. The two commands a new machine needs: `make demo` and `make test`.
SHELL := /bin/bash
CLUSTER := e2e/cluster/cluster.sh
# NODE=real adds one real node (a kubelet with containerd) beside the kwok
# nodes, for `cluster-up`, `test` and `deps`: see docs/real-node.md.
NODE ?= $(or $(SRE_SPACE_NODE),kwok)
export SRE_SPACE_NODE := $(NODE)

.PHONY: bench bench-conversion bench-detect build chart-docs cluster-down cluster-status cluster-up crds demo demo-images deps docker-images e2e-test fmt images lint signals-down signals-status signals-up test unit-test

# The images `make images` builds: $(IMAGE_REPO)/operator and
# $(IMAGE_REPO)/chaos, tagged with the chart's appVersion (what the chart
# installs by default).
IMAGE_REPO ?= sre-space
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' charts/sre-space/Chart.yaml)

## demo: set everything up, start the local cluster, install SRE-Space, show it working (STORY=conversion: the business story on the real node)
demo: deps build
	@if [ "$(STORY)" = conversion ]; then e2e/demo-conversion.sh; else e2e/demo.sh; fi

## test: unit tests, then the cluster tests on a local cluster this run starts and stops
test: deps
	@e2e/run-tests.sh

## unit-test: the fast tests, no cluster
unit-test:
	cargo test --workspace

## bench: the operator's costs at scale beside same-run baselines (a table, not a test);
## BENCH_NODES, BENCH_PODS, BENCH_FAULTS set the scale (default 50, 5000, 40)
bench: deps
	@e2e/bench.sh

## bench-detect: the fixed-window rules and the sequential change detector side by side on seeded synthetic traffic (no cluster; BENCH_DAYS, BENCH_SEED, BENCH_SETTLE)
bench-detect:
	cargo run -q -p sre-space-detect --bin bench-detect -- --days $(or $(BENCH_DAYS),1500) --seed $(or $(BENCH_SEED),2026) --settle $(or $(BENCH_SETTLE),2)

## bench-conversion: fault to Incident and to recovered conversion on the demo business (real node)
bench-conversion: deps
	@e2e/bench-conversion.sh

## lint: formatting and clippy, as CI checks them
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --features sre-space-e2e/real-node -- -D warnings

fmt:
	cargo fmt --all

## crds: regenerate crds/ from the Rust types, and the chart's copy of them
crds:
	cargo run -q -p sre-space-operator --bin crdgen -- --out-dir crds
	rm -f charts/sre-space/files/crds/*.yaml
	cp crds/*.yaml charts/sre-space/files/crds/

## chart-docs: write charts/sre-space/README.md from the comments in its values.yaml (helm-docs)
chart-docs:
	@e2e/chart-docs.sh

build:
	cargo build --workspace --bins

## demo-images: build the demo business (demo-apps/) and import its images into the real node
demo-images:
	@e2e/cluster/demo-images.sh

## images: build the operator and sre-chaos images without a Docker engine, into .local/images/, and import them into the real node when it runs (docs/images.md)
images:
	@IMAGE_REPO=$(IMAGE_REPO) IMAGE_TAG=$(IMAGE_TAG) e2e/cluster/images.sh

## docker-images: the same images with a Docker engine, from images/*.Dockerfile
docker-images:
	docker build -f images/operator.Dockerfile -t $(IMAGE_REPO)/operator:$(IMAGE_TAG) .
	docker build -f images/chaos.Dockerfile -t $(IMAGE_REPO)/chaos:$(IMAGE_TAG) .

## deps: install the system packages the build and the cluster need
deps:
	@e2e/install-deps.sh

cluster-up:
	@$(CLUSTER) up

cluster-down:
	@$(CLUSTER) down

cluster-status:
	@$(CLUSTER) status

## signals-up: only the Kafka broker, Jaeger, Prometheus and Alertmanager (make cluster-up starts them too unless SIGNALS=0; METRICS=0 leaves out the last two)
signals-up:
	@e2e/cluster/signals.sh up

signals-down:
	@e2e/cluster/signals.sh down

signals-status:
	@e2e/cluster/signals.sh status
