//! Real traffic inside namespaces: UDP sink/flows, TCP echo, ping, raw frame injection and
//! capture. Sockets are created on threads that entered the namespace ([`Netns::run`]);
//! a socket stays in the namespace it was created in, so background threads may be anywhere.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener,
    TcpStream, UdpSocket,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::netns::{Netns, if_nametoindex};

/// How long a receive thread sleeps in poll() before checking its stop flag.
const POLL_MS: i32 = 50;

fn last_err(what: &str) -> anyhow::Error {
    anyhow!("{what}: {}", std::io::Error::last_os_error())
}

fn setsockopt_int(fd: RawFd, level: i32, opt: i32, val: i32, what: &str) -> Result<()> {
    // SAFETY: passes a pointer to a live i32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_err(what));
    }
    Ok(())
}

/// A `sockaddr_storage` holding `addr`, with its length.
fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Converts a kernel-filled `sockaddr_storage` to a `SocketAddr` (None for other families).
fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says this is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// One datagram seen by a [`UdpSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Sender's address and port.
    pub src: SocketAddr,
    /// Address the receiving socket was bound to.
    pub local: SocketAddr,
    /// Destination address in the IP header (IP_PKTINFO / IPV6_PKTINFO).
    pub dst: Option<IpAddr>,
    /// Interface index the datagram arrived on (in the sink's namespace).
    pub ifindex: Option<u32>,
    /// Received TTL / hop limit (IP_RECVTTL / IPV6_RECVHOPLIMIT).
    pub ttl: Option<u8>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Datagram {
    /// Flow index of a payload written by [`send_flows`] (`nvat flow=<i> seq=<j>`).
    pub fn flow_index(&self) -> Option<u16> {
        parse_flow_payload(&self.payload).map(|(i, _)| i)
    }
    /// Sequence number of a payload written by [`send_flows`].
    pub fn seq(&self) -> Option<u32> {
        parse_flow_payload(&self.payload).map(|(_, j)| j)
    }
}

/// Payload [`send_flows`] sends for flow `i`, packet `j`.
pub fn flow_payload(i: u16, j: u32) -> Vec<u8> {
    format!("nvat flow={i} seq={j}").into_bytes()
}

/// Parses a [`flow_payload`] back into (flow index, sequence number).
pub fn parse_flow_payload(p: &[u8]) -> Option<(u16, u32)> {
    let s = std::str::from_utf8(p).ok()?.strip_prefix("nvat flow=")?;
    let (i, j) = s.split_once(" seq=")?;
    Some((i.parse().ok()?, j.parse().ok()?))
}

/// Creates a non-blocking UDP socket bound to `addr` with TTL and pktinfo reception enabled.
fn sink_socket(addr: &SocketAddr) -> Result<UdpSocket> {
    let fam = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            fam,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(last_err("socket(UDP)"));
    }
    // SAFETY: fd was just returned by socket() and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Big receive buffer so bursts are not dropped at the socket (root may force it).
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20, "").is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20, "");
    }
    if addr.is_ipv4() {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1, "IP_RECVTTL")?;
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1, "IP_PKTINFO")?;
    } else {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1, "IPV6_V6ONLY")?;
        setsockopt_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            1,
            "IPV6_RECVHOPLIMIT",
        )?;
        setsockopt_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            1,
            "IPV6_RECVPKTINFO",
        )?;
    }
    let (ss, len) = to_sockaddr(addr);
    // SAFETY: ss/len describe a valid sockaddr of the socket's family.
    if unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(last_err(&format!("bind UDP {addr}")));
    }
    Ok(UdpSocket::from(owned))
}

/// Receives one datagram from `sock` with its control messages; Ok(None) when none is queued.
fn recv_datagram(sock: &UdpSocket, local: SocketAddr, buf: &mut [u8]) -> Result<Option<Datagram>> {
    // SAFETY: all-zero is valid for these C structs.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut cbuf = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero msghdr is valid; fields set below point at live buffers.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 64]>();
    // SAFETY: msg points at valid buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted {
            return Ok(None);
        }
        bail!("recvmsg on {local}: {e}");
    }
    let src = from_sockaddr(&name).ok_or_else(|| anyhow!("recvmsg: unknown source family"))?;
    let mut d = Datagram {
        src,
        local,
        dst: None,
        ifindex: None,
        ttl: None,
        payload: buf[..n as usize].to_vec(),
    };
    // SAFETY: walking the control buffer the kernel just filled, with the libc CMSG macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let v = std::ptr::read_unaligned(data as *const i32);
                    d.ttl = Some(v as u8);
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p = std::ptr::read_unaligned(data as *const libc::in_pktinfo);
                    d.dst = Some(IpAddr::V4(Ipv4Addr::from(p.ipi_addr.s_addr.to_ne_bytes())));
                    d.ifindex = Some(p.ipi_ifindex as u32);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p = std::ptr::read_unaligned(data as *const libc::in6_pktinfo);
                    d.dst = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
                    d.ifindex = Some(p.ipi6_ifindex);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(d))
}

