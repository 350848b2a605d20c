//! Socket creation in the prober's network namespace, and small libc helpers.

use std::ffi::CString;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// An OS thread that stays in the network namespace of the thread that spawned it and runs
/// socket-creating closures there. It ends when the `Factory` is dropped.
pub(super) struct Factory {
    jobs: mpsc::Sender<Job>,
}

impl Factory {
    pub(super) fn spawn() -> io::Result<Factory> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nva-health-ns".into())
            .spawn(move || {
                for job in rx {
                    if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                        tracing::error!("health: a socket job panicked");
                    }
                }
            })?;
        Ok(Factory { jobs })
    }

    /// Runs `f` on the namespace thread and returns its result.
    pub(super) async fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let gone = || io::Error::other("the prober's socket thread is gone");
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// `socket(2)`, non-blocking and close-on-exec.
pub(super) fn socket(
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(super) fn domain(ip: &IpAddr) -> libc::c_int {
    match ip {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    }
}

/// `setsockopt(2)` with a plain-data value.
pub(super) fn setsockopt<T: Copy>(
    fd: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to size_of::<T>() readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_BINDTODEVICE`: the socket only sends and receives through `name`.
pub(super) fn bind_to_device(fd: &OwnedFd, name: &str) -> io::Result<()> {
    // SAFETY: `name` points to name.len() readable bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("binding to interface {name}: {e}"),
        ));
    }
    Ok(())
}

/// `SO_LINGER` 0: close() resets the connection instead of the FIN / TIME_WAIT dance.
pub(super) fn set_linger_zero(fd: &OwnedFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

/// Index of interface `name` in the calling thread's network namespace.
pub(super) fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}"),
        ));
    }
    Ok(index)
}

/// While a probe bound to an interface gets no replies, check every this many probes
/// whether the interface still has the index its socket is bound to.
pub(super) const CHECK_EVERY: u32 = 3;

/// Whether interface `name` no longer has index `bound` (deleted, or re-created under
/// the same name): a socket bound to it must be re-opened.
pub(super) async fn interface_moved(factory: &Factory, name: &str, bound: u32) -> bool {
    let name = name.to_owned();
    match factory.run(move || Ok(ifindex(&name).ok())).await {
        Ok(now) => now != Some(bound),
        Err(_) => false,
    }
}

/// Whether an address needs an interface (a scope) to be reached.
pub(super) fn needs_scope(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local() || a.is_multicast())
}

/// The socket address of a probe: link-local IPv6 targets get the interface's index as
/// scope. Looks the interface up, so runs on the factory thread.
pub(super) fn destination(
    ip: IpAddr,
    port: u16,
    interface: Option<&str>,
) -> io::Result<SocketAddr> {
    match ip {
        IpAddr::V4(a) => Ok(SocketAddr::V4(SocketAddrV4::new(a, port))),
        IpAddr::V6(a) => {
            let scope = if needs_scope(&ip) {
                let name = interface.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("link-local target {a} needs an interface"),
                    )
                })?;
                ifindex(name)?
            } else {
                0
            };
            Ok(SocketAddr::V6(SocketAddrV6::new(a, port, 0, scope)))
        }
    }
}

pub(super) fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A sockaddr filled by the kernel.
pub(super) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// 64 random bits from the kernel (falling back to time and pid).
pub(super) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is 8 writable bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(buf);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}
