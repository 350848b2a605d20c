//! nva as a process in a hub topology (client -> nva -> servers, network namespaces and
//! veth), forwarding real traffic in native XDP. Assertions are on packets received by
//! real sockets and on nva's own counters.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use nva_tests::{
    Counters, FrameCapture, Hub, NvaProcess, UdpSink, assert_only_flows_to,
    frames::{eth_ipv4_udp, eth_ipv6_udp, fix_ipv4_checksum},
    inject_frames, nva_binary, ping, require_root, send_flows_from, serial, tcp_echo_server,
    tcp_roundtrip,
    topology::{CLIENT_V4, CLIENT_V6, HOST_IF, NVA_CLIENT_PORT, SERVICE_V4, SERVICE_V6, server_v4},
    wait_until,
};

/// Config routing the service prefixes over servers 1..=n (ECMP).
fn hub_config(n: usize) -> String {
    nva_tests::topology::ecmp_config(n)
}

fn start(hub: &Hub, n: usize) -> NvaProcess {
    let nva = NvaProcess::start(&hub.nva, &hub_config(n)).expect("nva starts");
    // nva asks the kernel to resolve its next hops itself; wait until it has all MACs.
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let nhs = nva.cli(&["nexthops"])?;
        let nhs = nhs.as_array().cloned().unwrap_or_default();
        Ok(nhs.len() >= 2 * n && nhs.iter().all(|n| n["resolved"] == true))
    })
    .unwrap_or_else(|e| panic!("next hops resolved: {e:#}\n{}", nva.log()));
    nva
}

fn xdp_attached(hub: &Hub, ifname: &str) -> bool {
    hub.nva
        .ip(&format!("link show dev {ifname}"))
        .unwrap()
        .contains("xdp")
}

#[test]
fn ipv4_and_ipv6_are_forwarded_in_xdp() {
    if !require_root("ipv4_and_ipv6_are_forwarded_in_xdp") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(1).unwrap();
    let mut nva = start(&hub, 1);
    assert!(xdp_attached(&hub, "c0") && xdp_attached(&hub, "s1"));
    let before = nva.counters().unwrap();

    // ping both families
    for dst in [IpAddr::V4(SERVICE_V4), IpAddr::V6(SERVICE_V6)] {
        let r = ping(&hub.client, dst, 3, None).unwrap();
        assert_eq!(r.received, 3, "ping {dst}: {}", r.output);
    }
    // UDP: arrives with TTL / hop limit decremented once, valid checksums (the
    // receiving kernel drops anything with a bad IP or UDP checksum).
    let addrs: Vec<SocketAddr> = vec![
        SocketAddr::new(SERVICE_V4.into(), 7000),
        SocketAddr::new(SERVICE_V6.into(), 7000),
    ];
    let sink = UdpSink::start(hub.server(1), &addrs).unwrap();
    let ports: Vec<u16> = (0..20).map(|i| 42000 + i).collect();
    for a in &addrs {
        send_flows_from(&hub.client, *a, &ports, 5, None).unwrap();
    }
    assert_eq!(sink.wait_for(200, Duration::from_secs(5)), 200);
    for d in sink.received() {
        assert_eq!(d.ttl, Some(63), "one hop: {d:?}");
    }
    // TCP both families, a real connection through nva.
    for addr in [
        SocketAddr::new(SERVICE_V4.into(), 7100),
        SocketAddr::new(SERVICE_V6.into(), 7100),
    ] {
        let _server = tcp_echo_server(hub.server(1), addr).unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        assert_eq!(tcp_roundtrip(&hub.client, addr, &payload).unwrap(), payload);
    }
    // The XDP program (not the kernel) forwarded them: 6 pings + 200 UDP + TCP segments.
    let delta = nva.counters().unwrap().since(&before);
    assert!(
        delta.get(NVA_CLIENT_PORT, "forwarded") >= 206,
        "forwarded in XDP on c0: {}",
        delta.get(NVA_CLIENT_PORT, "forwarded")
    );
    // Replies to the directly connected client are forwarded in XDP as well.
    assert!(delta.get("s1", "forwarded") >= 6);

    // SIGTERM detaches cleanly.
    nva.stop().unwrap();
    assert!(!xdp_attached(&hub, "c0") && !xdp_attached(&hub, "s1"));
}

