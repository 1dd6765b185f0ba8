#!/usr/bin/env bash
# The `mqtt` tool side by side with Mosquitto's: the same flags given to
# mosquitto_sub and `mqtt sub` (and to mosquitto_pub and `mqtt pub`) against
# the same broker print the same output (issue 21).
#
#   bash .ci/interop/cli_side_by_side.sh
#
# The broker is ours ($MQTT_BROKER_BIN, else target/release/mqtt-broker,
# built if missing); the tool is $MQTT_CLI_BIN, else target/release/mqtt
# (built if missing). Each case runs both subscribers at once, each on its
# own topic prefix (mosq/... and ours/...), both with -d so that "Subscribed"
# says when they are ready (and the -d lines, dropped before comparing, are
# the same wording); the prefixes are then made equal and the outputs
# compared byte for byte. Every wait is bounded. Prints one PASS or FAIL line
# per case and "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"
export PATH="$PATH:/usr/sbin"

need_apt mosquitto-clients || exit 2
for tool in mosquitto_pub mosquitto_sub python3 timeout stdbuf cmp; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BROKER="${MQTT_BROKER_BIN:-$TARGET/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi
MQTT="${MQTT_CLI_BIN:-$TARGET/release/mqtt}"
if [ ! -x "$MQTT" ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-client --bin mqtt) || exit 2
fi

WORK="$(mktemp -d)"
BROKER_PID=""
trap 'stop_pid "$BROKER_PID"; [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"' EXIT

PORT="$(free_port)"
"$BROKER" -p "$PORT" </dev/null >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
wait_port "$PORT" "$BROKER_PID" || { echo "broker did not start" >&2; cat "$WORK/broker.log" >&2; exit 2; }

CLIENT_TIMEOUT=20
passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

# wait_for FILE PATTERN PID: until FILE has PATTERN (10 s at most, or until
# PID exits).
wait_for() {
    local i
    for ((i = 0; i < 200; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { grep -q -- "$2" "$1" 2>/dev/null; return; }
        sleep 0.05
    done
    return 1
}

# The tool for IMPL (mosq or ours) and a subcommand (pub or sub).
tool() {
    case "$1:$2" in
        mosq:sub) echo "stdbuf -oL mosquitto_sub" ;;
        mosq:pub) echo "mosquitto_pub" ;;
        ours:sub) echo "$MQTT sub" ;;
        ours:pub) echo "$MQTT pub" ;;
    esac
}

# pub_to IMPL_PREFIX ARGS...: publish with mosquitto_pub, PFX standing for
# the prefix in every argument.
pub_to() {
    local prefix="$1"
    shift
    timeout "$CLIENT_TIMEOUT" mosquitto_pub -h 127.0.0.1 -p "$PORT" "${@//PFX/$prefix}" >/dev/null
}

# messages FILE: what a subscriber printed, without the -d lines, and with
# the %j / %J time stamp made constant.
# Client identifiers differ (and -N joins a payload and the next -d line),
# so they are made equal first.
messages() {
    sed -E 's/Client [^ ]+ (sending|received) /Client X \1 /g' "$1" |
        { grep -a -v -e '^Client X ' -e '^Subscribed (mid' -e '^Received DISCONNECT' || true; } |
        sed -E 's/"tst":([[:space:]]*)"[^"]*"/"tst":\1"T"/' |
        if [ -n "${SORT:-}" ]; then LC_ALL=C sort; else cat; fi
}

