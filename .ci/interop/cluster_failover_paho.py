"""A node dies (issue 18): wills, delayed wills, cancelled wills and
persistent sessions of a SIGKILLed node's clients, on a live 3-node cluster.

Run by cluster_failover_test.sh, which starts three nats-servers and three
release brokers (node A, B, C) with short heartbeat_ms / node_timeout_ms:

    python3 cluster_failover_paho.py PORT_A PORT_B PORT_C PID_A HEARTBEAT_MS TIMEOUT_MS

MQTT 5.0 sections 3.1.2.5 (Will Flag), 3.1.3.2.2 (Will Delay Interval),
3.1.2.11.2 (Session Expiry Interval), 3.2.2.1.1 (Session Present).
Prints PASS/FAIL per rule, then "N passed, M failed".
"""

import os
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PORT_A, PORT_B, PORT_C, PID_A = (int(a) for a in sys.argv[1:5])
HEARTBEAT = int(sys.argv[5]) / 1000.0
TIMEOUT = int(sys.argv[6]) / 1000.0
# The documented bound from a kill to its wills: node_timeout_ms + one
# heartbeat + the publish; SLACK covers the JetStream round trips and a
# busy 2-core CI machine.
SLACK = 2.0
BOUND = TIMEOUT + HEARTBEAT + SLACK
DELAY = 3  # Will Delay Interval of the delayed will, seconds
CANCEL_DELAY = 4

passed = 0
failed = 0


def check(ok, rule, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {rule}", flush=True)
    else:
        failed += 1
        print(f"FAIL {rule} {detail}", flush=True)


class Client:
    """A paho client whose CONNACK, SUBACK and messages can be awaited."""

    def __init__(self, cid, port, v5=True, clean=True, expiry=None, will=None, will_delay=None):
        self.cid = cid
        self.connack = threading.Event()
        self.suback = threading.Event()
        self.session_present = None
        self.reason = None
        self.disconnected = threading.Event()
        self.messages = []  # (monotonic time, topic, payload)
        self.lock = threading.Lock()
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto,
                             **({} if v5 else {"clean_session": clean}))
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.suback.set()
        self.c.on_message = self._on_message
        self.c.on_disconnect = lambda *a: self.disconnected.set()
        if will:
            props = None
            if will_delay is not None:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.WillDelayInterval = will_delay
            self.c.will_set(will[0], will[1], qos=1, properties=props)
        kwargs = {}
        if v5:
            kwargs["clean_start"] = clean
            if expiry is not None:
                p = Properties(PacketTypes.CONNECT)
                p.SessionExpiryInterval = expiry
                kwargs["properties"] = p
        self.c.connect("127.0.0.1", port, keepalive=60, **kwargs)
        self.c.loop_start()

    def _on_connect(self, _c, _u, flags, reason, _p):
        self.session_present = flags.session_present
        self.reason = reason
        self.connack.set()

    def _on_message(self, _c, _u, msg):
        with self.lock:
            self.messages.append((time.monotonic(), msg.topic, msg.payload.decode(errors="replace")))

    def wait_connected(self, secs=10):
        return self.connack.wait(secs) and not self.reason.is_failure

    def subscribe(self, topic, secs=10):
        self.suback.clear()
        self.c.subscribe(topic, qos=1)
        return self.suback.wait(secs)

    def got(self, topic):
        with self.lock:
            return [m for m in self.messages if m[1] == topic]

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()