/// Sends the same 5-tuples (fixed source ports) to `dst` and returns flow -> server.
fn flow_owners(hub: &Hub, sinks: &[UdpSink], dst: SocketAddr, flows: u16) -> BTreeMap<u16, usize> {
    for s in sinks {
        s.clear();
    }
    let ports: Vec<u16> = (0..flows).map(|i| 43000 + i).collect();
    send_flows_from(&hub.client, dst, &ports, 3, None).unwrap();
    let expected = flows as usize * 3;
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        Ok(sinks.iter().map(UdpSink::count).sum::<usize>() >= expected)
    })
    .unwrap();
    let mut owners: BTreeMap<u16, usize> = BTreeMap::new();
    for (k, sink) in sinks.iter().enumerate() {
        for d in sink.received() {
            let flow = d.flow_index().unwrap();
            let prev = owners.insert(flow, k + 1);
            assert!(
                prev.is_none() || prev == Some(k + 1),
                "flow {flow} reached servers {prev:?} and {}",
                k + 1
            );
        }
    }
    assert_eq!(owners.len(), flows as usize, "every flow arrived");
    owners
}

#[test]
fn ecmp_spreads_flows_fairly_and_keeps_each_on_one_path() {
    if !require_root("ecmp_spreads_flows_fairly_and_keeps_each_on_one_path") {
        return;
    }
    let _g = serial();
    let n = 4;
    let hub = Hub::build(n).unwrap();
    let _nva = start(&hub, n);
    for service in [
        SocketAddr::new(SERVICE_V4.into(), 7000),
        SocketAddr::new(SERVICE_V6.into(), 7000),
    ] {
        let sinks: Vec<UdpSink> = hub
            .servers
            .iter()
            .map(|s| UdpSink::start(s, &[service]).unwrap())
            .collect();
        let owners = flow_owners(&hub, &sinks, service, 400);
        let mut per_server = vec![0; n + 1];
        for k in owners.values() {
            per_server[*k] += 1;
        }
        for (k, &count) in per_server.iter().enumerate().skip(1) {
            // Fair share is 100 of 400; the hash must give each at least half of that.
            assert!(
                count >= 50,
                "{service}: server {k} got {count} flows: {per_server:?}"
            );
        }
    }
}

#[test]
fn a_failed_next_hop_moves_only_its_own_flows() {
    if !require_root("a_failed_next_hop_moves_only_its_own_flows") {
        return;
    }
    let _g = serial();
    let n = 3;
    let hub = Hub::build(n).unwrap();
    let nva = start(&hub, n);
    let service = SocketAddr::new(SERVICE_V4.into(), 7000);
    let sinks: Vec<UdpSink> = hub
        .servers
        .iter()
        .map(|s| UdpSink::start(s, &[service]).unwrap())
        .collect();
    let before = flow_owners(&hub, &sinks, service, 300);

    // Server 2's link goes down; nva sees carrier loss on s2 over netlink.
    hub.server(2).set_link(HOST_IF, false).unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let nhs = nva.cli(&["nexthops"])?;
        Ok(nhs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["dev"] == "s2")
            .all(|n| n["live"] == false))
    })
    .unwrap();
    let sinks_up: Vec<UdpSink> = sinks;
    let after = {
        // Server 2 is unreachable now: collect from 1 and 3 only.
        for s in &sinks_up {
            s.clear();
        }
        let ports: Vec<u16> = (0..300).map(|i| 43000 + i).collect();
        send_flows_from(&hub.client, service, &ports, 3, None).unwrap();
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            Ok(sinks_up.iter().map(UdpSink::count).sum::<usize>() >= 900)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}: received {:?}, counters {:?}, nexthops {}, log {}",
                sinks_up.iter().map(UdpSink::count).collect::<Vec<_>>(),
                nva.counters().unwrap(),
                nva.cli(&["nexthops"]).unwrap(),
                nva.log()
            )
        });
        let mut owners = BTreeMap::new();
        for (k, sink) in sinks_up.iter().enumerate() {
            for d in sink.received() {
                owners.insert(d.flow_index().unwrap(), k + 1);
            }
        }
        owners
    };
    let mut moved = 0;
    for (flow, server) in &before {
        let now = after[flow];
        assert_ne!(now, 2, "nothing goes to the failed next hop");
        if *server == 2 {
            moved += 1;
        } else {
            assert_eq!(now, *server, "flow {flow} of a healthy next hop moved");
        }
    }
    assert!(moved > 0);

    // Back up: server 2 gets traffic again and the others' flows still only move to it.
    hub.server(2).set_link(HOST_IF, true).unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let nhs = nva.cli(&["nexthops"])?;
        Ok(nhs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["dev"] == "s2")
            .all(|n| n["live"] == true && n["resolved"] == true))
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}\n{}", nva.cli(&["nexthops"]).unwrap(), nva.log()));
    let restored = flow_owners(&hub, &sinks_up, service, 300);
    assert_only_flows_to(2, &after, &restored);
}

