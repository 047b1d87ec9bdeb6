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
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY auth ./auth
COPY backend ./backend
COPY imapcheck ./imapcheck
COPY cmd ./cmd
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/imapgate ./cmd/imapgate

FROM scratch
# Roots for IMAPGATE_VERIFY_TLS without IMAPGATE_VERIFY_CA_FILE.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/imapgate /imapgate
# nobody: imapgate needs no privilege, and no file but its settings name.
USER 65534:65534
# Inside a container the listener must face the container's network;
# publish it on a loopback or private address only.
ENV IMAPGATE_LISTEN=0.0.0.0:9180
EXPOSE 9180
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["/imapgate", "-healthcheck"]
ENTRYPOINT ["/imapgate"]
