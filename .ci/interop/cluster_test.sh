#!/usr/bin/env bash
# The cluster (issue 17) on loopback: three clustered nats-servers with
# JetStream, then
#   1. the cluster tests (mqtt-broker/tests/cluster.rs: three brokers in the
#      test process, raw MQTT clients on different nodes, and one test that
#      stops and restarts a nats-server of its own);
#   2. two release brokers configured from TOML files as nodes of the same
#      cluster, with mosquitto_pub on one node and mosquitto_sub on the other.
#
#   bash .ci/interop/cluster_test.sh
#
# Self-contained: installs nats-server (Debian's 2.9.10) and the Mosquitto
# clients if missing, picks free ports, stops everything on exit. The broker
# binary is $MQTT_BROKER_BIN, else ${CARGO_TARGET_DIR:-target}/release/mqtt-broker,
# built if missing. Each check prints PASS or FAIL; the last line is
# "N passed, M failed" and the exit status is non-zero if anything failed.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"

need_apt nats-server mosquitto-clients || { echo "cannot install nats-server" >&2; exit 2; }
PATH="$PATH:/usr/sbin"
NATS_SERVER="$(command -v nats-server)" || { echo "missing tool: nats-server" >&2; exit 2; }
for tool in mosquitto_pub mosquitto_sub timeout python3; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

BROKER="${MQTT_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
    echo "building $BROKER"
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

# --- three clustered nats-servers ----------------------------------------------
if ! start_nats_cluster mqtt-ci; then
    echo "0 passed, 1 failed"
    exit 1
fi
NATS_URLS="nats://127.0.0.1:${CLIENT_PORTS[0]},nats://127.0.0.1:${CLIENT_PORTS[1]},nats://127.0.0.1:${CLIENT_PORTS[2]}"
echo "nats-server cluster: $NATS_URLS ($("$NATS_SERVER" --version))"

# --- 1. the cluster tests ---------------------------------------------------------
TEST_LOG="$WORK/cargo-test.log"
(cd "$ROOT" && MQTT_CLUSTER_NATS="$NATS_URLS" MQTT_CLUSTER_NATS_SERVER="$NATS_SERVER" \
    timeout 900 cargo test -p mqtt-broker --features cluster-tests --test cluster </dev/null) \
    >"$TEST_LOG" 2>&1
status=$?
grep -E "^test .* \.\.\. " "$TEST_LOG" | while read -r _ name _ result; do
    case "$result" in
        ok) echo "PASS cargo test cluster::$name" ;;
        *) echo "FAIL cargo test cluster::$name" ;;
    esac
done
t_pass=$(grep -cE "^test .* \.\.\. ok$" "$TEST_LOG")
t_fail=$(grep -cE "^test .* \.\.\. FAILED$" "$TEST_LOG")
passed=$((passed + t_pass))
failed=$((failed + t_fail))
if [ "$status" -ne 0 ] && [ "$t_fail" -eq 0 ]; then
    # It did not get as far as running tests (build error, no tests).
    fail "cargo test -p mqtt-broker --features cluster-tests --test cluster (exit $status)"
fi
if [ "$status" -ne 0 ] || [ "$t_pass" -eq 0 ]; then
    tail -n 80 "$TEST_LOG"
fi

# --- 2. release brokers from config files ------------------------------------------
start_node() { # NAME MQTT_PORT FIRST_NATS_INDEX METRICS_PORT
    local name="$1" port="$2" first="$3" metrics="$4"
    cat >"$WORK/$name.toml" <<EOF
durability = "none"
sys_interval_secs = 1

[metrics]
bind = "127.0.0.1:$metrics"

[[listeners]]
bind = "127.0.0.1:$port"
allow_anonymous = true

[cluster]
node = "$name"
nats = ["nats://127.0.0.1:${CLIENT_PORTS[$first]}", "nats://127.0.0.1:${CLIENT_PORTS[$(((first + 1) % 3))]}"]
subject_prefix = "ci$$"
message_stream_max_bytes = 8388608
EOF
    "$BROKER" -c "$WORK/$name.toml" </dev/null >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    wait_port "$port" "$!" 20
}

