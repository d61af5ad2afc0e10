#!/usr/bin/env bash
# Local PostgreSQL server for development, tests and CI (no Docker, no system cluster).
#
#   services/postgres.sh install   apt-get install postgresql if no server binaries exist,
#                                  and its postgresql-<version>-hll extension
#   services/postgres.sh start     initdb once, start on 127.0.0.1:$PG_PORT (default 15432),
#                                  create database "analytics"; no-op if already up
#   services/postgres.sh stop      pg_ctl stop -m fast, then give back the huge pages the
#                                  start reserved (services/huge_pages.sh)
#   services/postgres.sh status    exit 0 if running
#
# PG_HUGE_PAGES=0: no huge pages reserved, the server on 4 kB pages (services/huge_pages.sh).
# DATABASE_URL: postgresql://postgres@127.0.0.1:$PG_PORT/analytics (trust auth, loopback only)
# Data, log and unix socket live in $ROOT/.local/postgres (see pg_home below for the
# case where the postgres user cannot reach the repo). PG_STATE_DIR replaces
# $ROOT/.local/postgres, so a second server (other PG_PORT) can run beside the first.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/huge_pages.sh"

NAME=postgres
PG_LINK="${PG_STATE_DIR:-$LOCAL_DIR/postgres}"
DB_NAME=analytics
START_TIMEOUT="${PG_START_TIMEOUT:-60}"

# Newest installed server version, e.g. /usr/lib/postgresql/15/bin ("" if none).
find_pg_bin() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$d" ]] && dirname "$d"
    return 0
}

# The postgresql-hll extension (schema.sql creates it) for the server version in use.
install_hll() {
    local bin ver
    bin="$(find_pg_bin)"
    ver="$(basename "$(dirname "$bin")")"
    [[ -f "/usr/share/postgresql/$ver/extension/hll.control" ]] && return 0
    log $NAME "installing postgresql-$ver-hll (apt) ..."
    apt_install "postgresql-$ver-hll"
}

cmd_install() {
    [[ -n "$(find_pg_bin)" ]] && { install_hll; return 0; }
    log $NAME "installing PostgreSQL server (apt) ..."
    # Debian's package would also create and start a "main" cluster on 5432; we run our
    # own, so switch that off first (what the official postgres Docker image does).
    apt_install postgresql-common
    sed -ri 's/^#?\s*(create_main_cluster)\s*=.*$/\1 = false/' /etc/postgresql-common/createcluster.conf
    apt_install postgresql
    [[ -n "$(find_pg_bin)" ]] || die $NAME "apt installed postgresql but no /usr/lib/postgresql/*/bin/initdb"
    log $NAME "installed $(find_pg_bin)"
    install_hll
}

# Run a command as the postgres system user. initdb and postgres refuse to run as root.
# `cd /` so the server does not warn about an unreadable working directory.
as_pg() { (cd / && runuser -u postgres -- "$@"); }

ensure_pg_user() {
    id postgres >/dev/null 2>&1 && return 0
    log $NAME "creating system user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
        --shell /usr/sbin/nologin postgres
}

