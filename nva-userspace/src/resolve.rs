//! Next-hop resolution: how nva reaches an address a route names as its next hop.
//!
//! A next hop on a connected subnet of one of nva's interfaces is used as it is. Any
//! other is resolved recursively (as FRR's and BIRD's next-hop tracking do) through the
//! longest matching *resolving route*: nva's static routes with direct next hops, and
//! the kernel's gateway routes over nva's interfaces (in a cloud VM, the default route
//! via the subnet gateway from DHCP; `/0` only with `resolve.via_default`). The data
//! plane then sends to the resolving route's gateways (their MACs), ECMP included.
//!
//! A resolving route whose next hops are all down does not resolve anything: the next
//! hop falls through to a less specific one or becomes unresolved. Routes learned over
//! BGP never resolve other next hops (no recursion through what BGP itself installs).
//!
//! Pure: the daemon builds a [`Resolver`] from its view of the kernel and the config,
//! and [`Tracker`] remembers what each next hop resolved to, so that a change of the
//! inputs (a route, a neighbour, a link, a probe) re-resolves only what moved.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use serde::Serialize;

use crate::fib::NhKey;

/// Where a resolving route comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Static,
    Kernel,
}

/// A route other next hops may resolve through: direct next hops only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvingRoute {
    pub prefix: IpNet,
    pub origin: Origin,
    pub hops: Vec<NhKey>,
}

/// Why a next hop does not resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unresolved {
    /// Never a next hop: unspecified, loopback, multicast, broadcast or link-local
    /// IPv4, or an address of this box.
    Invalid(&'static str),
    /// No connected subnet and no resolving route covers it.
    NoRoute,
    /// The covering routes' next hops are all down.
    Down,
    /// A health probe to the address itself fails.
    ProbeDown,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::Invalid(why) => write!(f, "invalid next hop ({why})"),
            Unresolved::NoRoute => f.write_str("no route resolves it"),
            Unresolved::Down => f.write_str("the resolving route's next hops are down"),
            Unresolved::ProbeDown => f.write_str("its health probe fails"),
        }
    }
}

/// What a next hop resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// On a connected subnet: the next hop itself is the data plane's next hop.
    Connected(NhKey),
    /// Through a resolving route: its next hops (gateways) carry the traffic.
    Recursive {
        route: IpNet,
        origin: Origin,
        hops: Vec<NhKey>,
    },
    Unresolved(Unresolved),
}

impl Resolution {
    /// The data plane's next hops (empty when unresolved).
    pub fn hops(&self) -> &[NhKey] {
        match self {
            Resolution::Connected(k) => std::slice::from_ref(k),
            Resolution::Recursive { hops, .. } => hops,
            Resolution::Unresolved(_) => &[],
        }
    }

    pub fn is_resolved(&self) -> bool {
        !matches!(self, Resolution::Unresolved(_))
    }

    /// For the CLI: "connected", "via 10.0.255.4/32 (static)", "unresolved: ...".
    pub fn describe(&self) -> String {
        match self {
            Resolution::Connected(_) => "connected".into(),
            Resolution::Recursive { route, origin, .. } => {
                let origin = match origin {
                    Origin::Static => "static",
                    Origin::Kernel => "kernel",
                };
                format!("recursive via {route} ({origin})")
            }
            Resolution::Unresolved(why) => format!("unresolved: {why}"),
        }
    }
}

/// Why `via` can never be a next hop, if so (independent of any route).
pub fn invalid(via: IpAddr) -> Option<&'static str> {
    if via.is_unspecified() {
        return Some("unspecified");
    }
    if via.is_loopback() {
        return Some("loopback");
    }
    if via.is_multicast() {
        return Some("multicast");
    }
    match via {
        IpAddr::V4(a) if a.is_broadcast() => Some("broadcast"),
        IpAddr::V4(a) if a.is_link_local() => Some("link-local"),
        _ => None,
    }
}