/// Waits until one of `fds` is readable or [`POLL_MS`] passes.
fn poll_readable(fds: &[RawFd]) -> Result<()> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, POLL_MS) };
    if rc < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
        return Err(last_err("poll"));
    }
    Ok(())
}

/// UDP receiver in a namespace, recording every datagram on a background thread.
pub struct UdpSink {
    local: Vec<SocketAddr>,
    received: Arc<Mutex<Vec<Datagram>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl UdpSink {
    /// Binds one UDP socket per address in `ns` (v4 and/or v6; port 0 picks one) and starts
    /// recording datagrams with source, destination, TTL / hop limit and payload.
    pub fn start(ns: &Netns, addrs: &[SocketAddr]) -> Result<UdpSink> {
        ensure!(!addrs.is_empty(), "UdpSink needs at least one address");
        let socks = ns.run(|| -> Result<Vec<(UdpSocket, SocketAddr)>> {
            addrs
                .iter()
                .map(|a| {
                    let s = sink_socket(a)?;
                    let l = s.local_addr()?;
                    Ok((s, l))
                })
                .collect()
        })?;
        let local = socks.iter().map(|(_, l)| *l).collect();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let fds: Vec<RawFd> = socks.iter().map(|(s, _)| s.as_raw_fd()).collect();
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                poll_readable(&fds)?;
                for (s, l) in &socks {
                    while let Some(d) = recv_datagram(s, *l, &mut buf)? {
                        r.lock().unwrap_or_else(|e| e.into_inner()).push(d);
                    }
                }
            }
            Ok(())
        });
        Ok(UdpSink {
            local,
            received,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound addresses (with the actual ports when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// A copy of every datagram received so far.
    pub fn received(&self) -> Vec<Datagram> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of datagrams received so far.
    pub fn count(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Forgets the datagrams received so far.
    pub fn clear(&self) {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Polls until at least `n` datagrams arrived or `timeout` passes; returns the count.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        loop {
            let c = self.count();
            if c >= n || Instant::now() >= end {
                return c;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the receive thread and closes the sockets (also done on drop).
    pub fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("UdpSink thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("nva-tests: UdpSink: {e:#}");
        }
    }
}

/// Sets the unicast TTL / hop limit of `s` (family taken from `dst`).
fn set_ttl(s: &UdpSocket, dst: &SocketAddr, ttl: u8) -> Result<()> {
    if dst.is_ipv4() {
        s.set_ttl(u32::from(ttl))?;
    } else {
        setsockopt_int(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            i32::from(ttl),
            "IPV6_UNICAST_HOPS",
        )?;
    }
    Ok(())
}

/// Sends `packets_per_flow` datagrams on each of `flows` UDP sockets (distinct ephemeral
/// source ports, hence distinct 5-tuples) from `ns` to `dst`, round-robin and lightly paced,
/// with payload [`flow_payload`]; optional TTL / hop limit. Returns each flow's source
/// address (index = flow index). ICMP errors (ECONNREFUSED) on send are ignored.
pub fn send_flows(
    ns: &Netns,
    dst: SocketAddr,
    flows: u16,
    packets_per_flow: u32,
    ttl: Option<u8>,
) -> Result<Vec<SocketAddr>> {
    send_flows_from(ns, dst, &vec![0; flows as usize], packets_per_flow, ttl)
}

/// Like [`send_flows`], with one flow per given source port (0 = ephemeral), so the same
/// 5-tuples can be sent again later (e.g. before and after a next hop fails).
pub fn send_flows_from(
    ns: &Netns,
    dst: SocketAddr,
    src_ports: &[u16],
    packets_per_flow: u32,
    ttl: Option<u8>,
) -> Result<Vec<SocketAddr>> {
    ns.run(|| -> Result<Vec<SocketAddr>> {
        let mut socks = Vec::with_capacity(src_ports.len());
        let mut srcs = Vec::with_capacity(src_ports.len());
        for &port in src_ports {
            let any: SocketAddr = if dst.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, port).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, port).into()
            };
            let s = UdpSocket::bind(any).context("bind flow socket")?;
            if let Some(t) = ttl {
                set_ttl(&s, &dst, t)?;
            }
            s.connect(dst)
                .with_context(|| format!("connect UDP to {dst}"))?;
            srcs.push(s.local_addr()?);
            socks.push(s);
        }
        let mut sent = 0u64;
        for j in 0..packets_per_flow {
            for (i, s) in socks.iter().enumerate() {
                let p = flow_payload(i as u16, j);
                let mut tries = 0;
                loop {
                    match s.send(&p) {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && tries < 100 => {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => {
                            return Err(anyhow!(e).context(format!("send to {dst} (flow {i})")));
                        }
                    }
                }
                sent += 1;
                if sent.is_multiple_of(32) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        Ok(srcs)
    })
}

/// A TCP echo server in a namespace (one thread per connection); stopped on drop.
pub struct TcpEchoServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEchoServer {
    /// The listening address (actual port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a TCP echo server listening on `addr` in `ns`: each connection gets back what it
/// sends until it shuts down its write side.
pub fn tcp_echo_server(ns: &Netns, addr: SocketAddr) -> Result<TcpEchoServer> {
    let listener = ns
        .run(|| TcpListener::bind(addr))
        .with_context(|| format!("TCP listen on {addr} in {}", ns.name()))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (acc, st) = (accepted.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    acc.fetch_add(1, Ordering::Relaxed);
                    std::thread::spawn(move || {
                        let _ = echo(conn);
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let _ = poll_readable(&[listener.as_raw_fd()]);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Ok(TcpEchoServer {
        addr,
        accepted,
        stop,
        thread: Some(thread),
    })
}

fn echo(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0u8; 16384];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return conn.shutdown(Shutdown::Write);
        }
        conn.write_all(&buf[..n])?;
    }
}

/// Connects from `ns` to `dst` (3 s timeout), sends `payload`, shuts down writing and returns
/// everything read back until EOF (5 s I/O timeouts).
pub fn tcp_roundtrip(ns: &Netns, dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>> {
    ns.run(|| -> Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))
            .with_context(|| format!("TCP connect to {dst}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(payload).context("TCP write")?;
        s.shutdown(Shutdown::Write)?;
        let mut out = Vec::with_capacity(payload.len());
        s.read_to_end(&mut out).context("TCP read")?;
        Ok(out)
    })
}

/// Outcome of [`ping`].
#[derive(Debug, Clone)]
pub struct PingResult {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// An ICMP "Time to live exceeded" / "Time exceeded: Hop limit" came back.
    pub time_exceeded: bool,
    /// ping's full stdout + stderr.
    pub output: String,
}

/// Runs `ping -c COUNT -W 1 -i 0.2 [-t TTL] DST` (`-6` for IPv6) in `ns`. Lost replies are
/// not an error; a ping that could not run (exit 2 without statistics) is.
pub fn ping(ns: &Netns, dst: IpAddr, count: u32, ttl: Option<u8>) -> Result<PingResult> {
    let count_s = count.to_string();
    let ttl_s = ttl.map(|t| t.to_string());
    let dst_s = dst.to_string();
    let mut cmd = vec![
        "ping",
        if dst.is_ipv4() { "-4" } else { "-6" },
        "-n",
        "-c",
        &count_s,
        "-W",
        "1",
        "-i",
        "0.2",
    ];
    if let Some(t) = &ttl_s {
        cmd.extend(["-t", t]);
    }
    cmd.push(&dst_s);
    let out = ns.exec(&cmd)?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| {
            anyhow!(
                "ping {dst} in {} failed ({}): {output}",
                ns.name(),
                out.status
            )
        })?;
    let num_before = |word: &str| -> Option<u32> {
        let idx = stats.find(word)?;
        stats[..idx].split_whitespace().last()?.parse().ok()
    };
    Ok(PingResult {
        transmitted: num_before("packets transmitted").unwrap_or(0),
        received: num_before("received").unwrap_or(0),
        time_exceeded: output.contains("Time to live exceeded")
            || output.contains("Time exceeded: Hop limit"),
        output,
    })
}

/// Opens an AF_PACKET SOCK_RAW socket bound to `ifname` (calling thread's netns).
fn packet_socket(ifname: &str, protocol: u16) -> Result<OwnedFd> {
    let ifindex = if_nametoindex(ifname)?;
    let proto_be = protocol.to_be();
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto_be),
        )
    };
    if fd < 0 {
        return Err(last_err("socket(AF_PACKET)"));
    }
    // SAFETY: fd is fresh and owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto_be;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_err(&format!("bind AF_PACKET to {ifname}")));
    }
    Ok(owned)
}

/// Sends each of `frames` (complete Ethernet frames, no FCS) out of `ifname` in `ns` through
/// an AF_PACKET raw socket; with a veth, they arrive at its peer as received frames.
pub fn inject_frames(ns: &Netns, ifname: &str, frames: &[Vec<u8>]) -> Result<()> {
    ns.run(|| -> Result<()> {
        let sock = packet_socket(ifname, 0)?;
        for (i, f) in frames.iter().enumerate() {
            // SAFETY: f is a valid buffer of f.len() bytes.
            let n = unsafe { libc::send(sock.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            if n < 0 {
                return Err(last_err(&format!(
                    "sending frame {i} ({} bytes) on {ifname}",
                    f.len()
                )));
            }
            ensure!(n as usize == f.len(), "short send of frame {i} on {ifname}");
        }
        Ok(())
    })
}

/// A frame seen by a [`FrameCapture`].
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// `PACKET_HOST`, `PACKET_OUTGOING`, ... (sll_pkttype).
    pub pkttype: u8,
    /// The frame from the Ethernet header on.
    pub data: Vec<u8>,
}

/// Records every frame received or sent on one interface (AF_PACKET, ETH_P_ALL).
pub struct FrameCapture {
    frames: Arc<Mutex<Vec<CapturedFrame>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl FrameCapture {
    /// Starts capturing on `ifname` in `ns`.
    pub fn start(ns: &Netns, ifname: &str) -> Result<FrameCapture> {
        let sock = ns.run(|| packet_socket(ifname, libc::ETH_P_ALL as u16))?;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (fr, st) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let fd = sock.as_raw_fd();
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                poll_readable(&[fd])?;
                loop {
                    // SAFETY: all-zero sockaddr_ll is valid.
                    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
                    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                    // SAFETY: buf and sll are valid for the given sizes.
                    let n = unsafe {
                        libc::recvfrom(
                            fd,
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_DONTWAIT,
                            (&mut sll as *mut libc::sockaddr_ll).cast(),
                            &mut len,
                        )
                    };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted {
                            break;
                        }
                        bail!("capture recvfrom: {e}");
                    }
                    fr.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(CapturedFrame {
                            pkttype: sll.sll_pkttype,
                            data: buf[..n as usize].to_vec(),
                        });
                }
            }
            Ok(())
        });
        Ok(FrameCapture {
            frames,
            stop,
            thread: Some(thread),
        })
    }

    /// A copy of the frames captured so far.
    pub fn frames(&self) -> Vec<CapturedFrame> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops capturing (also done on drop).
    pub fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("FrameCapture thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for FrameCapture {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("nva-tests: FrameCapture: {e:#}");
        }
    }
}

