#!/usr/bin/env bash
# A large message, as the course sends an image or a file (issue 14): with
# the broker's default configuration, a 200 MiB file published with
# `mqtt pub -f` arrives byte-identical at `mqtt sub -C 1 -N`, and the same
# with paho-mqtt at both ends. While relaying it, the broker holds about one
# copy: its peak RSS (VmHWM) stays under 1.5x the payload size (the issue
# asks for 2.5x; 1.5x catches a second copy coming back). The figure is
# printed.
#
#   bash .ci/interop/large_message_test.sh
#
# Self-contained: builds the release `mqtt` tool unless MQTT_BIN is set,
# starts its own broker (MQTT_BROKER_BIN, or the release build) on a free
# port, and stops it on exit. LARGE_MIB changes the size (default 200).
# Prints one PASS or FAIL line per check and "N passed, M failed".
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"
need_pip paho.mqtt 'paho-mqtt>=2' || { echo "cannot install paho-mqtt" >&2; exit 2; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BROKER="${MQTT_BROKER_BIN:-$TARGET/release/mqtt-broker}"
[ -x "$BROKER" ] || (cd "$ROOT" && cargo build --quiet --release -p mqtt-broker) || exit 2
if [ -z "${MQTT_BIN:-}" ]; then
    # The same build as lecture_test.sh (examples bring the dev-dependencies'
    # features), so the second script to run finds it done.
    (cd "$ROOT" && cargo build --quiet --release -p mqtt-client --bin mqtt --example lecture) || exit 2
    MQTT_BIN="$TARGET/release/mqtt"
fi
BROKER="$(cd "$(dirname "$BROKER")" && pwd)/$(basename "$BROKER")"
MIB="${LARGE_MIB:-200}"
SIZE=$((MIB * 1024 * 1024))

WORK="$(mktemp -d)"
BROKER_PID=""
trap 'stop_pid "$BROKER_PID"; rm -rf "$WORK"' EXIT

passed=0
failed=0
check() { # NAME COMMAND...
    local name="$1"; shift
    if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

# wait_for FILE PATTERN SECONDS: until FILE contains PATTERN.
wait_for() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "timed out waiting for '$2' in $1" >&2
    return 1
}

# start_broker: a fresh broker with the default configuration (but a free
# port and its data directory in WORK), logging every packet.
start_broker() {
    stop_pid "$BROKER_PID"
    PORT="$(free_port)"
    rm -rf "$WORK/data" && mkdir -p "$WORK/data"
    (cd "$WORK/data" && exec "$BROKER" -v -p "$PORT" </dev/null >"$WORK/broker.log" 2>&1) &
    BROKER_PID=$!
    wait_port "$PORT" "$BROKER_PID" 10 || { echo "broker did not start" >&2; cat "$WORK/broker.log" >&2; exit 2; }
}

# hwm_ok WHAT: the broker's peak RSS, against the payload size.
hwm_ok() {
    local kib
    kib="$(awk '/^VmHWM/ {print $2}' "/proc/$BROKER_PID/status")"
    awk -v kib="$kib" -v size="$SIZE" -v what="$1" 'BEGIN {
        r = kib * 1024 / size
        printf "broker peak RSS relaying %d MiB (%s): %.0f MiB = %.2fx the payload\n", size / 1048576, what, kib / 1024, r
        exit !(r < 1.5)
    }'
}

echo "generating $MIB MiB of random data"
head -c "$SIZE" /dev/urandom >"$WORK/big.bin"

# --- mqtt pub -f -> mqtt sub -C 1 -N ---------------------------------------------
start_broker
timeout 300 "$MQTT_BIN" sub -h 127.0.0.1 -p "$PORT" -i big-sub -t big/file -q 1 -C 1 -N \
    >"$WORK/out.bin" 2>"$WORK/sub.err" &
SUB=$!
wait_for "$WORK/broker.log" "big-sub <- SUBACK" 10
start=$SECONDS
check "mqtt pub -f of $MIB MiB is acknowledged" \
    timeout 300 "$MQTT_BIN" pub -h 127.0.0.1 -p "$PORT" -t big/file -q 1 -f "$WORK/big.bin"
check "mqtt sub -C 1 -N exits 0" wait "$SUB"
echo "relayed in $((SECONDS - start)) s"
check "mqtt sub output is byte-identical" cmp "$WORK/big.bin" "$WORK/out.bin"
check "broker peak RSS under 1.5x the payload" hwm_ok "mqtt pub -f -> mqtt sub"
check "nothing dropped" bash -c "! grep -q 'message dropped' '$WORK/broker.log'"
rm -f "$WORK/out.bin"

# --- paho-mqtt at both ends --------------------------------------------------------
start_broker
check "paho publishes $MIB MiB and paho receives it" \
    timeout 600 python3 "$ROOT/.ci/interop/large_message_paho.py" 127.0.0.1 "$PORT" "$WORK/big.bin" "$WORK/out.bin"
check "paho subscriber's payload is byte-identical" cmp "$WORK/big.bin" "$WORK/out.bin"
check "broker peak RSS under 1.5x the payload" hwm_ok "paho -> paho"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