#[test]
fn expiring_ttl_gets_icmp_time_exceeded_from_the_kernel() {
    if !require_root("expiring_ttl_gets_icmp_time_exceeded_from_the_kernel") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(1).unwrap();
    let nva = start(&hub, 1);
    let before = nva.counters().unwrap();
    for dst in [IpAddr::V4(SERVICE_V4), IpAddr::V6(SERVICE_V6)] {
        let r = ping(&hub.client, dst, 1, Some(1)).unwrap();
        assert!(r.time_exceeded, "ping -t 1 {dst}: {}", r.output);
    }
    let delta = nva.counters().unwrap().since(&before);
    assert_eq!(delta.get(NVA_CLIENT_PORT, "passed-ttl"), 2);
    assert_eq!(delta.get(NVA_CLIENT_PORT, "forwarded"), 0);
}

#[test]
fn malformed_frames_are_counted_and_never_forwarded() {
    if !require_root("malformed_frames_are_counted_and_never_forwarded") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(1).unwrap();
    let nva = start(&hub, 1);
    let nva_mac = hub.mac(&hub.nva, NVA_CLIENT_PORT).unwrap();
    let client_mac = hub.mac(&hub.client, HOST_IF).unwrap();
    let good = eth_ipv4_udp(
        nva_mac, client_mac, CLIENT_V4, SERVICE_V4, 5555, 7000, 64, b"good",
    );
    let good6 = eth_ipv6_udp(
        nva_mac, client_mac, CLIENT_V6, SERVICE_V6, 5555, 7000, 64, b"good",
    );
    let mut bad = Vec::new();
    bad.push(good[..14 + 12].to_vec()); // truncated IPv4 header
    let mut f = good.clone();
    f[14] = 0x43; // IHL 3
    fix_ipv4_checksum(&mut f);
    bad.push(f);
    let mut f = good.clone();
    f[16..18].copy_from_slice(&1400u16.to_be_bytes()); // total length beyond the frame
    fix_ipv4_checksum(&mut f);
    bad.push(f);
    let mut f = good.clone();
    f[24] ^= 0xff; // bad header checksum
    bad.push(f);
    bad.push(good6[..14 + 20].to_vec()); // truncated IPv6 header
    let mut f = good6.clone();
    f[18..20].copy_from_slice(&3000u16.to_be_bytes()); // payload length beyond the frame
    bad.push(f);

    let mut capture = FrameCapture::start(hub.server(1), HOST_IF).unwrap();
    let before = nva.counters().unwrap();
    inject_frames(&hub.client, HOST_IF, &bad).unwrap();
    inject_frames(&hub.client, HOST_IF, &[good.clone(), good6.clone()]).unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let d = nva.counters()?.since(&before);
        Ok(
            d.get(NVA_CLIENT_PORT, "dropped-malformed") >= bad.len() as u64
                && d.get(NVA_CLIENT_PORT, "forwarded") >= 2,
        )
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    capture.stop().unwrap();
    let delta: Counters = nva.counters().unwrap().since(&before);
    assert_eq!(
        delta.get(NVA_CLIENT_PORT, "dropped-malformed"),
        bad.len() as u64
    );
    assert_eq!(
        delta.get(NVA_CLIENT_PORT, "forwarded"),
        2,
        "only the two good frames"
    );
    // On the wire towards the server: exactly the two good ones (UDP to port 7000).
    let to_service: Vec<_> = capture
        .frames()
        .into_iter()
        .filter(|f| {
            let d = &f.data;
            (d.len() > 38
                && d[12..14] == [0x08, 0x00]
                && d[14 + 16..14 + 20] == SERVICE_V4.octets())
                || (d.len() > 62
                    && d[12..14] == [0x86, 0xdd]
                    && d[14 + 24..14 + 40] == SERVICE_V6.octets())
        })
        .collect();
    assert_eq!(to_service.len(), 2, "{to_service:?}");
}

