//! East-west / north-south separation and segmentation, with real traffic.
//!
//! Topology (Hub with 4 servers): the client (10.0.0.2, fd00::2) is a `dev` spoke; server
//! 1 is `prod` (10.200.1.1, fd00:200:1::1), server 2 is `shared` (10.200.2.1), server 3 is
//! the internet edge (owns 198.51.100.7 and 2001:db8:100::7), server 4 is on-prem.
use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use nva_tests::{
    Hub, NvaProcess, UdpSink, require_root, send_flows_from, serial,
    topology::{server_unique_v4, server_unique_v6, server_v4, server_v6},
};

const INTERNET_V4: &str = "198.51.100.7";
const INTERNET_V6: &str = "2001:db8:100::7";

fn config() -> String {
    let mut c = String::from("[[interfaces]]\nname = \"c0\"\n");
    for k in 1..=4 {
        c += &format!("[[interfaces]]\nname = \"s{k}\"\n");
    }
    let route = |prefix: String, via: IpAddr, extra: &str| {
        format!("[[routes]]\nprefix = \"{prefix}\"\nnexthops = [{{ via = \"{via}\" }}]\n{extra}")
    };
    // East-west: the spokes, by their prefixes.
    for k in 1..=2 {
        c += &route(format!("10.200.{k}.0/24"), server_v4(k).into(), "");
        c += &route(format!("fd00:200:{k}::/48"), server_v6(k).into(), "");
    }
    // North-south: the default routes to the internet edge.
    c += &route("0.0.0.0/0".into(), server_v4(3).into(), "");
    c += &route("::/0".into(), server_v6(3).into(), "");
    // Leaks that must not cross tables: the internet side announcing a spoke prefix
    // (more specific than the real one!) and a default route in east-west via on-prem.
    c += &route(
        "10.200.2.0/25".into(),
        server_v4(3).into(),
        "table = \"north-south\"\n",
    );
    c += &route(
        "fd00:200:2::/64".into(),
        server_v6(3).into(),
        "table = \"north-south\"\n",
    );
    c += &route(
        "0.0.0.0/0".into(),
        server_v4(4).into(),
        "table = \"east-west\"\n",
    );
    c += &route(
        "::/0".into(),
        server_v6(4).into(),
        "table = \"east-west\"\n",
    );
    c += "[[segments]]\nname = \"dev\"\nprefixes = [\"10.0.0.0/24\", \"fd00::/64\"]\n";
    c += "[[segments]]\nname = \"prod\"\nprefixes = [\"10.200.1.0/24\", \"fd00:200:1::/48\"]\n";
    c += "[[segments]]\nname = \"shared\"\nprefixes = [\"10.200.2.0/24\", \"fd00:200:2::/48\"]\n";
    c += "[[segment_rules]]\nfrom = \"dev\"\nto = \"prod\"\naction = \"deny\"\n";
    c
}

/// Sends 5 datagrams to `dst` and returns how many each server received.
fn deliver(hub: &Hub, sinks: &[UdpSink], dst: SocketAddr, port: u16) -> Vec<usize> {
    for s in sinks {
        s.clear();
    }
    send_flows_from(&hub.client, dst, &[port], 5, None).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sinks.iter().map(UdpSink::count).collect()
}

