//! Tests of the harness itself, on real namespaces with plain kernel forwarding in the
//! nva namespace (no XDP). They need root and skip otherwise; they run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::frames::{self, off4, off6};
use crate::netns::run_cmd;
use crate::topology::*;
use crate::traffic::FrameCapture;
use crate::*;

/// Names listed by `ip netns list`.
fn netns_list() -> BTreeSet<String> {
    run_cmd(std::process::Command::new("ip").args(["netns", "list"]))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Drops `hub` and asserts that none of its namespaces is left.
fn drop_and_check(hub: Hub) {
    let names: Vec<String> = hub.all().map(|n| n.name().to_string()).collect();
    let listed = netns_list();
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "{names:?} not all in {listed:?}"
    );
    drop(hub);
    let listed = netns_list();
    for n in &names {
        assert!(!listed.contains(n), "netns {n} still exists after drop");
    }
}

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

#[test]
fn netns_guard_lifecycle() {
    root_or_skip!("netns_guard_lifecycle");
    let _g = serial();
    let ns = Netns::new("life").unwrap();
    let name = ns.name().to_string();
    assert!(
        name.starts_with(NAME_PREFIX) && name.ends_with("-life"),
        "{name}"
    );
    assert!(netns_list().contains(&name));

    // Only lo exists, and it is up.
    let links = ns.ip("-o link show").unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    // run() threads are inside the namespace: lo is ifindex 1 and no eth0 is visible.
    let (lo, eth0) = ns.run(|| {
        (
            crate::netns::if_nametoindex("lo").ok(),
            crate::netns::if_nametoindex("eth0").ok(),
        )
    });
    assert_eq!((lo, eth0), (Some(1), None));

    // sysctl through a setns'd thread is seen by sysctl(8) inside the namespace, and the
    // root namespace is untouched.
    let root_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if root_before.trim() == "1" { "0" } else { "1" };
    ns.sysctl("net.ipv4.ip_forward", want).unwrap();
    let seen = ns
        .exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"])
        .unwrap();
    assert_eq!(seen.trim(), want);
    assert_eq!(ns.sysctl_get("net.ipv4.ip_forward").unwrap(), want);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        root_before
    );

    // ip() errors carry stderr.
    let err = ns.ip("link show dev nosuchdev").unwrap_err();
    assert!(format!("{err:#}").contains("nosuchdev"), "{err:#}");

    // veth inside one namespace pair, and the per-namespace helpers.
    let other = Netns::new("peer").unwrap();
    veth(&ns, "a0", &other, "b0").unwrap();
    assert_ne!(ns.mac("a0").unwrap(), other.mac("b0").unwrap());
    assert!(ns.ifindex("a0").unwrap() > 1);
    other.set_link("b0", false).unwrap();
    assert!(other.ip("link show dev b0").unwrap().contains("state DOWN"));
    assert!(veth(&ns, "this-name-is-too-long", &other, "b1").is_err());

    // A long-running process is killed when the namespace is dropped.
    let mut child = ns.spawn(&["sleep", "600"]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(ns.exec_ok(&["true"]).is_ok());
    drop(ns);
    drop(other);
    let st = child.wait().unwrap();
    assert!(!st.success(), "sleep should have been killed, got {st}");
    assert!(!netns_list().contains(&name));
}

#[test]
fn netns_deleted_on_panic() {
    root_or_skip!("netns_deleted_on_panic");
    let _g = serial();
    let mut name = String::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ns = Netns::new("panic").unwrap();
        name = ns.name().to_string();
        panic!("boom");
    }));
    assert!(r.is_err());
    assert!(!name.is_empty());
    assert!(!netns_list().contains(&name), "{name} survived a panic");
}

