//! Full-table BGP feed benchmark: a feeder announces ~1,000,000 IPv4 and 200,000 IPv6
//! prefixes with a realistic prefix-length mix (IPv4: the public table's, plus 3% longer than
//! /24 as enterprise tables have) over a real TCP BGP session between two
//! network namespaces; nva learns them, selects, and programs its FIB (north-south table
//! as DIR-24-8 and the IPv6 multibit trie). Prints routes/s into the FIB, the time to
//! converge, the graceful stop, and nva's resident memory.
//!
//! The feeder is nva's own BGP speaker, or with `--bird` a BIRD 2 instance that holds the
//! same table in a `protocol static` and exports it over eBGP. In that mode the bench
//! also prints the time from BIRD's last UPDATE to all routes in the FIB, the part of
//! nva's resident memory that is the mmapped BPF FIB arrays, BIRD's resident memory for
//! the same table, and checks that every route BIRD exported is in nva's RIB and FIB.
//!
//! `nva-bench-bgp [--quick] [--bird [--counts-only]] [--kernel] [--verbose]` (as root; `cargo xtask
//! bench-bgp` runs it).
use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nva::bgp::{Command, NextHop, Origin, PathAttrs, PeerConfig, Speaker, codec::AsPath};
use nva_testkit::Rng;
use nva_tests::{Netns, NvaProcess, daemons::Bird, require_root, veth};

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
/// Issue 13's enterprise mix: 3% of the IPv4 table longer than /24 (/32 hosts, /28-/30
/// links), inside about 30,000 distinct /24s.
const V4_LONG_MIX: &[(u8, u32)] = &[(32, 40), (30, 30), (29, 15), (28, 15)];
const V4_LONG_PER_MILLE: u64 = 30;
const V4_LONG_BLOCKS: usize = 30_000;

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
    // Public-looking space: 1.0.0.0 - 223.255.255.255 minus 10/8 (nva's own) and
    // 127/8 (loopback: BIRD refuses such routes as bogus, and no real table has them).
    let public = |rng: &mut Rng| {
        let mut a = (rng.next_u64() as u32) % (223 << 24) + (1 << 24);
        if matches!(a >> 24, 10 | 127) {
            a ^= 1 << 28;
        }
        a
    };
    let blocks: Vec<u32> = (0..V4_LONG_BLOCKS).map(|_| public(rng) & !0xff).collect();
    let mut seen = HashSet::with_capacity(n);
    while seen.len() < n {
        let (a, len) = if rng.next_u64() % 1000 < V4_LONG_PER_MILLE {
            let block = blocks[rng.next_u64() as usize % blocks.len()];
            (
                block | (rng.next_u64() as u32 & 0xff),
                rng.pick(V4_LONG_MIX),
            )
        } else {
            (public(rng), rng.pick(V4_MIX))
        };
        let p = Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc();
        seen.insert(IpNet::V4(p));
    }
    seen.into_iter().collect()
}

fn prefixes_v6(n: usize, rng: &mut Rng) -> Vec<IpNet> {
    let mut seen = HashSet::with_capacity(n);
    while seen.len() < n {
        let len = rng.pick(V6_MIX);
        let hi = 0x2000_0000_0000_0000u64 | (rng.next_u64() >> 4);
        let a = Ipv6Addr::from(((hi as u128) << 64) | rng.next_u64() as u128);
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

/// CPU time (user + system) `pid` has used so far, seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// Resident memory of `pid` in the mappings of BPF maps (the mmapped FIB arrays), MiB.
fn bpf_map_rss_mib(pid: u32) -> f64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_bpf = false;
    let mut kb = 0u64;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            // A mapping's header: "start-end perms offset dev inode [name]".
            Some(first) if first.contains('-') && !first.ends_with(':') => {
                in_bpf = line.contains("anon_inode:bpf-map");
            }
            Some("Rss:") if in_bpf => {
                kb += f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
            _ => {}
        }
    }
    kb as f64 / 1024.0
}

