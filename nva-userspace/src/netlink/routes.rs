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
    IpVersion, RouteMessageBuilder, RouteNextHopBuilder,
    packet_route::route::{RouteProtocol, RouteType},
};

use super::Netlink;

/// Route protocol number marking routes nva owns (iproute2 shows it as "proto 250").
pub const RTPROT_NVA: u8 = 250;

/// What the kernel should do for a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelRoute {
    /// ECMP over (gateway, ifindex) pairs (shared by the routes over the same next hops).
    Forward(std::sync::Arc<[(IpAddr, u32)]>),
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
            KernelRoute::Forward(nexthops) => {
                let mut hops = Vec::new();
                for (via, ifindex) in nexthops.iter() {
                    let hop = if via.is_ipv4() {
                        RouteNextHopBuilder::new_ipv4()
                    } else {
                        RouteNextHopBuilder::new_ipv6()
                    };
                    hops.push(
                        hop.interface(*ifindex)
                            .via(*via)
                            .context("next hop")?
                            .build(),
                    );
                }
                builder = builder.multipath(hops);
            }
        }
        self.handle()
            .route()
            .add(builder.build())
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

    /// Removes kernel routes with nva's protocol whose prefix is not in `keep`.
    pub async fn flush_own_routes_except(
        &self,
        keep: &std::collections::HashSet<IpNet>,
    ) -> Result<usize> {
        let mut removed = 0;
        for version in [IpVersion::V4, IpVersion::V6] {
            let query = match version {
                IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            };
            let routes: Vec<_> = self
                .handle()
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .context("dumping kernel routes")?;
            for route in routes {
                if route.header.protocol == RouteProtocol::Other(RTPROT_NVA)
                    && !keep.contains(&prefix_of(&route))
                {
                    self.handle()
                        .route()
                        .del(route)
                        .execute()
                        .await
                        .context("removing a stale nva kernel route")?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The destination prefix of a route message.
fn prefix_of(route: &rtnetlink::packet_route::route::RouteMessage) -> IpNet {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
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
