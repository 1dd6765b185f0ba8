#!/usr/bin/env bash
# Bridges against a real Mosquitto (2.0.11 from Debian): our release broker
# bridged to Mosquitto with in, out and both lines, prefixes, QoS 0/1/2,
# retained messages, MQTT 3.1.1 and 5.0; no loops on `both` lines; 10,000
# QoS 1 messages across a restart of Mosquitto (persistence on) and across
# a SIGKILL of our broker, counting lost and duplicate messages; TLS to
# Mosquitto's TLS listener (and a wrong CA refused and logged); Mosquitto
# bridging to our broker with try_private.
#
#   bash .ci/interop/bridge_test.sh
#
# Self-contained: it starts its own Mosquitto instances and brokers on free
# ports in a temporary directory and stops them on exit. The broker binary
# is $MQTT_BROKER_BIN, else ${CARGO_TARGET_DIR:-target}/release/mqtt-broker,
# built if missing. Each test prints one PASS or FAIL line; the last line is
# "N passed, M failed" and the exit status is non-zero if anything failed.
# Every client runs under `timeout`; waits are bounded polls.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"
need_apt mosquitto mosquitto-clients openssl coreutils python3 || exit 2
for tool in mosquitto mosquitto_pub mosquitto_sub openssl python3 stdbuf timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

BROKER="${MQTT_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
    echo "building $BROKER"
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi
BROKER="$(cd "$(dirname "$BROKER")" && pwd)/$(basename "$BROKER")"

WORK="$(mktemp -d)"
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT
HOST=127.0.0.1
CLIENT_TIMEOUT=60
N=10000

# --- helpers (used inside each test's subshell) ------------------------------------

fail_now() { echo "$*" >&2; exit 1; }
expect_eq() { [ "$2" == "$3" ] || fail_now "$1: expected [$2], got [$3]"; }

PIDS=()
# Stops what the test started (run on the test subshell's exit).
cleanup_test() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
}

# start_mosquitto NAME PORT [CONFIG LINE]...: Mosquitto with persistence in
# $WORK/NAME; its pid in MOSQ_PID.
start_mosquitto() {
    local name="$1" port="$2"
    shift 2
    mkdir -p "$WORK/$name"
    {
        echo "user root"
        echo "listener $port $HOST"
        echo "allow_anonymous true"
        echo "persistence true"
        echo "persistence_location $WORK/$name/"
        echo "max_queued_messages 0"
        echo "log_dest file $WORK/$name/mosquitto.log"
        echo "log_type all"
        printf '%s\n' "$@"
    } >"$WORK/$name/mosquitto.conf"
    mosquitto -c "$WORK/$name/mosquitto.conf" </dev/null >>"$WORK/$name/stdout.log" 2>&1 &
    MOSQ_PID=$!
    PIDS+=("$MOSQ_PID")
    wait_port "$port" "$MOSQ_PID" 10 ||
        fail_now "mosquitto $name did not start: $(tail -n 20 "$WORK/$name/mosquitto.log" "$WORK/$name/stdout.log" 2>/dev/null)"
}

# start_ours NAME PORT BRIDGE-TOML: our broker in $WORK/NAME (durability
# always) with the given [[bridges]] text; its pid in OURS_PID.
start_ours() {
    local name="$1" port="$2" bridges="$3"
    mkdir -p "$WORK/$name"
    cat >"$WORK/$name/broker.toml" <<EOF
sys_interval_secs = 0
data_dir = "$WORK/$name/data"
durability = "always"
max_queued_messages = 100000

[[listeners]]
bind = "$HOST:$port"
allow_anonymous = true

$bridges
EOF
    (cd "$WORK/$name" && RUST_LOG=info exec "$BROKER" -c "$WORK/$name/broker.toml") \
        </dev/null >>"$WORK/$name/broker.log" 2>&1 &
    OURS_PID=$!
    PIDS+=("$OURS_PID")
    wait_port "$port" "$OURS_PID" 10 ||
        fail_now "our broker $name did not start: $(tail -n 20 "$WORK/$name/broker.log")"
}

# bridge_toml NAME MOSQ-PORT VERSION EXTRA LINE...: one [[bridges]] entry.
bridge_toml() {
    local name="$1" mport="$2" version="$3" extra="$4" lines="" l
    shift 4
    for l in "$@"; do lines+="'$l', "; done
    cat <<EOF
[[bridges]]
name = "$name"
address = "$HOST:$mport"
remote_clientid = "edge-$name"
protocol_version = "$version"
restart_timeout = 1
topics = [${lines%, }]
$extra
EOF
}

