import os

import paho.mqtt.client as mqtt
from cryptography.fernet import Fernet, InvalidToken

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))
fernet = Fernet(open("room.key", "rb").read())


def on_connect(client, userdata, flags, reason_code, properties):
    client.subscribe("secret/room_temp", qos=1)


def on_message(client, userdata, msg):
    try:
        print(msg.topic, fernet.decrypt(msg.payload, ttl=60).decode())
    except InvalidToken:
        print(msg.topic, "cannot be decrypted: wrong key, altered or too old")
    client.disconnect()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.on_connect = on_connect
client.on_message = on_message
client.connect(BROKER, PORT)
client.loop_forever()
