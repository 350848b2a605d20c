//! nva learning its routes over BGP from real daemons, as an NVA does from a route
//! server: two BIRD 2 instances play the route server (ASN 65515, two endpoints on
//! loopbacks, eBGP multihop reached through static /32 routes, like Azure Route
//! Server); GoBGP is the second implementation.
//!
//! Topology: Hub(2) (client -> nva -> srv1, srv2) plus a route-server namespace `rs`
//! behind nva's port `r0` (10.0.250.0/24), owning 10.0.255.4 and 10.0.255.5.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use nva_tests::{
    Hub, Netns, NvaProcess, UdpSink,
    daemons::{Bird, Gobgp},
    require_root, send_flows_from, serial,
    topology::{server_unique_v4, server_unique_v6, server_v4, server_v6},
    veth, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

/// The hub plus the route-server namespace.
struct Lab {
    hub: Hub,
    rs: Netns,
}

fn lab(servers: usize) -> Lab {
    let hub = Hub::build(servers).unwrap();
    let rs = Netns::new("rs").unwrap();
    veth(&hub.nva, "r0", &rs, "eth0").unwrap();
    hub.nva.ip("addr add 10.0.250.1/24 dev r0").unwrap();
    hub.nva
        .ip("-6 addr add fd00:250::1/64 dev r0 nodad")
        .unwrap();
    rs.ip("addr add 10.0.250.2/24 dev eth0").unwrap();
    rs.ip("-6 addr add fd00:250::2/64 dev eth0 nodad").unwrap();
    for a in ["10.0.255.4/32", "10.0.255.5/32", "10.0.255.6/32"] {
        rs.ip(&format!("addr add {a} dev lo")).unwrap();
    }
    rs.ip("route add default via 10.0.250.1").unwrap();
    // BIRD only originates static routes whose gateway is on a directly connected
    // network: give the route servers an on-link view of the server subnets (a
    // veth pair inside rs) so the routes carry the servers as third-party next hops.
    veth(&rs, "d0", &rs, "d1").unwrap();
    for k in 1..=servers {
        rs.ip(&format!("addr add 10.0.{k}.254/24 dev d0")).unwrap();
        rs.ip(&format!("-6 addr add fd00:{k}::fe/64 dev d0 nodad"))
            .unwrap();
    }
    Lab { hub, rs }
}

/// A BIRD route-server endpoint: AS 65515, multihop, next hops of announced routes
/// kept (third-party next hops: the servers).
fn bird_rs(endpoint: &str, statics: &str, extra_bgp: &str) -> String {
    format!(
        r#"
router id {endpoint};
log stderr all;
protocol device {{ scan time 1; }}
{statics}
protocol bgp nva {{
    local {endpoint} as 65515;
    neighbor 10.0.250.1 as 65001;
    multihop 2;
    strict bind yes;
    hold time 9;
    keepalive time 3;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 {{ import all; export all; next hop keep; }};
    ipv6 {{ import all; export all; next hop keep; }};
    {extra_bgp}
}}
"#
    )
}

fn nva_config(peers: &str, extra: &str) -> String {
    format!(
        r#"
[[interfaces]]
name = "c0"
[[interfaces]]
name = "s1"
[[interfaces]]
name = "s2"
[[interfaces]]
name = "r0"

# The route server's endpoints are two hops away: /32 routes, like on Azure.
[[routes]]
prefix = "10.0.255.4/32"
nexthops = [{{ via = "10.0.250.2" }}]
[[routes]]
prefix = "10.0.255.5/32"
nexthops = [{{ via = "10.0.250.2" }}]
[[routes]]
prefix = "10.0.255.6/32"
nexthops = [{{ via = "10.0.250.2" }}]

[bgp]
local_as = 65001
router_id = "10.0.250.1"
announce = ["10.99.0.0/16"]
{peers}
{extra}
"#
    )
}

/// [`nva_config`] for a lab with one server (no `s2`).
fn one_server_config(peers: &str, extra: &str) -> String {
    nva_config(peers, extra).replace("[[interfaces]]\nname = \"s2\"\n", "")
}

fn peer(name: &str, address: &str, extra: &str) -> String {
    format!(
        "[[bgp.peers]]\nname = \"{name}\"\naddress = \"{address}\"\nremote_as = 65515\n\
         multihop_ttl = 2\nhold_time = 9\nkeepalive = 3\nconnect_retry = 1\n{extra}\n"
    )
}

fn established(nva: &NvaProcess, name: &str) -> bool {
    nva.cli(&["bgp"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .into_iter()
        .flatten()
        .any(|p| p["name"] == name && p["state"] == "established")
}

fn route(nva: &NvaProcess, addr: &str) -> serde_json::Value {
    nva.cli(&["routes", addr]).unwrap()
}

fn wait_route(nva: &NvaProcess, addr: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(pred(&route(nva, addr)))
    })
    .unwrap_or_else(|e| {
        panic!(
            "route for {addr}: {e:#}: {}\n{}",
            route(nva, addr),
            nva.log()
        )
    });
}

/// Sends flows to `dst` and returns flow -> server.
fn deliver(
    hub: &Hub,
    sinks: &[UdpSink],
    dst: SocketAddr,
    flows: u16,
    base: u16,
) -> BTreeMap<u16, usize> {
    for s in sinks {
        s.clear();
    }
    let ports: Vec<u16> = (0..flows).map(|i| base + i).collect();
    send_flows_from(&hub.client, dst, &ports, 2, None).unwrap();
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        Ok(sinks.iter().map(UdpSink::count).sum::<usize>() >= flows as usize * 2)
    });
    let mut owners = BTreeMap::new();
    for (k, s) in sinks.iter().enumerate() {
        for d in s.received() {
            owners.insert(d.flow_index().unwrap(), k + 1);
        }
    }
    owners
}