#[test]
fn hub_ping_and_ttl_exceeded() {
    root_or_skip!("hub_ping_and_ttl_exceeded");
    let _g = serial();
    let hub = Hub::build(2).unwrap();

    // Layout: fixed interface names, GRO on the non-nva ends, forwarding on in nva.
    for port in ["c0", "s1", "s2"] {
        hub.ifindex(&hub.nva, port).unwrap();
    }
    for ns in [&hub.client, hub.server(1), hub.server(2)] {
        let k = ns.exec_ok(&["ethtool", "-k", HOST_IF]).unwrap();
        assert!(k.contains("generic-receive-offload: on"), "{k}");
        assert!(k.contains("tx-checksumming: off"), "{k}");
    }
    assert_eq!(hub.nva.sysctl_get("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        hub.nva.sysctl_get("net.ipv6.conf.all.forwarding").unwrap(),
        "1"
    );
    assert_eq!(hub.mac(&hub.nva, "c0").unwrap().len(), 6);

    let targets: [IpAddr; 6] = [
        NVA_CLIENT_V4.into(),
        server_v4(1).into(),
        server_v4(2).into(),
        NVA_CLIENT_V6.into(),
        server_v6(1).into(),
        server_v6(2).into(),
    ];
    for dst in targets {
        let r = ping(&hub.client, dst, 3, None).unwrap();
        assert_eq!(
            (r.transmitted, r.received),
            (3, 3),
            "ping {dst}:\n{}",
            r.output
        );
        assert!(!r.time_exceeded);
    }
    // Servers answer from their unique lo addresses too (routes back via nva).
    assert_eq!(
        ping(hub.server(1), server_v4(2).into(), 1, None)
            .unwrap()
            .received,
        1
    );

    // TTL / hop limit 1 expires in nva, which answers with ICMP time exceeded.
    for dst in [IpAddr::from(server_v4(1)), server_v6(1).into()] {
        let r = ping(&hub.client, dst, 1, Some(1)).unwrap();
        assert_eq!(r.received, 0, "{}", r.output);
        assert!(r.time_exceeded, "no time exceeded for {dst}:\n{}", r.output);
    }

    // A downed link stops traffic, and it recovers when brought up again.
    hub.set_link(&hub.nva, "s1", false).unwrap();
    assert_eq!(
        ping(&hub.client, server_v4(1).into(), 1, None)
            .unwrap()
            .received,
        0
    );
    hub.set_link(&hub.nva, "s1", true).unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        Ok(ping(&hub.client, server_v4(1).into(), 1, None)?.received == 1)
    })
    .unwrap();

    drop_and_check(hub);
}