def wait_until(pred, secs):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def main():
    # Subscribers to the wills on the two surviving nodes.
    sub_b = Client("fo-sub-b", PORT_B)
    sub_c = Client("fo-sub-c", PORT_C)
    ok = sub_b.wait_connected() and sub_c.wait_connected()
    ok = ok and sub_b.subscribe("fo/will/#") and sub_c.subscribe("fo/will/#")
    check(ok, "will subscribers connected on nodes B and C")
    if not ok:
        return

    normal = Client("fo-normal", PORT_A, will=("fo/will/normal", "never"))
    paused = Client("fo-paused", PORT_A, will=("fo/will/paused", "cut off"))
    ok = normal.wait_connected() and paused.wait_connected()
    check(ok, "clients with wills connected on node A")
    if not ok:
        return

    # [MQTT-3.1.2-10] A normal DISCONNECT (0x00) deletes the will: it must
    # not be published by anyone when node A dies later.
    normal.close()
    time.sleep(0.5)

    # --- Node A cut off (SIGSTOP) for longer than node_timeout_ms ---------
    # B and C declare it dead and publish the wills of its clients; then it
    # comes back, finds its clients still connected and writes their
    # records and wills again, so they are covered when it really dies.
    os.kill(PID_A, signal.SIGSTOP)
    stopped = time.monotonic()
    got_paused = wait_until(lambda: sub_b.got("fo/will/paused"), BOUND + 1)
    check(got_paused, "node A cut off for longer than node_timeout_ms is declared dead: will published",
          f"(within {BOUND + 1:.1f} s)")
    # Cut off well past the timeout, as from the others' side.
    time.sleep(max(0.0, stopped + TIMEOUT + 2 * HEARTBEAT - time.monotonic()))
    os.kill(PID_A, signal.SIGCONT)
    print(f"node A resumed after {time.monotonic() - stopped:.1f} s", flush=True)
    # Its client is still connected: it subscribes (the record write goes
    # through over the survivors' mark, no takeover) and gets a message
    # published on node B.
    ok = paused.subscribe("fo/afterpause", secs=10)
    pub = Client("fo-pub", PORT_B)
    pub.wait_connected()
    time.sleep(0.3)
    pub.c.publish("fo/afterpause", "still here", qos=1).wait_for_publish(5)
    ok = ok and wait_until(lambda: paused.got("fo/afterpause"), 5) and not paused.disconnected.is_set()
    check(ok, "a node back from being cut off keeps its clients (no takeover, messages flow)")
    # Wait until node A's heartbeats are seen again and the reassertion done
    # (its wills written again) before killing it.
    time.sleep(2 * HEARTBEAT + 1.0)

    # More clients on node A.
    nodelay = Client("fo-nodelay", PORT_A, will=("fo/will/nodelay", "A died"))
    v311 = Client("fo-v311", PORT_A, v5=False, will=("fo/will/v311", "A died (3.1.1)"))
    delayed = Client("fo-delayed", PORT_A, expiry=60, will=("fo/will/delayed", "late"), will_delay=DELAY)
    cancel = Client("fo-cancel", PORT_A, expiry=60, will=("fo/will/cancelled", "never"),
                    will_delay=CANCEL_DELAY)
    persist = Client("fo-persist", PORT_A, clean=False, expiry=300)
    ok = all(c.wait_connected() for c in (nodelay, v311, delayed, cancel, persist))
    ok = ok and persist.subscribe("fo/persist/#")
    check(ok, "clients with wills (with and without delay) and a persistent session connected on node A")
    if not ok:
        return

    # --- SIGKILL node A ----------------------------------------------------
    os.kill(PID_A, signal.SIGKILL)
    killed = time.monotonic()
    # The cancelling client reconnects on node C before its will delay
    # passes (and before A is even declared dead); the persistent session
    # resumes on node C.
    cancel2 = Client("fo-cancel", PORT_C, clean=False, expiry=60)
    persist2 = Client("fo-persist", PORT_C, clean=False, expiry=300)
    check(cancel2.wait_connected(), "client of the dead node reconnects on node C")
    ok = persist2.wait_connected()
    check(ok and persist2.session_present is True,
          "persistent session of a SIGKILLed node resumes on node C with Session Present 1",
          f"(session_present={persist2.session_present})")
    time.sleep(0.5)
    pub.c.publish("fo/persist/x", "to the moved session", qos=1).wait_for_publish(5)
    check(wait_until(lambda: persist2.got("fo/persist/x"), 5),
          "the resumed session keeps its subscriptions (message published on B arrives on C)")

    for topic in ("fo/will/nodelay", "fo/will/v311"):
        arrived = wait_until(lambda: sub_b.got(topic) and sub_c.got(topic), BOUND)
        t = None
        if arrived:
            t = max(sub_b.got(topic)[0][0], sub_c.got(topic)[0][0]) - killed
        check(arrived, f"will {topic} of a SIGKILLed node arrives on B and C within "
              f"node_timeout_ms + heartbeat_ms + {SLACK} s",
              f"(bound {BOUND:.1f} s)")
        if t is not None:
            print(f"  {topic}: {t:.2f} s after the kill (timeout {TIMEOUT} s, heartbeat {HEARTBEAT} s)")

    # The delayed will: its delay counted from the death's detection, which
    # is when the wills without delay went out (on whichever survivor
    # noticed first; the others notice within about one heartbeat).
    detected = min(s.got("fo/will/nodelay")[0][0] for s in (sub_b, sub_c)) if sub_b.got("fo/will/nodelay") and sub_c.got("fo/will/nodelay") else killed
    arrived = wait_until(lambda: sub_b.got("fo/will/delayed"), BOUND + DELAY)
    t = sub_b.got("fo/will/delayed")[0][0] - killed if arrived else None
    after_detection = sub_b.got("fo/will/delayed")[0][0] - detected if arrived else None
    check(arrived and after_detection >= DELAY - HEARTBEAT - 0.1 and t <= BOUND + DELAY,
          "a delayed will arrives its Will Delay Interval after the death's detection",
          f"(after the kill: {t}, after the detection: {after_detection})")
    if t is not None:
        print(f"  fo/will/delayed: {t:.2f} s after the kill, {after_detection:.2f} s after the "
              f"detection (delay {DELAY} s)")

    # Past every deadline, plus some: nothing else, and nothing twice.
    time.sleep(max(0.0, killed + BOUND + CANCEL_DELAY + 1.5 - time.monotonic()))
    for sub, node in ((sub_b, "B"), (sub_c, "C")):
        counts = {t: len(sub.got(t)) for t in ("fo/will/nodelay", "fo/will/v311", "fo/will/delayed")}
        check(counts["fo/will/nodelay"] == 1 and counts["fo/will/v311"] == 1
              and counts["fo/will/delayed"] == 1,
              f"each will of the dead node arrives once on node {node} (once cluster-wide)", str(counts))
        check(not sub.got("fo/will/cancelled"),
              f"a delayed will is cancelled by the client reconnecting on another node (node {node})",
              str(sub.got("fo/will/cancelled")))
        check(not sub.got("fo/will/normal"),
              f"a will deleted by a normal DISCONNECT is never published (node {node})",
              str(sub.got("fo/will/normal")))
        # Once while cut off, once more when it really died: the node wrote
        # it again when it came back.
        check(len(sub.got("fo/will/paused")) == 2,
              f"the will of a client of a node back from a cut is written again and published when "
              f"the node dies (node {node})", str(len(sub.got("fo/will/paused"))))

    for c in (sub_b, sub_c, pub, cancel2, persist2):
        c.close()


if __name__ == "__main__":
    try:
        main()
    finally:
        print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
