# meshrole — see README.md. Everything here needs only Go: tools run through
# pinned `go run`, the control plane is built from the Go module proxy into bin/.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

CONTROLLER_GEN := go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
GOLANGCI_LINT  := go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

BIN      := $(CURDIR)/bin
K8S_BIN  := $(BIN)/k8s
CRD_DIR  := charts/meshrole/crds

.PHONY: all
all: build

## generate: regenerate deepcopy code and CRD YAML from pkg/policy/v1alpha1.
.PHONY: generate
generate:
	$(CONTROLLER_GEN) object paths=./pkg/policy/...
	$(CONTROLLER_GEN) crd paths=./pkg/policy/... output:crd:artifacts:config=$(CRD_DIR)

## verify-generated: fail when generated files are stale.
.PHONY: verify-generated
verify-generated: generate
	@git diff --exit-code -- pkg/policy $(CRD_DIR) || { echo "generated files are stale: run 'make generate' and commit the result" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- pkg/policy $(CRD_DIR))" || { git status --porcelain -- pkg/policy $(CRD_DIR); echo "generated files are untracked: run 'make generate' and commit the result" >&2; exit 1; }

## build: build the webhook server into bin/.
.PHONY: build
build:
	go build -o $(BIN)/webhook ./cmd/webhook

## fmt-check, vet, lint: static checks.
.PHONY: fmt-check
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed on:"; echo "$$out"; exit 1; }

.PHONY: vet
vet:
	go vet ./...

.PHONY: lint
lint:
	$(GOLANGCI_LINT) run ./...

## testenv: build kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and kwok into bin/k8s (cached).
.PHONY: testenv
testenv:
	test/controlplane/build.sh $(K8S_BIN)

