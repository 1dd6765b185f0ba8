#!/usr/bin/env bash
# Interoperability over TLS: certificates made with the openssl CLI, our
# release broker started with two TLS listeners, and the Mosquitto clients
# and paho-mqtt (python) connecting through them.
#
#   bash .ci/interop/tls_test.sh
#
# Self-contained: it starts (and stops) its own broker on free ports, so any
# HOST/PORT arguments are ignored. The broker binary is $MQTT_BROKER_BIN, else
# ${CARGO_TARGET_DIR:-target}/release/mqtt-broker, built if missing.
# Each test prints one PASS or FAIL line; the last line is "N passed, M failed"
# and the exit status is non-zero if anything failed. Every client runs under
# `timeout`, and waits are bounded polls, never fixed sleeps.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN="$$-$RANDOM"                  # keeps topics and client ids unique per run
CLIENT_TIMEOUT=30                 # hard limit for any single client process

for tool in openssl mosquitto_pub mosquitto_sub python3 stdbuf timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
python3 -c 'import paho.mqtt.client as m; m.CallbackAPIVersion' 2>/dev/null ||
    { echo "missing python module: paho-mqtt >= 2" >&2; exit 2; }

BROKER="${MQTT_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
    echo "building $BROKER"
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi
BROKER="$(cd "$(dirname "$BROKER")" && pwd)/$(basename "$BROKER")"

WORK="$(mktemp -d)"
BROKER_PID=""
stop_broker() {
    if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
}
trap 'stop_broker; rm -rf "$WORK"' EXIT

# --- certificates ------------------------------------------------------------------

# make_ca NAME: NAME.crt / NAME.key, a self-signed CA.
make_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/$1.key" -out "$WORK/$1.crt" -days 2 -subj "/CN=interop $1" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# make_leaf NAME CA CN EXTENSIONS: NAME.crt / NAME.key signed by CA.
make_leaf() {
    local name="$1" ca="$2" cn="$3" ext="$4"
    printf '%b\n' "$ext" >"$WORK/$name.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/$name.key" -out "$WORK/$name.csr" -subj "/CN=$cn" 2>/dev/null &&
        openssl x509 -req -in "$WORK/$name.csr" -CA "$WORK/$ca.crt" -CAkey "$WORK/$ca.key" \
            -CAcreateserial -out "$WORK/$name.crt" -days 2 -extfile "$WORK/$name.ext" 2>/dev/null
}

SERVER_EXT='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1'
CLIENT_EXT='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'

if ! { make_ca ca && make_leaf server ca localhost "$SERVER_EXT" &&
    make_leaf client ca "interop-device" "$CLIENT_EXT" &&
    make_ca otherca && make_leaf otherclient otherca "intruder" "$CLIENT_EXT" &&
    make_ca newca && make_leaf newserver newca localhost "$SERVER_EXT"; }; then
    echo "openssl could not make the test certificates ($(openssl version))" >&2
    exit 2
fi
# The files the broker reads; the reload test replaces them.
cp "$WORK/server.crt" "$WORK/live.crt"
cp "$WORK/server.key" "$WORK/live.key"

# --- the broker --------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
HOST=127.0.0.1
PORT="$(free_port)"       # TLS, server certificate only, anonymous clients in
MTLS_PORT="$(free_port)"  # TLS, client certificate required, CN = user name
while [ "$MTLS_PORT" = "$PORT" ]; do MTLS_PORT="$(free_port)"; done

cat >"$WORK/config.toml" <<EOF
sys_interval_secs = 0

[[listeners]]
bind = "$HOST:$PORT"
allow_anonymous = true
[listeners.tls]
cert_file = "$WORK/live.crt"
key_file = "$WORK/live.key"

[[listeners]]
bind = "$HOST:$MTLS_PORT"
allow_anonymous = false
[listeners.tls]
cert_file = "$WORK/live.crt"
key_file = "$WORK/live.key"
ca_file = "$WORK/ca.crt"
require_certificate = true
use_identity_as_username = true
EOF

BROKER_LOG="$WORK/broker.log"
# Run from the temp dir, so whatever the broker writes there (its data
# directory) goes away with it.
(cd "$WORK" && exec "$BROKER" -c "$WORK/config.toml") </dev/null >"$BROKER_LOG" 2>&1 &
BROKER_PID=$!
ready=0
for _ in $(seq 100); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "the broker exited:" >&2
        cat "$BROKER_LOG" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null && (exec 3<>"/dev/tcp/$HOST/$MTLS_PORT") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    echo "the broker does not accept connections after 10s:" >&2
    cat "$BROKER_LOG" >&2
    exit 1
fi

# --- helpers (used inside each test's subshell) ------------------------------------

T() { printf 'interop-tls/%s/%s' "$RUN" "$1"; }

fail_now() { echo "$*" >&2; exit 1; }

