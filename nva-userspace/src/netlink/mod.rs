//! Kernel state the controller needs from rtnetlink: links, addresses and
//! neighbour (ARP / NDP) entries, plus a change stream of the same.
//!
//! All sockets are opened in the network namespace of the *calling thread* at
//! the time [`Netlink::connect`] / [`watch`] is called; once open they stay
//! bound to that namespace whatever thread later drives them.

mod decode;
pub mod nexthops;
pub mod routes;
#[cfg(test)]
mod tests;
pub mod xdp;

use std::{collections::HashSet, net::IpAddr, os::fd::AsRawFd};

use anyhow::{Context, anyhow};
use futures::{StreamExt, TryStreamExt};
use rtnetlink::{
    MulticastGroup,
    packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
    },
    sys::{AsyncSocket, SocketAddr},
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LinkInfo {
    pub name: String,
    pub ifindex: u32,
    /// From IFLA_ADDRESS; `[0; 6]` when the link has no 6-byte address
    /// (loopback, tun, ...).
    pub mac: [u8; 6],
    pub mtu: u32,
    /// administratively up AND has carrier (operstate up / unknown-with-carrier)
    pub up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddrInfo {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    /// link-layer address if the entry has one
    pub mac: Option<[u8; 6]>,
    /// true when the entry can be used to send: state REACHABLE, STALE, DELAY, PROBE, PERMANENT or NOARP, and mac is Some
    pub usable: bool,
    /// state FAILED (resolution failed; INCOMPLETE, still in progress, is not failed)
    pub failed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NetEvent {
    Link(LinkInfo),
    /// The interface with this ifindex is gone. The kernel sends
    /// RTM_DELNEIGH / RTM_DELADDR for the device's entries before the
    /// RTM_DELLINK (so `NeighbourRemoved` / `AddrRemoved` come first), but
    /// it is safe to treat this as removing all of them too.
    LinkRemoved(u32 /*ifindex*/),
    Neighbour(Neighbour),
    NeighbourRemoved {
        ifindex: u32,
        ip: IpAddr,
    },
    AddrAdded(AddrInfo),
    AddrRemoved(AddrInfo),
}

/// Request side of rtnetlink: dumps and the resolve request.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// Turns an rtnetlink error into an anyhow error. Kernel error replies become
/// `std::io::Error` (so callers can `downcast_ref::<io::Error>()` and look at
/// `raw_os_error()`), and their message is the errno text.
fn nl_err(e: rtnetlink::Error) -> anyhow::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.code.is_some() => anyhow::Error::new(m.to_io()),
        other => anyhow::Error::new(other),
    }
}

/// Kernel errno of a netlink error reply, if that is what `e` is.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn current_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .map_err(|e| anyhow!(e).context("netlink: must be called from within a tokio runtime"))
}

impl Netlink {
    /// Opens a netlink connection in the calling thread's network namespace and spawns its driver on the current tokio runtime.
    pub fn connect() -> anyhow::Result<Self> {
        let rt = current_runtime()?;
        let (conn, handle, _unsolicited) =
            rtnetlink::new_connection().context("netlink: opening NETLINK_ROUTE socket")?;
        // The driver ends once every clone of the handle is dropped.
        rt.spawn(conn);
        Ok(Self { handle })
    }