# case_sub NAME SETUP FEED SUB_ARGS...: SETUP and FEED are functions called
# with a prefix (before subscribing, and once subscribed); PFX in SUB_ARGS
# is the prefix. SORT=1 sorts both outputs (the broker's order of retained
# messages is not the client's doing). Compares what both subscribers print and their exit codes.
case_sub() {
    local name="$1" setup="$2" feed="$3"
    shift 3
    local impl pids=() prefix
    for impl in mosq ours; do
        prefix="$impl/$name"
        "$setup" "$prefix"
        # shellcheck disable=SC2046
        timeout "$CLIENT_TIMEOUT" $(tool "$impl" sub) -d -h 127.0.0.1 -p "$PORT" "${@//PFX/$prefix}" \
            >"$WORK/$name.$impl.out" 2>"$WORK/$name.$impl.err" &
        pids+=($!)
        if ! wait_for "$WORK/$name.$impl.out" '^Subscribed (mid' "${pids[-1]}"; then
            fail "$name" "$impl did not subscribe: $(head -c 300 "$WORK/$name.$impl.err")"
            kill "${pids[@]}" 2>/dev/null
            return
        fi
    done
    for impl in mosq ours; do "$feed" "$impl/$name"; done
    local codes=()
    for pid in "${pids[@]}"; do
        wait "$pid"
        codes+=($?)
    done
    for impl in mosq ours; do
        messages "$WORK/$name.$impl.out" | sed "s#$impl/$name#P#g" >"$WORK/$name.$impl.txt"
    done
    if [ "${codes[0]}" != "${codes[1]}" ] && [ -z "${IGNORE_EXIT:-}" ]; then
        fail "$name" "exit codes differ: mosquitto_sub ${codes[0]}, mqtt sub ${codes[1]}"
    elif ! cmp -s "$WORK/$name.mosq.txt" "$WORK/$name.ours.txt"; then
        fail "$name" "output differs:$(diff "$WORK/$name.mosq.txt" "$WORK/$name.ours.txt" | head -20 | sed 's/^/    /')"
    elif [ ! -s "$WORK/$name.mosq.txt" ] && [ -z "${EXPECT_EMPTY:-}" ]; then
        fail "$name" "nothing printed by either"
    else
        pass "$name (exit ${codes[0]}, $(wc -l <"$WORK/$name.ours.txt") lines)"
    fi
}

none() { :; }
# Three messages: QoS 0, 1, 2, one of them binary.
three() {
    pub_to "$1" -t PFX/a -m "hello world" -q 0
    printf 'bin\x00\xff' | pub_to "$1" -t PFX/b -s -q 1
    pub_to "$1" -t PFX/c/d -m "last one" -q 2
}
# Text only: for %j a binary payload is where the tools differ on purpose
# (ours gives "payloadhex", Mosquitto the raw bytes up to the first NUL).
three_text() {
    pub_to "$1" -t PFX/a -m "hello world" -q 0
    pub_to "$1" -t PFX/b -m 'say "hi"\ttab' -q 1
    pub_to "$1" -t PFX/c/d -m "last one" -q 2
}
retained() {
    pub_to "$1" -t PFX/r1 -m "kept one" -r -q 1
    pub_to "$1" -t PFX/r2 -m "kept two" -r -q 1
}
fresh() { pub_to "$1" -t PFX/f -m "fresh" -q 1; }
v5props() {
    pub_to "$1" -V 5 -t PFX/p -m '{"t":21.5}' -q 1 \
        -D publish content-type application/json -D publish user-property k v \
        -D publish response-topic PFX/reply -D publish payload-format-indicator 1
}

case_sub verbose none three -t 'PFX/#' -q 2 -v -C 3
case_sub payload-only none three -t 'PFX/#' -q 2 -C 3
case_sub count none three -t 'PFX/#' -q 2 -v -C 2
# QoS 1: mosquitto_sub prints a QoS 2 message after PUBREL, ours at once,
# which -N (payload and the next -d line joined) would show.
case_sub no-newline none three -t 'PFX/#' -q 1 -N -C 3
case_sub format-fields none three -t 'PFX/#' -q 2 -C 3 -F '%t|%p|%q|%r|%l|%x|%X|%%|\t|%5t|%-12t|%010l|@@|@Y'
case_sub format-json none three_text -t 'PFX/#' -q 2 -C 3 -F '%j'
case_sub filter-out none three -t 'PFX/#' -q 2 -v -C 2 -T 'PFX/b'
case_sub filter-out-tree none three -t 'PFX/#' -q 2 -v -C 2 -T 'PFX/c/#'
SORT=1 case_sub no-retained retained three -t 'PFX/#' -q 1 -v -R -C 3
SORT=1 case_sub retained-only retained fresh -t 'PFX/#' -q 1 -v --retained-only
# mosquitto_sub 2.0.11 does not exit here: it waits for the acknowledgement
# of its last removal, which came before the fresh message; -W ends it
# (27) where `mqtt sub` exits 0. The output and what is left are compared.
SORT=1 IGNORE_EXIT=1 case_sub remove-retained retained fresh -t 'PFX/#' -q 1 -v --remove-retained -T 'PFX/r2' --retained-only -W 3
case_sub v5-properties none v5props -V 5 -t 'PFX/#' -q 1 -C 1 -F '%t|%C|%P|%R|%F|%p'
case_sub v5-json-pretty none v5props -V 5 -t 'PFX/#' -q 1 -C 1 -F '%J' --pretty
EXPECT_EMPTY=1 case_sub timeout none none -t 'PFX/#' -W 1