#[test]
fn bird_route_servers_feed_the_fib_and_get_our_announcements() {
    if !require_root("bird_route_servers_feed_the_fib_and_get_our_announcements") {
        return;
    }
    let _g = serial();
    let lab = lab(2);
    // Both endpoints announce the service prefix with a next hop each (ECMP), and the
    // per-server prefixes; rs1 also a route we will see withdrawn, and two routes
    // for the AS-path exclude check.
    let rs1_statics = format!(
        r#"
protocol static s4 {{ ipv4;
    route 10.100.0.0/16 via {s1} {{ bgp_next_hop = {s1}; }};
    route 10.200.1.0/24 via {s1} {{ bgp_next_hop = {s1}; }};
    route 10.210.0.0/16 via {s1} {{ bgp_next_hop = {s1}; }};
    route 10.211.0.0/16 via {s1} {{ bgp_next_hop = {s1}; }};
}}
protocol static gone {{ ipv4; route 10.220.0.0/16 via {s2} {{ bgp_next_hop = {s2}; }}; }}
protocol static s6 {{ ipv6; route fd00:200:1::/48 via {s1v6} {{ bgp_next_hop = {s1v6}; }}; }}
"#,
        s1 = server_v4(1),
        s2 = server_v4(2),
        s1v6 = server_v6(1)
    );
    let rs2_statics = format!(
        r#"
protocol static s4 {{ ipv4;
    route 10.100.0.0/16 via {s2} {{ bgp_next_hop = {s2}; }};
    route 10.200.2.0/24 via {s2} {{ bgp_next_hop = {s2}; }};
}}
protocol static s6 {{ ipv6; route fd00:200:2::/48 via {s2v6} {{ bgp_next_hop = {s2v6}; }}; }}
"#,
        s2 = server_v4(2),
        s2v6 = server_v6(2)
    );
    let rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &rs1_statics, "")).unwrap();
    let rs2 = Bird::start(&lab.rs, &bird_rs("10.0.255.5", &rs2_statics, "")).unwrap();
    // rs2 gets our routes prepended twice (passive), and the routes learned from rs1
    // (which carry 65515) with 65515 excluded for 10.210.0.0/16 only.
    let policies = r#"
[[prefix_lists]]
name = "excluded"
entries = [{ prefix = "10.210.0.0/16" }]
[[prefix_lists]]
name = "transit"
entries = [{ prefix = "10.210.0.0/15", le = 16 }]

[[policies]]
name = "to-rs2"
default = "reject"
[[policies.rules]]
match = { prefix = ["10.99.0.0/16"] }
set = { prepend = { count = 2 } }
action = "accept"
[[policies.rules]]
match = { prefix_list = "excluded" }
set = { as_path_exclude = [65515] }
action = "accept"
[[policies.rules]]
match = { prefix_list = "transit" }
action = "accept"
"#;
    let config = nva_config(
        &(peer("rs1", "10.0.255.4", "") + &peer("rs2", "10.0.255.5", "export = \"to-rs2\"")),
        policies,
    );
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();

    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(established(&nva, "rs1") && established(&nva, "rs2"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}\n{}", nva.log(), rs1.log(), rs2.log()));
    rs1.wait_for(&["show", "protocols", "nva"], WAIT, |o| {
        o.contains("Established")
    })
    .unwrap();

    // IPv4 and IPv6 routes from the route servers are in the FIB...
    wait_route(&nva, &server_unique_v4(1).to_string(), |r| {
        r["route"]["source"] == "bgp" && r["dataplane"]["action"] == 1
    });
    let r = route(&nva, &server_unique_v4(1).to_string());
    assert_eq!(
        r["route"]["nexthops"],
        serde_json::json!([server_v4(1).to_string()])
    );
    wait_route(&nva, &server_unique_v6(2).to_string(), |r| {
        r["route"]["source"] == "bgp"
    });
    // ... and equal routes from the two endpoints are one ECMP group.
    wait_route(&nva, "10.100.0.1", |r| {
        r["route"]["nexthops"].as_array().map(Vec::len) == Some(2)
    });

    // Packets follow them (once nva has the servers' MACs).
    wait_until(WAIT, Duration::from_millis(100), || {
        let nhs = nva.cli(&["nexthops"])?;
        Ok(nhs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["dev"] == "s1" || n["dev"] == "s2")
            .all(|n| n["resolved"] == true))
    })
    .unwrap();
    let targets = [
        SocketAddr::new(server_unique_v4(1).into(), 7000),
        SocketAddr::new(server_unique_v6(2).into(), 7000),
        SocketAddr::new("10.100.0.1".parse().unwrap(), 7000),
    ];
    let sinks: Vec<UdpSink> = (1..=2)
        .map(|k| {
            let mine: Vec<SocketAddr> = match k {
                1 => vec![targets[0], targets[2]],
                _ => vec![targets[1], targets[2]],
            };
            UdpSink::start(lab.hub.server(k), &mine).unwrap()
        })
        .collect();
    let to1 = deliver(&lab.hub, &sinks, targets[0], 5, 50000);
    assert!(to1.len() == 5 && to1.values().all(|k| *k == 1), "{to1:?}");
    let to2 = deliver(&lab.hub, &sinks, targets[1], 5, 50100);
    assert!(to2.len() == 5 && to2.values().all(|k| *k == 2), "{to2:?}");
    let spread = deliver(&lab.hub, &sinks, targets[2], 64, 50200);
    assert_eq!(spread.len(), 64);
    assert!(
        spread.values().any(|k| *k == 1) && spread.values().any(|k| *k == 2),
        "{spread:?}"
    );

    // A withdrawal removes the route.
    wait_route(&nva, "10.220.0.1", |r| r["route"]["source"] == "bgp");
    rs1.birdc(&["disable", "gone"]);
    wait_route(&nva, "10.220.0.1", |r| r["route"].is_null());

    // Our announcement arrives at both, prepended towards rs2.
    let on1 = rs1
        .wait_for(&["show", "route", "10.99.0.0/16", "all"], WAIT, |o| {
            o.contains("BGP.as_path")
        })
        .unwrap();
    assert!(
        on1.contains("BGP.as_path: 65001") && !on1.contains("65001 65001"),
        "{on1}"
    );
    let on2 = rs2
        .wait_for(&["show", "route", "10.99.0.0/16", "all"], WAIT, |o| {
            o.contains("BGP.as_path")
        })
        .unwrap();
    assert!(on2.contains("65001 65001 65001"), "{on2}");
    // AS-path exclude: rs2 (AS 65515) accepts the route learned from rs1 only where
    // 65515 was excluded; the other one is dropped by its loop prevention.
    let excluded = rs2
        .wait_for(&["show", "route", "10.210.0.0/16", "all"], WAIT, |o| {
            o.contains("BGP.as_path")
        })
        .unwrap();
    assert!(!excluded.contains("65515"), "{excluded}");
    std::thread::sleep(Duration::from_secs(1));
    let looped = rs2.birdc(&["show", "route", "10.211.0.0/16"]);
    assert!(
        !looped.contains("10.211.0.0/16"),
        "rs2 must drop a path with its own AS: {looped}"
    );
    // nva itself shows the sessions and counts.
    let bgp = nva.cli(&["bgp"]).unwrap();
    let rs1_status = bgp
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rs1")
        .unwrap()
        .clone();
    assert!(
        rs1_status["accepted"].as_u64().unwrap() >= 5,
        "{rs1_status}"
    );
    assert!(
        rs1_status["announced"].as_u64().unwrap() >= 1,
        "{rs1_status}"
    );
}

