#!/bin/sh
# Creates deploy/secrets/ for docker-compose.yml: a random SECRET_KEY, metrics token and
# database password, the DATABASE_URL that uses it, and a 2048-bit RSA OIDC signing key.
# Existing files are kept (re-running never rotates a key by accident).
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(48))'; }
[ -s secrets/secret_key ] || rand > secrets/secret_key
[ -s secrets/metrics_token ] || rand > secrets/metrics_token
[ -s secrets/postgres_password ] || rand > secrets/postgres_password
[ -s secrets/database_url ] || printf 'postgres://idp:%s@postgres:5432/idp\n' "$(cat secrets/postgres_password)" > secrets/database_url
[ -s secrets/oidc_rsa.pem ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out secrets/oidc_rsa.pem 2>/dev/null
# Compose bind-mounts these files as they are: the app runs as uid 10001, PostgreSQL as 999.
if [ "$(id -u)" = 0 ]; then
  chown 10001 secrets/secret_key secrets/metrics_token secrets/database_url secrets/oidc_rsa.pem
  chown 999 secrets/postgres_password
fi
chmod 0400 secrets/*
echo "secrets in $(pwd)/secrets (back them up: the OIDC key signs every id_token and evidence bundle)"
