#!/usr/bin/env bash
# Cluster part 2 (issue 18) with real processes: three clustered
# nats-servers and three release brokers on loopback, paho-mqtt clients.
#   1. a QoS 1 stream of 10,000 messages while the subscriber's node is
#      SIGKILLed: the subscriber resumes its session on another node and
#      every acknowledged message arrives;
#   2. the killed node restarts; the same with QoS 2 (killed again), and no
#      message arrives twice.
#
#   bash .ci/interop/cluster_sessions_test.sh
#
# Installs nats-server and paho-mqtt if missing, picks free ports, stops
# everything on exit. The broker binary is $MQTT_BROKER_BIN, else
# ${CARGO_TARGET_DIR:-target}/release/mqtt-broker, built if missing. Last
# line: "N passed, M failed"; non-zero exit status on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"

need_apt nats-server || { echo "cannot install nats-server" >&2; exit 2; }
need_pip paho.mqtt paho-mqtt || { echo "cannot install paho-mqtt" >&2; exit 2; }
PATH="$PATH:/usr/sbin"
NATS_SERVER="$(command -v nats-server)" || { echo "missing tool: nats-server" >&2; exit 2; }

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
    # KEEP_WORK=1 keeps the logs for a look afterwards.
    if [ -n "${KEEP_WORK:-}" ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
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

# --- three brokers ---------------------------------------------------------------
declare -A PORT PID
for n in a b c; do PORT[$n]="$(free_port)"; done
start_node() { # NAME FIRST_NATS_INDEX
    local name="$1" first="$2"
    cat >"$WORK/$name.toml" <<TOML
durability = "none"
sys_interval_secs = 1
# The stream is 10,000 messages: the subscriber's queue must hold it all
# (Mosquitto's default, 1000, would drop the excess, counted).
max_queued_messages = 100000

[[listeners]]
bind = "127.0.0.1:${PORT[$name]}"
allow_anonymous = true

[cluster]
node = "node-$name"
nats = ["nats://127.0.0.1:${CLIENT_PORTS[$first]}", "nats://127.0.0.1:${CLIENT_PORTS[$(((first + 1) % 3))]}"]
subject_prefix = "fo$$"
# A publish waits this long for JetStream before its publisher is
# disconnected unacknowledged: longer than the quorum outage below.
ack_timeout_ms = 60000
# A shared subscription's message held by a dead node goes to another
# member after this.
shared_ack_wait_ms = 3000
message_stream_max_bytes = 67108864
TOML
    "$BROKER" -c "$WORK/$name.toml" </dev/null >>"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
    PIDS+=("$!")
    wait_port "${PORT[$name]}" "$!" 20 || return 1
    # Ready once $SYS says the cluster is up (NATS and the streams).
    local state=""
    for _ in $(seq 60); do
        state="$(python3 - "${PORT[$name]}" <<'PY' 2>/dev/null
import sys, paho.mqtt.subscribe as s
m = s.simple("$SYS/broker/cluster/state", hostname="127.0.0.1", port=int(sys.argv[1]), keepalive=5)
print(m.payload.decode())
PY
)"
        [ "$state" = "up" ] && return 0
        sleep 0.5
    done
    echo "node $name not up (state: $state)" >&2
    return 1
}

