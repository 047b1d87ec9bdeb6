#!/bin/sh
# go-image.sh makes the Go toolchain image the top-level Dockerfile builds
# with (its GO_IMAGE default, golang:1.26-bookworm) when that image is not
# on this machine, without any registry:
#
#   FROM debian:bookworm-slim   (imported by integration/dovecot/build-image.sh
#                                --base-only when missing: debootstrap, no registry)
#   + apt-get install ca-certificates
#   + COPY of the host's Go installation (GOROOT_DIR) to /usr/local/go
#   + ENV GOTOOLCHAIN, GOPATH and PATH as in the official image
#   + the host's CA bundle as SSL_CERT_FILE, for the toolchain only (a host
#     behind a TLS-inspecting proxy reaches the Go module proxy with it); the
#     image's /etc/ssl/certs/ca-certificates.crt, which the runtime image
#     copies, stays Debian's
#
# On a machine that can pull, none of this is needed: `docker build .` pulls
# the official golang:1.26-bookworm itself, and this script, seeing the image
# present, does nothing. It never pulls and never replaces an existing image
# (unless --force), so an official image stays the one used.
#
# Usage: integration/container/go-image.sh [--force]
#
# Environment:
#   GO_IMAGE    the tag to make   (default: the Dockerfile's ARG GO_IMAGE default)
#   GOROOT_DIR  Go installation   (default: `go env GOROOT`, else /usr/local/go);
#               its version must match the tag's (go1.26.x for golang:1.26-*)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
log() { echo "go-image.sh: $*" >&2; }

FORCE=0
for arg in "$@"; do
	case $arg in
	--force) FORCE=1 ;;
	*) log "unknown argument $arg"; exit 2 ;;
	esac
done

if [ -z "${GO_IMAGE:-}" ]; then
	GO_IMAGE=$(sed -n 's/^ARG GO_IMAGE=//p' "$root/Dockerfile" | head -n 1)
fi
if [ -z "$GO_IMAGE" ]; then
	log "no ARG GO_IMAGE=... default in $root/Dockerfile"
	exit 1
fi
if ! docker info >/dev/null 2>&1; then
	log "no Docker engine reachable (docker info failed)"
	exit 1
fi
if [ "$FORCE" = 0 ] && docker image inspect "$GO_IMAGE" >/dev/null 2>&1; then
	log "$GO_IMAGE exists"
	exit 0
fi

if [ -z "${GOROOT_DIR:-}" ]; then
	GOROOT_DIR=$(go env GOROOT 2>/dev/null || PATH="$PATH:/usr/local/go/bin" go env GOROOT 2>/dev/null || echo /usr/local/go)
fi
if [ ! -x "$GOROOT_DIR/bin/go" ]; then
	log "no Go installation at $GOROOT_DIR (set GOROOT_DIR)"
	exit 1
fi
# golang:1.26-bookworm -> 1.26; the host's Go must be that release.
want=$(echo "$GO_IMAGE" | sed -n 's/^[^:]*:\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
have=$("$GOROOT_DIR/bin/go" env GOVERSION)
case $have in
go"$want" | go"$want".*) ;;
*)
	log "$GOROOT_DIR is $have, but $GO_IMAGE wants go$want"
	exit 1
	;;
esac

if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
	log "debian:bookworm-slim missing; importing it with integration/dovecot/build-image.sh --base-only"
	"$root/integration/dovecot/build-image.sh" --base-only
fi

host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [ ! -r "$host_ca" ]; then
	log "no CA bundle at $host_ca (apt-get install ca-certificates, or set SSL_CERT_FILE)"
	exit 1
fi
log "building $GO_IMAGE from debian:bookworm-slim and $GOROOT_DIR ($have)"
# The context is a tar stream: the Dockerfile, the host's CA bundle and the
# Go installation as go/ (streamed, not copied to disk).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
cp "$here/go-image.Dockerfile" "$tmp/Dockerfile"
cp "$host_ca" "$tmp/host-ca-certificates.crt"
tar -cf - -C "$tmp" Dockerfile host-ca-certificates.crt \
	-C "$GOROOT_DIR" --transform='s,^\.,go,' . |
	docker build -t "$GO_IMAGE" - >&2
log "built $GO_IMAGE"
