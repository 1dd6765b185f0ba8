#!/usr/bin/env bash
# Interoperability tests: the Mosquitto command-line clients (mosquitto_pub,
# mosquitto_sub) against a running broker.
#
#   bash .ci/interop/mosquitto_clients_test.sh [HOST] [PORT]
#
# HOST and PORT default to $MQTT_HOST / $MQTT_PORT, then 127.0.0.1:1883.
# Each test prints one PASS or FAIL line; the last line is "N passed, M failed"
# and the exit status is non-zero if anything failed. Every client runs under
# `timeout`, and waits are bounded polls, never fixed sleeps.
set -uo pipefail

HOST="${1:-${MQTT_HOST:-127.0.0.1}}"
PORT="${2:-${MQTT_PORT:-1883}}"
RUN="$$-$RANDOM"                  # keeps topics and client ids unique per run
CLIENT_TIMEOUT=30                 # hard limit for any single client process

for tool in mosquitto_pub mosquitto_sub stdbuf timeout cmp; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- helpers (used inside each test's subshell) -------------------------------

T() { printf 'interop/%s/%s' "$RUN" "$1"; }

fail_now() { echo "$*" >&2; exit 1; }

pub() { timeout "$CLIENT_TIMEOUT" mosquitto_pub -h "$HOST" -p "$PORT" "$@"; }
sub() { timeout "$CLIENT_TIMEOUT" mosquitto_sub -h "$HOST" -p "$PORT" "$@"; }

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

# start_sub OUT ARGS...: a mosquitto_sub in the background with debug output
# (line buffered), returned once the broker has acknowledged its
# subscriptions. Its pid is left in SUB_PID.
start_sub() {
    local out="$1"
    shift
    timeout "$CLIENT_TIMEOUT" stdbuf -oL mosquitto_sub -d -h "$HOST" -p "$PORT" "$@" >"$out" 2>&1 &
    SUB_PID=$!
    wait_for "$out" "received SUBACK" "$SUB_PID"
    # mosquitto_sub -d prints the SUBACK line before it has looked at the
    # return codes; make sure none was a failure (0x80 / >= 0x80).
    wait_for "$out" "^Subscribed (mid" "$SUB_PID"
    if grep '^Subscribed (mid' "$out" | grep -Eq '(: |, )(12[89]|1[3-9][0-9]|2[0-9][0-9])\b'; then
        fail_now "subscription refused: $(grep '^Subscribed' "$out")"
    fi
}

# finish_sub PID: wait for a background subscriber; non-zero if it failed.
finish_sub() {
    local rc=0
    wait "$1" || rc=$?
    [ "$rc" -eq 0 ] || fail_now "mosquitto_sub exited with status $rc (27 = timed out waiting for messages)"
}

# messages FILE: what a `start_sub` subscriber printed, without debug lines.
messages() { grep -v -e '^Client ' -e '^Subscribed (mid' "$1" || true; }

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
    [ "$2" == "$3" ] || fail_now "$1: expected [$2], got [$3]"
}

# --- tests ----------------------------------------------------------------------

test_pub_sub_qos_versions() {
    # -t -m -q 0/1/2 for MQTT 3.1, 3.1.1 and 5; -v prints "topic payload".
    local v q t out
    for v in 31 311 5; do
        for q in 0 1 2; do
            t="$(T "sensors/v$v/q$q/temperature")"
            out="$WORK/pubsub-$v-$q"
            start_sub "$out" -V "$v" -q 2 -t "$t" -v -C 1 -W 10
            pub -V "$v" -q "$q" -t "$t" -m "21.$q degrees C" || fail_now "mosquitto_pub -V $v -q $q failed"
            finish_sub "$SUB_PID"
            expect_eq "-V $v -q $q message" "$t 21.$q degrees C" "$(messages "$out")"
            grep -q "received PUBLISH (d0, q$q, r0" "$out" ||
                fail_now "-V $v: not delivered at qos $q: $(grep 'received PUBLISH' "$out")"
        done
    done
}

test_qos_downgrade_and_plain_output() {
    # A QoS 2 publish to a QoS 0 subscription arrives at QoS 0; without -v
    # only the payload is printed.
    local t out
    t="$(T downgrade)"
    out="$WORK/downgrade"
    start_sub "$out" -q 0 -t "$t" -C 1 -W 10
    pub -q 2 -t "$t" -m "payload only" || fail_now "publish failed"
    finish_sub "$SUB_PID"
    expect_eq "message" "payload only" "$(messages "$out")"
    grep -q "received PUBLISH (d0, q0, r0" "$out" || fail_now "not downgraded to qos 0"
}

