# Backchannel: the two commands are `make run` and `make test`.
GO ?= go
PKGS := ./...

.PHONY: run test test-deps web build vet bench clean

run: ## everything in one process, with the demo broadcast
	@WEB_OPTIONAL=1 scripts/web.sh
	$(GO) run ./cmd/backchannel all --demo

build: web
	$(GO) build -o bin/backchannel ./cmd/backchannel

# Packages whose tests drive real browsers or clusters of processes: they
# measure frame rates and timings, so they run one package at a time after
# the rest, not beside CPU-heavy unit tests.
SERIAL_PKGS := ./e2e ./player ./internal/demo ./ingest ./application

test: test-deps web ## every test: unit, fuzz seeds, end-to-end, browser
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 10m $$($(GO) list $(PKGS) | grep -v -x -F $(foreach p,$(SERIAL_PKGS),-e github.com/backchannel/backchannel/$(p:./%=%)))
	$(GO) test -count=1 -timeout 10m -p 1 $(SERIAL_PKGS)

test-deps:
	@scripts/test-deps.sh

web: ## hls.js from npm (pinned in package-lock.json) into player/web/vendor/, embedded by the binary
	@scripts/web.sh

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

clean:
	rm -rf bin data node_modules player/web/vendor
