#!/usr/bin/env python3
"""Runs docs/LECTURE.md: every snippet on the page, against our broker.

    python3 .ci/interop/lecture_test.py    (normally through lecture_test.sh)

Environment: MQTT_BROKER_BIN, MQTT_BIN (the `mqtt` tool), LECTURE_BIN (the
built `lecture` example of mqtt-client).

1. Every block after `<!-- snippet: PATH -->` is the file PATH exactly
   (Python, TOML) or a verbatim part of it (the Rust example), so the page
   shows the code that runs.
2. Every `<!-- cli: NAME -->` block is run with bash, `mqtt` and
   `mqtt-broker` being the built tools pointed at the test broker; every
   Python program and every Rust item is run too. Each lecture item gets a
   fresh broker in a fresh directory (its working directory), and the
   check is on what the programs print or write.
3. Fernet: every publisher (Python, mqtt, Rust) against every subscriber.

Prints one PASS or FAIL line per check and "N passed, M failed"; exits
non-zero on any failure. Every wait is bounded; subscribers are known to be
ready when the broker logs their SUBACK (the broker runs with -v).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LECTURE = os.path.join(ROOT, "docs", "LECTURE.md")
BROKER_BIN = os.environ["MQTT_BROKER_BIN"]
MQTT_BIN = os.environ["MQTT_BIN"]
LECTURE_BIN = os.environ["LECTURE_BIN"]
TIMEOUT = 30.0

passed = 0
failed = 0


def result(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)


class Failure(Exception):
    pass


# --- the page ------------------------------------------------------------------

def read_page():
    """(snippets, cli): [(path, lang, text)] and {name: text}."""
    text = open(LECTURE, encoding="utf-8").read()
    block = r"<!-- (snippet|cli): ([^ ]+) -->\n```(\w+)\n(.*?)```\n"
    snippets, cli = [], {}
    for kind, name, lang, body in re.findall(block, text, re.S):
        if kind == "snippet":
            snippets.append((name, lang, body))
        else:
            if name in cli:
                raise Failure(f"two cli blocks named {name}")
            cli[name] = body
    return snippets, cli


def check_snippets(snippets):
    for path, lang, body in snippets:
        full = os.path.join(ROOT, path)
        try:
            content = open(full, encoding="utf-8").read()
        except OSError as e:
            result(f"snippet {path} exists", False, str(e))
            continue
        if path.endswith(".rs"):
            ok = body in content
            first = body.splitlines()[0] if body else ""
            result(f"snippet `{first}` is verbatim in {path}", ok)
        else:
            result(f"snippet {path} is the file exactly", body == content)
    shown = {p for p, _, _ in snippets}
    for f in sorted(os.listdir(os.path.join(ROOT, "docs", "lecture"))):
        result(f"docs/lecture/{f} is shown on the page", f"docs/lecture/{f}" in shown)


# --- a broker per item ------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """A fresh broker (-v) in a fresh directory, which is also the working
    directory of everything the item runs."""

    def __init__(self, config=None):
        self.dir = tempfile.mkdtemp(prefix="lecture-")
        self.config = config
        self.proc = None
        self.port = free_port()

    def start(self):
        args = [BROKER_BIN, "-v", "-p", str(self.port)]
        if self.config:
            args += ["-c", self.config]
        self.log = open(os.path.join(self.dir, "broker.log"), "w+")
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failure("broker exited: " + self.log_text()[-500:])
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise Failure("broker not listening after 10 s")

    def log_text(self):
        with open(os.path.join(self.dir, "broker.log")) as f:
            return f.read()

    def subacks(self):
        return self.log_text().count("<- SUBACK")

    def wait_subacks(self, n, proc=None):
        deadline = time.time() + TIMEOUT
        while self.subacks() < n:
            if proc is not None and proc.poll() is not None:
                raise Failure(f"subscriber exited early: {proc.output()}")
            if time.time() > deadline:
                raise Failure(f"no SUBACK number {n} within {TIMEOUT} s")
            time.sleep(0.02)

    def env(self):
        e = dict(os.environ)
        e.update(BROKER="127.0.0.1", PORT=str(self.port), MQTT_BIN=MQTT_BIN, MQTT_BROKER_BIN=BROKER_BIN,
                 LECTURE_BROKER_LOG=os.path.join(self.dir, "broker.log"))
        return e

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


# What a cli block runs in: `mqtt` and `mqtt-broker` are the built tools
# against the test broker; `mqtt pub` first waits until every `mqtt sub`
# started before it in the block has its SUBACK (the lecture's "once the
# subscriber is up").
PRELUDE = r"""
set -e
wait_subacks() {
    local i
    for ((i = 0; i < 600; i++)); do
        [ "$(grep -c -- '<- SUBACK' "$LECTURE_BROKER_LOG")" -ge "${LECTURE_WANT:-0}" ] && return 0
        sleep 0.05
    done
    echo "subscriber not ready" >&2
    return 1
}
mqtt() {
    case "$1" in
        sub | pub)
            [ "$1" = pub ] && wait_subacks
            "$MQTT_BIN" "$1" -h "$BROKER" -p "$PORT" "${@:2}" ;;
        *) "$MQTT_BIN" "$@" ;;
    esac
}
mqtt-broker() { "$MQTT_BROKER_BIN" "$@"; }
"""


def with_waits(block):
    """The block with `LECTURE_WANT=N` before each `mqtt pub`: N is the
    number of `mqtt sub` started on the lines before it, whose SUBACKs the
    publisher waits for (the lecture's "once the subscriber is up")."""
    lines, subs = [], 0
    for line in block.splitlines():
        if line.lstrip().startswith("mqtt pub"):
            line = f"LECTURE_WANT={subs} {line}"
        subs += line.count("mqtt sub")
        lines.append(line)
    return "\n".join(lines) + "\n"


class Proc:
    """A command in its own process group, output to files."""

    def __init__(self, broker, argv, name):
        self.name = name
        self.out_path = os.path.join(broker.dir, f"{name}.out")
        self.err_path = os.path.join(broker.dir, f"{name}.err")
        self.p = subprocess.Popen(argv, cwd=broker.dir, env=broker.env(), stdin=subprocess.DEVNULL,
                                  stdout=open(self.out_path, "wb"), stderr=open(self.err_path, "wb"),
                                  start_new_session=True)

    def poll(self):
        return self.p.poll()

    def wait(self, timeout=TIMEOUT):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f"{self.name} did not finish within {timeout} s: {self.output()}")

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()

    def stdout(self):
        return open(self.out_path, "rb").read().decode("utf-8", "replace")

    def output(self):
        err = open(self.err_path, "rb").read().decode("utf-8", "replace")
        return f"stdout {self.stdout()[-400:]!r} stderr {err[-400:]!r}"

    def finish(self):
        code = self.wait()
        if code != 0:
            raise Failure(f"{self.name} exited {code}: {self.output()}")
        return self.stdout()


