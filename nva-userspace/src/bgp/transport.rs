//! One TCP connection carrying BGP messages: a reader task that frames messages, a
//! writer task that sends them. Separate tasks so that a peer slow to read our table
//! never stops us from reading its keepalives (and the other way round).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::codec::{HEADER_LEN, MAX_EXTENDED_MESSAGE_LEN, Notification, parse_header};
use super::socket::NOTIFICATION_FLUSH;

/// Messages read ahead before the reader waits for the session (TCP back-pressure).
const READ_AHEAD: usize = 64;
/// Messages queued for sending before the session waits for the writer.
const WRITE_QUEUE: usize = 256;

#[derive(Debug)]
pub enum ReadError {
    /// The header is invalid: send this NOTIFICATION.
    Header(Notification),
    /// The peer closed the connection.
    Closed,
    Io(io::Error),
}

pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// We initiated it (for collision resolution).
    pub outbound: bool,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    rx: mpsc::Receiver<Result<Vec<u8>, ReadError>>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Connection {
    pub fn new(stream: TcpStream, outbound: bool) -> io::Result<Connection> {
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
        let (mut rd, mut wr) = stream.into_split();
        let (in_tx, rx) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(async move {
            loop {
                // Framing only, at the largest size any session may negotiate: the reader
                // runs ahead of the session, so it may read an UPDATE before the OPEN
                // that allows it is processed (BIRD sends OPEN and KEEPALIVE in one
                // segment, then large UPDATEs at once). The session's decoder enforces
                // the negotiated limit on each message.
                let msg = read_message(&mut rd, MAX_EXTENDED_MESSAGE_LEN).await;
                let stop = msg.is_err();
                if in_tx.send(msg).await.is_err() {
                    // Closed by the session: read on to the peer's FIN, so that the
                    // socket is closed with nothing unread. Closing with unread data
                    // sends a RST, which can discard our final NOTIFICATION.
                    drain(&mut rd).await;
                    break;
                }
                if stop {
                    break;
                }
            }
        });
        let (tx, mut out_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(buf) = out_rx.recv().await {
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        Ok(Connection {
            local,
            remote,
            outbound,
            tx: Some(tx),
            rx,
            reader: Some(reader),
            writer: Some(writer),
        })
    }

    /// Queues one encoded message; `Err` when the connection is gone.
    pub async fn send(&self, msg: Vec<u8>) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(msg).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// The next message (whole, header included).
    pub async fn recv(&mut self) -> Result<Vec<u8>, ReadError> {
        self.rx.recv().await.unwrap_or(Err(ReadError::Closed))
    }

    /// Flushes what is queued and closes; the reader drains what the peer still sends
    /// until its FIN. Both bounded in time.
    pub async fn close(mut self) {
        self.tx = None;
        self.rx.close();
        if let Some(reader) = self.reader.take() {
            tokio::spawn(bounded(reader));
        }
        if let Some(w) = self.writer.take() {
            bounded(w).await;
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(r) = &self.reader {
            r.abort();
        }
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

/// Waits for `task` at most NOTIFICATION_FLUSH, then aborts it.
async fn bounded(task: JoinHandle<()>) {
    let abort = task.abort_handle();
    if tokio::time::timeout(NOTIFICATION_FLUSH, task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Reads and discards until end of stream or an error.
async fn drain(rd: &mut (impl AsyncReadExt + Unpin)) {
    let mut buf = [0u8; 4096];
    while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn read_message(
    rd: &mut (impl AsyncReadExt + Unpin),
    max_len: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut head = [0u8; HEADER_LEN];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let header = match parse_header(&head, max_len) {
        Some(Ok(h)) => h,
        Some(Err(n)) => return Err(ReadError::Header(n)),
        None => return Err(ReadError::Closed),
    };
    let mut msg = vec![0u8; header.length];
    msg[..HEADER_LEN].copy_from_slice(&head);
    match rd.read_exact(&mut msg[HEADER_LEN..]).await {
        Ok(_) => Ok(msg),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
        Err(e) => Err(ReadError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    /// Closing while the peer's data sits unread must still deliver our last message and
    /// end with a FIN: a RST would let the kernel throw the NOTIFICATION away.
    #[tokio::test]
    async fn close_with_unread_input_sends_the_last_message_and_no_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let conn = Connection::new(ours, false).unwrap();
        // More than the reader takes ahead: plenty stays unread in the socket.
        let mut keepalive = [0xffu8; 19];
        keepalive[16..].copy_from_slice(&[0, 19, 4]);
        let flood: Vec<u8> = keepalive.repeat(20_000);
        peer.write_all(&flood).await.unwrap();
        let last = b"final message".to_vec();
        conn.send(last.clone()).await.unwrap();
        conn.close().await;

        let mut got = vec![0u8; last.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, last);
        let mut rest = [0u8; 16];
        let end = tokio::time::timeout(NOTIFICATION_FLUSH * 2, peer.read(&mut rest))
            .await
            .expect("no FIN");
        assert_eq!(end.unwrap(), 0, "end of stream");
        // Our side is gone once the drain is over. Had it reset the connection, this
        // write would fail with EPIPE; after a plain FIN the peer can still write.
        tokio::time::sleep(NOTIFICATION_FLUSH + Duration::from_millis(500)).await;
        peer.write_all(b"bye")
            .await
            .expect("the connection was reset, not closed");
    }

    /// The peer's OPEN, KEEPALIVE and a first UPDATE larger than 4,096 bytes in one
    /// segment (what BIRD sends once extended messages are negotiated): the reader must
    /// not judge the UPDATE by the pre-OPEN limit (it rejected it with 1/2 before).
    #[tokio::test]
    async fn a_large_update_right_behind_the_open_is_framed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let mut conn = Connection::new(ours, false).unwrap();
        let message = |kind: u8, len: usize| {
            let mut m = vec![0xffu8; 16];
            m.extend_from_slice(&(len as u16).to_be_bytes());
            m.push(kind);
            m.resize(len, 0);
            m
        };
        let mut burst = message(1, 29);
        burst.extend(message(4, 19));
        burst.extend(message(2, 5000));
        peer.write_all(&burst).await.unwrap();
        for len in [29, 19, 5000] {
            let msg = conn.recv().await.expect("framed");
            assert_eq!(msg.len(), len);
        }
    }
}
