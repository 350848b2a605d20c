//! nva's throughput benchmarks (issue 6). Needs root; builds its own namespaces
//! (the test kit's, `nvat<pid>-*`), which are deleted at the end, on error, and by the
//! next run if this one was killed. Traffic never leaves them.
//!
//! 1. Program-only cost of nva's XDP program (BPF_PROG_TEST_RUN with repeat) against
//!    table size, and the route install rate through `Fib::set_route`.
//! 2. Live forwarding: live-frames generator -> DUT -> XDP sink over veth; the DUT is
//!    nva or Linux kernel forwarding with the same routes and ECMP, 1 route and a full
//!    table, 64 B and 1500 B, IPv4 and IPv6, modes interleaved over several runs.
//! 3. Loss while routes churn.
//!
//! `--generator pktgen` generates with the kernel's pktgen instead of live frames (the
//! 1-route modes), or, with `--dev`, sends from a NIC of this machine to a DUT elsewhere
//! (an nva on another VM) and reports what pktgen sent (`external`).
//!
//! `cargo xtask bench [-- --quick]`; `--help` lists the options.
mod frames;
mod generator;
mod linux_dut;
mod live;
mod machine;
mod nva_dut;
mod object;
mod pktgen;
mod progcost;
mod report;
mod routes;
mod svg;
mod topology;

use std::{net::IpAddr, path::PathBuf, sync::atomic::Ordering};

use anyhow::{Context, Result, bail, ensure};
use ipnet::IpNet;

use crate::{
    live::{Generator, INTERRUPTED},
    nva_dut::FibKind,
    report::Report,
    topology::Topology,
};

const HELP: &str = "nva-bench [options]
  --quick             short run (1 run of 1 s, tables up to 100k/20k)
  --runs N            runs per live cell (default 3)
  --secs S            seconds per live measurement (default 5)
  --cpu N             CPU for the generator (and so the whole path on veth; default last)
  --flows N           flows (UDP source ports), a power of two (default 1024)
  --nexthops N        ECMP next hops / egress veths per DUT (default 4)
  --sizes A,B         frame sizes (default 64,1500)
  --prog-v4 A,B,..    table sizes for the program-only cost (default 1,1000,100000,1000000)
  --prog-v6 A,B,..    (default 1,1000,100000,200000)
  --full-v4 N         full IPv4 table for live forwarding (default 1000000)
  --full-v6 N         full IPv6 table for live forwarding (default 200000)
  --dsts N            destinations the generator spreads over (power of two, default 65536)
  --hot-dsts N        destinations of the 'hot' full-table modes (default 256)
  --only prog|live    run one part only
  --no-churn          skip the route churn measurement
  --no-dir24          skip nva with its fast FIBs: IPv4 as DIR-24-8, IPv6 as the
                      multibit trie (LoadOptions::dir24_ipv4, multibit_ipv6)
  --no-trie           program-only cost: skip nva with the LPM-trie FIBs
  --out DIR           where results.md and the SVG plots go
                      (default bench/results; /tmp/nva-bench-quick with --quick)
  --seed N            seed of tables and destinations (default 1)
  --generator G       live-frames (default: BPF_PROG_TEST_RUN with live frames) or pktgen
                      (the kernel's pktgen; needs /proc/net/pktgen: modprobe pktgen). With
                      pktgen the live part runs the 1-route modes (pktgen draws
                      destinations from a range, not from a table) and no churn
 pktgen toward a DUT on another machine (--generator pktgen --dev IF ...): no namespaces,
 no DUT of its own; sends --sizes frames of --flows flows and prints what pktgen sent
  --dev IF            the NIC to send from
  --dst-mac MAC       the DUT's MAC on that link
  --src ADDR          source address
  --dst A|A-B|PREFIX  destinations (IPv4: in turn, dst_min..dst_max; IPv6: random hosts
                      of the range, dst6_min/dst6_max)
  --udp-dst PORT      UDP destination port (default 9)
  --threads N         pktgen threads, one per CPU (kpktgend_0..N-1; default every CPU)
  --count N           packets per thread (default 0: run --secs seconds)
  --delay NS          nanoseconds between a thread's packets (default 0: full speed)
  --burst N           packets per transmit call (default 1)
  --flowlen N         pktgen's own flows: --flows concurrent flows of N packets each";

/// pktgen toward a DUT elsewhere (`--generator pktgen --dev IF`).
struct External {
    dev: Option<String>,
    dst_mac: Option<String>,
    src: Option<IpAddr>,
    dst: Option<(IpAddr, IpAddr)>,
    udp_dst: u16,
    threads: Option<usize>,
    count: u64,
    delay_ns: u64,
    burst: u32,
    flowlen: Option<u32>,
}

/// `A`, `A-B` or a prefix: the first and last destination.
fn dst_range(s: &str) -> Result<(IpAddr, IpAddr)> {
    if let Some((a, b)) = s.split_once('-') {
        let (a, b): (IpAddr, IpAddr) = (a.trim().parse()?, b.trim().parse()?);
        ensure!(
            a.is_ipv6() == b.is_ipv6() && a <= b,
            "--dst {s}: A-B of one family, A <= B"
        );
        return Ok((a, b));
    }
    if s.contains('/') {
        let n: IpNet = s.parse().with_context(|| format!("--dst {s}"))?;
        return Ok((n.network(), n.broadcast()));
    }
    let a: IpAddr = s.parse().with_context(|| format!("--dst {s}"))?;
    Ok((a, a))
}

struct Opts {
    runs: usize,
    secs: f64,
    warmup: f64,
    cpu: usize,
    flows: u32,
    nexthops: usize,
    sizes: Vec<usize>,
    prog_v4: Vec<usize>,
    prog_v6: Vec<usize>,
    full_v4: usize,
    full_v6: usize,
    dsts: usize,
    hot_dsts: usize,
    prog: bool,
    live: bool,
    churn: bool,
    fast: bool,
    /// Program-only cost with the LPM tries too (`--no-trie` leaves them out).
    trie: bool,
    quick: bool,
    /// None: bench/results (the temp dir's nva-bench-quick for --quick).
    out: Option<PathBuf>,
    seed: u64,
    prog_params: progcost::Params,
    generator: Generator,
    ext: External,
}

fn list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|v| v.trim().parse().context("bad number"))
        .collect()
}

