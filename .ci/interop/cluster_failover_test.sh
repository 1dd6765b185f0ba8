#!/usr/bin/env bash
# A node dies (issue 18, cluster part 2) on loopback: three clustered
# nats-servers with JetStream and three release brokers (node-a, node-b,
# node-c) from TOML files with short heartbeat_ms / node_timeout_ms, then
#   1. cluster_failover_paho.py: node A cut off (SIGSTOP) past the timeout
#      and back, then SIGKILLed: wills of its clients on B and C within the
#      documented bound, once cluster-wide; a delayed will after its delay;
#      a delayed will cancelled by a reconnection on C; no will after a
#      normal DISCONNECT; a persistent session resumed on C with Session
#      Present and its subscriptions;
#   2. /metrics on B and C: node A dead, the wills counted once;
#   3. node A restarted under the same name: alive again on B and C.
#
#   bash .ci/interop/cluster_failover_test.sh
#
# Self-contained: installs nats-server, python3-paho (pip paho-mqtt) if
# missing, picks free ports, stops everything on exit. The broker binary is
# $MQTT_BROKER_BIN, else ${CARGO_TARGET_DIR:-target}/release/mqtt-broker,
# built if missing. The last line is "N passed, M failed"; the exit status
# is non-zero if anything failed. About 30 s.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"

need_apt nats-server python3-pip || { echo "cannot install nats-server" >&2; exit 2; }
need_pip paho.mqtt "paho-mqtt>=2,<3" || { echo "cannot install paho-mqtt" >&2; exit 2; }
PATH="$PATH:/usr/sbin"
NATS_SERVER="$(command -v nats-server)" || { echo "missing tool: nats-server" >&2; exit 2; }
for tool in timeout python3; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

BROKER="${MQTT_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
    echo "building $BROKER"
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi

