# udpprobe: `make test` is what CI runs; `make build` makes bin/udpprobe.
GO       ?= go
PKG      := github.com/udpprobe/udpprobe
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
BRANCH   ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null)
BUILD_USER ?= $(shell id -un 2>/dev/null)@$(shell hostname 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y%m%d-%H:%M:%S)
VPKG     := github.com/prometheus/common/version
LDFLAGS  := -s -w -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(REVISION) -X $(VPKG).Branch=$(BRANCH) \
	-X $(VPKG).BuildUser=$(BUILD_USER) -X $(VPKG).BuildDate=$(BUILD_DATE)
FUZZTIME ?= 60s

# The Prometheus and Alertmanager releases the deploy/ files are written for.
# promtool, amtool and the Prometheus server the live test (deploy/live_test.go)
# runs are built from the Go module proxy at these versions (Prometheus 3.x is
# tagged v0.3xx.y there) and cached outside the tree. Alertmanager's module
# lacks its built UI, so the server cannot be built that way: the live test
# runs Debian's (apt-get install prometheus-alertmanager; .ci/run does).
PROMETHEUS_MODULE   := v0.316.0
ALERTMANAGER_MODULE := v0.34.2
TOOLS    ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/udpprobe/tools
PROMTOOL := $(TOOLS)/prometheus-$(PROMETHEUS_MODULE)/promtool
PROMETHEUS := $(TOOLS)/prometheus-$(PROMETHEUS_MODULE)/prometheus
AMTOOL   := $(TOOLS)/alertmanager-$(ALERTMANAGER_MODULE)/amtool
ALERTMANAGER ?= $(shell command -v prometheus-alertmanager || command -v alertmanager)

.PHONY: all build run test unit style vet lint tidy-check check-deploy check-lab check-kubernetes generate bench fuzz clean

all: build test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/udpprobe ./cmd/udpprobe

## run: the one-machine demo without Docker: receiver, sender and Prometheus
## (http://127.0.0.1:9090) from the Procfile, with goreman pinned in go.mod.
run: build $(PROMETHEUS)
	PROMETHEUS=$(PROMETHEUS) $(GO) tool goreman -f Procfile start

## test: everything CI checks: style, vet, lint, tidy go.mod, deploy/ files, tests with -race
## (the live test among them runs Prometheus and Alertmanager).
test: style vet lint tidy-check check-deploy check-lab check-kubernetes unit

# The lab and live tests run verbosely: their logs state what was measured
# against which bound, and which impairments the kernel allowed. They run
# one package at a time (-p 1): the live tests scale the rules' timings
# down fifteenfold, and beside the lab's traffic on two cores an alert
# could fire an evaluation late and outrun the one that inhibits it.
REPORTED := ./internal/testkit/lab ./deploy
unit: $(PROMETHEUS)
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e /internal/testkit/lab$$ -e /deploy$$)
	TEST_PROMETHEUS=$(PROMETHEUS) TEST_ALERTMANAGER=$(ALERTMANAGER) $(GO) test -race -count=1 -p 1 -v $(REPORTED)

style:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-clean:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## lint: staticcheck, pinned as a tool in go.mod.
lint:
	$(GO) tool staticcheck ./...

tidy-check:
	$(GO) mod tidy -diff

## check-deploy: Prometheus configs, rules and rule tests, Alertmanager config, Procfile.
check-deploy: $(PROMTOOL) $(AMTOOL)
	$(PROMTOOL) check config deploy/prometheus.yml
	$(PROMTOOL) check config deploy/local/prometheus.yml
	$(PROMTOOL) check config deploy/kubernetes/prometheus.yml
	$(GO) tool goreman -f Procfile check
	$(PROMTOOL) test rules deploy/rules/udpprobe.rules.test.yml
	$(PROMTOOL) test rules deploy/rules/examples/slo.rules.test.yml
	$(AMTOOL) check-config deploy/alertmanager.yml

# $(call tool,NAME,COMMAND) runs COMMAND if NAME is installed; without it the
# check fails under CI=true (.ci/run installs it) and is reported skipped
# elsewhere.
tool = if command -v $(1) >/dev/null; then echo '$(2)' && $(2); \
	elif [ "$$CI" = true ]; then echo '$(1) is missing: .ci/run installs it' >&2; exit 1; \
	else echo 'SKIPPED, $(1) is not installed: $(2)'; fi

## check-lab: the Vagrantfile, the Ansible playbooks (syntax and ansible-lint).
check-lab:
	@$(call tool,vagrant,vagrant validate --ignore-provider)
	@$(call tool,ansible-playbook,ansible-playbook --syntax-check -i deploy/ansible/inventory.ini deploy/ansible/site.yml)
	@$(call tool,ansible-playbook,ansible-playbook --syntax-check -i deploy/ansible/mesh.ini deploy/ansible/mesh.yml)
	@$(call tool,ansible-lint,ansible-lint --offline deploy/ansible/site.yml deploy/ansible/mesh.yml)

## check-kubernetes: the manifests in deploy/kubernetes, a module of its own
## (the Kubernetes and Prometheus Operator API types stay out of udpprobe's):
## vet, staticcheck and tidy there, then its tests, which render every
## variant with kustomize, decode it strictly and run the DaemonSet's
## container in a namespace lab (its three clusters at once: they mostly wait
## for the DaemonSet's resolve interval).
check-kubernetes:
	$(GO) build -o bin/staticcheck honnef.co/go/tools/cmd/staticcheck
	cd deploy/kubernetes && $(GO) vet ./... && ../../bin/staticcheck ./... && $(GO) mod tidy -diff
	cd deploy/kubernetes && $(GO) test -count=1 -parallel 3 -v ./...

## generate: the copies deploy/kubernetes ships of the rules and the dashboard.
generate:
	cd deploy/kubernetes && $(GO) test -count=1 -run '^TestGenerated$$' . -update

$(PROMTOOL):
	@echo 'Building promtool $(PROMETHEUS_MODULE) from source, once; it is cached in $(TOOLS)' >&2
	GOBIN=$(@D) GOFLAGS=-mod=mod $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_MODULE)

$(PROMETHEUS):
	@echo 'Building Prometheus $(PROMETHEUS_MODULE) from source, once: several minutes on 2 cores; it is cached in $(TOOLS)' >&2
	GOBIN=$(@D) GOFLAGS=-mod=mod $(GO) install github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_MODULE)

$(AMTOOL):
	GOBIN=$(@D) GOFLAGS=-mod=mod $(GO) install github.com/prometheus/alertmanager/cmd/amtool@$(ALERTMANAGER_MODULE)

## bench: the Go benchmarks with allocation counts, then the harness that
## runs udpprobe beside iperf3 and irtt on loopback (apt-get install iperf3
## irtt); docs/performance.md shows its output. BENCHFLAGS go to the harness
## (go run ./bench -h).
BENCHFLAGS ?= -runs 3
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
	$(GO) run ./bench -udpprobe bin/udpprobe $(BENCHFLAGS)

## fuzz: run each fuzz target for FUZZTIME (the seed corpora run in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzTracker$$' -fuzztime $(FUZZTIME) ./internal/tracker
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/stamp

clean:
	rm -rf bin