fn parse() -> Result<Opts> {
    // SAFETY: sysconf has no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let mut o = Opts {
        runs: 3,
        secs: 5.0,
        warmup: 0.5,
        cpu: ncpu - 1,
        flows: 1024,
        nexthops: 4,
        sizes: vec![64, 1500],
        prog_v4: vec![1, 1000, 100_000, 1_000_000],
        prog_v6: vec![1, 1000, 100_000, 200_000],
        full_v4: 1_000_000,
        full_v6: 200_000,
        dsts: 65536,
        hot_dsts: 256,
        prog: true,
        live: true,
        churn: true,
        fast: true,
        trie: true,
        quick: false,
        out: None,
        seed: 1,
        prog_params: progcost::Params {
            frames: 64,
            calls: 40,
            cycle: 65536,
            rounds: 3,
        },
        generator: Generator::LiveFrames,
        ext: External {
            dev: None,
            dst_mac: None,
            src: None,
            dst: None,
            udp_dst: 9,
            threads: None,
            count: 0,
            delay_ns: 0,
            burst: 1,
            flowlen: None,
        },
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut quick = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                quick = true;
                o.runs = 1;
                o.secs = 1.0;
                o.warmup = 0.2;
                o.prog_v4 = vec![1, 1000, 100_000];
                o.prog_v6 = vec![1, 1000, 20_000];
                o.full_v4 = 100_000;
                o.full_v6 = 20_000;
                o.prog_params = progcost::Params {
                    frames: 16,
                    calls: 10,
                    cycle: 1024,
                    rounds: 1,
                };
            }
            "--runs" => o.runs = val()?.parse()?,
            "--secs" => o.secs = val()?.parse()?,
            "--cpu" => o.cpu = val()?.parse()?,
            "--flows" => o.flows = val()?.parse()?,
            "--nexthops" => o.nexthops = val()?.parse()?,
            "--sizes" => o.sizes = list(val()?)?,
            "--prog-v4" => o.prog_v4 = list(val()?)?,
            "--prog-v6" => o.prog_v6 = list(val()?)?,
            "--full-v4" => o.full_v4 = val()?.parse()?,
            "--full-v6" => o.full_v6 = val()?.parse()?,
            "--dsts" => o.dsts = val()?.parse()?,
            "--hot-dsts" => o.hot_dsts = val()?.parse()?,
            "--only" => match val()?.as_str() {
                "prog" => o.live = false,
                "live" => o.prog = false,
                v => bail!("--only {v}: prog or live"),
            },
            "--no-churn" => o.churn = false,
            "--no-dir24" => o.fast = false,
            "--no-trie" => o.trie = false,
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--seed" => o.seed = val()?.parse()?,
            "--generator" => {
                o.generator = match val()?.as_str() {
                    "live-frames" => Generator::LiveFrames,
                    "pktgen" => Generator::Pktgen,
                    v => bail!("--generator {v}: live-frames or pktgen"),
                }
            }
            "--dev" => o.ext.dev = Some(val()?.clone()),
            "--dst-mac" => o.ext.dst_mac = Some(val()?.clone()),
            "--src" => o.ext.src = Some(val()?.parse().context("--src")?),
            "--dst" => o.ext.dst = Some(dst_range(val()?)?),
            "--udp-dst" => o.ext.udp_dst = val()?.parse()?,
            "--threads" => o.ext.threads = Some(val()?.parse()?),
            "--count" => o.ext.count = val()?.parse()?,
            "--delay" => o.ext.delay_ns = val()?.parse()?,
            "--burst" => o.ext.burst = val()?.parse()?,
            "--flowlen" => o.ext.flowlen = Some(val()?.parse()?),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a}\n{HELP}"),
        }
    }
    o.quick = quick;
    if o.ext.dev.is_some() && o.generator != Generator::Pktgen {
        bail!("--dev sends with pktgen toward another machine: add --generator pktgen");
    }
    if o.runs == 0 || o.nexthops == 0 || o.nexthops > 16 || o.cpu >= ncpu {
        bail!("bad --runs, --nexthops (1..16) or --cpu");
    }
    let pow2 = |n: usize| n.is_power_of_two() && n <= object::MAX_DSTS;
    if !pow2(o.dsts) || !pow2(o.hot_dsts) || o.hot_dsts > o.dsts {
        bail!(
            "--dsts and --hot-dsts: powers of two, hot <= dsts <= {}",
            object::MAX_DSTS
        );
    }
    Ok(o)
}

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_handlers() {
    generator::install_signal();
    // SAFETY: a zeroed sigaction with a valid handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

fn v4(t: Vec<ipnet::Ipv4Net>) -> Vec<IpNet> {
    t.into_iter().map(IpNet::V4).collect()
}

fn v6(t: Vec<ipnet::Ipv6Net>) -> Vec<IpNet> {
    t.into_iter().map(IpNet::V6).collect()
}

fn main() -> Result<()> {
    let mut o = parse()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("nva-bench creates network namespaces and loads XDP programs: run it as root");
    }
    if o.generator == Generator::Pktgen {
        pktgen::require()?;
    }
    install_handlers();
    if let Some(dev) = &o.ext.dev {
        return external(&o, dev);
    }
    nva_testkit::netns::cleanup_stale_namespaces();
    let mut m = machine::probe();
    let load_before = machine::loadavg();
    eprintln!(
        "nva-bench: {} x {}, kernel {}, load {load_before}",
        m.cores, m.cpu, m.kernel
    );
    if machine::load1() > 0.7 {
        eprintln!(
            "nva-bench: WARNING: the machine is busy (load {load_before}); figures will be low and noisy"
        );
    }
    if !m.pktgen {
        eprintln!(
            "nva-bench: kernel pktgen not available (no /proc/net/pktgen): using the XDP live-frames generator"
        );
    } else if o.generator == Generator::LiveFrames {
        eprintln!(
            "nva-bench: kernel pktgen available: using the XDP live-frames generator (--generator pktgen uses pktgen)"
        );
    }
    if !m.xdp_forward {
        eprintln!("nva-bench: xdp-forward (xdp-tools) not available: not benchmarked");
    }

    let topo = Topology::build(o.nexthops).context("building the topology")?;
    let mut prog = Vec::new();
    if o.prog {
        let mut helpers = object::BenchObject::load()?;
        for ipv6 in [false, true] {
            let r = progcost::reference(&topo.duts[0], &mut helpers, ipv6, &o.prog_params, o.seed)?;
            eprintln!(
                "nva-bench: program {} minimal forwarder (reference): {:.1} ns/packet repeated, {:.1} cycling",
                if ipv6 { "IPv6" } else { "IPv4" },
                report::stats(&r.ns).1,
                report::stats(&r.cycling_ns).1,
            );
            prog.push(r);
        }
        for (ipv6, list) in [(false, &o.prog_v4), (true, &o.prog_v6)] {
            let fibs: Vec<FibKind> = [FibKind::Trie, FibKind::Fast, FibKind::Dxr]
                .into_iter()
                .filter(|fib| match fib {
                    FibKind::Trie => o.trie,
                    FibKind::Fast => o.fast,
                    // DXR is IPv4 only (its IPv6 FIB is the multibit trie, as Fast's).
                    FibKind::Dxr => o.fast && !ipv6,
                })
                .collect();
            for &n in list.iter() {
                let table = if ipv6 {
                    v6(routes::table_v6(n, o.seed))
                } else {
                    v4(routes::table_v4(n, o.seed))
                };
                for p in progcost::measure(
                    &topo.duts[0],
                    &mut helpers,
                    &table,
                    &fibs,
                    &o.prog_params,
                    o.seed,
                )? {
                    eprintln!(
                        "nva-bench: program {} {} {} routes: {:.1} ns/packet repeated, {:.1} cycling (installed at {:.0} routes/s, {:.1}% forwarded; FIB {} blocks/cells in use, {:.1} MiB in the kernel)",
                        if ipv6 { "IPv6" } else { "IPv4" },
                        p.fib.name(ipv6),
                        n,
                        report::stats(&p.ns).1,
                        report::stats(&p.cycling_ns).1,
                        p.install.rate(),
                        100.0 * p.forwarded,
                        p.fib_use.0.map_or("-".into(), |n| n.to_string()),
                        p.fib_use.1 as f64 / (1 << 20) as f64,
                    );
                    prog.push(p);
                }
            }
        }
        for (name, ns) in progcost::separation_cost(&topo.duts[0], &o.prog_params)? {
            eprintln!("nva-bench: separation cost: {name}: {ns:.1} ns/packet");
            println!("| {name} | {ns:.1} ns/packet |");
        }
    }

    let (mut cells, mut installs, mut churn, mut mix) = (Vec::new(), None, None, Vec::new());
    if o.live && o.generator == Generator::Pktgen && o.churn {
        eprintln!(
            "nva-bench: pktgen: no churn measurement (it needs the full table's destinations)"
        );
        o.churn = false;
    }
    if o.live && o.generator == Generator::LiveFrames {
        let helpers = object::BenchObject::load()?;
        m.live_frames = Some(generator::live_frames_allowed(
            &helpers,
            &topo.gen_ns,
            topo.duts[0].gen_ifindex,
        )?);
        if m.live_frames == Some(false) {
            eprintln!(
                "nva-bench: this kernel refuses live-frames test runs (BPF_F_TEST_XDP_LIVE_FRAMES: EPERM){}; program-only figures only",
                if m.pktgen {
                    ": live forwarding needs --generator pktgen here"
                } else {
                    " and has no pktgen: live forwarding cannot be measured here"
                }
            );
        }
    }
    if o.live && m.live_frames != Some(false) {
        let small = [
            IpNet::V4(routes::single_v4()),
            IpNet::V6(routes::single_v6()),
        ];
        let mut full = v4(routes::table_v4(o.full_v4, o.seed));
        full.extend(v6(routes::table_v6(o.full_v6, o.seed)));
        for ipv6 in [false, true] {
            let t: Vec<IpNet> = full
                .iter()
                .copied()
                .filter(|p| p.addr().is_ipv6() == ipv6)
                .collect();
            let h: Vec<String> = routes::histogram(&t)
                .iter()
                .filter(|(_, share)| *share >= 1.0)
                .map(|(len, share)| format!("/{len} {share:.1}%"))
                .collect();
            mix.push(format!(
                "full {} table ({} routes, seed {}): {} (lengths under 1% not listed)",
                if ipv6 { "IPv6" } else { "IPv4" },
                t.len(),
                o.seed,
                h.join(", ")
            ));
        }
        let (mut live, inst) = live::Live::setup(&topo, [&small, &full], o.seed, o.fast)?;
        drop(full);
        let p = live::Params {
            runs: o.runs,
            secs: o.secs,
            warmup: o.warmup,
            sizes: o.sizes.clone(),
            flows: o.flows,
            cpu: o.cpu,
            hot_dsts: o.hot_dsts,
            dsts: o.dsts,
            generator: o.generator,
        };
        cells = live.run_all(&p, &[false, true])?;
        if o.churn {
            let mut c = vec![live.churn(&p, false, 64, live::Kind::Nva)?];
            if o.fast {
                c.push(live.churn(&p, false, 64, live::Kind::NvaFast)?);
            }
            churn = Some(c);
        }
        installs = Some(inst);
    }

    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let r = Report {
        machine: &m,
        command,
        load_before,
        load_after: machine::loadavg(),
        cpu: o.cpu,
        secs: o.secs,
        runs: o.runs,
        flows: o.flows,
        nexthops: o.nexthops,
        full_v4: o.full_v4,
        full_v6: o.full_v6,
        dsts: o.dsts,
        hot_dsts: o.hot_dsts,
        mix,
        prog: &prog,
        installs: installs.as_ref(),
        cells: &cells,
        churn: churn.as_deref(),
        generator: o.generator,
    };
    println!("{}", r.markdown());
    let results = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results");
    let out = o.out.clone().unwrap_or(if o.quick {
        std::env::temp_dir().join("nva-bench-quick")
    } else {
        results
    });
    for f in r.write(&out)? {
        eprintln!("nva-bench: wrote {f}");
    }
    Ok(())
}