CLI = {}
USED_CLI = set()
USED_RUST = set()


def py(name):
    return ["python3", os.path.join(ROOT, "docs", "lecture", name)]


def cli(name):
    USED_CLI.add(name)
    return ["bash", "-c", PRELUDE + with_waits(CLI[name])]


def rs(item):
    USED_RUST.add(item)
    return [LECTURE_BIN, item]


def run(broker, argv, name):
    return Proc(broker, argv, name).finish()


def expect(text, wanted, what):
    if wanted not in text:
        raise Failure(f"{what}: expected {wanted!r} in {text!r}")


def item(name, body, config=None, setup=None):
    """Runs one check on a fresh broker; `setup` runs in its directory
    before the broker starts."""
    broker = Broker(config)
    try:
        if setup:
            setup(broker)
        broker.start()
        body(broker)
        result(name, True)
    except Failure as e:
        result(name, False, str(e))
    except Exception as e:  # noqa: BLE001 - report, go on with the next item
        result(name, False, f"{e!r}\n{traceback.format_exc()}")
    finally:
        broker.stop()


def sub_then_pub(sub_argv, pub_argv, wanted):
    """A subscriber started first, a publisher once it is subscribed."""

    def body(b):
        s = Proc(b, sub_argv, "sub")
        b.wait_subacks(1, s)
        run(b, pub_argv, "pub")
        expect(s.finish(), wanted, "subscriber output")

    return body


VARIANTS = ("python", "mqtt", "rust")


