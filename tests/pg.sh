#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the tests that need one.
#
#   eval "$(tests/pg.sh start)"   # exports PEFTSEARCH_TEST_POSTGRES_URL and PEFTSEARCH_PG_DIR
#   make test                     # the PostgreSQL tests run instead of being skipped
#   tests/pg.sh stop              # stops it and deletes its files
#
# Needs Debian's PostgreSQL server (`apt-get install postgresql`; .ci/run installs it). The
# cluster lives in a temporary directory, listens on 127.0.0.1 at a free port, and has one
# database and one user with a random password. As root it runs as the `postgres` user
# (the server refuses to run as root). Messages go to stderr; stdout is only the exports.
set -euo pipefail

die() { echo "tests/pg.sh: $*" >&2; exit 1; }

bindir() {
  local d
  if command -v pg_ctl >/dev/null 2>&1; then  # often a link into /usr/lib/postgresql/N/bin
    d="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
    [ -x "$d/initdb" ] && [ -x "$d/psql" ] && { echo "$d"; return; }
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/psql" ] && { echo "$d"; return; }
  done
  die "no PostgreSQL server found (apt-get install postgresql)"
}

start() {
  local bin dir port password as=()
  bin="$(bindir)"
  dir="$(mktemp -d "${TMPDIR:-/tmp}/peftsearch-pg.XXXXXX")"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user to run the server"
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  password="$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  # Connections over TCP need the password; the local socket (only in $dir) is for set-up.
  echo "host all all 127.0.0.1/32 scram-sha-256" >"$dir/hba"
  echo "local all postgres trust" >>"$dir/hba"
  "${as[@]}" cp "$dir/hba" "$dir/data/pg_hba.conf"
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off" \
    start >/dev/null || { cat "$dir/server.log" >&2; die "the server did not start"; }
  if ! "${as[@]}" "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -c "CREATE ROLE peftsearch LOGIN PASSWORD '$password'" \
    -c "CREATE DATABASE peftsearch OWNER peftsearch" >/dev/null; then
    PEFTSEARCH_PG_DIR="$dir" stop
    die "could not create the user and database"
  fi
  echo "PostgreSQL on 127.0.0.1:$port (files in $dir)" >&2
  echo "export PEFTSEARCH_PG_DIR=$dir"
  echo "export PEFTSEARCH_TEST_POSTGRES_URL=postgresql://peftsearch:$password@127.0.0.1:$port/peftsearch"
}

stop() {
  local dir="${PEFTSEARCH_PG_DIR:-}" bin as=()
  [ -n "$dir" ] && [ -d "$dir/data" ] || die "PEFTSEARCH_PG_DIR names no cluster (run: eval \"\$(tests/pg.sh start)\")"
  bin="$(bindir)"
  [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: tests/pg.sh start|stop" >&2; exit 2 ;;
esac