PORT_A="$(free_port)"
PORT_B="$(free_port)"
METRICS_A="$(free_port)"
METRICS_B="$(free_port)"
if start_node node-a "$PORT_A" 0 "$METRICS_A" && start_node node-b "$PORT_B" 1 "$METRICS_B"; then
    # The node reports "up" in $SYS (retained, every second) once NATS and
    # its streams are ready.
    for port in "$PORT_A" "$PORT_B"; do
        state=""
        for _ in $(seq 30); do
            state="$(timeout 5 mosquitto_sub -h 127.0.0.1 -p "$port" \
                -t '$SYS/broker/cluster/state' -C 1 -W 2 2>/dev/null)"
            [ "$state" = "up" ] && break
            sleep 0.5
        done
        if [ "$state" = "up" ]; then
            pass "release node on port $port reports \$SYS/broker/cluster/state up"
        else
            fail "release node on port $port reports \$SYS/broker/cluster/state up (got: $state)"
        fi
    done
    OUT="$WORK/sub.out"
    timeout 30 mosquitto_sub -d -h 127.0.0.1 -p "$PORT_B" -t 'ci/+/x.y' -q 1 -C 2 -v -W 25 \
        >"$OUT" 2>/dev/null &
    SUB=$!
    PIDS+=("$SUB")
    # Publish once the subscription is acknowledged.
    for _ in $(seq 200); do
        grep -q "received SUBACK" "$OUT" 2>/dev/null && break
        sleep 0.05
    done
    timeout 10 mosquitto_pub -h 127.0.0.1 -p "$PORT_A" -t 'ci/a b/x.y' -q 1 -m 'from A, QoS 1'
    timeout 10 mosquitto_pub -h 127.0.0.1 -p "$PORT_A" -t 'ci/*/x.y' -q 2 -m 'from A, QoS 2'
    wait "$SUB" 2>/dev/null
    got="$(grep '^ci/' "$OUT")"
    if [ "$got" = "$(printf 'ci/a b/x.y from A, QoS 1\nci/*/x.y from A, QoS 2')" ]; then
        pass "mosquitto_pub on node A (QoS 1, 2) reaches mosquitto_sub on node B"
    else
        fail "mosquitto_pub on node A (QoS 1, 2) reaches mosquitto_sub on node B (got: $got)"
    fi
    # The cluster's figures are in /metrics: node A is up and handed the
    # two messages to NATS, node B received them.
    scrape() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://127.0.0.1:$1/metrics" 2>&1; }
    metric() { awk -v s="$2" '$1 == s { print $2 }' <<<"$1"; }
    body_a="$(scrape "$METRICS_A")"
    body_b="$(scrape "$METRICS_B")"
    if [ "$(metric "$body_a" 'mqtt_cluster_info{node="node-a",state="up"}')" = 1 ] &&
        [ "$(metric "$body_a" mqtt_cluster_up)" = 1 ] &&
        [ "$(metric "$body_a" mqtt_cluster_messages_forwarded_total)" -ge 2 ] &&
        [ "$(metric "$body_b" mqtt_cluster_messages_received_total)" -ge 2 ]; then
        pass "/metrics shows the cluster state and the messages forwarded and received"
    else
        fail "/metrics shows the cluster state and the messages forwarded and received"
        grep '^mqtt_cluster' <<<"$body_a"$'\n'"$body_b"
    fi
    # A retained message set on A is seen by a new subscriber on B.
    timeout 10 mosquitto_pub -h 127.0.0.1 -p "$PORT_A" -t 'ci/retained' -q 1 -r -m 'kept'
    got=""
    for _ in $(seq 50); do
        got="$(timeout 5 mosquitto_sub -h 127.0.0.1 -p "$PORT_B" -t 'ci/retained' -C 1 -W 1 2>/dev/null)"
        [ "$got" = "kept" ] && break
    done
    if [ "$got" = "kept" ]; then
        pass "retained message set on node A is seen by a new subscriber on node B"
    else
        fail "retained message set on node A is seen by a new subscriber on node B (got: $got)"
    fi
else
    fail "release brokers start as cluster nodes"
    tail -n 30 "$WORK"/node-*.log
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