HEARTBEAT_MS=250
TIMEOUT_MS=1500

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -CONT "$p" 2>/dev/null
        stop_pid "$p"
    done
    [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# --- three clustered nats-servers ----------------------------------------------
if ! start_nats_cluster mqtt-fo; then
    fail "nats-servers start"
    finish
fi
echo "nats-server cluster on ports ${CLIENT_PORTS[*]} ($("$NATS_SERVER" --version))"

# --- three release brokers ----------------------------------------------------------
declare -A PORT METRICS PID
start_node() { # NAME FIRST_NATS_INDEX
    local name="$1" first="$2"
    cat >"$WORK/$name.toml" <<EOF
durability = "none"
sys_interval_secs = 1

[metrics]
bind = "127.0.0.1:${METRICS[$name]}"

[[listeners]]
bind = "127.0.0.1:${PORT[$name]}"
allow_anonymous = true

[cluster]
node = "$name"
nats = ["nats://127.0.0.1:${CLIENT_PORTS[$first]}", "nats://127.0.0.1:${CLIENT_PORTS[$(((first + 1) % 3))]}"]
subject_prefix = "fo$$"
message_stream_max_bytes = 8388608
heartbeat_ms = $HEARTBEAT_MS
node_timeout_ms = $TIMEOUT_MS
sweep_interval_ms = 1000
EOF
    "$BROKER" -c "$WORK/$name.toml" </dev/null >>"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("$!")
    wait_port "${PORT[$name]}" "$!" 20
}

scrape() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://127.0.0.1:$1/metrics" 2>/dev/null; }
metric() { awk -v s="$2" '$1 == s { print $2 }' <<<"$1"; }
num() { local v; v="$(metric "$1" "$2")"; echo "${v:-0}"; }
# wait_metric NODE NAME VALUE SECONDS: until NODE's /metrics shows NAME = VALUE.
wait_metric() {
    local i body
    for ((i = 0; i < $4 * 10; i++)); do
        body="$(scrape "${METRICS[$1]}")"
        [ "$(metric "$body" "$2")" = "$3" ] && return 0
        sleep 0.1
    done
    echo "  $1: $2 = $(metric "$body" "$2"), wanted $3" >&2
    return 1
}

i=0
for name in node-a node-b node-c; do
    PORT[$name]="$(free_port)"
    METRICS[$name]="$(free_port)"
    if ! start_node "$name" "$i"; then
        fail "$name starts"
        tail -n 30 "$WORK/$name.log"
        finish
    fi
    i=$((i + 1))
done
# Every node up, and each sees the three alive.
for name in node-a node-b node-c; do
    if wait_metric "$name" mqtt_cluster_up 1 60 && wait_metric "$name" mqtt_cluster_nodes_alive 3 20; then
        pass "$name is up and sees three nodes alive"
    else
        fail "$name is up and sees three nodes alive"
        tail -n 30 "$WORK/$name.log"
        finish
    fi
done

# --- 1. SIGSTOP, SIGCONT, SIGKILL of node A with clients on it ---------------------------
started=$SECONDS
timeout 120 python3 "$ROOT/.ci/interop/cluster_failover_paho.py" \
    "${PORT[node-a]}" "${PORT[node-b]}" "${PORT[node-c]}" "${PID[node-a]}" \
    "$HEARTBEAT_MS" "$TIMEOUT_MS" </dev/null >"$WORK/paho.out" 2>&1
status=$?
grep -E "^(PASS|FAIL) |^  |^node A" "$WORK/paho.out"
p_pass=$(grep -cE "^PASS " "$WORK/paho.out")
p_fail=$(grep -cE "^FAIL " "$WORK/paho.out")
passed=$((passed + p_pass))
failed=$((failed + p_fail))
if [ "$status" -ne 0 ] && [ "$p_fail" -eq 0 ]; then
    fail "cluster_failover_paho.py (exit $status)"
    tail -n 30 "$WORK/paho.out"
fi
echo "cluster_failover_paho.py took $((SECONDS - started)) s"
wait "${PID[node-a]}" 2>/dev/null

# --- 2. what B and C count ----------------------------------------------------------
if wait_metric node-b mqtt_cluster_nodes_dead 1 10 && wait_metric node-c mqtt_cluster_nodes_dead 1 10 &&
    wait_metric node-b mqtt_cluster_nodes_alive 2 10; then
    pass "/metrics on B and C: node A dead, two nodes alive"
else
    fail "/metrics on B and C: node A dead, two nodes alive"
fi
body_b="$(scrape "${METRICS[node-b]}")"
body_c="$(scrape "${METRICS[node-c]}")"
published=$(($(num "$body_b" mqtt_cluster_wills_published_total) + $(num "$body_c" mqtt_cluster_wills_published_total)))
# fo/will/paused while A was cut off; then fo/will/paused, nodelay, v311 and
# delayed when it was killed.
if [ "$published" = 5 ]; then
    pass "the survivors published the dead node's 5 wills once between them (B $(metric "$body_b" mqtt_cluster_wills_published_total), C $(metric "$body_c" mqtt_cluster_wills_published_total))"
else
    fail "the survivors published the dead node's 5 wills once between them (published: $published)"
fi
marked=$(($(num "$body_b" mqtt_cluster_sessions_marked_disconnected_total) + $(num "$body_c" mqtt_cluster_sessions_marked_disconnected_total)))
if [ "$marked" -ge 1 ]; then
    pass "the dead node's session records are marked disconnected ($marked)"
else
    fail "the dead node's session records are marked disconnected ($marked)"
    grep '^mqtt_cluster' <<<"$body_b"
fi

# --- 3. node A comes back (a new run under the same name) -------------------------------
if start_node node-a 0 && wait_metric node-b mqtt_cluster_nodes_dead 0 20 &&
    wait_metric node-c mqtt_cluster_nodes_dead 0 20 && wait_metric node-b mqtt_cluster_nodes_alive 3 10; then
    pass "node A restarted is alive again on B and C"
else
    fail "node A restarted is alive again on B and C"
    tail -n 20 "$WORK/node-b.log"
fi

if [ "$failed" -ne 0 ]; then
    for name in node-a node-b node-c; do
        echo "--- $name (cluster lines)"
        grep -i "cluster" "$WORK/$name.log" | tail -n 40
    done
fi
finish
