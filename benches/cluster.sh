#!/usr/bin/env bash
# Load across the nodes of a cluster (issue 17): publishers on one node,
# subscribers on another, against a single broker and against nats-server's
# own MQTT listener in the same NATS cluster, in the same run.
#
#   benches/cluster.sh                 # 10 s per run
#   DURATION=1 benches/cluster.sh      # smoke run: checks that every mode works
#
# Starts three clustered nats-servers with JetStream (each with an MQTT
# listener), two of our brokers as cluster nodes A and B (durability "none":
# the cluster's JetStream keeps QoS 1/2 messages), and one single broker
# (default configuration, durability "always"), all on free loopback ports.
# Then for QoS 0 and QoS 1, `mqtt-bench pairs` (4 pairs, window 64, 64-byte
# payloads): single broker; our cluster A -> B; nats-server MQTT A -> B. Then
# the same at a fixed 2,000 msg/s per publisher for latency; QoS 1 with
# persistent sessions (single durable broker against the cluster); then
# `mqtt-bench resume`: a persistent session with MESSAGES queued QoS 1
# messages coming back (single broker; cluster on another node and on the
# same node). Prints Markdown tables.
#
# Environment: DURATION (default 10), PAIRS (default 4), RATE (default 2000),
# MESSAGES (default 10000),
# SKIP_BUILD=1 to use existing release binaries, KEEP=1 to keep the logs.
# Binaries come from ${CARGO_TARGET_DIR:-target}/release; nats-server from
# PATH (Debian: apt-get install nats-server).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
. "$ROOT/.ci/lib.sh"
DURATION=${DURATION:-10}
PAIRS=${PAIRS:-4}
RATE=${RATE:-2000}
MESSAGES=${MESSAGES:-10000}
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
PATH="$PATH:/usr/sbin"
command -v nats-server >/dev/null || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 2; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p mqtt-broker -p mqtt-benches -p mqtt-client --bins >&2
fi

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local i
    # Brokers first (started last), then the nats-servers.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
    if [ "${KEEP:-0}" = 1 ]; then echo "logs in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- NATS: three servers, each with JetStream and an MQTT listener ---------------
declare -a NP RP MP
for i in 0 1 2; do NP[$i]=$(free_port); RP[$i]=$(free_port); MP[$i]=$(free_port); done
for i in 0 1 2; do
    routes=""
    for j in 0 1 2; do [ "$j" = "$i" ] || routes="$routes, \"nats://127.0.0.1:${RP[$j]}\""; done
    cat >"$WORK/nats$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${NP[$i]}
