# jetpost — targets a newcomer can guess.
GO        ?= go
BIN       := bin
PKGS      := ./...
# Test binaries share a build cache; -race needs cgo.
export CGO_ENABLED ?= 1

.PHONY: all build test vet lint fuzz demo run up bench bench-go clean help

all: build

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build worker, enqueue and demotarget into ./bin
	$(GO) build -o $(BIN)/ ./cmd/...

vet: ## go vet
	$(GO) vet $(PKGS)

lint: vet ## gofmt check + go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: lint ## gofmt, go vet and every test with the race detector (what CI runs)
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

fuzz: ## run each fuzz target for a bounded number of executions (FUZZTIME=100000x)
	./scripts/fuzz.sh $${FUZZTIME:-100000x}

demo: build ## the main job end to end on the embedded default: worker + demo target + examples/requests.jsonl
	./scripts/demo.sh

run: build ## a worker on the embedded NATS server (./data), demo target allowed on loopback
	JETPOST_ALLOWED_NETWORKS=127.0.0.0/8 $(BIN)/worker

up: ## validate the docker compose topology (no Docker engine needed; builds the compose plugin if missing)
	./scripts/compose-config.sh

bench: ## end to end vs a raw net/http client; table into BENCHMARKS.md (BENCHFLAGS=-quick, -scenario NAME)
	$(GO) run ./bench/cmd/bench $(BENCHFLAGS)

bench-go: ## Go micro-benchmarks of the hot path
	$(GO) test -run='^$$' -bench=. -benchmem ./pkg/... ./internal/queue/...

clean:
	rm -rf $(BIN) .demo