def main():
    snippets, cli_blocks = read_page()
    CLI.update(cli_blocks)
    check_snippets(snippets)

    # 1 + 2. publish, subscribe with on_message.
    subs = {"python": py("subscribe.py"), "mqtt": cli("subscribe"), "rust": rs("subscribe")}
    pubs = {"python": py("publish.py"), "mqtt": cli("publish"), "rust": rs("publish")}
    for v in VARIANTS:
        item(f"1+2 publish and subscribe ({v})", sub_then_pub(subs[v], pubs[v], "room_temp 22.5"))

    # 3. QoS levels.
    for v, argv in (("python", py("qos.py")), ("mqtt", cli("qos")), ("rust", rs("qos"))):
        def body(b, argv=argv):
            out = run(b, argv, "qos")
            for q in (0, 1, 2):
                expect(out, f"sent with QoS {q} -> received with QoS {q}", "QoS output")
        item(f"3 QoS levels ({v})", body)

    # 4. Retained: set, received by a late subscriber, cleared.
    for v, argv in (("python", py("retained.py")), ("mqtt", cli("retained")), ("rust", rs("retained"))):
        def body(b, argv=argv):
            out = run(b, argv, "retained")
            expect(out, "room_temp 22.5 retained: ", "retained output")
            # Cleared: a new subscriber gets nothing (proved by a 1 s wait).
            late = Proc(b, [MQTT_BIN, "sub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "room_temp",
                            "-C", "1", "-W", "1"], "late")
            if late.wait() != 27:
                raise Failure(f"retained message not cleared: {late.output()}")
        item(f"4 retained set and cleared ({v})", body)

    # 5. Will: killed without DISCONNECT, the broker publishes it.
    for v, argv in (("python", py("will.py")), ("mqtt", cli("will")), ("rust", rs("will"))):
        def body(b, argv=argv, v=v):
            watcher = Proc(b, [MQTT_BIN, "sub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "status/sensor1",
                               "-v", "-q", "1", "-C", "2" if v != "mqtt" else "1"], "watcher")
            b.wait_subacks(1, watcher)
            client = Proc(b, argv, "will-client")
            deadline = time.time() + TIMEOUT
            if v == "mqtt":
                b.wait_subacks(2, client)
            else:
                while "status/sensor1 online" not in watcher.stdout():
                    if time.time() > deadline or client.poll() is not None:
                        raise Failure(f"no 'online': {client.output()}")
                    time.sleep(0.02)
            client.kill()
            expect(watcher.finish(), "status/sensor1 offline", "watcher output")
        item(f"5 will published when the client is killed ({v})", body)

    # 6. Persistent session.
    for v, argv in (("python", py("persistent.py")), ("mqtt", cli("persistent")), ("rust", rs("persistent"))):
        def body(b, argv=argv):
            expect(run(b, argv, "persistent"), "while I was away: room_temp 21.0", "output")
        item(f"6 persistent session gets what was published while away ({v})", body)

    # 7 + 8. The Pi's configuration file, with the password file of 8.
    config = os.path.join(ROOT, "docs", "lecture", "pi-broker.toml")
    auth = {"python": py("auth.py"), "mqtt": cli("auth"), "rust": rs("auth")}
    for v in VARIANTS:
        def body(b, v=v):
            anon = Proc(b, [MQTT_BIN, "pub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "x", "-m", "y"], "anon")
            if anon.wait() != 5:
                raise Failure(f"anonymous client not refused with 5: {anon.output()}")
            s = Proc(b, [MQTT_BIN, "sub", "-h", "127.0.0.1", "-p", str(b.port), "-u", "alice", "-P", "secret",
                         "-t", "room_temp", "-C", "1", "-q", "1"], "sub")
            b.wait_subacks(1, s)
            run(b, auth[v], "auth")
            expect(s.finish(), "22.5", "subscriber output")
        # The password file first (setup), then the broker with the Pi's config.
        item(f"7+8 Pi config: password required, alice publishes ({v})", body, config=config,
             setup=lambda b: run(b, cli("passwd"), "passwd"))

    # 9. Fernet: every publisher against every subscriber.
    fsubs = {"python": py("fernet_subscribe.py"), "mqtt": cli("fernet-subscribe"), "rust": rs("fernet-subscribe")}
    fpubs = {"python": py("fernet_publish.py"), "mqtt": cli("fernet-publish"), "rust": rs("fernet-publish")}
    for pv in VARIANTS:
        for sv in VARIANTS:
            def body(b, pv=pv, sv=sv):
                run(b, cli("keygen"), "keygen")
                # What crosses the broker, seen by a subscriber without the key.
                spy = Proc(b, [MQTT_BIN, "sub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "secret/#",
                               "-C", "1", "-q", "1"], "spy")
                b.wait_subacks(1, spy)
                s = Proc(b, fsubs[sv], "sub")
                b.wait_subacks(2, s)
                run(b, fpubs[pv], "pub")
                expect(s.finish(), "secret/room_temp 22.5", "subscriber output")
                seen = spy.finish()
                if not seen.startswith("gAAAAA") or "22.5" in seen:
                    raise Failure(f"the broker relayed {seen!r}, not a Fernet token")
            item(f"9 Fernet: {pv} encrypts, {sv} decrypts", body)

    # 10. An image (3 MiB of random bytes) both ways.
    isubs = {"python": py("image_receive.py"), "mqtt": cli("image-receive"), "rust": rs("image-receive")}
    ipubs = {"python": py("image_send.py"), "mqtt": cli("image-send"), "rust": rs("image-send")}
    pairs = [(v, v) for v in VARIANTS] + [("python", "mqtt"), ("mqtt", "python"), ("rust", "python")]
    for pv, sv in pairs:
        def body(b, pv=pv, sv=sv):
            photo = os.urandom(3 * 1024 * 1024)
            with open(os.path.join(b.dir, "photo.jpg"), "wb") as f:
                f.write(photo)
            s = Proc(b, isubs[sv], "sub")
            b.wait_subacks(1, s)
            run(b, ipubs[pv], "pub")
            s.finish()
            with open(os.path.join(b.dir, "received.jpg"), "rb") as f:
                if f.read() != photo:
                    raise Failure("received.jpg differs from photo.jpg")
        item(f"10 image: {pv} sends, {sv} receives", body)

    # Nothing on the page goes unrun.
    for name in sorted(set(CLI) - USED_CLI):
        result(f"cli block {name} is run", False)
    rust_items = set(re.findall(r'^\s*"([a-z-]+)" => ', open(os.path.join(ROOT, "mqtt-client", "examples",
                                                                        "lecture.rs")).read(), re.M))
    for name in sorted(rust_items - USED_RUST):
        result(f"rust item {name} is run", False)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
