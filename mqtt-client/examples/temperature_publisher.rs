//! Publishes a (simulated) living-room temperature every second.
//!
//! ```text
//! cargo run --example temperature_publisher               # localhost:1883, forever
//! cargo run --example temperature_publisher -- HOST PORT COUNT
//! ```

use std::time::Duration;

use mqtt_client::{Client, ConnectOptions, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".to_string());
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(1883);
    // How many readings to send; none means forever.
    let count: Option<u32> = args.next().map(|c| c.parse()).transpose()?;

    let options = ConnectOptions::new(host, port).client_id("livingroom-thermometer");
    // Messages for us would arrive on the second value; we only publish.
    let (client, _messages) = Client::connect(options).await?;
    println!("connected");

    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut sent = 0;
    while count.is_none_or(|c| sent < c) {
        ticker.tick().await;
        let reading = 20.0 + f64::from(sent % 10) * 0.1;
        let payload = format!("{reading:.1}");
        // Returns once the broker has acknowledged the message (QoS 1).
        client
            .publish(
                "home/livingroom/temperature",
                payload.clone(),
                QoS::AtLeastOnce,
                false,
            )
            .await?;
        println!("published {payload}");
        sent += 1;
    }

    client.disconnect().await?;
    Ok(())
}