#[test]
fn counters_match_what_was_sent() {
    if !require_root("counters_match_what_was_sent") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    let nva = start(&hub, 2);
    let service = SocketAddr::new(SERVICE_V4.into(), 7000);
    let sinks: Vec<UdpSink> = hub
        .servers
        .iter()
        .map(|s| UdpSink::start(s, &[service]).unwrap())
        .collect();
    let before = nva.counters().unwrap();
    let ports: Vec<u16> = (0..50).map(|i| 44000 + i).collect();
    send_flows_from(&hub.client, service, &ports, 10, None).unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        Ok(sinks.iter().map(UdpSink::count).sum::<usize>() >= 500)
    })
    .unwrap();
    let received: Vec<_> = sinks.iter().flat_map(UdpSink::received).collect();
    let frame_bytes: u64 = received
        .iter()
        .map(|d| (14 + 20 + 8 + d.payload.len()) as u64)
        .sum();
    let delta = nva.counters().unwrap().since(&before);
    assert_eq!(delta.get(NVA_CLIENT_PORT, "forwarded"), 500);
    assert_eq!(delta.get_bytes(NVA_CLIENT_PORT, "forwarded"), frame_bytes);
    assert_eq!(delta.total("dropped-malformed"), 0);
}

fn run_with_config(hub: &Hub, config: &str) -> (bool, String) {
    let dir = nva_tests::ScratchDir::new("nva-badcfg").unwrap();
    let path = dir.path().join("nva.toml");
    std::fs::write(&path, config).unwrap();
    let sock = dir.path().join("nva.sock");
    let bin = nva_binary().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", hub.nva.name()])
        .arg(&bin)
        .args(["run", "--config"])
        .arg(&path)
        .arg("--socket")
        .arg(&sock)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_config_names_the_field_and_attaches_nothing() {
    if !require_root("a_bad_config_names_the_field_and_attaches_nothing") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(1).unwrap();
    let good = hub_config(1);
    let cases = [
        (
            good.replace("name = \"s1\"", "name = \"s9\""),
            "interfaces[1].name",
        ),
        (
            good.replace(
                &format!("via = \"{}\"", server_v4(1)),
                "via = \"192.0.2.1\"",
            ),
            "routes[0].nexthops[0].via",
        ),
        (
            good.replace("prefix = \"10.100.0.0/16\"", "prefix = \"10.100.0.0/33\""),
            "prefix",
        ),
        (good.replace("nexthops", "next_hops"), "next_hops"),
        (
            format!("{good}\n[dataplane]\nxdp_mode = \"turbo\"\n"),
            "xdp_mode",
        ),
    ];
    for (config, field) in cases {
        let (ok, stderr) = run_with_config(&hub, &config);
        assert!(!ok, "nva must refuse: {config}");
        assert!(stderr.contains(field), "error names {field}: {stderr}");
        assert!(!xdp_attached(&hub, "c0") && !xdp_attached(&hub, "s1"));
    }
    // And `nva config check` agrees without needing a running daemon.
    let bin = nva_binary().unwrap();
    let path = std::env::temp_dir().join(format!("nva-check-{}.toml", nva_tests::unique_suffix()));
    std::fs::write(&path, good.replace("nexthops", "next_hops")).unwrap();
    let out = Command::new(&bin)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("next_hops"));
}

#[test]
fn generic_xdp_mode_forwards_when_asked_for() {
    if !require_root("generic_xdp_mode_forwards_when_asked_for") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(1).unwrap();
    let config = format!("[dataplane]\nxdp_mode = \"generic\"\n{}", hub_config(1));
    let nva = NvaProcess::start(&hub.nva, &config).unwrap();
    assert!(
        hub.nva
            .ip("link show dev c0")
            .unwrap()
            .contains("xdpgeneric")
    );
    let before = nva.counters().unwrap();
    let r = ping(&hub.client, IpAddr::V4(SERVICE_V4), 3, None).unwrap();
    assert_eq!(r.received, 3, "{}", r.output);
    wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        Ok(nva
            .counters()?
            .since(&before)
            .get(NVA_CLIENT_PORT, "forwarded")
            >= 2)
    })
    .unwrap();
}

