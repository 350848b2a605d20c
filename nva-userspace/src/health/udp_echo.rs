//! UDP echo probe (BFD-echo-like) and the responder that echoes datagrams back.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::sockets::{self, CHECK_EVERY, Factory};

const MAGIC: &[u8; 4] = b"NVAH";
/// Magic, token, sequence number.
const LEN: usize = 20;

/// Echoes every datagram received on `addr` back to its sender, forever. For tests and
/// for peers without BFD. An IPv6 wildcard address also serves IPv4 (dual stack); on a
/// wildcard address each reply leaves from the address its request was sent to
/// (`IP_PKTINFO` / `IPV6_PKTINFO`), as probes only accept echoes from their target.
pub async fn udp_echo_responder(addr: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding the UDP echo responder to {addr}"))?;
    serve_echo(&socket, None).await
}

/// Echoes datagrams on `socket`, counting them in `count`.
pub(super) async fn serve_echo(
    socket: &UdpSocket,
    count: Option<&AtomicU64>,
) -> anyhow::Result<()> {
    let local = socket.local_addr()?;
    let pktinfo = local.ip().is_unspecified();
    if pktinfo {
        let on: libc::c_int = 1;
        match local {
            SocketAddr::V4(_) => {
                sockets::setsockopt(socket, libc::IPPROTO_IP, libc::IP_PKTINFO, &on)?
            }
            SocketAddr::V6(_) => {
                sockets::setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &on)?
            }
        }
    }
    let fd = socket.as_raw_fd();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from, to) = match socket
            .async_io(Interest::READABLE, || recv_pktinfo(fd, &mut buf))
            .await
        {
            Ok(r) => r,
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e).context("UDP echo responder"),
        };
        if let Some(c) = count {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let data = &buf[..n];
        let mut sent = socket
            .async_io(Interest::WRITABLE, || send_pktinfo(fd, data, &from, to))
            .await;
        if to.is_some()
            && sent
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput)
        {
            // Not a usable source (broadcast, address gone...): let the kernel pick one.
            sent = socket
                .async_io(Interest::WRITABLE, || send_pktinfo(fd, data, &from, None))
                .await;
        }
        if let Err(e) = sent {
            tracing::debug!("health: UDP echo to {from}: {e}");
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

/// Room for one IP_PKTINFO or IPV6_PKTINFO control message, aligned for cmsghdr.
type Control = [u64; 8];

/// `recvmsg`: length, sender, and the local address the datagram was sent to (the
/// source for the reply) when the socket reports it.
fn recv_pktinfo(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all-zero is valid for these plain C structs.
    let mut from: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut control: Control = [0; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of::<Control>();
    // SAFETY: every pointer in `msg` is valid for its length during the call.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = sockets::from_sockaddr(&from)
        .ok_or_else(|| io::Error::other("datagram without a sender"))?;
    let mut local = None;
    // SAFETY: the kernel filled msg_control / msg_controllen; the CMSG_* macros stay inside
    // them, and the payloads are read unaligned with the size the header announces.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
        while !c.is_null() {
            let (level, ty, len) = ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize);
            let data = libc::CMSG_DATA(c);
            if level == libc::IPPROTO_IP
                && ty == libc::IP_PKTINFO
                && len >= libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as usize
            {
                let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                // ipi_spec_dst: the local address to answer from (also for broadcasts).
                local = Some(IpAddr::V4(Ipv4Addr::from(
                    info.ipi_spec_dst.s_addr.to_ne_bytes(),
                )));
            } else if level == libc::IPPROTO_IPV6
                && ty == libc::IPV6_PKTINFO
                && len >= libc::CMSG_LEN(mem::size_of::<libc::in6_pktinfo>() as u32) as usize
            {
                let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                local = (!ip.is_multicast()).then_some(IpAddr::V6(ip));
            }
            c = libc::CMSG_NXTHDR(&raw const msg, c);
        }
    }
    Ok((n as usize, from, local))
}

