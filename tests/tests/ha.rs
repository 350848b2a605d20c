//! High availability with real BGP: two nva instances (each in its own namespace)
//! announce the service prefix to a BIRD 2 route server that also plays the client's
//! router: BIRD puts the routes into the client's kernel with ECMP (N-active). One NVA
//! "dies" (its links go down, as a VM failure); the route server's hold timer expires
//! and all traffic moves to the other. Then active/passive with AS-path prepend.
//!
//! ```text
//! client (BIRD, AS 65515) --c1-- nva1 --s1-- server (10.100.0.1)
//!                         --c2-- nva2 --s2--
//! ```
use std::time::{Duration, Instant};

use nva_tests::{
    Netns, NvaProcess, UdpSink, daemons::Bird, require_root, serial, veth, wait_until,
};

const SERVICE: &str = "10.100.0.1";
const WAIT: Duration = Duration::from_secs(30);

struct Lab {
    client: Netns,
    nvas: Vec<Netns>,
    server: Netns,
}

fn lab() -> Lab {
    let client = Netns::new("client").unwrap();
    let server = Netns::new("server").unwrap();
    let mut nvas = Vec::new();
    for k in 1..=2 {
        let nva = Netns::new(&format!("nva{k}")).unwrap();
        nva.sysctl("net.ipv4.ip_forward", "1").unwrap();
        veth(&client, &format!("c{k}"), &nva, "c0").unwrap();
        veth(&nva, "s0", &server, &format!("s{k}")).unwrap();
        client
            .ip(&format!("addr add 10.0.1{k}.2/24 dev c{k}"))
            .unwrap();
        nva.ip(&format!("addr add 10.0.1{k}.1/24 dev c0")).unwrap();
        nva.ip(&format!("addr add 10.0.2{k}.1/24 dev s0")).unwrap();
        server
            .ip(&format!("addr add 10.0.2{k}.2/24 dev s{k}"))
            .unwrap();
        for (ns, dev) in [(&client, format!("c{k}")), (&server, format!("s{k}"))] {
            ns.exec_ok(&["ethtool", "-K", &dev, "gro", "on"]).unwrap();
            ns.exec_ok(&["ethtool", "-K", &dev, "tx", "off"]).unwrap();
        }
        nvas.push(nva);
    }
    server.ip(&format!("addr add {SERVICE}/32 dev lo")).unwrap();
    server
        .ip("route add 10.0.0.0/8 nexthop via 10.0.21.1 nexthop via 10.0.22.1")
        .unwrap();
    // ECMP by 5-tuple in the client's kernel.
    client
        .sysctl("net.ipv4.fib_multipath_hash_policy", "1")
        .unwrap();
    Lab {
        client,
        nvas,
        server,
    }
}

const BIRD: &str = r#"
router id 10.0.11.2;
log stderr all;
protocol device { scan time 1; }
protocol kernel {
    ipv4 { export all; };
    merge paths on;
}
template bgp nvas {
    local as 65515;
    hold time 3;
    keepalive time 1;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 { import all; export none; };
}
protocol bgp nva1 from nvas { neighbor 10.0.11.1 as 65001; }
protocol bgp nva2 from nvas { neighbor 10.0.12.1 as 65001; }
"#;

fn nva_config(k: usize, prepend: bool) -> String {
    let export = if prepend {
        "export = \"passive\"\n[[policies]]\nname = \"passive\"\n[[policies.rules]]\nset = { prepend = { count = 3 } }\naction = \"accept\"\n"
    } else {
        ""
    };
    format!(
        "[[interfaces]]\nname = \"c0\"\n[[interfaces]]\nname = \"s0\"\n\
         [[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{{ via = \"10.0.2{k}.2\" }}]\n\
         [bgp]\nlocal_as = 65001\nrouter_id = \"10.0.1{k}.1\"\nannounce = [\"10.100.0.0/16\"]\n\
         [[bgp.peers]]\nname = \"rs\"\naddress = \"10.0.1{k}.2\"\nremote_as = 65515\nhold_time = 3\nkeepalive = 1\nconnect_retry = 1\n{export}"
    )
}

/// The client's kernel route to the service: its next hops.
fn client_nexthops(lab: &Lab) -> Vec<String> {
    nva_tests::netns::route_gateways(&lab.client.ip("route show 10.100.0.0/16").unwrap())
}

/// Takes an NVA down like a failed VM: its links go down (no FIN for BGP either).
fn fail(lab: &Lab, k: usize, nva: &mut NvaProcess) {
    let ns = &lab.nvas[k - 1];
    ns.set_link("c0", false).unwrap();
    ns.set_link("s0", false).unwrap();
    nva.kill().unwrap();
}