/// Resilient ECMP after next hop `server` comes back: it gets some flows again, and every
/// flow is either on it or still where it was (`before`, flow -> server) while it was
/// away. No other flow moves.
pub fn assert_only_flows_to(
    server: usize,
    before: &std::collections::BTreeMap<u16, usize>,
    now: &std::collections::BTreeMap<u16, usize>,
) {
    assert!(
        now.values().any(|k| *k == server),
        "server {server} gets no flow back: {now:?}"
    );
    for (flow, s) in now {
        assert!(
            *s == server || *s == before[flow],
            "flow {flow} moved from server {} to {s}",
            before[flow]
        );
    }
}

/// Sends `count` datagrams from `from` to port 7000 of `dst`, one per `gap`, round-robin
/// over 32 flows (ephemeral source ports); the payload starts with the sequence number.
/// Returns each one's send time.
pub fn paced(from: &Netns, dst: &str, count: u32, gap: Duration) -> JoinHandle<Vec<Instant>> {
    let dst: SocketAddr = format!("{dst}:7000").parse().unwrap();
    from.spawn_thread(move || {
        let socks: Vec<UdpSocket> = (0..32)
            .map(|_| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
                s.connect(dst).unwrap();
                s
            })
            .collect();
        let start = Instant::now();
        let mut sent = Vec::with_capacity(count as usize);
        for n in 0..count {
            if let Some(w) = (start + gap * n).checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            sent.push(Instant::now());
            let _ = socks[(n % 32) as usize].send(&n.to_be_bytes());
        }
        sent
    })
}

/// The sequence numbers (first 4 payload bytes) a sink got.
pub fn sequence_numbers(sink: &UdpSink) -> HashSet<u32> {
    sink.received()
        .iter()
        .filter(|d| d.payload.len() >= 4)
        .map(|d| u32::from_be_bytes([d.payload[0], d.payload[1], d.payload[2], d.payload[3]]))
        .collect()
}
