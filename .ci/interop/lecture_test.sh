#!/usr/bin/env bash
# docs/LECTURE.md, runnable (issue 14): every Python snippet (paho-mqtt,
# cryptography), every `mqtt` command block and every Rust item of
# mqtt-client/examples/lecture.rs runs against our broker, and the page is
# checked to show exactly that code. Fernet interop both ways is part of it:
# Python's Fernet + paho publish -> `mqtt sub --fernet-key-file` prints the
# plaintext, `mqtt pub --fernet-key-file` -> Python decrypts (and the Rust
# client with each).
#
#   bash .ci/interop/lecture_test.sh
#
# Self-contained: installs paho-mqtt and cryptography if missing, builds the
# release `mqtt` tool and the `lecture` example unless MQTT_BIN and
# LECTURE_BIN are set, and starts a fresh broker (MQTT_BROKER_BIN, or the
# release build) on a free port per lecture item. The harness,
# lecture_test.py, prints one PASS or FAIL line per check and
# "N passed, M failed".
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"
need_pip paho.mqtt 'paho-mqtt>=2' || { echo "cannot install paho-mqtt" >&2; exit 2; }
need_pip cryptography cryptography || { echo "cannot install cryptography" >&2; exit 2; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
export MQTT_BROKER_BIN="${MQTT_BROKER_BIN:-$TARGET/release/mqtt-broker}"
[ -x "$MQTT_BROKER_BIN" ] || (cd "$ROOT" && cargo build --quiet --release -p mqtt-broker) || exit 2
if [ -z "${MQTT_BIN:-}" ] || [ -z "${LECTURE_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --quiet --release -p mqtt-client --bin mqtt --example lecture) || exit 2
    MQTT_BIN="${MQTT_BIN:-$TARGET/release/mqtt}"
    LECTURE_BIN="${LECTURE_BIN:-$TARGET/release/examples/lecture}"
fi
export MQTT_BIN LECTURE_BIN
timeout 600 python3 "$ROOT/.ci/interop/lecture_test.py"
