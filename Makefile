# ferry — build, test and package.
#
#   make demo    run plantsim + ferry with configs/demo.yaml (live values, an alert)
#   make test    the full test suite with the race detector (what CI runs)
#   make build   bin/ferry and bin/plantsim for this machine
#   make cross   static binaries for linux/amd64, linux/arm64, linux/arm (GOARM=7)
#   make dist    cross + release archives (install.sh inside) + dist/SHA256SUMS
#   make deb     .deb packages (nfpm) for amd64, arm64, armhf; DEB_ARCHES=amd64 for one
#   make lint    gofmt + go vet (+ staticcheck when installed) + govulncheck (scripts/govulncheck.sh)
#   make schema  regenerate configs/ferry.schema.json from the Go types
#   make bench   the benchmark table (scripts/bench.sh)
#   make bench-cost  end-to-end cost with real mosquitto, ferry and nats-server processes
#                (CPU per million samples, RSS, upstream messages; scripts/bench.sh cost)
#   make bench-retention  the cost of keeping acknowledged records (issue 28) and of
#                nats-server's sync_interval (scripts/bench.sh retention)
#   make screenshots  docs/console/*.png: the web console in headless Chromium (apt-get install chromium)
#   make test-reliability  the long reliability profile (kill -9 storms, outages,
#                disk trouble, hostile input, secrets, 30-min soak, all fuzz targets;
#                about an hour; root for the tmpfs cases); -short: the CI profile
#   make fuzz    every Fuzz target for FUZZTIME (default 45s) each
#   make vulncheck  govulncheck v1.9.0 with a database built from golang.org/x/vulndb
#                (scripts/govulncheck.sh; skipped when it cannot be fetched)
#   make interop ferry against Debian's mosquitto 2.0, pymodbus 3.0 and nats-server 2.9
#                (installs them with apt-get when missing; scripts/interop.sh)
#   make soak    ferry for SOAK (default 30m; SOAK=5m) against node-opcua, pymodbus,
#                mosquitto and nats-server, each restarted once; prints a table
#                (scripts/soak.sh, internal/soak)

GO       ?= go
# go.mod's toolchain line (go1.26.10: the standard-library fixes govulncheck
# asks for, docs/security.md) is honoured only with GOTOOLCHAIN=auto; Debian's
# and this project's machines set local in go.env. An offline build box that
# cannot download it sets GOTOOLCHAIN=local and builds with its own Go.
export GOTOOLCHAIN ?= auto
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BUILD    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
PLATFORMS := linux/amd64 linux/arm64 linux/arm/7
# Debian wants a version that starts with a digit: v1.2.3-4-gabc → 1.2.3+4+gabc.
DEB_VERSION ?= $(shell echo '$(VERSION)' | sed -E 's/^v//; /^[0-9]/!s/^/0.0.0+git/; s/-rc/~rc/; s/-/+/g')
DEB_ARCHES ?= amd64 arm64 armhf
NFPM     := $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

.PHONY: all build test test-short lint fmt vet schema cross dist deb clean

all: lint test build

build:
	$(BUILD) -o bin/ferry ./cmd/ferry

test:
	$(GO) test -race -timeout 10m ./... github.com/gopcua/opcua/id

test-short:
	$(GO) test -short ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck ./...; else echo "staticcheck not installed (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2); skipped"; fi
	scripts/govulncheck.sh

schema:
	$(GO) test ./internal/config -run TestSchemaIsCurrent -update

