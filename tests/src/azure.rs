//! The Azure hub nva is built for, in network namespaces, with software nobody here
//! wrote: used by the hub integration test and by `cargo xtask demo`.
//!
//! - Two route-server endpoints (BIRD 2, AS 65515) in their own subnet, eBGP multihop to
//!   the NVAs, next hops passed on unchanged (`next hop keep`), their own VNet prefixes
//!   announced with their own address as next hop, as Azure Route Server does.
//! - An ExpressRoute-like gateway (GoBGP, AS 12076) in a gateway subnet announcing the
//!   on-prem prefix with its own address as next hop.
//! - A "fabric" namespace: every subnet's gateway (.1). What the route servers learn
//!   from the NVAs (add-path, BIRD with `merge paths`) goes into a kernel table with
//!   ECMP that traffic from spokes and on-prem consults first; traffic from the NVAs'
//!   subnet takes the system routes.
//! - Two single-NIC nva instances on one subnet: what they forward leaves by the NIC it
//!   came in on (XDP_TX). No learned next hop is on their subnet: every BGP route is
//!   installed through recursive resolution (the /32 routes to the route servers, the
//!   VM's default route to the subnet gateway).
//!
//! ```text
//!  spoke1 10.1.0.4 --+                      +-- rs1 10.0.255.4 (BIRD)  \ RouteServerSubnet
//!  spoke2 10.2.0.4 --+-- fabric (.1 each) --+-- rs2 10.0.255.5 (BIRD)  / 10.0.255.0/27
//!                    |                      +-- ergw 10.0.200.4 (GoBGP), on-prem 192.168.50.10
//!                    |                      +-- vwan 10.0.254.4 (BIRD, AS 65520): a second domain
//!                    +-- bridge 10.0.1.0/24 -- nva1 10.0.1.4, nva2 10.0.1.5 (eth0)
//!                                               |  eth1                 | eth1
//!                                               +---- branch 172.16.0.10 ----+
//! ```
//! The branch (an SD-WAN site behind the NVAs) is reached through each NVA's second
//! NIC; the NVAs announce it to the route server.
//! The timers are short (hold 3 s) so that tests run quickly; Azure's are 180/60 s.
use std::time::Duration;

use crate::{
    Netns, UdpSink,
    daemons::{Bird, Gobgp},
    paced, veth,
    xdpstub::XdpPass,
};

/// The on-prem host behind the ExpressRoute gateway.
pub const ONPREM: &str = "192.168.50.10";
/// A VM in spoke 1.
pub const SPOKE1: &str = "10.1.0.4";
/// A VM in spoke 2.
pub const SPOKE2: &str = "10.2.0.4";
/// A host in the branch behind the NVAs.
pub const BRANCH: &str = "172.16.0.10";

/// The namespaces of the hub (removed when dropped).
pub struct AzureHub {
    /// Every subnet's gateway.
    pub fabric: Netns,
    /// The route server's two endpoints.
    pub rs: Vec<Netns>,
    /// The ExpressRoute-like gateway, holding the on-prem host.
    pub ergw: Netns,
    /// A Virtual WAN hub's route server (AS 65520): the second route-server domain.
    pub vwan: Netns,
    /// Two spoke VMs.
    pub spokes: Vec<Netns>,
    /// The two NVA VMs (`eth0` in the hub, `eth1` to the branch).
    pub nvas: Vec<Netns>,
    /// The branch site behind the NVAs.
    pub branch: Netns,
    _pass: Vec<XdpPass>,
}

