//! `mqtt sub`: subscribe (then unsubscribe -U), and handle each message as
//! mosquitto_sub does, in its order: `--remove-retained` (except topics
//! filtered out with -T), `--retained-only` (stop at the first fresh
//! message), -R, -T, `--random-filter`, print, -C.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use mqtt_client::{ClientError, OutgoingMessage, QoS, RetainHandling, SubscriptionOptions};

use crate::args::SubArgs;
use crate::connect::{options, parse_qos};
use crate::errors::EXIT_TIMEOUT;
use crate::output::Output;
use crate::publish::connect;

pub async fn run_sub(a: SubArgs) -> Result<u8, ClientError> {
    let qos = parse_qos(a.common.qos)?;
    let opts = options(&a.common, "mqtt-sub")?;
    let key = a.fernet.key()?;
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
    if let Some(f) = a
        .filter_out
        .iter()
        .find(|f| !mqtt_codec::topic::valid_topic_filter(f))
    {
        return Err(ClientError::Invalid(format!("invalid -T filter {f:?}")));
    }
    // Percent of messages printed, as mosquitto: 0.1 to 100.
    let chance = match a.random_filter {
        Some(c) if !(0.1..=100.0).contains(&c) => {
            return Err(ClientError::Invalid(format!(
                "--random-filter must be between 0.1 and 100, not {c}"
            )))
        }
        c => c.unwrap_or(100.0),
    };
    let sub_options = SubscriptionOptions {
        qos,
        no_local: a.no_local,
        retain_as_published: a.retain_as_published,
        retain_handling,
    };
    let output = Output {
        format: a.format.clone(),
        verbose: a.verbose,
        no_newline: a.no_newline,
        pretty: a.pretty,
    };
    let quiet = a.common.quiet;
    let work = async {
        let (client, mut messages) = connect(opts, a.common.debug, quiet).await?;
        if !a.topic.is_empty() {
            let filters = a.topic.iter().map(|t| (t.clone(), sub_options)).collect();
            let codes = client
                .subscribe_with(filters, a.subscription_identifier)
                .await?;
            for (t, c) in a.topic.iter().zip(&codes) {
                if c.is_error() && !quiet {
                    eprintln!(
                        "Subscription to {t} refused: {}",
                        mqtt_client::reason_text(*c)
                    );
                }
            }
            if codes.iter().all(|c| c.is_error()) {
                return Err(ClientError::Rejected(codes[0]));
            }
        }
        for t in &a.unsubscribe {
            client.unsubscribe(t.clone()).await?;
        }
        if a.exit_after_sub || a.topic.is_empty() {
            client.disconnect().await?;
            return Ok(0);
        }
        let mut printed = 0u64;
        let mut removals = Vec::new();
        let stdout = std::io::stdout();
        let mut link_gone = true;
        while let Some(msg) = messages.recv().await {
            let filtered_out = a
                .filter_out
                .iter()
                .any(|f| mqtt_codec::topic::matches(f, &msg.topic));
            if a.remove_retained && msg.retain && !filtered_out {
                let clear =
                    OutgoingMessage::new(msg.topic.clone(), Bytes::new(), QoS::AtLeastOnce, true);
                removals.push(client.start_publish(clear).await?);
            }
            if a.retained_only && !msg.retain {
                link_gone = false;
                break;
            }
            if (a.no_retained && msg.retain) || filtered_out {
                continue;
            }
            if chance < 100.0 && random_percent() >= chance {
                continue;
            }
            let Some(msg) = crate::fernet_cli::open(key.as_ref(), a.fernet_ttl, msg) else {
                continue;
            };
            let mut out = stdout.lock();
            let _ = out.write_all(&output.render(&msg));
            let _ = out.flush();
            printed += 1;
            if a.count.is_some_and(|c| printed >= c) {
                link_gone = false;
                break;
            }
        }
        if link_gone {
            // The client stopped: the link was lost with
            // --exit-on-disconnect (said on stderr already).
            return Err(ClientError::Connection("connection lost".into()));
        }
        // The retained messages cleared are confirmed before leaving.
        for r in removals {
            r.await?;
        }
        client.disconnect().await?;
        Ok(0)
    };
    match a.timeout {
        Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), work).await {
            Ok(r) => r,
            Err(_) => {
                if !quiet {
                    eprintln!("Timed out");
                }
                Ok(EXIT_TIMEOUT)
            }
        },
        None => work.await,
    }
}

/// A number in [0, 100), from the standard library's randomly keyed hasher
/// (enough to thin out output; no random crate needed for it).
fn random_percent() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() % 10_000) as f64 / 100.0
}
