#!/usr/bin/env bash
# Instructions per operation for every benchmark of benches/codec.rs, counted
# by callgrind: a figure that, unlike the criterion times, does not move when
# other processes load the machine. Each benchmark runs for a second under
# `valgrind --tool=callgrind`, collecting only inside the codec's top-level
# function (mqtt-codec `decode` / `Packet::encode`, rumqttc `Packet::read` /
# `Packet::write`), so criterion's setup (rumqttc's input copies) and the
# dropping of results are not counted; allocations made inside are.
#
# Usage: benches/instructions.sh [regex]   (needs valgrind; prints Markdown)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
filter="${1:-.}"

bin=$(cargo bench -p mqtt-benches --bench codec --no-run --message-format=json 2>/dev/null |
    grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "could not build the codec bench" >&2; exit 1; }

# Total Ir collected, and calls into `target` from outside it.
per_call() {
    awk -v target="$2" '
        function name(tok,   id) {
            id = tok; sub(/\).*/, "", id); sub(/^\(/, "", id)
            if (tok ~ /\) /) { n = tok; sub(/^\([0-9]+\) /, "", n); names[id] = n }
            return names[id]
        }
        /^fn=/     { cur = name(substr($0, 4)); next }
        /^cfn=/    { cfn = name(substr($0, 5)); next }
        /^calls=/  { if (cfn == target && cur != target) { split(substr($0, 7), c, " "); calls += c[1] } next }
        /^(summary|totals):/ { total = $2 }
        END { if (calls > 0) printf "%d\n", total / calls; else print "?" }
    ' "$1"
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "| benchmark | mqtt-codec | rumqttc | ratio (rumqttc / mqtt-codec) |"
echo "|---|---:|---:|---:|"
"$bin" --bench --list 2>/dev/null | sed -n 's/: benchmark$//p' | grep -E "$filter" |
    sed 's#/\(mqtt-codec\|rumqttc\)$##' | awk '!seen[$0]++' | while read -r group; do
    declare -A ir=()
    for impl in mqtt-codec rumqttc; do
        case "$group/$impl" in
        decode/*/mqtt-codec) fn='mqtt_codec::packet::decode' ;;
        encode/*/mqtt-codec) fn='mqtt_codec::packet::Packet::encode' ;;
        decode/v5/*) fn='rumqttc::v5::mqttbytes::v5::Packet::read' ;;
        encode/v5/*) fn='rumqttc::v5::mqttbytes::v5::Packet::write' ;;
        decode/*) fn='rumqttc::mqttbytes::v4::Packet::read' ;;
        encode/*) fn='rumqttc::mqttbytes::v4::Packet::write' ;;
        esac
        valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect="$fn" \
            "$bin" --bench --profile-time 1 "^$group/$impl\$" >/dev/null 2>&1
        ir[$impl]=$(per_call "$out" "$fn")
    done
    ratio=$(awk -v a="${ir[mqtt-codec]}" -v b="${ir[rumqttc]}" 'BEGIN { printf "%.2fx", b / a }')
    echo "| $group | ${ir[mqtt-codec]} | ${ir[rumqttc]} | $ratio |"
done