    /// The underlying rtnetlink handle, for requests this module does not wrap.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    pub async fn links(&self) -> anyhow::Result<Vec<LinkInfo>> {
        let msgs: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_err)
            .context("netlink: dumping links (RTM_GETLINK)")?;
        Ok(msgs.iter().map(decode::link_info).collect())
    }

    pub async fn link_by_name(&self, name: &str) -> anyhow::Result<Option<LinkInfo>> {
        // No interface can have such a name; the kernel would reject the
        // request (EINVAL) rather than report ENODEV.
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Ok(None);
        }
        let mut stream = self.handle.link().get().match_name(name).execute();
        match stream.try_next().await {
            Ok(Some(m)) => Ok(Some(decode::link_info(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(e)).with_context(|| format!("netlink: looking up link {name:?}")),
        }
    }

    /// Looks a link up by interface index; `None` when there is no such link.
    pub async fn link_by_index(&self, ifindex: u32) -> anyhow::Result<Option<LinkInfo>> {
        if ifindex == 0 {
            // Index 0 in a GETLINK means "no index": the kernel would then
            // look for a name and fail with EINVAL.
            return Ok(None);
        }
        let mut stream = self.handle.link().get().match_index(ifindex).execute();
        match stream.try_next().await {
            Ok(Some(m)) => Ok(Some(decode::link_info(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(e)).with_context(|| format!("netlink: looking up link {ifindex}")),
        }
    }

    /// All IPv4 and IPv6 addresses of all interfaces.
    pub async fn addresses(&self) -> anyhow::Result<Vec<AddrInfo>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_err)
            .context("netlink: dumping addresses (RTM_GETADDR)")?;
        Ok(msgs.iter().filter_map(decode::addr_info).collect())
    }

    /// IPv4 and IPv6 neighbour table entries.
    pub async fn neighbours(&self) -> anyhow::Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let msgs: Vec<_> = self
                .handle
                .neighbours()
                .get()
                .set_address_family(family)
                .execute()
                .try_collect()
                .await
                .map_err(nl_err)
                .with_context(|| {
                    format!("netlink: dumping {family:?} neighbours (RTM_GETNEIGH)")
                })?;
            out.extend(msgs.iter().filter_map(decode::neighbour));
        }
        Ok(out)
    }

    /// Looks up the neighbour entry for `ip` on `ifindex` (RTM_GETNEIGH for
    /// one entry); `None` when there is none.
    pub async fn neighbour(&self, ifindex: u32, ip: IpAddr) -> anyhow::Result<Option<Neighbour>> {
        match self.get_neighbour_msg(ifindex, ip).await {
            Ok(m) => Ok(m.as_ref().and_then(decode::neighbour)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_err(e)).with_context(|| {
                format!("netlink: looking up neighbour {ip} on ifindex {ifindex}")
            }),
        }
    }

    async fn get_neighbour_msg(
        &self,
        ifindex: u32,
        ip: IpAddr,
    ) -> Result<Option<NeighbourMessage>, rtnetlink::Error> {
        let mut msg = NeighbourMessage::default();
        msg.header.ifindex = ifindex;
        let dst = match ip {
            IpAddr::V4(a) => {
                msg.header.family = AddressFamily::Inet;
                NeighbourAddress::Inet(a)
            }
            IpAddr::V6(a) => {
                msg.header.family = AddressFamily::Inet6;
                NeighbourAddress::Inet6(a)
            }
        };
        msg.attributes.push(NeighbourAttribute::Destination(dst));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut responses = self.handle.clone().request(req)?;
        let mut found = None;
        while let Some(resp) = responses.next().await {
            match resp.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                    found = Some(m)
                }
                NetlinkPayload::Error(e) if e.raw_code() == -libc::ENOENT => return Ok(None),
                NetlinkPayload::Error(e) => return Err(rtnetlink::Error::NetlinkError(e)),
                _ => {}
            }
        }
        Ok(found)
    }

    /// Asks the kernel to resolve `ip` on `ifindex` (ARP / ND) without waiting: create the
    /// neighbour entry with flag NTF_USE (kernel then calls neigh_event_send); if the entry exists already, that is fine, not an error.
    ///
    /// The outcome shows up later through [`watch`] (REACHABLE, or FAILED
    /// after the probes; the kernel sends no notification for the INCOMPLETE
    /// step) or [`Netlink::neighbours`]. Existing entries: REACHABLE / NOARP
    /// are left as they are, STALE goes to DELAY (re-confirmation), FAILED
    /// starts a new resolution. PERMANENT entries are left alone: no request
    /// is sent for them, because since Linux 5.16 an NTF_USE request clears
    /// NUD_PERMANENT (`__neigh_update` with NEIGH_UPDATE_F_USE) and the
    /// static entry would turn into an INCOMPLETE one.
    pub async fn resolve(&self, ifindex: u32, ip: IpAddr) -> anyhow::Result<()> {
        // Best effort: on a lookup error, go on; the add reports real errors.
        if let Ok(Some(m)) = self.get_neighbour_msg(ifindex, ip).await
            && u16::from(m.header.state) & decode::NUD_PERMANENT != 0
        {
            return Ok(());
        }
        // NLM_F_CREATE without NLM_F_EXCL (the rtnetlink builder's replace()
        // sets NLM_F_REPLACE instead) so an existing entry is not EEXIST.
        // ndm_state NONE rather than the builder's default PERMANENT, which
        // would make a newly created entry exempt from garbage collection.
        self.handle
            .neighbours()
            .add(ifindex, ip)
            .flags(NeighbourFlags::Use)
            .state(NeighbourState::None)
            .replace()
            .execute()
            .await
            .map_err(nl_err)
            .with_context(|| {
                format!("netlink: resolving {ip} on ifindex {ifindex} (RTM_NEWNEIGH NTF_USE)")
            })
    }
}