#[test]
fn max_prefix_and_a_garbage_peer_never_disturb_the_other_session() {
    if !require_root("max_prefix_and_a_garbage_peer_never_disturb_the_other_session") {
        return;
    }
    let _g = serial();
    let lab = lab(2);
    let rs1 = Bird::start(
        &lab.rs,
        &bird_rs(
            "10.0.255.4",
            &format!(
                "protocol static s4 {{ ipv4; route 10.200.1.0/24 via {0} {{ bgp_next_hop = {0}; }}; }}",
                server_v4(1)
            ),
            "",
        ),
    )
    .unwrap();
    let many: String = (0..10)
        .map(|i| {
            format!(
                "route 10.230.{i}.0/24 via {0} {{ bgp_next_hop = {0}; }};\n",
                server_v4(2)
            )
        })
        .collect();
    let rs2 = Bird::start(
        &lab.rs,
        &bird_rs(
            "10.0.255.5",
            &format!("protocol static s4 {{ ipv4; {many} }}"),
            "",
        ),
    )
    .unwrap();
    // A "peer" on 10.0.255.6 that answers with garbage.
    let garbage = lab.rs.run(|| TcpListener::bind("10.0.255.6:179").unwrap());
    let garbage_thread = std::thread::spawn(move || -> Vec<u8> {
        let (mut conn, _) = garbage.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut open = [0u8; 4096];
        let _ = conn.read(&mut open);
        // A header with a broken marker.
        conn.write_all(&[0x55; 19]).unwrap();
        let mut reply = vec![0u8; 64];
        let n = conn.read(&mut reply).unwrap_or(0);
        reply.truncate(n);
        reply
    });
    let config = nva_config(
        &(peer("rs1", "10.0.255.4", "")
            + &peer(
                "rs2",
                "10.0.255.5",
                "max_prefix = 5\nmax_prefix_action = \"teardown\"",
            )
            + &peer("junk", "10.0.255.6", "")),
        "",
    );
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(established(&nva, "rs1"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva.log()));
    wait_route(&nva, &server_unique_v4(1).to_string(), |r| {
        r["route"]["source"] == "bgp"
    });

    // The garbage peer got a NOTIFICATION: message header error (code 1).
    let reply = garbage_thread.join().unwrap();
    assert!(reply.len() >= 21, "no NOTIFICATION: {reply:?}");
    assert_eq!(reply[18], 3, "message type NOTIFICATION");
    assert_eq!(reply[19], 1, "error code: message header error");

    // rs2 sent more than max_prefix: torn down with Cease / max prefixes...
    rs2.wait_for(&["show", "protocols", "all", "nva"], WAIT, |o| {
        o.contains("Maximum number of prefixes") || o.contains("maximum number of prefixes")
    })
    .unwrap();
    let bgp = nva.cli(&["bgp"]).unwrap();
    let rs2_status = bgp
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rs2")
        .unwrap()
        .clone();
    assert_eq!(rs2_status["max_prefix_reached"], true, "{rs2_status}");
    assert_ne!(rs2_status["state"], "established");
    assert!(
        route(&nva, "10.230.1.1")["route"].is_null(),
        "none of its routes stay"
    );
    // ... while rs1 stays up with its routes in the FIB.
    assert!(established(&nva, "rs1"));
    assert_eq!(
        route(&nva, &server_unique_v4(1).to_string())["route"]["source"],
        "bgp"
    );
    rs1.wait_for(&["show", "protocols", "nva"], WAIT, |o| {
        o.contains("Established")
    })
    .unwrap();
}

