//! Next-hop failover benchmark: with ICMP probes every 100 ms × 3, how long after a next
//! hop silently dies (no link change: it stops answering and drops its traffic) does
//! nva stop sending to it, and how many flows of the healthy next hops change path.
//!
//! Traffic: one datagram per millisecond, round-robin over 60 UDP flows, from the client
//! through nva to three servers (ECMP). Server 2 dies 1 s in. "Time to stop" is the send
//! time of the last datagram lost minus the failure time. `nva-bench-failover [--runs N]`.
use std::{
    collections::{BTreeMap, HashSet},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use nva_tests::{
    Hub, NvaProcess, UdpSink, require_root,
    topology::{SERVICE_V4, server_v4},
    wait_until,
};

const FLOWS: u32 = 60;
const TOTAL: u32 = 3000;

fn config() -> String {
    format!(
        "[health]\nprobe = \"icmp\"\ninterval_ms = 100\nmultiplier = 3\nhold_down_ms = 1000\n\
         [[interfaces]]\nname = \"c0\"\n[[interfaces]]\nname = \"s1\"\n[[interfaces]]\nname = \"s2\"\n[[interfaces]]\nname = \"s3\"\n\
         [[routes]]\nprefix = \"10.100.0.0/16\"\nnexthops = [{{ via = \"{}\" }}, {{ via = \"{}\" }}, {{ via = \"{}\" }}]\n",
        server_v4(1),
        server_v4(2),
        server_v4(3)
    )
}

struct Run {
    stop_ms: f64,
    lost: usize,
    moved_healthy: usize,
}

fn run_once() -> Result<Run> {
    let hub = Hub::build(3)?;
    let nva = NvaProcess::start(&hub.nva, &config())?;
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let nhs = nva.cli(&["nexthops"])?;
        Ok(nhs
            .as_array()
            .into_iter()
            .flatten()
            .all(|n| n["resolved"] == true))
    })?;
    let service = SocketAddr::new(SERVICE_V4.into(), 7000);
    let sinks: Vec<UdpSink> = hub
        .servers
        .iter()
        .map(|s| UdpSink::start(s, &[service]))
        .collect::<Result<_>>()?;
    let sender = hub.client.spawn_thread(move || {
        let socks: Vec<UdpSocket> = (0..FLOWS)
            .map(|i| {
                let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 53000 + i as u16)).unwrap();
                s.connect(service).unwrap();
                s
            })
            .collect();
        let start = Instant::now();
        let mut sent = Vec::with_capacity(TOTAL as usize);
        for n in 0..TOTAL {
            let due = start + Duration::from_millis(n as u64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            sent.push(Instant::now());
            let _ = socks[(n % FLOWS) as usize].send(&n.to_be_bytes());
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(1000));
    let failed_at = Instant::now();
    let dead = hub.server(2);
    dead.sysctl("net.ipv4.icmp_echo_ignore_all", "1")?;
    dead.ip(&format!("addr del {SERVICE_V4}/32 dev lo"))?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))?;
    std::thread::sleep(Duration::from_millis(300));

    // flow -> servers it reached before and after the failure.
    let mut before: BTreeMap<u32, HashSet<usize>> = BTreeMap::new();
    let mut after: BTreeMap<u32, HashSet<usize>> = BTreeMap::new();
    let mut received = HashSet::new();
    for (k, sink) in sinks.iter().enumerate() {
        for d in sink.received() {
            let n = u32::from_be_bytes([d.payload[0], d.payload[1], d.payload[2], d.payload[3]]);
            received.insert(n);
            let side = if sent[n as usize] < failed_at {
                &mut before
            } else {
                &mut after
            };
            side.entry(n % FLOWS).or_default().insert(k + 1);
        }
    }
    let lost: Vec<u32> = (0..TOTAL).filter(|n| !received.contains(n)).collect();
    let stop = lost
        .iter()
        .map(|n| sent[*n as usize].saturating_duration_since(failed_at))
        .max()
        .unwrap_or_default();
    let moved_healthy = before
        .iter()
        .filter(|(_, servers)| !servers.contains(&2))
        .filter(|(flow, servers)| after.get(flow).is_some_and(|a| a != *servers))
        .count();
    Ok(Run {
        stop_ms: stop.as_secs_f64() * 1000.0,
        lost: lost.len(),
        moved_healthy,
    })
}

fn main() -> Result<()> {
    if !require_root("nva-bench-failover") {
        bail!("run as root");
    }
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut results = Vec::new();
    for i in 0..runs {
        let r = run_once()?;
        eprintln!(
            "run {}: traffic to the dead next hop stopped {:.0} ms after the failure; {} datagrams lost; {} healthy flows moved",
            i + 1,
            r.stop_ms,
            r.lost,
            r.moved_healthy
        );
        results.push(r);
    }
    let mut stops: Vec<f64> = results.iter().map(|r| r.stop_ms).collect();
    stops.sort_by(f64::total_cmp);
    let moved: usize = results.iter().map(|r| r.moved_healthy).sum();
    println!("## Next-hop failover (ICMP probes 100 ms x 3, {runs} runs)");
    println!();
    println!("| figure | min | median | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| time until no traffic goes to the dead next hop | {:.0} ms | {:.0} ms | {:.0} ms |",
        stops[0],
        stops[stops.len() / 2],
        stops[stops.len() - 1]
    );
    let mut lost: Vec<usize> = results.iter().map(|r| r.lost).collect();
    lost.sort();
    println!(
        "| datagrams lost (1 per ms over {FLOWS} flows) | {} | {} | {} |",
        lost[0],
        lost[lost.len() / 2],
        lost[lost.len() - 1]
    );
    println!("| flows of healthy next hops that changed path (all runs) | {moved} | | |");
    Ok(())
}
