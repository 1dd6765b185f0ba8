#!/usr/bin/env bash
# Bridged QoS 1 throughput: publishers on a local broker, subscribers on a
# remote one, a bridge (`bench/# out 1`) between them. Runs this broker ->
# this broker and Mosquitto -> Mosquitto with the same mqtt-bench run and
# prints one line each.
#
#   bash benches/bridge.sh                 # 10 s per run
#   DURATION=1 bash benches/bridge.sh      # a smoke run
#
# Environment: DURATION (seconds, default 10), CLIENTS (publisher/subscriber
# pairs, default 4), WINDOW (QoS 1 window per publisher, default 64),
# DURABILITY (this broker's `durability`, default "always"; Mosquitto keeps
# its queues in memory between snapshots, so "periodic" is the closer match),
# INFLIGHT (both bridges' in-flight window, default 100), KEEP=1 (keep the
# temporary directory with the logs), BROKER_ARGS (e.g. -v).
# Needs mosquitto (apt-get install mosquitto) and release builds of
# mqtt-broker and mqtt-bench (built if missing). Measure on a quiet machine.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/.ci/lib.sh"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-4}"
WINDOW="${WINDOW:-64}"
DURABILITY="${DURABILITY:-always}"
INFLIGHT="${INFLIGHT:-100}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
command -v mosquitto >/dev/null || { echo "needs mosquitto" >&2; exit 2; }
if [ ! -x "$TARGET/mqtt-broker" ] || [ ! -x "$TARGET/mqtt-bench" ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker -p mqtt-benches --bin mqtt-broker --bin mqtt-bench)
fi

WORK="$(mktemp -d)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

ours() { # NAME PORT [BRIDGE-TO-PORT]
    local bridge=""
    if [ -n "${3:-}" ]; then
        bridge="[[bridges]]
name = \"bench\"
address = \"127.0.0.1:$3\"
remote_clientid = \"bench-bridge\"
topics = ['bench/# out 1']
max_inflight = $INFLIGHT
notifications = false"
    fi
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1/broker.toml" <<EOF
sys_interval_secs = 0
data_dir = "$WORK/$1/data"
durability = "$DURABILITY"
max_queued_messages = 1000000

[[listeners]]
bind = "127.0.0.1:$2"
allow_anonymous = true

$bridge
EOF
    "$TARGET/mqtt-broker" ${BROKER_ARGS:-} -c "$WORK/$1/broker.toml" </dev/null >"$WORK/$1/log" 2>&1 &
    PIDS+=("$!")
    wait_port "$2" "$!" 10
}

mosq() { # NAME PORT [BRIDGE-TO-PORT]
    mkdir -p "$WORK/$1"
    {
        echo "user root"
        echo "listener $2 127.0.0.1"
        echo "allow_anonymous true"
        echo "max_queued_messages 0"
        echo "max_inflight_messages $INFLIGHT"
        if [ -n "${3:-}" ]; then
            echo "connection bench"
            echo "address 127.0.0.1:$3"
            echo "topic bench/# out 1"
            echo "notifications false"
        fi
    } >"$WORK/$1/mosquitto.conf"
    mosquitto -c "$WORK/$1/mosquitto.conf" </dev/null >"$WORK/$1/log" 2>&1 &
    PIDS+=("$!")
    wait_port "$2" "$!" 10
}

# carries LOCAL-PORT REMOTE-PORT: a probe published locally arrives remotely.
carries() {
    local out="$WORK/probe" pid i
    timeout 5 stdbuf -oL mosquitto_sub -d -h 127.0.0.1 -p "$2" -t bench/probe -C 1 -W 3 >"$out" 2>&1 &
    pid=$!
    for ((i = 0; i < 100; i++)); do grep -q "received SUBACK" "$out" && break; sleep 0.05; done
    mosquitto_pub -h 127.0.0.1 -p "$1" -q 1 -t bench/probe -m p && wait "$pid"
}

# run LABEL LOCAL-PORT REMOTE-PORT: once the bridge carries messages, measure.
run() {
    local label="$1" i
    for ((i = 0; i < 10; i++)); do carries "$2" "$3" && break; done ||
        { echo "$label: the bridge does not carry messages" >&2; return 1; }
    printf "%-28s " "$label"
    "$TARGET/mqtt-bench" pairs --qos 1 --clients "$CLIENTS" --window "$WINDOW" \
        --duration "$DURATION" -p "$2" --sub-port "$3" --quiet --json
}

echo "bridged QoS 1, $CLIENTS pairs, window $WINDOW, ${DURATION}s; ours durability=$DURABILITY"
L1="$(free_port)"; R1="$(free_port)"
ours ours-remote "$R1"
ours ours-local "$L1" "$R1"
run "mqtt-broker -> mqtt-broker" "$L1" "$R1"
L2="$(free_port)"; R2="$(free_port)"
mosq mosq-remote "$R2"
mosq mosq-local "$L2" "$R2"
run "mosquitto -> mosquitto" "$L2" "$R2"