/// Which interface of the server each datagram came in on, by sequence number.
fn arrivals(sink: &UdpSink) -> Vec<(u32, Option<u32>)> {
    sink.received()
        .iter()
        .map(|d| {
            (
                u32::from_be_bytes([d.payload[0], d.payload[1], d.payload[2], d.payload[3]]),
                d.ifindex,
            )
        })
        .collect()
}

#[test]
fn n_active_nvas_fail_over_through_the_route_server() {
    if !require_root("n_active_nvas_fail_over_through_the_route_server") {
        return;
    }
    let _g = serial();
    let lab = lab();
    let bird = Bird::start(&lab.client, BIRD).unwrap();
    let mut nva1 = NvaProcess::start(&lab.nvas[0], &nva_config(1, false)).unwrap();
    let _nva2 = NvaProcess::start(&lab.nvas[1], &nva_config(2, false)).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(client_nexthops(&lab) == ["10.0.11.1", "10.0.12.1"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", bird.birdc(&["show", "protocols"])));
    let sink = UdpSink::start(&lab.server, &[format!("{SERVICE}:7000").parse().unwrap()]).unwrap();
    let via1 = lab.server.ifindex("s1").unwrap();

    // 6000 datagrams over 6 s; nva1 fails after 1.5 s.
    let sender = nva_tests::paced(&lab.client, SERVICE, 6000, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(1500));
    let failed_at = Instant::now();
    fail(&lab, 1, &mut nva1);
    let sent = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let got = arrivals(&sink);
    let received: std::collections::HashSet<u32> = got.iter().map(|(n, _)| *n).collect();
    assert!(
        got.iter().any(|(_, i)| *i == Some(via1)),
        "both NVAs carried traffic before"
    );
    let lost: Vec<u32> = (0..sent.len() as u32)
        .filter(|n| !received.contains(n))
        .collect();
    let last_lost = lost.iter().map(|n| sent[*n as usize]).max();
    let failover = last_lost.map(|t| t.saturating_duration_since(failed_at));
    eprintln!(
        "N-active failover: {} of {} datagrams lost; traffic fully on nva2 {:?} after the failure",
        lost.len(),
        sent.len(),
        failover
    );
    // Everything sent 1 s after the route server's hold time (3 s) arrived.
    let settled = failed_at + Duration::from_secs(4);
    for (n, t) in sent.iter().enumerate() {
        if *t > settled {
            assert!(
                received.contains(&(n as u32)),
                "datagram {n} lost after failover"
            );
        }
    }
    assert_eq!(client_nexthops(&lab), ["10.0.12.1"]);
}

#[test]
fn active_passive_by_prepend_fails_over_and_back() {
    if !require_root("active_passive_by_prepend_fails_over_and_back") {
        return;
    }
    let _g = serial();
    let lab = lab();
    let bird = Bird::start(&lab.client, BIRD).unwrap();
    let mut active = NvaProcess::start(&lab.nvas[0], &nva_config(1, false)).unwrap();
    let _passive = NvaProcess::start(&lab.nvas[1], &nva_config(2, true)).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        let paths = bird.birdc(&["show", "route", "10.100.0.0/16", "all"]);
        Ok(paths.contains("65001 65001 65001 65001") && client_nexthops(&lab) == ["10.0.11.1"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", bird.birdc(&["show", "route", "all"])));

    fail(&lab, 1, &mut active);
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(client_nexthops(&lab) == ["10.0.12.1"])
    })
    .unwrap();

    // The active one comes back and takes over again.
    lab.nvas[0].set_link("c0", true).unwrap();
    lab.nvas[0].set_link("s0", true).unwrap();
    let _back = NvaProcess::start(&lab.nvas[0], &nva_config(1, false)).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(client_nexthops(&lab) == ["10.0.11.1"])
    })
    .unwrap();
}

#[test]
fn graceful_shutdown_withdraws_first_and_loses_nothing() {
    if !require_root("graceful_shutdown_withdraws_first_and_loses_nothing") {
        return;
    }
    let _g = serial();
    let lab = lab();
    let _bird = Bird::start(&lab.client, BIRD).unwrap();
    let drain = "[health]\ndrain_ms = 1500\n";
    let mut nva1 =
        NvaProcess::start(&lab.nvas[0], &format!("{drain}{}", nva_config(1, false))).unwrap();
    let _nva2 = NvaProcess::start(&lab.nvas[1], &nva_config(2, false)).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(client_nexthops(&lab) == ["10.0.11.1", "10.0.12.1"])
    })
    .unwrap();
    let sink = UdpSink::start(&lab.server, &[format!("{SERVICE}:7000").parse().unwrap()]).unwrap();
    let sender = nva_tests::paced(&lab.client, SERVICE, 4000, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(1000));
    let stopped_at = Instant::now();
    // SIGTERM: withdraw, drain, then detach.
    let stopper = std::thread::spawn(move || {
        nva1.stop().unwrap();
    });
    wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
        Ok(client_nexthops(&lab) == ["10.0.12.1"])
    })
    .unwrap();
    let moved = stopped_at.elapsed();
    let sent = sender.join().unwrap();
    stopper.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let received: std::collections::HashSet<u32> =
        arrivals(&sink).iter().map(|(n, _)| *n).collect();
    let lost = (0..sent.len() as u32)
        .filter(|n| !received.contains(n))
        .count();
    eprintln!(
        "graceful shutdown: traffic moved off nva1 {moved:?} after SIGTERM; {lost} of {} lost",
        sent.len()
    );
    assert_eq!(lost, 0, "a graceful shutdown loses nothing");
}

