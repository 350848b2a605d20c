//! The route path replayed without a kernel: session events -> import policy -> RIB
//! (`BgpFeed`) -> next-hop resolution -> FIB (`BgpInstall`) -> map writes, into the
//! FIB's recording writer (which also checks make-before-break on every write). Each
//! step gives inputs and checks the maps that result.
use std::net::{Ipv4Addr, SocketAddr};

use nva_common::{CLASS_EAST_WEST, CLASS_NORTH_SOUTH};

use super::*;
use crate::{
    bgp::{
        DownReason, SessionInfo,
        codec::{Family, NextHop},
    },
    bgp_install::BgpInstall,
    fib::{DEFAULT_EAST_WEST, Fib, KernelOp, Neigh, NhKey, Port, recorder::Recorder},
    resolve::{Origin as ResolveOrigin, ResolvingRoute},
};

const CONFIG: &str = r#"
[[interfaces]]
name = "eth0"

[bgp]
local_as = 65001
router_id = "10.0.1.4"
multipath = true

[[bgp.peers]]
name = "rs1"
address = "10.0.1.10"
remote_as = 65515
import = "in"
[[bgp.peers]]
name = "rs2"
address = "10.0.1.11"
remote_as = 65515
import = "in"

[[prefix_lists]]
name = "prod"
entries = [{ prefix = "10.99.0.0/16", le = 32 }]

[[policies]]
name = "in"
default = "accept"
[[policies.rules]]
match = { prefix_list = "prod" }
action = "reject"
"#;

const ETH0: u32 = 2;

/// The route path's world: the feed, a FIB writing into a recording, and what next
/// hops resolve through (nva's subnet 10.0.1.0/24 on eth0, and a static route to
/// 10.50.0.0/16, where the route servers' off-subnet next hops are, via 10.0.1.2).
struct World {
    feed: BgpFeed,
    install: BgpInstall,
    fib: Fib<Recorder>,
    resolver: Resolver,
}

pub(crate) fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn hop(via: &str) -> NhKey {
    NhKey {
        ifindex: ETH0,
        via: ip(via),
        vlan: 0,
    }
}

/// The one egress port; the kernel has resolved gateway 10.0.1.20 (to `GW20_MAC`).
fn eth0(key: NhKey) -> Option<(Port, Neigh)> {
    (key.ifindex == ETH0).then(|| {
        let port = Port {
            name: "eth0".into(),
            mac: [2, 0, 0, 0, 1, 4],
            mtu: 1500,
            up: true,
        };
        let mac = (key.via == ip("10.0.1.20")).then_some(GW20_MAC);
        (port, Neigh { mac, failed: false })
    })
}

const GW20_MAC: [u8; 6] = [2, 0, 0, 0, 1, 20];

impl World {
    fn new() -> Self {
        let config = config::Config::parse(CONFIG).unwrap();
        let mut fib = Fib::new(Recorder::default());
        let ew: Vec<IpNet> = DEFAULT_EAST_WEST.iter().map(|p| net(p)).collect();
        fib.set_east_west(&ew).unwrap();
        let mut resolver = Resolver {
            connected: vec![(net("10.0.1.0/24"), ETH0)],
            own: [ip("10.0.1.4")].into(),
            routes: vec![ResolvingRoute {
                prefix: net("10.50.0.0/16"),
                origin: ResolveOrigin::Static,
                hops: vec![hop("10.0.1.2")],
            }],
            ..Resolver::default()
        };
        resolver.index();
        World {
            feed: BgpFeed::new(&config).unwrap(),
            install: BgpInstall::default(),
            fib,
            resolver,
        }
    }

    fn event(&mut self, event: Event) {
        let fib = &self.fib;
        let out = self
            .feed
            .handle_event(event, &|p| fib.classify(p), &self.resolver)
            .unwrap();
        self.install(&out.changes);
    }

    fn follow_resolution(&mut self) {
        let out = self.feed.follow_resolution(&self.resolver);
        self.install(&out.changes);
    }

    fn install(&mut self, changes: &[(Table, RibChange)]) {
        self.install
            .apply(changes, self.feed.tracker(), &mut self.fib, &eth0)
            .unwrap();
    }

    fn up(&mut self, peer: &str) {
        self.event(established(peer));
    }

    fn announce(&mut self, peer: &str, routes: &[(&str, &str)]) {
        self.announce_path(peer, routes, &[65515, 64512]);
    }

    fn announce_path(&mut self, peer: &str, routes: &[(&str, &str)], path: &[u32]) {
        self.event(update(peer, routes, path));
    }

    /// The gateways (next-hop addresses) the data plane forwards `prefix` over in the
    /// table of `class`; None when it has no route.
    fn gateways(&self, class: u32, prefix: &str) -> Option<Vec<IpAddr>> {
        let views = self.fib.nexthop_views();
        self.fib.dataplane().gateways(class, net(prefix), &views)
    }
}

/// A route server's session (AS 65515, from 10.0.1.4) came up.
pub(crate) fn established(peer: &str) -> Event {
    let info = SessionInfo {
        peer_as: 65515,
        peer_router_id: Ipv4Addr::new(10, 0, 1, peer[peer.len() - 1..].parse().unwrap()),
        local_addr: SocketAddr::new(ip("10.0.1.4"), 179),
        remote_addr: SocketAddr::new(ip(peer), 40000),
        hold_time: 9,
        keepalive: 3,
        ibgp: false,
        four_octet_as: true,
        extended_message: false,
        route_refresh: true,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        peer_graceful_restart: None,
        peer_capabilities: vec![],
    };
    Event::Established {
        peer: ip(peer),
        caps: info,
    }
}

