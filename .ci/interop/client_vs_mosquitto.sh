#!/usr/bin/env bash
# Interoperability of our client (the `mqtt` tool and the Rust library, through
# its examples) with a real Mosquitto broker and the Mosquitto command-line
# clients:
#
#   - `mqtt sub` receives from `mosquitto_pub`, and `mosquitto_sub` receives
#     from `mqtt pub`, at QoS 0, 1 and 2, over MQTT 3.1.1 and 5.0;
#   - retained messages set, received with the retain flag, and cleared;
#   - MQTT 5 user properties, both ways;
#   - the will of an `mqtt sub --will-topic` killed with SIGKILL;
#   - the library: examples/subscriber and examples/temperature_publisher.
#
#   bash .ci/interop/client_vs_mosquitto.sh
#
# Starts its own `mosquitto` (Debian package `mosquitto`; the clients come
# from `mosquitto-clients`) on a free port of 127.0.0.1 and stops it at the
# end. Builds the `mqtt` binary and the examples with cargo unless MQTT_BIN
# and EXAMPLES_DIR point at built ones. Every wait is bounded; the last line
# is "N passed, M failed" and the exit status is non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/../.."
ROOT="$(pwd)"
RUN="$$-$RANDOM"        # keeps topics and client ids unique per run
CLIENT_TIMEOUT=20       # hard limit for any single client process

for tool in mosquitto mosquitto_pub mosquitto_sub timeout stdbuf cmp; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

WORK="$(mktemp -d)"
MOSQ_PID=""
cleanup() {
    if [ -n "$MOSQ_PID" ]; then
        kill "$MOSQ_PID" 2>/dev/null
        wait "$MOSQ_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the client under test ------------------------------------------------------
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${MQTT_BIN:-}" ]; then
    echo "building the mqtt tool and the examples"
    cargo build --quiet -p mqtt-client --bin mqtt --examples || { echo "build failed" >&2; exit 2; }
    MQTT_BIN="$TARGET/debug/mqtt"
    EXAMPLES_DIR="${EXAMPLES_DIR:-$TARGET/debug/examples}"
fi
EXAMPLES_DIR="${EXAMPLES_DIR:-$(dirname "$MQTT_BIN")/examples}"
[ -x "$MQTT_BIN" ] || { echo "no mqtt binary at $MQTT_BIN" >&2; exit 2; }

# --- a real mosquitto on a free port ----------------------------------------------
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 20000))
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
    fi
}
PORT="$(free_port)"
HOST=127.0.0.1
MOSQ_LOG="$WORK/mosquitto.log"
cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT $HOST
allow_anonymous true
persistence false
log_dest stdout
log_type all
EOF
# The shell opens the log, so it stays writable after mosquitto drops root.
stdbuf -oL mosquitto -c "$WORK/mosquitto.conf" >"$MOSQ_LOG" 2>&1 </dev/null &
MOSQ_PID=$!
ready=0
for _ in $(seq 100); do
    kill -0 "$MOSQ_PID" 2>/dev/null || break
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    echo "mosquitto did not start on port $PORT:" >&2
    cat "$MOSQ_LOG" >&2
    exit 2
fi
echo "$(mosquitto -h 2>&1 | head -1) on $HOST:$PORT; client: $MQTT_BIN"

# --- helpers (used inside each test's subshell) -----------------------------------
T() { printf 'interop/%s/%s' "$RUN" "$1"; }

fail_now() { echo "$*" >&2; exit 1; }

mqtt() { timeout "$CLIENT_TIMEOUT" "$MQTT_BIN" "$1" -h "$HOST" -p "$PORT" "${@:2}"; }
mpub() { timeout "$CLIENT_TIMEOUT" mosquitto_pub -h "$HOST" -p "$PORT" "$@"; }
msub() { timeout "$CLIENT_TIMEOUT" mosquitto_sub -h "$HOST" -p "$PORT" "$@"; }

