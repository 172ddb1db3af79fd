# The reconciler: run one Temporal worker per project, as Postgres says.
# `make run` and `make test` work on a fresh machine: they build what they need into bin/.

.DEFAULT_GOAL := help
SHELL := /bin/bash

GO       ?= go
BIN      := $(CURDIR)/bin

TEMPORAL_CLI_VERSION := v1.5.1
MIGRATE_VERSION      := v4.20.1
SQLC_VERSION         := v1.31.1
TYPESCRIPT_VERSION   := 5.9.3

TEST_TIMEOUT ?= 20m

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: run
run: build bin/temporal ## Private Postgres + Temporal dev server, a demo project; reconcile until Ctrl-C
	RECONCILER_TEMPORAL_CLI=$(BIN)/temporal $(BIN)/reconciler dev

.PHONY: test
test: tools typescript ## Every test, unit and integration, against real PostgreSQL and Temporal
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: build
build: ## Build bin/reconciler
	$(GO) build -o $(BIN)/reconciler ./cmd/reconciler

.PHONY: tools
tools: bin/temporal bin/migrate ## Build the Temporal CLI (dev server) and the upstream migrate CLI into bin/

# The Temporal CLI is built inside its own downloaded module, so that the Temporal
# server never enters this module's go.mod. About 4 minutes cold; cached in bin/.
bin/temporal:
	@mkdir -p $(BIN)
	@echo "building the Temporal CLI $(TEMPORAL_CLI_VERSION) (a few minutes, once)"
	dir=$$(cd /tmp && $(GO) mod download -json github.com/temporalio/cli@$(TEMPORAL_CLI_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p') && \
	  test -n "$$dir" && cd "$$dir" && $(GO) build -o $(BIN)/temporal.tmp ./cmd/temporal
	mv $(BIN)/temporal.tmp $(BIN)/temporal

bin/migrate:
	@mkdir -p $(BIN)
	cd /tmp && GOBIN=$(BIN) $(GO) install -tags postgres github.com/golang-migrate/migrate/v4/cmd/migrate@$(MIGRATE_VERSION)

# tsc checks the declarations of '@temporalio/workflow' (reconciler/script/workflow.d.ts)
# against the example workflows: a test-time tool; nothing runs Node.js at run time.
.PHONY: typescript
typescript: bin/typescript/node_modules/.bin/tsc ## Install tsc (npm's typescript) into bin/typescript for the tests

bin/typescript/node_modules/.bin/tsc:
	@mkdir -p $(BIN)/typescript
	npm install --prefix $(BIN)/typescript --no-audit --no-fund --loglevel=error typescript@$(TYPESCRIPT_VERSION)

bin/sqlc:
	@mkdir -p $(BIN)
	cd /tmp && GOBIN=$(BIN) $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)

.PHONY: generate
generate: bin/sqlc ## Regenerate db/*.sql.go from db/queries with sqlc
	$(BIN)/sqlc generate -f db/sqlc.yaml

.PHONY: check-generate
check-generate: bin/sqlc ## Fail when the committed sqlc code is out of date
	$(BIN)/sqlc diff -f db/sqlc.yaml

.PHONY: lint
lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

.PHONY: clean
clean: ## Remove bin/ (the cached CLIs too)
	rm -rf $(BIN)

.PHONY: soak
soak: bin/temporal ## Chaos soak, short mode (about 3 minutes): 3 replicas, 80 projects, faults for 90 s; fails naming a broken invariant (SOAK_FLAGS="-seed N" replays)
	RECONCILER_TEMPORAL_CLI=$(BIN)/temporal $(GO) run ./bench/soak $(SOAK_FLAGS)

.PHONY: soak-long
soak-long: bin/temporal ## Chaos soak, long mode (about 35 minutes): 300 projects, faults for 30 min; writes bench/soak-results.md
	RECONCILER_TEMPORAL_CLI=$(BIN)/temporal $(GO) run ./bench/soak -duration 30m -projects 300 -rate 2 -gap-min 4s -gap-max 15s -settle 5m -converge-bound 90s -out bench/soak-results.md $(SOAK_FLAGS)

.PHONY: bench
bench: build bin/temporal ## Measure every performance target (about 2 minutes); writes bench/results.md
	RECONCILER_TEMPORAL_CLI=$(BIN)/temporal $(GO) run ./bench -binary $(BIN)/reconciler -out bench/results.md
