//! Full-table BGP feed benchmark: a feeder (nva's own BGP speaker, over a real TCP BGP
//! session between two network namespaces) announces ~1,000,000 IPv4 and 200,000 IPv6
//! prefixes with a realistic prefix-length mix; nva learns them, selects, and programs
//! its FIB (north-south table as DIR-24-8 and the IPv6 multibit trie). Prints routes/s into the FIB, the time to
//! converge, the withdrawal time, and nva's resident memory.
//!
//! `nva-bench-bgp [--quick]` (as root; `cargo xtask bench-bgp` runs it).
use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nva::bgp::{Command, NextHop, Origin, PathAttrs, PeerConfig, Speaker, codec::AsPath};
use nva_tests::{Netns, NvaProcess, require_root, veth};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Picks from (value, weight) pairs.
    fn pick(&mut self, table: &[(u8, u32)]) -> u8 {
        let total: u32 = table.iter().map(|(_, w)| w).sum();
        let mut r = (self.next() % total as u64) as u32;
        for (v, w) in table {
            if r < *w {
                return *v;
            }
            r -= w;
        }
        table[0].0
    }
}

/// Prefix-length mix of the public IPv4 table (about 60% /24).
const V4_MIX: &[(u8, u32)] = &[
    (24, 600),
    (23, 90),
    (22, 100),
    (21, 50),
    (20, 50),
    (19, 35),
    (18, 20),
    (17, 12),
    (16, 25),
    (15, 4),
    (14, 4),
    (13, 3),
    (12, 3),
    (11, 2),
    (10, 1),
    (8, 1),
];
/// IPv6: mostly /48 and /32, then /44, /40, /36, /29.
const V6_MIX: &[(u8, u32)] = &[
    (48, 500),
    (32, 200),
    (44, 100),
    (40, 80),
    (36, 70),
    (29, 50),
];

fn prefixes_v4(n: usize, rng: &mut Rng) -> Vec<IpNet> {
    let mut seen = HashSet::with_capacity(n);
    while seen.len() < n {
        let len = rng.pick(V4_MIX);
        // Public-looking space: 1.0.0.0 - 223.255.255.255 minus 10/8 (nva's own).
        let mut a = (rng.next() as u32) % (223 << 24) + (1 << 24);
        if a >> 24 == 10 {
            a ^= 1 << 28;
        }
        let p = Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc();
        seen.insert(IpNet::V4(p));
    }
    seen.into_iter().collect()
}

