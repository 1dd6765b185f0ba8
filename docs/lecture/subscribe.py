import os

import paho.mqtt.client as mqtt

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))


def on_connect(client, userdata, flags, reason_code, properties):
    client.subscribe("room_temp")  # subscribing here renews it after a reconnect


def on_message(client, userdata, msg):
    print(msg.topic, msg.payload.decode())
    client.disconnect()  # stop after one message; remove this to keep listening


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.on_connect = on_connect
client.on_message = on_message
client.connect(BROKER, PORT)
client.loop_forever()