# wait_for FILE PATTERN [PID]: poll (at most 10 s) until FILE contains
# PATTERN; give up early once process PID has exited.
wait_for() {
    local file="$1" pattern="$2" pid="${3:-}" i
    for ((i = 0; i < 200; i++)); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            grep -q -- "$pattern" "$file" 2>/dev/null && return 0
            fail_now "process exited before '$pattern': $(tail -c 400 "$file" 2>/dev/null)"
        fi
        sleep 0.05
    done
    fail_now "timed out waiting for '$pattern' in $(basename "$file"): $(tail -c 400 "$file" 2>/dev/null)"
}

# subscribed ID: wait until mosquitto has answered the SUBSCRIBE of client ID.
subscribed() { wait_for "$MOSQ_LOG" "Sending SUBACK to $1\$"; }

# start_mqtt_sub OUT ID ARGS...: `mqtt sub` in the background, returned once
# mosquitto has acknowledged its subscription. Its pid is left in SUB_PID.
start_mqtt_sub() {
    local out="$1" id="$2"
    shift 2
    timeout "$CLIENT_TIMEOUT" "$MQTT_BIN" sub -h "$HOST" -p "$PORT" -i "$id" "$@" >"$out" 2>"$out.err" &
    SUB_PID=$!
    subscribed "$id"
}

# start_mosquitto_sub OUT ID ARGS...: the same with mosquitto_sub.
start_mosquitto_sub() {
    local out="$1" id="$2"
    shift 2
    timeout "$CLIENT_TIMEOUT" stdbuf -oL mosquitto_sub -h "$HOST" -p "$PORT" -i "$id" "$@" >"$out" 2>"$out.err" &
    SUB_PID=$!
    subscribed "$id"
}

# finish PID OUT: wait for a background subscriber; fail if it did.
finish() {
    local rc=0
    wait "$1" || rc=$?
    [ "$rc" -eq 0 ] || fail_now "subscriber exited with status $rc (27: no message in time): $(cat "$2.err" 2>/dev/null)"
}

expect_eq() {
    [ "$2" == "$3" ] || fail_now "$1: expected [$2], got [$3]"
}

# --- tests ------------------------------------------------------------------------
# Each runs in a subshell; `exit 1` (fail_now) fails it.

# mosquitto_pub -> mqtt sub, QOS VERSION
t_mqtt_sub_receives() {
    local qos="$1" v="$2" topic id
    topic="$(T "to-mqtt/$qos/$v")"
    id="mqtt-sub-$RUN-$qos-$v"
    start_mqtt_sub "$WORK/out" "$id" -V "$v" -q "$qos" -t "$topic" -C 1 -F '%q %p'
    mpub -V "$([ "$v" = 5 ] && echo 5 || echo 311)" -q "$qos" -t "$topic" -m "from mosquitto $qos" ||
        fail_now "mosquitto_pub failed"
    finish "$SUB_PID" "$WORK/out"
    expect_eq "mqtt sub output" "$qos from mosquitto $qos" "$(cat "$WORK/out")"
}

# mqtt pub -> mosquitto_sub, QOS VERSION
t_mosquitto_sub_receives() {
    local qos="$1" v="$2" topic id
    topic="$(T "from-mqtt/$qos/$v")"
    id="mosq-sub-$RUN-$qos-$v"
    start_mosquitto_sub "$WORK/out" "$id" -V "$([ "$v" = 5 ] && echo 5 || echo 311)" \
        -q "$qos" -t "$topic" -C 1 -F '%q %p'
    mqtt pub -V "$v" -q "$qos" -t "$topic" -m "from mqtt $qos" || fail_now "mqtt pub failed"
    finish "$SUB_PID" "$WORK/out"
    expect_eq "mosquitto_sub output" "$qos from mqtt $qos" "$(cat "$WORK/out")"
}

