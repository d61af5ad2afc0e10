#!/usr/bin/env bash
# Connection settings for the local services, unless the caller already set them
# (e.g. CI pointing at its own Kafka/PostgreSQL).
#
#   eval "$(services/env.sh)"     # in a shell or Makefile recipe
#   source services/env.sh        # exports directly
#
# Prints:
#   export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092
#   export DATABASE_URL=postgresql://postgres@127.0.0.1:15432/analytics
# (ports follow KAFKA_PORT / PG_PORT if set).

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: run as a child and eval its output, so neither `set -euo pipefail` nor
    # lib.sh's variables leak into the caller's shell.
    eval "$(bash "${BASH_SOURCE[0]}")"
    return
fi

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
printf 'export KAFKA_BOOTSTRAP_SERVERS=%q\n' "${KAFKA_BOOTSTRAP_SERVERS:-$LOCAL_KAFKA_BOOTSTRAP}"
printf 'export DATABASE_URL=%q\n' "${DATABASE_URL:-$LOCAL_DATABASE_URL}"