/// An UPDATE from `peer` announcing each (prefix, next hop) with AS path `path`.
pub(crate) fn update(peer: &str, routes: &[(&str, &str)], path: &[u32]) -> Event {
    let announced = routes
        .iter()
        .map(|(prefix, nh)| {
            let attrs = PathAttrs {
                as_path: AsPath::from_sequence(path.iter().copied()),
                next_hop: Some(NextHop::from(ip(nh))),
                ..PathAttrs::default()
            };
            (net(prefix), Arc::new(attrs))
        })
        .collect();
    Event::Update {
        peer: ip(peer),
        announced,
        withdrawn: vec![],
        martian: 0,
    }
}

#[test]
fn route_server_routes_reach_the_maps_over_resolved_gateways() {
    let mut w = World::new();
    w.up("10.0.1.10");
    w.up("10.0.1.11");
    // A spoke over an off-subnet next hop (resolved through the static route), a branch
    // over an on-subnet one, the default route, and a prod prefix import rejects.
    w.announce(
        "10.0.1.10",
        &[
            ("192.168.10.0/24", "10.50.1.5"),
            ("172.16.0.0/16", "10.0.1.20"),
            ("0.0.0.0/0", "10.0.1.20"),
            ("10.99.1.0/24", "10.0.1.20"),
        ],
    );
    let (ew, ns) = (CLASS_EAST_WEST, CLASS_NORTH_SOUTH);
    assert_eq!(
        w.gateways(ew, "192.168.10.0/24"),
        Some(vec![ip("10.0.1.2")])
    );
    assert_eq!(w.gateways(ew, "172.16.0.0/16"), Some(vec![ip("10.0.1.20")]));
    assert_eq!(w.gateways(ns, "0.0.0.0/0"), Some(vec![ip("10.0.1.20")]));
    assert_eq!(w.gateways(ns, "192.168.10.0/24"), None, "east-west only");
    assert_eq!(w.gateways(ew, "10.99.1.0/24"), None, "rejected by import");
    // A gateway the kernel has resolved is written with its MAC, usable at once; the
    // others wait for their resolution.
    let dmac = |via: &str| {
        let view = w.fib.nexthop_views().into_iter().find(|v| v.via == ip(via));
        w.fib.dataplane().nexthops[&view.unwrap().id].dmac
    };
    assert_eq!(dmac("10.0.1.20"), GW20_MAC);
    assert_eq!(dmac("10.0.1.2"), [0; 6]);

    // The second route server, same AS path length: ECMP over both gateways.
    w.announce("10.0.1.11", &[("192.168.10.0/24", "10.0.1.21")]);
    assert_eq!(
        w.gateways(ew, "192.168.10.0/24"),
        Some(vec![ip("10.0.1.2"), ip("10.0.1.21")])
    );

    // The static route the off-subnet next hop resolves through goes: that path is not
    // eligible any more, the route stays over the other server's gateway only.
    w.resolver.routes.clear();
    w.follow_resolution();
    assert_eq!(
        w.gateways(ew, "192.168.10.0/24"),
        Some(vec![ip("10.0.1.21")])
    );

    // The first route server's session drops: its routes are withdrawn.
    w.event(Event::Down {
        peer: ip("10.0.1.10"),
        reason: DownReason::ConnectionLost("test".into()),
        stale_for: None,
    });
    assert_eq!(w.gateways(ew, "172.16.0.0/16"), None);
    assert_eq!(w.gateways(ns, "0.0.0.0/0"), None);
    assert_eq!(
        w.gateways(ew, "192.168.10.0/24"),
        Some(vec![ip("10.0.1.21")])
    );

    // And the second's: nothing of BGP's is left in the maps.
    w.event(Event::Down {
        peer: ip("10.0.1.11"),
        reason: DownReason::ConnectionLost("test".into()),
        stale_for: None,
    });
    let dp = w.fib.dataplane();
    assert!(dp.routes.is_empty(), "{:?}", dp.routes);
    assert!(dp.groups.is_empty());
    assert!(dp.nexthops.is_empty());
}

#[test]
fn a_longer_as_path_is_passive_until_the_shorter_is_withdrawn() {
    let mut w = World::new();
    w.up("10.0.1.10");
    w.up("10.0.1.11");
    let p = "192.168.20.0/24";
    w.announce_path("10.0.1.10", &[(p, "10.0.1.20")], &[65515, 64512]);
    w.announce_path("10.0.1.11", &[(p, "10.0.1.21")], &[65515, 64512, 64512]);
    assert_eq!(w.gateways(CLASS_EAST_WEST, p), Some(vec![ip("10.0.1.20")]));
    // Mirrored into the kernel over one nexthop object.
    let ops = w.fib.take_kernel_ops();
    assert!(
        matches!(&ops[..], [.., KernelOp::AddNexthop { .. }, KernelOp::Route(q, Some(_))] if *q == net(p)),
        "{ops:?}"
    );
    w.event(Event::Update {
        peer: ip("10.0.1.10"),
        announced: vec![],
        withdrawn: vec![net(p)],
        martian: 0,
    });
    assert_eq!(w.gateways(CLASS_EAST_WEST, p), Some(vec![ip("10.0.1.21")]));
    let ops = w.fib.take_kernel_ops();
    assert!(
        matches!(
            &ops[..],
            [
                KernelOp::AddNexthop { .. },
                KernelOp::Route(..),
                KernelOp::DelNexthop { .. }
            ]
        ),
        "{ops:?}"
    );
}