test_wildcards() {
    local out
    out="$WORK/wild"
    start_sub "$out" -t "$(T 'home/+/temp')" -t "$(T 'office/#')" -v -C 3 -W 10
    pub -t "$(T home/kitchen/temp)" -m a
    pub -t "$(T home/kitchen/humidity)" -m not-matched
    pub -t "$(T office)" -m b          # '#' also matches the parent level
    pub -t "$(T office/desk/lamp)" -m c
    finish_sub "$SUB_PID"
    expect_eq "wildcard matches" \
        "$(T home/kitchen/temp) a
$(T office) b
$(T office/desk/lamp) c" "$(messages "$out")"
}

test_retained_set_and_clear() {
    local v t m out got
    for v in 311 5; do
        t="$(T "retained/v$v/setpoint")"
        m="$(T "retained/v$v/marker")"
        pub -V "$v" -q 1 -r -t "$t" -m "21.0" || fail_now "retained publish failed"
        # A later subscriber gets it, flagged retained (%r), at QoS 1 (%q).
        got="$(sub -V "$v" -q 1 -t "$t" -C 1 -W 10 -F '%r %q %t %p')" || fail_now "-V $v: no retained message"
        expect_eq "-V $v retained" "1 1 $t 21.0" "$got"
        # Clear it with -n -r: a later subscriber gets only the marker.
        pub -V "$v" -q 1 -r -n -t "$t" || fail_now "clearing publish failed"
        out="$WORK/retained-clear-$v"
        start_sub "$out" -V "$v" -q 1 -t "$t" -t "$m" -v -C 1 -W 10
        pub -V "$v" -q 1 -t "$m" -m marker
        finish_sub "$SUB_PID"
        expect_eq "-V $v after clearing (retained message not cleared?)" "$m marker" "$(messages "$out")"
    done
}

test_binary_file_payload() {
    # -f FILE: a binary payload (every byte value, NULs and newlines included)
    # comes back byte-identical, live (through a persistent session, so no
    # debug output mixes with the raw payload) and retained.
    local src="$WORK/binary.in" v t id out
    head -c $((4 * 1024 * 1024)) /dev/urandom >"$src"
    for ((i = 0; i < 256; i++)); do printf "\\$(printf '%03o' "$i")"; done >>"$src"
    printf '\0\n\r\n\0' >>"$src"
    for v in 311 5; do
        t="$(T "blob/v$v")"
        id="interop-blob-$v-$RUN"
        sub -V "$v" -c -i "$id" -q 1 -t "$t" -E || fail_now "-V $v: cannot create the session"
        out="$WORK/binary-$v.out"
        sub -V "$v" -c -i "$id" -q 1 -t "$t" -C 1 -N -W 20 >"$out" &
        local pid=$!
        pub -V "$v" -q 1 -t "$t" -f "$src" || fail_now "-V $v: mosquitto_pub -f failed"
        finish_sub "$pid"
        cmp -s "$src" "$out" || fail_now "-V $v live: payload differs ($(stat -c %s "$out") of $(stat -c %s "$src") bytes)"
        sub -V "$v" -i "$id" -t "$t" -E >/dev/null || true   # clean session: drop it

        pub -V "$v" -q 1 -r -t "$t" -f "$src" || fail_now "-V $v: retained -f publish failed"
        sub -V "$v" -q 1 -t "$t" -C 1 -N -W 20 >"$out" || fail_now "-V $v: retained binary not received"
        cmp -s "$src" "$out" || fail_now "-V $v retained: payload differs"
        pub -V "$v" -r -n -t "$t" || true
    done
}

test_line_mode() {
    # -l publishes each line of stdin as one message.
    local v t out
    for v in 311 5; do
        t="$(T "lines/v$v")"
        out="$WORK/lines-$v"
        start_sub "$out" -V "$v" -q 1 -t "$t" -v -C 3 -W 10
        printf 'first line\nsecond line\nthird: 23.5\n' | pub -V "$v" -q 1 -t "$t" -l ||
            fail_now "mosquitto_pub -l failed"
        finish_sub "$SUB_PID"
        expect_eq "-V $v lines" "$t first line
$t second line
$t third: 23.5" "$(messages "$out")"
    done
}

test_will_on_kill() {
    # A client with --will-* killed with -9 (no DISCONNECT): the will is sent.
    # One that exits normally: it is not.
    local v w out wout pid
    for v in 311 5; do
        w="$(T "devices/v$v/status")"
        out="$WORK/will-$v"
        wout="$WORK/will-client-$v"
        start_sub "$out" -V "$v" -q 1 -t "$w" -v -C 1 -W 15
        stdbuf -oL mosquitto_sub -d -h "$HOST" -p "$PORT" -V "$v" -t "$(T "devices/v$v/cmd")" \
            --will-topic "$w" --will-payload "unexpectedly offline" --will-qos 1 >"$wout" 2>&1 &
        pid=$!
        wait_for "$wout" "received SUBACK" "$pid"
        kill -9 "$pid"
        wait "$pid" 2>/dev/null || true
        finish_sub "$SUB_PID"
        expect_eq "-V $v will" "$w unexpectedly offline" "$(messages "$out")"
        grep -q "received PUBLISH (d0, q1, r0" "$out" || fail_now "-V $v: will not at qos 1"

        # Clean exit (-E: exit after SUBACK, sending DISCONNECT): no will.
        out="$WORK/will-clean-$v"
        start_sub "$out" -V "$v" -q 1 -t "$w" -v -C 1 -W 15
        sub -V "$v" -t "$(T "devices/v$v/cmd")" -E --will-topic "$w" --will-payload "must not appear" ||
            fail_now "-V $v: will client failed"
        pub -V "$v" -q 1 -t "$w" -m "marker"
        finish_sub "$SUB_PID"
        expect_eq "-V $v after a clean disconnect" "$w marker" "$(messages "$out")"
    done
}

