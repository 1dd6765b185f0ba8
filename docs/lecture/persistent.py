import os
import threading

import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish

BROKER = os.environ.get("BROKER", "localhost")
PORT = int(os.environ.get("PORT", "1883"))
subscribed = threading.Event()
got = threading.Event()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    subscribed.set()


def on_message(client, userdata, msg):
    print("while I was away:", msg.topic, msg.payload.decode())
    got.set()


# clean_session=False and a fixed client id: the broker keeps the
# subscription, and queues QoS 1/2 messages while the client is offline.
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="room-display", clean_session=False)
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(BROKER, PORT)
client.loop_start()
client.subscribe("room_temp", qos=1)
subscribed.wait(10)
client.disconnect()
client.loop_stop()

# Someone publishes while room-display is offline.
publish.single("room_temp", "21.0", qos=1, hostname=BROKER, port=PORT)

# Back online with the same id: the queued message arrives.
client.connect(BROKER, PORT)
client.loop_start()
got.wait(10)
client.disconnect()
client.loop_stop()