t_retained_both_ways() {
    local topic
    topic="$(T retained)"
    # Set by mqtt pub, received as retained by mosquitto_sub.
    mqtt pub -q 1 -r -t "$topic" -m "kept by mqtt" || fail_now "mqtt pub -r failed"
    expect_eq "retained for mosquitto_sub" "1 kept by mqtt" \
        "$(msub -t "$topic" -C 1 -W 10 -F '%r %p')"
    # Replaced by mosquitto_pub, received as retained by mqtt sub.
    mpub -q 1 -r -t "$topic" -m "kept by mosquitto" || fail_now "mosquitto_pub -r failed"
    expect_eq "retained for mqtt sub" "1 kept by mosquitto" \
        "$(mqtt sub -t "$topic" -C 1 -W 10 -F '%r %p')"
    # Cleared by mqtt pub -n -r: nothing for a new subscriber (bounded: -W 1).
    mqtt pub -q 1 -n -r -t "$topic" || fail_now "mqtt pub -n -r failed"
    local out rc=0
    out="$(msub -t "$topic" -C 1 -W 1 -F '%r %p')" || rc=$?
    expect_eq "after clearing, mosquitto_sub exit status (27 = nothing received)" 27 "$rc"
    expect_eq "after clearing, output" "" "$out"
}

t_file_payload() {
    local topic id
    topic="$(T file)"
    id="mosq-sub-$RUN-file"
    head -c 100000 /dev/urandom >"$WORK/payload.bin"
    start_mosquitto_sub "$WORK/out" "$id" -q 1 -t "$topic" -C 1 -N
    mqtt pub -q 1 -t "$topic" -f "$WORK/payload.bin" || fail_now "mqtt pub -f failed"
    finish "$SUB_PID" "$WORK/out"
    cmp -s "$WORK/payload.bin" "$WORK/out" || fail_now "payload differs ($(wc -c <"$WORK/out") bytes received)"
}

t_user_properties_both_ways() {
    local topic id
    topic="$(T props)"
    id="mosq-sub-$RUN-props"
    start_mosquitto_sub "$WORK/out" "$id" -V 5 -t "$topic" -C 1 -F '%P %p'
    mqtt pub -V 5 -t "$topic" -m x -D publish user-property k v || fail_now "mqtt pub failed"
    finish "$SUB_PID" "$WORK/out"
    expect_eq "user property seen by mosquitto_sub" "k:v x" "$(cat "$WORK/out")"

    id="mqtt-sub-$RUN-props"
    start_mqtt_sub "$WORK/out2" "$id" -V 5 -t "$topic" -C 1 -F '%j'
    mpub -V 5 -t "$topic" -m y -D publish user-property a b || fail_now "mosquitto_pub failed"
    finish "$SUB_PID" "$WORK/out2"
    # mosquitto_sub 2.0's own layout (an object of name: value; checked
    # byte for byte against mosquitto_sub in cli_side_by_side.sh).
    grep -qF '"user-properties":{"a":"b"}' "$WORK/out2" ||
        fail_now "user property not in mqtt sub's JSON: $(cat "$WORK/out2")"
}

t_will_after_sigkill() {
    local will quiet id watcher pid
    will="$(T will)"
    quiet="$(T quiet)"
    id="mqtt-will-$RUN"
    watcher="mosq-will-$RUN"
    start_mosquitto_sub "$WORK/will" "$watcher" -q 1 -t "$will" -C 1 -F '%t %p'
    local watcher_pid=$SUB_PID
    # Not under `timeout`: SIGKILL must reach the client itself.
    "$MQTT_BIN" sub -h "$HOST" -p "$PORT" -i "$id" -t "$quiet" \
        --will-topic "$will" --will-payload "gone" --will-qos 1 >/dev/null 2>&1 &
    pid=$!
    subscribed "$id"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    finish "$watcher_pid" "$WORK/will"
    expect_eq "will" "$will gone" "$(cat "$WORK/will")"
}

