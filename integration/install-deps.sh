#!/bin/sh
# install-deps.sh installs, from Debian's packages, what the integration
# tests and `make demo` need and the machine lacks: Dovecot (IMAP, POP3),
# nginx with its mail module, redis-server (the shared-state scenarios),
# debootstrap (to build the Dovecot test image
# when a Docker engine is present) and, where there is Docker,
# docker-compose. Idempotent: it checks each command and package first and
# touches apt only for what is missing. Run as root.
#
# Package installs must not start services that would take ports 143, 110,
# 25 or 80 on this machine: while installing, a policy-rc.d that forbids
# starting services is put in place (and removed afterwards, unless one was
# already there). No network other than apt's mirrors is used.
set -eu

log() { echo "install-deps.sh: $*" >&2; }

# need PACKAGE CHECK: PACKAGE is wanted unless CHECK (a shell test) passes.
missing=""
need() {
	if ! sh -c "$2" >/dev/null 2>&1; then
		missing="$missing $1"
	fi
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

need dovecot-imapd "test -x /usr/lib/dovecot/imap-login && command -v dovecot"
need dovecot-pop3d "test -x /usr/lib/dovecot/pop3-login"
need nginx-light "command -v nginx"
need libnginx-mod-mail "test -e /usr/lib/nginx/modules/ngx_mail_module.so || nginx -V 2>&1 | grep -q -- '--with-mail '"
need debootstrap "command -v debootstrap"
need fail2ban "command -v fail2ban-regex"
need wrk "command -v wrk"
# make bench runs the PHP seed (auth.php on php-fpm) beside imapgate.
need php-fpm "command -v php-fpm8.2"
need redis-server "command -v redis-server"
need ca-certificates "test -e /etc/ssl/certs/ca-certificates.crt"
# The routing scenarios' directories, run as processes on their own
# directories (never the system services), and nginx's stream module for
# the Cyrus howto's TLS frontends. Cyrus itself runs in a container.
need mariadb-server "command -v mariadbd && command -v mariadb-install-db"
need postgresql-15 "test -x /usr/lib/postgresql/15/bin/initdb"
need slapd "test -x /usr/sbin/slapd && test -x /usr/sbin/slapadd"
need libnginx-mod-stream "test -e /usr/lib/nginx/modules/ngx_stream_module.so || nginx -V 2>&1 | grep -q -- '--with-stream '"
# promtool (cmd/imapgate's alert-rule tests) and systemd-analyze (the unit
# file's check); dpkg-deb comes with dpkg.
need prometheus "command -v promtool"
need systemd "command -v systemd-analyze"
# Compose, for TestCompose and docker-compose.yml: only on a machine with a
# Docker client, and only when neither `docker compose` (v2) nor
# docker-compose (v1.29, Debian's package) is there.
if command -v docker >/dev/null 2>&1; then
	need docker-compose "docker compose version || command -v docker-compose"
fi
# nginx: take whichever flavour is present; only install one when none is.
case $missing in
*nginx-light*)
	for p in nginx nginx-core nginx-light nginx-full nginx-extras; do
		if installed "$p"; then missing=$(echo "$missing" | sed 's/ nginx-light//'); fi
	done
	missing=$(echo "$missing" | sed 's/nginx-light/nginx/')
	;;
esac

if [ -z "$missing" ]; then
	log "all dependencies present"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	log "missing:$missing; run as root (sudo $0)"
	exit 1
fi

policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# installed by imapgate integration/install-deps.sh while installing\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT INT TERM

log "installing:$missing"
apt-get update
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing

# Packages whose postinst ignored policy-rc.d (or a machine where services
# start anyway): make sure nothing the tests need is held by a system daemon.
for svc in dovecot nginx mariadb postgresql slapd redis-server; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
		log "stopping the system $svc service (it would hold the test ports)"
		systemctl stop "$svc" || true
		systemctl disable "$svc" 2>/dev/null || true
	fi
done
log "done"