#[test]
fn a_sick_nva_withdraws_its_routes_and_comes_back() {
    if !require_root("a_sick_nva_withdraws_its_routes_and_comes_back") {
        return;
    }
    let _g = serial();
    let lab = lab();
    let _bird = Bird::start(&lab.client, BIRD).unwrap();
    let track = "[health]\ninterval_ms = 100\nmultiplier = 3\nhold_down_ms = 500\n\
                 track = [{ target = \"10.0.21.2\", probe = \"icmp\" }]\n";
    let nva1 =
        NvaProcess::start(&lab.nvas[0], &format!("{track}{}", nva_config(1, false))).unwrap();
    let _nva2 = NvaProcess::start(&lab.nvas[1], &nva_config(2, false)).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(client_nexthops(&lab) == ["10.0.11.1", "10.0.12.1"])
    })
    .unwrap();
    // nva1's tracked target stops answering: nva1 is sick and withdraws.
    lab.server
        .sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        .unwrap();
    wait_until(WAIT, Duration::from_millis(50), || {
        Ok(client_nexthops(&lab) == ["10.0.12.1"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva1.log()));
    assert_eq!(nva1.cli(&["health"]).unwrap()["healthy"], false);
    // Healthy again: announced again after the hold-down.
    lab.server
        .sysctl("net.ipv4.icmp_echo_ignore_all", "0")
        .unwrap();
    wait_until(WAIT, Duration::from_millis(50), || {
        Ok(client_nexthops(&lab) == ["10.0.11.1", "10.0.12.1"])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva1.log()));
}

/// nva restarts (SIGKILL, then a new nva) while it is the only path: its pinned XDP
/// program keeps forwarding, and graceful restart keeps its routes at the route server
/// (it advertised its families with the F bit), so the client never loses its route.
#[test]
fn restart_behind_a_route_server_keeps_routes_and_packets() {
    if !require_root("restart_behind_a_route_server_keeps_routes_and_packets") {
        return;
    }
    let _g = serial();
    let bpffs = nva_tests::bpffs::BpfFs::mount().unwrap();
    let lab = lab();
    let bird = Bird::start(&lab.client, BIRD).unwrap();
    let config = format!(
        "[dataplane]\npin_path = \"{}\"\n{}",
        bpffs.0.join("nva1").display(),
        nva_config(1, false)
    );
    let mut first = NvaProcess::start(&lab.nvas[0], &config).unwrap();
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(client_nexthops(&lab) == ["10.0.11.1"])
    })
    .unwrap();
    let sink = UdpSink::start(&lab.server, &[format!("{SERVICE}:7000").parse().unwrap()]).unwrap();
    let sender = nva_tests::paced(&lab.client, SERVICE, 4000, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(1000));
    first.kill().unwrap();
    // The route server keeps the routes of the restarting nva.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(700) {
        assert_eq!(
            client_nexthops(&lab),
            ["10.0.11.1"],
            "route kept while nva restarts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = NvaProcess::start(&lab.nvas[0], &config).unwrap();
    let sent = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let received: std::collections::HashSet<u32> =
        arrivals(&sink).iter().map(|(n, _)| *n).collect();
    let lost = (0..sent.len() as u32)
        .filter(|n| !received.contains(n))
        .count();
    assert_eq!(lost, 0, "no packet lost across the restart");
    wait_until(WAIT, Duration::from_millis(100), || {
        Ok(bird
            .birdc(&["show", "protocols", "nva1"])
            .contains("Established"))
    })
    .unwrap();
    assert_eq!(client_nexthops(&lab), ["10.0.11.1"]);
    let stale = bird.birdc(&["show", "route", "10.100.0.0/16", "all"]);
    assert!(
        !stale.contains("stale"),
        "refreshed after End-of-RIB: {stale}"
    );
    drop(second);
}