/// Receive buffer asked for the notification socket, to make overruns rare
/// when many neighbours change at once.
const WATCH_RCVBUF: libc::c_int = 8 << 20;

/// The netlink messages (header included) packed in a datagram as read from a socket,
/// up to the first truncated one.
pub(crate) fn datagram_messages(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[..4].try_into().expect("4")) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let msg = &buf[..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(msg)
    })
}

fn set_rcvbuf(fd: libc::c_int, size: libc::c_int) -> std::io::Result<()> {
    let set = |opt| {
        // SAFETY: fd is a valid socket for the duration of the call and the
        // option value points to a c_int of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN.
    set(libc::SO_RCVBUFFORCE).or_else(|_| set(libc::SO_RCVBUF))
}

/// Subscribes to link, neighbour and address changes (RTNLGRP_LINK, RTNLGRP_NEIGH, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR) in the calling thread's netns; spawns the driver on the current tokio runtime; events are decoded into NetEvent (RTM_NEWLINK/DELLINK, RTM_NEWNEIGH/DELNEIGH, RTM_NEWADDR/DELADDR); other messages ignored.
///
/// Only changes after the call are reported: take a snapshot with
/// [`Netlink`] *after* calling `watch` to not miss any.
///
/// If the kernel drops notifications because the socket buffer overflowed
/// (ENOBUFS), the watcher re-dumps links, addresses and neighbours, sends
/// them as `Link` / `AddrAdded` / `Neighbour` events, and sends removal
/// events for things it had reported before that are gone.
///
/// The tasks stop when the receiver is dropped.
pub fn watch() -> anyhow::Result<mpsc::UnboundedReceiver<NetEvent>> {
    watch_with_rcvbuf(WATCH_RCVBUF)
}

/// [`watch`] with a given socket receive buffer size (tests use a tiny one
/// to force overruns).
fn watch_with_rcvbuf(rcvbuf: libc::c_int) -> anyhow::Result<mpsc::UnboundedReceiver<NetEvent>> {
    let rt = current_runtime()?;
    let (mut conn, _handle, messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .context("netlink: opening and binding the notification socket")?;
    let fd = conn.socket_mut().socket_mut().as_raw_fd();
    if let Err(e) = set_rcvbuf(fd, rcvbuf) {
        warn!("netlink: could not enlarge the notification socket's receive buffer: {e}");
    }
    // Second socket, opened now so that it is in the same netns, for the
    // re-dump after an overrun.
    let resync = Netlink::connect().context("netlink: opening the resync socket")?;

    let (tx, rx) = mpsc::unbounded_channel();
    let driver = rt.spawn(conn);
    rt.spawn(async move {
        watch_loop(messages, resync, tx).await;
        driver.abort();
    });
    Ok(rx)
}

type Notifications =
    futures::channel::mpsc::UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

async fn watch_loop(mut messages: Notifications, nl: Netlink, tx: mpsc::UnboundedSender<NetEvent>) {
    // Seeded with what is there now (the receiver dumps it too): an entry gone during
    // an overrun is reported removed even if no notification of it was ever read.
    let mut seen = Seen::default();
    match seen.resync(&nl).await {
        Ok(present) => present.iter().for_each(|ev| seen.apply(ev)),
        Err(e) => warn!("netlink: reading the state to watch: {e:#}"),
    }
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            () = tx.closed() => return,
        };
        let Some((msg, _)) = msg else {
            warn!("netlink: notification socket closed");
            return;
        };
        let events = match msg.payload {
            NetlinkPayload::InnerMessage(m) => match decode::event(&m) {
                Some(ev) => vec![ev],
                None => continue,
            },
            NetlinkPayload::Overrun(_) => {
                warn!("netlink: notification socket overrun, re-dumping kernel state");
                match seen.resync(&nl).await {
                    Ok(evs) => evs,
                    Err(e) => {
                        warn!("netlink: resync after overrun failed: {e:#}");
                        continue;
                    }
                }
            }
            other => {
                debug!("netlink: ignoring notification {other:?}");
                continue;
            }
        };
        for ev in events {
            seen.apply(&ev);
            if tx.send(ev).is_err() {
                return;
            }
        }
    }
}

