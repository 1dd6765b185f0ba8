#!/usr/bin/env bash
# Smoke run of the mqtt-bench scenarios of issue 20 against our release
# broker, small and short, so that they keep working between measurements
# (the numbers come from benches/compare.sh on a quiet machine):
# a connection storm, idle connections with the broker's memory per
# connection (held to a generous bound: a connection that starts keeping a
# buffer while idle fails it), QoS 0 fan-out 1 -> 16 closed loop and
# 1 -> 1000 at a fixed rate, each without loss.
#
#   bash .ci/interop/bench_smoke.sh
#
# Self-contained: builds mqtt-bench if missing, starts the broker on a free
# loopback port and stops it on exit. One PASS or FAIL line per check; the
# last line is "N passed, M failed" and the exit status is non-zero on any
# failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"

need_apt jq || { echo "cannot install jq" >&2; exit 2; }
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
BROKER="${MQTT_BROKER_BIN:-$TARGET/mqtt-broker}"
BENCH="$TARGET/mqtt-bench"
if [ ! -x "$BROKER" ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi
if [ ! -x "$BENCH" ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-benches --bin mqtt-bench) || exit 2
fi

# Thousands of connections: the broker and the generator each need the
# descriptors (mqtt-bench raises its own limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLIENTS=2000
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CLIENTS + 100)) ]; then
    CLIENTS=$(($(ulimit -n) - 100))
fi

WORK="$(mktemp -d)"
BROKER_PID=""
trap 'stop_pid "$BROKER_PID"; rm -rf "$WORK"' EXIT

passed=0
failed=0
check() { # NAME COMMAND...
    local name="$1"; shift
    if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

start_broker() {
    stop_pid "$BROKER_PID"
    PORT="$(free_port)"
    cat >"$WORK/broker.toml" <<TOML
data_dir = "$WORK/data"
sys_interval_secs = 0
max_queued_messages = 1000000
max_queued_bytes = 1073741824
[[listeners]]
bind = "127.0.0.1:$PORT"
allow_anonymous = true
TOML
    "$BROKER" -c "$WORK/broker.toml" </dev/null >>"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    if ! wait_port "$PORT" "$BROKER_PID" 20; then
        echo "the broker did not start:" >&2
        tail -5 "$WORK/broker.log" >&2
        exit 2
    fi
}

# bench NAME ARGS...: runs mqtt-bench (bounded), its JSON report in $WORK/NAME.json.
bench() {
    local name="$1"; shift
    if ! timeout 120 "$BENCH" "$@" -p "$PORT" --json --quiet >"$WORK/$name.json" 2>"$WORK/$name.err"; then
        echo "mqtt-bench $name failed: $(tail -2 "$WORK/$name.err")" >&2
        echo '{}' >"$WORK/$name.json"
    fi
}

# is NAME JQ-CONDITION: the condition holds on NAME's report.
is() {
    if jq -e "$2" "$WORK/$1.json" >/dev/null; then return 0; fi
    echo "  $1: $(jq -c . "$WORK/$1.json")" >&2
    return 1
}

start_broker
bench storm storm --clients "$CLIENTS" --connect-concurrency 256
check "storm: $CLIENTS clients connect, subscribe and disconnect" \
    is storm ".connected == $CLIENTS and .subscribed == $CLIENTS and .disconnected == $CLIENTS"
check "storm: no step failed" is storm '.connect_failed == 0 and .subscribe_failed == 0 and .disconnect_failed == 0'

start_broker
bench idle idle --clients "$CLIENTS" --duration 1 --broker-pid "$BROKER_PID"
check "idle: $CLIENTS connections held" is idle ".connected == $CLIENTS and .alive_at_end == $CLIENTS"
# About 2 KB on x86_64 Linux; 4 KB leaves room for other allocators and
# page granularity, not for a buffer kept per idle connection.
check "idle: broker memory per connection under 4 KB" is idle '.mem_per_conn_bytes > 0 and .mem_per_conn_bytes < 4096'

start_broker
bench fanout16 fan-out --clients 16 --qos 0 --duration 1 --drain 10
check "fan-out 1 -> 16: every message delivered to every subscriber" \
    is fanout16 '.delivered > 0 and .lost == 0 and .duplicates == 0 and .foreign == 0'

start_broker
bench fanout1000 fan-out --clients 1000 --qos 0 --rate 200 --duration 1 --drain 10
check "fan-out 1 -> 1000 at 200 msg/s: every message delivered to every subscriber" \
    is fanout1000 '.delivered > 0 and .lost == 0 and .duplicates == 0'

start_broker
bench fanout_q1 fan-out --clients 16 --qos 1 --duration 1 --drain 10
check "fan-out 1 -> 16 at QoS 1: every message delivered to every subscriber" \
    is fanout_q1 '.delivered > 0 and .lost == 0 and .duplicates == 0'

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
