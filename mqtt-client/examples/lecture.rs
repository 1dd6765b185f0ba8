//! The course's MQTT exercises with the Rust client, one function per
//! lecture item; `docs/LECTURE.md` shows each next to its paho-mqtt and
//! `mqtt` versions, and CI runs every one (`.ci/interop/lecture_test.sh`).
//!
//! ```text
//! cargo run --example lecture -- ITEM     # ITEM: publish, subscribe, qos, retained,
//!                                         # will, persistent, auth, fernet-publish,
//!                                         # fernet-subscribe, image-send, image-receive
//! BROKER=192.168.1.23 cargo run --example lecture -- publish   # a broker on the network
//! ```

use std::time::Duration;

use mqtt_client::payload_crypto::FernetKey;
use mqtt_client::{Client, ConnectOptions, QoS, Will};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Where the broker is: `BROKER` and `PORT`, default localhost:1883.
fn broker() -> ConnectOptions {
    let host = std::env::var("BROKER").unwrap_or_else(|_| "localhost".into());
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok());
    ConnectOptions::new(host, port.unwrap_or(1883))
}

async fn publish() -> Result {
    let (client, _messages) = Client::connect(broker()).await?;
    // Returns once the broker has acknowledged it (QoS 1).
    client
        .publish("room_temp", "22.5", QoS::AtLeastOnce, false)
        .await?;
    client.disconnect().await?;
    Ok(())
}

