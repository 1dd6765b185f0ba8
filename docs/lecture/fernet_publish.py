import os

import paho.mqtt.client as mqtt
from cryptography.fernet import Fernet

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))

# The same key at both ends, never sent over MQTT:
#   python3 -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" > room.key
# (or: mqtt keygen > room.key)
fernet = Fernet(open("room.key", "rb").read())

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.connect(BROKER, PORT)
client.loop_start()
token = fernet.encrypt(b"22.5")  # the broker only ever sees this token
client.publish("secret/room_temp", token, qos=1).wait_for_publish()
client.disconnect()
client.loop_stop()
