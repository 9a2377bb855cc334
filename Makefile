# Backchannel: the two commands are `make run` and `make test`.
GO ?= go
PKGS := ./...

.PHONY: run test test-deps build vet bench clean

run: ## everything in one process, with the demo broadcast
	$(GO) run ./cmd/backchannel all --demo

build:
	$(GO) build -o bin/backchannel ./cmd/backchannel

test: test-deps ## every test: unit, fuzz seeds, end-to-end, browser
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 20m $(PKGS)

test-deps:
	@scripts/test-deps.sh

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x $(PKGS)

clean:
	rm -rf bin data
