# Huge pages for the local PostgreSQL's shared memory. Sourced by services/postgres.sh, whose
# PG_BIN, PGDATA, PG_HOME, NAME, as_pg and server_run_file these use.
# shellcheck shell=bash
#
# On 4 kB pages every new backend takes a page fault of its own for each page of shared
# buffers it touches first: a stats connection's first questions on a site cost up to twice
# their later runs (docs/decisions/0039-huge-pages.md). So, run as root, `start` reserves the
# huge pages the server needs in the kernel (vm.nr_hugepages) and `stop` gives them back.
# The count is the machine's: a start adds only what the free, unreserved ones lack, and
# notes what it added (with the boot it was added in) in /run, root's own (huge_pages_note). The
# machine-wide lock is held from the count until the server has mapped its memory, and from
# a stop until the pages are given back, so two servers' starts and stops cannot count the
# same pages. PG_HUGE_PAGES=0 (or off) reserves nothing and runs the server on 4 kB pages.

HUGE_PAGES_KNOB=/proc/sys/vm/nr_hugepages
# Root's own directory: a fixed name in /tmp could be anyone's symlink.
HUGE_PAGES_LOCK=/run/dev-postgres-huge-pages.lock

# Where a server's note lives (server_run_file, services/postgres.sh: in /run).
huge_pages_note() { server_run_file huge-pages; }

huge_pages_wanted() {
    case "${PG_HUGE_PAGES:-1}" in 0 | off | false | no) return 1 ;; *) return 0 ;; esac
}

# For dev.conf: off when not wanted, so the server takes no one else's free pages.
huge_pages_setting() { if huge_pages_wanted; then echo try; else echo off; fi; }

meminfo() { awk -v key="$1:" '$1 == key { print $2 }' /proc/meminfo; }

# Held on fd 7 until huge_pages_unlock (or the script's end). Only root reserves pages. A lock
# file that cannot be opened (no writable /run) reserves none, and must not fail a stop.
HUGE_PAGES_LOCKED=0
huge_pages_lock() {
    [[ $EUID -eq 0 && -w "$HUGE_PAGES_KNOB" ]] || return 0
    if ! { exec 7>"$HUGE_PAGES_LOCK"; } 2>/dev/null; then
        log "$NAME" "cannot open $HUGE_PAGES_LOCK: no huge pages lock, so a start reserves none"
        return 0
    fi
    flock 7
    HUGE_PAGES_LOCKED=1
}
huge_pages_unlock() {
    exec 7>&-
    HUGE_PAGES_LOCKED=0
}

# The pages this server's starts added in this boot (a note of an earlier boot: none, the
# kernel's count started again).
huge_pages_added() {
    local boot="" count=""
    [[ -f "$(huge_pages_note)" ]] && read -r boot count <"$(huge_pages_note)"
    if [[ "$boot" == "$(</proc/sys/kernel/random/boot_id)" && "$count" =~ ^[0-9]+$ ]]; then
        echo "$count"
    else
        echo 0
    fi
}

# With the lock held, before the server starts.
reserve_huge_pages() {
    huge_pages_wanted || return 0
    if [[ $EUID -ne 0 || ! -w "$HUGE_PAGES_KNOB" ]]; then
        log $NAME "shared memory on 4 kB pages unless the machine has free huge pages:" \
            "reserving them needs root and a writable $HUGE_PAGES_KNOB" \
            "(docs/operations.md, \"Huge pages\")"
        return 0
    fi
    ((HUGE_PAGES_LOCKED)) || return 0
    local need avail short have got
    # PostgreSQL 15 and later compute it from the configuration, on a stopped server. It also
    # fails on a configuration error, which the start below then reports.
    if ! need="$(as_pg "$PG_BIN/postgres" -D "$PGDATA" -C shared_memory_size_in_huge_pages 2>&1)"; then
        log "$NAME" "no huge pages reserved: postgres -C shared_memory_size_in_huge_pages failed" \
            "(${need%%$'\n'*}; PostgreSQL before 15 has no such setting)"
        return 0
    fi
    if ! [[ "$need" =~ ^[0-9]+$ ]] || ((need == 0)); then
        log "$NAME" "no huge pages reserved: the server says it needs '$need'"
        return 0
    fi
    avail=$(($(meminfo HugePages_Free) - $(meminfo HugePages_Rsvd)))
    short=$((need - avail))
    ((short > 0)) || return 0
    have="$(<"$HUGE_PAGES_KNOB")"
    echo $((have + short)) 2>/dev/null >"$HUGE_PAGES_KNOB" || true
    got=$(($(<"$HUGE_PAGES_KNOB") - have))
    if ((got < short)); then
        # The server maps its memory in one piece: fewer pages than it needs are no use.
        echo "$have" 2>/dev/null >"$HUGE_PAGES_KNOB" || true
        log $NAME "the kernel found $got of the $short huge pages the server needs (memory too" \
            "fragmented): none reserved, shared memory on 4 kB pages"
        return 0
    fi
    echo "$(</proc/sys/kernel/random/boot_id) $(($(huge_pages_added) + got))" >"$(huge_pages_note)"
    log $NAME "reserved $got huge pages (vm.nr_hugepages $have -> $((have + got))), given back" \
        "at stop; PG_HUGE_PAGES=0 reserves none"
}

# With the lock held, once the server has stopped (or was found dead).
release_huge_pages() {
    [[ -f "$(huge_pages_note)" ]] || return 0
    local added have target
    added="$(huge_pages_added)"
    if ((added > 0)); then
        have="$(<"$HUGE_PAGES_KNOB")"
        target=$((have > added ? have - added : 0))
        echo "$target" 2>/dev/null >"$HUGE_PAGES_KNOB" || true
        if [[ "$(<"$HUGE_PAGES_KNOB")" != "$target" ]]; then
            log $NAME "could not give back $added huge pages (vm.nr_hugepages is $have);" \
                "the next stop tries again"
            return 0
        fi
    fi
    rm -f "$(huge_pages_note)"
}

# "huge" or "4 kB": the pages the running server's shared memory is on.
page_size_in_use() {
    local pid
    pid="$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)"
    if grep -q anon_hugepage "/proc/$pid/maps" 2>/dev/null; then
        echo "huge ($(meminfo Hugepagesize) kB)"
    else
        echo "4 kB"
    fi
}
