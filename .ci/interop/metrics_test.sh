#!/usr/bin/env bash
# Prometheus metrics: our release broker with a [metrics] listener, traffic
# from mosquitto_pub / mosquitto_sub, `promtool check metrics` on what
# /metrics serves, and a real Prometheus server (Debian's `prometheus`
# package) scraping it until its query API returns our counters.
#
#   bash .ci/interop/metrics_test.sh
#
# Self-contained: installs prometheus and the Mosquitto clients if missing,
# starts the broker and Prometheus on free loopback ports and stops them on
# exit. One PASS or FAIL line per check; the last line is "N passed,
# M failed" and the exit status is non-zero on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"
export PATH="$PATH:/usr/sbin:/usr/bin"

need_apt prometheus mosquitto-clients curl || { echo "cannot install prometheus" >&2; exit 2; }
for tool in promtool prometheus mosquitto_pub mosquitto_sub curl python3 timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

BROKER="${MQTT_BROKER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mqtt-broker}"
if [ ! -x "$BROKER" ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker) || exit 2
fi

WORK="$(mktemp -d)"
BROKER_PID=""
PROM_PID=""
trap 'stop_pid "$PROM_PID"; stop_pid "$BROKER_PID"; rm -rf "$WORK"' EXIT

passed=0
failed=0
check() { # NAME COMMAND...
    local name="$1"; shift
    if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

PORT="$(free_port)"
METRICS="$(free_port)"
PROM="$(free_port)"
cat >"$WORK/broker.toml" <<TOML
data_dir = "$WORK/data"
sys_interval_secs = 0
[[listeners]]
bind = "127.0.0.1:$PORT"
allow_anonymous = true
[metrics]
bind = "127.0.0.1:$METRICS"
TOML
"$BROKER" -c "$WORK/broker.toml" </dev/null >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
if ! wait_port "$PORT" "$BROKER_PID" 20 || ! wait_port "$METRICS" "$BROKER_PID" 5; then
    echo "the broker did not start:" >&2
    cat "$WORK/broker.log" >&2
    exit 2
fi

# Traffic: a subscriber gets three QoS 1 messages (one retained).
timeout 20 mosquitto_sub -p "$PORT" -t 'm/#' -q 1 -C 3 -W 15 >"$WORK/sub.out" 2>/dev/null &
SUB=$!
for _ in $(seq 100); do
    grep -q 'mqtt_subscriptions 1' <(curl -s "http://127.0.0.1:$METRICS/metrics") && break
    sleep 0.1
done
for i in 1 2 3; do
    timeout 10 mosquitto_pub -p "$PORT" -t "m/$i" -m "hello $i" -q 1 $([ "$i" = 1 ] && echo -r)
done
wait "$SUB"
check "the subscriber got the three messages" test "$(wc -l <"$WORK/sub.out")" -eq 3

curl -s -D "$WORK/headers" "http://127.0.0.1:$METRICS/metrics" >"$WORK/metrics.txt"
check "/metrics answers 200 in the text format" grep -q 'Content-Type: text/plain; version=0.0.4' "$WORK/headers"
check "promtool check metrics passes" sh -c "promtool check metrics <'$WORK/metrics.txt'"
check "QoS 1 messages received are counted" grep -qx 'mqtt_messages_received_total{qos="1"} 3' "$WORK/metrics.txt"
check "QoS 1 messages sent are counted" grep -qx 'mqtt_messages_sent_total{qos="1"} 3' "$WORK/metrics.txt"
check "the retained message is counted" grep -qx 'mqtt_retained_messages 1' "$WORK/metrics.txt"
check "the store sync histogram is there" grep -q '^mqtt_store_sync_duration_seconds_bucket{le="+Inf"} [1-9]' "$WORK/metrics.txt"
check "/healthz answers ok" test "$(curl -s "http://127.0.0.1:$METRICS/healthz")" = ok

# A real Prometheus scrapes it every second.
cat >"$WORK/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: mqtt
    static_configs:
      - targets: ['127.0.0.1:$METRICS']
YAML
check "promtool check config passes" sh -c "promtool check config '$WORK/prometheus.yml' >/dev/null"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM" </dev/null >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
wait_port "$PROM" "$PROM_PID" 30 || { echo "prometheus did not start:" >&2; tail -20 "$WORK/prometheus.log" >&2; }

# query EXPR: the first result's value, or nothing.
query() {
    curl -s --max-time 5 "http://127.0.0.1:$PROM/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null
}
up="" received=""
for _ in $(seq 60); do
    up="$(query 'up{job="mqtt"}')"
    received="$(query 'mqtt_messages_received_total{job="mqtt",qos="1"}')"
    [ "$up" = 1 ] && [ "$received" = 3 ] && break
    sleep 0.5
done
check "Prometheus scrapes the broker (up = 1)" test "$up" = 1
check "Prometheus reads the QoS 1 counter (3)" test "$received" = 3
health="$(curl -s --max-time 5 "http://127.0.0.1:$PROM/api/v1/targets" | python3 -c 'import json,sys; t=json.load(sys.stdin)["data"]["activeTargets"]; print(t[0]["health"], t[0]["lastError"] or "-")' 2>/dev/null)"
check "the scrape target is healthy ($health)" test "${health%% *}" = up

if [ "$failed" -ne 0 ]; then
    echo "--- broker log"; tail -20 "$WORK/broker.log"
    echo "--- prometheus log"; tail -20 "$WORK/prometheus.log"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
