#!/usr/bin/env bash
# MQTT over WebSocket (issue 15) against the release broker, with real
# clients and a real browser:
#
#   - MQTT.js (npm `mqtt`) scenario suite over ws:// and wss://: QoS 0/1/2
#     with MQTT 3.1.1 and 5.0, retained set and cleared, will, persistent
#     session, MQTT 5 properties, a 1 MB binary payload, $SYS;
#   - paho-mqtt with transport="websockets" over ws:// and wss://;
#   - bad input: a text frame (close 1003), a message above max_packet_size
#     (1009), a handshake without the mqtt subprotocol (HTTP 400), a
#     truncated frame, a slowloris upgrade request (408 after the CONNECT
#     timeout): each checked for its close and its log line, with a
#     bystander client unaffected;
#   - headless Chromium (Debian `chromium`) opens examples/web/ served by the
#     listener's http_dir; messages published with `mqtt pub` (over TCP, and
#     with -L ws://) appear on the page, read back from its DOM through the
#     DevTools protocol.
#
#   bash .ci/interop/websockets_test.sh
#
# Installs what it needs (.ci/lib.sh), uses MQTT_BROKER_BIN (or builds the
# broker) and MQTT_BIN (or builds the `mqtt` tool, debug), starts everything on
# free ports of 127.0.0.1 and stops it on exit. The last line is
# "N passed, M failed"; the exit status is non-zero on any failure.
set -uo pipefail

cd "$(dirname "$0")/../.."
ROOT="$(pwd)"
. .ci/lib.sh

WORK="$(mktemp -d)"
BROKER_PID=""
CHROME_PID=""
cleanup() {
    stop_pid "$CHROME_PID"
    stop_pid "$BROKER_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- what the tests need ---------------------------------------------------------
need_apt chromium openssl || { echo "cannot install chromium" >&2; exit 2; }
NPM_DIR="${WS_NPM_DIR:-$ROOT/target/interop-npm}"
[ -d "$NPM_DIR/node_modules/mqtt" ] || need_npm "$NPM_DIR" mqtt@5 ||
    { echo "cannot install MQTT.js" >&2; exit 2; }
need_pip paho.mqtt 'paho-mqtt>=2' || { echo "cannot install paho-mqtt" >&2; exit 2; }
CHROMIUM="$(command -v chromium || command -v chromium-browser)" ||
    { echo "no chromium binary" >&2; exit 2; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${MQTT_BROKER_BIN:-}" ]; then
    cargo build --quiet --release -p mqtt-broker || { echo "build failed" >&2; exit 2; }
    MQTT_BROKER_BIN="$TARGET/release/mqtt-broker"
fi
if [ -z "${MQTT_BIN:-}" ]; then
    # The debug build: `cargo test --workspace` has built it already in CI.
    cargo build --quiet -p mqtt-client --bin mqtt || { echo "build failed" >&2; exit 2; }
    MQTT_BIN="$TARGET/debug/mqtt"
fi

# --- a certificate for wss:// (127.0.0.1 and localhost) ---------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$WORK/server.key" -out "$WORK/server.crt" 2>/dev/null ||
    { echo "openssl failed" >&2; exit 2; }

# --- the broker: TCP, ws:// with http_dir, wss:// -------------------------------------
TCP_PORT="$(free_port)"
WS_PORT="$(free_port)"
WSS_PORT="$(free_port)"
BROKER_LOG="$WORK/broker.log"
cat >"$WORK/broker.toml" <<EOF
max_packet_size = 2097152
connect_timeout_secs = 2
sys_interval_secs = 1
durability = "none"
data_dir = "$WORK/data"

[[listeners]]
bind = "127.0.0.1:$TCP_PORT"
allow_anonymous = true

[[listeners]]
bind = "127.0.0.1:$WS_PORT"
allow_anonymous = true
protocol = "websockets"
http_dir = "$ROOT/examples/web"

[[listeners]]
bind = "127.0.0.1:$WSS_PORT"
allow_anonymous = true
protocol = "websockets"
[listeners.tls]
cert_file = "$WORK/server.crt"
key_file = "$WORK/server.key"
EOF
"$MQTT_BROKER_BIN" -c "$WORK/broker.toml" </dev/null >"$BROKER_LOG" 2>&1 &
BROKER_PID=$!
for p in "$TCP_PORT" "$WS_PORT" "$WSS_PORT"; do
    wait_port "$p" "$BROKER_PID" 10 || { echo "broker not listening on $p:" >&2; cat "$BROKER_LOG" >&2; exit 2; }
done

# --- headless Chromium with the DevTools protocol on loopback -------------------------
CDP_PORT="$(free_port)"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-dev-shm-usage --user-data-dir="$WORK/chromium" \
    --remote-debugging-address=127.0.0.1 --remote-debugging-port="$CDP_PORT" \
    about:blank </dev/null >"$WORK/chromium.log" 2>&1 &
CHROME_PID=$!

echo "WebSocket interop: node $(node --version), MQTT.js $(node -p "require('$NPM_DIR/node_modules/mqtt/package.json').version")," \
    "paho-mqtt $(python3 -c 'import paho.mqtt; print(paho.mqtt.__version__)'), $("$CHROMIUM" --version 2>/dev/null | head -1);" \
    "broker tcp $TCP_PORT, ws $WS_PORT, wss $WSS_PORT"

RESULTS="$WORK/results"
export NODE_PATH="$NPM_DIR/node_modules" NODE_EXTRA_CA_CERTS="$WORK/server.crt"
export WS_PORT TCP_PORT BROKER_LOG MQTT_BIN CDP_PORT
run_part() {
    timeout 300 "$@" </dev/null 2>&1 | tee -a "$RESULTS"
}
run_part node .ci/interop/websockets_test.js scenarios "ws://127.0.0.1:$WS_PORT/mqtt"
run_part node .ci/interop/websockets_test.js scenarios "wss://127.0.0.1:$WSS_PORT/mqtt"
run_part python3 .ci/interop/websockets_paho.py 127.0.0.1 "$WS_PORT" "$WSS_PORT" "$WORK/server.crt"
run_part node .ci/interop/websockets_test.js bad
run_part node .ci/interop/websockets_test.js browser

passed="$(grep -c '^PASS ' "$RESULTS")"
failed="$(grep -c '^FAIL ' "$RESULTS")"
if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "the broker died during the WebSocket tests" >&2
    failed=$((failed + 1))
fi
if [ "$passed" -eq 0 ]; then
    failed=$((failed + 1))
fi
if [ "$failed" -ne 0 ]; then
    echo "broker log (last 40 lines):" >&2
    tail -n 40 "$BROKER_LOG" >&2
    echo "chromium log (last 10 lines):" >&2
    tail -n 10 "$WORK/chromium.log" >&2
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
