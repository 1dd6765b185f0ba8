import os

import paho.mqtt.client as mqtt
import paho.mqtt.subscribe as subscribe

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.connect(BROKER, PORT)
client.loop_start()
# The broker keeps the last retained message of a topic...
client.publish("room_temp", "22.5", qos=1, retain=True).wait_for_publish()

# ...and gives it at once to every new subscriber.
msg = subscribe.simple("room_temp", hostname=BROKER, port=PORT)
print(msg.topic, msg.payload.decode(), "retained:", msg.retain)

# An empty retained message clears it: new subscribers get nothing.
client.publish("room_temp", b"", qos=1, retain=True).wait_for_publish()
client.disconnect()
client.loop_stop()
