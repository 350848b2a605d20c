//! ICMP / ICMPv6 echo over raw sockets: one socket per (family, interface), shared by all
//! targets, with a receive task that hands each echo reply to its probe, matched by source
//! address and identifier, then checked against the prober's token.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::Shared;
use super::sockets::{self, CHECK_EVERY, Factory};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO: u8 = 8;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;
/// `ICMP_FILTER` (level `SOL_RAW`): bit n set = drop ICMP type n.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` (level `IPPROTO_ICMPV6`): bit n set = drop ICMPv6 type n.
const ICMP6_FILTER: libc::c_int = 1;
/// Type, code, checksum, identifier, sequence.
const HEADER: usize = 8;
/// Token and 64-bit sequence number.
const PAYLOAD: usize = 16;

/// An echo reply for a probe: its 64-bit sequence number and when it was received.
pub(super) type Reply = (u64, Instant);
type Key = (IpAddr, u16);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) struct IcmpSocket {
    fd: AsyncFd<OwnedFd>,
    v6: bool,
    /// Index of the interface the socket is bound to (0: none): the scope of link-local
    /// targets.
    ifindex: u32,
    token: u64,
    probes: Mutex<HashMap<Key, mpsc::UnboundedSender<Reply>>>,
}

/// (IPv6, interface).
type SocketKey = (bool, Option<String>);

/// The prober's ICMP sockets, created on first use, with their receive tasks.
#[derive(Default)]
pub(super) struct Registry {
    sockets: Mutex<HashMap<SocketKey, (Arc<IcmpSocket>, AbortHandle)>>,
}