/// `sendmsg` to `to`, from `local` when given.
fn send_pktinfo(
    fd: RawFd,
    data: &[u8],
    to: &SocketAddr,
    local: Option<IpAddr>,
) -> io::Result<usize> {
    let (addr, addr_len) = sockets::to_sockaddr(to);
    let mut control: Control = [0; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw const addr).cast_mut().cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the control buffer is larger than CMSG_SPACE of either payload and aligned
    // for cmsghdr; the header and payload are written inside it.
    unsafe {
        let mut put =
            |level: libc::c_int, ty: libc::c_int, size: usize, write: &dyn Fn(*mut u8)| {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(size as u32) as usize;
                let c = libc::CMSG_FIRSTHDR(&raw const msg);
                (*c).cmsg_level = level;
                (*c).cmsg_type = ty;
                (*c).cmsg_len = libc::CMSG_LEN(size as u32) as usize;
                write(libc::CMSG_DATA(c));
            };
        match (local, to) {
            (Some(IpAddr::V4(src)), SocketAddr::V4(_)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(src.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                put(
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    mem::size_of_val(&info),
                    &|p| p.cast::<libc::in_pktinfo>().write_unaligned(info),
                );
            }
            (Some(IpAddr::V6(src)), SocketAddr::V6(_)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                put(
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    mem::size_of_val(&info),
                    &|p| p.cast::<libc::in6_pktinfo>().write_unaligned(info),
                );
            }
            _ => {}
        }
    }
    // SAFETY: every pointer in `msg` is valid for its length during the call.
    let n = unsafe { libc::sendmsg(fd, &raw const msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One target's echo probe: a UDP socket connected to target:port, so the kernel only
/// delivers datagrams from there.
pub(super) struct UdpProbe {
    target: IpAddr,
    port: u16,
    interface: Option<String>,
    token: u64,
    /// The connected socket and the index of its interface (0: none).
    socket: Option<(UdpSocket, u32)>,
    /// Probes sent since the last echo.
    unanswered: u32,
}

/// What came back.
pub(super) enum Echo {
    /// The echo of probe `seq`.
    Reply(u64),
    /// An error (port unreachable...): the probe in flight failed.
    Failed,
}

fn open(
    target: IpAddr,
    port: u16,
    interface: Option<&str>,
) -> io::Result<(std::net::UdpSocket, u32)> {
    let dest = sockets::destination(target, port, interface)?;
    let fd = sockets::socket(sockets::domain(&target), libc::SOCK_DGRAM, 0)?;
    let ifindex = match interface {
        Some(name) => {
            sockets::bind_to_device(&fd, name)?;
            sockets::ifindex(name)?
        }
        None => 0,
    };
    let socket = std::net::UdpSocket::from(fd);
    socket.connect(dest)?;
    Ok((socket, ifindex))
}

impl UdpProbe {
    pub(super) fn new(target: IpAddr, port: u16, interface: Option<String>, token: u64) -> Self {
        UdpProbe {
            target,
            port,
            interface,
            token,
            socket: None,
            unanswered: 0,
        }
    }

    fn payload(&self, seq: u64) -> [u8; LEN] {
        let mut p = [0u8; LEN];
        p[..4].copy_from_slice(MAGIC);
        p[4..12].copy_from_slice(&self.token.to_be_bytes());
        p[12..].copy_from_slice(&seq.to_be_bytes());
        p
    }

    pub(super) async fn send(&mut self, factory: &Factory, seq: u64) -> io::Result<()> {
        self.unanswered = self.unanswered.saturating_add(1);
        if self.unanswered.is_multiple_of(CHECK_EVERY)
            && let (Some(name), Some((_, ifindex))) = (&self.interface, &self.socket)
            && sockets::interface_moved(factory, name, *ifindex).await
        {
            self.socket = None; // bound to an interface index that is gone
        }
        if self.socket.is_none() {
            let (target, port, interface) = (self.target, self.port, self.interface.clone());
            let (socket, ifindex) = factory
                .run(move || open(target, port, interface.as_deref()))
                .await?;
            self.socket = Some((UdpSocket::from_std(socket)?, ifindex));
        }
        let payload = self.payload(seq);
        let (socket, _) = self.socket.as_ref().expect("socket opened above");
        let result = socket.send(&payload).await.map(drop);
        if let Err(e) = &result
            && e.kind() != io::ErrorKind::ConnectionRefused
        {
            // Maybe the route or the interface changed under the connected socket
            // (ENODEV after the interface was re-created...): open a new one next time.
            self.socket = None;
        }
        result
    }

    /// The next echo or error (cancel-safe).
    pub(super) async fn next(&mut self) -> Echo {
        let mut buf = [0u8; LEN + 1];
        loop {
            let Some((socket, _)) = &self.socket else {
                return std::future::pending().await;
            };
            match socket.recv(&mut buf).await {
                Ok(LEN) => {
                    let seq = u64::from_be_bytes(buf[12..LEN].try_into().expect("8 bytes"));
                    if buf[..LEN] == self.payload(seq) {
                        self.unanswered = 0;
                        return Echo::Reply(seq);
                    }
                }
                Ok(_) => {} // not ours
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Echo::Failed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(target = %self.target, port = self.port, "health: UDP echo receive: {e}");
                    self.socket = None; // reopened by the next probe
                    return Echo::Failed;
                }
            }
        }
    }
}
