//! The end of a connection: the server's DISCONNECT with its reason (MQTT
//! 5.0 section 3.14), the last bytes flushed, and the session handed back
//! with the will (or not, after a normal DISCONNECT) and the expiry.

use super::*;

impl Conn {
    /// Sends the server's DISCONNECT if any, flushes, and hands the session
    /// back with the will and expiry the close calls for. The client no
    /// longer counts as connected.
    pub(super) async fn finish<W: AsyncWrite + Unpin>(mut self, close: Close, wr: &mut W) {
        self.broker.stats.clients_connected.dec();
        let publish_will = match close {
            Close::Disconnect { will } => will,
            Close::Network | Close::Server(..) | Close::TakenOver => true,
        };
        let reason = match close {
            Close::Server(r, text) => Some((r, text)),
            Close::TakenOver => Some((
                ReasonCode::SessionTakenOver,
                "another connection took the session over",
            )),
            _ => None,
        };
        if let (Some((reason, text)), true) = (reason, self.version.is_v5()) {
            let reason = if reason.allowed_in(mqtt_codec::PacketType::Disconnect) {
                reason
            } else {
                ReasonCode::UnspecifiedError
            };
            let props = [Property::ReasonString(text)];
            // [MQTT-5: 3.1.2-29] Request Problem Information 0 allows the
            // Reason String only on CONNACK and DISCONNECT, which this is.
            let disconnect = Disconnect {
                reason,
                properties: mqtt_codec::Properties::from_slice(&props),
            };
            let packet = Packet::Disconnect(disconnect);
            if !self.send_within(&packet, Lane::Now, self.client_max_packet as usize) {
                // Too large for the client with the text: send the code alone.
                self.send(&Packet::Disconnect(Disconnect::new(reason)), Lane::Now);
            }
        }
        if self.outbox.has_output() {
            let outbox = &mut self.outbox;
            let _ = tokio::time::timeout(CLOSE_FLUSH, async {
                while outbox.has_output() {
                    let n = wr.write(outbox.spliced.next(&outbox.buf)).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    outbox.advance(n);
                }
                wr.flush().await
            })
            .await;
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH, wr.shutdown()).await;
        tracing::info!(client = %self.client_id, peer = %self.peer, ?close, "client disconnected");
        let will = if publish_will {
            self.will.clone()
        } else {
            None
        };
        self.broker
            .detach(&self.session, self.generation, will, self.expiry_secs);
    }
}
