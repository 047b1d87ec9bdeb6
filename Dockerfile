# imapgate in a container: a static binary on an empty image, configured
# only by IMAPGATE_* environment variables.
#
#   docker build -t imapgate .
#   docker run --rm -p 127.0.0.1:9180:9180 \
#     -e IMAPGATE_BACKENDS='mailhost01=192.0.2.22' -e IMAPGATE_DEFAULT_BACKEND=mailhost01 imapgate
#
# GO_IMAGE is the build stage's toolchain image; any image with Go 1.26 and
# CA certificates will do (a machine that cannot pull can make one, see
# integration/container/go-image.sh).
ARG GO_IMAGE=golang:1.26-bookworm

FROM ${GO_IMAGE} AS build
# The standard library compiled once, in a layer that only a new Go image
# invalidates, so that a rebuild after a source change takes seconds (same
# flags as the build below, so its cache entries are used).
RUN CGO_ENABLED=0 go build -trimpath std
# Optional: a module proxy and checksum database other than Go's defaults
# (e.g. --build-arg GOPROXY=http://proxy.internal); unset = the defaults.
ARG GOPROXY
ARG GOSUMDB
WORKDIR /src
# Modules in layers of their own, rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
# Warm-up only: compiles the dependencies' packages ahead of the sources. A
# stale list makes rebuilds slower, never wrong (hence `|| true`).
RUN CGO_ENABLED=0 go build -trimpath \
      github.com/emersion/go-imap/v2/imapclient \
      github.com/emersion/go-sasl \
      github.com/prometheus/client_golang/prometheus/collectors \
      github.com/prometheus/client_golang/prometheus/promhttp \
      github.com/sethvargo/go-envconfig \
      golang.org/x/sync/singleflight \
    || true
# The sources (.dockerignore leaves out tests, integration/ and .git).
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/imapgate ./cmd/imapgate

FROM scratch
# nobody: imapgate needs no privilege, and no file but its settings name.
USER 65534:65534
# Inside a container the listener must face the container's network;
# publish it on a loopback or private address only.
ENV IMAPGATE_LISTEN=0.0.0.0:9180
EXPOSE 9180
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/imapgate", "-healthcheck"]
ENTRYPOINT ["/imapgate"]
# Files last, so that a new binary leaves the steps above cached.
# Roots for IMAPGATE_VERIFY_TLS without IMAPGATE_VERIFY_CA_FILE.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/imapgate /imapgate
