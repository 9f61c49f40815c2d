# natchat: make build | test | demo | lab-test | fuzz | bench | bench-rv | lint
GO ?= go
BIN := bin

.PHONY: build test test-short demo lab-test fuzz bench bench-rv lint vet fmt clean

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Every test: unit, in-memory network, end-to-end with the binaries, and the
# netns NAT lab (needs root; skips with a reason otherwise). CI runs this.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...
	# The race detector allocates for itself and slows crypto several
	# times: the churn test's heap check and the flood's timing run
	# without it.
	$(GO) test -count=1 -timeout 10m -run '^(TestPeerChurnLeavesNothing|TestFlood)$$' ./sim/
	# natbench's preload of simulated nodes exists only in natbench builds.
	$(GO) test -race -count=1 -tags natbench -run '^(TestPreload|TestBenchKeys)' ./rendezvous/ ./ctrl/

# Fast tests only: no netns lab, no multi-second holds.
test-short:
	$(GO) test -race -count=1 -short $$($(GO) list ./... | grep -v /testenv)

# A rendezvous and two scripted nodes on loopback exchanging messages.
demo: build
	./scripts/demo.sh

# The NAT lab alone (root).
lab-test:
	$(GO) test -count=1 -v -timeout 30m ./testenv/...

fuzz:
	for t in FuzzParse FuzzParseInner FuzzParseRegisterPayload FuzzParseHandshakeResult FuzzRoundtrip \
		FuzzParsePeerSignal FuzzParseFrame FuzzParseMsg FuzzValidateName; do \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=20s ./wire/ || exit 1; done
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=20s ./headless/
	$(GO) test -run='^$$' -fuzz='^FuzzHandle$$' -fuzztime=20s ./rendezvous/

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

# The rendezvous beside coturn on loopback (docs/BENCHMARKS.md): STUN,
# relay, server CPU and memory; then, ours alone, registered nodes (10k,
# 100k, 1M heartbeating: a few minutes) and two nodes' message path.
# Installs coturn when root and missing; without it, measures ours alone.
# NATBENCH_FLAGS=-quick for a smoke run, "-only reg" (stun, relay, reg,
# msg) for one kind of row.
NATBENCH_FLAGS ?= -reps 3
bench-rv:
	mkdir -p $(BIN)/bench-rv
	$(GO) run ./cmd/natbench $(NATBENCH_FLAGS) -md $(BIN)/bench-rv/table.md -png $(BIN)/bench-rv

STATICCHECK := $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: vet
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(STATICCHECK) ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