# pub PORT ARGS... / sub PORT ARGS...
pub() { local p="$1"; shift; timeout "$CLIENT_TIMEOUT" mosquitto_pub -h "$HOST" -p "$p" "$@"; }
sub() { local p="$1"; shift; timeout "$CLIENT_TIMEOUT" mosquitto_sub -h "$HOST" -p "$p" "$@"; }

# wait_for FILE PATTERN [PID]: poll (for at most 10 s) until FILE contains
# PATTERN; give up early if process PID has exited.
wait_for() {
    local file="$1" pattern="$2" pid="${3:-}" i
    for ((i = 0; i < 200; i++)); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            grep -q -- "$pattern" "$file" 2>/dev/null && return 0
            fail_now "client exited before '$pattern': $(tail -c 400 "$file" 2>/dev/null)"
        fi
        sleep 0.05
    done
    fail_now "timed out waiting for '$pattern' in $(basename "$file"): $(tail -c 400 "$file" 2>/dev/null)"
}

# start_sub OUT PORT ARGS...: a mosquitto_sub in the background with debug
# output, returned once the broker has acknowledged its subscription; its pid
# is left in SUB_PID.
start_sub() {
    local out="$1" p="$2"
    shift 2
    timeout "$CLIENT_TIMEOUT" stdbuf -oL mosquitto_sub -d -h "$HOST" -p "$p" "$@" >"$out" 2>&1 &
    SUB_PID=$!
    wait_for "$out" "received SUBACK" "$SUB_PID"
}

finish_sub() {
    local rc=0
    wait "$1" || rc=$?
    [ "$rc" -eq 0 ] || fail_now "mosquitto_sub exited with status $rc: $(tail -c 400 "$2")"
}

messages() { grep -v -e '^Client ' -e '^Subscribed (mid' "$1" || true; }

expect_eq() {
    [ "$2" == "$3" ] || fail_now "$1: expected [$2], got [$3]"
}

CA=(--cafile "$WORK/ca.crt")
CLIENT_CERT=(--cert "$WORK/client.crt" --key "$WORK/client.key")

# --- tests -------------------------------------------------------------------------

test_mosquitto_pub_sub_over_tls() {
    # --cafile: the broker's certificate is verified (host name included).
    local v t out
    for v in 311 5; do
        t="$(T "v$v/temperature")"
        out="$WORK/tls-$v"
        start_sub "$out" "$PORT" "${CA[@]}" -V "$v" -q 1 -t "$t" -v -C 1 -W 10
        pub "$PORT" "${CA[@]}" -V "$v" -q 1 -t "$t" -m "21.5 over tls" ||
            fail_now "mosquitto_pub -V $v over TLS failed"
        finish_sub "$SUB_PID" "$out"
        expect_eq "-V $v message" "$t 21.5 over tls" "$(messages "$out")"
    done
}

test_mosquitto_tls_1_2_and_1_3() {
    local ver t out
    for ver in tlsv1.2 tlsv1.3; do
        t="$(T "$ver")"
        out="$WORK/ver-$ver"
        start_sub "$out" "$PORT" "${CA[@]}" --tls-version "$ver" -t "$t" -C 1 -W 10
        pub "$PORT" "${CA[@]}" --tls-version "$ver" -t "$t" -m "$ver" ||
            fail_now "mosquitto_pub --tls-version $ver failed"
        finish_sub "$SUB_PID" "$out"
        expect_eq "$ver message" "$ver" "$(messages "$out")"
    done
}

test_plain_client_on_tls_port_fails() {
    if pub "$PORT" -t "$(T plain)" -m nope 2>/dev/null; then
        fail_now "a plain MQTT client published on the TLS port"
    fi
}

test_untrusted_server_certificate_fails() {
    # Trusting only another CA: mosquitto must refuse the broker's certificate.
    if pub "$PORT" --cafile "$WORK/otherca.crt" -t "$(T untrusted)" -m nope 2>/dev/null; then
        fail_now "connected although the server certificate is not trusted"
    fi
}

test_mosquitto_mutual_tls() {
    # Client certificate signed by the CA: accepted, with no user name, on a
    # listener that refuses anonymous clients (the CN is the user name).
    local t out
    t="$(T mtls)"
    out="$WORK/mtls"
    start_sub "$out" "$MTLS_PORT" "${CA[@]}" "${CLIENT_CERT[@]}" -q 1 -t "$t" -C 1 -W 10
    pub "$MTLS_PORT" "${CA[@]}" "${CLIENT_CERT[@]}" -q 1 -t "$t" -m "with cert" ||
        fail_now "publish with a client certificate failed"
    finish_sub "$SUB_PID" "$out"
    expect_eq "message" "with cert" "$(messages "$out")"
    if pub "$MTLS_PORT" "${CA[@]}" -t "$t" -m "no cert" 2>/dev/null; then
        fail_now "published without a client certificate"
    fi
    if pub "$MTLS_PORT" "${CA[@]}" --cert "$WORK/otherclient.crt" --key "$WORK/otherclient.key" \
        -t "$t" -m "other CA" 2>/dev/null; then
        fail_now "published with a certificate of another CA"
    fi
}

