#!/usr/bin/env bash
# Stop the local Kafka and PostgreSQL started by up.sh. Data stays in .local/.
# Each stop only touches the process recorded by its own start (pid file / data dir)
# and is a no-op if that service is not running, so this is safe to run any time,
# whatever KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL say.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rc=0
"$SERVICES_DIR/kafka.sh" stop & kpid=$!
"$SERVICES_DIR/postgres.sh" stop || rc=1
wait "$kpid" || rc=1
exit $rc
