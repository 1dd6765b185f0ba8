//! The read side of a connection: whole packets cut out of a buffer that
//! starts small and grows on demand (`mqtt_proto::next_frame` checks each
//! header as soon as it is there, before the body is waited for), and the
//! first packet, which must be CONNECT [MQTT-3.1.1/5: 3.1.0-1].

use super::*;

/// Reads whole packets from a byte stream.
pub(super) struct Reader<R> {
    pub(super) io: R,
    pub(super) buf: BytesMut,
    pub(super) max_packet_size: u32,
    /// Bytes to make room for before a read: starts small (a CONNECT, a
    /// PINGREQ) and doubles while reads fill it, so idle connections stay
    /// small and busy ones read in large chunks.
    pub(super) read_size: u32,
}

pub(super) const MIN_READ: u32 = 256;
pub(super) const MAX_READ: u32 = 64 * 1024;

impl<R: ReadSide> Reader<R> {
    /// A whole packet from the buffer, if one is there. Type, flags and size
    /// are checked from the header before the body is waited for.
    pub(super) fn try_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let frame = mqtt_proto::next_frame(&mut self.buf, self.max_packet_size)?;
        if frame.is_some() && self.buf.is_empty() {
            // The frames hold the old allocation for as long as they live;
            // an idle connection keeps no read buffer at all.
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }

    /// Reads more bytes; `Ok(0)` at end of stream.
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() == self.buf.len() {
            if self.buf.is_empty() {
                // Idle: take a buffer only once there is something to read.
                std::future::poll_fn(|cx| self.io.poll_read_ready(cx)).await?;
            }
            self.buf.reserve(self.read_size as usize);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = self.io.read_buf(&mut self.buf).await?;
        self.read_size = if n == room {
            (self.read_size * 2).min(MAX_READ)
        } else {
            (self.read_size / 2).max(MIN_READ)
        };
        Ok(n)
    }

    /// Waits for the first packet, refusing anything but CONNECT from its
    /// first byte [MQTT-3.1.1/5: 3.1.0-1], so a client that has not connected cannot
    /// make the broker wait for (and buffer) a large body.
    pub(super) async fn connect_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        loop {
            if self
                .buf
                .first()
                .is_some_and(|b| b >> 4 != mqtt_codec::PacketType::Connect as u8)
            {
                return Err(ConnError::NotConnect);
            }
            if let Some(frame) = self.try_frame()? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }
}
