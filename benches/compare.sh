#!/usr/bin/env bash
# Load comparison: our broker against Mosquitto, rumqttd and the do-nothing
# forwarder (the ceiling), with the mqtt-bench load generator.
#
#   benches/compare.sh                  # every scenario, 10 s each
#   DURATION=5 benches/compare.sh       # shorter runs
#
# For each scenario it starts each broker afresh on a free loopback port,
# runs `mqtt-bench --json` against it (sampling the broker's CPU and memory
# through /proc), stops it, and at the end prints one Markdown table:
# delivered msg/s per broker (p50/p99 for the latency row, memory per
# connection for the idle row) and the ratios ours/mosquitto, ours/rumqttd
# and ours/ceiling; then a details table with every run's raw figures.
#
# Brokers: ours (always), mosquitto and rumqttd when on PATH, the forwarder
# (always). Environment:
#   DURATION    seconds of publishing per scenario (default 10)
#   DRAIN       longest wait for the last deliveries after publishing (default 30)
#   DRAIN_IDLE  the wait also ends after this many seconds without a new
#               delivery; what is missing then counts as lost (default 2)
#   IDLE_CONNS  connections of the idle scenario (default 19000: this
#               machine allows 20,000 descriptors per process)
#   IDLE_HOLD   seconds they are held (default 2)
#   STORM_CONNS clients of the connection storm (default 19000)
#   STORM_CONCURRENCY  handshakes in flight during the storm (default 512)
#   FANOUT_WIDE subscribers of the wide fan-out row (default 1000)
#   FANOUT_WIDE_RATE  its publisher's messages per second (default 2000,
#               so 2,000,000 deliveries a second are asked for: more than
#               any broker here delivers, without the unbounded backlog a
#               closed-loop publisher would build in 1,000 queues)
#   BROKERS     which columns to run (default "ours mosquitto rumqttd forwarder")
#   SKIP_BUILD  set to 1 to use existing release binaries
#   KEEP        set to 1 to keep the work directory (logs, JSON)
# Binaries come from ${CARGO_TARGET_DIR:-target}/release.
#
# Our broker runs with a configuration that raises the queue limits (so a
# closed-loop run measures throughput, not the default 1000-message queue)
# and publishes $SYS every second, whose publish/messages/dropped counter is
# read after each run. Mosquitto runs with its defaults except for a 1 s
# $SYS interval (read the same way), rumqttd with its sample configuration's
# values.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
DRAIN=${DRAIN:-30}
DRAIN_IDLE=${DRAIN_IDLE:-2}
IDLE_CONNS=${IDLE_CONNS:-19000}
IDLE_HOLD=${IDLE_HOLD:-2}
STORM_CONNS=${STORM_CONNS:-19000}
STORM_CONCURRENCY=${STORM_CONCURRENCY:-512}
FANOUT_WIDE=${FANOUT_WIDE:-1000}
FANOUT_WIDE_RATE=${FANOUT_WIDE_RATE:-2000}
BROKERS=${BROKERS:-ours mosquitto rumqttd forwarder}
BIN=${CARGO_TARGET_DIR:-target}/release

command -v jq >/dev/null || { echo "compare.sh needs jq" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet -p mqtt-broker -p mqtt-benches --bins
fi

# 19,000 idle clients need 19,000 descriptors in the generator and as many
# in the broker: each process gets the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
most_conns=$((IDLE_CONNS > STORM_CONNS ? IDLE_CONNS : STORM_CONNS))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((most_conns + 200)) ]; then
    echo "warning: ulimit -n is $(ulimit -n); the idle and storm scenarios may run out of descriptors" >&2
fi

WORK=$(mktemp -d /tmp/mqtt-compare.XXXXXX)
BPID=""
cleanup() {
    if [ -n "$BPID" ]; then kill "$BPID" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Columns actually available.
available=()
for b in $BROKERS; do
    case $b in
        mosquitto | rumqttd)
            if command -v "$b" >/dev/null; then available+=("$b"); else echo "($b not installed: skipped)" >&2; fi ;;
        *) available+=("$b") ;;
    esac
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port below the ephemeral range, so that no client socket (of this run,
# the one before, or anything else on the machine) can hold it.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local p span=$((EPHEMERAL_LOW - 10000))
    [ "$span" -gt 1000 ] || span=20000
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % span))
        if ! port_open "$p"; then echo "$p"; return 0; fi
    done
    echo "no free port" >&2
    return 1
}

# start_broker NAME: starts it on a fresh port (three tries); sets PORT
# and BPID.
start_broker() {
    local try
    for try in 1 2 3; do
        if start_broker_once "$1"; then return 0; fi
        stop_broker
        echo "($1: try $try failed)" >&2
    done
    return 1
}