struct Opts {
    quick: bool,
    /// Also mirror the routes into the kernel and time that.
    kernel: bool,
    /// The feeder is BIRD 2 instead of nva's own speaker.
    bird: bool,
    verbose: bool,
    /// With `--bird`: check counts and a sample only, not the full route list (which
    /// takes nva tens of seconds on a full table).
    counts_only: bool,
}

fn nva_config(kernel: bool) -> String {
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
hold_time = 240
connect_retry = 1
"#;
    config.replace("KERNEL", if kernel { "true" } else { "false" })
}

fn main() -> Result<()> {
    if !require_root("nva-bench-bgp") {
        bail!("run as root");
    }
    let has = |flag: &str| std::env::args().any(|a| a == flag);
    let opts = Opts {
        quick: has("--quick"),
        kernel: has("--kernel"),
        bird: has("--bird"),
        verbose: has("--verbose"),
        counts_only: has("--counts-only"),
    };
    let (n4, n6) = if opts.quick {
        (100_000, 20_000)
    } else {
        (1_000_000, 200_000)
    };
    let mut rng = Rng::xorshift(0x5eed_1234_abcd_ef01);
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

    println!(
        "## BGP full-table feed ({} IPv4 + {} IPv6 prefixes, feeder: {})",
        n4,
        n6,
        if opts.bird { "BIRD 2" } else { "nva's speaker" }
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    let (nva, _bird) = if opts.bird {
        let (nva, bird) = feed_bird(&opts, &nva_ns, &feeder, &v4, &v6)?;
        (nva, Some(bird))
    } else {
        (feed_speaker(&opts, &nva_ns, &feeder, &v4, &v6)?, None)
    };
    finish(&opts, nva, &nva_ns)
}

/// Feeds the table from nva's own BGP speaker in `feeder`; returns when every route is
/// in nva's FIB, after printing the figures.
fn feed_speaker(
    opts: &Opts,
    nva_ns: &Netns,
    feeder: &Netns,
    v4: &[IpNet],
    v6: &[IpNet],
) -> Result<NvaProcess> {
    let (n4, n6) = (v4.len(), v6.len());
    let nva = NvaProcess::start(nva_ns, &nva_config(opts.kernel))?;
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
                tx.send(cmd).unwrap();
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
    let last = wait_for_fib(&nva, want, start)?;
    let converge = start.elapsed();
    let kernel_time = if opts.kernel {
        // IPv4 routes of nva's protocol in the kernel (one per line, but for the
        // indented members of a multipath route).
        loop {
            let n = nva_ns
                .exec_ok(&["ip", "-4", "route", "show", "proto", "250"])?
                .lines()
                .filter(|l| !l.starts_with(char::is_whitespace))
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
    if let Some(t) = kernel_time {
        println!(
            "| time until the kernel has every IPv4 route (bgp.kernel_routes) | {:.2} s |",
            t.as_secs_f64()
        );
    }
    Ok(nva)
}

/// Polls `nva status` until it reports `want` (IPv4, IPv6) routes installed; returns the
/// last counts.
fn wait_for_fib(nva: &NvaProcess, want: (u64, u64), start: Instant) -> Result<(u64, u64)> {
    loop {
        let r = routes(nva);
        if r.0 >= want.0 && r.1 >= want.1 {
            return Ok(r);
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("nva did not converge: {r:?} of {want:?}\n{}", nva.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// BIRD's configuration: the table in two `protocol static`s (blackhole routes, from
/// included files), exported over eBGP to nva with the AS path of the speaker feed.
/// The session starts disabled: `birdc enable nva` once BIRD holds the table.
fn bird_config(dir: &std::path::Path) -> String {
    format!(
        r#"
router id 10.0.250.2;
log "{dir}/bird.events" {{ info, warning, error, fatal }};
protocol device {{ }}
protocol static s4 {{
    ipv4;
    include "{dir}/routes4.conf";
}}
protocol static s6 {{
    ipv6;
    include "{dir}/routes6.conf";
}}
protocol bgp nva {{
    disabled;
    local 10.0.250.2 as 65100;
    neighbor 10.0.250.1 as 65001;
    hold time 240;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 {{
        import none;
        export filter {{ bgp_path.prepend(64513); bgp_path.prepend(64512); accept; }};
        next hop self;
    }};
    ipv6 {{
        import none;
        export filter {{ bgp_path.prepend(64512); accept; }};
        next hop address fd00:250::2;
    }};
}}
"#,
        dir = dir.display()
    )
}

/// `route P blackhole;` lines for BIRD's static protocol.
fn static_routes(prefixes: &[IpNet]) -> String {
    let mut s = String::with_capacity(prefixes.len() * 36);
    for p in prefixes {
        use std::fmt::Write;
        let _ = writeln!(s, "route {p} blackhole;");
    }
    s
}

/// Sum of the numbers before `word` in lines of BIRD's output that contain `marker`
/// (e.g. "Routes: 0 imported, 100000 exported, 0 preferred").
fn bird_sum(out: &str, marker: &str, word: &str) -> u64 {
    out.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|w| w.trim_end_matches(',') == word)?;
            f.get(i.checked_sub(1)?)?.parse::<u64>().ok()
        })
        .sum()
}

/// Milliseconds since BIRD's BGP socket last sent data (`ss` `lastsnd`).
fn bird_lastsnd_ms(feeder: &Netns) -> Option<u64> {
    let out = feeder
        .exec_ok(&[
            "ss",
            "-tinH",
            "state",
            "established",
            "( sport = :179 or dport = :179 )",
        ])
        .ok()?;
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("lastsnd:"))
        .and_then(|v| v.parse().ok())
}

/// Feeds the table from BIRD 2 in `feeder`; returns when every route is in nva's FIB,
/// after printing the figures and checking that nothing BIRD exported is missing.
fn feed_bird(
    opts: &Opts,
    nva_ns: &Netns,
    feeder: &Netns,
    v4: &[IpNet],
    v6: &[IpNet],
) -> Result<(NvaProcess, Bird)> {
    let (n4, n6) = (v4.len() as u64, v6.len() as u64);
    let t = Instant::now();
    let (r4, r6) = (static_routes(v4), static_routes(v6));
    let bird = Bird::start_with_files(
        feeder,
        bird_config,
        &[("routes4.conf", &r4), ("routes6.conf", &r6)],
    )?;
    drop((r4, r6));
    // BIRD holds the whole table before the session is enabled.
    if let Err(e) = bird.wait_for(
        &["show", "route", "count"],
        Duration::from_secs(300),
        |out| bird_sum(out, "in table", "of") >= n4 + n6,
    ) {
        let shown = bird.birdc(&["show", "route", "table", "all"]);
        let held: HashSet<IpNet> = shown
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let lost: Vec<&IpNet> = v4.iter().chain(v6).filter(|p| !held.contains(p)).collect();
        bail!(
            "{e}\nBIRD does not hold {} of the generated prefixes: {:?}\n{}",
            lost.len(),
            &lost[..lost.len().min(40)],
            std::fs::read_to_string(bird.dir().join("bird.events")).unwrap_or_default()
        );
    }
    let bird_rss_table = rss_mib(bird.pid());
    eprintln!(
        "BIRD holds {} routes after {:.1} s ({bird_rss_table:.0} MiB resident)",
        n4 + n6,
        t.elapsed().as_secs_f64()
    );

    let nva = NvaProcess::start(nva_ns, &nva_config(opts.kernel))?;
    let pid = nva.pid().context("nva pid")?;
    let (base4, base6) = routes(&nva);
    let rss_before = rss_mib(pid);
    let bgp_peer = |nva: &NvaProcess| -> serde_json::Value {
        nva.cli(&["bgp"]).unwrap_or_default()[0].clone()
    };

    let cpu_before = (cpu_secs(pid), cpu_secs(bird.pid()));
    let enabled = Instant::now();
    bird.birdc(&["enable", "nva"]);
    let established = loop {
        if bgp_peer(&nva)["state"] == "established" {
            break Instant::now();
        }
        if enabled.elapsed() > Duration::from_secs(30) {
            bail!(
                "the session to BIRD did not come up\nBIRD: {}\nnva:\n{}",
                bird.birdc(&["show", "protocols", "all", "nva"]),
                nva.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let want = (base4 + n4, base6 + n6);
    let installed = wait_for_fib(&nva, want, established)?;
    let in_fib = Instant::now();
    let converge = in_fib - established;
    // When BIRD's socket last sent (its last UPDATE or End-of-RIB), on our clock.
    let last_sent = bird_lastsnd_ms(feeder).map(|ms| Instant::now() - Duration::from_millis(ms));
    let cpu = (
        cpu_secs(pid) - cpu_before.0,
        cpu_secs(bird.pid()) - cpu_before.1,
    );
    let rss = rss_mib(pid);
    let fib_rss = bpf_map_rss_mib(pid);
    let bird_rss = rss_mib(bird.pid());
    let exported = bird_sum(
        &bird.birdc(&["show", "protocols", "all", "nva"]),
        "Routes:",
        "exported",
    );

    let total = (n4 + n6) as f64;
    println!(
        "| time from session Established to all routes in the FIB | {:.2} s |",
        converge.as_secs_f64()
    );
    match last_sent {
        Some(t) => println!(
            "| BIRD's last UPDATE sent after Established / all in the FIB after it | {:.2} s / {:.2} s |",
            t.saturating_duration_since(established).as_secs_f64(),
            in_fib.saturating_duration_since(t).as_secs_f64()
        ),
        None => println!("| BIRD's last UPDATE | not measured (no lastsnd from ss) |"),
    }
    println!(
        "| routes/s into the FIB (BIRD + session + RIB + FIB + maps) | {:.0} |",
        total / converge.as_secs_f64()
    );
    println!(
        "| CPU time used meanwhile: nva / BIRD | {:.2} s / {:.2} s |",
        cpu.0, cpu.1
    );
    println!("| nva resident memory before / after | {rss_before:.0} MiB / {rss:.0} MiB |");
    println!(
        "| of which mmapped BPF FIB arrays / nva minus those | {fib_rss:.0} MiB / {:.0} MiB |",
        rss - fib_rss
    );
    println!(
        "| BIRD resident memory with the table: before the session / after exporting | {bird_rss_table:.0} MiB / {bird_rss:.0} MiB |"
    );
    println!(
        "| routes installed (IPv4, IPv6) | {} / {} |",
        installed.0, installed.1
    );

    check_complete(&nva, &bird, v4, v6, exported, !opts.counts_only)?;
    Ok((nva, bird))
}

/// Every route BIRD exported is in nva's RIB (the peer's accepted count), in nva's FIB
/// (`nva routes`, source bgp) and, for a sample, in the data plane's own tables.
fn check_complete(
    nva: &NvaProcess,
    bird: &Bird,
    v4: &[IpNet],
    v6: &[IpNet],
    exported: u64,
    list: bool,
) -> Result<()> {
    let n = (v4.len() + v6.len()) as u64;
    let peer = nva.cli(&["bgp"])?[0].clone();
    let (received, accepted) = (
        peer["received"].as_u64().unwrap_or(0),
        peer["accepted"].as_u64().unwrap_or(0),
    );
    let status = nva.cli(&["status"])?;
    let uninstalled = status["routes"]["uninstalled"].as_u64().unwrap_or(0);
    // The control socket directly: the CLI gives up after 10 s without an answer, and
    // listing a full table takes longer.
    let (mut in_fib, mut missing, mut list_time) = (HashSet::new(), Vec::new(), None);
    if list {
        let t = Instant::now();
        let routes = control_request(nva, "routes")?;
        list_time = Some(t.elapsed());
        in_fib = routes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["source"] == "bgp")
            .filter_map(|r| r["prefix"].as_str()?.parse::<IpNet>().ok())
            .collect();
        missing = v4
            .iter()
            .chain(v6)
            .filter(|p| !in_fib.contains(p))
            .collect();
    }
    // A sample looked up in the data plane's maps (`nva routes ADDR`: "dataplane").
    let mut rng = Rng::xorshift(0x00c0_ffee_1234_5678);
    let mut not_in_maps = Vec::new();
    for _ in 0..200 {
        let all = v4.len() + v6.len();
        let i = (rng.next_u64() % all as u64) as usize;
        let p = if i < v4.len() {
            v4[i]
        } else {
            v6[i - v4.len()]
        };
        let r = nva.cli(&["routes", &p.network().to_string()])?;
        if r["dataplane"].is_null() {
            not_in_maps.push(p);
        }
    }
    let (v4_fib, v6_fib) = (
        status["routes"]["ipv4"].as_u64().unwrap_or(0),
        status["routes"]["ipv6"].as_u64().unwrap_or(0),
    );
    println!(
        "| BIRD exported / nva received, accepted, installed (all sources: IPv4 + IPv6), uninstalled | {exported} / {received}, {accepted}, {v4_fib} + {v6_fib}, {uninstalled} |"
    );
    if let Some(t) = list_time {
        println!(
            "| `nva routes --json` (every route) answered after / BGP routes in it | {:.1} s / {} |",
            t.as_secs_f64(),
            in_fib.len()
        );
    }
    println!(
        "| generated prefixes missing from nva's FIB; of 200 sampled, missing from the maps | {} ; {} |",
        missing.len(),
        not_in_maps.len()
    );
    if exported != n || accepted != n || !missing.is_empty() || !not_in_maps.is_empty() {
        bail!(
            "routes lost: BIRD exported {exported} of {n}, nva accepted {accepted}, {} missing from the FIB (first: {:?}), {} of the sample missing from the maps ({:?})\nBIRD: {}",
            missing.len(),
            &missing[..missing.len().min(10)],
            not_in_maps.len(),
            not_in_maps,
            bird.birdc(&["show", "protocols", "all", "nva"])
        );
    }
    Ok(())
}

/// One request on nva's control socket, without a time limit; the reply's data.
fn control_request(nva: &NvaProcess, cmd: &str) -> Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(nva.socket())?;
    writeln!(stream, "{}", serde_json::json!({ "cmd": cmd }))?;
    let mut reply = String::new();
    std::io::BufReader::new(&stream).read_line(&mut reply)?;
    let mut reply: serde_json::Value = serde_json::from_str(&reply)?;
    if reply["ok"] != true {
        bail!("nva {cmd}: {}", reply["error"]);
    }
    Ok(reply["data"].take())
}

/// The FIB memory rows and the graceful stop, for both feeders.
fn finish(opts: &Opts, nva: NvaProcess, nva_ns: &Netns) -> Result<()> {
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
    // Graceful stop with the whole table: SIGTERM until exit, nva's kernel routes all
    // removed (health.drain_ms = 0 here: the drain is a configured wait, not work).
    let mut nva = nva;
    let t = Instant::now();
    let status = nva.stop_within(Duration::from_secs(120))?;
    let stop = t.elapsed();
    let left = nva_ns
        .exec_ok(&["ip", "route", "show", "proto", "250"])?
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .count()
        + nva_ns
            .exec_ok(&["ip", "-6", "route", "show", "proto", "250"])?
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .count();
    println!(
        "| graceful stop (SIGTERM) with the table: time to exit, nva kernel routes left | {:.2} s ({status}), {left} |",
        stop.as_secs_f64()
    );
    if opts.verbose {
        eprintln!("{}", nva.log());
    }
    Ok(())
}
