#!/usr/bin/env python3
"""Issue 18: a QoS 1 or 2 stream survives the SIGKILL of its subscriber's node.

paho-mqtt (3.1.1, clean_session=False) subscribes on the first node; a
publisher on another node sends COUNT messages (the payload is the number);
once 30% are acknowledged the subscriber's node is killed with SIGKILL, and
the same client object (which keeps its QoS 2 state, as paho does across
reconnections) connects to the second node and expects its session there.

Checks: session present on the new node; every message whose publish was
acknowledged arrives; with QoS 2, none arrives twice. Prints one line of
figures and exits non-zero on a failure.
"""
import argparse
import os
import signal
import sys
import time

import paho.mqtt.client as mqtt

ap = argparse.ArgumentParser()
ap.add_argument("--pub-port", type=int, required=True)
ap.add_argument("--sub-port", type=int, required=True)
ap.add_argument("--next-port", type=int, required=True)
ap.add_argument("--kill-pid", type=int, required=True)
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

pub = client(f"{a.tag}-pub", True)
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
while True:
    if time.time() > deadline:
        break
    while sent < a.count and sent - len(acked) < 50:
        info = pub.publish(topic, str(sent), qos=a.qos)
        number_of[info.mid] = sent
        sent += 1
    pump(pub, sub)
    if killed_at is None and len(acked) >= a.count * 3 // 10:
        os.kill(a.kill_pid, signal.SIGKILL)
        killed_at = time.time()
    if killed_at is not None and reconnected_at is None and not sub.is_connected():
        try:
            sub.connect("127.0.0.1", a.next_port, keepalive=5)
            reconnected_at = time.time()
        except OSError:
            pass
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
    f"session_present_after_kill={present} "
    f"resumed_in={(reconnected_at or 0) - (killed_at or 0):.2f}s"
)
ok = True
if killed_at is None:
    print("FAIL: the node was never killed")
    ok = False
if present is not True:
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
