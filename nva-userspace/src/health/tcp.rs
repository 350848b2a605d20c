//! TCP connect probe: success = the connection is established before the next probe.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::pin::Pin;

use tokio::net::{TcpSocket, TcpStream};

use super::sockets::{self, Factory};

type Connect = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

pub(super) struct TcpProbe {
    target: IpAddr,
    port: u16,
    interface: Option<String>,
    /// The connection attempt in flight, with its sequence number.
    pending: Option<(u64, Connect)>,
}

/// A socket for one connection attempt (on the factory thread).
fn open(target: IpAddr, port: u16, interface: Option<&str>) -> io::Result<(OwnedFd, SocketAddr)> {
    let dest = sockets::destination(target, port, interface)?;
    let fd = sockets::socket(sockets::domain(&target), libc::SOCK_STREAM, 0)?;
    if let Some(name) = interface {
        sockets::bind_to_device(&fd, name)?;
    }
    sockets::set_linger_zero(&fd)?;
    Ok((fd, dest))
}

impl TcpProbe {
    pub(super) fn new(target: IpAddr, port: u16, interface: Option<String>) -> Self {
        TcpProbe {
            target,
            port,
            interface,
            pending: None,
        }
    }

    /// Abandons the previous attempt (if any) and starts a new connection.
    pub(super) async fn send(&mut self, factory: &Factory, seq: u64) -> io::Result<()> {
        self.pending = None;
        let (target, port, interface) = (self.target, self.port, self.interface.clone());
        let (fd, dest) = factory
            .run(move || open(target, port, interface.as_deref()))
            .await?;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        self.pending = Some((seq, Box::pin(socket.connect(dest))));
        Ok(())
    }

    /// The outcome of the attempt in flight (cancel-safe). The connection is closed at once.
    pub(super) async fn next(&mut self) -> (u64, bool) {
        let Some((seq, connect)) = self.pending.as_mut() else {
            return std::future::pending().await;
        };
        let result = connect.as_mut().await;
        let seq = *seq;
        self.pending = None;
        if let Err(e) = &result {
            tracing::trace!(target = %self.target, port = self.port, "health: TCP connect: {e}");
        }
        (seq, result.is_ok())
    }
}