start_broker_once() {
    local name=$1
    PORT=$(free_port)
    case $name in
        ours | ours-1t | ours-2t)
            cat >"$WORK/ours.toml" <<EOF
listeners = [{ bind = "127.0.0.1:$PORT", allow_anonymous = true }]
max_queued_messages = 1000000
max_queued_bytes = 1073741824
sys_interval_secs = 1
EOF
            local threads=()
            case $name in ours-1t) threads=(--threads 1) ;; ours-2t) threads=(--threads 2) ;; esac
            "$BIN/mqtt-broker" -c "$WORK/ours.toml" "${threads[@]}" >>"$WORK/$name.log" 2>&1 &
            ;;
        mosquitto)
            # Its defaults, except $SYS every second so that its dropped
            # counter can be read after the run.
            cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
sys_interval 1
EOF
            mosquitto -c "$WORK/mosquitto.conf" >>"$WORK/$name.log" 2>&1 &
            ;;
        rumqttd)
            cat >"$WORK/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$PORT"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF
            rumqttd -c "$WORK/rumqttd.toml" >>"$WORK/$name.log" 2>&1 &
            ;;
        forwarder)
            "$BIN/forwarder" -p "$PORT" >>"$WORK/$name.log" 2>&1 &
            ;;
        *) echo "unknown broker $name" >&2; return 1 ;;
    esac
    BPID=$!
    for _ in $(seq 200); do
        if port_open "$PORT"; then return 0; fi
        if ! kill -0 "$BPID" 2>/dev/null; then break; fi
        sleep 0.05
    done
    echo "$name did not start on port $PORT; log:" >&2
    tail -3 "$WORK/$name.log" >&2
    return 1
}

stop_broker() {
    if [ -n "$BPID" ]; then
        kill "$BPID" 2>/dev/null || true
        wait "$BPID" 2>/dev/null || true
        BPID=""
    fi
}

# Scenarios: id | label | mqtt-bench arguments.
SCENARIOS=(
    "q0_1to1|QoS 0, 1 → 1, closed loop: delivered msg/s|pairs --clients 1 --qos 0"
    "q1_pairs|QoS 1, 4 pairs, window 64: delivered msg/s|pairs --clients 4 --qos 1 --window 64"
    "q2_pairs|QoS 2, 4 pairs, window 64: delivered msg/s|pairs --clients 4 --qos 2 --window 64"
    "q0_fanout|QoS 0 fan-out 1 → 16, closed loop: delivered msg/s|fan-out --clients 16 --qos 0"
    "q0_fanout_wide|QoS 0 fan-out 1 → $FANOUT_WIDE at $FANOUT_WIDE_RATE msg/s: delivered msg/s|fan-out --clients $FANOUT_WIDE --qos 0 --rate $FANOUT_WIDE_RATE"
    "q0_latency|QoS 0, 4 pairs at 5,000 msg/s each: p50 / p99 ms|pairs --clients 4 --qos 0 --rate 5000"
    "idle|$IDLE_CONNS idle connections: broker memory per connection|idle --clients $IDLE_CONNS"
    "storm|storm of $STORM_CONNS clients: connect / subscribe / disconnect, s|storm --clients $STORM_CONNS --connect-concurrency $STORM_CONCURRENCY"
)

# run_one BROKER ID ARGS...: result in $WORK/BROKER.ID.json ({} on failure).
run_one() {
    local broker=$1 id=$2
    shift 2
    local out="$WORK/$broker.$id.json" extra=()
    case $broker in ours* | mosquitto) extra=(--sys-dropped) ;; esac
    local time_args=(--duration "$DURATION" --drain "$DRAIN" --drain-idle "$DRAIN_IDLE")
    case $id in
        idle) time_args=(--duration "$IDLE_HOLD") ;;
        storm) time_args=() extra=() ;;
    esac
    echo "== $id on $broker (port $PORT)" >&2
    if ! "$BIN/mqtt-bench" "$@" --port "$PORT" --broker-pid "$BPID" "${time_args[@]}" \
        --json --quiet "${extra[@]}" >"$out" 2>"$WORK/$broker.$id.err"; then
        echo "   failed: $(tail -1 "$WORK/$broker.$id.err")" >&2
        echo '{}' >"$out"
    fi
    jq -c 'if .scenario == "idle" then {connected, mem_per_conn_bytes, first_error}
           elif .scenario == "storm" then {connect_s, subscribe_s, disconnect_s, connect_failed,
                 subscribe_failed, disconnect_failed, first_error}
           else {sent_per_s, delivered_per_s, lost, duplicates, p50_ms, p99_ms, broker_cpu_pct,
                 generator_cpu_pct, broker_dropped, first_error} end' "$out" >&2 || true
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r id _label args <<<"$s"
    for b in "${available[@]}"; do
        start_broker "$b" || { echo '{}' >"$WORK/$b.$id.json"; continue; }
        # shellcheck disable=SC2086 # the arguments are words
        run_one "$b" "$id" $args
        stop_broker
    done