#[test]
fn gobgp_peer_routes_reach_the_data_plane() {
    if !require_root("gobgp_peer_routes_reach_the_data_plane") {
        return;
    }
    let _g = serial();
    let lab = lab(1);
    let gobgp = Gobgp::start(
        &lab.rs,
        r#"
[global.config]
  as = 65520
  router-id = "10.0.255.4"
  port = 179
  local-address-list = ["10.0.255.4"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.250.1"
    peer-as = 65001
  [neighbors.ebgp-multihop.config]
    enabled = true
    multihop-ttl = 2
  [neighbors.timers.config]
    hold-time = 9
    keepalive-interval = 3
    connect-retry = 1
  [neighbors.transport.config]
    local-address = "10.0.255.4"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#,
    )
    .unwrap();
    let peers = "[[bgp.peers]]\nname = \"vwan\"\naddress = \"10.0.255.4\"\nremote_as = 65520\n\
                 multihop_ttl = 2\nhold_time = 9\nkeepalive = 3\nconnect_retry = 1\n";
    let config = one_server_config(peers, "");
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(established(&nva, "vwan"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", nva.log(), gobgp.log()));
    let add = gobgp.gobgp(&[
        "global",
        "rib",
        "add",
        "10.240.0.0/16",
        "nexthop",
        &server_v4(1).to_string(),
        "community",
        "65520:1",
    ]);
    assert!(!add.contains("rror"), "{add}");
    let add6 = gobgp.gobgp(&[
        "global",
        "rib",
        "-a",
        "ipv6",
        "add",
        "fd00:240::/48",
        "nexthop",
        &server_v6(1).to_string(),
    ]);
    assert!(!add6.contains("rror"), "{add6}");
    wait_route(&nva, "10.240.1.1", |r| {
        r["route"]["source"] == "bgp" && r["route"]["nexthops"][0] == server_v4(1).to_string()
    });
    wait_route(&nva, "fd00:240::1", |r| r["route"]["source"] == "bgp");
    // Our originated prefix arrives at GoBGP.
    gobgp
        .wait_for(&["global", "rib", "10.99.0.0/16"], WAIT, |o| {
            o.contains("10.99.0.0/16")
        })
        .unwrap();
    // Withdrawn at GoBGP: gone from the FIB.
    gobgp.gobgp(&["global", "rib", "del", "10.240.0.0/16"]);
    wait_route(&nva, "10.240.1.1", |r| r["route"].is_null());
}

fn sighup(nva: &NvaProcess, config: &str) {
    std::fs::write(nva.config_path(), config).unwrap();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &nva.pid().unwrap().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn sighup_adds_and_removes_peers_and_applies_new_policy() {
    if !require_root("sighup_adds_and_removes_peers_and_applies_new_policy") {
        return;
    }
    let _g = serial();
    let lab = lab(2);
    let s = |k: usize| {
        format!(
            "protocol static s4 {{ ipv4; route 10.200.{k}.0/24 via {0} {{ bgp_next_hop = {0}; }}; }}",
            server_v4(k)
        )
    };
    let _rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &s(1), "")).unwrap();
    let _rs2 = Bird::start(&lab.rs, &bird_rs("10.0.255.5", &s(2), "")).unwrap();
    let only_rs1 = nva_config(&peer("rs1", "10.0.255.4", ""), "");
    let nva = NvaProcess::start(&lab.hub.nva, &only_rs1).unwrap();
    wait_route(&nva, &server_unique_v4(1).to_string(), |r| {
        r["route"]["source"] == "bgp"
    });
    assert!(route(&nva, &server_unique_v4(2).to_string())["route"].is_null());

    // Add rs2.
    let both = nva_config(
        &(peer("rs1", "10.0.255.4", "") + &peer("rs2", "10.0.255.5", "")),
        "",
    );
    sighup(&nva, &both);
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(established(&nva, "rs2"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva.log()));
    wait_route(&nva, &server_unique_v4(2).to_string(), |r| {
        r["route"]["source"] == "bgp"
    });

    // A new import policy for rs1 rejects its route (applied through a route refresh).
    let strict = nva_config(
        &(peer("rs1", "10.0.255.4", "import = \"no-10-200-1\"") + &peer("rs2", "10.0.255.5", "")),
        "[[policies]]\nname = \"no-10-200-1\"\n[[policies.rules]]\nmatch = { prefix = [\"10.200.1.0/24\"] }\naction = \"reject\"\n",
    );
    sighup(&nva, &strict);
    wait_route(&nva, &server_unique_v4(1).to_string(), |r| {
        r["route"].is_null()
    });
    assert!(established(&nva, "rs1"), "the session itself was not reset");

    // The same policy edited, under the same name (it no longer rejects that prefix):
    // applied as well (before, only a renamed policy took effect).
    let relaxed = strict.replace("10.200.1.0/24\"] }", "10.250.0.0/24\"] }");
    assert_ne!(relaxed, strict);
    sighup(&nva, &relaxed);
    wait_route(&nva, &server_unique_v4(1).to_string(), |r| {
        r["route"]["source"] == "bgp"
    });
    sighup(&nva, &strict);
    wait_route(&nva, &server_unique_v4(1).to_string(), |r| {
        r["route"].is_null()
    });

    // `nva bgp neighbors rs1`: what it announces now (not what it sent over the route
    // refreshes), what policy rejects, what the session negotiated.
    let rs1 = nva.cli(&["bgp", "neighbors", "rs1"]).unwrap()[0].clone();
    assert_eq!(rs1["rejected_by_policy"], 1, "{rs1}");
    // rs1 announces one prefix, the one rejected.
    let accepted = rs1["accepted"].as_u64().unwrap();
    assert_eq!(accepted, 0, "{rs1}");
    assert_eq!(rs1["received_now"].as_u64().unwrap(), accepted + 1, "{rs1}");
    assert_eq!(rs1["announced_by_family"][0], rs1["announced"], "{rs1}");
    assert!(
        rs1["received"].as_u64().unwrap() > rs1["received_now"].as_u64().unwrap(),
        "the cumulative count grew with the refreshes: {rs1}"
    );
    assert_eq!(
        rs1["accepted_by_family"][0].as_u64().unwrap(),
        accepted,
        "{rs1}"
    );
    assert_eq!(rs1["flaps"], 0, "{rs1}");
    assert!(rs1["updates_received"].as_u64().unwrap() >= 3, "{rs1}");
    // Counted by the session: OPEN, KEEPALIVEs, UPDATEs (and End-of-RIB) both ways.
    let (rx, tx) = (
        rs1["messages_received"].as_u64().unwrap(),
        rs1["messages_sent"].as_u64().unwrap(),
    );
    assert!(rx >= 2 + rs1["updates_received"].as_u64().unwrap(), "{rs1}");
    assert!(
        tx >= 3 && rs1["updates_sent"].as_u64().unwrap() >= 1,
        "{rs1}"
    );
    let session = &rs1["session"];
    assert!(session["hold_time"].as_u64().unwrap() > 0, "{rs1}");
    assert_eq!(session["four_octet_as"], true, "{rs1}");
    assert!(
        session["families"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("ipv4-unicast")),
        "{rs1}"
    );
    assert_eq!(
        session["remote"].as_str().unwrap().split(':').next(),
        Some("10.0.255.4")
    );
    // The rejected path is shown for its prefix, with the reason.
    let paths = nva.cli(&["bgp", "10.200.1.0/24"]).unwrap();
    let rejected = paths
        .as_array()
        .unwrap()
        .iter()
        .find(|p| !p["rejected"].is_null())
        .unwrap_or_else(|| panic!("no rejected path: {paths}"));
    assert_eq!(
        rejected["rejected"], "rejected by import policy no-10-200-1",
        "{paths}"
    );
    assert_eq!(rejected["best"], false, "{paths}");
    let text = String::from_utf8(nva.cli_raw(&["bgp", "neighbors"]).unwrap().stdout).unwrap();
    assert!(text.contains("BGP neighbor rs1, 10.0.255.4"), "{text}");
    assert!(text.contains("rejected by import policy 1"), "{text}");

    // Remove rs2: its routes go, and it is no longer a peer.
    let only_rs1_strict = strict.replace(&peer("rs2", "10.0.255.5", ""), "");
    sighup(&nva, &only_rs1_strict);
    wait_route(&nva, &server_unique_v4(2).to_string(), |r| {
        r["route"].is_null()
    });
    let peers = nva.cli(&["bgp"]).unwrap();
    assert!(
        peers.as_array().unwrap().iter().all(|p| p["name"] != "rs2"),
        "{peers}"
    );
}

/// RFC 4271 §9.1.2: a shorter path whose next hop cannot be resolved must not win and
/// blackhole the prefix when another peer announces it validly (before next-hop
/// tracking it did); a next hop that can never be one (nva's own address) is treated
/// as a withdrawal and counted.
#[test]
fn unresolvable_next_hop_loses_to_a_valid_path() {
    if !require_root("unresolvable_next_hop_loses_to_a_valid_path") {
        return;
    }
    let _g = serial();
    let lab = lab(1);
    let s1 = server_v4(1);
    // rs1: the shorter path, over a next hop nothing resolves (no default route here
    // either), and one over nva's own address.
    let rs1_statics = format!(
        r#"
protocol static s4 {{ ipv4;
    route 10.77.0.0/16 via {s1} {{ bgp_next_hop = 198.51.100.1; }};
    route 10.78.0.0/16 via {s1} {{ bgp_next_hop = 10.0.0.1; }};
}}
"#
    );
    // rs2: the same prefix with a longer AS path over a good next hop.
    let rs2_statics = format!(
        r#"
protocol static s4 {{ ipv4;
    route 10.77.0.0/16 via {s1} {{ bgp_next_hop = {s1}; bgp_path = prepend(bgp_path, 65515); bgp_path = prepend(bgp_path, 65515); }};
}}
"#
    );
    let _rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &rs1_statics, "")).unwrap();
    let _rs2 = Bird::start(&lab.rs, &bird_rs("10.0.255.5", &rs2_statics, "")).unwrap();
    let config = one_server_config(
        &(peer("rs1", "10.0.255.4", "") + &peer("rs2", "10.0.255.5", "")),
        "",
    );
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    wait_route(&nva, "10.77.1.1", |r| {
        r["route"]["source"] == "bgp" && r["route"]["nexthops"] == serde_json::json!([s1])
    });
    // rs1's path may arrive after rs2's is installed: wait for both.
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(nva
            .cli(&["bgp", "10.77.0.0/16"])?
            .as_array()
            .map_or(0, Vec::len)
            == 2)
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", nva.cli(&["bgp", "10.77.0.0/16"]).unwrap()));
    let paths = nva.cli(&["bgp", "10.77.0.0/16"]).unwrap();
    let paths = paths.as_array().unwrap();
    assert_eq!(paths.len(), 2, "{paths:?}");
    let bogus = paths
        .iter()
        .find(|p| p["next_hop"] == "198.51.100.1")
        .unwrap();
    assert_eq!(bogus["resolved"], false, "{bogus}");
    assert_eq!(bogus["best"], false, "{bogus}");
    assert!(
        bogus["resolution"]
            .as_str()
            .unwrap()
            .contains("no route resolves it"),
        "{bogus}"
    );
    // Treated as withdrawn: never in the RIB (only shown as rejected, with why),
    // counted for rs1.
    assert!(route(&nva, "10.78.1.1")["route"].is_null());
    let paths = nva.cli(&["bgp", "10.78.0.0/16"]).unwrap();
    let paths = paths.as_array().unwrap();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(
        paths[0]["rejected"]
            .as_str()
            .is_some_and(|r| r.contains("next hop can never be one")),
        "{paths:?}"
    );
    let peers = nva.cli(&["bgp"]).unwrap();
    let rs1 = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rs1")
        .unwrap();
    assert_eq!(rs1["invalid_next_hop"], 1, "{rs1}");
    assert_eq!(rs1["unresolved"], 1, "{rs1}");
    let metrics = nva.cli(&["status"]).unwrap();
    assert!(metrics["routes"]["ipv4"].as_u64().unwrap() > 0);
}