#[test]
fn hub_udp_flows_ttl() {
    root_or_skip!("hub_udp_flows_ttl");
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    let v4: SocketAddr = (server_v4(1), 5000).into();
    let v6: SocketAddr = (server_v6(1), 5000).into();
    let mut sink = UdpSink::start(hub.server(1), &[v4, v6]).unwrap();
    assert_eq!(sink.local_addrs(), &[v4, v6]);

    let (flows, per) = (8u16, 5u32);
    let src4 = send_flows(&hub.client, v4, flows, per, None).unwrap();
    let src6 = send_flows(&hub.client, v6, flows, per, None).unwrap();
    let total = 2 * usize::from(flows) * per as usize;
    assert_eq!(sink.wait_for(total, Duration::from_secs(5)), total);

    // Distinct source ports, all from the client's address.
    for (srcs, ip) in [(&src4, IpAddr::from(CLIENT_V4)), (&src6, CLIENT_V6.into())] {
        assert_eq!(srcs.len(), usize::from(flows));
        assert!(srcs.iter().all(|s| s.ip() == ip), "{srcs:?}");
        let ports: BTreeSet<u16> = srcs.iter().map(SocketAddr::port).collect();
        assert_eq!(ports.len(), usize::from(flows));
    }

    let got = sink.received();
    let mut per_src: BTreeMap<SocketAddr, Vec<u32>> = BTreeMap::new();
    for d in &got {
        // One hop of kernel forwarding: 64 -> 63.
        assert_eq!(d.ttl, Some(63), "{d:?}");
        let flow = usize::from(d.flow_index().expect("flow payload"));
        let (srcs, dst) = if d.src.is_ipv4() {
            (&src4, v4)
        } else {
            (&src6, v6)
        };
        assert_eq!(d.src, srcs[flow], "payload flow index matches its source");
        assert_eq!(d.local, dst);
        assert_eq!(d.dst, Some(dst.ip()));
        assert_eq!(
            d.ifindex,
            Some(hub.ifindex(hub.server(1), HOST_IF).unwrap())
        );
        per_src.entry(d.src).or_default().push(d.seq().unwrap());
    }
    assert_eq!(per_src.len(), 2 * usize::from(flows));
    for seqs in per_src.values_mut() {
        seqs.sort();
        assert_eq!(*seqs, (0..per).collect::<Vec<_>>());
    }

    // An explicit TTL / hop limit is honoured: 10 -> 9 after nva.
    sink.clear();
    send_flows(&hub.client, v4, 2, 2, Some(10)).unwrap();
    send_flows(&hub.client, v6, 2, 2, Some(10)).unwrap();
    assert_eq!(sink.wait_for(8, Duration::from_secs(5)), 8);
    assert!(sink.received().iter().all(|d| d.ttl == Some(9)));

    // TTL 1 dies in nva: nothing arrives.
    sink.clear();
    send_flows(&hub.client, v4, 2, 2, Some(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.count(), 0);

    sink.stop().unwrap();
    drop(sink);
    drop_and_check(hub);
}

#[test]
fn hub_tcp_roundtrip() {
    root_or_skip!("hub_tcp_roundtrip");
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    hub.add_kernel_routes().unwrap(); // for the server-unique address below
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for addr in [
        SocketAddr::from((server_v4(2), 7000)),
        SocketAddr::from((server_v6(2), 7000)),
        SocketAddr::from((server_unique_v4(1), 0)),
    ] {
        let srv_ns = if addr.ip() == IpAddr::from(server_unique_v4(1)) {
            hub.server(1)
        } else {
            hub.server(2)
        };
        let echo = tcp_echo_server(srv_ns, addr).unwrap();
        let back = tcp_roundtrip(&hub.client, echo.addr(), &payload).unwrap();
        assert_eq!(back.len(), payload.len());
        assert!(back == payload, "echo differs for {addr}");
        assert_eq!(echo.accepted(), 1);
    }
    // Nothing listening: a clear error, not a hang.
    let e = tcp_roundtrip(&hub.client, (server_v4(1), 1).into(), b"x").unwrap_err();
    assert!(format!("{e:#}").contains("connect"), "{e:#}");
    drop_and_check(hub);
}

#[test]
fn hub_inject_frames_checksums() {
    root_or_skip!("hub_inject_frames_checksums");
    let _g = serial();
    let hub = Hub::build(1).unwrap();
    let v4: SocketAddr = (server_v4(1), 6000).into();
    let v6: SocketAddr = (server_v6(1), 6000).into();
    let sink = UdpSink::start(hub.server(1), &[v4, v6]).unwrap();
    let mut cap = FrameCapture::start(hub.server(1), HOST_IF).unwrap();
    let nva_mac = hub.mac(&hub.nva, "c0").unwrap();
    let cli_mac = hub.mac(&hub.client, HOST_IF).unwrap();
    let s1_mac = hub.mac(&hub.nva, "s1").unwrap();

    // Make sure nva has resolved srv1 (otherwise the first frames wait on ARP/ND, which is
    // fine, but then there is no reason to wait in the negative checks below).
    assert_eq!(
        ping(&hub.client, server_v4(1).into(), 1, None)
            .unwrap()
            .received,
        1
    );
    assert_eq!(
        ping(&hub.client, server_v6(1).into(), 1, None)
            .unwrap()
            .received,
        1
    );

    let good4 = frames::eth_ipv4_udp(
        nva_mac,
        cli_mac,
        CLIENT_V4,
        server_v4(1),
        40000,
        6000,
        5,
        b"good4",
    );
    let good6 = frames::eth_ipv6_udp(
        nva_mac,
        cli_mac,
        CLIENT_V6,
        server_v6(1),
        40001,
        6000,
        5,
        b"good6",
    );
    let mut bad_ipcsum = frames::eth_ipv4_udp(
        nva_mac,
        cli_mac,
        CLIENT_V4,
        server_v4(1),
        40002,
        6000,
        5,
        b"bad-ipcsum",
    );
    bad_ipcsum[off4::CSUM] ^= 0xff;
    let mut bad_udp4 = frames::eth_ipv4_udp(
        nva_mac,
        cli_mac,
        CLIENT_V4,
        server_v4(1),
        40003,
        6000,
        5,
        b"bad-udp4",
    );
    bad_udp4[off4::UDP_CSUM] ^= 0x01;
    let mut bad_udp6 = frames::eth_ipv6_udp(
        nva_mac,
        cli_mac,
        CLIENT_V6,
        server_v6(1),
        40004,
        6000,
        5,
        b"bad-udp6",
    );
    bad_udp6[off6::UDP_CSUM] ^= 0x01;
    let mut bad_len = frames::eth_ipv4_udp(
        nva_mac,
        cli_mac,
        CLIENT_V4,
        server_v4(1),
        40005,
        6000,
        5,
        b"bad-totlen",
    );
    bad_len[off4::TOT_LEN + 1] = bad_len[off4::TOT_LEN + 1].wrapping_add(40); // > frame
    frames::fix_ipv4_checksum(&mut bad_len);
    let truncated = good4[..30].to_vec();

    inject_frames(
        &hub.client,
        HOST_IF,
        &[
            bad_ipcsum, bad_udp4, bad_udp6, bad_len, truncated, good4, good6,
        ],
    )
    .unwrap();
    assert_eq!(sink.wait_for(2, Duration::from_secs(5)), 2);
    std::thread::sleep(Duration::from_millis(300));
    let got = sink.received();
    let payloads: BTreeSet<&[u8]> = got.iter().map(|d| d.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        BTreeSet::from([&b"good4"[..], &b"good6"[..]]),
        "{got:?}"
    );
    for d in &got {
        assert_eq!(d.ttl, Some(4), "{d:?}");
        let want_src: IpAddr = if d.src.is_ipv4() {
            CLIENT_V4.into()
        } else {
            CLIENT_V6.into()
        };
        assert_eq!(d.src.ip(), want_src);
    }

    // The capture on srv1 sees the forwarded IPv4 frame: MACs rewritten by nva, TTL 4.
    cap.stop().unwrap();
    let seen = cap.frames();
    let fwd = seen
        .iter()
        .find(|f| {
            f.data.len() > off4::UDP && f.data[12..14] == [0x08, 0x00] && f.data.ends_with(b"good4")
        })
        .expect("forwarded good4 frame captured");
    assert_eq!(fwd.pkttype, libc::PACKET_HOST);
    assert_eq!(&fwd.data[6..12], &s1_mac);
    assert_eq!(&fwd.data[0..6], &hub.mac(hub.server(1), HOST_IF).unwrap());
    assert_eq!(fwd.data[off4::TTL], 4);
    assert!(crate::checksum::ipv4_header_valid(&fwd.data[14..34]));

    drop(sink);
    drop(cap);
    drop_and_check(hub);
}

#[test]
fn hub_kernel_ecmp_service() {
    root_or_skip!("hub_kernel_ecmp_service");
    let _g = serial();
    let hub = Hub::build(2).unwrap();
    hub.add_kernel_routes().unwrap();
    let port = 7100;
    let svc4: SocketAddr = (SERVICE_V4, port).into();
    let svc6: SocketAddr = (SERVICE_V6, port).into();
    let sinks: Vec<UdpSink> = (1..=2)
        .map(|k| {
            UdpSink::start(
                hub.server(k),
                &[
                    svc4,
                    svc6,
                    (server_unique_v4(k), port).into(),
                    (server_unique_v6(k), port).into(),
                ],
            )
            .unwrap()
        })
        .collect();

    let flows = 32u16;
    send_flows(&hub.client, svc4, flows, 2, None).unwrap();
    send_flows(&hub.client, svc6, flows, 2, None).unwrap();
    for k in 1..=2 {
        send_flows(&hub.client, (server_unique_v4(k), port).into(), 1, 1, None).unwrap();
        send_flows(&hub.client, (server_unique_v6(k), port).into(), 1, 1, None).unwrap();
    }
    let want = 2 * usize::from(flows) * 2 + 4;
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        Ok(sinks.iter().map(UdpSink::count).sum::<usize>() >= want)
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sinks.iter().map(UdpSink::count).sum::<usize>(), want);

    for (i, sink) in sinks.iter().enumerate() {
        let k = i + 1;
        let got = sink.received();
        // Each server receives its own unique-address datagrams, and only those.
        let uniq: Vec<_> = got
            .iter()
            .filter(|d| {
                d.local.port() == port
                    && d.dst != Some(SERVICE_V4.into())
                    && d.dst != Some(SERVICE_V6.into())
            })
            .collect();
        assert_eq!(uniq.len(), 2, "server {k}: {uniq:?}");
        assert!(
            uniq.iter()
                .all(|d| d.dst == Some(server_unique_v4(k).into())
                    || d.dst == Some(server_unique_v6(k).into()))
        );
        // L4 multipath hashing spreads the 32 flows of each family over both servers.
        for svc in [svc4, svc6] {
            let n = got.iter().filter(|d| d.dst == Some(svc.ip())).count();
            assert!(n > 0, "server {k} got no {svc} traffic");
        }
        assert!(got.iter().all(|d| d.ttl == Some(63)));
    }
    // Both packets of a flow go to the same server.
    let mut server_of: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for (i, sink) in sinks.iter().enumerate() {
        for d in sink.received() {
            if let Some(prev) = server_of.insert(d.src, i) {
                assert_eq!(prev, i, "flow {} split across servers", d.src);
            }
        }
    }
    drop(sinks);
    drop_and_check(hub);
}