pub() { local p="$1"; shift; timeout "$CLIENT_TIMEOUT" mosquitto_pub -h "$HOST" -p "$p" "$@"; }
sub() { local p="$1"; shift; timeout "$CLIENT_TIMEOUT" mosquitto_sub -h "$HOST" -p "$p" "$@"; }

# wait_state PORT CLIENTID: until the bridge's state topic on PORT says 1.
wait_state() {
    local port="$1" id="$2" i out
    for ((i = 0; i < 15; i++)); do
        out="$(sub "$port" -t "\$SYS/broker/connection/$id/state" -C 1 -W 1 2>/dev/null)"
        [ "$out" = 1 ] && return 0
    done
    fail_now "bridge $id not connected on port $port after 15 s (state: '$out')"
}

# wait_for FILE PATTERN [SECONDS]: poll until FILE contains PATTERN.
wait_for() {
    local file="$1" pattern="$2" secs="${3:-10}" i
    for ((i = 0; i < secs * 20; i++)); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    fail_now "timed out waiting for '$pattern' in $(basename "$file"): $(tail -c 400 "$file" 2>/dev/null)"
}

# start_sub OUT PORT ARGS...: mosquitto_sub in the background (debug on),
# returned once its SUBACK came; its pid in SUB_PID.
start_sub() {
    local out="$1" p="$2"
    shift 2
    timeout "$CLIENT_TIMEOUT" stdbuf -oL mosquitto_sub -d -h "$HOST" -p "$p" "$@" >"$out" 2>&1 &
    SUB_PID=$!
    PIDS+=("$SUB_PID")
    wait_for "$out" "received SUBACK"
}

# plain FILE: FILE without colour codes (our log is coloured).
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }

# wait_log FILE PATTERN [SECONDS]: poll until our log FILE has PATTERN.
wait_log() {
    local file="$1" pattern="$2" secs="${3:-10}" i
    for ((i = 0; i < secs * 20; i++)); do
        plain "$file" 2>/dev/null | grep -q -- "$pattern" && return 0
        sleep 0.05
    done
    fail_now "timed out waiting for '$pattern' in $file: $(plain "$file" | tail -n 3)"
}

messages() { grep -v -e '^Client ' -e '^Subscribed (mid' "$1" || true; }

# count FILE LINE: how many times LINE is a message in FILE.
count() { messages "$1" | grep -cx -- "$2"; }

# retained_is PORT TOPIC EXPECTED: a new subscriber to TOPIC on PORT gets
# EXPECTED ("topic retain payload") within 10 s.
retained_is() {
    local port="$1" topic="$2" want="$3" i out=""
    for ((i = 0; i < 10; i++)); do
        out="$(sub "$port" -t "$topic" -F '%t %r %p' -C 1 -W 1 2>/dev/null)"
        [ "$out" = "$want" ] && return 0
    done
    fail_now "retained on $port $topic: expected [$want], got [$out]"
}

# --- certificates (for the TLS test) ------------------------------------------------

make_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/$1.key" -out "$WORK/$1.crt" -days 2 -subj "/CN=bridge $1" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
make_server() {
    printf '%b\n' 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1' >"$WORK/server.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/server.key" -out "$WORK/server.csr" -subj "/CN=localhost" 2>/dev/null &&
        openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
            -CAcreateserial -out "$WORK/server.crt" -days 2 -extfile "$WORK/server.ext" 2>/dev/null
}
if ! { make_ca ca && make_ca otherca && make_server; }; then
    echo "openssl could not make the test certificates" >&2
    exit 2