test_paho_tls() {
    # paho-mqtt: tls_set(ca_certs=...) connect, subscribe, publish, receive;
    # then the same with a client certificate on the mutual-TLS listener.
    timeout "$CLIENT_TIMEOUT" python3 - "$HOST" "$PORT" "$MTLS_PORT" "$WORK" "$(T paho)" <<'PY' || fail_now "paho-mqtt over TLS failed"
import sys, threading
import paho.mqtt.client as mqtt

host, port, mtls_port, work, topic = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def round_trip(port, name, **tls):
    got, subscribed = threading.Event(), threading.Event()
    received = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-tls-" + name)
    c.tls_set(ca_certs=work + "/ca.crt", **tls)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic + "/" + name, qos=1)
    c.on_subscribe = lambda cl, u, mid, codes, p: subscribed.set()
    def on_message(cl, u, msg):
        received.append(msg.payload)
        got.set()
    c.on_message = on_message
    c.connect(host, port, keepalive=30)
    c.loop_start()
    try:
        assert subscribed.wait(10), name + ": no SUBACK"
        c.publish(topic + "/" + name, b"paho over tls", qos=1).wait_for_publish(10)
        assert got.wait(10), name + ": message not received"
        assert received == [b"paho over tls"], received
    finally:
        c.disconnect()
        c.loop_stop()

round_trip(port, "server-auth")
round_trip(mtls_port, "mutual", certfile=work + "/client.crt", keyfile=work + "/client.key")
print("ok")
PY
}

test_sighup_reloads_certificates() {
    # A subscriber connected before the reload keeps receiving; new clients
    # see the new certificate (trusting the new CA works, the old one fails).
    local t out before
    t="$(T reload)"
    out="$WORK/reload"
    start_sub "$out" "$PORT" "${CA[@]}" -q 1 -t "$t" -C 2 -W 20
    before="$(grep -c 'TLS certificates reloaded' "$BROKER_LOG")"
    cp "$WORK/newserver.crt" "$WORK/live.crt"
    cp "$WORK/newserver.key" "$WORK/live.key"
    kill -HUP "$BROKER_PID" || fail_now "cannot signal the broker"
    local i
    for ((i = 0; i < 200; i++)); do
        [ "$(grep -c 'TLS certificates reloaded' "$BROKER_LOG")" -ge $((before + 2)) ] && break
        sleep 0.05
    done
    [ "$i" -lt 200 ] || fail_now "no reload logged: $(tail -n 5 "$BROKER_LOG")"
    kill -0 "$BROKER_PID" 2>/dev/null || fail_now "the broker died on SIGHUP"

    pub "$PORT" --cafile "$WORK/newca.crt" -q 1 -t "$t" -m "after reload" ||
        fail_now "a client trusting the new CA cannot connect"
    if pub "$PORT" "${CA[@]}" -t "$(T reload-old)" -m nope 2>/dev/null; then
        fail_now "the old certificate is still served"
    fi
    pub "$PORT" --cafile "$WORK/newca.crt" -q 1 -t "$t" -m "second" ||
        fail_now "second publish failed"
    finish_sub "$SUB_PID" "$out"
    expect_eq "messages to the subscriber connected before the reload" \
        "$(printf 'after reload\nsecond')" "$(messages "$out")"
}

TESTS=(
    test_mosquitto_pub_sub_over_tls
    test_mosquitto_tls_1_2_and_1_3
    test_plain_client_on_tls_port_fails
    test_untrusted_server_certificate_fails
    test_mosquitto_mutual_tls
    test_paho_tls
    test_sighup_reloads_certificates # last: it replaces the server certificate
)

echo "TLS interop: $(openssl version); $(mosquitto_pub --help 2>&1 | sed -n 2p);" \
    "paho-mqtt $(python3 -c 'import paho.mqtt; print(paho.mqtt.__version__)');" \
    "broker on $HOST:$PORT and $HOST:$MTLS_PORT (mutual TLS)"
passed=0
failed=0
for t in "${TESTS[@]}"; do
    start=$SECONDS
    # Each test runs in a subshell: fail_now ends only that test, and its
    # background subscriber is killed when it ends.
    # (Only SUB_PID is killed: the broker is a job of this shell too.)
    SUB_PID=""
    if reason="$( (trap '[ -z "$SUB_PID" ] || kill "$SUB_PID" 2>/dev/null' EXIT; "$t") 2>&1 >/dev/null)"; then
        passed=$((passed + 1))
        echo "PASS ${t#test_} ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        echo "FAIL ${t#test_}: $(printf '%s' "$reason" | tail -n 5)"
    fi
done
if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "the broker died during the TLS tests; log:" >&2
    tail -n 50 "$BROKER_LOG" >&2
    failed=$((failed + 1))
elif [ "$failed" -ne 0 ]; then
    echo "broker log (last 30 lines):" >&2
    tail -n 30 "$BROKER_LOG" >&2
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
