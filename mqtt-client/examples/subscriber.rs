//! Prints the temperature of every room.
//!
//! ```text
//! cargo run --example subscriber                    # localhost:1883, forever
//! cargo run --example subscriber -- HOST PORT COUNT
//! ```

use mqtt_client::{Client, ConnectOptions, Message, QoS};

/// Called for every message.
fn handle(message: &Message) {
    // home/<room>/temperature
    let room = message.topic.split('/').nth(1).unwrap_or("?");
    match message.payload_str() {
        Some(text) => println!("{room}: {text}"),
        None => println!("{room}: {} bytes that are not text", message.payload.len()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".to_string());
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(1883);
    // How many messages to print before leaving; none means forever.
    let count: Option<u32> = args.next().map(|c| c.parse()).transpose()?;

    let (client, mut messages) = Client::connect(ConnectOptions::new(host, port)).await?;
    client
        .subscribe("home/+/temperature", QoS::AtLeastOnce)
        .await?;
    eprintln!("subscribed to home/+/temperature");

    let mut seen = 0;
    while let Some(message) = messages.recv().await {
        handle(&message);
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }

    client.disconnect().await?;
    Ok(())
}
