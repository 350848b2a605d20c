//! Connection collisions (RFC 4271 §6.8) and refusing connections.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::codec::{self, CodecCtx, Message, Notification, Open, cease_sub};
use super::transport::Connection;

/// How long a colliding connection may take to send its OPEN.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// Of the current connection and a new inbound one, keep the new one? The connection
/// opened by the speaker with the higher BGP identifier survives; two inbound ones:
/// the newer (the peer gave up on the older).
pub fn keep_new_inbound(local_id: Ipv4Addr, remote_id: Ipv4Addr, current_outbound: bool) -> bool {
    !current_outbound || local_id < remote_id
}

/// A NOTIFICATION encoded without any negotiated option (always valid to send).
pub fn encode_plain(n: &Notification) -> Vec<u8> {
    codec::encode_message(&Message::Notification(n.clone()), &CodecCtx::default())
        .unwrap_or_default()
}

/// Refuses a connection with a Cease, in the background.
pub fn reject(conn: Connection, subcode: u8) {
    tokio::spawn(async move {
        let _ = conn.send(encode_plain(&Notification::cease(subcode))).await;
        conn.close().await;
    });
}

/// Sends our OPEN (encoded) on a colliding connection and reads the peer's.
pub async fn wait_for_open(mut conn: Connection, our_open: Vec<u8>) -> Option<(Connection, Open)> {
    conn.send(our_open).await.ok()?;
    let msg = tokio::time::timeout(OPEN_WAIT, conn.recv())
        .await
        .ok()?
        .ok()?;
    match codec::decode_message(&msg, &CodecCtx::default()) {
        Ok(Message::Open(open)) => Some((conn, open)),
        Ok(_) | Err(_) => {
            reject(conn, cease_sub::CONNECTION_COLLISION);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_identifier_wins() {
        let low = Ipv4Addr::new(10, 0, 0, 1);
        let high = Ipv4Addr::new(10, 0, 0, 2);
        // We are lower: the peer's connection (the new inbound) wins.
        assert!(keep_new_inbound(low, high, true));
        // We are higher: ours wins.
        assert!(!keep_new_inbound(high, low, true));
        // The current one is inbound too: take the newer.
        assert!(keep_new_inbound(high, low, false));
    }
}
