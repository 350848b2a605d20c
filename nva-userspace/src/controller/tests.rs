//! The controller replayed without a kernel: a config and a machine (links, addresses,
//! neighbours) in, then inputs (netlink events, BGP session events, a reload) one by
//! one; after each, the data plane's maps (the test device, which also checks
//! make-before-break on every FIB write) and the outputs are checked.
use std::net::IpAddr;

use nva_common::CLASS_EAST_WEST;

use super::*;
use crate::{
    netlink::{LinkInfo, Neighbour, NetEvent},
    routing::tests::{established, ip, net, update},
};

const ETH0: u32 = 2;
const ETH1: u32 = 3;
const GW2_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const GW22_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];

/// Two interfaces: the route servers and a gateway on eth0 (10.0.1.0/24), a second
/// gateway on eth1 (10.0.2.0/24). A spoke over the first gateway with the second as its
/// backup, the route servers' next-hop subnet 10.50.0.0/16 over the first, a branch over
/// a recursive next hop in it.
const CONFIG: &str = r#"
[[interfaces]]
name = "eth0"
[[interfaces]]
name = "eth1"

[[routes]]
prefix = "10.100.0.0/16"
nexthops = [{ via = "10.0.1.2" }]
backup_nexthops = [{ via = "10.0.2.2" }]
[[routes]]
prefix = "10.50.0.0/16"
nexthops = [{ via = "10.0.1.2" }]
[[routes]]
prefix = "10.60.0.0/16"
nexthops = [{ via = "10.50.0.9" }]

[bgp]
local_as = 65001
router_id = "10.0.1.4"
kernel_routes = true
announce_static = true
[[bgp.peers]]
name = "rs1"
address = "10.0.1.10"
remote_as = 65515
"#;

/// A route server's AS path.
const AS_PATH: &[u32] = &[65515, 64512];

fn link(name: &str, ifindex: u32, up: bool) -> LinkInfo {
    LinkInfo {
        name: name.into(),
        ifindex,
        mac: [2, 0, 0, 0, 0, ifindex as u8],
        mtu: 1500,
        up,
    }
}

fn neighbour(ifindex: u32, addr: &str, mac: Option<[u8; 6]>) -> Neighbour {
    Neighbour {
        ifindex,
        ip: ip(addr),
        mac,
        usable: mac.is_some(),
        failed: false,
    }
}

/// The machine: the first gateway resolved, the second not yet.
fn machine() -> Machine {
    Machine {
        links: vec![link("eth0", ETH0, true), link("eth1", ETH1, true)],
        addrs: vec![
            AddrInfo {
                ifindex: ETH0,
                addr: ip("10.0.1.4"),
                prefix_len: 24,
            },
            AddrInfo {
                ifindex: ETH1,
                addr: ip("10.0.2.4"),
                prefix_len: 24,
            },
        ],
        neighbours: vec![neighbour(ETH0, "10.0.1.2", Some(GW2_MAC))],
        gateway_routes: vec![],
    }
}

async fn start(config: &str) -> (Controller<TestDevice>, Output) {
    let (prober, _events) = Prober::start().unwrap();
    Controller::start(
        Config::parse(config).unwrap(),
        machine(),
        TestDevice::default(),
        prober,
        1,
    )
    .unwrap()
}

impl Controller<TestDevice> {
    fn device(&self) -> &TestDevice {
        self.fib.dataplane()
    }

    /// The gateways the data plane forwards `prefix` (east-west) over; None without a
    /// route.
    fn gateways(&self, prefix: &str) -> Option<Vec<IpAddr>> {
        let views = self.fib.nexthop_views();
        self.device()
            .fib
            .gateways(CLASS_EAST_WEST, net(prefix), &views)
    }

    /// The MAC the data plane's next hop to `via` has (zero: unresolved).
    fn dmac(&self, via: &str) -> [u8; 6] {
        let view = self
            .fib
            .nexthop_views()
            .into_iter()
            .find(|v| v.via == ip(via));
        self.device().fib.nexthops[&view.expect("a next hop").id].dmac
    }
}

