#!/usr/bin/env bash
# The Debian package: built with `cargo deb`, its systemd unit checked with
# `systemd-analyze verify`, installed with `dpkg -i`, the installed binary
# started with the installed configuration as the unit would start it (its
# user, its state directory, its file limit; there is no running systemd
# here), MQTT spoken to it, SIGHUP, then `dpkg -r` and `dpkg -P` leaving
# nothing behind.
#
#   bash .ci/interop/deb_test.sh
#
# Installs what it needs (cargo-deb, systemd for systemd-analyze, adduser,
# the Mosquitto clients). Needs root (dpkg). One PASS or FAIL line per
# check; the last line is "N passed, M failed"; non-zero exit on failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/.ci/lib.sh"
export PATH="$PATH:/usr/sbin:/usr/bin:$HOME/.cargo/bin"

need_apt systemd adduser mosquitto-clients procps || { echo "cannot install the tools" >&2; exit 2; }
if ! command -v cargo-deb >/dev/null; then
    echo "installing cargo-deb"
    cargo install cargo-deb --locked || { echo "cannot install cargo-deb" >&2; exit 2; }
fi
if dpkg-query -W -f='${Status}' mqtt-broker 2>/dev/null | grep -q "installed"; then
    echo "mqtt-broker is already installed on this machine; not touching it" >&2
    exit 2
fi

WORK="$(mktemp -d)"
BROKER_PID=""
cleanup() {
    stop_pid "$BROKER_PID"
    if dpkg-query -W -f='${Status}' mqtt-broker 2>/dev/null | grep -qv "not-installed"; then
        as_root dpkg -P mqtt-broker >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
check() { # NAME COMMAND...
    local name="$1"; shift
    if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

# --- build ---------------------------------------------------------------------
(cd "$ROOT" && cargo build --release -p mqtt-client --all-features --bins) || exit 2
(cd "$ROOT" && cargo deb -p mqtt-broker --output "$WORK/mqtt-broker.deb") || exit 2
DEB="$WORK/mqtt-broker.deb"
dpkg-deb -c "$DEB" >"$WORK/contents"
check "the package holds the broker" grep -q ' ./usr/bin/mqtt-broker$' "$WORK/contents"
check "the package holds the mqtt client" grep -q ' ./usr/bin/mqtt$' "$WORK/contents"
check "the package holds the configuration" grep -q ' ./etc/mqtt-broker/mqtt-broker.toml$' "$WORK/contents"
check "the package holds the systemd unit" grep -Eq ' ./(usr/)?lib/systemd/system/mqtt-broker.service$' "$WORK/contents"
check "the configuration is a conffile" sh -c "dpkg-deb -I '$DEB' conffiles | grep -qx /etc/mqtt-broker/mqtt-broker.toml"

# --- install -------------------------------------------------------------------
as_root dpkg -i "$DEB" >"$WORK/dpkg-i.log" 2>&1
check "dpkg -i installs it" test "$?" -eq 0 || cat "$WORK/dpkg-i.log"
UNIT="$(ls /lib/systemd/system/mqtt-broker.service /usr/lib/systemd/system/mqtt-broker.service 2>/dev/null | head -1)"
check "the unit is installed" test -n "$UNIT"
check "the service user exists" sh -c 'getent passwd mqtt-broker >/dev/null'
check "/var/lib/mqtt-broker belongs to it" test "$(stat -c %U:%a /var/lib/mqtt-broker 2>/dev/null)" = mqtt-broker:750
systemd-analyze verify "$UNIT" >"$WORK/verify.log" 2>&1
check "systemd-analyze verify accepts the unit" test "$?" -eq 0 || cat "$WORK/verify.log"
for key in "User=mqtt-broker" "StateDirectory=mqtt-broker" "LimitNOFILE=65536" \
    'ExecReload=/bin/kill -HUP $MAINPID' "NoNewPrivileges=yes" "ProtectSystem=strict"; do
    check "the unit sets $key" grep -qxF "$key" "$UNIT"
done
check "the installed configuration checks" sh -c '/usr/bin/mqtt-broker --check -c /etc/mqtt-broker/mqtt-broker.toml >/dev/null'

# --- run as the unit would ----------------------------------------------------------
# ExecStart with User=, WorkingDirectory= and LimitNOFILE= of the unit; -p
# moves the listener to a free port (1883 may be taken on this machine).
PORT="$(free_port)"
# (A container's hard limit may be lower than the unit's 65536: take what
# is allowed.)
NOFILE="$(ulimit -Hn)"
[ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 65536 ] && NOFILE=65536
(cd /var/lib/mqtt-broker && ulimit -n "$NOFILE" &&
    exec runuser -u mqtt-broker -- /usr/bin/mqtt-broker -c /etc/mqtt-broker/mqtt-broker.toml -p "$PORT") \
    </dev/null >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
wait_port "$PORT" "$BROKER_PID" 20
check "the installed broker listens" test "$?" -eq 0 || cat "$WORK/broker.log"
timeout 10 mosquitto_pub -p "$PORT" -t deb/test -m kept -q 1 -r
check "a retained QoS 1 message is accepted" test "$?" -eq 0
check "it is read back" test "$(timeout 10 mosquitto_sub -p "$PORT" -t deb/test -C 1 -W 5)" = kept
check "the store is in /var/lib/mqtt-broker, the user's" test "$(stat -c %U /var/lib/mqtt-broker/broker.db 2>/dev/null)" = mqtt-broker
# runuser may stay as the parent: the broker is the mqtt-broker process
# running as that user.
SERVICE_PID="$(pgrep -x -u mqtt-broker mqtt-broker | head -1)"
check "the service runs as mqtt-broker" test -n "$SERVICE_PID"
[ -n "$SERVICE_PID" ] && kill -HUP "$SERVICE_PID"
for _ in $(seq 50); do grep -q "SIGHUP" "$WORK/broker.log" && break; sleep 0.1; done
check "SIGHUP reloads (systemctl reload)" grep -q "SIGHUP: reloading" "$WORK/broker.log"
check "and it still serves" test "$(timeout 10 mosquitto_sub -p "$PORT" -t deb/test -C 1 -W 5)" = kept
check "the mqtt client runs" sh -c '/usr/bin/mqtt pub --help >/dev/null'
stop_pid "$BROKER_PID"
BROKER_PID=""

# --- remove and purge ---------------------------------------------------------------
as_root dpkg -r mqtt-broker >"$WORK/dpkg-r.log" 2>&1
check "dpkg -r removes it" test "$?" -eq 0 || cat "$WORK/dpkg-r.log"
check "the binaries are gone" test ! -e /usr/bin/mqtt-broker -a ! -e /usr/bin/mqtt
check "the configuration stays until purge" test -f /etc/mqtt-broker/mqtt-broker.toml
as_root dpkg -P mqtt-broker >"$WORK/dpkg-p.log" 2>&1
check "dpkg -P purges it" test "$?" -eq 0 || cat "$WORK/dpkg-p.log"
check "/etc/mqtt-broker is gone" test ! -e /etc/mqtt-broker
check "/var/lib/mqtt-broker is gone" test ! -e /var/lib/mqtt-broker
check "the user is gone" sh -c '! getent passwd mqtt-broker'
check "dpkg knows it no more" sh -c "! dpkg-query -W -f='\${Status}' mqtt-broker 2>/dev/null | grep -q ' installed'"

if [ "$failed" -ne 0 ]; then echo "--- broker log"; tail -20 "$WORK/broker.log"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