fi
chmod 644 "$WORK"/*.key

# --- tests -------------------------------------------------------------------------

# in and out lines with prefixes; QoS capped by the line; 3.1.1 and 5.0.
lines_test() {
    local version="$1" mport oport out
    mport="$(free_port)"
    oport="$(free_port)"
    start_mosquitto "m-lines-$version" "$mport"
    start_ours "o-lines-$version" "$oport" "$(bridge_toml l "$mport" "$version" "" \
        'sensors/# out 1 edge/ site/' 'cmd/# in 2 dev/ cloud/' 'raw/# out 0')"
    wait_state "$mport" edge-l
    out="$WORK/lines-$version-remote"
    start_sub "$out" "$mport" -V 5 -q 2 -t 'site/#' -t 'raw/#' -F '%t %q %r %p' -C 3 -W 15
    pub "$oport" -q 1 -t edge/other -m x || fail_now "publish to ours failed"
    pub "$oport" -q 2 -t edge/sensors/t -m 21 || fail_now "publish to ours failed"
    pub "$oport" -q 0 -t edge/sensors/h -m 40 || fail_now "publish to ours failed"
    pub "$oport" -q 2 -t raw/x -m r || fail_now "publish to ours failed"
    wait "$SUB_PID" || fail_now "remote subscriber: $(tail -c 300 "$out")"
    expect_eq "out lines on Mosquitto" $'site/sensors/t 1 0 21\nsite/sensors/h 0 0 40\nraw/x 0 0 r' \
        "$(messages "$out")"
    out="$WORK/lines-$version-local"
    start_sub "$out" "$oport" -V 5 -q 2 -t 'dev/#' -F '%t %q %r %p' -C 2 -W 15
    pub "$mport" -q 2 -t cloud/cmd/reboot -m now || fail_now "publish to Mosquitto failed"
    pub "$mport" -q 1 -t cloud/cmd/stop -m later || fail_now "publish to Mosquitto failed"
    wait "$SUB_PID" || fail_now "local subscriber: $(tail -c 300 "$out")"
    expect_eq "in line on ours" $'dev/cmd/reboot 2 0 now\ndev/cmd/stop 1 0 later' "$(messages "$out")"
}
test_lines_v311() { lines_test mqttv311; }
test_lines_v5() { lines_test mqttv50; }

# Retained messages stay retained across the bridge both ways.
retained_test() {
    local version="$1" mport oport
    mport="$(free_port)"
    oport="$(free_port)"
    start_mosquitto "m-ret-$version" "$mport"
    start_ours "o-ret-$version" "$oport" "$(bridge_toml r "$mport" "$version" "" 'r/# both 1')"
    wait_state "$mport" edge-r
    pub "$oport" -q 1 -r -t r/local -m L || fail_now "publish to ours failed"
    pub "$mport" -q 1 -r -t r/remote -m R || fail_now "publish to Mosquitto failed"
    retained_is "$mport" r/local "r/local 1 L"
    retained_is "$oport" r/remote "r/remote 1 R"
}
test_retained_v311_try_private() { retained_test mqttv311; }
test_retained_v5() { retained_test mqttv50; }

# A `both` line on `#`-style patterns: each message exactly once on each side.
no_loop_test() {
    local version="$1" extra="$2" tag="$3" mport oport lo ro m
    mport="$(free_port)"
    oport="$(free_port)"
    start_mosquitto "m-loop-$tag" "$mport"
    start_ours "o-loop-$tag" "$oport" "$(bridge_toml b "$mport" "$version" "$extra" 'loop/# both 1')"
    wait_state "$mport" edge-b
    lo="$WORK/loop-$tag-local"
    ro="$WORK/loop-$tag-remote"
    start_sub "$lo" "$oport" -q 1 -t 'loop/#' -F '%t %p'
    start_sub "$ro" "$mport" -q 1 -t 'loop/#' -F '%t %p'
    pub "$oport" -q 1 -t loop/a -m A && wait_for "$ro" "loop/a A"
    pub "$mport" -q 1 -t loop/b -m B && wait_for "$lo" "loop/b B"
    pub "$oport" -q 1 -t loop/c -m C && wait_for "$ro" "loop/c C"
    pub "$mport" -q 1 -t loop/d -m D && wait_for "$lo" "loop/d D"
    # Echoes would arrive before these (one queue per direction).
    pub "$oport" -q 1 -t loop/z -m Z1 && wait_for "$ro" "loop/z Z1" && wait_for "$lo" "loop/z Z1"
    pub "$mport" -q 1 -t loop/z -m Z2 && wait_for "$lo" "loop/z Z2" && wait_for "$ro" "loop/z Z2"
    for m in "loop/a A" "loop/b B" "loop/c C" "loop/d D" "loop/z Z1" "loop/z Z2"; do
        expect_eq "copies of '$m' on ours" 1 "$(count "$lo" "$m")"
        expect_eq "copies of '$m' on Mosquitto" 1 "$(count "$ro" "$m")"
    done
}
test_no_loop_v5() { no_loop_test mqttv50 "" v5; }
test_no_loop_v311_try_private() { no_loop_test mqttv311 "try_private = true" v311p; }
test_no_loop_v311_without_try_private() { no_loop_test mqttv311 "try_private = false" v311; }

# tally FILE: "lost duplicates" among the payloads 1..N in FILE.
tally() {
    python3 - "$1" "$N" <<'EOF'
import sys
seen = {}
for line in open(sys.argv[1], errors="replace"):
    line = line.strip()
    if line.isdigit():
        seen[int(line)] = seen.get(int(line), 0) + 1
n = int(sys.argv[2])
lost = sum(1 for i in range(1, n + 1) if i not in seen)
dups = sum(c - 1 for c in seen.values())
print(lost, dups)
EOF
}

# until_count FILE COUNT SECONDS: poll until FILE has COUNT distinct numbers.
until_count() {
    local file="$1" want="$2" secs="$3" i got
    for ((i = 0; i < secs * 4; i++)); do
        got="$(messages "$file" | grep -x '[0-9]*' | sort -u | wc -l)"
        [ "$got" -ge "$want" ] && return 0
        sleep 0.25
    done
    return 1
}

# 10,000 QoS 1 messages published here while Mosquitto is stopped and
# started again (persistence on) mid-stream: 0 lost, duplicates counted.
test_10k_across_a_mosquitto_restart() {
    local mport oport out lost dups
    mport="$(free_port)"
    oport="$(free_port)"
    start_mosquitto m-10k-a "$mport"
    local mpid="$MOSQ_PID"
    start_ours o-10k-a "$oport" "$(bridge_toml k "$mport" mqttv311 "" 'n/# out 1')"
    wait_state "$mport" edge-k
    out="$WORK/10k-a"
    # A persistent subscriber; mosquitto_sub reconnects by itself.
    start_sub "$out" "$mport" -q 1 -c -i cloud-sub-a -t 'n/#'
    seq 1 "$N" | pub "$oport" -q 1 -l -t n/x &
    local ppid=$!
    until_count "$out" 2000 60 || fail_now "fewer than 2000 arrived before the restart"
    stop_pid "$mpid"
    start_mosquitto m-10k-a "$mport"
    wait "$ppid" || fail_now "mosquitto_pub to ours failed"
    until_count "$out" "$N" 90 || true
    read -r lost dups <<<"$(tally "$out")"
    echo "lost $lost, duplicates $dups" >&2
    expect_eq "messages lost across a Mosquitto restart (duplicates: $dups)" 0 "$lost"
}

# The same with our broker SIGKILLed while the bridge is forwarding a
# backlog of 10,000 acknowledged messages.
test_10k_across_a_sigkill_of_ours() {
    local mport oport out lost dups bridge
    mport="$(free_port)"
    oport="$(free_port)"
    start_mosquitto m-10k-b "$mport"
    local mpid="$MOSQ_PID"
    bridge="$(bridge_toml k "$mport" mqttv311 "" 'n/# out 1')"
    start_ours o-10k-b "$oport" "$bridge"
    wait_state "$mport" edge-k
    out="$WORK/10k-b"
    start_sub "$out" "$mport" -q 1 -c -i cloud-sub-b -t 'n/#'
    # Build a backlog: Mosquitto away while all 10,000 are acknowledged here.
    stop_pid "$mpid"
    seq 1 "$N" | pub "$oport" -q 1 -l -t n/x || fail_now "mosquitto_pub to ours failed"
    start_mosquitto m-10k-b "$mport"
    until_count "$out" 2000 60 || fail_now "fewer than 2000 arrived before the kill"
    kill -9 "$OURS_PID"
    wait "$OURS_PID" 2>/dev/null
    start_ours o-10k-b "$oport" "$bridge"
    until_count "$out" "$N" 90 || true
    read -r lost dups <<<"$(tally "$out")"
    echo "lost $lost, duplicates $dups" >&2
    plain "$WORK/o-10k-b/broker.log" | grep -q "bridge connected .*session_present=true" ||
        fail_now "no resumed bridge session in our log"
    expect_eq "messages lost across a SIGKILL of ours (duplicates: $dups)" 0 "$lost"
}

# TLS to Mosquitto's TLS listener with a CA file; a wrong CA is refused and
# logged.
test_tls_to_mosquitto() {
    local mport tport oport out
    mport="$(free_port)"
    tport="$(free_port)"
    oport="$(free_port)"
    start_mosquitto m-tls "$mport" "listener $tport $HOST" "allow_anonymous true" \
        "cafile $WORK/ca.crt" "certfile $WORK/server.crt" "keyfile $WORK/server.key"
    start_ours o-tls "$oport" "$(bridge_toml t "$tport" mqttv311 "[bridges.tls]
ca_file = \"$WORK/ca.crt\"" 'tls/# out 1')
$(bridge_toml wrong "$tport" mqttv311 "[bridges.tls]
ca_file = \"$WORK/otherca.crt\"" 'wrong/# out 1')"
    wait_state "$mport" edge-t
    out="$WORK/tls-remote"
    start_sub "$out" "$mport" -q 1 -t 'tls/#' -F '%t %p' -C 1 -W 15
    pub "$oport" -q 1 -t tls/x -m secret || fail_now "publish to ours failed"
    wait "$SUB_PID" || fail_now "remote subscriber: $(tail -c 300 "$out")"
    expect_eq "message over the TLS bridge" "tls/x secret" "$(messages "$out")"
    wait_log "$WORK/o-tls/broker.log" 'bridge cannot connect bridge=wrong .*UnknownIssuer' 15
    grep -q 'edge-wrong' "$WORK/m-tls/mosquitto.log" &&
        grep 'edge-wrong' "$WORK/m-tls/mosquitto.log" | grep -qi 'new client connected' &&
        fail_now "the bridge with the wrong CA got in"
    return 0
}

# Mosquitto bridging to our broker (ours is the remote), try_private on.
test_mosquitto_bridges_to_ours() {
    local mport oport lo ro m
    mport="$(free_port)"
    oport="$(free_port)"
    start_ours o-remote "$oport" ""
    start_mosquitto m-bridge "$mport" "connection tous" "address $HOST:$oport" \
        "topic mq/# both 1" "try_private true" "cleansession false" \
        "remote_clientid mosq-edge" "restart_timeout 1"
    wait_state "$oport" mosq-edge
    lo="$WORK/mosq-to-ours-local"
    ro="$WORK/mosq-to-ours-remote"
    start_sub "$ro" "$oport" -q 1 -t 'mq/#' -F '%t %p'
    start_sub "$lo" "$mport" -q 1 -t 'mq/#' -F '%t %p'
    pub "$mport" -q 1 -t mq/a -m A && wait_for "$ro" "mq/a A"
    pub "$oport" -q 1 -t mq/b -m B && wait_for "$lo" "mq/b B"
    pub "$mport" -q 1 -t mq/z -m Z1 && wait_for "$ro" "mq/z Z1" && wait_for "$lo" "mq/z Z1"
    pub "$oport" -q 1 -t mq/z -m Z2 && wait_for "$lo" "mq/z Z2" && wait_for "$ro" "mq/z Z2"
    for m in "mq/a A" "mq/b B" "mq/z Z1" "mq/z Z2"; do
        expect_eq "copies of '$m' on ours" 1 "$(count "$ro" "$m")"
        expect_eq "copies of '$m' on Mosquitto" 1 "$(count "$lo" "$m")"
    done
}

TESTS=(
    test_lines_v311
    test_lines_v5
    test_retained_v311_try_private
    test_retained_v5
    test_no_loop_v5
    test_no_loop_v311_try_private
    test_no_loop_v311_without_try_private
    test_tls_to_mosquitto
    test_mosquitto_bridges_to_ours
    test_10k_across_a_mosquitto_restart
    test_10k_across_a_sigkill_of_ours
)
if [ "$#" -gt 0 ]; then TESTS=("$@"); fi

echo "bridge interop: $(mosquitto -h 2>&1 | sed -n 1p); broker $BROKER"
passed=0
failed=0
for t in "${TESTS[@]}"; do
    start=$SECONDS
    if reason="$( (trap cleanup_test EXIT; "$t") 2>&1 >/dev/null)"; then
        passed=$((passed + 1))
        echo "PASS ${t#test_} ($((SECONDS - start))s) $(printf '%s' "$reason" | tail -n 1)"
    else
        failed=$((failed + 1))
        echo "FAIL ${t#test_} ($((SECONDS - start))s): $(printf '%s' "$reason" | tail -n 5)"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