/// pktgen out of `dev` toward a DUT on another machine, once per frame size: prints
/// pktgen's own figures per thread and in total (what the DUT received is counted there).
fn external(o: &Opts, dev: &str) -> Result<()> {
    let e = &o.ext;
    let (Some(dst_mac), Some(src), Some(dst)) = (&e.dst_mac, e.src, e.dst) else {
        bail!("--dev {dev}: --dst-mac, --src and --dst are needed");
    };
    // SAFETY: sysconf has no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let threads = e.threads.unwrap_or(ncpu);
    ensure!(
        (1..=ncpu).contains(&threads),
        "--threads {threads}: 1..{ncpu} (one per CPU)"
    );
    ensure!(
        o.flows >= 1 && o.flows <= 65536 - 1024,
        "--flows: 1..64512 UDP source ports"
    );
    let cpus: Vec<usize> = (0..threads).collect();
    println!("### pktgen toward an external DUT\n");
    println!(
        "- kernel {}, pktgen: {threads} thread(s) (CPUs {cpus:?}) out of {dev} to {dst_mac}; {src} -> {}..{}, UDP port {}, {} flows{}; {}; delay {} ns, burst {}",
        machine::probe().kernel,
        dst.0,
        dst.1,
        e.udp_dst,
        o.flows,
        e.flowlen
            .map(|l| format!(" (pktgen flows of {l} packets)"))
            .unwrap_or_default(),
        if e.count > 0 {
            format!("{} packets per thread", e.count)
        } else {
            format!("{} s", o.secs)
        },
        e.delay_ns,
        e.burst,
    );
    println!(
        "- command: `{}`\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("| frame | thread | packets | seconds | pps | errors |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &size in &o.sizes {
        let cfg = pktgen::Config {
            dev: dev.to_string(),
            cpus: cpus.clone(),
            dst_mac: dst_mac.clone(),
            src,
            dst,
            udp_dst: e.udp_dst,
            udp_src: (1024, (1024 + o.flows - 1) as u16),
            flows: e.flowlen.map(|l| (o.flows, l)),
            pkt_size: frames::frame_len(size),
            count: e.count,
            delay_ns: e.delay_ns,
            burst: e.burst,
            // The receivers may be sockets.
            udp_csum: true,
        };
        let ((), results) = pktgen::run(None, &cfg, e.count == 0, |_| {
            if e.count == 0 {
                let _ = live::sleep(o.secs);
            }
        })?;
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let (mut sent, mut pps, mut errors, mut usec) = (0, 0, 0, 0);
        for r in &results {
            println!(
                "| {size} B | {} | {} | {:.2} | {} | {} |",
                r.dev,
                r.sent,
                r.usec as f64 / 1e6,
                r.pps,
                r.errors
            );
            sent += r.sent;
            pps += r.pps;
            errors += r.errors;
            usec = usec.max(r.usec);
        }
        println!(
            "| {size} B | total | {sent} | {:.2} | {pps} | {errors} |",
            usec as f64 / 1e6
        );
        eprintln!(
            "nva-bench: pktgen {size} B: {sent} packets sent by {} thread(s) in {:.2} s, {pps} pps, {errors} errors",
            results.len(),
            usec as f64 / 1e6
        );
    }
    Ok(())
}