# Static binaries for the gateway platforms: dist/ferry-linux-amd64, -arm64, -armv7.
cross:
	@mkdir -p dist
	@set -e; for p in $(PLATFORMS); do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=""; suffix=$$arch; \
		if [ "$$arch" = arm ]; then arm=$${rest#*/}; suffix=armv$$arm; fi; \
		echo "build dist/ferry-$$os-$$suffix"; \
		GOOS=$$os GOARCH=$$arch GOARM=$$arm $(BUILD) -o dist/ferry-$$os-$$suffix ./cmd/ferry; \
	done

# Release archives and checksums: dist/ferry-VERSION-linux-ARCH.tar.gz, dist/SHA256SUMS.
dist: cross
	scripts/dist.sh $(VERSION)

# Debian packages: dist/ferry_VERSION-1_ARCH.deb (armhf holds the armv7 binary).
deb:
	@mkdir -p dist
	@set -e; for deb in $(DEB_ARCHES); do \
		case $$deb in amd64) bin=amd64; goarch=amd64; arm="";; arm64) bin=arm64; goarch=arm64; arm="";; \
		armhf) bin=armv7; goarch=arm; arm=7;; *) echo "unknown Debian arch $$deb"; exit 1;; esac; \
		echo "build dist/ferry-linux-$$bin"; \
		GOOS=linux GOARCH=$$goarch GOARM=$$arm $(BUILD) -o dist/ferry-linux-$$bin ./cmd/ferry; \
		NFPM_ARCH=$$deb FERRY_BIN=dist/ferry-linux-$$bin DEB_VERSION='$(DEB_VERSION)' \
			$(NFPM) package --config scripts/nfpm.yaml --packager deb --target dist/; \
	done
	scripts/dist.sh --sums

clean:
	rm -rf bin dist

.PHONY: demo bench test-reliability test-reliability-short fuzz vulncheck
demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

.PHONY: bench-cost
bench-cost:
	scripts/bench.sh cost

# The retention of acknowledged records (issue 28): CPU and bytes at 10k
# samples/s on and off, nats-server's throughput by sync_interval.
.PHONY: bench-retention
bench-retention:
	scripts/bench.sh retention

# The web console's pictures in docs/console/, taken by its browser test
# against ferry and the simulated plant (about three minutes: the
# sparklines fill first). Needs Chromium (Debian: apt-get install chromium).
.PHONY: screenshots
screenshots:
	FERRY_SCREENSHOTS=$(CURDIR)/docs/console $(GO) test -count=1 -timeout 10m -run '^TestConsoleInBrowser$$' ./internal/gateway
# The reliability suite (internal/reliability) builds the real ferry binary
# and runs it against real peers. Without FERRY_RELIABILITY it skips, so
# `make test` stays fast. The figures of each scenario go to the report.
RELIABILITY_REPORT ?= reliability-report.md
test-reliability:
	FERRY_RELIABILITY=long FERRY_RELIABILITY_REPORT=$(RELIABILITY_REPORT) $(GO) test -v -count=1 -timeout 3h ./internal/reliability

test-reliability-short:
	FERRY_RELIABILITY=short $(GO) test -v -count=1 -timeout 15m ./internal/reliability

FUZZTIME ?= 45s
fuzz:
	FERRY_RELIABILITY=long FERRY_FUZZTIME=$(FUZZTIME) $(GO) test -v -count=1 -timeout 3h -run '^TestFuzzTargets$$' ./internal/reliability

# govulncheck with a database built from golang.org/x/vulndb's reports
# through the module proxy (vuln.go.dev is not reachable from this project's
# machines): docs/security.md. FERRY_VULNDB_DIR=DIR keeps or reuses the
# database; when the tools or the reports cannot be fetched it says
# "skipped" — it never reports a pass it did not check.
vulncheck:
	scripts/govulncheck.sh

# Interop: the real ferry binary against Mosquitto, pymodbus and nats-server
# from Debian's packages (installed when missing), not the Go peers of the
# other tests. About a minute.
.PHONY: interop
interop:
	scripts/interop.sh

# Soak (issue 27): the real ferry binary against third-party servers for a
# long time, each restarted once in the middle. SOAK=5m for a short run;
# .ci/run runs SOAK=3m.
SOAK ?= 30m
.PHONY: soak
soak:
	SOAK=$(SOAK) scripts/soak.sh