## testenv-matrix: the older Kubernetes releases of KUBE_MATRIX into bin/k8s-<minor> (cached; pins made by test/controlplane/pin-kubernetes.sh).
KUBE_MATRIX ?= v1.32 v1.34 v1.36
.PHONY: testenv-matrix
testenv-matrix:
	for v in $(KUBE_MATRIX); do test/controlplane/build.sh --kubernetes $$v $(BIN)/k8s-$${v#v}; done

## testenv-oldest: the oldest supported Kubernetes release (OLDEST_K8S) into bin/k8s-<minor> (cached).
OLDEST_K8S   ?= v1.32
OLDEST_ISTIO ?= 1.26.0
OLDEST_K8S_BIN := $(BIN)/k8s-$(patsubst v%,%,$(OLDEST_K8S))
.PHONY: testenv-oldest
testenv-oldest:
	test/controlplane/build.sh --kubernetes $(OLDEST_K8S) $(OLDEST_K8S_BIN)

## certs: a CA and a serving certificate for localhost into bin/certs (cert-manager's pkg/util/pki).
.PHONY: certs
certs:
	go run ./certs/cmd/gencerts -dir $(BIN)/certs -host localhost -host 127.0.0.1

## unit: unit and golden tests.
.PHONY: unit
unit:
	go test -count=1 ./pkg/... ./cmd/... ./internal/... ./certs/... ./test/harness/... ./test/load/... ./test/bench/... ./test/peers/...

## golden: rewrite every golden file (internal/golden's -update) from what the code produces now; review the diff.
.PHONY: golden
golden:
	go test -count=1 $$(go list -f '{{.ImportPath}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... | awk '/internal\/golden/ && $$1 !~ /internal\/golden$$/ {print $$1}') -update

## fuzz: bounded fuzzing of the admission handler and the merges; failing inputs land in testdata/fuzz.
## The budgets are execution counts, not durations: Go 1.26's coordinator can fail a duration-bounded
## run with "context deadline exceeded" when the deadline races a busy worker (go.dev/issue/75804).
FUZZ_REVIEW_EXECS ?= 10000
FUZZ_MERGE_EXECS ?= 60000
.PHONY: fuzz
fuzz:
	go test -run '^$$' -fuzz '^FuzzReview$$' -fuzztime $(FUZZ_REVIEW_EXECS)x -fuzzminimizetime 200x ./pkg/mutate
	go test -run '^$$' -fuzz '^FuzzMergePortList$$' -fuzztime $(FUZZ_MERGE_EXECS)x -fuzzminimizetime 200x ./pkg/policy
	go test -run '^$$' -fuzz '^FuzzMergeHoldApplication$$' -fuzztime $(FUZZ_MERGE_EXECS)x -fuzzminimizetime 200x ./pkg/policy

## e2e: the end-to-end suite on a real kube-apiserver, etcd and kube-controller-manager.
.PHONY: e2e
e2e: testenv build
	MESHROLE_K8S_BIN=$(K8S_BIN) MESHROLE_WEBHOOK_BIN=$(BIN)/webhook go test -count=1 -v -timeout 20m ./test/e2e/...

## istio: meshrole against Istio's real injector, built as a server from its own module (test/istio/injectors/<MESHROLE_ISTIO_VERSION>, default master; a cold build takes ~5 min).
.PHONY: istio
istio: testenv build
	cd test/istio && go vet ./... && MESHROLE_K8S_BIN=$(K8S_BIN) MESHROLE_WEBHOOK_BIN=$(BIN)/webhook go test -count=1 -v -timeout 20m ./...

## istio-oldest: the Istio suite on the oldest supported pairing, Kubernetes OLDEST_K8S with Istio OLDEST_ISTIO (both built and cached in bin/ on first use), so that a change that breaks old clusters fails make test.
.PHONY: istio-oldest
istio-oldest: testenv-oldest build
	cd test/istio && MESHROLE_ISTIO_VERSION=$(OLDEST_ISTIO) MESHROLE_K8S_BIN=$(OLDEST_K8S_BIN) MESHROLE_WEBHOOK_BIN=$(BIN)/webhook go test -count=1 -v -timeout 20m ./...

## install: the Helm chart installed on a real API server, both certificate modes and native mode, with cert-manager's real controllers and CA injector (test/install).
.PHONY: install
install: testenv build
	cd test/install && go vet ./... && MESHROLE_K8S_BIN=$(K8S_BIN) MESHROLE_WEBHOOK_BIN=$(BIN)/webhook go test -count=1 -v -timeout 20m ./...

## image: the webhook's container image (needs a Docker engine).
IMAGE ?= meshrole-webhook:$(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' charts/meshrole/Chart.yaml)
.PHONY: image
image:
	docker build -t $(IMAGE) .

## bench: performance figures side by side against their targets (docs/performance.md), ~2.5 min; not part of test.
.PHONY: bench
bench: testenv build
	MESHROLE_K8S_BIN=$(K8S_BIN) MESHROLE_WEBHOOK_BIN=$(BIN)/webhook go run ./test/bench $(BENCH_FLAGS)

## bench-peers: meshrole next to Kyverno (test/peers): pod creates through one kube-apiserver, 8 concurrent creators, no webhook / webhook mode / native mode / Kyverno in one run (docs/performance.md). Builds Kyverno into bin/peers first (cached; a cold build takes ~20 min). Not part of test.
.PHONY: bench-peers
bench-peers: testenv build
	test/peers/kyverno/build.sh $(BIN)/peers
	MESHROLE_K8S_BIN=$(K8S_BIN) MESHROLE_WEBHOOK_BIN=$(BIN)/webhook go run ./test/peers/cmd/benchpeers -kyverno $(BIN)/peers/kyverno -kyverno-crds $(BIN)/peers/kyverno-crds $(BENCH_PEERS_FLAGS)

## demo: start a local control plane with meshrole, apply examples/eureka and print what each pod got (KEEP=1 keeps it running; MODE=native runs native mode).
.PHONY: demo
demo: testenv build
	MESHROLE_K8S_BIN=$(K8S_BIN) MESHROLE_WEBHOOK_BIN=$(BIN)/webhook go run ./test/demo

## test: everything CI checks.
.PHONY: test
test: verify-generated fmt-check vet lint unit fuzz e2e istio install istio-oldest

.PHONY: help
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## //'

## dist: kubectl-meshrole for linux/darwin amd64/arm64 and windows/amd64 into bin/dist (tar.gz, zip, .sha256, the krew manifest), and plugins/meshrole.yaml rewritten with their sha256 (PLUGIN_VERSION defaults to v + the chart's appVersion).
PLUGIN_VERSION ?= v$(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' charts/meshrole/Chart.yaml)
.PHONY: dist
dist:
	go run ./cmd/kubectl-meshrole/internal/dist -version $(PLUGIN_VERSION) -out $(BIN)/dist -manifest plugins/meshrole.yaml

## compat: the whole compatibility matrix into docs/compatibility.md: the core e2e scenarios and the install suite on each Kubernetes release of KUBE_MATRIX and bin/k8s, the Istio suite on each Istio version of test/istio/injectors/versions.txt, and the oldest pairing (COMPAT_FLAGS=-only=kubernetes or -only=istio runs one part).
.PHONY: compat
compat: testenv testenv-matrix build
	cd test/istio && go run ./cmd/compat -out $(CURDIR)/docs/compatibility.md $(COMPAT_FLAGS) \
		-kubernetes $(subst $(eval) ,,$(foreach v,$(KUBE_MATRIX),$(BIN)/k8s-$(patsubst v%,%,$(v)),))$(K8S_BIN) \
		-oldest $(OLDEST_ISTIO)@$(patsubst v%,%,$(OLDEST_K8S))