# What --remove-retained left: r2 (filtered out) in both trees, r1 in none.
left() { timeout 5 mosquitto_sub -h 127.0.0.1 -p "$PORT" -t "$1/#" --retained-only -W 1 -v 2>/dev/null | sed "s#$1#P#"; }
if [ "$(left mosq/remove-retained)" == "$(left ours/remove-retained)" ] &&
    [ "$(left ours/remove-retained)" == "P/r2 kept two" ]; then
    pass "remove-retained left the same retained messages"
else
    fail "remove-retained state" "mosquitto: [$(left mosq/remove-retained)] ours: [$(left ours/remove-retained)]"
fi

# --- pub: the same flags to mosquitto_pub and mqtt pub, seen by one subscriber;
# what the subscriber prints and the publisher's -d trace must be the same.
# case_pub NAME COUNT STDIN PUB_ARGS...: PFX is the topic prefix; COUNT
# messages are expected.
case_pub() {
    local name="$1" count="$2" input="$3"
    shift 3
    local impl
    for impl in mosq ours; do
        local prefix="pub/$impl/$name" out="$WORK/pub.$name.$impl.out"
        timeout "$CLIENT_TIMEOUT" stdbuf -oL mosquitto_sub -d -h 127.0.0.1 -p "$PORT" -V 5 -q 2 \
            -t "$prefix/#" -C "$count" -W 10 -F '%t|%q|%r|%l|%p|%C|%P|%R|%F' >"$out" 2>/dev/null &
        local pid=$!
        wait_for "$out" '^Subscribed (mid' "$pid" || { fail "pub-$name" "subscriber not ready"; return; }
        # shellcheck disable=SC2046
        # With -d: the publisher's packet trace is compared too.
        printf '%b' "$input" | timeout "$CLIENT_TIMEOUT" $(tool "$impl" pub) -d -h 127.0.0.1 -p "$PORT" "${@//PFX/$prefix}" \
            >"$WORK/pub.$name.$impl.pubout" 2>&1
        echo "exit $?" >>"$WORK/pub.$name.$impl.pubout"
        wait "$pid"
        messages "$out" | sed "s#$prefix#P#g" >"$WORK/pub.$name.$impl.txt"
        sed -E -e 's/Client [^ ]+ /Client X /' -e "s#$prefix#P#g" "$WORK/pub.$name.$impl.pubout" >>"$WORK/pub.$name.$impl.txt"
    done
    if ! cmp -s "$WORK/pub.$name.mosq.txt" "$WORK/pub.$name.ours.txt"; then
        fail "pub-$name" "differs:$(diff "$WORK/pub.$name.mosq.txt" "$WORK/pub.$name.ours.txt" | head -20 | sed 's/^/    /')"
    elif [ "$(wc -l <"$WORK/pub.$name.ours.txt")" -lt 2 ]; then
        fail "pub-$name" "nothing received"
    else
        pass "pub-$name"
    fi
}

printf 'file payload\nwith two lines\n' >"$WORK/payload.txt"
case_pub message 1 '' -t PFX/m -m 'a message' -q 1
case_pub retain 1 '' -t PFX/r -m 'retained' -r -q 2
case_pub null 1 '' -t PFX/n -n -q 1
case_pub file 1 '' -t PFX/f -f "$WORK/payload.txt" -q 1
case_pub stdin-file 1 'all\nof stdin\n' -t PFX/s -s -q 2
case_pub stdin-lines 4 'one\ntwo\n\nfour\n' -t PFX/l -l -q 1
case_pub repeat 3 '' -t PFX/rep -m again --repeat 3 -q 1
case_pub v5-properties 1 '' -V mqttv5 -t PFX/p -m props -q 1 -D publish content-type text/plain \
    -D publish user-property k v -D publish response-topic PFX/reply -D publish payload-format-indicator 1
case_pub v31 1 '' -V mqttv31 -t PFX/v31 -m 'three one' -q 1 -i side-by-side-31
# Clear what the cases retained.
pub_to pub/mosq/retain -t PFX/r -n -r
pub_to pub/ours/retain -t PFX/r -n -r

if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    fail broker "died during the run"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