jetstream { store_dir: "$WORK/nats$i" }
cluster { name: bench, listen: 127.0.0.1:${RP[$i]}, routes: [${routes#, }] }
mqtt { listen: 127.0.0.1:${MP[$i]} }
EOF
    nats-server -c "$WORK/nats$i.conf" >"$WORK/nats$i.log" 2>&1 &
    PIDS+=("$!")
done
for i in 0 1 2; do wait_port "${NP[$i]}" "" 20 && wait_port "${MP[$i]}" "" 30 ||
    { echo "nats-server $i did not start" >&2; cat "$WORK/nats$i.log" >&2; exit 1; }; done

# --- our brokers ------------------------------------------------------------------
SINGLE=$(free_port); A=$(free_port); B=$(free_port)
printf 'max_queued_messages = 1000000\ndata_dir = "%s/single"\n[[listeners]]\nbind = "127.0.0.1:%s"\nallow_anonymous = true\n' \
    "$WORK" "$SINGLE" >"$WORK/single.toml"
for node in a b; do
    port=$A; first=0
    [ "$node" = b ] && { port=$B; first=1; }
    cat >"$WORK/$node.toml" <<EOF
durability = "none"
max_queued_messages = 1000000
[[listeners]]
bind = "127.0.0.1:$port"
allow_anonymous = true
[cluster]
node = "$node"
nats = ["nats://127.0.0.1:${NP[$first]}"]
subject_prefix = "bench$$"
message_stream_max_bytes = 268435456
EOF
done
for cfg in single a b; do
    "$BIN/mqtt-broker" -c "$WORK/$cfg.toml" >"$WORK/$cfg.log" 2>&1 &
    PIDS+=("$!")
done
for p in $SINGLE $A $B; do wait_port "$p" "" 20 || { echo "broker on $p did not start" >&2; tail "$WORK"/*.log >&2; exit 1; }; done
# The nodes are ready once $SYS says so.
for p in $A $B; do
    for _ in $(seq 60); do
        [ "$("$BIN/mqtt" sub -p "$p" -t '$SYS/broker/cluster/state' -C 1 2>/dev/null || true)" = up ] && break
        sleep 0.5
    done
done

# --- runs -----------------------------------------------------------------------------
run() { # LABEL QOS PUB_PORT SUB_PORT [extra mqtt-bench args]
    local label="$1" qos="$2" pub="$3" sub="$4"
    shift 4
    echo "run: $label QoS $qos $*" >&2
    if "$BIN/mqtt-bench" pairs -c "$PAIRS" -q "$qos" -d "$DURATION" --drain 10 -p "$pub" \
        --sub-port "$sub" --json --quiet "$@" >"$WORK/run.json" 2>"$WORK/run.err"; then
        python3 - "$label" "$qos" "$*" "$WORK/run.json" <<'EOF'
import json, sys
label, qos, extra, path = sys.argv[1:5]
r = json.load(open(path))
mode = "open loop " + extra.split()[extra.split().index("--rate") + 1] + "/s" if "--rate" in extra else "closed loop"
if "--persistent" in extra:
    mode += ", persistent sessions"
print(f"| {label} | {qos} | {mode} | {r['delivered_per_s']:,.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['lost']} | {r['duplicates']} |")
EOF
    else
        echo "| $label | $qos | $* | failed: $(head -c 200 "$WORK/run.err") | | | |"
    fi
}

echo "| broker | QoS | load | delivered msg/s | p50 / p99 ms | lost | duplicates |"
echo "|---|---|---|---|---|---|---|"
for qos in 0 1; do
    run "single broker" "$qos" "$SINGLE" "$SINGLE"
    run "our cluster, node A -> node B" "$qos" "$A" "$B"
    run "nats-server MQTT, server 0 -> server 1" "$qos" "${MP[0]}" "${MP[1]}"
done
for qos in 0 1; do
    run "single broker" "$qos" "$SINGLE" "$SINGLE" --rate "$RATE"
    run "our cluster, node A -> node B" "$qos" "$A" "$B" --rate "$RATE"
    run "nats-server MQTT, server 0 -> server 1" "$qos" "${MP[0]}" "${MP[1]}" --rate "$RATE"
done
# Persistent sessions (Clean Session 0): the single broker stores every
# subscriber's queue in SQLite (durability "always"); the cluster keeps it
# in JetStream (issue 18).
run "single durable broker, persistent sessions" 1 "$SINGLE" "$SINGLE" --persistent
run "our cluster A -> B, persistent sessions" 1 "$A" "$B" --persistent

# Resuming a persistent session with a backlog of $MESSAGES QoS 1 messages
# (issue 18): on the same broker, and in the cluster on another node than
# the one it subscribed on.
echo
echo "| resume of a persistent session | queued | CONNACK ms | whole backlog ms | lost | duplicates |"
echo "|---|---|---|---|---|---|"
resume() { # LABEL PUB SUB RESUME
    if "$BIN/mqtt-bench" resume -p "$2" --sub-port "$3" --resume-port "$4" --messages "$MESSAGES" \
        --json --quiet >"$WORK/resume.json" 2>"$WORK/resume.err"; then
        python3 - "$1" "$WORK/resume.json" <<'EOF2'
import json, sys
r = json.load(open(sys.argv[2]))
print(f"| {sys.argv[1]} | {r['queued']:,} | {r['connack_ms']:.0f} | {r['all_received_ms']:.0f} | {r['lost']} | {r['duplicates']} |")
EOF2
    else
        echo "| $1 | failed: $(head -c 200 "$WORK/resume.err") | | | | |"
    fi
}
resume "single durable broker" "$SINGLE" "$SINGLE" "$SINGLE"
resume "our cluster: subscribed on A, resumed on B" "$A" "$A" "$B"
resume "our cluster: subscribed and resumed on A" "$A" "$A" "$A"