impl AzureHub {
    /// Builds the namespaces, links, addresses and the fabric's routing.
    pub fn build() -> anyhow::Result<AzureHub> {
        let fabric = Netns::new("fabric")?;
        let ergw = Netns::new("ergw")?;
        let vwan = Netns::new("vwan")?;
        let branch = Netns::new("branch")?;
        let rs: Vec<Netns> = (1..=2)
            .map(|k| Netns::new(&format!("rs{k}")).unwrap())
            .collect();
        let spokes: Vec<Netns> = (1..=2)
            .map(|k| Netns::new(&format!("spoke{k}")).unwrap())
            .collect();
        let nvas: Vec<Netns> = (1..=2)
            .map(|k| Netns::new(&format!("nva{k}")).unwrap())
            .collect();
        for ns in [&fabric, &ergw, &vwan, &branch]
            .into_iter()
            .chain(&rs)
            .chain(&spokes)
            .chain(&nvas)
        {
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        }
        fabric.sysctl("net.ipv4.ip_forward", "1")?;
        fabric.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        let mut pass = Vec::new();
        // The NVA subnet and the route-server subnet are bridges in the fabric.
        fabric.ip("link add brn type bridge")?;
        fabric.ip("addr add 10.0.1.1/24 dev brn")?;
        fabric.set_link("brn", true)?;
        fabric.ip("link add brr type bridge")?;
        fabric.ip("addr add 10.0.255.1/27 dev brr")?;
        fabric.set_link("brr", true)?;
        for (k, nva) in nvas.iter().enumerate() {
            let port = format!("n{}", k + 1);
            veth(&fabric, &port, nva, "eth0")?;
            fabric.ip(&format!("link set {port} master brn"))?;
            // Frames the NVA sends back with XDP_TX arrive only with an XDP program here.
            pass.push(XdpPass::attach(&fabric, &port)?);
            nva.ip(&format!("addr add 10.0.1.{}/24 dev eth0", k + 4))?;
            // The VM's default route to its subnet gateway, as DHCP gives it.
            nva.ip("route add default via 10.0.1.1")?;
            nva.sysctl("net.ipv4.ip_forward", "1")?;
            nva.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])?;
            // The branch link: frames redirected into it need an XDP program at the far
            // end too.
            let b = format!("b{}", k + 1);
            veth(nva, "eth1", &branch, &b)?;
            nva.ip(&format!("addr add 172.31.{}.1/30 dev eth1", k + 1))?;
            branch.ip(&format!("addr add 172.31.{}.2/30 dev {b}", k + 1))?;
            pass.push(XdpPass::attach(&branch, &b)?);
            branch.exec_ok(&["ethtool", "-K", &b, "tx", "off"])?;
        }
        branch.ip(&format!("addr add {BRANCH}/32 dev lo"))?;
        branch.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        branch.ip("route add default nexthop via 172.31.1.1 nexthop via 172.31.2.1")?;
        for (k, r) in rs.iter().enumerate() {
            let port = format!("r{}", k + 1);
            veth(&fabric, &port, r, "eth0")?;
            fabric.ip(&format!("link set {port} master brr"))?;
            r.ip(&format!("addr add 10.0.255.{}/27 dev eth0", k + 4))?;
            r.ip("route add default via 10.0.255.1")?;
        }
        veth(&fabric, "w0", &vwan, "eth0")?;
        fabric.ip("addr add 10.0.254.1/27 dev w0")?;
        vwan.ip("addr add 10.0.254.4/27 dev eth0")?;
        vwan.ip("route add default via 10.0.254.1")?;
        veth(&fabric, "g0", &ergw, "eth0")?;
        fabric.ip("addr add 10.0.200.1/27 dev g0")?;
        ergw.ip("addr add 10.0.200.4/27 dev eth0")?;
        ergw.ip(&format!("addr add {ONPREM}/32 dev lo"))?;
        ergw.ip("route add default via 10.0.200.1")?;
        // Locally generated traffic on veth carries partial checksums that an XDP_TX hop
        // cannot complete: senders compute them in full (real NICs need nothing).
        ergw.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])?;
        // The fabric knows where on-prem is (ExpressRoute), as system routes.
        fabric.ip("route add 192.168.50.0/24 via 10.0.200.4")?;
        for (k, s) in spokes.iter().enumerate() {
            let port = format!("s{}", k + 1);
            veth(&fabric, &port, s, "eth0")?;
            fabric.ip(&format!("addr add 10.{}.0.1/24 dev {port}", k + 1))?;
            s.ip(&format!("addr add 10.{}.0.4/24 dev eth0", k + 1))?;
            s.ip(&format!("route add default via 10.{}.0.1", k + 1))?;
            s.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])?;
            // Spoke and on-prem traffic consults what the route servers learned first.
            fabric.ip(&format!("rule add iif {port} lookup 100 pref 100"))?;
        }
        fabric.ip("rule add iif g0 lookup 100 pref 100")?;
        // The hub VNet's own routes beat what BGP teaches, even less specific ones (as in
        // Azure): the gateway's and the route servers' own traffic never goes through an NVA.
        fabric.ip("rule add to 10.0.0.0/16 lookup main pref 50")?;
        Ok(AzureHub {
            fabric,
            rs,
            ergw,
            vwan,
            branch,
            spokes,
            nvas,
            _pass: pass,
        })
    }
}