# Where the data really lives. Normally $ROOT/.local/postgres itself. The postgres user
# must be able to traverse every parent directory (a repo under /root is not: mode 700),
# and the unix socket path must stay under the kernel's ~107-byte limit. If either fails,
# the real folder goes to /var/tmp/dev-postgres-<hash of repo path> and
# $ROOT/.local/postgres becomes a symlink to it: paths and commands stay the same, and we
# avoid loosening permissions on the user's home directory.
pg_home() {
    if [[ -L "$PG_LINK" ]]; then readlink -f "$PG_LINK"; return; fi
    mkdir -p "$PG_LINK"
    local sock="$PG_LINK/data/.s.PGSQL.$PG_PORT"
    if as_pg test -x "$PG_LINK" && ((${#sock} < 100)); then
        echo "$PG_LINK"
        return
    fi
    local real
    local key="$ROOT"
    [[ "$PG_LINK" == "$LOCAL_DIR/postgres" ]] || key="$PG_LINK"
    real="/var/tmp/dev-postgres-$(printf '%s' "$key" | sha256sum | cut -c1-12)"
    # Only move an empty folder aside; never touch existing data.
    rmdir "$PG_LINK" 2>/dev/null || die $NAME "$PG_LINK is not reachable by user postgres and not empty"
    # /var/tmp is anyone's: a folder someone else made there (or a symlink) would be chowned.
    if [[ -L "$real" ]] || { [[ -e "$real" ]] && ! [[ "$(stat -c %U "$real")" =~ ^(root|postgres)$ ]]; }; then
        die $NAME "$real exists and is not root's or postgres's folder; remove it and start again"
    fi
    mkdir -p "$real"
    ln -s "$real" "$PG_LINK"
    echo "$real"
}

# A file of this server's that root writes (a lock, the huge pages' note): in /run, root's
# own, not in $PG_HOME, which the postgres user owns and could fill with symlinks.
server_run_file() { echo "/run/dev-postgres.$(printf '%s' "$PG_HOME" | sha256sum | cut -c1-16).$1"; }

# The lock serializing this server's starts and stops (in $PG_HOME only without a /run).
state_lock_path() {
    if [[ -w /run ]]; then server_run_file lock; else echo "$PG_HOME/.lock"; fi
}

is_running() {
    [[ -n "${PG_BIN:-}" && -f "$PGDATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1
}

# -U/-d: without them pg_isready logs a "role root does not exist" error in the server log.
is_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -t 2; }

setup_paths() {
    PG_BIN="$(find_pg_bin)"
    [[ -n "$PG_BIN" ]] || die $NAME "no PostgreSQL server found; run '$0 install'"
    ensure_pg_user
    PG_HOME="$(pg_home)"
    PGDATA="$PG_HOME/data"
    LOG_FILE="$PG_HOME/postgres.log"
}

fail_start() {
    echo "----- last 30 lines of $LOG_FILE -----" >&2
    tail -n 30 "$LOG_FILE" >&2 || true
    echo "--------------------------------------" >&2
    echo "[$NAME] $1" >&2
    echo "[$NAME] Check: the log above ($LOG_FILE); port $PG_PORT free (ss -ltnp);" \
         "$PGDATA owned by postgres; shared memory (shared_buffers=512MB)." >&2
    echo "[$NAME] A broken data dir can be reset with: $0 stop; rm -rf '$PGDATA'" >&2
    exit 1
}

init_cluster() {
    [[ -f "$PGDATA/PG_VERSION" ]] && return 0
    local locale=C.UTF-8
    locale -a 2>/dev/null | grep -qix 'c\.utf-\?8' || locale=C
    log $NAME "initdb ${PGDATA#"$ROOT"/} (locale $locale)"
    # trust: loopback-only dev server, so URLs need no password.
    as_pg "$PG_BIN/initdb" -D "$PGDATA" --auth=trust -U postgres --encoding=UTF8 \
        --locale="$locale" 2>&1 | as_pg tee "$PG_HOME/initdb.log" >/dev/null \
        || { cat "$PG_HOME/initdb.log" >&2; die $NAME "initdb failed"; }
    echo "include_if_exists = 'dev.conf'" | as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
}

# Rewritten on every start so PG_PORT or tuning changes apply without a re-init.
write_dev_conf() {
    local preload=""
    # pg_stat_statements ships with Debian's server package; preload it when present.
    [[ -f "${PG_BIN%/bin}/lib/pg_stat_statements.so" ]] && preload="pg_stat_statements"
    # lz4 WAL compression exists from PostgreSQL 15 (Debian 12's); older servers use pglz.
    local wal_compression=lz4
    local major="${PG_BIN%/bin}"
    major="${major##*/}"
    [[ "$major" =~ ^[0-9]+$ ]] && ((major < 15)) && wal_compression=on
    # Written by the postgres user: root writing into the postgres user's directory would
    # follow any symlink that user put there.
    as_pg tee "$PGDATA/dev.conf" >/dev/null <<EOF
# Written by services/postgres.sh on each start; edit that script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDATA'
max_connections = 200
shared_buffers = 512MB
# fsync and synchronous_commit stay on (defaults): tests check durability.
# The consumer rewrites the same rollup rows batch after batch: with the default 1GB of WAL
# between checkpoints a busy consumer forces a checkpoint every few seconds, and each one
# makes the next change of every page write a full-page image into the WAL again.
max_wal_size = 8GB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
wal_compression = $wal_compression
shared_preload_libraries = '$preload'
# On huge pages when the start could reserve them (services/huge_pages.sh).
huge_pages = $(huge_pages_setting)
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

cmd_start() {
    setup_paths
    mkdir -p "$PG_HOME"
    chown postgres:postgres "$PG_HOME"
    # Serialize concurrent starts/stops of the same checkout.
    exec 8>"$(state_lock_path)"
    flock 8

    if is_running && is_ready; then
        log $NAME "already running on 127.0.0.1:$PG_PORT"
    else
        is_running && die $NAME "server in $PGDATA is running but not answering on $PG_PORT; run '$0 stop' first"
        port_open "$PG_PORT" && die $NAME "port $PG_PORT is already used by another process (ss -ltnp 'sport = :$PG_PORT'); set PG_PORT"
        # Before initdb too: its own short-lived servers could map the pages another start
        # has just reserved. A server on 4 kB pages (PG_HUGE_PAGES=0) maps none itself, so it
        # holds the lock for its initdb alone: the tests' private servers start and stop often.
        if huge_pages_wanted || [[ ! -f "$PGDATA/PG_VERSION" || -f "$(huge_pages_note)" ]]; then
            huge_pages_lock
        fi
        init_cluster
        write_dev_conf
        # (kept when a note says pages of an earlier start are to be given back on a failure)
        huge_pages_wanted || [[ -f "$(huge_pages_note)" ]] || huge_pages_unlock
        reserve_huge_pages
        log $NAME "starting on 127.0.0.1:$PG_PORT (log: ${LOG_FILE#"$ROOT"/})"
        as_pg touch "$LOG_FILE"
        # 7>&- 8>&-: the server must not inherit the lock fds. pg_ctl -w waits for the server,
        # which has mapped its shared memory by then.
        as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$LOG_FILE" -w -t "$START_TIMEOUT" \
            >/dev/null 7>&- 8>&- || { release_huge_pages; fail_start "pg_ctl start failed"; }
        huge_pages_unlock
        local waited=0
        until is_ready; do
            ((waited >= START_TIMEOUT)) && fail_start "not accepting connections after ${START_TIMEOUT}s"
            ((waited > 0 && waited % 5 == 0)) && log $NAME "waiting for server... ${waited}s"
            sleep 1
            waited=$((waited + 1))
        done
        log $NAME "ready on 127.0.0.1:$PG_PORT, shared memory on $(page_size_in_use) pages"
    fi

    local exists
    exists="$("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XtAq \
        -c "select 1 from pg_database where datname = '$DB_NAME'")"
    if [[ "$exists" != 1 ]]; then
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB_NAME"
        log $NAME "created database $DB_NAME"
    fi
}

cmd_stop() {
    # Nothing to stop if never installed or never started here (e.g. CI with an external DB).
    if [[ -z "$(find_pg_bin)" || ! -e "$PG_LINK" ]]; then
        log $NAME "not running"
        return 0
    fi
    setup_paths
    exec 8>"$(state_lock_path)"
    flock 8
    # A stop that gives pages back, or frees the huge pages its server mapped, changes what
    # another start counts; a server on 4 kB pages that added none does neither.
    if [[ -f "$(huge_pages_note)" || "$(page_size_in_use)" == huge* ]]; then
        huge_pages_lock
    fi
    if ! is_running; then
        release_huge_pages # after a server that died: its pages are free again
        log $NAME "not running"
        return 0
    fi
    log $NAME "stopping"
    # fast: roll back open transactions and disconnect clients, then a clean checkpoint.
    as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null 7>&-
    release_huge_pages
    log $NAME "stopped"
}

cmd_status() {
    [[ -n "$(find_pg_bin)" && -e "$PG_LINK" ]] || { log $NAME "not running"; return 1; }
    setup_paths
    if is_running && is_ready; then
        log $NAME "running on 127.0.0.1:$PG_PORT (pid $(head -n 1 "$PGDATA/postmaster.pid"))"
    elif is_running; then
        log $NAME "running but not accepting connections on $PG_PORT"
        return 1
    else
        log $NAME "not running"
        return 1
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 {install|start|stop|status}" >&2; exit 2 ;;
esac
