//! Program-only cost: ns per packet of nva's XDP program run by BPF_PROG_TEST_RUN,
//! against table size, plus the route install rate through `Fib::set_route`.
//!
//! Two figures per table:
//! - same frame repeated: BPF_PROG_TEST_RUN with repeat does not restore the frame
//!   between repetitions, so nva's TTL decrement accumulates: frames start with TTL (hop
//!   limit) 255 and each call repeats at most 250 times, so every repetition takes the
//!   full forwarding path (the forwarded counter is checked). Several frames (random
//!   destinations across the table) are averaged. Each is cache-hot while it repeats:
//!   the program's best case.
//! - cycling destinations: one run per call over thousands of frames to random
//!   destinations, so the trie walk is no longer cache-resident; the in-kernel timer's
//!   own cost per call (measured the same way with an empty XDP program) is subtracted.
use std::{net::IpAddr, sync::atomic::Ordering};

use anyhow::{Result, ensure};
use aya::programs::{ProgramFd, TestRun, TestRunOptions, Xdp};
use ipnet::IpNet;
use nva_common::reason;

use crate::{
    frames::{self, Udp},
    generator,
    live::INTERRUPTED,
    nva_dut::{FibKind, Install, NvaDut},
    object::{BenchObject, CYCLE, FWD, PASS},
    routes,
    topology::{DUT_MAC, Dut, GEN_MAC, GEN_V4, GEN_V6},
};

/// Repetitions per call (TTL 255 leaves 254 forwarding passes).
const REPEAT: u32 = 250;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

#[derive(Clone, Copy)]
pub struct Params {
    /// Frames of the repeated figure, and calls of REPEAT runs per frame.
    pub frames: usize,
    pub calls: usize,
    /// Frames of the cycling figure.
    pub cycle: usize,
    pub rounds: usize,
}

pub struct ProgCost {
    /// The reference DUT (the minimal forwarder, no lookup) instead of nva.
    pub reference: bool,
    pub ipv6: bool,
    pub fib: FibKind,
    pub routes: usize,
    pub install: Install,
    /// Mean ns per packet, same frame repeated, one value per round.
    pub ns: Vec<f64>,
    /// Mean ns per packet, cycling destinations, one value per round.
    pub cycling_ns: Vec<f64>,
    /// Share of runs counted as forwarded (should be 1.0).
    pub forwarded: f64,
    /// The FIB's blocks (DXR: range cells) in use, and its kernel memory in bytes.
    pub fib_use: (Option<usize>, u64),
}

fn frames_to(dsts: &[IpAddr], seed: u64) -> Vec<Vec<u8>> {
    let mut rng = nva_testkit::Rng::new(seed ^ 0xf00d);
    dsts.iter()
        .map(|d| {
            let u = Udp {
                dmac: DUT_MAC,
                smac: GEN_MAC,
                src: if d.is_ipv6() {
                    IpAddr::V6(GEN_V6)
                } else {
                    IpAddr::V4(GEN_V4)
                },
                dst: *d,
                sport: 1024 + rng.below(30000) as u16,
                dport: 9,
                ttl: 255,
            };
            frames::udp(&u, 64)
        })
        .collect()
}

/// Runs `frame` `calls` times with `repeat`; returns the mean ns per run and the action.
fn time(prog: &Xdp, frame: &[u8], ingress: u32, repeat: u32, calls: usize) -> Result<(f64, u32)> {
    let mut ctx = Vec::new();
    for v in [0u32, frame.len() as u32, 0, ingress, 0, 0] {
        ctx.extend_from_slice(&v.to_ne_bytes());
    }
    let (mut sum, mut action) = (0u64, 0);
    for _ in 0..calls {
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            ..Default::default()
        };
        let r = prog.test_run(opts)?;
        sum += r.duration.as_nanos() as u64;
        action = r.return_value;
    }
    Ok((sum as f64 / calls as f64, action))
}

