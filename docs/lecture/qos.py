import os

import paho.mqtt.client as mqtt

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))
received = []


def on_connect(client, userdata, flags, reason_code, properties):
    client.subscribe("lab/qos", qos=2)  # accept up to QoS 2


def on_subscribe(client, userdata, mid, reason_codes, properties):
    for qos in (0, 1, 2):  # at most once, at least once, exactly once
        client.publish("lab/qos", f"sent with QoS {qos}", qos=qos)


def on_message(client, userdata, msg):
    print(msg.payload.decode(), "-> received with QoS", msg.qos)
    received.append(msg)
    if len(received) == 3:
        client.disconnect()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(BROKER, PORT)
client.loop_forever()
