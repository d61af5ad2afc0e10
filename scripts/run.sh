#!/usr/bin/env bash
# run.sh: the API on $HOST:$PORT (default 127.0.0.1:3001) and one consumer, in the
# foreground. Ctrl-C (or SIGTERM) stops both cleanly; if either dies, the other is stopped.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

"$PY" -m consumer.migrate || exit 1

"$PY" -m consumer &
consumer_pid=$!
"$PY" -m ingest &
api_pid=$!

stop() {
    kill -TERM "$api_pid" "$consumer_pid" 2>/dev/null
    wait "$api_pid" "$consumer_pid" 2>/dev/null
}
trap 'echo; echo "run: stopping the API and the consumer"; stop; exit 0' INT TERM

echo "run: API on http://${HOST:-127.0.0.1}:${PORT:-3001} (pid $api_pid), consumer (pid $consumer_pid); Ctrl-C stops"
wait -n "$api_pid" "$consumer_pid"
code=$?
echo "run: a process exited (code $code); stopping the other" >&2
stop
exit "$code"
