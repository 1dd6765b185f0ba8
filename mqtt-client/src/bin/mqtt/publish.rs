//! `mqtt pub`: one message (-m, -f, -s, -n) or one per line of standard input (-l).

use std::io::{BufRead, Read};

use bytes::Bytes;
use mqtt_client::{Client, ClientError, OutgoingMessage, ReasonCode};

use crate::args::PubArgs;
use crate::connect::{options, parse_qos, publish_properties};

pub async fn run_pub(a: PubArgs) -> Result<u8, ClientError> {
    let qos = parse_qos(a.common.qos)?;
    let props = publish_properties(&a.common.properties)?;
    let opts = options(&a.common, "mqtt-pub")?;
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
    let (client, _messages) = Client::connect(opts).await?;
    let message = |payload: Bytes| OutgoingMessage {
        topic: a.topic.clone(),
        payload,
        qos,
        retain: a.retain,
        properties: props.clone(),
    };
    match payload {
        Some(p) => report(client.publish_message(message(p)).await)?,
        None => {
            // One message per line, pipelined, each confirmed before exit.
            let mut tokens = Vec::new();
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|e| ClientError::Invalid(format!("stdin: {e}")))?;
                tokens.push(client.start_publish(message(Bytes::from(line))).await?);
            }
            for t in tokens {
                report(t.await)?;
            }
        }
    }
    client.disconnect().await?;
    Ok(0)
}

fn report(r: Result<ReasonCode, ClientError>) -> Result<(), ClientError> {
    match r {
        Ok(ReasonCode::NoMatchingSubscribers) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}