fn prefixes_v6(n: usize, rng: &mut Rng) -> Vec<IpNet> {
    let mut seen = HashSet::with_capacity(n);
    while seen.len() < n {
        let len = rng.pick(V6_MIX);
        let hi = 0x2000_0000_0000_0000u64 | (rng.next() >> 4);
        let a = Ipv6Addr::from(((hi as u128) << 64) | rng.next() as u128);
        seen.insert(IpNet::V6(Ipv6Net::new(a, len).unwrap().trunc()));
    }
    seen.into_iter().collect()
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn routes(nva: &NvaProcess) -> (u64, u64) {
    let s = nva.cli(&["status"]).unwrap_or_default();
    (
        s["routes"]["ipv4"].as_u64().unwrap_or(0),
        s["routes"]["ipv6"].as_u64().unwrap_or(0),
    )
}

fn main() -> Result<()> {
    if !require_root("nva-bench-bgp") {
        bail!("run as root");
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // --kernel: also mirror the routes into the kernel and time that.
    let kernel = std::env::args().any(|a| a == "--kernel");
    let (n4, n6) = if quick {
        (100_000, 20_000)
    } else {
        (1_000_000, 200_000)
    };
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let t = Instant::now();
    let v4 = prefixes_v4(n4, &mut rng);
    let v6 = prefixes_v6(n6, &mut rng);
    eprintln!(
        "generated {n4} IPv4 + {n6} IPv6 prefixes in {:?}",
        t.elapsed()
    );

    let nva_ns = Netns::new("bgpb-nva")?;
    let feeder = Netns::new("bgpb-feed")?;
    veth(&nva_ns, "f0", &feeder, "eth0")?;
    nva_ns.ip("addr add 10.0.250.1/24 dev f0")?;
    nva_ns.ip("-6 addr add fd00:250::1/64 dev f0 nodad")?;
    feeder.ip("addr add 10.0.250.2/24 dev eth0")?;
    feeder.ip("-6 addr add fd00:250::2/64 dev eth0 nodad")?;
    feeder.exec_ok(&["ping", "-c", "1", "-W", "2", "10.0.250.1"])?;

    let config = r#"
[health]
drain_ms = 0
[dataplane]
ipv4_fib_north_south = "dir-24-8"
ipv6_fib_north_south = "multibit"
[[interfaces]]
name = "f0"
[bgp]
local_as = 65001
router_id = "10.0.250.1"
kernel_routes = KERNEL
[[bgp.peers]]
name = "feed"
address = "10.0.250.2"
remote_as = 65100
hold_time = 90
connect_retry = 1
"#;
    let config = config.replace("KERNEL", if kernel { "true" } else { "false" });
    let nva = NvaProcess::start(&nva_ns, &config)?;
    let pid = nva.pid().context("nva pid")?;
    let (base4, base6) = routes(&nva);
    let rss_before = rss_mib(pid);

    // The feeder: a BGP speaker in its namespace, on its own runtime thread.
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Command>();
    let (up_tx, up_rx) = std::sync::mpsc::channel::<()>();
    let _feeder = feeder.spawn_thread(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (ev_tx, mut ev_rx) = tokio::sync::mpsc::channel(1024);
            let mut speaker = Speaker::new(ev_tx);
            // nva connects out to us (it does not listen in this config).
            speaker.listen("10.0.250.2:179".parse().unwrap()).unwrap();
            let mut cfg = PeerConfig::new(
                "10.0.250.1".parse().unwrap(),
                65001,
                65100,
                "10.0.250.2".parse().unwrap(),
            );
            cfg.connect_retry = 1;
            let tx = speaker.add_peer(cfg).unwrap();
            loop {
                if let Some(nva::bgp::Event::Established { .. }) = ev_rx.recv().await {
                    break;
                }
            }
            up_tx.send(()).unwrap();
            // The benchmark sends one Announce with the whole table.
            let cmd = tokio::task::spawn_blocking(move || cmd_rx.recv().ok())
                .await
                .unwrap();
            if let Some(cmd) = cmd {
                tx.send(cmd).await.unwrap();
            }
            // Keep the session's events drained.
            while ev_rx.recv().await.is_some() {}
            std::future::pending::<()>().await;
        })
    });
    up_rx
        .recv_timeout(Duration::from_secs(30))
        .with_context(|| {
            format!(
                "BGP session to nva did not come up; nva log:\n{}",
                nva.log()
            )
        })?;

    let attrs4 = Arc::new(PathAttrs {
        origin: Origin::Igp,
        as_path: AsPath::from_sequence(vec![65100, 64512, 64513]),
        next_hop: Some(NextHop::V4("10.0.250.2".parse().unwrap())),
        ..Default::default()
    });
    let attrs6 = Arc::new(PathAttrs {
        origin: Origin::Igp,
        as_path: AsPath::from_sequence(vec![65100, 64512]),
        next_hop: Some(NextHop::V6 {
            global: "fd00:250::2".parse().unwrap(),
            link_local: None,
        }),
        ..Default::default()
    });
    let mut all: Vec<(IpNet, Arc<PathAttrs>)> = v4.iter().map(|p| (*p, attrs4.clone())).collect();
    all.extend(v6.iter().map(|p| (*p, attrs6.clone())));

    let start = Instant::now();
    cmd_tx.send(Command::Announce(all))?;
    let want = (base4 + n4 as u64, base6 + n6 as u64);
    let mut last = (0, 0);
    loop {
        let r = routes(&nva);
        if r.0 >= want.0 && r.1 >= want.1 {
            last = r;
            break;
        }
        if r != last {
            last = r;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("nva did not converge: {last:?} of {want:?}\n{}", nva.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let converge = start.elapsed();
    let kernel_time = if kernel {
        // IPv4 routes of nva's protocol in the kernel (one per line).
        loop {
            let n = nva_ns
                .exec_ok(&["ip", "-4", "route", "show", "proto", "250"])?
                .lines()
                .count();
            if n >= n4 {
                break Some(start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(900) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    } else {
        None
    };
    let rss = rss_mib(pid);
    let total = (n4 + n6) as f64;
    println!(
        "## BGP full-table feed ({} IPv4 + {} IPv6 prefixes)",
        n4, n6
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| time from the first UPDATE to all routes in the FIB | {:.2} s |",
        converge.as_secs_f64()
    );
    println!(
        "| routes/s into the FIB (session + RIB + FIB + maps) | {:.0} |",
        total / converge.as_secs_f64()
    );
    println!(
        "| nva resident memory before / after | {:.0} MiB / {:.0} MiB |",
        rss_before, rss
    );
    println!(
        "| routes installed (IPv4, IPv6) | {} / {} |",
        last.0, last.1
    );
    let status = nva.cli(&["status"]).unwrap_or_default();
    for f in status["fib"].as_array().into_iter().flatten() {
        let blocks = match (f["blocks_used"].as_u64(), f["blocks_total"].as_u64()) {
            (Some(u), Some(t)) => format!(", {u} of {t} blocks in use"),
            _ => String::new(),
        };
        println!(
            "| FIB {} {} ({}) | {:.1} MiB in the kernel{blocks} |",
            f["table"].as_str().unwrap_or("?"),
            f["family"].as_str().unwrap_or("?"),
            f["structure"].as_str().unwrap_or("?"),
            f["kernel_bytes"].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64
        );
    }
    if let Some(t) = kernel_time {
        println!(
            "| time until the kernel has every IPv4 route (bgp.kernel_routes) | {:.2} s |",
            t.as_secs_f64()
        );
    }
    // Graceful stop with the whole table: SIGTERM until exit, nva's kernel routes all
    // removed (health.drain_ms = 0 here: the drain is a configured wait, not work).
    let mut nva = nva;
    let t = Instant::now();
    let status = nva.stop_within(Duration::from_secs(120))?;
    let stop = t.elapsed();
    let left = nva_ns
        .exec_ok(&["ip", "route", "show", "proto", "250"])?
        .lines()
        .count()
        + nva_ns
            .exec_ok(&["ip", "-6", "route", "show", "proto", "250"])?
            .lines()
            .count();
    println!(
        "| graceful stop (SIGTERM) with the table: time to exit, nva kernel routes left | {:.2} s ({status}), {left} |",
        stop.as_secs_f64()
    );
    if std::env::args().any(|a| a == "--verbose") {
        eprintln!("{}", nva.log());
    }
    Ok(())
}