/// An NVA in front of many routes announces a summary instead of them, and never more
/// than a peer's `max_announce` (Azure Route Server drops a peer above 1,000 routes).
#[test]
fn aggregates_and_the_announce_limit() {
    if !require_root("aggregates_and_the_announce_limit") {
        return;
    }
    let _g = serial();
    let lab = lab(1);
    let s1 = server_v4(1);
    let rs1_statics = format!(
        r#"
protocol static many {{ ipv4;
    route 10.240.1.0/24 via {s1} {{ bgp_next_hop = {s1}; }};
    route 10.240.2.0/24 via {s1} {{ bgp_next_hop = {s1}; }};
    route 10.240.3.0/24 via {s1} {{ bgp_next_hop = {s1}; }};
    route 10.241.0.0/16 via {s1} {{ bgp_next_hop = {s1}; }};
}}
"#
    );
    let rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &rs1_statics, "")).unwrap();
    let rs2 = Bird::start(&lab.rs, &bird_rs("10.0.255.5", "", "")).unwrap();
    let extra = r#"
[[bgp.aggregates]]
prefix = "10.240.0.0/16"
summary_only = true
[[policies]]
name = "all"
default = "accept"
"#;
    let config = one_server_config(
        &(peer("rs1", "10.0.255.4", "")
            + &peer("rs2", "10.0.255.5", "export = \"all\"\nmax_announce = 2")),
        extra,
    );
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    let rs2_routes = || rs2.birdc(&["show", "route", "protocol", "nva"]);
    // rs2 gets the originated prefix and the summary; the /24s are summarised and
    // 10.241.0.0/16 would be a third route: held back.
    wait_until(WAIT, Duration::from_millis(100), || {
        let r = rs2_routes();
        Ok(r.contains("10.99.0.0/16") && r.contains("10.240.0.0/16"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", rs2_routes(), nva.log()));
    std::thread::sleep(Duration::from_millis(500));
    let r = rs2_routes();
    assert!(
        !r.contains("10.240.1.0/24") && !r.contains("10.241.0.0/16"),
        "{r}"
    );
    let peers = nva.cli(&["bgp"]).unwrap();
    let p = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rs2")
        .unwrap()
        .clone();
    assert_eq!(p["announced"], 2, "{p}");
    assert_eq!(p["announce_suppressed"], 1, "{p}");
    let health = nva.cli(&["health"]).unwrap();
    assert_eq!(health["healthy"], true, "{health}");
    assert!(
        health["warnings"][0]
            .as_str()
            .unwrap()
            .contains("max_announce"),
        "{health}"
    );
    // The learned routes go: the summary goes with them, the held-back one is dropped.
    rs1.birdc(&["disable", "many"]);
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(!rs2_routes().contains("10.240.0.0/16"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", rs2_routes()));
    assert!(rs2_routes().contains("10.99.0.0/16"));
    let peers = nva.cli(&["bgp"]).unwrap();
    let p = &peers.as_array().unwrap()[1];
    assert_eq!(p["announce_suppressed"], 0, "{peers}");
    // A graceful stop leaves none of nva's kernel routes behind (static and BGP).
    let mut nva = nva;
    assert!(!lab.hub.nva.ip("route show proto 250").unwrap().is_empty());
    nva.stop().unwrap();
    assert_eq!(lab.hub.nva.ip("route show proto 250").unwrap(), "");
    assert_eq!(lab.hub.nva.ip("-6 route show proto 250").unwrap(), "");
}

/// Next-hop tracking: the BGP routes over a next hop that resolves through a static
/// route follow that route's gateway. Its probe failing makes the next hop unresolvable,
/// so the alternative path (another peer's, over another gateway) takes over; routes
/// that were already over the other gateway keep every flow. Prints the switch time
/// (BENCHMARKS.md, "Hub failover").
#[test]
fn a_failing_gateway_moves_its_bgp_routes_to_the_alternative() {
    if !require_root("a_failing_gateway_moves_its_bgp_routes_to_the_alternative") {
        return;
    }
    let _g = serial();
    let lab = lab(2);
    let (s1, s2) = (server_v4(1), server_v4(2));
    // The service prefix: rs1 over 192.0.2.1 (preferred), rs2 over 192.0.2.2 (longer
    // path). Server 2's own prefix only over 192.0.2.2.
    let rs1_statics = format!(
        "protocol static s4 {{ ipv4; route 10.100.0.0/16 via {s1} {{ bgp_next_hop = 192.0.2.1; }}; }}\n"
    );
    let rs2_statics = format!(
        r#"
protocol static s4 {{ ipv4;
    route 10.100.0.0/16 via {s2} {{ bgp_next_hop = 192.0.2.2; bgp_path = prepend(bgp_path, 65515); }};
    route 10.200.2.0/24 via {s2} {{ bgp_next_hop = 192.0.2.2; }};
}}
"#
    );
    let _rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &rs1_statics, "")).unwrap();
    let _rs2 = Bird::start(&lab.rs, &bird_rs("10.0.255.5", &rs2_statics, "")).unwrap();
    // The BGP next hops resolve through static routes over the two servers, each probed.
    let extra = format!(
        r#"
[health]
interval_ms = 100
multiplier = 3
hold_down_ms = 1000
[[routes]]
prefix = "192.0.2.1/32"
nexthops = [{{ via = "{s1}", probe = "icmp" }}]
[[routes]]
prefix = "192.0.2.2/32"
nexthops = [{{ via = "{s2}", probe = "icmp" }}]
"#
    );
    let config = nva_config(
        &(peer("rs1", "10.0.255.4", "") + &peer("rs2", "10.0.255.5", "")),
        &extra,
    );
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    wait_route(&nva, "10.100.1.1", |r| {
        r["route"]["nexthops"] == serde_json::json!([s1.to_string()])
            && r["route"]["resolved_via"][0]["resolution"] == "recursive via 192.0.2.1/32 (static)"
    });
    wait_route(&nva, "10.200.2.1", |r| {
        r["route"]["nexthops"] == serde_json::json!([s2.to_string()])
    });
    let sinks: Vec<UdpSink> = lab
        .hub
        .servers
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut addrs: Vec<SocketAddr> = vec!["10.100.0.1:7000".parse().unwrap()];
            if k == 1 {
                addrs.push("10.200.2.1:7000".parse().unwrap());
            }
            UdpSink::start(s, &addrs).unwrap()
        })
        .collect();
    let svc = nva_tests::paced(
        &lab.hub.client,
        "10.100.0.1",
        3000,
        Duration::from_millis(1),
    );
    let other = nva_tests::paced(
        &lab.hub.client,
        "10.200.2.1",
        3000,
        Duration::from_millis(1),
    );
    std::thread::sleep(Duration::from_millis(500));
    // Gateway 1 stops answering its probe.
    let failed_at = std::time::Instant::now();
    lab.hub.servers[0]
        .sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        .unwrap();
    let sent = svc.join().unwrap();
    other.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let on = |k: usize, dst: &str| -> std::collections::HashSet<u32> {
        sinks[k]
            .received()
            .iter()
            .filter(|d| d.dst.is_some_and(|a| a.to_string() == dst))
            .filter_map(|d| Some(u32::from_be_bytes(d.payload.get(..4)?.try_into().ok()?)))
            .collect()
    };
    let to_srv2 = on(1, "10.100.0.1");
    let first = to_srv2
        .iter()
        .min()
        .copied()
        .expect("the service moved to server 2");
    let switch = sent[first as usize].saturating_duration_since(failed_at);
    eprintln!(
        "gateway failure (probe 100 ms x 3): BGP route moved to the alternative after {switch:?}; \
         {} of {} datagrams to it arrived",
        on(0, "10.100.0.1").len() + to_srv2.len(),
        sent.len()
    );
    assert!(switch < Duration::from_secs(2), "{switch:?}");
    // Every datagram of the other route arrived, all on server 2: no flow moved.
    assert_eq!(on(1, "10.200.2.1").len(), 3000);
    assert!(on(0, "10.200.2.1").is_empty());
    let r = route(&nva, "10.100.1.1");
    assert_eq!(
        r["route"]["nexthops"],
        serde_json::json!([s2.to_string()]),
        "{r}"
    );
    // Gateway 1 answers again: after the hold-down the service comes back.
    lab.hub.servers[0]
        .sysctl("net.ipv4.icmp_echo_ignore_all", "0")
        .unwrap();
    wait_route(&nva, "10.100.1.1", |r| {
        r["route"]["nexthops"] == serde_json::json!([s1.to_string()])
    });
}

/// A withdrawal reaches the table the path is in, even after a reload moved the
/// prefix to the other class (before, it went to the new class's RIB and the route
/// stayed installed in the old one for good).
#[test]
fn a_withdrawal_after_reclassification_reaches_the_old_table() {
    if !require_root("a_withdrawal_after_reclassification_reaches_the_old_table") {
        return;
    }
    let _g = serial();
    let lab = lab(1);
    let s1 = server_v4(1);
    let statics = format!(
        "protocol static doc {{ ipv4; route 203.0.113.0/24 via {s1} {{ bgp_next_hop = {s1}; }}; }}\n"
    );
    let rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &statics, "")).unwrap();
    let config = one_server_config(&peer("rs1", "10.0.255.4", ""), "");
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    wait_route(&nva, "203.0.113.1", |r| {
        r["route"]["source"] == "bgp" && r["route"]["table"] == "north-south"
    });
    // 203.0.113.0/24 becomes east-west; the path learned before stays where it is.
    let reclassified = format!("[separation]\neast_west = [\"203.0.113.0/24\"]\n{config}");
    sighup(&nva, &reclassified);
    std::thread::sleep(Duration::from_millis(500));
    rs1.birdc(&["disable", "doc"]);
    wait_route(&nva, "203.0.113.1@north-south", |r| r["route"].is_null());
    wait_route(&nva, "203.0.113.1@east-west", |r| r["route"].is_null());
    assert_eq!(
        nva.cli(&["bgp", "203.0.113.0/24"]).unwrap(),
        serde_json::json!([])
    );
}