/// Everything a resolution reads: a snapshot the daemon builds when it resolves.
#[derive(Debug, Default)]
pub struct Resolver {
    /// Subnets of addresses on nva's interfaces: (subnet, ifindex).
    pub connected: Vec<(IpNet, u32)>,
    /// Every address of the box (a next hop there would loop).
    pub own: HashSet<IpAddr>,
    /// Resolving routes (static and kernel); looked up longest prefix first, static
    /// before kernel at equal length.
    pub routes: Vec<ResolvingRoute>,
    /// The default route may resolve next hops.
    pub via_default: bool,
    /// Direct next hops that are down (link down, neighbour failed, probe failed).
    pub down: HashSet<NhKey>,
    /// Addresses whose own health probe fails.
    pub probe_down: HashSet<IpAddr>,
}

impl Resolver {
    /// Sorts the resolving routes for lookup (call after filling `routes`).
    pub fn index(&mut self) {
        self.routes.sort_by(|a, b| {
            b.prefix
                .prefix_len()
                .cmp(&a.prefix.prefix_len())
                .then((a.origin == Origin::Kernel).cmp(&(b.origin == Origin::Kernel)))
        });
    }

    pub fn resolve(&self, via: IpAddr) -> Resolution {
        if let Some(why) = invalid(via) {
            return Resolution::Unresolved(Unresolved::Invalid(why));
        }
        if self.own.contains(&via) {
            return Resolution::Unresolved(Unresolved::Invalid("an address of this box"));
        }
        if self.probe_down.contains(&via) {
            return Resolution::Unresolved(Unresolved::ProbeDown);
        }
        if let Some((_, ifindex)) = self.connected.iter().find(|(n, _)| n.contains(&via)) {
            return Resolution::Connected(NhKey {
                ifindex: *ifindex,
                via,
                vlan: 0,
            });
        }
        let mut covered = false;
        for r in &self.routes {
            if r.prefix.addr().is_ipv4() != via.is_ipv4() || !r.prefix.contains(&via) {
                continue;
            }
            if r.prefix.prefix_len() == 0 && !self.via_default {
                continue;
            }
            covered = true;
            // A route over the next hop itself (e.g. a /32 to it "via" itself) resolves
            // nothing; neither does one whose gateways are all down.
            let hops: Vec<NhKey> = r.hops.iter().filter(|h| h.via != via).copied().collect();
            if hops.is_empty() || hops.iter().all(|h| self.down.contains(h)) {
                continue;
            }
            return Resolution::Recursive {
                route: r.prefix,
                origin: r.origin,
                hops,
            };
        }
        Resolution::Unresolved(if covered {
            Unresolved::Down
        } else {
            Unresolved::NoRoute
        })
    }
}

/// The resolution of every next hop in use, so that a change of the inputs reports the
/// next hops whose resolution moved.
#[derive(Debug, Default)]
pub struct Tracker {
    entries: HashMap<IpAddr, Resolution>,
}

impl Tracker {
    /// The resolution of `via`, resolving it on first use.
    pub fn track(&mut self, via: IpAddr, resolver: &Resolver) -> &Resolution {
        self.entries
            .entry(via)
            .or_insert_with(|| resolver.resolve(via))
    }

    pub fn get(&self, via: IpAddr) -> Option<&Resolution> {
        self.entries.get(&via)
    }

    /// Resolves every tracked next hop again; returns those whose resolution changed,
    /// with whether each resolves now.
    pub fn refresh(&mut self, resolver: &Resolver) -> Vec<(IpAddr, bool)> {
        let mut changed = Vec::new();
        for (via, old) in self.entries.iter_mut() {
            let new = resolver.resolve(*via);
            if new != *old {
                tracing::info!(
                    next_hop = %via,
                    was = %old.describe(),
                    now = %new.describe(),
                    "BGP next hop resolution changed"
                );
                changed.push((*via, new.is_resolved()));
                *old = new;
            }
        }
        changed
    }

    /// Forgets next hops no path uses any more.
    pub fn retain(&mut self, mut used: impl FnMut(IpAddr) -> bool) {
        self.entries.retain(|via, _| used(*via));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Resolution)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(via: &str, ifindex: u32) -> NhKey {
        NhKey {
            ifindex,
            via: ip(via),
            vlan: 0,
        }
    }

