#!/usr/bin/env python3
"""paho-mqtt (2.x) with transport="websockets" against our broker.

    python3 websockets_paho.py HOST WS_PORT WSS_PORT CA_FILE

For ws:// and wss://, MQTT 3.1.1 and 5.0: connect, subscribe at QoS 1,
publish at QoS 1 and receive it. Prints "PASS name" / "FAIL name: why" per
check; every wait is bounded. Exit status 1 on any failure.
"""
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt

WAIT = 10.0


def run(name, host, port, ca, protocol):
    got = threading.Event()
    subscribed = threading.Event()
    connected = threading.Event()
    received = {}
    topic = f"paho-ws/{os.getpid()}/{name}"

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"paho-{name}-{os.getpid()}",
        protocol=protocol,
        transport="websockets",
    )
    c.ws_set_options(path="/mqtt")
    if ca:
        c.tls_set(ca_certs=ca)

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            connected.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, msg):
        received["payload"] = msg.payload
        received["qos"] = msg.qos
        got.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(host, port, keepalive=30)
    c.loop_start()
    try:
        if not connected.wait(WAIT):
            return "no CONNACK"
        c.subscribe(topic, qos=1)
        if not subscribed.wait(WAIT):
            return "no SUBACK"
        c.publish(topic, b"from paho over websockets", qos=1)
        if not got.wait(WAIT):
            return "message not received"
        if received["payload"] != b"from paho over websockets" or received["qos"] != 1:
            return f"got {received}"
        return None
    finally:
        c.disconnect()
        c.loop_stop()


def main():
    host, ws_port, wss_port, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    failed = 0
    for scheme, port, ca_file in (("ws", ws_port, None), ("wss", wss_port, ca)):
        for label, protocol in (("mqtt311", mqtt.MQTTv311), ("mqtt5", mqtt.MQTTv5)):
            name = f"paho {scheme} {label} qos1 round trip"
            start = time.monotonic()
            try:
                why = run(f"{scheme}-{label}", host, port, ca_file, protocol)
            except Exception as e:  # a failed connection is a failed check
                why = repr(e)
            if why is None:
                print(f"PASS {name} ({int((time.monotonic() - start) * 1000)} ms)", flush=True)
            else:
                failed += 1
                print(f"FAIL {name}: {why}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