#[tokio::test]
async fn the_start_programs_everything_before_anything_is_attached() {
    let (mut c, out) = start(CONFIG).await;
    let dev = c.device();
    assert_eq!(dev.ports.keys().copied().collect::<Vec<_>>(), [ETH0, ETH1]);
    assert!(dev.attached.is_empty(), "attached only by attach_all");
    assert_eq!(c.gateways("10.100.0.0/16"), Some(vec![ip("10.0.1.2")]));
    // The recursive next hop resolves through the static route to its subnet.
    assert_eq!(c.gateways("10.60.0.0/16"), Some(vec![ip("10.0.1.2")]));
    // A gateway the kernel had resolved is written with its MAC.
    assert_eq!(c.dmac("10.0.1.2"), GW2_MAC);
    assert!(out.bgp.is_empty() && out.attached.is_empty());
    let attached = c.attach_all().unwrap();
    assert_eq!(attached.attached, ["eth0", "eth1"]);
    assert!(c.self_check().is_empty(), "{:?}", c.self_check());
    // The self check (every `nva health`, every scrape) does not ask the kernel; the
    // tick does, once.
    let dumps = c.device().link_dumps.get();
    for _ in 0..3 {
        c.self_check();
    }
    assert_eq!(c.device().link_dumps.get(), dumps);
    c.tick();
    assert_eq!(c.device().link_dumps.get(), dumps + 1);
}

#[tokio::test]
async fn link_and_neighbour_events_move_routes_to_the_backup_and_back() {
    let (mut c, _) = start(CONFIG).await;
    c.attach_all().unwrap();
    // eth0 loses its carrier: the spoke moves to its backup on eth1, whose gateway the
    // kernel is asked to resolve; the routes over 10.0.1.2 alone go.
    let out = c.netlink_event(NetEvent::Link(link("eth0", ETH0, false)));
    assert_eq!(c.gateways("10.100.0.0/16"), Some(vec![ip("10.0.2.2")]));
    assert_eq!(c.gateways("10.50.0.0/16"), None);
    assert_eq!(c.dmac("10.0.2.2"), [0; 6], "not resolved yet");
    assert!(c.self_check().iter().any(|p| p.contains("eth0 is down")));
    let (tick, _) = c.tick();
    assert!(tick.resolve.contains(&(ETH1, ip("10.0.2.2"))), "{tick:?}");
    drop(out);
    // The kernel resolves it: the next hop gets its MAC (and a host route).
    c.netlink_event(NetEvent::Neighbour(neighbour(
        ETH1,
        "10.0.2.2",
        Some(GW22_MAC),
    )));
    assert_eq!(c.dmac("10.0.2.2"), GW22_MAC);
    assert_eq!(c.gateways("10.0.2.2/32"), Some(vec![ip("10.0.2.2")]));
    // eth0 back: the spoke returns to its primary, and the branch over the recursive
    // next hop resolves again through the static route to its subnet.
    c.netlink_event(NetEvent::Link(link("eth0", ETH0, true)));
    assert_eq!(c.gateways("10.100.0.0/16"), Some(vec![ip("10.0.1.2")]));
    assert_eq!(c.gateways("10.60.0.0/16"), Some(vec![ip("10.0.1.2")]));
}

