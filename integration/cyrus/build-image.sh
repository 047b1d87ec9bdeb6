#!/bin/sh
# build-image.sh builds the Cyrus IMAP 3.6 test image the same way as the
# Dovecot one, without a registry: a Debian bookworm root made with
# debootstrap (cyrus-imapd, sasl2-bin for sasldb users, and msmtp-mta because
# debootstrap cannot choose for cyrus-common's "default-mta |
# mail-transport-agent"), cached as a tarball in /var/cache/imapgate-it and
# loaded with `docker import`. Cyrus runs only
# in this container: Debian's cyrus-imapd and dovecot-imapd conflict, and
# installing one on the host removes the other.
#
# Usage: integration/cyrus/build-image.sh [--force]
# Environment: IMAPGATE_IT_CYRUS_IMAGE (default imapgate-test/cyrus:3.6), and
# IMAPGATE_IT_CACHE and DEBIAN_MIRROR as for the Dovecot script.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
IMAPGATE_IT_IMAGE=${IMAPGATE_IT_CYRUS_IMAGE:-imapgate-test/cyrus:3.6} \
IMAPGATE_IT_ROOTFS=bookworm-cyrus \
IMAPGATE_IT_PACKAGES=cyrus-imapd,sasl2-bin,msmtp-mta \
IMAPGATE_IT_EXPOSE="143 993" \
IMAPGATE_IT_CMD='["/usr/sbin/cyrmaster", "-D"]' \
	exec "$here/../dovecot/build-image.sh" "$@"