#[test]
fn fast_fibs_forward_through_the_daemon() {
    if !require_root("fast_fibs_forward_through_the_daemon") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    let config = format!(
        "[dataplane]\nipv4_fib_east_west = \"dir-24-8\"\nipv4_fib_north_south = \"dir-24-8\"\n\
         ipv6_fib_east_west = \"multibit\"\nipv6_fib_north_south = \"multibit\"\n\
         ipv6_fib_blocks = 65536\n{}",
        hub_config(2)
    );
    let nva = NvaProcess::start(&hub.nva, &config).unwrap();
    // IPv4 through DIR-24-8, IPv6 through the multibit trie: both servers get flows, and
    // the CLI reads the entry.
    for (service, lookup, fib) in [
        (IpAddr::V4(SERVICE_V4), "10.100.9.9".to_string(), "DIR-24-8"),
        (
            IpAddr::V6(SERVICE_V6),
            SERVICE_V6.to_string(),
            "multibit-trie",
        ),
    ] {
        let service = SocketAddr::new(service, 7000);
        let sinks: Vec<UdpSink> = hub
            .servers
            .iter()
            .map(|s| UdpSink::start(s, &[service]).unwrap())
            .collect();
        let owners = flow_owners(&hub, &sinks, service, 100);
        assert!(owners.values().any(|k| *k == 1) && owners.values().any(|k| *k == 2));
        let lookup = nva.cli(&["routes", &lookup]).unwrap();
        assert_eq!(
            lookup["dataplane"]["action"], 1,
            "the {fib} entry says forward"
        );
    }
    // Status reports each FIB's structure and the kernel memory it takes.
    let status = nva.cli(&["status"]).unwrap();
    let fib = |table: &str, family: &str| {
        status["fib"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["table"] == table && f["family"] == family)
            .cloned()
            .unwrap()
    };
    let v6 = fib("east-west", "ipv6");
    assert_eq!(v6["structure"], "multibit");
    assert!(v6["blocks_used"].as_u64().unwrap() > 0, "{v6}");
    assert_eq!(v6["blocks_total"], 65536);
    assert!(v6["kernel_bytes"].as_u64().unwrap() >= 65536 * 64, "{v6}");
    let v4 = fib("north-south", "ipv4");
    assert_eq!(v4["structure"], "dir-24-8");
    assert!(v4["kernel_bytes"].as_u64().unwrap() >= 64 << 20, "{v4}");
    assert!(status["resident_bytes"].as_u64().unwrap() > 0);
    let text = nva.cli_raw(&["status"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("fib east-west ipv6: multibit,") && text.contains("of 65536 blocks in use"),
        "{text}"
    );
    assert!(nva.counters().unwrap().get(NVA_CLIENT_PORT, "forwarded") >= 600);
}

/// Waits until every next hop on `dev` has `live` == `up`.
fn wait_live(nva: &NvaProcess, dev: &str, up: bool) {
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let nhs = nva.cli(&["nexthops"])?;
        Ok(nhs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["dev"] == dev)
            .all(|n| n["live"] == up))
    })
    .unwrap();
}

#[test]
fn backup_next_hops_take_over_while_all_primaries_are_down() {
    if !require_root("backup_next_hops_take_over_while_all_primaries_are_down") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    let config = format!(
        "[[interfaces]]\nname = \"c0\"\n[[interfaces]]\nname = \"s1\"\n[[interfaces]]\nname = \"s2\"\n\
         [[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{{ via = \"{}\" }}]\nbackup_nexthops = [{{ via = \"{}\" }}]\n",
        server_v4(1),
        server_v4(2)
    );
    let nva = NvaProcess::start(&hub.nva, &config).unwrap();
    let service = SocketAddr::new(SERVICE_V4.into(), 7000);
    let sinks: Vec<UdpSink> = hub
        .servers
        .iter()
        .map(|s| UdpSink::start(s, &[service]).unwrap())
        .collect();
    let owners = flow_owners(&hub, &sinks, service, 20);
    assert!(
        owners.values().all(|k| *k == 1),
        "primary carries everything"
    );

    hub.server(1).set_link(HOST_IF, false).unwrap();
    wait_live(&nva, "s1", false);
    let owners = flow_owners(&hub, &sinks, service, 20);
    assert!(owners.values().all(|k| *k == 2), "backup takes over");
    let r = nva.cli(&["routes", "10.100.0.1"]).unwrap();
    assert_eq!(r["route"]["source"], "static-backup");

    hub.server(1).set_link(HOST_IF, true).unwrap();
    wait_live(&nva, "s1", true);
    let owners = flow_owners(&hub, &sinks, service, 20);
    assert!(owners.values().all(|k| *k == 1), "primary back");
}