test_persistent_session() {
    # -c -i ID: QoS 1 messages published while the client is away are
    # delivered, in order, when it comes back.
    local v t id got
    for v in 311 5; do
        t="$(T "persist/v$v")"
        id="interop-persist-$v-$RUN"
        sub -V "$v" -c -i "$id" -q 1 -t "$t" -E || fail_now "-V $v: cannot create the session"
        for n in 1 2 3; do pub -V "$v" -q 1 -t "$t" -m "queued $n" || fail_now "publish failed"; done
        got="$(sub -V "$v" -c -i "$id" -q 1 -t "$t" -C 3 -W 10 -v)" || fail_now "-V $v: queued messages not delivered: [$got]"
        expect_eq "-V $v queued" "$t queued 1
$t queued 2
$t queued 3" "$got"
        sub -V "$v" -i "$id" -t "$t" -E >/dev/null || true
    done
}

test_v5_properties() {
    # MQTT 5 properties set with -D come through, retained and live.
    local t out got want
    t="$(T props)"
    local -a props=(-D publish content-type application/json
        -D publish response-topic "$(T props/reply)"
        -D publish correlation-data req-42
        -D publish user-property sensor kitchen
        -D publish payload-format-indicator 1
        -D publish message-expiry-interval 3600)
    local fmt='%t|%p|C=%C|R=%R|D=%D|P=%P|F=%F|S=%S'
    want="$t|{\"t\":21}|C=application/json|R=$(T props/reply)|D=req-42|P=sensor:kitchen|F=1|S=42"

    out="$WORK/props"
    start_sub "$out" -V 5 -q 1 -t "$t" -C 1 -W 10 -F "$fmt" -D subscribe subscription-identifier 42
    pub -V 5 -q 1 -t "$t" -m '{"t":21}' "${props[@]}" || fail_now "publish failed"
    finish_sub "$SUB_PID"
    expect_eq "live properties" "$want" "$(messages "$out")"

    pub -V 5 -q 1 -r -t "$t" -m '{"t":21}' "${props[@]}" || fail_now "retained publish failed"
    got="$(sub -V 5 -q 1 -t "$t" -C 1 -W 10 -F "$fmt" -D subscribe subscription-identifier 42)" ||
        fail_now "no retained message"
    expect_eq "retained properties" "$want" "$got"
    got="$(sub -V 5 -q 1 -t "$t" -C 1 -W 10 -F '%E')" || fail_now "no retained message"
    [[ "$got" =~ ^[0-9]+$ ]] && [ "$got" -le 3600 ] && [ "$got" -ge 3500 ] ||
        fail_now "message expiry interval [$got]"
    pub -V 5 -r -n -t "$t" || true
}

test_timeout_without_messages() {
    # -C 1 -W 1 on a silent topic: mosquitto_sub gives up with status 27.
    local rc=0
    sub -t "$(T silent)" -C 1 -W 1 >/dev/null 2>&1 || rc=$?
    expect_eq "exit status" 27 "$rc"
}

TESTS=(
    test_pub_sub_qos_versions
    test_qos_downgrade_and_plain_output
    test_wildcards
    test_retained_set_and_clear
    test_binary_file_payload
    test_line_mode
    test_will_on_kill
    test_persistent_session
    test_v5_properties
    test_timeout_without_messages
)

echo "$(mosquitto_pub --help 2>&1 | sed -n 2p) against $HOST:$PORT"
passed=0
failed=0
for t in "${TESTS[@]}"; do
    if [ -n "${MOSQ_TESTS:-}" ] && [[ ",$MOSQ_TESTS," != *",$t,"* ]]; then continue; fi
    start=$SECONDS
    # Each test runs in a subshell: fail_now ends only that test, and its
    # background clients are killed when it ends.
    if reason="$( (trap 'kill $(jobs -p) 2>/dev/null' EXIT; "$t") 2>&1 >/dev/null)"; then
        passed=$((passed + 1))
        echo "PASS ${t#test_} ($((SECONDS - start))s)"
    else
        failed=$((failed + 1))
        echo "FAIL ${t#test_}: $(printf '%s' "$reason" | tail -n 5)"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
