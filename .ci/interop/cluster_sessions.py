#!/usr/bin/env python3
"""Issue 18: a QoS 1 or 2 stream survives the loss of a node or of NATS servers.

paho-mqtt (3.1.1, clean_session=False) subscribes on one node; a publisher
(also a persistent session, so paho sends its unacknowledged messages again
after a reconnection) on another node sends COUNT messages (the payload is
the number). Once 30% are acknowledged, --action:

  node    SIGKILLs the subscriber's node (--kill-pids); the same client
          object (which keeps its QoS 2 state, as paho does across
          reconnections) connects to --next-port and expects its session;
  nats    SIGKILLs one nats-server (--kill-pids): nothing is to be lost;
  quorum  SIGKILLs two nats-servers: the PUBACKs must stop (none for 3 s
          while messages are outstanding), then --restart-cmd brings them
          back and everything acknowledged must arrive.

Checks: every message whose publish was acknowledged arrives; with QoS 2,
none arrives twice. Prints one line of figures; exits non-zero on a failure.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt

ap = argparse.ArgumentParser()
ap.add_argument("--pub-port", type=int, required=True)
ap.add_argument("--sub-port", type=int, required=True)
ap.add_argument("--next-port", type=int)
ap.add_argument("--kill-pids", required=True)
ap.add_argument("--action", choices=["node", "nats", "quorum"], default="node")
ap.add_argument("--restart-cmd")
ap.add_argument("--qos", type=int, choices=[1, 2], required=True)
ap.add_argument("--count", type=int, default=10000)
ap.add_argument("--tag", default="fo")
ap.add_argument("--timeout", type=float, default=180)
a = ap.parse_args()

topic = f"{a.tag}/stream"
deadline = time.time() + a.timeout


def client(cid, clean):
    return mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=cid,
        clean_session=clean,
        protocol=mqtt.MQTTv311,
    )


received = []
state = {"connacks": [], "suback": False}

sub = client(f"{a.tag}-sub", False)
sub.on_message = lambda c, u, m: received.append(int(m.payload))
sub.on_connect = lambda c, u, f, rc, p: state["connacks"].append((f.session_present, str(rc)))
sub.on_subscribe = lambda c, u, mid, rcs, p: state.__setitem__("suback", True)


def pump(*clients):
    for c in clients:
        c.loop(0.005)


def wait_for(what, cond, *clients):
    while not cond():
        if time.time() > deadline:
            print(f"FAIL: timed out waiting for {what}")
            sys.exit(1)
        pump(*clients)


sub.connect("127.0.0.1", a.sub_port, keepalive=5)
wait_for("the subscriber's CONNACK", lambda: state["connacks"], sub)
sub.subscribe(topic, a.qos)
wait_for("SUBACK", lambda: state["suback"], sub)

pub = client(f"{a.tag}-pub", False)
pub.max_inflight_messages_set(50)
pub.max_queued_messages_set(0)
acked = set()
number_of = {}
pub.on_publish = lambda c, u, mid, rc, p: acked.add(number_of.pop(mid))
pub_up = []
pub.on_connect = lambda c, u, f, rc, p: pub_up.append(rc)
pub.connect("127.0.0.1", a.pub_port, keepalive=30)
wait_for("the publisher's CONNACK", lambda: pub_up, pub)

sent = 0
killed_at = None
reconnected_at = None
stalled_for = 0.0
restarted = False
last_ack = (0, time.time())
last_attempt = {}
# An attempt is open from connect() until its CONNACK or its failure.
attempting = {}


def settled(c):
    attempting[id(c)] = False


for c in (sub, pub):
    c.on_disconnect = lambda c, u, f, rc, p: settled(c)
    previous = c.on_connect
    c.on_connect = (lambda prev: lambda c, u, f, rc, p: (settled(c), prev(c, u, f, rc, p)))(previous)
while True:
    if time.time() > deadline:
        break
    while sent < a.count and sent - len(acked) < 50:
        info = pub.publish(topic, str(sent), qos=a.qos)
        number_of[info.mid] = sent
        sent += 1
    pump(pub, sub)
    now = time.time()
    if len(acked) != last_ack[0]:
        last_ack = (len(acked), now)
    if killed_at is None and len(acked) >= a.count * 3 // 10:
        for pid in a.kill_pids.split(","):
            os.kill(int(pid), signal.SIGKILL)
        killed_at = now
        last_ack = (len(acked), now)
    if a.action == "quorum" and killed_at is not None and not restarted:
        stalled_for = now - last_ack[1]
        if stalled_for >= 3.0:
            # No PUBACK for 3 s with messages outstanding: bring the
            # servers back.
            subprocess.Popen(a.restart_cmd, shell=True)
            restarted = True
    # Reconnections: the subscriber to the next node if its node was
    # killed, else (like the publisher) to its own.
    # Like paho's own loop: one attempt at a time, 0.2 s apart.
    for c, port in ((sub, a.next_port if a.action == "node" else a.sub_port), (pub, a.pub_port)):
        if killed_at is None or c.is_connected():
            continue
        if attempting.get(id(c)) or now - last_attempt.get(id(c), 0) < 0.2:
            continue
        attempting[id(c)] = True
        last_attempt[id(c)] = now
        try:
            c.reconnect() if port is None else c.connect("127.0.0.1", port, keepalive=5)
            if c is sub and reconnected_at is None:
                reconnected_at = time.time()
        except OSError:
            settled(c)
    if len(acked) == a.count and acked <= set(received):
        # Anything sent twice would be here by now too: wait a moment more.
        end = time.time() + 1
        while time.time() < end:
            pump(pub, sub)
        break

missing = sorted(acked - set(received))
dups = len(received) - len(set(received))
present = state["connacks"][1][0] if len(state["connacks"]) > 1 else None
print(
    f"qos={a.qos} sent={sent} acknowledged={len(acked)} received={len(received)} "
    f"unique={len(set(received))} missing={len(missing)} duplicates={dups} "
    f"session_present_after_reconnect={present} "
    f"reconnected_after={(reconnected_at or killed_at or 0) - (killed_at or 0):.2f}s "
    f"acks_stalled_for={stalled_for:.1f}s"
)
ok = True
if killed_at is None:
    print("FAIL: nothing was killed")
    ok = False
if a.action == "quorum" and not restarted:
    print("FAIL: the PUBACKs did not stop without a NATS quorum")
    ok = False
if a.action == "node" and present is not True:
    print(f"FAIL: no session present on the second node (CONNACKs: {state['connacks']})")
    ok = False
if len(acked) != a.count:
    print(f"FAIL: only {len(acked)} of {a.count} publishes acknowledged in time")
    ok = False
if missing:
    print(f"FAIL: acknowledged but never received: {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    ok = False
if a.qos == 2 and dups:
    print(f"FAIL: {dups} QoS 2 messages received twice")
    ok = False
sys.exit(0 if ok else 1)
