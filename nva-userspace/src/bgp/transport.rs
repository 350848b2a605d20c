//! One TCP connection carrying BGP messages: a reader task that frames messages, a
//! writer task that sends them. Separate tasks so that a peer slow to read our table
//! never stops us from reading its keepalives (and the other way round).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::codec::{HEADER_LEN, MAX_MESSAGE_LEN, Notification, parse_header};
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
    max_len: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl Connection {
    pub fn new(stream: TcpStream, outbound: bool) -> io::Result<Connection> {
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
        let (mut rd, mut wr) = stream.into_split();
        let max_len = Arc::new(AtomicUsize::new(MAX_MESSAGE_LEN));
        let (in_tx, rx) = mpsc::channel(READ_AHEAD);
        let limit = max_len.clone();
        let reader = tokio::spawn(async move {
            loop {
                let msg = read_message(&mut rd, limit.load(Ordering::Relaxed)).await;
                let stop = msg.is_err();
                if in_tx.send(msg).await.is_err() || stop {
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
            max_len,
            reader,
            writer: Some(writer),
        })
    }

    /// Raises the accepted message size once extended messages are negotiated.
    pub fn set_max_len(&self, len: usize) {
        self.max_len.store(len, Ordering::Relaxed);
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

    /// Flushes what is queued (bounded in time) and closes.
    pub async fn close(mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let abort = w.abort_handle();
            if tokio::time::timeout(NOTIFICATION_FLUSH, w).await.is_err() {
                abort.abort();
            }
        }
        self.reader.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
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