/// A Virtual WAN hub's route server (AS 65520) with a prefix of its own (10.50.0.0/16,
/// next hop itself), peering with both NVAs: routes cross between the domains only when
/// the NVAs strip the other domain's reserved AS.
pub const VWAN: &str = r#"
router id 10.0.254.4;
log stderr all;
protocol device { scan time 1; }
protocol static vnet { ipv4; route 10.50.0.0/16 blackhole; }
filter to_peers { if proto = "vnet" then bgp_next_hop = 10.0.254.4; accept; }
template bgp nva_peer {
    local 10.0.254.4 as 65520;
    multihop 2;
    hold time 3;
    keepalive time 1;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 { import all; export filter to_peers; next hop keep; };
}
protocol bgp nva1 from nva_peer { neighbor 10.0.1.4 as 65001; }
protocol bgp nva2 from nva_peer { neighbor 10.0.1.5 as 65001; }
"#;

/// Azure Route Server endpoint `k` (1 or 2): AS 65515, multihop, next hops unchanged,
/// the VNet's spoke prefixes with its own address as next hop, add-path to the fabric.
pub fn route_server(k: usize) -> String {
    let me = format!("10.0.255.{}", k + 3);
    format!(
        r#"
router id {me};
log stderr all;
protocol device {{ scan time 1; }}
protocol static vnet {{ ipv4; route 10.1.0.0/16 blackhole; route 10.2.0.0/16 blackhole; }}
# How the route server reaches the other subnets (resolves the peers' next hops).
protocol static infra {{ ipv4; route 10.0.1.0/24 via 10.0.255.1; route 10.0.200.0/27 via 10.0.255.1; }}
filter to_peers {{
    if proto = "infra" then reject;
    if proto = "vnet" then bgp_next_hop = {me};
    accept;
}}
template bgp ars_peer {{
    local {me} as 65515;
    multihop 2;
    hold time 3;
    keepalive time 1;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 {{ import all; export filter to_peers; next hop keep; }};
}}
protocol bgp nva1 from ars_peer {{ neighbor 10.0.1.4 as 65001; }}
protocol bgp nva2 from ars_peer {{ neighbor 10.0.1.5 as 65001; }}
protocol bgp ergw from ars_peer {{ neighbor 10.0.200.4 as 12076; }}
protocol bgp fabric {{
    local {me} as 65515;
    neighbor 10.0.255.1 as 65515;
    direct;
    hold time 3;
    keepalive time 1;
    connect delay time 1;
    connect retry time 1;
    ipv4 {{ import none; export where proto ~ "nva*"; add paths tx; next hop keep; }};
}}
"#
    )
}

/// The fabric learns from the route servers what the NVAs announce and installs it
/// with ECMP in table 100.
pub const FABRIC: &str = r#"
router id 10.0.255.1;
log stderr all;
protocol device { scan time 1; }
ipv4 table learned;
protocol kernel {
    ipv4 { table learned; export all; };
    kernel table 100;
    merge paths on;
}
template bgp ars {
    local 10.0.255.1 as 65515;
    direct;
    hold time 3;
    keepalive time 1;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 { table learned; import all; export none; add paths rx; gateway direct; };
}
protocol bgp rs1 from ars { neighbor 10.0.255.4 as 65515; }
protocol bgp rs2 from ars { neighbor 10.0.255.5 as 65515; }
"#;

/// GoBGP as the ExpressRoute gateway (the on-prem route is added by [`daemons`]),
/// multihop to both route-server endpoints.
pub fn ergw_config() -> String {
    let mut c = String::from(
        "[global.config]\n  as = 12076\n  router-id = \"10.0.200.4\"\n  port = 179\n  \
         local-address-list = [\"10.0.200.4\"]\n",
    );
    for rs in ["10.0.255.4", "10.0.255.5"] {
        c += &format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{rs}\"\n    peer-as = 65515\n\
             \x20 [neighbors.transport.config]\n    local-address = \"10.0.200.4\"\n\
             \x20 [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = 3\n\
             \x20 [neighbors.timers.config]\n    hold-time = 3\n    keepalive-interval = 1\n    connect-retry = 1\n"
        );
    }
    c
}

