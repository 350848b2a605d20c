//! Mirrors nva's routes into the kernel's main table (protocol `RTPROT_NVA`).
//!
//! Packets the data plane hands to the kernel (TTL expiring, next hop not resolved yet,
//! too big for the egress MTU) must meet the same routes there: otherwise the kernel
//! answers "net unreachable" instead of time exceeded, or drops what it should forward.
use std::net::IpAddr;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{
    IpVersion, RouteMessageBuilder,
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType, RouteVia,
    },
};

use super::Netlink;

/// Route protocol number marking routes nva owns (iproute2 shows it as "proto 250").
pub const RTPROT_NVA: u8 = 250;

/// What the kernel should do for a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelRoute {
    /// Forward by nva's nexthop object of this id (see `nexthops`).
    Nexthop(u32),
    /// A plain blackhole route (a blackhole nexthop object would need `lo` up, and is of
    /// one family).
    Blackhole,
}

impl Netlink {
    /// Installs or replaces nva's kernel route for `prefix`.
    pub async fn replace_route(&self, prefix: IpNet, route: &KernelRoute) -> Result<()> {
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.network(), prefix.prefix_len())
            .context("route destination")?
            .protocol(RouteProtocol::Other(RTPROT_NVA));
        match route {
            KernelRoute::Blackhole => builder = builder.kind(RouteType::BlackHole),
            KernelRoute::Nexthop(_) => {}
        }
        let mut msg = builder.build();
        if let KernelRoute::Nexthop(id) = route {
            msg.attributes.push(RouteAttribute::NhId(*id));
        }
        self.handle()
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .with_context(|| format!("installing kernel route {prefix}"))
    }

    /// Removes nva's kernel route for `prefix` (absent is fine).
    pub async fn delete_route(&self, prefix: IpNet) -> Result<()> {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.network(), prefix.prefix_len())
            .context("route destination")?
            .protocol(RouteProtocol::Other(RTPROT_NVA))
            .build();
        match self.handle().route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing kernel route {prefix}")),
        }
    }

    /// Removes every kernel route with nva's protocol.
    pub async fn flush_own_routes(&self) -> Result<usize> {
        self.flush_own_routes_except(&std::collections::HashSet::new())
            .await
    }

    /// Removes kernel routes with nva's protocol whose prefix is not in `keep`: one dump,
    /// then the deletions pipelined (256 in flight), so a full table goes in seconds
    /// rather than one round trip per route.
    pub async fn flush_own_routes_except(
        &self,
        keep: &std::collections::HashSet<IpNet>,
    ) -> Result<usize> {
        use futures::StreamExt;
        let mut stale = Vec::new();
        self.each_route(|route| {
            if route.header.protocol == RouteProtocol::Other(RTPROT_NVA)
                && !keep.contains(&prefix_of(&route))
            {
                stale.push(route);
            }
        })
        .await?;
        let removed = stale.len();
        let failures: Vec<String> = futures::stream::iter(stale)
            .map(|mut route| async move {
                // Only what names the route: a dumped route naming a nexthop object
                // also lists its gateways, and the kernel refuses a deletion with both.
                route.attributes.retain(|a| {
                    matches!(
                        a,
                        RouteAttribute::Destination(_)
                            | RouteAttribute::Table(_)
                            | RouteAttribute::Priority(_)
                    )
                });
                match self.handle().route().del(route).execute().await {
                    Ok(()) => None,
                    // Gone meanwhile: fine.
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => None,
                    Err(e) => Some(e.to_string()),
                }
            })
            .buffer_unordered(256)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        if let Some(first) = failures.first() {
            anyhow::bail!(
                "removing {} of {removed} nva kernel routes failed: {first}",
                failures.len()
            );
        }
        Ok(removed)
    }
}

/// The destination prefix of a route message.
fn prefix_of(route: &RouteMessage) -> IpNet {
    let len = route.header.destination_prefix_length;
    let addr = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    });
    let addr = addr.unwrap_or(match route.header.address_family {
        rtnetlink::packet_route::AddressFamily::Inet6 => {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        }
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    IpNet::new(addr, len).unwrap_or_else(|_| IpNet::from(addr))
}

/// The kernel's main table.
const RT_TABLE_MAIN: u32 = 254;

/// A unicast route of the kernel's main table that is not nva's own (DHCP's default
/// route, an operator's `ip route add`): next hops may resolve through it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GatewayRoute {
    pub prefix: IpNet,
    /// The route's metric (lower wins among routes of one prefix).
    pub metric: u32,
    /// (gateway, egress ifindex); empty for a device route without gateway.
    pub hops: Vec<(IpAddr, u32)>,
}