/// Builds one nva data plane per FIB structure in `fibs` in `dut`, each with `table`,
/// then times their programs, the structures interleaved round by round (the machine's
/// speed drifts: compared side by side, not one after the other).
pub fn measure(
    dut: &Dut,
    helpers: &mut BenchObject,
    table: &[IpNet],
    fibs: &[FibKind],
    p: &Params,
    seed: u64,
) -> Result<Vec<ProgCost>> {
    let ipv6 = table[0].addr().is_ipv6();
    let mut duts = Vec::new();
    for &fib in fibs {
        let mut nva = NvaDut::load(dut, fib, &crate::live::features(table.len() > 1))?;
        let install = nva.install(table)?;
        let fib_use = nva
            .fib
            .dataplane()
            .fib_memory()
            .into_iter()
            .find(|m| m.ipv6 == ipv6 && m.class == nva_common::CLASS_NORTH_SOUTH)
            .map_or((None, 0), |m| (m.blocks.map(|b| b.0), m.kernel_bytes));
        let before = nva.fib.dataplane().counters(1)?[reason::FORWARDED as usize].packets;
        let cost = ProgCost {
            reference: false,
            ipv6,
            fib,
            routes: table.len(),
            install,
            ns: Vec::new(),
            cycling_ns: Vec::new(),
            forwarded: 0.0,
            fib_use,
        };
        duts.push((nva, cost, before));
    }
    let hot = frames_to(&routes::destinations(table, p.frames, seed).0, seed);
    let one = Params { rounds: 1, ..*p };
    for _ in 0..p.rounds {
        for (nva, cost, _) in duts.iter_mut() {
            // Attached (to the idle ingress), the program stays in the kernel's XDP
            // dispatcher; otherwise every test run with repeat > 1 rebuilds the
            // dispatcher (two synchronize_rcu calls, outside the timing but slow).
            nva.attach(dut)?;
            let prog = nva.fib.dataplane().program()?;
            cost.ns.extend(repeated(dut, prog, &hot, &one)?);
            cost.cycling_ns.extend(cycling(
                dut,
                helpers,
                prog.fd()?,
                table,
                ipv6,
                &one,
                seed + 1,
            )?);
            nva.detach();
        }
    }
    let runs = p.rounds * (hot.len() * p.calls * REPEAT as usize + CYCLE_REPEAT as usize);
    let mut out = Vec::new();
    for (nva, mut cost, before) in duts {
        let after = nva.fib.dataplane().counters(1)?[reason::FORWARDED as usize].packets;
        cost.forwarded = (after - before) as f64 / runs as f64;
        out.push(cost);
    }
    Ok(out)
}

/// Same frame repeated: ns per run of `prog` per round (mean over the frames).
fn repeated(dut: &Dut, prog: &Xdp, frames: &[Vec<u8>], p: &Params) -> Result<Vec<f64>> {
    dut.ns.run(|| {
        let mut ns = Vec::new();
        for _ in 0..p.rounds {
            let mut total = 0.0;
            for f in frames {
                ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted");
                let (t, action) = time(prog, f, dut.ingress, REPEAT, p.calls)?;
                ensure!(
                    action == XDP_REDIRECT,
                    "XDP action {action} (expected redirect)"
                );
                total += t;
            }
            ns.push(total / frames.len() as f64);
        }
        Ok(ns)
    })
}

/// Packets per cycling run.
const CYCLE_REPEAT: u32 = 1 << 20;

/// A new destination per packet (drawn from `table`, `p.cycle` of them): per round, ns
/// per packet of `bench_cycle` tail-calling `prog` minus that of it tail-calling an
/// empty program (the frame writing's own cost).
fn cycling(
    dut: &Dut,
    helpers: &mut BenchObject,
    prog: &ProgramFd,
    table: &[IpNet],
    ipv6: bool,
    p: &Params,
    seed: u64,
) -> Result<Vec<f64>> {
    let dsts = routes::destinations(table, p.cycle, seed).0;
    let frame = generator::configure(helpers, ipv6, 64, 1024, &dsts)?;
    let empty = helpers.program(PASS)?.fd()?.try_clone()?;
    let mut out = Vec::new();
    for _ in 0..p.rounds {
        let mut t = [0.0; 2];
        for (i, (target, expected)) in [(prog, XDP_REDIRECT), (&empty, XDP_PASS)]
            .into_iter()
            .enumerate()
        {
            ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted");
            helpers.set_cycle_target(target)?;
            let cycle = helpers.program(CYCLE)?;
            let (ns, action) = dut
                .ns
                .run(|| time(cycle, &frame, dut.ingress, CYCLE_REPEAT, 1))?;
            ensure!(action == expected, "cycling: XDP action {action}");
            t[i] = ns;
        }
        out.push(t[0] - t[1]);
    }
    Ok(out)
}