#[test]
fn east_west_north_south_and_segments() {
    if !require_root("east_west_north_south_and_segments") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(4).unwrap();
    hub.server(3)
        .ip(&format!("addr add {INTERNET_V4}/32 dev lo"))
        .unwrap();
    hub.server(3)
        .ip(&format!("-6 addr add {INTERNET_V6}/128 dev lo nodad"))
        .unwrap();
    let nva = NvaProcess::start(&hub.nva, &config()).unwrap();

    let targets: Vec<SocketAddr> = vec![
        SocketAddr::new(server_unique_v4(1).into(), 7000),
        SocketAddr::new(server_unique_v4(2).into(), 7000),
        SocketAddr::new(INTERNET_V4.parse().unwrap(), 7000),
        SocketAddr::new(server_unique_v6(1).into(), 7000),
        SocketAddr::new(server_unique_v6(2).into(), 7000),
        SocketAddr::new(INTERNET_V6.parse().unwrap(), 7000),
    ];
    // Every server listens on every target address it might (wrongly) get.
    let sinks: Vec<UdpSink> = (1..=4)
        .map(|k| {
            let mine: Vec<SocketAddr> = targets
                .iter()
                .copied()
                .filter(|t| match k {
                    1 => {
                        t.ip() == IpAddr::from(server_unique_v4(1))
                            || t.ip() == IpAddr::from(server_unique_v6(1))
                    }
                    2 => {
                        t.ip() == IpAddr::from(server_unique_v4(2))
                            || t.ip() == IpAddr::from(server_unique_v6(2))
                    }
                    3 => t.ip().to_string() == INTERNET_V4 || t.ip().to_string() == INTERNET_V6,
                    _ => false,
                })
                .collect();
            // Server 4 (on-prem) binds the wildcard so it would see anything leaked to it.
            let bind: Vec<SocketAddr> = if mine.is_empty() {
                vec![
                    "0.0.0.0:7000".parse().unwrap(),
                    "[::]:7000".parse().unwrap(),
                ]
            } else {
                mine
            };
            UdpSink::start(hub.server(k), &bind).unwrap()
        })
        .collect();

    let before = nva.cli(&["stats"]).unwrap();
    let class = |stats: &serde_json::Value, class: &str, reason: &str| {
        stats["classes"][class][reason]["packets"].as_u64().unwrap()
    };

    for (v, family) in [(0usize, "IPv4"), (3, "IPv6")] {
        // East-west goes through its own next hop, despite the more specific
        // north-south leak for the shared spoke.
        assert_eq!(
            deliver(&hub, &sinks, targets[v + 1], 48000 + v as u16),
            vec![0, 5, 0, 0],
            "{family}: dev -> shared reaches server 2"
        );
        // North-south goes to the edge, despite the default route leaked into
        // east-west (via on-prem).
        assert_eq!(
            deliver(&hub, &sinks, targets[v + 2], 48100 + v as u16),
            vec![0, 0, 5, 0],
            "{family}: internet traffic reaches the edge"
        );
        // dev -> prod is denied by the segment policy.
        assert_eq!(
            deliver(&hub, &sinks, targets[v], 48200 + v as u16),
            vec![0, 0, 0, 0],
            "{family}: dev -> prod is dropped"
        );
    }

    let after = nva.cli(&["stats"]).unwrap();
    let delta = |c: &str, r: &str| class(&after, c, r) - class(&before, c, r);
    assert_eq!(delta("east-west", "forwarded"), 10);
    assert_eq!(delta("north-south", "forwarded"), 10);
    assert_eq!(delta("east-west", "dropped-segment"), 10);
    let pair = after["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["from"] == "dev" && p["to"] == "prod")
        .unwrap()
        .clone();
    assert_eq!(pair["dropped_packets"], 10);
    let other = after["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["from"] == "dev" && p["to"] == "shared")
        .unwrap()
        .clone();
    assert_eq!(other["dropped_packets"], 0);

    // The CLI shows which table an address is looked up in.
    let lookup = nva.cli(&["routes", INTERNET_V4]).unwrap();
    assert_eq!(lookup["table"], "north-south");
    assert_eq!(lookup["route"]["prefix"], "0.0.0.0/0");
    assert_eq!(lookup["route"]["nexthops"][0], server_v4(3).to_string());
    let lookup = nva
        .cli(&["routes", &server_unique_v4(2).to_string()])
        .unwrap();
    assert_eq!(lookup["table"], "east-west");
    assert_eq!(lookup["route"]["prefix"], "10.200.2.0/24");
    // The leaked route is there, in its own table only.
    let leaked = nva
        .cli(&[
            "routes",
            &server_unique_v4(2).to_string(),
            "--table",
            "north-south",
        ])
        .unwrap();
    assert_eq!(leaked["route"]["prefix"], "10.200.2.0/25");
    let ns_only = nva.cli(&["routes", "--table", "north-south"]).unwrap();
    let ns_only = ns_only.as_array().unwrap();
    assert!(ns_only.iter().all(|r| r["table"] == "north-south"));
    assert!(ns_only.iter().any(|r| r["prefix"] == "0.0.0.0/0"));
}

/// Reloads never open a window in which a denied segment pair is allowed (before, every
/// SIGHUP cleared the matrix to "allow" and wrote the denies back): denied traffic
/// flows during twenty reloads and none of it arrives.
#[test]
fn reloads_never_let_a_denied_pair_through() {
    if !require_root("reloads_never_let_a_denied_pair_through") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(4).unwrap();
    let nva = NvaProcess::start(&hub.nva, &config()).unwrap();
    let prod = UdpSink::start(
        hub.server(1),
        &[SocketAddr::new(server_unique_v4(1).into(), 7000)],
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let dst = SocketAddr::new(server_unique_v4(1).into(), 7000);
        hub.client.spawn_thread(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.send_to(b"dev->prod", dst);
                sent += 1;
            }
            sent
        })
    };
    for _ in 0..20 {
        let pid = nva.pid().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(sent > 1000, "{sent} datagrams sent");
    assert_eq!(prod.count(), 0, "denied datagrams arrived during reloads");
    assert!(nva.log().matches("configuration reloaded").count() >= 10);
}