/// The kernel mirror's forward routes name nexthop objects (one per next-hop set, a
/// group for ECMP), so a stop removes them with their objects in one go; objects an
/// earlier run left are removed once this run's routes replaced theirs, and a stop
/// leaves neither objects nor routes behind.
#[test]
fn mirrored_routes_name_nexthop_objects_and_leave_none_behind() {
    if !require_root("mirrored_routes_name_nexthop_objects_and_leave_none_behind") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    // What an nva killed earlier would have left: an object and a route naming it.
    hub.nva
        .ip(&format!(
            "nexthop add id 5000 via {} dev {} proto 250",
            server_v4(1),
            nva_tests::topology::server_port(1)
        ))
        .unwrap();
    hub.nva
        .ip("route add 198.18.99.0/24 nhid 5000 proto 250")
        .unwrap();
    let config = hub_config(2)
        + "[[routes]]\nprefix = \"198.18.0.0/24\"\naction = \"blackhole\"\n"
        + &format!(
            "[[routes]]\nprefix = \"198.18.1.0/24\"\nnexthops = [{{ via = \"{}\" }}]\n",
            server_v4(1)
        );
    let nva = NvaProcess::start(&hub.nva, &config).expect("nva starts");
    let objects = || hub.nva.ip("nexthop show proto 250").unwrap();
    let routes = || hub.nva.ip("route show proto 250").unwrap();
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Ok(!objects().contains("id 5000 ") && routes().contains("198.18.1.0/24"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}\n{}", objects(), routes(), nva.log()));
    assert!(!routes().contains("198.18.99.0"), "{}", routes());
    // ECMP over the two servers: a group of two members; the single next hop: an
    // object of its own; the blackhole: a plain route.
    let nhid = |prefix: &str| -> u32 {
        let line = hub
            .nva
            .ip(&format!("route show {prefix} proto 250"))
            .unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == "nhid")
            .unwrap_or_else(|| panic!("{line}"));
        words[at + 1].parse().unwrap()
    };
    let group = nhid("10.100.0.0/16");
    assert!(group > 5000, "ids start above the earlier run's");
    let shown = hub.nva.ip(&format!("nexthop show id {group}")).unwrap();
    assert!(shown.contains("group "), "{shown}");
    assert_eq!(
        shown.split("group ").nth(1).unwrap().split('/').count(),
        2,
        "{shown}"
    );
    let single = nhid("198.18.1.0/24");
    let shown = hub.nva.ip(&format!("nexthop show id {single}")).unwrap();
    assert!(shown.contains(&format!("via {}", server_v4(1))), "{shown}");
    let v6 = hub.nva.ip("-6 route show fd00:100::/64 proto 250").unwrap();
    assert!(v6.contains("nhid"), "{v6}");
    let blackhole = hub.nva.ip("route show 198.18.0.0/24 proto 250").unwrap();
    assert!(
        blackhole.starts_with("blackhole") && !blackhole.contains("nhid"),
        "{blackhole}"
    );
    // The ECMP object deleted behind nva's back (its route goes with it): the next route
    // over the same next hops makes it again.
    hub.nva.ip(&format!("nexthop del id {group}")).unwrap();
    assert!(!routes().contains("10.100.0.0/16"), "{}", routes());
    let v4: Vec<String> = (1..=2)
        .map(|k| format!("{{ via = \"{}\" }}", server_v4(k)))
        .collect();
    let more = format!(
        "{config}[[routes]]\nprefix = \"198.18.2.0/24\"\nnexthops = [{}]\n",
        v4.join(", ")
    );
    std::fs::write(nva.config_path(), more).unwrap();
    let reload = nva.cli_raw(&["reload"]).unwrap();
    assert!(reload.status.success(), "{reload:?}\n{}", nva.log());
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        Ok(routes().contains("198.18.2.0/24"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}\n{}", objects(), routes(), nva.log()));
    assert_eq!(nhid("198.18.2.0/24"), group);
    assert!(
        objects().contains(&format!("id {group} group")),
        "{}",
        objects()
    );
    // A stop removes every object and route of nva's.
    let mut nva = nva;
    nva.stop().unwrap();
    assert_eq!(objects(), "");
    assert_eq!(routes(), "");
    assert_eq!(hub.nva.ip("-6 route show proto 250").unwrap(), "");
}