/// The same two figures for the reference DUT, the minimal forwarder with no lookup
/// (`bench_fwd`), over the DUT's egress ports, to the 1-route table's destinations.
pub fn reference(
    dut: &Dut,
    helpers: &mut BenchObject,
    ipv6: bool,
    p: &Params,
    seed: u64,
) -> Result<ProgCost> {
    let ports: Vec<_> = dut
        .egress
        .iter()
        .map(|e| (e.ifindex, e.mac, e.sink_mac))
        .collect();
    helpers.set_forwarder(&dut.ns, &ports)?;
    let table = [if ipv6 {
        IpNet::V6(routes::single_v6())
    } else {
        IpNet::V4(routes::single_v4())
    }];
    let hot = frames_to(&routes::destinations(&table, p.frames, seed).0, seed);
    // Attached for the same reason as nva's program (see `measure`).
    let attached = helpers.attach(FWD, &dut.ns, "d0")?;
    let fwd = helpers.program(FWD)?.fd()?.try_clone()?;
    let ns = repeated(dut, helpers.program(FWD)?, &hot, p)?;
    let cycling_ns = cycling(dut, helpers, &fwd, &table, ipv6, p, seed + 1)?;
    drop(attached);
    Ok(ProgCost {
        reference: true,
        ipv6,
        fib: FibKind::Trie,
        routes: 0,
        install: Install::default(),
        ns,
        cycling_ns,
        forwarded: 1.0,
        fib_use: (None, 0),
    })
}

/// What east-west / north-south separation and segmentation cost per packet: the same
/// forwarded 64-byte IPv4 frame timed (same frame repeated) with
/// - no east-west prefixes (the class lookup misses; the packet is north-south),
/// - the default east-west prefixes and an east-west destination,
/// - the same plus segment enforcement (source and destination in different segments,
///   an allowed pair).
///
/// Returns (configuration, ns per packet) for each.
pub fn separation_cost(dut: &Dut, p: &Params) -> Result<Vec<(&'static str, f64)>> {
    use nva::fib::{DEFAULT_EAST_WEST, Source, Table, Target};
    use nva_common::{SET_SEGMENTS, Settings};

    let mut nva = NvaDut::load(dut, FibKind::Trie, &crate::nva_dut::Features::none())?;
    let ns_dst: IpAddr = "198.18.0.1".parse().expect("addr");
    let ew_dst: IpAddr = "10.77.0.1".parse().expect("addr");
    let hops = Target::Forward(nva.nh_v4.as_slice().into());
    let fib = &mut nva.fib;
    fib.set_route_in(
        Table::NorthSouth,
        "198.18.0.0/15".parse()?,
        Source::Static,
        hops.clone(),
    )?;
    fib.set_route_in(
        Table::EastWest,
        "10.77.0.0/16".parse()?,
        Source::Static,
        hops,
    )?;
    nva.attach(dut)?;
    let mut out = Vec::new();
    for (name, dst) in [
        ("no east-west prefixes (north-south)", ns_dst),
        ("separation: east-west destination", ew_dst),
        ("separation + segments (allowed pair)", ew_dst),
    ] {
        if name.starts_with("separation:") {
            let ew: Vec<IpNet> = DEFAULT_EAST_WEST
                .iter()
                .map(|s| s.parse().expect("prefix"))
                .collect();
            nva.fib.set_east_west(&ew)?;
        }
        if name.contains("segments") {
            let dp = nva.fib.dataplane_mut();
            dp.set_segment_prefix(&IpNet::from(IpAddr::V4(GEN_V4)), Some(1))?;
            dp.set_segment_prefix(&"10.77.0.0/16".parse()?, Some(2))?;
            // Some other pair is denied, so the data plane enforces segments.
            dp.set_segment_policy(3, 4, true)?;
            dp.set_settings(Settings {
                hash_seed: 0x5eed_1234,
                flags: SET_SEGMENTS,
            })?;
        }
        let frames = frames_to(&vec![dst; p.frames.max(4)], 7);
        let prog = nva.fib.dataplane().program()?;
        let mut per_round = Vec::new();
        dut.ns.run(|| -> Result<()> {
            for _ in 0..p.rounds {
                let mut total = 0.0;
                for f in &frames {
                    let (t, action) = time(prog, f, dut.ingress, REPEAT, p.calls)?;
                    ensure!(
                        action == XDP_REDIRECT,
                        "XDP action {action} (expected redirect)"
                    );
                    total += t;
                }
                per_round.push(total / frames.len() as f64);
            }
            Ok(())
        })?;
        per_round.sort_by(f64::total_cmp);
        out.push((name, per_round[per_round.len() / 2]));
    }
    nva.detach();
    Ok(out)
}
