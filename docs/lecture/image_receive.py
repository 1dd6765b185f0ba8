import os

import paho.mqtt.client as mqtt

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))


def on_connect(client, userdata, flags, reason_code, properties):
    client.subscribe("camera/photo", qos=1)


def on_message(client, userdata, msg):
    with open("received.jpg", "wb") as f:
        f.write(msg.payload)
    print("saved received.jpg,", len(msg.payload), "bytes")
    client.disconnect()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.on_connect = on_connect
client.on_message = on_message
client.connect(BROKER, PORT)
client.loop_forever()
