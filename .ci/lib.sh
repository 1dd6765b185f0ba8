# Helpers shared by the .ci/interop/*.sh scripts. Source it:
#
#   . "$(dirname "$0")/../lib.sh"
#
# CI starts on a fresh machine, so each script installs what it needs itself
# (through these helpers, which do nothing when the thing is already there),
# starts the servers it needs on loopback, and stops them on exit. A missing
# tool that cannot be installed is a failure (exit 2), never a skip.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -n "$@"
    else
        echo "need root to run: $*" >&2
        return 1
    fi
}

_ci_apt_updated=""
# need_apt PACKAGE...: install the Debian packages that are not installed yet.
need_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "installing ${missing[*]}"
    if [ -z "$_ci_apt_updated" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 2
        _ci_apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" || return 2
}

# need_pip IMPORT_NAME REQUIREMENT: pip-install REQUIREMENT unless python3
# can already import IMPORT_NAME.
need_pip() {
    python3 -c "import $1" 2>/dev/null && return 0
    echo "installing $2"
    python3 -m pip install -q "$2" ||
        python3 -m pip install -q --user --break-system-packages "$2" || return 2
}

# need_npm DIR PACKAGE...: npm-install the packages into DIR/node_modules.
need_npm() {
    local dir="$1"
    shift
    command -v npm >/dev/null || need_apt nodejs npm || return 2
    mkdir -p "$dir"
    (cd "$dir" && { [ -f package.json ] || echo '{"private":true}' >package.json; } &&
        npm install --no-audit --no-fund --silent "$@") || return 2
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT [PID] [SECONDS]: wait until 127.0.0.1:PORT accepts
# connections; fail early if process PID exits. Default 10 s.
wait_port() {
    local port="$1" pid="${2:-}" secs="${3:-10}" i
    for ((i = 0; i < secs * 20; i++)); do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# stop_pid PID: SIGTERM, up to 5 s for it to exit, then SIGKILL.
stop_pid() {
    local pid="$1" i
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# start_nats_cluster NAME: three clustered nats-servers with JetStream on
# free loopback ports, stores and logs under $WORK, named NAME. Sets
# CLIENT_PORTS, ROUTE_PORTS and NATS_PIDS (each pid also goes into PIDS, for
# the script's cleanup). Returns 1, with the log on stderr, if one does not
# start. Uses $NATS_SERVER if set.
start_nats_cluster() {
    local i
    NATS_CLUSTER_NAME="$1"
    CLIENT_PORTS=()
    ROUTE_PORTS=()
    NATS_PIDS=()
    for i in 0 1 2; do
        CLIENT_PORTS+=("$(free_port)")
        ROUTE_PORTS+=("$(free_port)")
    done
    for i in 0 1 2; do start_nats "$i"; done
    for i in 0 1 2; do
        if ! wait_port "${CLIENT_PORTS[$i]}" "${NATS_PIDS[$i]}" 20; then
            echo "nats-server $i did not start:" >&2
            cat "$WORK/nats$i.log" >&2
            return 1
        fi
    done
}

# start_nats I: (re)starts server I of start_nats_cluster's cluster, on its
# port and store.
start_nats() {
    local i="$1" routes="" j
    for j in 0 1 2; do
        [ "$j" = "$i" ] || routes="$routes,nats://127.0.0.1:${ROUTE_PORTS[$j]}"
    done
    mkdir -p "$WORK/nats$i"
    "${NATS_SERVER:-nats-server}" -js -sd "$WORK/nats$i" -n "n$i" -a 127.0.0.1 -p "${CLIENT_PORTS[$i]}" \
        --cluster_name "$NATS_CLUSTER_NAME" --cluster "nats://127.0.0.1:${ROUTE_PORTS[$i]}" \
        --routes "${routes#,}" >>"$WORK/nats$i.log" 2>&1 &
    NATS_PIDS[$i]=$!
    PIDS+=("$!")
}