/// A change of the kernel's gateway routes (see [`watch_routes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteEvent {
    Added(GatewayRoute),
    Removed {
        prefix: IpNet,
        metric: u32,
    },
    /// Notifications were lost: dump again.
    Overrun,
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(route.header.table as u32)
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn via_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => addr_of(g),
        RouteAttribute::Via(RouteVia::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Via(RouteVia::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

/// The (prefix, metric) identifying a route message of the main table that is not
/// nva's own; None for anything else.
pub fn foreign_route_key(route: &RouteMessage) -> Option<(IpNet, u32)> {
    if route.header.protocol == RouteProtocol::Other(RTPROT_NVA)
        || route_table(route) != RT_TABLE_MAIN
    {
        return None;
    }
    let metric = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0);
    Some((prefix_of(route), metric))
}

/// A route message as a [`GatewayRoute`], if it is a unicast route of the main table
/// with a gateway that is not nva's own.
pub fn gateway_route(route: &RouteMessage) -> Option<GatewayRoute> {
    let (prefix, metric) = foreign_route_key(route)?;
    if route.header.kind != RouteType::Unicast {
        return None;
    }
    let oif = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    let mut hops = Vec::new();
    if let (Some(via), Some(oif)) = (via_of(&route.attributes), oif) {
        hops.push((via, oif));
    }
    for a in &route.attributes {
        if let RouteAttribute::MultiPath(list) = a {
            for nh in list {
                if let Some(via) = via_of(&nh.attributes) {
                    hops.push((via, nh.interface_index));
                }
            }
        }
    }
    if hops.is_empty() {
        return None;
    }
    Some(GatewayRoute {
        prefix,
        metric,
        hops,
    })
}

impl Netlink {
    /// The kernel's gateway routes that are not nva's own (main table, both families).
    pub async fn gateway_routes(&self) -> Result<Vec<GatewayRoute>> {
        let mut out = Vec::new();
        self.each_route(|route| out.extend(gateway_route(&route)))
            .await?;
        Ok(out)
    }

    /// Dumps the kernel's routes (IPv4, then IPv6) into `each`, one message at a time.
    async fn each_route(&self, mut each: impl FnMut(RouteMessage)) -> Result<()> {
        for version in [IpVersion::V4, IpVersion::V6] {
            let query = match version {
                IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            };
            let mut routes = self.handle().route().get(query).execute();
            while let Some(route) = routes.try_next().await.context("dumping kernel routes")? {
                each(route);
            }
        }
        Ok(())
    }
}

/// Follows the kernel's route changes (RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE) on a
/// socket of its own, reporting only routes that are not nva's own: nva's kernel
/// mirror of a full table makes a million notifications, which must not crowd out
/// link and neighbour events. After lost notifications it reports `Overrun`.
pub fn watch_routes() -> Result<tokio::sync::mpsc::UnboundedReceiver<RouteEvent>> {
    use futures::StreamExt;
    use rtnetlink::{
        MulticastGroup, packet_core::NetlinkPayload, packet_route::RouteNetlinkMessage,
        sys::AsyncSocket,
    };
    use std::os::fd::AsRawFd;
    let (mut conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])
    .context("netlink: opening the route notification socket")?;
    let fd = conn.socket_mut().socket_mut().as_raw_fd();
    if let Err(e) = super::set_rcvbuf(fd, super::WATCH_RCVBUF) {
        tracing::warn!("netlink: could not enlarge the route socket's receive buffer: {e}");
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(conn);
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                () = tx.closed() => break,
            };
            let Some((msg, _)) = msg else { break };
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                    match gateway_route(&r) {
                        Some(g) => RouteEvent::Added(g),
                        // A foreign route without gateway replacing one with.
                        None => match foreign_route_key(&r) {
                            Some((prefix, metric)) => RouteEvent::Removed { prefix, metric },
                            None => continue,
                        },
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => {
                    match foreign_route_key(&r) {
                        Some((prefix, metric)) => RouteEvent::Removed { prefix, metric },
                        None => continue,
                    }
                }
                NetlinkPayload::Overrun(_) => RouteEvent::Overrun,
                _ => continue,
            };
            if tx.send(event).is_err() {
                break;
            }
        }
        driver.abort();
    });
    Ok(rx)
}

/// Removes nva's kernel routes for `prefixes` (absent ones are fine) the way `ip route
/// flush` does: the requests packed many to a datagram on a socket of its own, no
/// acknowledgement asked for (errors still come back), no dump to parse. A full table
/// goes at the kernel's own pace instead of one round trip per route. Blocking: call it
/// from a blocking task. Returns how many deletions failed for another reason than the
/// route being gone already.
pub fn delete_routes_batched(prefixes: &[IpNet]) -> Result<usize> {
    use rtnetlink::{
        packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload},
        packet_route::RouteNetlinkMessage,
        sys::{Socket, protocols::NETLINK_ROUTE},
    };
    let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .connect(&rtnetlink::sys::SocketAddr::new(0, 0))
        .context("connecting the netlink socket")?;
    let mut failed = 0usize;
    let mut drain = |socket: &Socket, block: bool| -> Result<()> {
        socket.set_non_blocking(!block)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match socket.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for m in super::datagram_messages(&buf[..n]) {
                if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m)
                    && let NetlinkPayload::Error(e) = msg.payload
                    && e.raw_code() != 0
                    && e.raw_code() != -libc::ESRCH
                {
                    failed += 1;
                }
            }
            if block {
                // One read was enough to learn the queue is being answered.
                return Ok(());
            }
        }
    };
    let mut batch: Vec<u8> = Vec::with_capacity(1 << 16);
    for (i, prefix) in prefixes.iter().enumerate() {
        let route = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.network(), prefix.prefix_len())
            .context("route destination")?
            .protocol(RouteProtocol::Other(RTPROT_NVA))
            .build();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = i as u32;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::DelRoute(route)),
        );
        msg.finalize();
        let start = batch.len();
        batch.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut batch[start..]);
        if batch.len() > 60_000 {
            socket.send(&batch, 0).context("sending route deletions")?;
            batch.clear();
            drain(&socket, false)?;
        }
    }
    if !batch.is_empty() {
        socket.send(&batch, 0).context("sending route deletions")?;
    }
    drain(&socket, false)?;
    Ok(failed)
}
