#!/usr/bin/env bash
# Local single-node Kafka (KRaft, broker+controller) for development, tests and CI.
# No Docker: the broker jars come from Maven Central (services/kafka/pom.xml).
#
#   services/kafka.sh install   download the jars into .local/kafka/lib (once)
#   services/kafka.sh start     start on 127.0.0.1:$KAFKA_PORT (default 19092); no-op if up
#   services/kafka.sh stop      stop the broker started by `start` (pid file only)
#   services/kafka.sh status    exit 0 if running
#
# Everything lives in $ROOT/.local/kafka: lib/ (jars), data/ (log.dirs), kafka.log,
# kafka.pid, server.properties, cluster.id. KAFKA_STATE_DIR moves all but lib/ elsewhere, so
# a second broker (other KAFKA_PORT / KAFKA_CONTROLLER_PORT) can run beside the first, e.g.
# for tests that restart a broker. KAFKA_LIB_DIR points at the jars (default
# $ROOT/.local/kafka/lib), e.g. those of another checkout.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=kafka
LIB_DIR="${KAFKA_LIB_DIR:-$LOCAL_DIR/kafka/lib}"
KAFKA_HOME="${KAFKA_STATE_DIR:-$LOCAL_DIR/kafka}"
DATA_DIR="$KAFKA_HOME/data"
PROPS="$KAFKA_HOME/server.properties"
LOG_FILE="$KAFKA_HOME/kafka.log"
PID_FILE="$KAFKA_HOME/kafka.pid"
CLUSTER_ID_FILE="$KAFKA_HOME/cluster.id"
POM="$SERVICES_DIR/kafka/pom.xml"
LOG4J_CONF="$SERVICES_DIR/kafka/log4j2.properties"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
# The broker logs this once the broker side is serving (KafkaRaftServer, Kafka 4.x).
READY_LINE="Kafka Server started"

ensure_tools() {
    # Debian 12's openjdk-17 satisfies Kafka 4's Java 17+ requirement.
    command -v java >/dev/null || { log $NAME "installing Java 17 (apt)"; apt_install openjdk-17-jre-headless; }
    command -v mvn >/dev/null || { log $NAME "installing Maven (apt)"; apt_install maven; }
}

cmd_install() {
    # Marker holds the pom's checksum: editing the pom (e.g. a version bump) re-downloads.
    local marker="$LIB_DIR/.installed" sum
    sum="$(sha256sum "$POM" | cut -d' ' -f1)"
    if [[ -f "$marker" && "$(<"$marker")" == "$sum" ]]; then
        return 0
    fi
    ensure_tools
    log $NAME "downloading Kafka jars from Maven Central into ${LIB_DIR#"$ROOT"/} ..."
    rm -rf "$LIB_DIR"
    mkdir -p "$LIB_DIR"
    # Maven's output goes to a file (it prints ANSI codes even with -q); shown on failure.
    mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIB_DIR" >"$KAFKA_HOME/install.log" 2>&1 \
        || { tail -n 40 "$KAFKA_HOME/install.log" >&2; die $NAME "Maven download failed (full output: $KAFKA_HOME/install.log)"; }
    echo "$sum" >"$marker"
    log $NAME "installed $(find "$LIB_DIR" -name '*.jar' | wc -l) jars"
}

is_running() { pid_matches "$PID_FILE" "kafka.Kafka $PROPS"; }

render_props() {
    sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@LOG_DIR@|$DATA_DIR|g" \
        "$SERVICES_DIR/kafka/server.properties.in" >"$PROPS"
}

format_storage() {
    # KRaft needs the log dir formatted with a cluster id before the first start.
    # The id is kept so a re-format (e.g. after deleting data/) reuses it.
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
        java -cp "$LIB_DIR/*" kafka.tools.StorageTool random-uuid >"$CLUSTER_ID_FILE"
    fi
    log $NAME "formatting ${DATA_DIR#"$ROOT"/} (cluster id $(<"$CLUSTER_ID_FILE"))"
    # --standalone: this node is the whole controller quorum.
    java -cp "$LIB_DIR/*" -Dlog4j2.configurationFile="$LOG4J_CONF" \
        kafka.tools.StorageTool format --standalone -t "$(<"$CLUSTER_ID_FILE")" \
        -c "$PROPS" --ignore-formatted >>"$KAFKA_HOME/format.log" 2>&1 \
        || { tail -n 20 "$KAFKA_HOME/format.log" >&2; die $NAME "storage format failed (see $KAFKA_HOME/format.log)"; }
}

