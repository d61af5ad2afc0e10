#!/usr/bin/env bash
# Start the local Kafka and PostgreSQL (installing them first if needed) and return once
# both answer. A second run is a quick no-op. Then: eval "$(services/env.sh)".
#
# Set KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL to use external services instead; values
# equal to the local defaults (e.g. after `eval "$(services/env.sh)"`) still mean local.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

want_kafka=1 want_pg=1
if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" && "$KAFKA_BOOTSTRAP_SERVERS" != "$LOCAL_KAFKA_BOOTSTRAP" ]]; then
    log kafka "using external Kafka at $KAFKA_BOOTSTRAP_SERVERS"
    want_kafka=0
fi
if [[ -n "${DATABASE_URL:-}" && "$DATABASE_URL" != "$LOCAL_DATABASE_URL" ]]; then
    log postgres "using external PostgreSQL at $DATABASE_URL"
    want_pg=0
fi

# Run both services' steps in parallel (the Maven download and apt install are the slow
# parts of a cold start; apt calls serialize on a lock in lib.sh). Fail if either fails.
both() {
    local step="$1" kpid="" ppid="" rc=0
    ((want_kafka)) && { "$SERVICES_DIR/kafka.sh" "$step" & kpid=$!; }
    ((want_pg)) && { "$SERVICES_DIR/postgres.sh" "$step" & ppid=$!; }
    [[ -n "$kpid" ]] && { wait "$kpid" || rc=1; }
    [[ -n "$ppid" ]] && { wait "$ppid" || rc=1; }
    return $rc
}

both install || { echo "services/up.sh: install failed (see above)" >&2; exit 1; }
both start || { echo "services/up.sh: start failed (see above)" >&2; exit 1; }