done
# Worker threads of our broker on QoS 0, 4 pairs, closed loop.
for b in ours-1t ours-2t; do
    start_broker "$b" || { echo '{}' >"$WORK/$b.workers.json"; continue; }
    run_one "$b" workers pairs --clients 4 --qos 0
    stop_broker
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

# ---- the table -------------------------------------------------------------

get() { jq -r "$2 // empty" "$WORK/$1" 2>/dev/null || true; }
thousands() { LC_ALL=C printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

# cell BROKER ID: what the table shows for that run.
cell() {
    local f="$1.$2.json" v lost
    if [ "$2" = idle ]; then
        v=$(get "$f" .mem_per_conn_bytes)
        [ -n "$v" ] || { echo "failed"; return; }
        local n c
        n=$(get "$f" .connections)
        c=$(get "$f" .connected)
        if awk "BEGIN{exit !($v >= 1024)}"; then
            printf '%.1f KB' "$(awk "BEGIN{print $v/1024}")"
        else
            printf '%.0f B' "$v"
        fi
        [ "$c" = "$n" ] || printf ' (%s of %s connected)' "$c" "$n"
        echo
        return
    fi
    if [ "$2" = storm ]; then
        v=$(get "$f" .connect_s)
        [ -n "$v" ] || { echo "failed"; return; }
        printf '%.2f / %.2f / %.2f' "$v" "$(get "$f" .subscribe_s)" "$(get "$f" .disconnect_s)"
        local failed
        failed=$(jq -r '(.connect_failed // 0) + (.subscribe_failed // 0) + (.disconnect_failed // 0)' "$WORK/$f")
        [ "$failed" = 0 ] || printf ' (%s failed)' "$failed"
        echo
        return
    fi
    if [ "$2" = q0_latency ]; then
        v=$(get "$f" .p50_ms)
        [ -n "$v" ] || { echo "failed"; return; }
        printf '%.2f / %.2f' "$v" "$(get "$f" .p99_ms)"
    else
        v=$(get "$f" .delivered_per_s)
        [ -n "$v" ] || { echo "failed"; return; }
        thousands "$v"
    fi
    lost=$(get "$f" .lost)
    if [ -n "$lost" ] && [ "$lost" != 0 ]; then printf ' (lost %s)' "$(thousands "$lost")"; fi
    local dups
    dups=$(get "$f" .duplicates)
    if [ -n "$dups" ] && [ "$dups" != 0 ]; then printf ' (dup %s)' "$(thousands "$dups")"; fi
    echo
}

# The number a ratio uses: throughput, p99 latency, or memory per connection.
metric() {
    case $2 in
        idle) get "$1.$2.json" .mem_per_conn_bytes ;;
        storm) get "$1.$2.json" .total_s ;;
        q0_latency) get "$1.$2.json" .p99_ms ;;
        *) get "$1.$2.json" .delivered_per_s ;;
    esac
}

ratio() {
    local a b
    a=$(metric ours "$2")
    b=$(metric "$1" "$2")
    if [ -z "$a" ] || [ -z "$b" ] || awk "BEGIN{exit !($b == 0)}"; then echo "-"; return; fi
    awk "BEGIN{r = $a / $b; printf (r < 0.1 ? \"%.3f\" : \"%.2f\"), r}"
}