    /// An Azure-like NVA: eth0 10.0.1.4/24 (ifindex 2), route server endpoints
    /// 10.0.255.4/.5 via static /32s over the subnet gateway, a kernel default route
    /// via the same gateway.
    fn hub() -> Resolver {
        let mut r = Resolver {
            connected: vec![("10.0.1.0/24".parse().unwrap(), 2)],
            own: [ip("10.0.1.4")].into(),
            via_default: true,
            ..Default::default()
        };
        for rs in ["10.0.255.4/32", "10.0.255.5/32"] {
            r.routes.push(ResolvingRoute {
                prefix: rs.parse().unwrap(),
                origin: Origin::Static,
                hops: vec![key("10.0.1.1", 2)],
            });
        }
        r.routes.push(ResolvingRoute {
            prefix: "0.0.0.0/0".parse().unwrap(),
            origin: Origin::Kernel,
            hops: vec![key("10.0.1.1", 2)],
        });
        r.index();
        r
    }

    #[test]
    fn connected_static_default_and_invalid() {
        let r = hub();
        assert_eq!(
            r.resolve(ip("10.0.1.9")),
            Resolution::Connected(key("10.0.1.9", 2))
        );
        match r.resolve(ip("10.0.255.4")) {
            Resolution::Recursive {
                route,
                origin: Origin::Static,
                hops,
            } => {
                assert_eq!(route, "10.0.255.4/32".parse::<IpNet>().unwrap());
                assert_eq!(hops, vec![key("10.0.1.1", 2)]);
            }
            other => panic!("{other:?}"),
        }
        // A gateway subnet address: through the default route.
        assert!(matches!(
            r.resolve(ip("10.0.200.4")),
            Resolution::Recursive {
                origin: Origin::Kernel,
                ..
            }
        ));
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.5",
            "10.0.1.4",
            "169.254.1.1",
            "::1",
            "ff02::1",
        ] {
            assert!(
                matches!(
                    r.resolve(ip(bad)),
                    Resolution::Unresolved(Unresolved::Invalid(_))
                ),
                "{bad}"
            );
        }
        let mut no_default = hub();
        no_default.via_default = false;
        assert_eq!(
            no_default.resolve(ip("10.0.200.4")),
            Resolution::Unresolved(Unresolved::NoRoute)
        );
        // IPv6 is not resolved through an IPv4 default.
        assert_eq!(
            r.resolve(ip("2001:db8::1")),
            Resolution::Unresolved(Unresolved::NoRoute)
        );
    }

    #[test]
    fn a_down_gateway_falls_through_and_tracking_reports_it() {
        let mut r = hub();
        r.routes.push(ResolvingRoute {
            prefix: "10.0.0.0/16".parse().unwrap(),
            origin: Origin::Static,
            hops: vec![key("10.0.1.2", 2), key("10.0.1.3", 2)],
        });
        r.index();
        let mut t = Tracker::default();
        assert_eq!(t.track(ip("10.0.200.4"), &r).hops().len(), 2);
        t.track(ip("10.0.255.4"), &r);
        // One of two gateways down: still resolves over both (the data plane's
        // resilient buckets move only that gateway's flows).
        r.down.insert(key("10.0.1.2", 2));
        assert!(t.refresh(&r).is_empty());
        // Both down: falls through to the default route.
        r.down.insert(key("10.0.1.3", 2));
        assert_eq!(t.refresh(&r), vec![(ip("10.0.200.4"), true)]);
        assert_eq!(
            t.get(ip("10.0.200.4")).unwrap().hops(),
            &[key("10.0.1.1", 2)]
        );
        // The subnet gateway too: unresolved (covered, but down).
        r.down.insert(key("10.0.1.1", 2));
        let mut changed = t.refresh(&r);
        changed.sort();
        assert_eq!(
            changed,
            vec![(ip("10.0.200.4"), false), (ip("10.0.255.4"), false)]
        );
        assert_eq!(
            t.get(ip("10.0.255.4")),
            Some(&Resolution::Unresolved(Unresolved::Down))
        );
        // A probe on the next hop itself.
        r.down.clear();
        r.probe_down.insert(ip("10.0.255.4"));
        t.refresh(&r);
        assert_eq!(
            t.get(ip("10.0.255.4")),
            Some(&Resolution::Unresolved(Unresolved::ProbeDown))
        );
    }
}
