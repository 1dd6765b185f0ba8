#!/usr/bin/env bash
# Password files interoperate with Mosquitto's: a file written by
# mosquitto_passwd ($7$ PBKDF2-SHA512) is accepted by our broker, and one
# written by `mqtt-broker passwd` (Argon2id) keeps working after
# mosquitto_passwd has added a user to it. Clients are mosquitto_pub/_sub.
#
#   bash .ci/interop/passwd_test.sh
#
# Self-contained: starts its own broker on a free port. Prints one PASS or FAIL
# line per check and "N passed, M failed"; exits non-zero on failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export PATH="$PATH:/usr/sbin:/usr/bin"
for tool in mosquitto_passwd mosquitto_pub mosquitto_sub python3 timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
BROKER="${MQTT_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
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

passed=0
failed=0
check() { # NAME COMMAND...
    local name="$1"; shift
    if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

# Users: alice from mosquitto_passwd, bob from our passwd, then carol added
# by mosquitto_passwd to the same file.
timeout 30 mosquitto_passwd -c -b "$WORK/passwords" alice alice-pw || { echo "mosquitto_passwd failed" >&2; exit 2; }
timeout 30 "$BROKER" passwd -b "$WORK/passwords" bob bob-pw || { echo "mqtt-broker passwd failed" >&2; exit 2; }
timeout 30 mosquitto_passwd -b "$WORK/passwords" carol carol-pw || { echo "mosquitto_passwd (add) failed" >&2; exit 2; }
check "mosquitto_passwd wrote a \$7\$ entry" grep -q '^alice:\$7\$' "$WORK/passwords"
check "mqtt-broker passwd wrote an argon2id entry" grep -q '^bob:\$argon2id\$' "$WORK/passwords"

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$WORK/broker.toml" <<TOML
password_file = "$WORK/passwords"
durability = "none"
sys_interval_secs = 0
[[listeners]]
bind = "127.0.0.1:$PORT"
allow_anonymous = false
TOML
(cd "$WORK" && exec "$BROKER" -c "$WORK/broker.toml" </dev/null >"$WORK/broker.log" 2>&1) &
BROKER_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

# A round trip as USER with PASSWORD: a subscriber gets what a publisher sends.
round_trip() { # USER PASSWORD VERSION
    local topic="pw/$1/$RANDOM" out="$WORK/out-$1-$3"
    timeout 15 mosquitto_sub -p "$PORT" -V "$3" -u "$1" -P "$2" -t "$topic" -C 1 -W 10 >"$out" 2>/dev/null &
    local sub=$!
    # The subscriber may not be subscribed yet: publish again until it has
    # received a copy or exited (bounded retries).
    for _ in $(seq 50); do
        timeout 10 mosquitto_pub -p "$PORT" -V "$3" -u "$1" -P "$2" -t "$topic" -m "hello $1" -q 1 2>/dev/null
        [ -s "$out" ] && break
        kill -0 "$sub" 2>/dev/null || break
        sleep 0.1
    done
    wait "$sub"
    [ "$(cat "$out")" = "hello $1" ]
}
refused() { # USER PASSWORD VERSION
    ! timeout 10 mosquitto_pub -p "$PORT" -V "$3" -u "$1" -P "$2" -t x -m y 2>/dev/null
}
anonymous_refused() { # VERSION
    ! timeout 10 mosquitto_pub -p "$PORT" -V "$1" -t x -m y 2>/dev/null
}

for v in 311 5; do
    check "mosquitto_passwd user (\$7\$) accepted, MQTT $v" round_trip alice alice-pw "$v"
    check "mqtt-broker passwd user (argon2id) accepted, MQTT $v" round_trip bob bob-pw "$v"
    check "user added by mosquitto_passwd later accepted, MQTT $v" round_trip carol carol-pw "$v"
    check "wrong password refused, MQTT $v" refused alice wrong "$v"
    check "unknown user refused, MQTT $v" refused mallory x "$v"
    check "anonymous refused, MQTT $v" anonymous_refused "$v"
done

if [ "$failed" -ne 0 ]; then
    echo "broker log:"; tail -n 40 "$WORK/broker.log"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
