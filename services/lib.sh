# Shared helpers for services/*.sh. Sourced, not executed.
# shellcheck shell=bash

SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$SERVICES_DIR")"   # repo root; all data lives under $ROOT/.local
LOCAL_DIR="$ROOT/.local"

# Defaults shared with env.sh, so "is this the local service?" has one answer.
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
PG_PORT="${PG_PORT:-15432}"
LOCAL_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
LOCAL_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/analytics"

# log NAME MESSAGE...: one prefixed line, so parallel output from up.sh stays readable.
log() { local name="$1"; shift; printf '[%s] %s\n' "$name" "$*"; }
die() { local name="$1"; shift; printf '[%s] ERROR: %s\n' "$name" "$*" >&2; exit 1; }

# True if something accepts TCP connections on 127.0.0.1:PORT (bash's /dev/tcp, no nc needed).
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# apt_install PKG...: install Debian packages non-interactively.
# up.sh installs Kafka and Postgres in parallel; both may need apt on a fresh machine and
# dpkg allows one user at a time, so callers serialize on a lock file. `apt-get update`
# runs at most once an hour (marker file), not once per package.
apt_install() {
    [[ $EUID -eq 0 ]] || { echo "apt_install: need root to install: $*" >&2; return 1; }
    mkdir -p "$LOCAL_DIR"
    (
        flock 9
        export DEBIAN_FRONTEND=noninteractive
        local marker="$LOCAL_DIR/.apt-updated"
        if [[ -z "$(find "$marker" -mmin -60 2>/dev/null)" ]]; then
            apt-get update -qq 9>&-
            touch "$marker"
        fi
        # 9>&-: daemons a package's postinst may start must not inherit the lock.
        apt-get install -y -qq --no-install-recommends "$@" 9>&-
    ) 9>"$LOCAL_DIR/.apt.lock"
}

# pid_matches PIDFILE PATTERN: the pid file names a live process whose command line
# contains PATTERN (guards against a stale pid file whose pid was reused).
pid_matches() {
    local pidfile="$1" pattern="$2" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}
