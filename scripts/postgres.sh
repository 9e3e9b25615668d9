#!/usr/bin/env bash
# scripts/postgres.sh: start/stop a throwaway PostgreSQL server on this machine, for the study
# tests (tests/test_postgres.py) and for trying a search stored in a database by hand.
#
#   scripts/postgres.sh start    # initdb, start, create the role and database; one line when up
#   scripts/postgres.sh status   # exit 0 when the server answers, 3 when it is down
#   scripts/postgres.sh env      # prints the exports below: eval "$(scripts/postgres.sh env)"
#   scripts/postgres.sh stop     # stops the server, removes the folder
#
# Everything lives in ${LENET_POSTGRES_DIR:-/tmp/lenet-postgres}: data/ (the cluster), run/
# (its unix socket, private), postgres.log, and `env` (mode 0600):
#   PGHOST PGPORT PGUSER PGDATABASE   the server on 127.0.0.1, the role `lenet`, database `lenet`
#   PGPASSWORD                        the role's password (random, made at start)
#   LENET_STUDY_URL                   postgresql+psycopg://lenet:<password>@127.0.0.1:<port>/lenet
# The role logs in over TCP with scram-sha-256 only; the server's superuser (the OS user that
# runs it) only through the private socket (peer). PostgreSQL refuses to run as root: as root
# the server runs as the `postgres` system user (created with useradd if missing).
# The port: $LENET_POSTGRES_PORT, else the first free one from 55432 up.
# `start` and `stop` take a lock (<dir>.lock): parallel callers wait their turn.
#
# Exit codes: start 0 up (also "already running"), 1 the server did not come up (log tail
# printed), 2 cannot start here (no PostgreSQL binaries, not installable): the tests skip with
# it. status 0 up, 3 down. env 0, or 1 when not started. stop 0 (also when down).
#
# Findings (Debian 12, postgresql 15.18, psycopg 3; 2 busy CPUs): start 1-3 s (initdb -N, the
# server, the role), again while up ~0.05 s, after a kill -9 of the server ~4 s (a fresh
# cluster); stop ~0.3 s. fsync is off: the data is thrown away anyway. Runs as root (the server
# as `postgres`) and as any other user (e.g. nobody: the server as that user).
set -euo pipefail

DIR="${LENET_POSTGRES_DIR:-/tmp/lenet-postgres}"
MARK="$DIR/.lenet-postgres"
DATA="$DIR/data"
RUN="$DIR/run"

log() { echo "postgres: $*" >&2; }

pg_bin() {  # the newest Debian cluster's binaries, else those on PATH
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  command -v initdb >/dev/null && dirname "$(command -v initdb)"
}

install_packages() {
  [ -n "$(pg_bin)" ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "cannot start: PostgreSQL is not installed (apt-get install postgresql, as root)"
    return 2
  fi
  log "installing postgresql (apt-get)"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends install postgresql)
  if ! { "${apt[@]}" || { apt-get -q update && "${apt[@]}"; }; } >/tmp/lenet-postgres-apt.log 2>&1; then
    tail -n 20 /tmp/lenet-postgres-apt.log >&2
    log "cannot start: apt-get install postgresql failed"
    return 2
  fi
}

owner() {  # the OS user that runs the server
  if [ "$(id -u)" != 0 ]; then id -un; return; fi
  id postgres >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  echo postgres
}

as_owner() {  # as_owner CMD...: run CMD as the server's user
  if [ "$(id -u)" = 0 ]; then runuser -u "$(owner)" -- "$@"; else "$@"; fi
}

setting() { sed -n "s/^export $1=//p" "$DIR/env" 2>/dev/null; }

is_up() {
  local port
  port="$(setting PGPORT)"
  [ -n "$port" ] && "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5
}

free_port() {  # bash's /dev/tcp connects where something listens
  local port="${LENET_POSTGRES_PORT:-55432}"
  while (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

up_line() {
  log "up on 127.0.0.1:$(setting PGPORT) (role lenet, database lenet); env in $DIR/env"
}

cmd_start() {
  if is_up; then up_line; return 0; fi
  local rc=0
  install_packages || rc=$?
  [ "$rc" = 0 ] || return "$rc"
  if [ -e "$MARK" ]; then cmd_stop >/dev/null 2>&1; fi  # a stale or half-started server
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    log "cannot start: $DIR exists and was not made by this script"
    return 2
  fi
  local bin port password user
  bin="$(pg_bin)" port="$(free_port)" user="$(owner)"
  password="lenet-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$DIR" "$DATA" "$RUN"
  : >"$MARK"
  chmod 0755 "$DIR"
  chown "$user" "$DATA" "$RUN"
  chmod 0700 "$DATA" "$RUN"
  touch "$DIR/postgres.log" && chown "$user" "$DIR/postgres.log"
  if ! as_owner "$bin/initdb" -D "$DATA" -N -E UTF8 --auth-local=peer \
      --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1; then
    cat "$DIR/initdb.log" >&2
    log "initdb failed"
    return 1
  fi
  cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$RUN'
fsync = off
EOF
  # 9>&-: the server must not inherit the lock.
  if ! as_owner "$bin/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 start >/dev/null 9>&-; then
    tail -n 20 "$DIR/postgres.log" >&2
    log "the server did not start"
    return 1
  fi
  # The password on stdin, not the command line (ps would show it).
  as_owner "$bin/psql" -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$port" -d postgres >/dev/null <<EOF
CREATE ROLE lenet LOGIN PASSWORD '$password';
CREATE DATABASE lenet OWNER lenet;
EOF
  (
    umask 077
    cat >"$DIR/env" <<EOF
export PGHOST=127.0.0.1
export PGPORT=$port
export PGUSER=lenet
export PGDATABASE=lenet
export PGPASSWORD=$password
export LENET_STUDY_URL=postgresql+psycopg://lenet:$password@127.0.0.1:$port/lenet
EOF
  )
  up_line
}

cmd_stop() {
  if [ ! -e "$MARK" ]; then
    log "not running (no $DIR)"
    return 0
  fi
  if [ -f "$DATA/postmaster.pid" ]; then
    as_owner "$(pg_bin)/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
  log "stopped; removed $DIR"
}

cmd_status() {
  if is_up; then up_line; return 0; fi
  log "down ($DIR)"
  return 3
}

cmd_env() {
  [ -f "$DIR/env" ] || { log "not started: $DIR/env does not exist"; return 1; }
  cat "$DIR/env"
}

locked() {  # one start/stop at a time (parallel test workers all call start)
  if command -v flock >/dev/null && { exec 9>>"$DIR.lock"; } 2>/dev/null; then
    flock -w 120 9 || { log "timed out waiting for $DIR.lock"; return 1; }
  fi
  "$@"
}

case "${1:-}" in
  start) locked cmd_start ;;
  stop) locked cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 start|stop|status|env   (folder: \$LENET_POSTGRES_DIR, default /tmp/lenet-postgres)" >&2; exit 64 ;;
esac
