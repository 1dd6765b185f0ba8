#!/usr/bin/env python3
"""One large message through the broker with paho-mqtt at both ends.

    python3 .ci/interop/large_message_paho.py HOST PORT FILE OUT

A paho subscriber subscribes (QoS 1) and, once its SUBACK is back, a paho
publisher publishes the bytes of FILE (QoS 1) and waits for its PUBACK; the
subscriber writes the payload it receives to OUT. Exits 0 when both
finished in time (the caller compares FILE and OUT with cmp). Every wait is
bounded.
"""

import sys
import threading
import uuid

import paho.mqtt.client as mqtt

HOST, PORT, FILE, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TIMEOUT = 120.0
TOPIC = "large/paho/" + uuid.uuid4().hex[:8]

subscribed = threading.Event()
received = threading.Event()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    subscribed.set()


def on_message(client, userdata, msg):
    with open(OUT, "wb") as f:
        f.write(msg.payload)
    received.set()


sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="large-paho-sub")
sub.on_subscribe = on_subscribe
sub.on_message = on_message
sub.connect(HOST, PORT)
sub.subscribe(TOPIC, qos=1)
sub.loop_start()
if not subscribed.wait(TIMEOUT):
    sys.exit("no SUBACK")

with open(FILE, "rb") as f:
    payload = f.read()
pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="large-paho-pub")
pub.connect(HOST, PORT)
pub.loop_start()
info = pub.publish(TOPIC, payload, qos=1)
info.wait_for_publish(TIMEOUT)
if not info.is_published():
    sys.exit("no PUBACK")
if not received.wait(TIMEOUT):
    sys.exit("message not received")
pub.disconnect()
pub.loop_stop()
sub.disconnect()
sub.loop_stop()