/// The README's hub recipe: one NIC, /32 routes to both route-server endpoints via
/// the subnet gateway, one peer per endpoint (grouped: nothing learned from one is
/// announced to the other), summaries announced; and the Virtual WAN hub as a second
/// domain (AS 65520), each domain getting the other's routes without the other's
/// reserved AS. `passive` prepends nva's AS three times towards the hub.
pub fn nva_config(k: usize, passive: bool) -> String {
    let prepend = if passive {
        ", prepend = { count = 3 }"
    } else {
        ""
    };
    // One per route-server endpoint (the hub's two, grouped) and the Virtual WAN's.
    let peers: String = [
        ("rs1", "10.0.255.4", 65515, "rs", "to-rs"),
        ("rs2", "10.0.255.5", 65515, "rs", "to-rs"),
        ("vwan", "10.0.254.4", 65520, "vwan", "to-vwan"),
    ]
    .iter()
    .map(|(name, address, asn, group, export)| {
        format!(
            "[[bgp.peers]]\nname = \"{name}\"\naddress = \"{address}\"\nremote_as = {asn}\n\
             group = \"{group}\"\nmultihop_ttl = 2\nhold_time = 3\nkeepalive = 1\n\
             connect_retry = 1\nexport = \"{export}\"\n"
        )
    })
    .collect();
    format!(
        r#"
[health]
drain_ms = 1500
[[interfaces]]
name = "eth0"
[[interfaces]]
name = "eth1"
[[routes]]
prefix = "172.16.0.0/16"
nexthops = [{{ via = "172.31.{k}.2" }}]
[[routes]]
prefix = "10.0.255.4/32"
nexthops = [{{ via = "10.0.1.1" }}]
[[routes]]
prefix = "10.0.255.5/32"
nexthops = [{{ via = "10.0.1.1" }}]
[bgp]
local_as = 65001
router_id = "10.0.1.{ip}"
announce = ["10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/16"]
{peers}[[policies]]
name = "to-rs"
default = "accept"
[[policies.rules]]
set = {{ as_path_exclude = [65520]{prepend} }}
action = "accept"
[[policies]]
name = "to-vwan"
default = "accept"
[[policies.rules]]
set = {{ as_path_exclude = [65515] }}
action = "accept"
"#,
        ip = k + 3
    )
}

/// The route servers, the fabric and the gateway (stopped when dropped).
pub struct Daemons {
    /// The route server's endpoints.
    pub rs: Vec<Bird>,
    /// The fabric's BGP view.
    pub fabric: Bird,
    /// The ExpressRoute-like gateway.
    pub ergw: Gobgp,
    /// The Virtual WAN hub's route server.
    pub vwan: Bird,
}

/// Starts every daemon but nva and has the gateway announce on-prem.
pub fn daemons(lab: &AzureHub) -> anyhow::Result<Daemons> {
    let rs = (1..=2)
        .map(|k| Bird::start(&lab.rs[k - 1], &route_server(k)))
        .collect::<anyhow::Result<_>>()?;
    let fabric = Bird::start(&lab.fabric, FABRIC)?;
    let ergw = Gobgp::start(&lab.ergw, &ergw_config())?;
    let add = ergw.gobgp(&[
        "global",
        "rib",
        "add",
        "192.168.50.0/24",
        "nexthop",
        "10.0.200.4",
        "aspath",
        "65020",
    ]);
    anyhow::ensure!(!add.contains("rror"), "gobgp: {add}");
    let vwan = Bird::start(&lab.vwan, VWAN)?;
    Ok(Daemons {
        rs,
        fabric,
        ergw,
        vwan,
    })
}

/// The fabric's learned route for `prefix`: its next hops.
pub fn fabric_nexthops(lab: &AzureHub, prefix: &str) -> Vec<String> {
    crate::netns::route_gateways(
        &lab.fabric
            .ip(&format!("route show table 100 {prefix}"))
            .unwrap_or_default(),
    )
}

/// A UDP sink on port 7000 of `addr` in `ns`.
pub fn sink(ns: &Netns, addr: &str) -> anyhow::Result<UdpSink> {
    UdpSink::start(ns, &[format!("{addr}:7000").parse()?])
}

/// Sends `count` datagrams and waits for them; returns how many arrived.
pub fn deliver(from: &Netns, to: &UdpSink, dst: &str, count: u32) -> usize {
    to.clear();
    paced(from, dst, count, Duration::from_millis(1))
        .join()
        .unwrap();
    to.wait_for(count as usize, Duration::from_secs(3))
}