/// What has been reported to the receiver, so that a resync can report
/// removals it missed.
#[derive(Default)]
struct Seen {
    links: HashSet<u32>,
    addrs: HashSet<AddrInfo>,
    neighs: HashSet<(u32, IpAddr)>,
}

impl Seen {
    fn apply(&mut self, ev: &NetEvent) {
        match ev {
            NetEvent::Link(l) => {
                self.links.insert(l.ifindex);
            }
            NetEvent::LinkRemoved(i) => {
                self.links.remove(i);
                self.addrs.retain(|a| a.ifindex != *i);
                self.neighs.retain(|(n, _)| n != i);
            }
            NetEvent::Neighbour(n) => {
                self.neighs.insert((n.ifindex, n.ip));
            }
            NetEvent::NeighbourRemoved { ifindex, ip } => {
                self.neighs.remove(&(*ifindex, *ip));
            }
            NetEvent::AddrAdded(a) => {
                self.addrs.insert(a.clone());
            }
            NetEvent::AddrRemoved(a) => {
                self.addrs.remove(a);
            }
        }
    }

    /// Current state as events: removals of what was seen and is gone, then
    /// everything present.
    async fn resync(&self, nl: &Netlink) -> anyhow::Result<Vec<NetEvent>> {
        let links = nl.links().await?;
        let addrs = nl.addresses().await?;
        let neighs = nl.neighbours().await?;
        let mut out = Vec::new();
        let link_set: HashSet<u32> = links.iter().map(|l| l.ifindex).collect();
        let addr_set: HashSet<&AddrInfo> = addrs.iter().collect();
        let neigh_set: HashSet<(u32, IpAddr)> = neighs.iter().map(|n| (n.ifindex, n.ip)).collect();
        for &(ifindex, ip) in &self.neighs {
            if !neigh_set.contains(&(ifindex, ip)) {
                out.push(NetEvent::NeighbourRemoved { ifindex, ip });
            }
        }
        for a in &self.addrs {
            if !addr_set.contains(a) {
                out.push(NetEvent::AddrRemoved(a.clone()));
            }
        }
        for &i in &self.links {
            if !link_set.contains(&i) {
                out.push(NetEvent::LinkRemoved(i));
            }
        }
        out.extend(links.into_iter().map(NetEvent::Link));
        out.extend(addrs.into_iter().map(NetEvent::AddrAdded));
        out.extend(neighs.into_iter().map(NetEvent::Neighbour));
        Ok(out)
    }
}