has() { local x; for x in "${available[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }

{
    echo "Run $started on $(nproc) cores, ${DURATION} s per scenario (idle: ${IDLE_CONNS} connections held ${IDLE_HOLD} s);"
    echo "load average $load_start at the start, $load_end at the end."
    echo
    header="| scenario |"
    sep="|---|"
    for b in "${available[@]}"; do
        case $b in forwarder) header+=" forwarder (ceiling) |" ;; *) header+=" $b |" ;; esac
        sep+="---|"
    done
    for r in mosquitto rumqttd forwarder; do
        if has "$r" && has ours; then
            case $r in forwarder) header+=" ours/ceiling |" ;; *) header+=" ours/$r |" ;; esac
            sep+="---|"
        fi
    done
    echo "$header"
    echo "$sep"
    for s in "${SCENARIOS[@]}"; do
        IFS='|' read -r id label _args <<<"$s"
        row="| $label |"
        for b in "${available[@]}"; do row+=" $(cell "$b" "$id") |"; done
        for r in mosquitto rumqttd forwarder; do
            if has "$r" && has ours; then row+=" $(ratio "$r" "$id") |"; fi
        done
        echo "$row"
    done
    echo
    echo "Ratios: delivered msg/s for throughput rows (higher is better for us), p99 for the"
    echo "latency row, bytes per connection for the idle row and the total of the three phases"
    echo "for the storm row (lower is better for us)."
    echo
    echo "Worker threads of our broker, QoS 0, 4 pairs, closed loop:"
    echo
    echo "| worker threads | delivered msg/s | broker CPU % | lost |"
    echo "|---|---|---|---|"
    for b in ours-1t ours-2t; do
        f="$b.workers.json"
        v=$(get "$f" .delivered_per_s)
        printf '| %s | %s | %s | %s |\n' "${b:5:1}" "$([ -n "$v" ] && thousands "$v" || echo failed)" \
            "$(get "$f" .broker_cpu_pct)" "$(get "$f" .lost)"
    done
    echo
    echo "Details (every run): sent and delivered msg/s, loss, duplicates, latency, the broker's"
    echo "CPU (percent of one core, over the publishing phase) and RSS under load, the"
    echo "generator's own CPU, and \$SYS/broker/publish/messages/dropped after the run (ours and"
    echo "Mosquitto). \"drained\": every delivery had arrived before the drain period ended. Lost"
    echo "messages \"in gaps\" are missing below the highest sequence number received (dropped);"
    echo "\"at the tail\" are after it (the stream stopped or was still queued)."
    echo
    echo "| scenario | broker | sent/s | delivered/s | lost | dup | p50 ms | p99 ms | max ms | broker CPU % | broker RSS MB | generator CPU % | \$SYS dropped | drained | error |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for s in "${SCENARIOS[@]}" "workers||"; do
        IFS='|' read -r id _label _args <<<"$s"
        case $id in idle | storm) continue ;; esac
        for b in "${available[@]}" ours-1t ours-2t; do
            f="$WORK/$b.$id.json"
            [ -f "$f" ] || continue
            jq -r --arg id "$id" --arg b "$b" '
              def n: if . == null then "-" else (. * 100 | round / 100 | tostring) end;
              "| \($id) | \($b) | \(.sent_per_s | if . then round else "-" end) | \(.delivered_per_s | if . then round else "-" end) | \(.lost // "-")\(if (.lost // 0) > 0 then " (\(.lost_in_gaps) in gaps, \(.lost_at_tail) at the tail)" else "" end) | \(.duplicates // "-") | \(.p50_ms | n) | \(.p99_ms | n) | \(.max_ms | n) | \(.broker_cpu_pct | n) | \(if .broker_rss_kb_load then (.broker_rss_kb_load / 1024 | round) else "-" end) | \(.generator_cpu_pct | n) | \(.broker_dropped // "-") | \(.drained | if . == null then "-" else tostring end) | \(.first_error // "") |"' "$f"
        done
    done
    echo
    echo "| idle | broker | connected | connect s | RSS before MB | RSS connected MB | bytes per connection | error |"
    echo "|---|---|---|---|---|---|---|---|"
    for b in "${available[@]}"; do
        f="$WORK/$b.idle.json"
        [ -f "$f" ] || continue
        jq -r --arg b "$b" '
          "| idle | \($b) | \(.connected // "-") | \(.connect_s // "-") | \(if .broker_rss_kb_before then (.broker_rss_kb_before / 1024 | round) else "-" end) | \(if .broker_rss_kb_connected then (.broker_rss_kb_connected / 1024 | round) else "-" end) | \(.mem_per_conn_bytes // "-" | if type == "number" then round else . end) | \(.first_error // "") |"' "$f"
    done
    echo
    echo "| storm | broker | clients | connect s | connects/s | connect p99 ms | subscribe s | subscribe p99 ms | disconnect s | failed (c/s/d) | RSS subscribed MB | RSS after MB | error |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for b in "${available[@]}"; do
        f="$WORK/$b.storm.json"
        [ -f "$f" ] || continue
        jq -r --arg b "$b" '
          def n: if . == null then "-" else (. * 100 | round / 100 | tostring) end;
          def mb: if . then (. / 1024 | round) else "-" end;
          "| storm | \($b) | \(.clients // "-") | \(.connect_s | n) | \(.connects_per_s | if . then round else "-" end) | \(.connect_p99_ms | n) | \(.subscribe_s | n) | \(.subscribe_p99_ms | n) | \(.disconnect_s | n) | \(.connect_failed // "-")/\(.subscribe_failed // "-")/\(.disconnect_failed // "-") | \(.broker_rss_kb_subscribed | mb) | \(.broker_rss_kb_end | mb) | \(.first_error // "") |"' "$f"
    done
}