async fn subscribe() -> Result {
    let (client, mut messages) = Client::connect(broker()).await?;
    // Renewed by the client itself after a reconnect.
    client.subscribe("room_temp", QoS::AtMostOnce).await?;
    // The "on_message" of the Rust client: a loop over incoming messages.
    if let Some(msg) = messages.recv().await {
        println!("{} {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }
    client.disconnect().await?;
    Ok(())
}

async fn qos() -> Result {
    let (client, mut messages) = Client::connect(broker()).await?;
    client.subscribe("lab/qos", QoS::ExactlyOnce).await?;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let text = format!("sent with QoS {}", qos.as_u8());
        // QoS 0: sent; 1: PUBACK received; 2: PUBCOMP received.
        client.publish("lab/qos", text, qos, false).await?;
    }
    for _ in 0..3 {
        let Some(msg) = messages.recv().await else {
            break;
        };
        let text = String::from_utf8_lossy(&msg.payload);
        println!("{text} -> received with QoS {}", msg.qos.as_u8());
    }
    client.disconnect().await?;
    Ok(())
}

async fn retained() -> Result {
    let (client, _messages) = Client::connect(broker()).await?;
    // The broker keeps the last retained message of a topic...
    client
        .publish("room_temp", "22.5", QoS::AtLeastOnce, true)
        .await?;
    // ...and gives it at once to every new subscriber.
    let (late, mut messages) = Client::connect(broker()).await?;
    late.subscribe("room_temp", QoS::AtMostOnce).await?;
    if let Some(msg) = messages.recv().await {
        let text = String::from_utf8_lossy(&msg.payload);
        println!("{} {text} retained: {}", msg.topic, msg.retain);
    }
    late.disconnect().await?;
    // An empty retained message clears it: new subscribers get nothing.
    client
        .publish("room_temp", "", QoS::AtLeastOnce, true)
        .await?;
    client.disconnect().await?;
    Ok(())
}

async fn will() -> Result {
    // Published by the broker if this client vanishes without saying
    // goodbye (crash, power or network lost), not after disconnect().
    let will = Will {
        topic: "status/sensor1".into(),
        payload: "offline".into(),
        qos: QoS::AtLeastOnce,
        retain: true,
        delay_secs: None,
        properties: Default::default(),
    };
    let options = broker()
        .client_id("sensor1")
        .keep_alive(Duration::from_secs(10))
        .will(will);
    let (client, mut messages) = Client::connect(options).await?;
    client
        .publish("status/sensor1", "online", QoS::AtLeastOnce, true)
        .await?;
    // Runs until the process is killed.
    while messages.recv().await.is_some() {}
    Ok(())
}

async fn persistent() -> Result {
    // A fixed client id and no clean start: the broker keeps the
    // subscription, and queues QoS 1/2 messages while the client is offline.
    let options = broker()
        .client_id("room-display")
        .clean_start(false)
        .session_expiry(3600);
    let (client, _messages) = Client::connect(options.clone()).await?;
    client.subscribe("room_temp", QoS::AtLeastOnce).await?;
    client.disconnect().await?;

    // Someone publishes while room-display is offline.
    let (other, _) = Client::connect(broker()).await?;
    other
        .publish("room_temp", "21.0", QoS::AtLeastOnce, false)
        .await?;
    other.disconnect().await?;

    // Back online with the same id: the queued message arrives.
    let (client, mut messages) = Client::connect(options).await?;
    if let Some(msg) = messages.recv().await {
        let text = String::from_utf8_lossy(&msg.payload);
        println!("while I was away: {} {text}", msg.topic);
    }
    client.disconnect().await?;
    Ok(())
}

async fn auth() -> Result {
    let options = broker().credentials("alice", "secret");
    let (client, _messages) = Client::connect(options).await?;
    client
        .publish("room_temp", "22.5", QoS::AtLeastOnce, false)
        .await?;
    client.disconnect().await?;
    Ok(())
}

async fn fernet_publish() -> Result {
    // The same key at both ends, never sent over MQTT (mqtt keygen > room.key).
    let key = FernetKey::from_file("room.key".as_ref())?;
    let (client, _messages) = Client::connect(broker()).await?;
    // The broker only ever sees the token.
    let token = key.encrypt(b"22.5");
    client
        .publish("secret/room_temp", token, QoS::AtLeastOnce, false)
        .await?;
    client.disconnect().await?;
    Ok(())
}

async fn fernet_subscribe() -> Result {
    let key = FernetKey::from_file("room.key".as_ref())?;
    let (client, mut messages) = Client::connect(broker()).await?;
    client
        .subscribe("secret/room_temp", QoS::AtLeastOnce)
        .await?;
    if let Some(msg) = messages.recv().await {
        match key.decrypt(&msg.payload, Some(Duration::from_secs(60))) {
            Ok(text) => println!("{} {}", msg.topic, String::from_utf8_lossy(&text)),
            Err(e) => println!("{} cannot be decrypted: {e}", msg.topic),
        }
    }
    client.disconnect().await?;
    Ok(())
}

async fn image_send() -> Result {
    // One message can carry up to 256 MB.
    let image = std::fs::read("photo.jpg")?;
    let (client, _messages) = Client::connect(broker()).await?;
    client
        .publish("camera/photo", image, QoS::AtLeastOnce, false)
        .await?;
    client.disconnect().await?;
    Ok(())
}

async fn image_receive() -> Result {
    let (client, mut messages) = Client::connect(broker()).await?;
    client.subscribe("camera/photo", QoS::AtLeastOnce).await?;
    if let Some(msg) = messages.recv().await {
        std::fs::write("received.jpg", &msg.payload)?;
        println!("saved received.jpg, {} bytes", msg.payload.len());
    }
    client.disconnect().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result {
    let item = std::env::args().nth(1).unwrap_or_default();
    match item.as_str() {
        "publish" => publish().await,
        "subscribe" => subscribe().await,
        "qos" => qos().await,
        "retained" => retained().await,
        "will" => will().await,
        "persistent" => persistent().await,
        "auth" => auth().await,
        "fernet-publish" => fernet_publish().await,
        "fernet-subscribe" => fernet_subscribe().await,
        "image-send" => image_send().await,
        "image-receive" => image_receive().await,
        other => Err(format!("unknown lecture item {other:?}; see the file's header").into()),
    }
}