#[tokio::test]
async fn a_route_servers_routes_follow_their_resolution_into_maps_and_kernel() {
    let (mut c, _) = start(CONFIG).await;
    c.attach_all().unwrap();
    let bgp = c.bgp_start().expect("BGP configured");
    assert_eq!(bgp.peers.len(), 1);
    assert!(!bgp.commands.is_empty(), "the static routes are announced");
    c.session_event(established("10.0.1.10"));
    // Off the subnet (the route server's own next hop): resolved through the static
    // route to 10.50.0.0/16, installed over its gateway, mirrored into the kernel.
    let out = c.session_event(update(
        "10.0.1.10",
        &[("172.16.0.0/16", "10.50.1.5")],
        AS_PATH,
    ));
    assert_eq!(c.gateways("172.16.0.0/16"), Some(vec![ip("10.0.1.2")]));
    assert!(
        out.kernel
            .iter()
            .any(|op| matches!(op, KernelOp::Route(p, Some(_)) if *p == net("172.16.0.0/16"))),
        "{:?}",
        out.kernel
    );
    // The gateway's link goes down: the route has nothing left to resolve through,
    // leaves the maps and the kernel; back up, it returns.
    let out = c.netlink_event(NetEvent::Link(link("eth0", ETH0, false)));
    assert_eq!(c.gateways("172.16.0.0/16"), None);
    assert!(
        out.kernel
            .iter()
            .any(|op| matches!(op, KernelOp::Route(p, None) if *p == net("172.16.0.0/16"))),
        "{:?}",
        out.kernel
    );
    c.netlink_event(NetEvent::Link(link("eth0", ETH0, true)));
    assert_eq!(c.gateways("172.16.0.0/16"), Some(vec![ip("10.0.1.2")]));
    // The session drops: its routes go.
    c.session_event(SessionEvent::Down {
        peer: ip("10.0.1.10"),
        reason: crate::bgp::DownReason::ConnectionLost("test".into()),
        stale_for: None,
    });
    assert_eq!(c.gateways("172.16.0.0/16"), None);
}

#[tokio::test]
async fn a_reload_applies_its_plan_and_a_bad_one_changes_nothing() {
    let (mut c, _) = start(CONFIG).await;
    c.attach_all().unwrap();
    // A neighbour on eth1 (its host route) and a route server's route over a gateway
    // there.
    c.netlink_event(NetEvent::Neighbour(neighbour(
        ETH1,
        "10.0.2.2",
        Some(GW22_MAC),
    )));
    c.session_event(established("10.0.1.10"));
    c.session_event(update(
        "10.0.1.10",
        &[("172.16.0.0/16", "10.0.2.7")],
        AS_PATH,
    ));
    assert_eq!(c.gateways("172.16.0.0/16"), Some(vec![ip("10.0.2.7")]));
    assert_eq!(c.gateways("10.0.2.2/32"), Some(vec![ip("10.0.2.2")]));
    let before = c.device().fib.routes.clone();
    // A next hop that resolves through nothing: refused before anything is touched.
    let bad = CONFIG.replace("10.50.0.9", "10.70.0.9");
    let e = c
        .plan_reload(Config::parse(&bad).unwrap(), &machine())
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("routes[2].nexthops[0].via"),
        "{e:#}"
    );
    assert_eq!(c.device().fib.routes, before);
    // Without eth1 and the spoke's backup: eth1 detached and its port gone, the spoke
    // still on its primary throughout, the rest untouched.
    let new = CONFIG
        .replace("[[interfaces]]\nname = \"eth1\"\n", "")
        .replace("backup_nexthops = [{ via = \"10.0.2.2\" }]\n", "");
    let plan = c
        .plan_reload(Config::parse(&new).unwrap(), &machine())
        .unwrap();
    assert_eq!(
        plan.detach.iter().map(|f| f.ifindex).collect::<Vec<_>>(),
        [ETH1]
    );
    let done = c.reload(plan).unwrap();
    assert_eq!(
        done.summary,
        "reloaded: static routes +1 -1, interfaces +0 -1"
    );
    // (The device checks that no next hop used eth1's port when it went.)
    assert!(!c.device().attached.contains(&ETH1));
    assert!(!c.device().ports.contains_key(&ETH1));
    assert_eq!(c.gateways("172.16.0.0/16"), None, "its gateway is gone");
    assert_eq!(c.gateways("10.0.2.2/32"), None);
    assert_eq!(c.gateways("10.100.0.0/16"), Some(vec![ip("10.0.1.2")]));
    assert_eq!(c.gateways("10.60.0.0/16"), Some(vec![ip("10.0.1.2")]));
    c.settle();
}

