#!/bin/sh
# mkdeb.sh builds the Debian package of imapgate with dpkg-deb, from a
# static imapgate binary and the files beside this script:
#
#   cmd/imapgate/contrib/mkdeb.sh BINARY OUTDIR [GOARCH]     (make deb)
#
# It writes OUTDIR/imapgate_<version>_<arch>.deb and prints its path. The
# version is the binary's own (imapgate -version: the module version the
# go command stamped from git), in Debian's syntax: "v" dropped, "-" made
# "~" (a pre-release sorts before its release). GOARCH (default: the go
# command's) gives the Debian architecture.
#
# Contents:
#   /usr/bin/imapgate
#   /lib/systemd/system/imapgate.service      (ExecStart=/usr/bin/imapgate)
#   /etc/imapgate/imapgate.env                conffile, mode 0600
#   /etc/fail2ban/filter.d/imapgate.conf      conffile
#   /usr/share/imapgate/prometheus-rules.yml, grafana-dashboard.json
#   /usr/share/doc/imapgate/copyright, README.md,
#     examples/fail2ban-jail.conf (a jail is the operator's choice to enable)
set -eu

if [ $# -lt 2 ]; then
	echo "usage: $0 BINARY OUTDIR [GOARCH]" >&2
	exit 2
fi
bin=$1
out=$2
goarch=${3:-$(go env GOARCH)}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)

case $goarch in
amd64 | arm64 | riscv64 | s390x) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf ;;
ppc64le) arch=ppc64el ;;
*) echo "mkdeb.sh: no Debian architecture for GOARCH=$goarch" >&2; exit 2 ;;
esac

# "imapgate v0.0.0-20261202004411-d7056d768f90+dirty revision …" → field 2.
version=$("$bin" -version | awk '{ print $2 }')
case $version in
unknown | "") version=0.0.0~unknown ;;
*) version=$(echo "$version" | sed 's/^v//; s/-/~/g') ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
# The package's "./" is "/": mktemp's 0700 must not be what it says.
chmod 0755 "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/imapgate" \
	"$stage/etc/fail2ban/filter.d" "$stage/usr/share/imapgate" "$stage/usr/share/doc/imapgate/examples"
install -m 0755 "$bin" "$stage/usr/bin/imapgate"
sed 's#^ExecStart=/usr/local/bin/imapgate$#ExecStart=/usr/bin/imapgate#' "$here/imapgate.service" >"$stage/lib/systemd/system/imapgate.service"
grep -q '^ExecStart=/usr/bin/imapgate$' "$stage/lib/systemd/system/imapgate.service" || {
	echo "mkdeb.sh: imapgate.service has no ExecStart=/usr/local/bin/imapgate to point at /usr/bin" >&2
	exit 1
}
chmod 0644 "$stage/lib/systemd/system/imapgate.service"
install -m 0600 "$here/deb/imapgate.env" "$stage/etc/imapgate/imapgate.env"
install -m 0644 "$here/fail2ban-filter.conf" "$stage/etc/fail2ban/filter.d/imapgate.conf"
install -m 0644 "$here/prometheus-rules.yml" "$here/grafana-dashboard.json" "$stage/usr/share/imapgate/"
install -m 0644 "$here/fail2ban-jail.conf" "$stage/usr/share/doc/imapgate/examples/"
install -m 0644 "$root/LICENSE" "$stage/usr/share/doc/imapgate/copyright"
install -m 0644 "$root/README.md" "$stage/usr/share/doc/imapgate/README.md"
for s in postinst prerm postrm; do
	install -m 0755 "$here/deb/$s" "$stage/DEBIAN/$s"
done
printf '%s\n' /etc/imapgate/imapgate.env /etc/fail2ban/filter.d/imapgate.conf >"$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | awk '{ print $1 }')
cat >"$stage/DEBIAN/control" <<CONTROL
Package: imapgate
Version: $version
Architecture: $arch
Maintainer: imapgate developers <noreply@imapgate.invalid>
Installed-Size: $size
Section: mail
Priority: optional
Homepage: https://github.com/imapgate/imapgate
Suggests: nginx, libnginx-mod-mail, fail2ban, prometheus
Description: auth_http server for nginx's mail proxy that checks passwords
 imapgate answers nginx's mail proxy (auth_http) for IMAP, POP3 and SMTP
 logins: it picks the user's backend (users file, first letter, default),
 logs in to that backend with the client's credentials, and only then lets
 nginx proxy the client. Configured in /etc/imapgate/imapgate.env; run by
 imapgate.service. Prometheus alert rules and a Grafana dashboard are in
 /usr/share/imapgate.
CONTROL
mkdir -p "$out"
deb="$out/imapgate_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
