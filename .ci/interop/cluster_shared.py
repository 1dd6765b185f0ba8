#!/usr/bin/env python3
"""Issue 18: a shared subscription across nodes, and the loss of a member's node.

Two paho-mqtt members of $share/g/<tag>/t, on node A (acknowledges) and on
node B (never acknowledges, manual_ack), a publisher on node C sending COUNT
QoS 1 messages. Checks:
  1. every message reached exactly one member (none both, none neither),
     and both members got some;
  2. after node B is SIGKILLed, every message B held unacknowledged reaches
     the member on A, within --bound seconds.
"""
import argparse
import os
import signal
import sys
import time

import paho.mqtt.client as mqtt

ap = argparse.ArgumentParser()
ap.add_argument("--a-port", type=int, required=True)
ap.add_argument("--b-port", type=int, required=True)
ap.add_argument("--pub-port", type=int, required=True)
ap.add_argument("--kill-pid", type=int, required=True)
ap.add_argument("--count", type=int, default=1000)
ap.add_argument("--bound", type=float, default=10)
ap.add_argument("--tag", default="sh")
a = ap.parse_args()
topic = f"{a.tag}/t"
deadline = time.time() + 120


def client(cid, **kw):
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, **kw)


got = {"a": [], "b": []}
ready = []
ma = client(f"{a.tag}-a")
mb = client(f"{a.tag}-b", manual_ack=True)
ma.on_message = lambda c, u, m: got["a"].append(int(m.payload))
mb.on_message = lambda c, u, m: got["b"].append(int(m.payload))
for c in (ma, mb):
    c.on_subscribe = lambda c, u, mid, rcs, p: ready.append(mid)
pub = client(f"{a.tag}-p")
acked = set()
number_of = {}
pub.on_publish = lambda c, u, mid, rc, p: acked.add(number_of.pop(mid))
pub.max_inflight_messages_set(50)


def pump(*cs):
    for c in cs:
        c.loop(0.005)


def until(what, cond, *cs):
    while not cond():
        if time.time() > deadline:
            print(f"FAIL: timed out waiting for {what}")
            sys.exit(1)
        pump(*cs)


ma.connect("127.0.0.1", a.a_port)
mb.connect("127.0.0.1", a.b_port)
pub.connect("127.0.0.1", a.pub_port)
until("the connections", lambda: ma.is_connected() and mb.is_connected() and pub.is_connected(), ma, mb, pub)
ma.subscribe(f"$share/g/{topic}", 1)
mb.subscribe(f"$share/g/{topic}", 1)
until("the SUBACKs", lambda: len(ready) == 2, ma, mb)
sent = 0
while len(acked) < a.count:
    if time.time() > deadline:
        print(f"FAIL: only {len(acked)} publishes acknowledged")
        sys.exit(1)
    while sent < a.count and sent - len(acked) < 50:
        number_of[pub.publish(topic, str(sent), qos=1).mid] = sent
        sent += 1
    pump(pub, ma, mb)
until("every message at a member", lambda: len(got["a"]) + len(got["b"]) >= a.count, ma, mb)
end = time.time() + 1
while time.time() < end:
    pump(ma, mb)
sa, sb = set(got["a"]), set(got["b"])
ok = True
print(f"split: member A {len(got['a'])}, member B {len(got['b'])} (unacknowledged), both {len(sa & sb)}")
if sa & sb or (sa | sb) != set(range(a.count)) or not sa or not sb:
    print("FAIL: the messages were not split one member each")
    ok = False
held = sb - sa
os.kill(a.kill_pid, signal.SIGKILL)
killed = time.time()
while not held <= set(got["a"]) and time.time() < killed + a.bound + 20:
    pump(ma)
took = time.time() - killed
missing = held - set(got["a"])
print(f"after SIGKILL of B: {len(held) - len(missing)} of {len(held)} held messages reached A in {took:.1f}s (bound {a.bound}s)")
if missing:
    print(f"FAIL: {len(missing)} never reached A")
    ok = False
elif took > a.bound:
    print("FAIL: later than the bound")
    ok = False
sys.exit(0 if ok else 1)