#[tokio::test]
async fn a_new_next_hop_over_a_failed_neighbour_is_not_used() {
    let (mut c, _) = start(CONFIG).await;
    c.attach_all().unwrap();
    // The kernel could not resolve 10.0.2.9.
    c.netlink_event(NetEvent::Neighbour(Neighbour {
        failed: true,
        ..neighbour(ETH1, "10.0.2.9", None)
    }));
    // A reload adds a route over it (and one over the resolved gateway): the first is
    // not installed until the neighbour answers, the second is.
    let new = CONFIG.replace(
        "[bgp]",
        "[[routes]]\nprefix = \"10.110.0.0/16\"\nnexthops = [{ via = \"10.0.2.9\" }]\n\
         [[routes]]\nprefix = \"10.120.0.0/16\"\nnexthops = [{ via = \"10.0.1.2\" }]\n\n[bgp]",
    );
    let plan = c
        .plan_reload(Config::parse(&new).unwrap(), &machine())
        .unwrap();
    c.reload(plan).unwrap();
    assert_eq!(c.gateways("10.120.0.0/16"), Some(vec![ip("10.0.1.2")]));
    assert_eq!(c.gateways("10.110.0.0/16"), None, "over a failed neighbour");
    // It answers: the route comes.
    c.netlink_event(NetEvent::Neighbour(neighbour(
        ETH1,
        "10.0.2.9",
        Some(GW22_MAC),
    )));
    assert_eq!(c.gateways("10.110.0.0/16"), Some(vec![ip("10.0.2.9")]));
}

/// dev (10.1.0.0/16) must never reach prod (10.2.0.0/16): checked after every write.
fn dev_never_reaches_prod(dev: &TestDevice) {
    let id = |p: &str| dev.segment_prefixes.get(&net(p)).copied();
    if let (Some(from), Some(to)) = (id("10.1.0.0/16"), id("10.2.0.0/16")) {
        assert!(
            dev.denied.contains(&(from, to)),
            "dev ({from}) -> prod ({to}) allowed: {:?}",
            dev.denied
        );
    }
}

#[tokio::test]
async fn a_reload_that_moves_segment_ids_never_lets_a_denied_pair_through() {
    let segments = |names: &[(&str, &str)]| {
        let mut out = String::new();
        for (name, prefix) in names {
            out += &format!("[[segments]]\nname = \"{name}\"\nprefixes = [\"{prefix}\"]\n");
        }
        out + "[[segment_rules]]\nfrom = \"dev\"\nto = \"prod\"\naction = \"deny\"\n"
    };
    let old = CONFIG.replace(
        "[bgp]",
        &(segments(&[("dev", "10.1.0.0/16"), ("prod", "10.2.0.0/16")]) + "[bgp]"),
    );
    let (prober, _events) = Prober::start().unwrap();
    let device = TestDevice {
        check_segments: Some(dev_never_reaches_prod),
        ..TestDevice::default()
    };
    let config = Config::parse(&old).unwrap();
    let (mut c, _) = Controller::start(config, machine(), device, prober, 1).unwrap();
    assert_eq!(c.device().denied, [(1, 2)].into());
    // qa before them: dev's id 1 -> 2, prod's 2 -> 3.
    let new = CONFIG.replace(
        "[bgp]",
        &(segments(&[
            ("qa", "10.3.0.0/16"),
            ("dev", "10.1.0.0/16"),
            ("prod", "10.2.0.0/16"),
        ]) + "[bgp]"),
    );
    let plan = c
        .plan_reload(Config::parse(&new).unwrap(), &machine())
        .unwrap();
    c.reload(plan).unwrap();
    assert_eq!(
        c.device().denied,
        [(2, 3)].into(),
        "only the new pair at the end"
    );
    // And back.
    let plan = c
        .plan_reload(Config::parse(&old).unwrap(), &machine())
        .unwrap();
    c.reload(plan).unwrap();
    assert_eq!(c.device().denied, [(1, 2)].into());
}
