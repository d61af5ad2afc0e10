#!/usr/bin/env bash
# with-services.sh CMD [ARG...]: runs CMD with Kafka and PostgreSQL answering, then stops the
# local services that this call started (ones already running, or external ones named by
# KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, are left alone). CMD's exit code is returned.
set -uo pipefail
cd "$(dirname "$0")/.."

# The same test as services/up.sh: unset, or equal to the local default, means local.
eval "$(env -u KAFKA_BOOTSTRAP_SERVERS -u DATABASE_URL services/env.sh | sed 's/^export /local_/')"
started=()
if [[ "${KAFKA_BOOTSTRAP_SERVERS:-$local_KAFKA_BOOTSTRAP_SERVERS}" == "$local_KAFKA_BOOTSTRAP_SERVERS" ]] \
    && ! services/kafka.sh status >/dev/null 2>&1; then
    started+=(kafka)
fi
if [[ "${DATABASE_URL:-$local_DATABASE_URL}" == "$local_DATABASE_URL" ]] \
    && ! services/postgres.sh status >/dev/null 2>&1; then
    started+=(postgres)
fi

stop_started() {
    for service in "${started[@]}"; do
        services/"$service".sh stop || true
    done
}
trap stop_started EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap runs on Ctrl-C too

services/up.sh || exit 1
eval "$(services/env.sh)"
export KAFKA_BOOTSTRAP_SERVERS DATABASE_URL

"$@"