impl Registry {
    async fn get(
        &self,
        factory: &Factory,
        v6: bool,
        interface: Option<&str>,
        token: u64,
    ) -> io::Result<Arc<IcmpSocket>> {
        let key = (v6, interface.map(str::to_owned));
        if let Some((s, _)) = lock(&self.sockets).get(&key) {
            return Ok(s.clone());
        }
        let name = key.1.clone();
        let (fd, ifindex) = factory.run(move || open(v6, name.as_deref())).await?;
        // SAFETY: an OwnedFd stays open and returns the same descriptor until dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        let mut sockets = lock(&self.sockets);
        if let Some((s, _)) = sockets.get(&key) {
            return Ok(s.clone()); // another probe created it meanwhile; ours is closed
        }
        let socket = Arc::new(IcmpSocket {
            fd,
            v6,
            ifindex,
            token,
            probes: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(receive(socket.clone()));
        sockets.insert(key, (socket.clone(), task.abort_handle()));
        Ok(socket)
    }

    /// Drops `socket` (its interface is gone): the next probe opens a new one.
    fn forget(&self, socket: &Arc<IcmpSocket>) {
        lock(&self.sockets).retain(|_, (s, task)| {
            let keep = !Arc::ptr_eq(s, socket);
            if !keep {
                task.abort();
            }
            keep
        });
    }

    /// Stops the receive tasks (the sockets close when their probes are gone).
    pub(super) fn shutdown(&self) {
        for (_, (_, task)) in lock(&self.sockets).drain() {
            task.abort();
        }
    }
}

/// Opens a raw ICMP socket that only receives echo replies (on the factory thread).
fn open(v6: bool, interface: Option<&str>) -> io::Result<(OwnedFd, u32)> {
    let fd = if v6 {
        let fd = sockets::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
        let mut filter = [u32::MAX; 8];
        let t = usize::from(ICMP6_ECHO_REPLY);
        filter[t >> 5] &= !(1u32 << (t & 31));
        sockets::setsockopt(&fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
        fd
    } else {
        let fd = sockets::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)?;
        let filter: u32 = !(1u32 << ICMP_ECHO_REPLY);
        sockets::setsockopt(&fd, libc::SOL_RAW, ICMP_FILTER, &filter)?;
        fd
    };
    let ifindex = match interface {
        Some(name) => {
            sockets::bind_to_device(&fd, name)?;
            sockets::ifindex(name)?
        }
        None => 0,
    };
    Ok((fd, ifindex))
}

impl IcmpSocket {
    fn send(&self, dest: &SocketAddr, ident: u16, seq: u64) -> io::Result<()> {
        let mut pkt = [0u8; HEADER + PAYLOAD];
        pkt[0] = if self.v6 {
            ICMP6_ECHO_REQUEST
        } else {
            ICMP_ECHO
        };
        pkt[4..6].copy_from_slice(&ident.to_be_bytes());
        pkt[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        pkt[8..16].copy_from_slice(&self.token.to_be_bytes());
        pkt[16..24].copy_from_slice(&seq.to_be_bytes());
        if !self.v6 {
            // The kernel computes ICMPv6 checksums of raw sockets itself.
            let sum = checksum(&pkt);
            pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let (addr, len) = sockets::to_sockaddr(dest);
        // SAFETY: `pkt` and `addr` are valid for the given lengths during the call.
        let n = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&raw const addr).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Our echo reply's (identifier, sequence number), from a received datagram.
    fn parse(&self, buf: &[u8]) -> Option<(u16, u64)> {
        let icmp = if self.v6 {
            buf // raw ICMPv6 sockets do not see the IPv6 header
        } else {
            if buf.len() < 20 || buf[0] >> 4 != 4 {
                return None;
            }
            buf.get(usize::from(buf[0] & 0x0f) * 4..)?
        };
        if icmp.len() < HEADER + PAYLOAD {
            return None;
        }
        let want = if self.v6 {
            ICMP6_ECHO_REPLY
        } else {
            ICMP_ECHO_REPLY
        };
        if icmp[0] != want || icmp[1] != 0 || (!self.v6 && checksum(icmp) != 0) {
            return None;
        }
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        let short_seq = u16::from_be_bytes([icmp[6], icmp[7]]);
        let token = u64::from_be_bytes(icmp[8..16].try_into().ok()?);
        let seq = u64::from_be_bytes(icmp[16..24].try_into().ok()?);
        (token == self.token && short_seq == seq as u16).then_some((ident, seq))
    }

    fn dispatch(&self, buf: &[u8], from: IpAddr, at: Instant) {
        let Some((ident, seq)) = self.parse(buf) else {
            return;
        };
        if let Some(tx) = lock(&self.probes).get(&(from, ident)) {
            let _ = tx.send((seq, at));
        }
    }
}

async fn receive(socket: Arc<IcmpSocket>) {
    let mut buf = [0u8; 2048];
    loop {
        let mut guard = match socket.fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("health: ICMP socket: {e}");
                return;
            }
        };
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut from: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let res = guard.try_io(|fd| {
            let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are writable for the given lengths during the call.
            let n = unsafe {
                libc::recvfrom(
                    fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        });
        match res {
            Ok(Ok(n)) => {
                if let Some(from) = sockets::from_sockaddr(&from) {
                    socket.dispatch(&buf[..n], from.ip(), Instant::now());
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => {
                tracing::debug!("health: ICMP receive: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_would_block) => {}
        }
    }
}

/// Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One target's echo probe.
pub(super) struct IcmpProbe {
    target: IpAddr,
    interface: Option<String>,
    ident: u16,
    socket: Option<(Arc<IcmpSocket>, SocketAddr)>,
    /// Probes sent since the last reply.
    unanswered: u32,
    tx: mpsc::UnboundedSender<Reply>,
    rx: mpsc::UnboundedReceiver<Reply>,
}

impl IcmpProbe {
    pub(super) fn new(target: IpAddr, interface: Option<String>, ident: u16) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        IcmpProbe {
            target,
            interface,
            ident,
            socket: None,
            unanswered: 0,
            tx,
            rx,
        }
    }

    pub(super) async fn send(&mut self, shared: &Shared, seq: u64) -> io::Result<()> {
        self.unanswered = self.unanswered.saturating_add(1);
        if self.unanswered.is_multiple_of(CHECK_EVERY)
            && let (Some(name), Some((socket, _))) = (&self.interface, &self.socket)
            && sockets::interface_moved(&shared.factory, name, socket.ifindex).await
        {
            // Deleted, maybe re-created with a new index: the socket is bound to the old one.
            shared.icmp.forget(socket);
            self.close();
        }
        if self.socket.is_none() {
            if sockets::needs_scope(&self.target) && self.interface.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("link-local target {} needs an interface", self.target),
                ));
            }
            let v6 = self.target.is_ipv6();
            let socket = shared
                .icmp
                .get(&shared.factory, v6, self.interface.as_deref(), shared.token)
                .await?;
            lock(&socket.probes).insert((self.target, self.ident), self.tx.clone());
            let dest = match self.target {
                IpAddr::V6(a) if sockets::needs_scope(&self.target) => {
                    SocketAddr::V6(SocketAddrV6::new(a, 0, 0, socket.ifindex))
                }
                ip => SocketAddr::new(ip, 0),
            };
            self.socket = Some((socket, dest));
        }
        let (socket, dest) = self.socket.as_ref().expect("socket opened above");
        let result = socket.send(dest, self.ident, seq);
        if let Err(e) = &result
            && matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO))
        {
            // The socket's interface is gone (deleted, maybe re-created under the same name
            // with a new index): bind a new socket next time.
            shared.icmp.forget(socket);
            self.close();
        }
        result
    }

    fn close(&mut self) {
        if let Some((socket, _)) = self.socket.take() {
            lock(&socket.probes).remove(&(self.target, self.ident));
        }
    }

    /// The next echo reply (cancel-safe).
    pub(super) async fn next(&mut self) -> Reply {
        match self.rx.recv().await {
            Some(r) => {
                self.unanswered = 0;
                r
            }
            None => std::future::pending().await, // cannot happen: we hold a sender
        }
    }
}

impl Drop for IcmpProbe {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn checksum_rfc1071() {
        // Echo request, id 0x1234, seq 1, no payload.
        let mut pkt = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let c = checksum(&pkt);
        assert_eq!(c, 0xe5ca);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&pkt), 0);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }
}
