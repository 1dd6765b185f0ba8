import os

import paho.mqtt.client as mqtt

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.username_pw_set("alice", "secret")
client.connect(BROKER, PORT)
client.loop_start()
client.publish("room_temp", "22.5", qos=1).wait_for_publish()
client.disconnect()
client.loop_stop()
