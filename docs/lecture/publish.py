import os

import paho.mqtt.client as mqtt

BROKER = os.environ.get("BROKER", "localhost")  # on your network: the Pi's address
PORT = int(os.environ.get("PORT", "1883"))

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.connect(BROKER, PORT)
client.loop_start()
info = client.publish("room_temp", "22.5", qos=1)
info.wait_for_publish()  # until the broker has acknowledged it (QoS 1)
client.disconnect()
client.loop_stop()