if ! { start_node a 0 && start_node b 1 && start_node c 2; }; then
    fail "three release brokers start as cluster nodes"
    tail -n 20 "$WORK"/*.log
    echo "$passed passed, $failed failed"
    exit 1
fi

# STEPS picks parts (default all): node, nats, shared.
STEPS="${STEPS:-node nats shared}"
want() { [[ " $STEPS " == *" $1 "* ]]; }

run() { # DESCRIPTION ARGS...
    local what="$1"
    shift
    local out
    out="$(timeout 300 python3 "$ROOT/.ci/interop/cluster_sessions.py" "$@" 2>&1)"
    local status=$?
    echo "$out"
    if [ "$status" -eq 0 ]; then pass "$what"; else fail "$what"; fi
}

# 1. QoS 1: publisher on A, subscriber on B; B is killed, the subscriber
#    goes on on C.
if want node; then
run "QoS 1 stream of 10,000 across a SIGKILL of the subscriber's node: nothing acknowledged lost" \
    --pub-port "${PORT[a]}" --sub-port "${PORT[b]}" --next-port "${PORT[c]}" \
    --kill-pids "${PID[b]}" --qos 1 --count 10000 --tag q1
wait "${PID[b]}" 2>/dev/null

# 2. B comes back (a new incarnation of the same node name); QoS 2 with
#    the subscriber on B, killed again, going on on A.
if start_node b 1; then
    pass "the killed node restarts and rejoins"
    run "QoS 2 stream of 10,000 across a SIGKILL of the subscriber's node: nothing lost, nothing twice" \
        --pub-port "${PORT[c]}" --sub-port "${PORT[b]}" --next-port "${PORT[a]}" \
        --kill-pids "${PID[b]}" --qos 2 --count 10000 --tag q2
else
    fail "the killed node restarts and rejoins"
fi
fi

# 3. One nats-server of three is SIGKILLed mid-stream (subscriber on A,
#    publisher on C): nothing acknowledged is lost.

if want nats; then
run "QoS 1 stream of 5,000 across a SIGKILL of one nats-server of three: nothing acknowledged lost" \
    --pub-port "${PORT[c]}" --sub-port "${PORT[a]}" \
    --kill-pids "${NATS_PIDS[1]}" --action nats --qos 1 --count 5000 --tag n1
start_nats 1
wait_port "${CLIENT_PORTS[1]}" "${NATS_PIDS[1]}" 20 || fail "nats-server 1 restarts"

# 4. Two of three are SIGKILLed: no quorum, so the PUBACKs stop; once they
#    are back, everything acknowledged arrives.
RESTART="$WORK/restart-nats.sh"
{
    echo "cd '$WORK'"
    for i in 0 2; do
        routes=""
        for j in 0 1 2; do
            [ "$j" = "$i" ] || routes="$routes,nats://127.0.0.1:${ROUTE_PORTS[$j]}"
        done
        echo "'$NATS_SERVER' -js -sd '$WORK/nats$i' -n n$i -a 127.0.0.1 -p ${CLIENT_PORTS[$i]} --cluster_name mqtt-ci --cluster nats://127.0.0.1:${ROUTE_PORTS[$i]} --routes ${routes#,} >>'$WORK/nats$i.log' 2>&1 &"
        echo "echo \$! >'$WORK/nats$i.pid'"
    done
} >"$RESTART"
run "QoS 1 without a NATS quorum (2 of 3 servers SIGKILLed): PUBACKs stop; after the restart nothing acknowledged is lost" \
    --pub-port "${PORT[c]}" --sub-port "${PORT[a]}" \
    --kill-pids "${NATS_PIDS[0]},${NATS_PIDS[2]}" --action quorum --restart-cmd "bash '$RESTART'" \
    --qos 1 --count 5000 --tag n2
for i in 0 2; do
    [ -f "$WORK/nats$i.pid" ] && PIDS+=("$(cat "$WORK/nats$i.pid")")
done
fi

# 5. A shared subscription with members on A and B: split with no message
#    at both; B (holding its messages unacknowledged) is SIGKILLed and they
#    reach the member on A within shared_ack_wait_ms and a margin.
if want shared; then
if ! kill -0 "${PID[b]}" 2>/dev/null; then
    wait "${PID[b]}" 2>/dev/null
    start_node b 1 || fail "node B restarts again"
fi
out="$(timeout 180 python3 "$ROOT/.ci/interop/cluster_shared.py" --a-port "${PORT[a]}" \
    --b-port "${PORT[b]}" --pub-port "${PORT[c]}" --kill-pid "${PID[b]}" --bound 8 --tag sh 2>&1)"
status=$?
echo "$out"
if [ "$status" -eq 0 ]; then
    pass "shared subscription over two nodes: split, none twice; a killed member's messages reach the other"
else
    fail "shared subscription over two nodes: split, none twice; a killed member's messages reach the other"
fi
fi

# What the resuming nodes did (messages replayed from the stream: those the
# killed node had read but not yet written to the session's queue).
grep -h "session resumed from the cluster" "$WORK"/[abc].log | sed 's/^/  /'
if [ "$failed" -ne 0 ]; then
    for n in a b c; do echo "--- node $n"; tail -n 15 "$WORK/$n.log"; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