fail_start() {
    echo "----- last 30 lines of $LOG_FILE -----" >&2
    tail -n 30 "$LOG_FILE" >&2 || true
    echo "--------------------------------------" >&2
    echo "[$NAME] $1" >&2
    echo "[$NAME] Check: the log above ($LOG_FILE); ports $KAFKA_PORT/$KAFKA_CONTROLLER_PORT free" \
         "(ss -ltnp); free memory (heap is 512m-1g); java -version >= 17." >&2
    echo "[$NAME] A broken data dir can be reset with: $0 stop; rm -rf '$DATA_DIR'" >&2
    exit 1
}

cmd_start() {
    mkdir -p "$KAFKA_HOME"
    # Serialize concurrent starts/stops of the same checkout.
    exec 8>"$KAFKA_HOME/.lock"
    flock 8

    if is_running && port_open "$KAFKA_PORT"; then
        log $NAME "already running (pid $(<"$PID_FILE")) on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    is_running && die $NAME "pid $(<"$PID_FILE") is running but not answering on $KAFKA_PORT; run '$0 stop' first"
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
        port_open "$port" && die $NAME "port $port is already used by another process (ss -ltnp 'sport = :$port'); set KAFKA_PORT/KAFKA_CONTROLLER_PORT"
    done

    cmd_install
    render_props
    format_storage

    # Keep the previous run's log for post-mortems; the ready check reads a fresh file.
    [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.prev"
    log $NAME "starting broker on 127.0.0.1:$KAFKA_PORT (log: ${LOG_FILE#"$ROOT"/})"
    # nohup + setsid: the broker outlives this script and the terminal/CI step that ran it.
    # 8>&-: the broker must not inherit the lock fd, or it would hold the lock forever.
    nohup setsid java -Xms512m -Xmx1g -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONF" \
        -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" >"$LOG_FILE" 2>&1 </dev/null 8>&- &
    local pid=$!
    echo "$pid" >"$PID_FILE"

    # Port open is not enough (the controller listener opens first, the broker is then
    # still fenced); wait for the "started" log line and the broker port.
    local waited=0
    while ! { grep -qF "$READY_LINE" "$LOG_FILE" 2>/dev/null && port_open "$KAFKA_PORT"; }; do
        # kill -0, not is_running: right after the fork the child has not exec'd java yet.
        kill -0 "$pid" 2>/dev/null || fail_start "broker process exited during startup"
        ((waited >= START_TIMEOUT)) && fail_start "not ready after ${START_TIMEOUT}s (process left running, pid $pid)"
        ((waited > 0 && waited % 5 == 0)) && log $NAME "waiting for broker... ${waited}s"
        sleep 1
        waited=$((waited + 1))
    done
    log $NAME "ready on 127.0.0.1:$KAFKA_PORT (pid $pid, ${waited}s)"
}

cmd_stop() {
    mkdir -p "$KAFKA_HOME"
    exec 8>"$KAFKA_HOME/.lock"
    flock 8
    if ! is_running; then
        log $NAME "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    local pid waited=0
    pid="$(<"$PID_FILE")"
    log $NAME "stopping pid $pid"
    kill -TERM "$pid"   # controlled shutdown: flushes logs, writes a clean-shutdown marker
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= 30)); then
            log $NAME "still alive after 30s, sending SIGKILL to $pid"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    log $NAME "stopped"
}

cmd_status() {
    if is_running && port_open "$KAFKA_PORT"; then
        log $NAME "running (pid $(<"$PID_FILE")) on 127.0.0.1:$KAFKA_PORT"
    elif is_running; then
        log $NAME "process $(<"$PID_FILE") alive but not answering on $KAFKA_PORT"
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