/// A shell stand-in for the nva binary, to exercise [`NvaProcess`] before nva exists.
const STUB_NVA: &str = r#"#!/bin/sh
cmd=$1; shift
case "$cmd" in
run)
  # run --config FILE --socket SOCK
  cfg=$2; sock=$4
  echo "stub starting with $cfg"
  if grep -q fail "$cfg"; then echo "stub: bad config" >&2; exit 3; fi
  ip -o link show | cut -d: -f2
  trap 'echo "stub got TERM"; rm -f "$sock"; exit 0' TERM
  sleep 0.3
  touch "$sock"
  while :; do sleep 0.05; done ;;
status)
  [ -e "$2" ] ;;
stats)
  echo '{"interfaces":[{"name":"c0","ifindex":2,"counters":{"forwarded":{"packets":1,"bytes":98}}},'
  echo ' {"name":"s1","ifindex":3,"counters":{"forwarded":{"packets":4,"bytes":400},"tx":{"packets":2,"bytes":9}}}]}' ;;
routes)
  echo "stub: no routes" >&2; exit 1 ;;
*)
  echo "stub: unknown $cmd" >&2; exit 2 ;;
esac
"#;

#[test]
fn nva_process_with_stub_binary() {
    root_or_skip!("nva_process_with_stub_binary");
    let _g = serial();
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("nva-test-stub-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let stub = dir.join("nva");
    std::fs::write(&stub, STUB_NVA).unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();

    let ns = Netns::new("stub").unwrap();
    let mut p = NvaProcess::start_with_binary(&stub, &ns, "[control]\n").unwrap();
    assert!(p.is_running());
    let (sock, cfg) = (p.socket().to_path_buf(), p.config_path().to_path_buf());
    assert!(sock.exists() && cfg.exists());
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "[control]\n");
    // The daemon ran inside the namespace: it saw only lo.
    let log = p.log();
    assert!(
        log.contains("stub starting") && log.trim_end().ends_with("lo"),
        "{log}"
    );

    let c = p.counters().unwrap();
    assert_eq!(c.get("c0", "forwarded"), 1);
    assert_eq!(c.total("forwarded"), 5);
    assert_eq!(c.get("s1", "tx"), 2);
    let e = p.cli(&["routes"]).unwrap_err();
    assert!(format!("{e:#}").contains("no routes"), "{e:#}");

    // Graceful stop: SIGTERM reaches the process itself (ip netns exec execs it).
    let st = p.stop().unwrap();
    assert!(st.success(), "{st}");
    assert!(p.log().contains("stub got TERM"));
    drop(p);
    assert!(!sock.exists() && !cfg.exists());

    // A daemon that exits at once: the error carries its log.
    let e = match NvaProcess::start_with_binary(&stub, &ns, "fail = true\n") {
        Ok(_) => panic!("start should fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("exited early") && e.contains("bad config"),
        "{e}"
    );

    drop(ns);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Per-namespace UDP `InCsumErrors` (from /proc/net/snmp).
fn udp_csum_errors(ns: &Netns) -> u64 {
    let snmp = ns.exec_ok(&["cat", "/proc/net/snmp"]).unwrap();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InCsumErrors")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// XDP_REDIRECT between the hub's veths with a stub program (no nva): the Hub's defaults
/// (GRO on, TX checksum offload off on client/server eth0) let both socket traffic and
/// injected frames through. The two kernel pitfalls those defaults avoid are reported.
#[test]
fn xdp_redirect_through_hub() {
    root_or_skip!("xdp_redirect_through_hub");
    let _g = serial();
    let hub = Hub::build(1).unwrap();
    let v4: SocketAddr = (server_v4(1), 5000).into();
    let sink = UdpSink::start(hub.server(1), &[v4]).unwrap();
    let nva_mac = hub.mac(&hub.nva, "c0").unwrap();
    let cli_mac = hub.mac(&hub.client, HOST_IF).unwrap();
    let srv_mac = hub.mac(hub.server(1), HOST_IF).unwrap();
    let s1_mac = hub.mac(&hub.nva, "s1").unwrap();
    let frame = frames::eth_ipv4_udp(
        nva_mac,
        cli_mac,
        CLIENT_V4,
        server_v4(1),
        40000,
        5000,
        5,
        b"injected",
    );
    let xdp = crate::xdpstub::XdpRedirect::attach(&hub.nva, "c0", "s1", srv_mac, s1_mac).unwrap();
    assert!(hub.nva.ip("link show dev c0").unwrap().contains("prog/xdp"));

    // Socket traffic: the stub does not decrement TTL, so 64 proves the XDP path.
    send_flows(&hub.client, v4, 4, 3, None).unwrap();
    assert_eq!(sink.wait_for(12, Duration::from_secs(5)), 12);
    assert!(
        sink.received().iter().all(|d| d.ttl == Some(64)),
        "{:?}",
        sink.received()
    );
    inject_frames(&hub.client, HOST_IF, std::slice::from_ref(&frame)).unwrap();
    assert_eq!(sink.wait_for(13, Duration::from_secs(5)), 13);
    assert_eq!(sink.received().last().unwrap().ttl, Some(5));
    // TCP: forward path through XDP, return path through the kernel.
    let echo = tcp_echo_server(hub.server(1), (server_v4(1), 0).into()).unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    assert!(tcp_roundtrip(&hub.client, echo.addr(), &payload).unwrap() == payload);
    drop(echo);

    // Pitfall 1: TX checksum offload on the sender -> CHECKSUM_PARTIAL lost on redirect.
    sink.clear();
    let errs = udp_csum_errors(hub.server(1));
    hub.client
        .exec_ok(&["ethtool", "-K", HOST_IF, "tx", "on"])
        .unwrap();
    send_flows(&hub.client, v4, 4, 1, None).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    eprintln!(
        "observed: client tx-checksumming on -> {} of 4 redirected datagrams received, \
         server UDP InCsumErrors +{}",
        sink.count(),
        udp_csum_errors(hub.server(1)) - errs
    );
    hub.client
        .exec_ok(&["ethtool", "-K", HOST_IF, "tx", "off"])
        .unwrap();

    // Pitfall 2: no GRO (no NAPI) on the receiving veth -> redirected frames dropped.
    sink.clear();
    hub.server(1)
        .exec_ok(&["ethtool", "-K", HOST_IF, "gro", "off"])
        .unwrap();
    inject_frames(&hub.client, HOST_IF, std::slice::from_ref(&frame)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c0_stats = hub.nva.exec_ok(&["ethtool", "-S", "c0"]).unwrap();
    let drops = c0_stats
        .lines()
        .find(|l| l.contains("rx_queue_0_drops"))
        .unwrap_or("")
        .trim();
    eprintln!(
        "observed: server eth0 gro off -> {} of 1 received; c0 {drops}",
        sink.count()
    );
    hub.server(1)
        .exec_ok(&["ethtool", "-K", HOST_IF, "gro", "on"])
        .unwrap();

    // Detaching (drop) restores plain kernel forwarding: TTL 63 again.
    drop(xdp);
    assert!(!hub.nva.ip("link show dev c0").unwrap().contains("prog/xdp"));
    sink.clear();
    send_flows(&hub.client, v4, 2, 1, None).unwrap();
    assert_eq!(sink.wait_for(2, Duration::from_secs(5)), 2);
    assert!(sink.received().iter().all(|d| d.ttl == Some(63)));

    drop(sink);
    drop_and_check(hub);
}
