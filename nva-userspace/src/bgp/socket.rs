//! TCP sockets for BGP: source address, TTL for eBGP multihop, GTSM (RFC 5082), TCP MD5
//! signatures (RFC 2385), and listeners.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::config::PeerConfig;

/// GTSM: we send with TTL 255 and accept at least this, i.e. the peer may be at most
/// one router away.
pub const GTSM_MIN_TTL: u8 = 254;

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// TTL / hop limit of our packets, and the GTSM minimum for the peer's.
pub fn set_ttl(fd: &impl AsRawFd, v6: bool, cfg: &PeerConfig) -> io::Result<()> {
    // eBGP is one hop unless configured otherwise; iBGP is multihop by nature.
    let ttl: libc::c_int = if cfg.gtsm {
        255
    } else if let Some(t) = cfg.multihop_ttl {
        t as libc::c_int
    } else if cfg.is_ibgp() {
        64
    } else {
        1
    };
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
    }
    if cfg.gtsm {
        let min: libc::c_int = GTSM_MIN_TTL as libc::c_int;
        if v6 {
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &min)?;
        } else {
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &min)?;
        }
    }
    Ok(())
}

/// `struct tcp_md5sig` of <linux/tcp.h>.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

/// Installs (or with an empty key, removes) the TCP MD5 key for `peer` on `fd`. On an
/// IPv6 socket an IPv4 peer is given as a v4-mapped address.
pub fn set_md5(fd: &impl AsRawFd, socket_v6: bool, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > 80 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "MD5 key longer than 80 bytes",
        ));
    }
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut sig: TcpMd5Sig = unsafe { mem::zeroed() };
    let peer = match (socket_v6, peer) {
        (true, IpAddr::V4(a)) => IpAddr::V6(a.to_ipv6_mapped()),
        (_, p) => p,
    };
    match peer {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut sig.addr as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut sig.addr as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// Connects to the peer with every socket option in place before the SYN.
pub async fn connect(cfg: &PeerConfig) -> io::Result<TcpStream> {
    let remote = SocketAddr::new(cfg.remote_addr, cfg.remote_port);
    let v6 = remote.is_ipv6();
    let socket = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    set_ttl(&socket, v6, cfg)?;
    if let Some(key) = &cfg.md5_password {
        set_md5(&socket, v6, cfg.remote_addr, key.as_bytes())?;
    }
    if let Some(local) = cfg.local_addr {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    let stream = tokio::time::timeout(cfg.connect_retry(), socket.connect(remote))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Prepares an accepted connection for `cfg`'s peer (TTL, GTSM).
pub fn prepare_accepted(stream: &TcpStream, cfg: &PeerConfig) -> io::Result<()> {
    let v6 = stream.local_addr()?.is_ipv6();
    set_ttl(stream, v6, cfg)?;
    stream.set_nodelay(true)
}

/// A listening socket (SO_REUSEADDR; IPv6 sockets are v6-only so that an IPv4 and an
/// IPv6 listener can share the port).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    // The SYN-ACK leaves with the listener's TTL, before we know which peer connects:
    // 255 lets GTSM peers (minimum TTL 254) accept it; accepted sockets then get their
    // peer's own TTL in `prepare_accepted`.
    let ttl: libc::c_int = 255;
    if addr.is_ipv6() {
        let one: libc::c_int = 1;
        setsockopt(&socket, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &one)?;
        setsockopt(&socket, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
    } else {
        setsockopt(&socket, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
    }
    socket.bind(addr)?;
    socket.listen(64)
}

/// Time allowed to flush a final NOTIFICATION before the socket is closed.
pub const NOTIFICATION_FLUSH: Duration = Duration::from_secs(2);
