# A stand-in for the official golang:1.26-bookworm image, made from the
# host's Go installation by go-image.sh on machines that cannot pull. The
# top-level Dockerfile's build stage needs nothing more than Go and CA
# certificates. The build context (a tar stream made by go-image.sh) holds
# this file, go/ (the host's GOROOT) and host-ca-certificates.crt (the
# host's CA bundle).
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY go /usr/local/go/
# The toolchain trusts what the host trusts (a machine behind a
# TLS-inspecting proxy reaches the module proxy only with its CA), while
# /etc/ssl/certs/ca-certificates.crt, which the runtime image copies, stays
# Debian's.
COPY host-ca-certificates.crt /etc/ssl/certs/host-ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/host-ca-certificates.crt
# The same layout as the official image.
ENV GOTOOLCHAIN=local GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /go/src /go/bin && chmod -R 1777 /go && go version
WORKDIR /go
LABEL org.imapgate.go-image="made locally by integration/container/go-image.sh"
