//! Next-hop health probes and self health, with real failures: a server that silently
//! stops answering (its link stays up, as when a VM hangs).
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use nva_tests::{
    Hub, NvaProcess, UdpSink, assert_only_flows_to, require_root, send_flows_from, serial,
    topology::{SERVICE_V4, server_v4},
    wait_until,
};

fn config(extra: &str) -> String {
    format!(
        "[health]\nprobe = \"icmp\"\ninterval_ms = 100\nmultiplier = 3\nhold_down_ms = 500\n{extra}\n\
         [[interfaces]]\nname = \"c0\"\n[[interfaces]]\nname = \"s1\"\n[[interfaces]]\nname = \"s2\"\n[[interfaces]]\nname = \"s3\"\n\
         [[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{{ via = \"{}\" }}, {{ via = \"{}\" }}, {{ via = \"{}\" }}]\n",
        server_v4(1),
        server_v4(2),
        server_v4(3)
    )
}

/// Makes a server stop answering without any link change (as a hung VM): it ignores
/// pings and no longer owns the service address, so its traffic is dropped there.
fn silence(hub: &Hub, k: usize, on: bool) {
    let ns = hub.server(k);
    ns.sysctl("net.ipv4.icmp_echo_ignore_all", if on { "1" } else { "0" })
        .unwrap();
    let op = if on { "del" } else { "add" };
    ns.ip(&format!("addr {op} {SERVICE_V4}/32 dev lo")).unwrap();
}

fn owners(
    hub: &Hub,
    sinks: &[UdpSink],
    service: SocketAddr,
    expect: usize,
) -> BTreeMap<u16, usize> {
    for s in sinks {
        s.clear();
    }
    let ports: Vec<u16> = (0..150).map(|i| 51000 + i).collect();
    send_flows_from(&hub.client, service, &ports, 2, None).unwrap();
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        Ok(sinks.iter().map(UdpSink::count).sum::<usize>() >= expect)
    });
    let mut out = BTreeMap::new();
    for (k, s) in sinks.iter().enumerate() {
        for d in s.received() {
            out.insert(d.flow_index().unwrap(), k + 1);
        }
    }
    out
}

fn live(nva: &NvaProcess, dev: &str) -> bool {
    nva.cli(&["nexthops"])
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["dev"] == dev)
        .all(|n| n["live"] == true)
}

#[test]
fn a_silent_next_hop_is_probed_out_and_back_in() {
    if !require_root("a_silent_next_hop_is_probed_out_and_back_in") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(3).unwrap();
    let nva = NvaProcess::start(&hub.nva, &config("")).unwrap();
    let service = SocketAddr::new(SERVICE_V4.into(), 7000);
    let sinks: Vec<UdpSink> = hub
        .servers
        .iter()
        .map(|s| UdpSink::start(s, &[service]).unwrap())
        .collect();
    let before = owners(&hub, &sinks, service, 300);
    assert_eq!(before.len(), 150);

    silence(&hub, 2, true);
    wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        Ok(!live(&nva, "s2"))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", nva.log()));
    let nh = nva.cli(&["nexthops"]).unwrap();
    let s2 = nh
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["dev"] == "s2")
        .unwrap()
        .clone();
    assert_eq!(s2["probe_down"], true, "taken out by its probe: {s2}");
    assert_eq!(s2["link_up"], true, "the link stayed up");

    let expect = before.values().filter(|k| **k != 2).count() * 2
        + before.values().filter(|k| **k == 2).count() * 2;
    let after = owners(&hub, &sinks, service, expect);
    assert_eq!(after.len(), 150, "every flow still arrives");
    for (flow, server) in &before {
        if *server == 2 {
            assert_ne!(after[flow], 2);
        } else {
            assert_eq!(
                after[flow], *server,
                "flow {flow} of a healthy next hop moved"
            );
        }
    }
    let health = nva.cli(&["health"]).unwrap();
    let probe = health["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["spec"]["target"] == server_v4(2).to_string())
        .unwrap()
        .clone();
    assert_eq!(probe["healthy"], false);

    // It answers again: back after the hold-down, taking only buckets for itself.
    silence(&hub, 2, false);
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        Ok(live(&nva, "s2"))
    })
    .unwrap();
    let back = owners(&hub, &sinks, service, 300);
    assert_only_flows_to(2, &after, &back);
}

#[test]
fn self_health_reports_a_tracked_target_that_does_not_answer() {
    if !require_root("self_health_reports_a_tracked_target_that_does_not_answer") {
        return;
    }
    let _g = serial();
    let hub = Hub::build(3).unwrap();
    let track = format!(
        "track = [{{ target = \"{}\", probe = \"icmp\" }}]",
        server_v4(3)
    );
    let nva = NvaProcess::start(&hub.nva, &config(&track)).unwrap();
    wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        Ok(nva.cli(&["health"])?["healthy"] == true)
    })
    .unwrap();
    silence(&hub, 3, true);
    wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        let h = nva.cli(&["health"])?;
        Ok(h["healthy"] == false
            && h["problems"]
                .to_string()
                .contains(&server_v4(3).to_string()))
    })
    .unwrap();
    let table = String::from_utf8(nva.cli_raw(&["health"]).unwrap().stdout).unwrap();
    assert!(table.contains("UNHEALTHY"), "{table}");
}
