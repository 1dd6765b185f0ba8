//! `mqtt pub`: one message (-m, -f, -s, -n), `--repeat`ed if asked, or one
//! message per line of standard input (-l), read without blocking the
//! connection (keep alive and acknowledgements go on while it waits for a
//! line) and pipelined within a bounded window.

use std::collections::VecDeque;
use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use mqtt_client::{
    Client, ClientError, ConnectOptions, OutgoingMessage, PublishToken, QoS, ReasonCode,
};
use tokio::io::AsyncBufReadExt;

use crate::args::PubArgs;
use crate::connect::{options, parse_qos, publish_properties};
use crate::trace;

/// Most `-l` messages handed to the client and not yet done: bounds memory
/// on an endless pipe, well under the client's offline queue so a long
/// outage never makes it refuse a message.
const LINE_WINDOW: usize = 1000;

/// Connects with the tool's hook (`-d` trace, link lost / regained lines).
pub async fn connect(
    mut opts: ConnectOptions,
    debug: bool,
    quiet: bool,
) -> Result<(Client, mqtt_client::Messages), ClientError> {
    opts.on_event = Some(trace::hook(
        opts.client_id.clone(),
        opts.version,
        debug,
        quiet,
        opts.reconnect,
    ));
    Client::connect(opts).await
}

pub async fn run_pub(a: PubArgs) -> Result<u8, ClientError> {
    let qos = parse_qos(a.common.qos)?;
    let mut props = publish_properties(&a.common.properties)?;
    let opts = options(&a.common, "mqtt-pub")?;
    let key = a.fernet.key()?;
    if let Some(rt) = &a.response_topic {
        if !opts.version.is_v5() {
            return Err(ClientError::Invalid(
                "-e (response topic) is an MQTT 5 property: add -V 5".into(),
            ));
        }
        props.response_topic = Some(rt.clone());
    }
    let payload = if let Some(m) = &a.message {
        Some(Bytes::from(m.clone()))
    } else if let Some(f) = &a.file {
        Some(Bytes::from(std::fs::read(f).map_err(|e| {
            ClientError::Invalid(format!("{}: {e}", f.display()))
        })?))
    } else if a.null {
        Some(Bytes::new())
    } else if a.stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| ClientError::Invalid(format!("stdin: {e}")))?;
        Some(Bytes::from(buf))
    } else if a.lines {
        None
    } else {
        return Err(ClientError::Invalid(
            "give a payload with -m, -f, -s, -l or -n".into(),
        ));
    };
    let quiet = a.common.quiet;
    let (client, _messages) = connect(opts, a.common.debug, quiet).await?;
    let message = |payload: Bytes| OutgoingMessage {
        topic: a.topic.clone().unwrap_or_default(),
        // -n stays empty: it clears a retained message.
        payload: if a.null {
            payload
        } else {
            crate::fernet_cli::seal(key.as_ref(), payload)
        },
        qos,
        retain: a.retain,
        properties: props.clone(),
    };
    let mut failed = 0u64;
    match payload {
        Some(p) => {
            let delay = Duration::from_secs_f64(a.repeat_delay.max(0.0));
            for i in 0..a.repeat.max(1) {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                client.publish_message(message(p.clone())).await?;
            }
        }
        None => {
            let mut window: VecDeque<PublishToken> = VecDeque::new();
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = stdin
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(|e| ClientError::Invalid(format!("stdin: {e}")))?;
                if n == 0 {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if window.len() >= LINE_WINDOW {
                    if let Some(t) = window.pop_front() {
                        failed += settle(t.await, qos, quiet)?;
                    }
                }
                window.push_back(
                    client
                        .start_publish(message(Bytes::copy_from_slice(&line)))
                        .await?,
                );
            }
            for t in window {
                failed += settle(t.await, qos, quiet)?;
            }
        }
    }
    client.disconnect().await?;
    if failed > 0 {
        if !quiet {
            eprintln!("Error: {failed} message(s) not delivered");
        }
        return Ok(1);
    }
    Ok(0)
}

/// The outcome of one `-l` message: 0 done, 1 refused by the server or (QoS
/// 0, which is never resent) lost with the link; the tool carries on. A
/// closed client (`--exit-on-disconnect`) ends the run.
fn settle(r: Result<ReasonCode, ClientError>, qos: QoS, quiet: bool) -> Result<u64, ClientError> {
    match r {
        Ok(_) => Ok(0),
        Err(e @ ClientError::Rejected(_)) => {
            if !quiet {
                eprintln!("Warning: publish refused: {e}");
            }
            Ok(1)
        }
        Err(e @ ClientError::Connection(_)) | Err(e @ ClientError::Timeout)
            if qos == QoS::AtMostOnce && !matches!(e, ClientError::Closed) =>
        {
            if !quiet {
                eprintln!("Warning: QoS 0 message lost with the link: {e}");
            }
            Ok(1)
        }
        Err(e) => Err(e),
    }
}