/// A route that cannot be installed fails alone: with 16 DIR-24-8 blocks for prefixes
/// longer than /24, 40 host routes in distinct /24s and 10 /24s arrive in the same
/// UPDATEs; every /24 and 16 host routes are installed, the other 24 are listed as
/// uninstalled, and they are retried once blocks are freed (before, the first failure
/// aborted the rest of its UPDATE).
#[test]
fn a_route_that_does_not_fit_fails_alone_and_is_retried() {
    if !require_root("a_route_that_does_not_fit_fails_alone_and_is_retried") {
        return;
    }
    let _g = serial();
    let lab = lab(1);
    let s1 = server_v4(1);
    let hosts = |from: u32, to: u32| {
        (from..to)
            .map(|k| format!("route 198.18.{k}.1/32 via {s1} {{ bgp_next_hop = {s1}; }};"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let nets = (100..110)
        .map(|k| format!("route 198.18.{k}.0/24 via {s1} {{ bgp_next_hop = {s1}; }};"))
        .collect::<Vec<_>>()
        .join("\n");
    let statics = format!(
        "protocol static a {{ ipv4;\n{}\n{nets}\n}}\nprotocol static b {{ ipv4;\n{}\n}}\n",
        hosts(0, 20),
        hosts(20, 40)
    );
    let rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &statics, "")).unwrap();
    let config = format!(
        "[dataplane]\nipv4_fib_north_south = \"dir-24-8\"\nipv4_fib_blocks = 16\n{}",
        one_server_config(&peer("rs1", "10.0.255.4", ""), "")
    );
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    let uninstalled = || {
        nva.cli(&["routes", "--uninstalled"])
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    // Every route settles: installed, or listed (nva's own /32s take a few blocks too).
    let hosts_in = || {
        (0..40)
            .filter(|k| {
                route(&nva, &format!("198.18.{k}.1"))["route"]["prefix"]
                    == format!("198.18.{k}.1/32")
            })
            .count()
    };
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(uninstalled().len() + hosts_in() == 40 && !uninstalled().is_empty())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {:?}\n{}", uninstalled(), nva.log()));
    let fit = hosts_in();
    assert!((8..20).contains(&fit), "{fit} host routes fit");
    for k in 100..110 {
        let r = route(&nva, &format!("198.18.{k}.5"));
        assert_eq!(r["route"]["prefix"], format!("198.18.{k}.0/24"), "{r}");
    }
    assert!(
        uninstalled()[0]["error"]
            .as_str()
            .unwrap()
            .contains("ipv4_fib_blocks"),
        "{:?}",
        uninstalled()
    );
    let status = nva.cli(&["status"]).unwrap();
    assert_eq!(status["routes"]["uninstalled"], 40 - fit, "{status}");
    // Protocol a's 20 host routes go: their blocks are freed and b's are retried into
    // them (as many as fit; the rest stay listed).
    rs1.birdc(&["disable", "a"]);
    wait_until(WAIT, Duration::from_millis(200), || {
        let u = uninstalled();
        Ok(u.len() == 20 - fit
            && u.iter().all(|r| {
                let p = r["prefix"].as_str().unwrap_or("");
                let third: u32 = p
                    .split('.')
                    .nth(2)
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                (20..40).contains(&third)
            }))
    })
    .unwrap_or_else(|e| panic!("{e:#} (fit {fit}): {:?}\n{}", uninstalled(), nva.log()));
}

/// A peer torn down by max-prefix comes back by itself after `max_prefix_restart` (it
/// stayed down until nva restarted before), and `nva bgp clear` restarts a session or,
/// with `--soft`, asks for its routes again without one.
#[test]
fn max_prefix_restart_and_bgp_clear() {
    if !require_root("max_prefix_restart_and_bgp_clear") {
        return;
    }
    let _g = serial();
    let lab = lab(1);
    let s1 = server_v4(1);
    let route = |k: u32| format!("route 10.230.{k}.0/24 via {s1} {{ bgp_next_hop = {s1}; }};");
    let statics = format!(
        "protocol static two {{ ipv4; {} {} }}\nprotocol static extra {{ ipv4; {} }}\n",
        route(1),
        route(2),
        route(3)
    );
    let rs1 = Bird::start(&lab.rs, &bird_rs("10.0.255.4", &statics, "")).unwrap();
    let config = one_server_config(
        &peer(
            "rs1",
            "10.0.255.4",
            "max_prefix = 2\nmax_prefix_action = \"teardown\"\nmax_prefix_restart = 2",
        ),
        "[metrics]\nlisten = \"127.0.0.1:9451\"\n",
    );
    let nva = NvaProcess::start(&lab.hub.nva, &config).unwrap();
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(nva.log().contains("max-prefix restart timer"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva.log()));
    // Within the limit again: the next restart stays up.
    rs1.birdc(&["disable", "extra"]);
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(established(&nva, "rs1")
            && route_of(&nva, "10.230.2.1")
            && !route_of(&nva, "10.230.3.1"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva.log()));
    let sessions = || nva.log().matches("BGP session established").count();
    let before = sessions();
    let out = nva.cli_raw(&["bgp", "clear", "rs1", "--soft"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("soft clear"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sessions(), before, "a soft clear keeps the session");
    let out = nva.cli_raw(&["bgp", "clear", "10.0.255.4"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("restarted"));
    wait_until(WAIT, Duration::from_millis(200), || {
        Ok(sessions() > before && established(&nva, "rs1") && route_of(&nva, "10.230.1.1"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva.log()));
    let out = nva.cli_raw(&["bgp", "clear", "nobody"]).unwrap();
    assert!(!out.status.success());
    // The teardown and the hard clear ended Established sessions: counted as flaps,
    // the last error kept with its age.
    let rs1 = nva.cli(&["bgp", "neighbors", "rs1"]).unwrap()[0].clone();
    assert!(rs1["flaps"].as_u64().unwrap() >= 2, "{rs1}");
    assert!(!rs1["last_error"].is_null(), "{rs1}");
    assert!(rs1["last_error_secs"].as_u64().is_some(), "{rs1}");
    assert_eq!(rs1["max_prefix"], 2, "{rs1}");
    assert_eq!(rs1["received_now"], 2, "{rs1}");
    assert_eq!(
        rs1["rejected_by_family"],
        serde_json::json!([0, 0]),
        "{rs1}"
    );
    // The same per family in the metrics, and the session's message counters.
    let text = lab.hub.nva.run(|| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect("127.0.0.1:9451").unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    });
    let labels = "peer=\"rs1\",address=\"10.0.255.4\"";
    for (family, state, n) in [
        ("ipv4", "received", 2),
        ("ipv4", "accepted", 2),
        ("ipv6", "received", 0),
    ] {
        let line =
            format!("nva_bgp_prefixes{{{labels},family=\"{family}\",state=\"{state}\"}} {n}\n");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(
        text.contains(&format!("nva_bgp_flaps_total{{{labels}}} ")),
        "{text}"
    );
    let sent = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("nva_bgp_messages_sent_total{{{labels}}} ")))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(sent > 0, "{text}");
}

fn route_of(nva: &NvaProcess, addr: &str) -> bool {
    route(nva, addr)["route"]["source"] == "bgp"
}
