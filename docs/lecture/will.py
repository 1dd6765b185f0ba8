import os

import paho.mqtt.client as mqtt

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor1")
# Published by the broker if this client vanishes without saying goodbye
# (crash, power or network lost), not after client.disconnect().
client.will_set("status/sensor1", "offline", qos=1, retain=True)
client.connect(BROKER, PORT, keepalive=10)
client.publish("status/sensor1", "online", qos=1, retain=True)
client.loop_forever()  # runs until the process is killed
