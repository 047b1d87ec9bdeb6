#!/bin/sh
# build-image.sh builds the Dovecot test image without any container registry:
# a Debian bookworm root made with debootstrap (dovecot-imapd and dovecot-pop3d
# included), turned into an image with `docker import`. It describes the same
# image as the Dockerfile beside it (debian:bookworm-slim + apt-get install).
#
# Usage: integration/dovecot/build-image.sh [--force] [--base | --base-only | --systemd-only]
#   --force      rebuild even when the image already exists
#   --base       also import a minimal debootstrap root as debian:bookworm-slim
#                (when that tag is missing), so `docker build integration/dovecot`
#                finds its FROM image on a machine that cannot pull.
#   --base-only  only that (integration/container/go-image.sh and the compose
#                smoke test build FROM debian:bookworm-slim too).
#   --systemd-only  only a bookworm root with systemd as its init (and curl),
#                imported as imapgate-test/systemd:bookworm, in which
#                TestDebianPackageSystemd runs imapgate.service.
#
# Environment:
#   IMAPGATE_IT_IMAGE   image tag            (default imapgate-test/dovecot:2.3)
#   IMAPGATE_IT_CACHE   rootfs/tarball cache (default /var/cache/imapgate-it)
#   DEBIAN_MIRROR       apt mirror           (default: from /etc/apt sources)
#   IMAPGATE_IT_ROOTFS, IMAPGATE_IT_PACKAGES, IMAPGATE_IT_EXPOSE, IMAPGATE_IT_CMD
#                       another image from the same steps: the cached tarball's
#                       name, the packages, EXPOSE and CMD (integration/cyrus)
#
# The tarballs in the cache are reused: once built, a lost image is re-imported
# in seconds, with no network.
set -eu

IMAGE=${IMAPGATE_IT_IMAGE:-imapgate-test/dovecot:2.3}
ROOTFS=${IMAPGATE_IT_ROOTFS:-bookworm-dovecot}
PACKAGES=${IMAPGATE_IT_PACKAGES:-dovecot-imapd,dovecot-pop3d}
EXPOSE=${IMAPGATE_IT_EXPOSE:-110 143 993 995}
CMD_JSON=${IMAPGATE_IT_CMD:-'["/usr/sbin/dovecot", "-F"]'}
BASE_IMAGE=debian:bookworm-slim
CACHE=${IMAPGATE_IT_CACHE:-/var/cache/imapgate-it}
SUITE=bookworm
FORCE=0
BASE=0
BASE_ONLY=0
SYSTEMD_ONLY=0
SYSTEMD_IMAGE=imapgate-test/systemd:bookworm
for arg in "$@"; do
	case $arg in
	--force) FORCE=1 ;;
	--base) BASE=1 ;;
	--base-only) BASE=1; BASE_ONLY=1 ;;
	--systemd-only) SYSTEMD_ONLY=1 ;;
	*) echo "build-image.sh: unknown argument $arg" >&2; exit 2 ;;
	esac
done

log() { echo "build-image.sh: $*" >&2; }

# One build at a time on this machine: the scenarios run in parallel and
# several need an image (Dovecot, Cyrus twice, the systemd root, the base),
# debootstrap's package cache ($CACHE/debs) is shared between them, and two
# builds of one image would race. The second waits here, then finds the
# image the first imported and leaves it be.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
flock 9

if ! docker info >/dev/null 2>&1; then
	log "no Docker engine reachable (docker info failed)"
	exit 1
fi

# mirror: the first deb822 URIs line (Debian 12 layout), else the classic
# sources.list, else the public mirror.
mirror() {
	if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
	m=""
	if [ -r /etc/apt/sources.list.d/debian.sources ]; then
		m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
		m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

# rootfs_tar NAME INCLUDES: makes $CACHE/NAME.tar with debootstrap unless it
# is already there. The .tar is written under a temporary name and renamed,
# so an interrupted build never leaves a truncated tarball behind.
rootfs_tar() {
	name=$1
	include=$2
	tar_path=$CACHE/$name.tar
	if [ -s "$tar_path" ] && [ "$FORCE" = 0 ]; then
		return 0
	fi
	for cmd in debootstrap tar; do
		command -v "$cmd" >/dev/null 2>&1 || { log "$cmd is missing (apt-get install $cmd)"; exit 1; }
	done
	mkdir -p "$CACHE/debs"
	root=$(mktemp -d "$CACHE/$name.root.XXXXXX")
	trap 'rm -rf "$root"' EXIT INT TERM
	log "debootstrap $SUITE into $root (mirror $(mirror), include: ${include:-none})"
	set -- --variant=minbase --cache-dir="$CACHE/debs"
	if [ -n "$include" ]; then set -- "$@" --include="$include"; fi
	debootstrap "$@" "$SUITE" "$root" "$(mirror)" >&2
	# Shrink what users never need in a test image.
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
		"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/tmp/*
	# Same apt source as the Dockerfile's base image, for users who extend it.
	echo "deb $(mirror) $SUITE main" >"$root/etc/apt/sources.list"
	tar --numeric-owner --xattrs -C "$root" -cf "$tar_path.tmp" .
	mv "$tar_path.tmp" "$tar_path"
	rm -rf "$root"
	trap - EXIT INT TERM
}

if [ "$SYSTEMD_ONLY" = 1 ]; then
	if [ "$FORCE" = 1 ] || ! docker image inspect "$SYSTEMD_IMAGE" >/dev/null 2>&1; then
		rootfs_tar bookworm-systemd systemd,systemd-sysv,dbus,curl
		log "docker import $CACHE/bookworm-systemd.tar as $SYSTEMD_IMAGE"
		docker import -c 'CMD ["/sbin/init"]' "$CACHE/bookworm-systemd.tar" "$SYSTEMD_IMAGE" >/dev/null
	fi
	exit 0
fi
if [ "$BASE" = 1 ] && { [ "$FORCE" = 1 ] || ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; }; then
	rootfs_tar bookworm-minbase ""
	log "docker import $CACHE/bookworm-minbase.tar as $BASE_IMAGE"
	docker import -c 'CMD ["bash"]' "$CACHE/bookworm-minbase.tar" "$BASE_IMAGE" >/dev/null
fi
if [ "$BASE_ONLY" = 1 ]; then
	exit 0
fi

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "$IMAGE exists"
	exit 0
fi

rootfs_tar "$ROOTFS" "$PACKAGES"
log "docker import $CACHE/$ROOTFS.tar as $IMAGE"
# Keep the defaults in step with the Dockerfile's EXPOSE and CMD.
docker import \
	-c "EXPOSE $EXPOSE" \
	-c "CMD $CMD_JSON" \
	"$CACHE/$ROOTFS.tar" "$IMAGE" >/dev/null
log "built $IMAGE"
