#!/usr/bin/env bash
# Shared subscriptions under an ACL file, with the Mosquitto clients: an ACL
# that grants `topic readwrite #` grants `$share/g/a/b` (the rules see the
# filter inside `$share/{group}/`), for MQTT 3.1.1 and 5.0, and messages to
# a/b are delivered on it; a `deny` line on the inner filter refuses it.
# Mosquitto itself runs on the same ACL file as the reference for the
# grant.
#
#   bash .ci/interop/acl_shared_test.sh
#
# Self-contained: starts its own brokers on free ports. Prints one PASS or
# FAIL line per check and "N passed, M failed"; exits non-zero on failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"
export PATH="$PATH:/usr/sbin:/usr/bin"
need_apt mosquitto mosquitto-clients python3 || exit 2
BROKER="${MQTT_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi
BROKER="$(cd "$(dirname "$BROKER")" && pwd)/$(basename "$BROKER")"

WORK="$(mktemp -d)"
OURS_PID=""
MOSQ_PID=""
trap 'stop_pid "$OURS_PID"; stop_pid "$MOSQ_PID"; rm -rf "$WORK"' EXIT

passed=0
failed=0
check() { # NAME COMMAND...
    local name="$1"; shift
    if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

cat >"$WORK/acl" <<'ACL'
topic readwrite #
topic deny a/secret
ACL

OURS="$(free_port)"
cat >"$WORK/broker.toml" <<TOML
acl_file = "$WORK/acl"
durability = "none"
sys_interval_secs = 0
[[listeners]]
bind = "127.0.0.1:$OURS"
allow_anonymous = true
TOML
"$BROKER" -c "$WORK/broker.toml" </dev/null >"$WORK/ours.log" 2>&1 &
OURS_PID=$!

MOSQ="$(free_port)"
# Mosquitto started as root drops to its own user: let it read the files.
chmod 755 "$WORK"
chmod 644 "$WORK/acl"
cat >"$WORK/mosquitto.conf" <<CONF
listener $MOSQ 127.0.0.1
allow_anonymous true
acl_file $WORK/acl
persistence false
CONF
mosquitto -c "$WORK/mosquitto.conf" </dev/null >"$WORK/mosquitto.log" 2>&1 &
MOSQ_PID=$!

wait_port "$OURS" "$OURS_PID" 20 || { echo "our broker did not start" >&2; cat "$WORK/ours.log" >&2; exit 2; }
wait_port "$MOSQ" "$MOSQ_PID" 20 || { echo "mosquitto did not start" >&2; cat "$WORK/mosquitto.log" >&2; exit 2; }

# shared_round_trip PORT VERSION: mosquitto_sub on $share/g/a/b receives a
# message mosquitto_pub sends to a/b.
shared_round_trip() {
    local port="$1" v="$2" out="$WORK/out-$1-$2"
    : >"$out"
    timeout 20 mosquitto_sub -p "$port" -V "$v" -t '$share/g/a/b' -q 1 -C 1 -W 15 >"$out" 2>&1 &
    local sub=$!
    # The subscriber may not be subscribed yet (and a shared subscription
    # gets no retained message): publish until it has a copy or has exited
    # (a refused subscription ends it), bounded.
    for _ in $(seq 100); do
        timeout 10 mosquitto_pub -p "$port" -V "$v" -t a/b -m "shared $v" -q 1 2>/dev/null
        [ -s "$out" ] && break
        kill -0 "$sub" 2>/dev/null || break
        sleep 0.1
    done
    wait "$sub"
    [ "$(cat "$out")" = "shared $v" ] || { echo "  got: $(cat "$out")" >&2; return 1; }
}

# shared_denied PORT VERSION: $share/g/a/secret is refused.
shared_denied() {
    local out
    out="$(timeout 20 mosquitto_sub -p "$1" -V "$2" -t '$share/g/a/secret' -C 1 -W 5 2>&1)"
    echo "$out" | grep -qi "denied"
}

for v in mqttv311 mqttv5; do
    check "mosquitto grants \$share/g/a/b under 'topic readwrite #' ($v)" shared_round_trip "$MOSQ" "$v"
    check "ours grants \$share/g/a/b under 'topic readwrite #' and delivers ($v)" shared_round_trip "$OURS" "$v"
    check "ours refuses \$share/g/a/secret under 'topic deny a/secret' ($v)" shared_denied "$OURS" "$v"
done

if [ "$failed" -ne 0 ]; then
    echo "our broker's log:"; tail -n 40 "$WORK/ours.log"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
