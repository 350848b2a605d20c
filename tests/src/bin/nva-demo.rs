//! `cargo xtask demo`: a hub in network namespaces (client -> nva -> 3 servers that all
//! serve 10.100.0.1 / fd00:100::1), nva forwarding in XDP with ECMP over the servers,
//! one server failing, the counters. Everything is torn down at the end.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Result, bail};
use nva_tests::{
    Hub, NvaProcess, UdpSink, ping, require_root, send_flows_from, topology::HOST_IF, wait_until,
};

const SERVERS: usize = 3;
const FLOWS: u16 = 300;

/// The embedded default config: three ECMP next hops for the service prefixes.
fn config() -> String {
    format!(
        "# nva demo config\n[dataplane]\nno_route = \"pass\"\n\n{}",
        nva_tests::topology::ecmp_config(SERVERS)
    )
}

fn banner(text: &str) {
    println!("\n=== {text} ===");
}

fn show(nva: &NvaProcess, cmd: &str) -> Result<()> {
    let out = nva.cli_raw(&[cmd])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// Sends FLOWS UDP flows to `service` and returns flow index -> server that got it.
fn spread(hub: &Hub, sinks: &[UdpSink], service: SocketAddr) -> Result<BTreeMap<u16, usize>> {
    for s in sinks {
        s.clear();
    }
    // Fixed source ports: the same 5-tuples every time, so paths can be compared.
    let ports: Vec<u16> = (0..FLOWS).map(|i| 41000 + i).collect();
    send_flows_from(&hub.client, service, &ports, 3, None)?;
    let expected = FLOWS as usize * 3;
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        Ok(sinks.iter().map(UdpSink::count).sum::<usize>() >= expected)
    })
    .ok();
    let mut owner = BTreeMap::new();
    for (k, sink) in sinks.iter().enumerate() {
        for d in sink.received() {
            if let Some(flow) = d.flow_index() {
                owner.insert(flow, k + 1);
            }
        }
    }
    let mut per_server = [0; SERVERS + 1];
    for k in owner.values() {
        per_server[*k] += 1;
    }
    for (k, n) in per_server.iter().enumerate().skip(1) {
        println!("  server {k}: {n:4} flows  {}", "#".repeat(n / 4));
    }
    Ok(owner)
}

fn main() -> Result<()> {
    if !require_root("nva-demo") {
        bail!("the demo builds network namespaces and attaches XDP: run it as root");
    }
    banner("building the hub: client -> nva -> 3 servers (network namespaces + veth)");
    let hub = Hub::build(SERVERS)?;
    let cfg = config();
    println!("{cfg}");

    banner("starting nva (XDP, native mode)");
    let nva = NvaProcess::start(&hub.nva, &cfg)?;
    show(&nva, "status")?;
    show(&nva, "routes")?;

    banner("ping through nva (IPv4 and IPv6)");
    for dst in ["10.100.0.1", "fd00:100::1"] {
        let r = ping(&hub.client, dst.parse::<IpAddr>()?, 3, None)?;
        println!("  ping {dst}: {}/{} replies", r.received, r.transmitted);
    }
    show(&nva, "nexthops")?;

    let addrs: Vec<SocketAddr> = vec!["10.100.0.1:5000".parse()?, "[fd00:100::1]:5000".parse()?];
    let sinks: Vec<UdpSink> = hub
        .servers
        .iter()
        .map(|s| UdpSink::start(s, &addrs))
        .collect::<Result<_>>()?;

    banner(&format!(
        "{FLOWS} UDP flows to 10.100.0.1: ECMP spreads them"
    ));
    let before = spread(&hub, &sinks, addrs[0])?;
    banner(&format!("{FLOWS} UDP flows to [fd00:100::1]"));
    spread(&hub, &sinks, addrs[1])?;

    banner("server 2's link fails: only its flows move");
    hub.server(2).set_link(HOST_IF, false)?;
    wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let nhs = nva.cli(&["nexthops"])?;
        Ok(nhs
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["dev"] == "s2" && n["live"] == false))
    })?;
    let after = spread(&hub, &sinks, addrs[0])?;
    let stayed = before
        .iter()
        .filter(|(f, k)| **k != 2 && after.get(f) == Some(k))
        .count();
    let others = before.values().filter(|k| **k != 2).count();
    let moved = before
        .iter()
        .filter(|(f, k)| **k == 2 && after.get(f).is_some_and(|n| *n != 2))
        .count();
    println!(
        "  flows of servers 1 and 3 that kept their server: {stayed}/{others}; flows of server 2 moved: {moved}"
    );

    banner("counters (nva stats)");
    show(&nva, "stats")?;
    banner("tearing down");
    drop(sinks);
    drop(nva);
    drop(hub);
    println!("done: namespaces removed");
    Ok(())
}