t_no_will_after_clean_exit() {
    local will id watcher
    will="$(T polite-will)"
    id="mqtt-polite-$RUN"
    watcher="mosq-polite-$RUN"
    start_mosquitto_sub "$WORK/will" "$watcher" -q 1 -t "$will" -t "$(T polite-end)" -C 1 -F '%t %p'
    mqtt pub -t "$(T anything)" -i "$id" --will-topic "$will" --will-payload "gone" -m x ||
        fail_now "mqtt pub failed"
    wait_for "$MOSQ_LOG" "Received DISCONNECT from $id\$"
    # A will would have been queued before this message.
    mpub -q 1 -t "$(T polite-end)" -m end
    finish "$SUB_PID" "$WORK/will"
    expect_eq "first message after a clean exit" "$(T polite-end) end" "$(cat "$WORK/will")"
}

t_library_subscriber_example() {
    local bin="$EXAMPLES_DIR/subscriber" pid
    [ -x "$bin" ] || fail_now "no example binary at $bin"
    timeout "$CLIENT_TIMEOUT" "$bin" "$HOST" "$PORT" 2 >"$WORK/ex" 2>"$WORK/ex.err" &
    pid=$!
    wait_for "$WORK/ex.err" "subscribed to" "$pid"
    mpub -q 1 -t home/kitchen/temperature -m 19.5 || fail_now "mosquitto_pub failed"
    mpub -q 0 -t home/garage/temperature -m 7.25 || fail_now "mosquitto_pub failed"
    finish "$pid" "$WORK/ex"
    expect_eq "example subscriber output" "kitchen: 19.5
garage: 7.25" "$(cat "$WORK/ex")"
}

t_library_publisher_example() {
    local bin="$EXAMPLES_DIR/temperature_publisher" id
    [ -x "$bin" ] || fail_now "no example binary at $bin"
    id="mosq-sub-$RUN-example"
    start_mosquitto_sub "$WORK/out" "$id" -q 1 -t home/livingroom/temperature -C 2 -F '%q %p'
    timeout "$CLIENT_TIMEOUT" "$bin" "$HOST" "$PORT" 2 >"$WORK/ex" 2>&1 ||
        fail_now "temperature_publisher failed: $(cat "$WORK/ex")"
    finish "$SUB_PID" "$WORK/out"
    expect_eq "readings" "1 20.0
1 20.1" "$(cat "$WORK/out")"
}

# --- runner -----------------------------------------------------------------------
passed=0
failed=0
run_test() {
    local name="$1"
    shift
    local log="$WORK/test.log" rc=0
    (
        # End whatever this test left running.
        trap 'kill $(jobs -p) 2>/dev/null' EXIT
        "$@"
    ) >"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS $name"
    else
        failed=$((failed + 1))
        echo "FAIL $name"
        sed 's/^/    /' "$log"
    fi
}

for v in 311 5; do
    for q in 0 1 2; do
        run_test "mosquitto_pub -> mqtt sub, MQTT $v, QoS $q" t_mqtt_sub_receives "$q" "$v"
        run_test "mqtt pub -> mosquitto_sub, MQTT $v, QoS $q" t_mosquitto_sub_receives "$q" "$v"
    done
done
run_test "retained: set, received with the flag, cleared (both ways)" t_retained_both_ways
run_test "mqtt pub -f: binary payload byte-identical at mosquitto_sub" t_file_payload
run_test "MQTT 5 user properties, both ways" t_user_properties_both_ways
run_test "will of mqtt sub killed with SIGKILL" t_will_after_sigkill
run_test "no will after mqtt pub exits cleanly" t_no_will_after_clean_exit
run_test "library: examples/subscriber" t_library_subscriber_example
run_test "library: examples/temperature_publisher" t_library_publisher_example

if ! kill -0 "$MOSQ_PID" 2>/dev/null; then
    echo "mosquitto died during the tests"
    failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
