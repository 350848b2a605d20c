//! The Azure hub nva is built for, modelled with software nobody here wrote.
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
//!                    +-- bridge 10.0.1.0/24 -- nva1 10.0.1.4, nva2 10.0.1.5 (eth0 only)
//! ```
use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use nva_tests::{
    Netns, NvaProcess,
    daemons::{Bird, Gobgp},
    require_root, serial, veth, wait_until,
    xdpstub::XdpPass,
};

const WAIT: Duration = Duration::from_secs(40);
const ONPREM: &str = "192.168.50.10";
const SPOKE1: &str = "10.1.0.4";
const SPOKE2: &str = "10.2.0.4";

struct Lab {
    fabric: Netns,
    rs: Vec<Netns>,
    ergw: Netns,
    spokes: Vec<Netns>,
    nvas: Vec<Netns>,
    _pass: Vec<XdpPass>,
}

fn lab() -> Lab {
    let fabric = Netns::new("fabric").unwrap();
    let ergw = Netns::new("ergw").unwrap();
    let rs: Vec<Netns> = (1..=2)
        .map(|k| Netns::new(&format!("rs{k}")).unwrap())
        .collect();
    let spokes: Vec<Netns> = (1..=2)
        .map(|k| Netns::new(&format!("spoke{k}")).unwrap())
        .collect();
    let nvas: Vec<Netns> = (1..=2)
        .map(|k| Netns::new(&format!("nva{k}")).unwrap())
        .collect();
    for ns in [&fabric, &ergw]
        .into_iter()
        .chain(&rs)
        .chain(&spokes)
        .chain(&nvas)
    {
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0").unwrap();
    }
    fabric.sysctl("net.ipv4.ip_forward", "1").unwrap();
    fabric
        .sysctl("net.ipv4.fib_multipath_hash_policy", "1")
        .unwrap();
    let mut pass = Vec::new();
    // The NVA subnet and the route-server subnet are bridges in the fabric.
    fabric.ip("link add brn type bridge").unwrap();
    fabric.ip("addr add 10.0.1.1/24 dev brn").unwrap();
    fabric.set_link("brn", true).unwrap();
    fabric.ip("link add brr type bridge").unwrap();
    fabric.ip("addr add 10.0.255.1/27 dev brr").unwrap();
    fabric.set_link("brr", true).unwrap();
    for (k, nva) in nvas.iter().enumerate() {
        let port = format!("n{}", k + 1);
        veth(&fabric, &port, nva, "eth0").unwrap();
        fabric.ip(&format!("link set {port} master brn")).unwrap();
        // Frames the NVA sends back with XDP_TX arrive only with an XDP program here.
        pass.push(XdpPass::attach(&fabric, &port).unwrap());
        nva.ip(&format!("addr add 10.0.1.{}/24 dev eth0", k + 4))
            .unwrap();
        // The VM's default route to its subnet gateway, as DHCP gives it.
        nva.ip("route add default via 10.0.1.1").unwrap();
        nva.sysctl("net.ipv4.ip_forward", "1").unwrap();
        nva.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])
            .unwrap();
    }
    for (k, r) in rs.iter().enumerate() {
        let port = format!("r{}", k + 1);
        veth(&fabric, &port, r, "eth0").unwrap();
        fabric.ip(&format!("link set {port} master brr")).unwrap();
        r.ip(&format!("addr add 10.0.255.{}/27 dev eth0", k + 4))
            .unwrap();
        r.ip("route add default via 10.0.255.1").unwrap();
    }
    veth(&fabric, "g0", &ergw, "eth0").unwrap();
    fabric.ip("addr add 10.0.200.1/27 dev g0").unwrap();
    ergw.ip("addr add 10.0.200.4/27 dev eth0").unwrap();
    ergw.ip(&format!("addr add {ONPREM}/32 dev lo")).unwrap();
    ergw.ip("route add default via 10.0.200.1").unwrap();
    // Locally generated traffic on veth carries partial checksums that an XDP_TX hop
    // cannot complete: senders compute them in full (real NICs need nothing).
    ergw.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"])
        .unwrap();
    // The fabric knows where on-prem is (ExpressRoute), as system routes.
    fabric
        .ip("route add 192.168.50.0/24 via 10.0.200.4")
        .unwrap();
    for (k, s) in spokes.iter().enumerate() {
        let port = format!("s{}", k + 1);
        veth(&fabric, &port, s, "eth0").unwrap();
        fabric
            .ip(&format!("addr add 10.{}.0.1/24 dev {port}", k + 1))
            .unwrap();
        s.ip(&format!("addr add 10.{}.0.4/24 dev eth0", k + 1))
            .unwrap();
        s.ip(&format!("route add default via 10.{}.0.1", k + 1))
            .unwrap();
        s.exec_ok(&["ethtool", "-K", "eth0", "tx", "off"]).unwrap();
        // Spoke and on-prem traffic consults what the route servers learned first.
        fabric
            .ip(&format!("rule add iif {port} lookup 100 pref 100"))
            .unwrap();
    }
    fabric.ip("rule add iif g0 lookup 100 pref 100").unwrap();
    Lab {
        fabric,
        rs,
        ergw,
        spokes,
        nvas,
        _pass: pass,
    }
}

