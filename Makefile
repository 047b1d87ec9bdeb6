# imapgate — the two commands that matter are `make demo` and `make test`.

GO      ?= go
GOFLAGS ?=
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build deb deps test unit integration integration-core fuzz demo bench clean

all: build

## build: the static binary in bin/imapgate (-buildvcs=auto: stamp the
## commit for `imapgate -version` even where GOFLAGS turns that off)
build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -trimpath -o bin/imapgate ./cmd/imapgate

## deb: the Debian package bin/imapgate_<version>_<arch>.deb (dpkg-deb; see
## cmd/imapgate/contrib/mkdeb.sh for its contents)
deb:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -trimpath -ldflags='-s -w' -o bin/deb/imapgate ./cmd/imapgate
	cmd/imapgate/contrib/mkdeb.sh bin/deb/imapgate bin "$$($(GO) env GOARCH)"

## deps: install the Debian packages the integration tests need (as root)
deps:
	./integration/install-deps.sh

## test: every test, unit and integration, with the race detector
test: deps
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...
# Once more without the race detector: its build reads and writes
# through syscall's wrappers, not auth/http1's raw calls.
	$(GO) test -count=1 ./auth/http1

## unit: the tests that need no Dovecot or nginx
unit:
	$(GO) test -race -count=1 ./auth/... ./backend/... ./imapcheck/... ./cmd/...

## integration: only the scenarios against real Dovecot and nginx
integration: deps
	$(GO) test -race -count=1 -timeout 30m ./integration/...

## integration-core: the scenarios whose outcome depends on how Dovecot and
## imapgate run (processes or containers): .ci/run runs them once more each
## way after make test, which runs every scenario once.
CORE_SCENARIOS = ^(TestFirstLetterRouting|TestUsersFileRouting|TestBackendByHostName|TestWrongPasswordNeverProxied|TestSMTPWrongPasswordRelaysNothing|TestSpecialCharacterPasswords|TestBackendDownIsTemporary|TestVerifyOverTLS|TestUsersFileReload|TestSIGHUPReloadsUsersFile|TestCacheAndCoalescing|TestGuessingLimits|TestMetricsAndReadiness|TestClientVisibleCodes|TestHostileBackends|TestBackendComesBack|TestSharedStateTwoGateways|TestOperatorAdmin|TestAdminAcrossReplicas)$$
integration-core: deps
	$(GO) test -race -count=1 -timeout 30m -run '$(CORE_SCENARIOS)' ./integration/...

## fuzz: each fuzz target for FUZZTIME (the committed corpora run in `make test` too)
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadRequest$$' -fuzztime $(FUZZTIME) ./auth/http1
	$(GO) test -run '^$$' -fuzz '^FuzzRawRequest$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzUnescape$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzPOP3Reply$$' -fuzztime $(FUZZTIME) ./imapcheck
	$(GO) test -run '^$$' -fuzz '^FuzzParseBackends$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzParseUsersFile$$' -fuzztime $(FUZZTIME) ./backend
	$(GO) test -run '^$$' -fuzz '^FuzzParseBackendsWith$$' -fuzztime $(FUZZTIME) ./backend

## demo: two Dovecots, nginx and imapgate on loopback; log in through nginx
demo: deps
	$(GO) run ./integration/cmd/demo

## bench: imapgate vs nginx `return 204` and raw Dovecot logins, side by side (~3 min)
bench: deps
	$(GO) run ./integration/cmd/bench $(BENCHFLAGS)

clean:
	rm -rf bin
