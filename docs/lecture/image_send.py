import os

import paho.mqtt.client as mqtt

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))

with open("photo.jpg", "rb") as f:
    image = f.read()  # one message can carry up to 256 MB

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.connect(BROKER, PORT)
client.loop_start()
client.publish("camera/photo", image, qos=1).wait_for_publish()
client.disconnect()
client.loop_stop()
