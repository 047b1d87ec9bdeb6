#!/bin/sh
# Entrypoint of docker-compose.yml's Dovecots (image: integration/dovecot's
# Dockerfile). The configuration is the integration suite's own:
# dovecot.conf beside this file is rendered from
# integration/dovecot/dovecot.conf.tmpl, and the passwd-file is
# integration/dovecot/passwd.mailhost01 or .mailhost02, both mounted
# read-only into /srv/imapgate-dovecot. This script supplies what the test
# harness would otherwise write next to them.
set -eu
dir=/srv/imapgate-dovecot
# Mail is delivered as nobody (the template's static userdb).
mkdir -p "$dir/mail"
chmod 1777 "$dir/mail"
# TLS (IMAPS 993, POP3S 995, STARTTLS): the self-signed certificate the
# image's ssl-cert package made when the image was built.
ln -sf /etc/ssl/certs/ssl-cert-snakeoil.pem "$dir/server.crt"
ln -sf /etc/ssl/private/ssl-cert-snakeoil.key "$dir/server.key"
# The template's log file is Dovecot's standard error, for `docker compose logs`.
ln -sf /proc/1/fd/2 "$dir/dovecot.log"
exec /usr/sbin/dovecot -F -c "$dir/dovecot.conf"
