# jetpost — targets a newcomer can guess.
GO        ?= go
BIN       := bin
PKGS      := ./...
# What ships (make build, the image): the two commands and the demo target
# that make demo and the compose stack run. Benchmarks live in bench/.
CMDS      := worker enqueue demotarget
# --version prints it; go install builds report their module version instead.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -X main.buildVersion=$(VERSION)
# compose-check validates with the Compose Specification's own loader (the
# one docker compose uses), run from the module proxy: no Docker needed.
COMPOSE_GO ?= github.com/compose-spec/compose-go/v2/cmd@v2.16.2
# Test binaries share a build cache; -race needs cgo.
export CGO_ENABLED ?= 1

.PHONY: all build test test-browser vet lint fuzz demo run up compose-check bench bench-scale bench-go clean help

all: build

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build worker, enqueue and demotarget into ./bin, stamped with git describe
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

vet: ## go vet
	$(GO) vet $(PKGS)

lint: vet ## gofmt check + go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: lint ## gofmt, go vet and every test with the race detector (what CI runs)
	$(GO) test -race -count=1 -timeout 25m $(PKGS)

test-browser: ## the console in headless chromium against real workers (needs Debian's chromium); screenshots in ./artifacts
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { echo "make test-browser needs chromium on PATH (Debian: apt-get install chromium)" >&2; exit 1; }
	$(GO) test -race -count=1 ./internal/console/
	$(GO) test -race -count=1 -timeout 10m -run 'TestConsole' -v ./e2e/

fuzz: ## run each fuzz target for a bounded number of executions (FUZZTIME=100000x)
	./scripts/fuzz.sh $${FUZZTIME:-100000x}

demo: build ## the main job end to end on the embedded default: worker + demo target + examples/requests.jsonl
	./scripts/demo.sh

run: build ## a worker on the embedded NATS server (./data), demo target allowed on loopback
	JETPOST_ALLOWED_NETWORKS=127.0.0.0/8 $(BIN)/worker

up: ## start the compose stack: 3 NATS nodes, 3 workers, demo target, example batch (needs a Docker engine)
	@docker info >/dev/null 2>&1 || { echo "make up needs a running Docker engine and its compose plugin (docker info failed). Without Docker, make compose-check validates docker-compose.yml; make demo runs everything on this machine." >&2; exit 1; }
	docker compose build --build-arg VERSION=$(VERSION)
	docker compose up

compose-check: ## validate docker-compose.yml (no Docker engine or plugin needed; nothing installed)
	COMPOSE_GO=$(COMPOSE_GO) ./scripts/compose-config.sh

bench: ## end to end vs a raw net/http client, ending with issue 17's goals (scale run: 100,000 jobs); table into BENCHMARKS.md (BENCHFLAGS=-quick, -scenario NAME)
	$(GO) run ./bench/cmd/bench $(BENCHFLAGS)

bench-scale: ## one batch of 1,000,000 jobs end to end: one result each, steady rate, flat worker RSS, broker disk (BENCHFLAGS=-scale-jobs N)
	$(GO) run ./bench/cmd/bench -scenario scale $(BENCHFLAGS)

bench-go: ## Go micro-benchmarks of the hot path
	$(GO) test -run='^$$' -bench=. -benchmem ./pkg/... ./internal/queue/...

clean:
	rm -rf $(BIN) .demo
