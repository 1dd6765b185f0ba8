//! `mqtt sub`: subscribe and print each message as asked (-v, -F, -N, -C, -W...).

use std::io::Write;
use std::time::Duration;

use mqtt_client::{Client, ClientError, RetainHandling, SubscriptionOptions};

use crate::args::SubArgs;
use crate::connect::{options, parse_qos};
use crate::errors::EXIT_TIMEOUT;
use crate::output::render;

pub async fn run_sub(a: SubArgs) -> Result<u8, ClientError> {
    let qos = parse_qos(a.common.qos)?;
    let opts = options(&a.common, "mqtt-sub")?;
    let retain_handling = match a.retain_handling {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        n => {
            return Err(ClientError::Invalid(format!(
                "retain handling must be 0, 1 or 2, not {n}"
            )))
        }
    };
    let sub_options = SubscriptionOptions {
        qos,
        no_local: a.no_local,
        retain_as_published: a.retain_as_published,
        retain_handling,
    };
    let work = async {
        let (client, mut messages) = Client::connect(opts).await?;
        let filters = a.topic.iter().map(|t| (t.clone(), sub_options)).collect();
        let codes = client
            .subscribe_with(filters, a.subscription_identifier)
            .await?;
        for (t, c) in a.topic.iter().zip(&codes) {
            if c.is_error() {
                eprintln!(
                    "Subscription to {t} refused: {}",
                    mqtt_client::reason_text(*c)
                );
            }
        }
        if codes.iter().all(|c| c.is_error()) {
            return Err(ClientError::Rejected(codes[0]));
        }
        if a.exit_after_sub {
            client.disconnect().await?;
            return Ok(0);
        }
        let mut seen = 0u64;
        let stdout = std::io::stdout();
        while let Some(msg) = messages.recv().await {
            if a.no_retained && msg.retain {
                continue;
            }
            let mut out = stdout.lock();
            let _ = out.write_all(&render(&a, &msg));
            let _ = out.flush();
            seen += 1;
            if a.count.is_some_and(|c| seen >= c) {
                break;
            }
        }
        client.disconnect().await?;
        Ok(0)
    };
    match a.timeout {
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), work).await {
            Ok(r) => r,
            Err(_) => {
                eprintln!("Timed out");
                Ok(EXIT_TIMEOUT)
            }
        },
        None => work.await,
    }
}