/// Azure Route Server endpoint `k` (1 or 2): AS 65515, multihop, next hops unchanged,
/// the VNet's spoke prefixes with its own address as next hop, add-path to the fabric.
fn route_server(k: usize) -> String {
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
const FABRIC: &str = r#"
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

const ERGW: &str = r#"
[global.config]
  as = 12076
  router-id = "10.0.200.4"
  port = 179
  local-address-list = ["10.0.200.4"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.255.4"
    peer-as = 65515
  [neighbors.transport.config]
    local-address = "10.0.200.4"
  [neighbors.ebgp-multihop.config]
    enabled = true
    multihop-ttl = 3
  [neighbors.timers.config]
    hold-time = 3
    keepalive-interval = 1
    connect-retry = 1
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.255.5"
    peer-as = 65515
  [neighbors.transport.config]
    local-address = "10.0.200.4"
  [neighbors.ebgp-multihop.config]
    enabled = true
    multihop-ttl = 3
  [neighbors.timers.config]
    hold-time = 3
    keepalive-interval = 1
    connect-retry = 1
"#;

/// The README's hub recipe: one NIC, /32 routes to both route-server endpoints via
/// the subnet gateway, one peer per endpoint (grouped: nothing learned from one is
/// announced to the other), a summary announced; `extra` is appended.
fn nva_config(k: usize, extra: &str) -> String {
    format!(
        r#"
[health]
drain_ms = 1500
[[interfaces]]
name = "eth0"
[[routes]]
prefix = "10.0.255.4/32"
nexthops = [{{ via = "10.0.1.1" }}]
[[routes]]
prefix = "10.0.255.5/32"
nexthops = [{{ via = "10.0.1.1" }}]
[bgp]
local_as = 65001
router_id = "10.0.1.{ip}"
announce = ["10.0.0.0/8", "192.168.0.0/16"]
[[bgp.peers]]
name = "rs1"
address = "10.0.255.4"
remote_as = 65515
group = "rs"
multihop_ttl = 2
hold_time = 3
keepalive = 1
connect_retry = 1
export = "to-rs"
[[bgp.peers]]
name = "rs2"
address = "10.0.255.5"
remote_as = 65515
group = "rs"
multihop_ttl = 2
hold_time = 3
keepalive = 1
connect_retry = 1
export = "to-rs"
[[policies]]
name = "to-rs"
default = "accept"
[[policies.rules]]
set = {{ as_path_exclude = [65515] }}
action = "accept"
{extra}
"#,
        ip = k + 3
    )
}

struct Daemons {
    rs: Vec<Bird>,
    fabric: Bird,
    ergw: Gobgp,
}

fn daemons(lab: &Lab) -> Daemons {
    let rs = (1..=2)
        .map(|k| Bird::start(&lab.rs[k - 1], &route_server(k)).unwrap())
        .collect();
    let fabric = Bird::start(&lab.fabric, FABRIC).unwrap();
    let ergw = Gobgp::start(&lab.ergw, ERGW).unwrap();
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
    assert!(!add.contains("rror"), "{add}");
    Daemons { rs, fabric, ergw }
}

/// The fabric's learned route for `prefix`: its next hops.
fn fabric_nexthops(lab: &Lab, prefix: &str) -> Vec<String> {
    let out = lab
        .fabric
        .ip(&format!("route show table 100 {prefix}"))
        .unwrap();
    let mut hops: Vec<String> = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect();
    hops.sort();
    hops
}

/// nva's answer to `nva routes ADDRESS`.
fn route(nva: &NvaProcess, addr: &str) -> serde_json::Value {
    nva.cli(&["routes", addr]).unwrap_or_default()
}

fn learned_recursively(nva: &NvaProcess, addr: &str, bgp_next_hops: &[&str]) -> bool {
    let r = route(nva, addr);
    let via: Vec<String> = r["route"]["resolved_via"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["next_hop"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    r["route"]["source"] == "bgp"
        && r["route"]["nexthops"] == serde_json::json!(["10.0.1.1"])
        && via == bgp_next_hops
}

/// Sends `count` datagrams from `from` to `dst`, one per `gap`, round-robin over 32
/// source ports; returns each one's send time.
fn paced(
    from: &Netns,
    dst: &str,
    count: u32,
    gap: Duration,
) -> std::thread::JoinHandle<Vec<Instant>> {
    let dst: SocketAddr = format!("{dst}:7000").parse().unwrap();
    from.spawn_thread(move || {
        let socks: Vec<UdpSocket> = (0..32)
            .map(|i| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 52000 + i)).unwrap();
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

fn sequence_numbers(sink: &nva_tests::UdpSink) -> HashSet<u32> {
    sink.received()
        .iter()
        .filter(|d| d.payload.len() >= 4)
        .map(|d| u32::from_be_bytes([d.payload[0], d.payload[1], d.payload[2], d.payload[3]]))
        .collect()
}

fn sink(ns: &Netns, addr: &str) -> nva_tests::UdpSink {
    nva_tests::UdpSink::start(ns, &[format!("{addr}:7000").parse().unwrap()]).unwrap()
}

/// Sends `count` datagrams and waits for them; returns how many arrived.
fn deliver(from: &Netns, to: &nva_tests::UdpSink, dst: &str, count: u32) -> usize {
    to.clear();
    paced(from, dst, count, Duration::from_millis(1))
        .join()
        .unwrap();
    to.wait_for(count as usize, Duration::from_secs(3))
}

#[test]
fn hub_nvas_forward_what_the_route_server_teaches() {
    if !require_root("hub_nvas_forward_what_the_route_server_teaches") {
        return;
    }
    let _g = serial();
    let lab = lab();
    let d = daemons(&lab);
    let mut nvas: Vec<NvaProcess> = (1..=2)
        .map(|k| NvaProcess::start(&lab.nvas[k - 1], &nva_config(k, "")).unwrap())
        .collect();
    let diagnose = |nvas: &[NvaProcess]| {
        format!(
            "rs1:\n{}\n{}\nfabric:\n{}\n{}\nergw:\n{}\nnva1 bgp:\n{}\nnva1 routes:\n{}\nnva1 log:\n{}",
            d.rs[0].birdc(&["show", "protocols"]),
            d.rs[0].birdc(&["show", "route", "all"]),
            d.fabric.birdc(&["show", "protocols"]),
            d.fabric.birdc(&["show", "route", "all"]),
            d.ergw.gobgp(&["neighbor"]),
            nvas[0].cli(&["bgp"]).unwrap_or_default(),
            nvas[0].cli(&["routes"]).unwrap_or_default(),
            nvas[0].log()
        )
    };

    // Every learned route is installed, resolved through the /32s (spokes, next hop
    // the route servers) or the VM's default route (on-prem, next hop the gateway).
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(nvas.iter().all(|n| {
            learned_recursively(n, SPOKE1, &["10.0.255.4", "10.0.255.5"])
                && learned_recursively(n, SPOKE2, &["10.0.255.4", "10.0.255.5"])
                && learned_recursively(n, ONPREM, &["10.0.200.4"])
        }) && fabric_nexthops(&lab, "10.0.0.0/8") == ["10.0.1.4", "10.0.1.5"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", diagnose(&nvas)));
    let paths = nvas[0].cli(&["bgp", "10.1.0.0/16"]).unwrap();
    assert!(
        paths
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["resolved"] == true && p["gateways"] == serde_json::json!(["10.0.1.1"])),
        "{paths}"
    );
    let text = nvas[0].cli_raw(&["routes", ONPREM]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("via 10.0.200.4 (recursive via 0.0.0.0/0 (kernel)) -> 10.0.1.1"),
        "{text}"
    );

    // Split horizon over the route server's endpoints: even with an export policy
    // that strips 65515, nothing learned from one endpoint goes to the other.
    for (k, rs) in d.rs.iter().enumerate() {
        for from in ["nva1", "nva2"] {
            let leaked = rs.birdc(&["show", "route", "protocol", from]);
            assert!(
                !leaked.contains("10.1.0.0/16")
                    && !leaked.contains("10.2.0.0/16")
                    && !leaked.contains("192.168.50.0/24"),
                "rs{} got a hub route back from {from}:\n{leaked}",
                k + 1
            );
            assert!(leaked.contains("10.0.0.0/8"), "{leaked}");
        }
    }

    // Traffic in every direction goes through the NVAs in XDP (hairpin, XDP_TX).
    let onprem = sink(&lab.ergw, ONPREM);
    let spoke1 = sink(&lab.spokes[0], SPOKE1);
    let spoke2 = sink(&lab.spokes[1], SPOKE2);
    let before: Vec<_> = nvas.iter().map(|n| n.counters().unwrap()).collect();
    let explain = |what: &str, got: usize| {
        if got != 500 {
            panic!(
                "{what}: {got} of 500 arrived\nnva1 stats: {}\nnva2 stats: {}\nfabric:\n{}\n{}\n{}\nnva1 neigh:\n{}",
                nvas[0].cli(&["stats"]).unwrap_or_default(),
                nvas[1].cli(&["stats"]).unwrap_or_default(),
                lab.fabric.ip("rule").unwrap_or_default(),
                lab.fabric.ip("route show table all").unwrap_or_default(),
                lab.fabric.ip("-s link").unwrap_or_default(),
                lab.nvas[0].ip("neigh").unwrap_or_default(),
            );
        }
    };
    explain(
        "spoke1 -> on-prem",
        deliver(&lab.spokes[0], &onprem, ONPREM, 500),
    );
    explain(
        "on-prem -> spoke1",
        deliver(&lab.ergw, &spoke1, SPOKE1, 500),
    );
    explain(
        "spoke1 -> spoke2",
        deliver(&lab.spokes[0], &spoke2, SPOKE2, 500),
    );
    let mut tx_total = 0;
    for (k, nva) in nvas.iter().enumerate() {
        let c = nva.counters().unwrap().since(&before[k]);
        let tx = c.get("eth0", "tx");
        eprintln!(
            "nva{}: tx {tx}, passed-no-route {}, passed-neigh {}",
            k + 1,
            c.get("eth0", "passed-no-route"),
            c.get("eth0", "passed-neigh")
        );
        // N-active: the fabric spreads flows over both NVAs.
        assert!(tx > 100, "nva{} carried {tx} packets", k + 1);
        assert_eq!(c.get("eth0", "passed-no-route"), 0);
        tx_total += tx;
    }
    assert!(tx_total >= 1500, "{tx_total} of 1500 forwarded in XDP");

    // Graceful stop of nva2 under traffic: it withdraws, the fabric moves its flows.
    let sent = paced(&lab.spokes[0], ONPREM, 4000, Duration::from_millis(1));
    onprem.clear();
    std::thread::sleep(Duration::from_millis(800));
    let stopped_at = Instant::now();
    nvas[1].stop().unwrap();
    let sent = sent.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = sequence_numbers(&onprem);
    let lost = (0..sent.len() as u32).filter(|n| !got.contains(n)).count();
    eprintln!(
        "hub failover, SIGTERM of nva2: {lost} of {} datagrams lost (stop took {:?})",
        sent.len(),
        stopped_at.elapsed()
    );
    assert_eq!(lost, 0, "a graceful stop loses nothing");
    assert_eq!(fabric_nexthops(&lab, "10.0.0.0/8"), ["10.0.1.4"]);

    // nva2 back, then nva1's VM fails (its NIC goes, nva is SIGKILLed): the route
    // servers' hold time (3 s here, 180 s in Azure) decides. (A SIGKILL alone loses
    // nothing: the kernel forwards on with nva's mirrored routes.)
    nvas[1] = NvaProcess::start(&lab.nvas[1], &nva_config(2, "")).unwrap();
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(fabric_nexthops(&lab, "192.168.0.0/16") == ["10.0.1.4", "10.0.1.5"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", diagnose(&nvas)));
    let sent = paced(&lab.spokes[0], ONPREM, 8000, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(800));
    onprem.clear();
    let killed_at = Instant::now();
    lab.nvas[0].set_link("eth0", false).unwrap();
    nvas[0].kill().unwrap();
    let sent = sent.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = sequence_numbers(&onprem);
    let lost: Vec<u32> = (0..sent.len() as u32)
        .filter(|n| sent[*n as usize] >= killed_at && !got.contains(n))
        .collect();
    let last = lost.iter().map(|n| sent[*n as usize]).max();
    eprintln!(
        "hub failover, VM failure of nva1: {} datagrams lost, the last {:?} after the failure",
        lost.len(),
        last.map(|t| t.duration_since(killed_at))
    );
    // Everything sent a second after the hold time arrived.
    let settled = killed_at + Duration::from_secs(4);
    assert!(
        lost.iter().all(|n| sent[*n as usize] < settled),
        "datagrams lost after the route servers' hold time"
    );
    assert_eq!(fabric_nexthops(&lab, "10.0.0.0/8"), ["10.0.1.5"]);
}
