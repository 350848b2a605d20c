//! Live forwarding: generator -> DUT -> sink over veth, DUT modes interleaved.
use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, bail, ensure};
use ipnet::IpNet;
use nva_common::reason;

mod churn;

use crate::{
    generator, linux_dut,
    nva_dut::{Features, FibKind, Install, NvaDut},
    object::{Attached, BenchObject, FWD, MAX_DSTS, PASS, SINK},
    pktgen, routes,
    topology::{DUT_MAC, GEN_V4, GEN_V6, Topology, mac_str},
};

/// Set by SIGINT/SIGTERM: measurements stop and everything is torn down.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// XDP_DROP at the DUT's ingress: the generator's own ceiling.
    Drop,
    /// The reference DUT: a minimal XDP forwarder with no lookup (`bench_fwd`).
    Minimal,
    Nva,
    /// nva with its fast FIBs: IPv4 as DIR-24-8, IPv6 as the multibit trie
    /// (`LoadOptions::dir24_ipv4`, `multibit_ipv6`).
    NvaFast,
    /// nva with IPv4 as DXR (IPv6 as the multibit trie: measured as NvaFast).
    NvaDxr,
    Linux,
}

impl Kind {
    pub fn is_nva(self) -> bool {
        matches!(self, Kind::Nva | Kind::NvaFast | Kind::NvaDxr)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    pub kind: Kind,
    /// false: the 1-route DUT, true: the full-table DUT.
    pub full: bool,
    /// Only the first `Params::hot_dsts` destinations (a cache-resident working set)
    /// instead of all of them.
    pub hot: bool,
}

const fn mode(kind: Kind, full: bool, hot: bool) -> Mode {
    Mode { kind, full, hot }
}

pub const MODES: [Mode; 12] = [
    mode(Kind::Drop, false, false),
    mode(Kind::Minimal, false, false),
    mode(Kind::Nva, false, false),
    mode(Kind::Linux, false, false),
    mode(Kind::Nva, true, false),
    mode(Kind::Linux, true, false),
    mode(Kind::Nva, true, true),
    mode(Kind::Linux, true, true),
    mode(Kind::NvaFast, true, false),
    mode(Kind::NvaFast, true, true),
    mode(Kind::NvaDxr, true, false),
    mode(Kind::NvaDxr, true, true),
];

#[derive(Clone, Debug)]
pub struct Sample {
    /// Frames per second received by the sinks (Drop: dropped at the DUT).
    pub pps: f64,
    /// Frames per second generated.
    pub gen_pps: f64,
    /// Frames generated and received in the window.
    pub frames: (u64, u64),
    /// Share of the frames per egress port (ECMP spread).
    pub spread: Vec<f64>,
    /// nva only: share of its ingress frames forwarded in XDP, and the most common
    /// other reason.
    pub xdp: Option<(f64, &'static str)>,
    /// 1-minute load average when the sample ended (this run itself adds about 1).
    pub load: f64,
}

pub struct Cell {
    pub ipv6: bool,
    pub size: usize,
    pub mode: Mode,
    pub samples: Vec<Sample>,
}

pub struct Params {
    pub runs: usize,
    pub secs: f64,
    pub warmup: f64,
    pub sizes: Vec<usize>,
    pub flows: u32,
    pub cpu: usize,
    /// Destinations of the hot modes (a power of two).
    pub hot_dsts: usize,
    /// Destinations of the other modes (a power of two, at most MAX_DSTS).
    pub dsts: usize,
    pub generator: Generator,
}

/// What sends the frames to the DUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// `bench_gen` by BPF_PROG_TEST_RUN with live frames (the default).
    LiveFrames,
    /// The kernel's pktgen in the generator namespace, one thread on `Params::cpu`. It
    /// draws destinations from a range, not from a table: the 1-route modes only.
    Pktgen,
}

/// The traffic of one measurement.
pub enum Traffic<'a> {
    /// The live-frames generator's frame (its template and destinations are set).
    Frame(&'a [u8]),
    /// pktgen's configuration.
    Pktgen(pktgen::Config),
}

/// pktgen toward DUT `k` of the topology: `size`-byte frames to `dsts` addresses from the
/// start of `route`, `flows` UDP source ports, full speed until stopped.
fn pktgen_config(route: IpNet, dsts: usize, k: usize, size: usize, p: &Params) -> pktgen::Config {
    let (src, dst) = match route {
        IpNet::V4(n) => {
            let first = u32::from(n.network());
            let last = first + (dsts as u32 - 1).min(!u32::from(n.netmask()));
            (
                IpAddr::V4(GEN_V4),
                (IpAddr::V4(first.into()), IpAddr::V4(last.into())),
            )
        }
        IpNet::V6(n) => {
            let first = u128::from(n.network());
            let last = first | (dsts as u128 - 1).min(!u128::from(n.netmask()));
            (
                IpAddr::V6(GEN_V6),
                (IpAddr::V6(first.into()), IpAddr::V6(last.into())),
            )
        }
    };
    pktgen::Config {
        dev: format!("g{k}"),
        cpus: vec![p.cpu],
        dst_mac: mac_str(&DUT_MAC),
        src,
        dst,
        udp_dst: 9,
        udp_src: (
            1024,
            1024 + (p.flows - 1).min(u16::MAX as u32 - 1024) as u16,
        ),
        flows: None,
        pkt_size: crate::frames::frame_len(size),
        count: 0,
        delay_ns: 0,
        // veth does not share skbs: no bursts, no clones.
        burst: 1,
        udp_csum: false,
    }
}

/// Route install figures for the full tables.
pub struct Installs {
    pub nva: Vec<(bool, Install)>,
    /// Per family, into the fast FIBs (IPv4 DIR-24-8, IPv6 multibit).
    pub nva_fast: Vec<(bool, Install)>,
    /// IPv4 into DXR.
    pub nva_dxr: Option<Install>,
    pub linux: Vec<(bool, Install)>,
}

pub struct Churn {
    /// nva with the LPM trie (`Kind::Nva`) or the fast FIBs (`Kind::NvaFast`).
    pub kind: Kind,
    pub base_pps: f64,
    pub base_loss: f64,
    pub churn_loss: f64,
    pub updates_per_sec: f64,
    pub pps: f64,
    pub routes: usize,
}

pub struct Live<'t> {
    topo: &'t Topology,
    obj: BenchObject,
    _sinks: Vec<Attached>,
    nva: Vec<NvaDut>,
    /// The full-table DUT's second nva, with the fast FIBs, and its third, with DXR.
    fast: Option<NvaDut>,
    dxr: Option<NvaDut>,
    /// Destinations per DUT and family (0: IPv4, 1: IPv6), and the routes they fall in.
    dsts: Vec<[Vec<IpAddr>; 2]>,
    dst_routes: Vec<[Vec<IpNet>; 2]>,
    /// Sink ifindex (in the sink netns) per DUT and egress port.
    sink_idx: Vec<Vec<u32>>,
}

pub fn sleep(secs: f64) -> Result<()> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    Ok(())
}

impl<'t> Live<'t> {
    /// Loads the helpers and both DUTs' tables (nva and Linux); `tables[k]` is DUT k's.
    pub fn setup(
        topo: &'t Topology,
        tables: [&[IpNet]; 2],
        seed: u64,
        with_fast: bool,
    ) -> Result<(Live<'t>, Installs)> {
        let mut obj = BenchObject::load()?;
        let mut sinks = Vec::new();
        for s in topo.sink_ifs() {
            sinks.push(obj.attach(SINK, &topo.sink, &s)?);
        }
        let mut installs = Installs {
            nva: vec![],
            nva_fast: Vec::new(),
            nva_dxr: None,
            linux: vec![],
        };
        let ports: Vec<_> = topo.duts[0]
            .egress
            .iter()
            .map(|e| (e.ifindex, e.mac, e.sink_mac))
            .collect();
        obj.set_forwarder(&topo.duts[0].ns, &ports)?;
        let (mut nva, mut dsts, mut dst_routes, mut sink_idx) = (vec![], vec![], vec![], vec![]);
        for (k, dut) in topo.duts.iter().enumerate() {
            let table = tables[k];
            let mut n = NvaDut::load(dut, FibKind::Trie, &features(k == 1))?;
            linux_dut::nexthops(dut)?;
            let mut d: [Vec<IpAddr>; 2] = Default::default();
            let mut r: [Vec<IpNet>; 2] = Default::default();
            for v6 in [false, true] {
                let fam: Vec<IpNet> = table
                    .iter()
                    .copied()
                    .filter(|p| p.addr().is_ipv6() == v6)
                    .collect();
                let i = n.install(&fam)?;
                let l = linux_dut::install(dut, &fam)?;
                if k == 1 {
                    installs.nva.push((v6, i));
                    installs.linux.push((v6, l));
                }
                (d[v6 as usize], r[v6 as usize]) =
                    routes::destinations(&fam, MAX_DSTS, seed + k as u64);
            }
            nva.push(n);
            dsts.push(d);
            dst_routes.push(r);
            sink_idx.push(
                (0..dut.egress.len())
                    .map(|i| topo.sink.ifindex(&format!("s{k}{i}")))
                    .collect::<Result<_>>()?,
            );
        }
        let (mut fast, mut dxr) = (None, None);
        if with_fast {
            let mut n = NvaDut::load(&topo.duts[1], FibKind::Dxr, &features(true))?;
            let t: Vec<IpNet> = tables[1]
                .iter()
                .copied()
                .filter(|p| p.addr().is_ipv4())
                .collect();
            installs.nva_dxr = Some(n.install(&t)?);
            dxr = Some(n);
            let mut n = NvaDut::load(&topo.duts[1], FibKind::Fast, &features(true))?;
            for ipv6 in [false, true] {
                let t: Vec<IpNet> = tables[1]
                    .iter()
                    .copied()
                    .filter(|p| p.addr().is_ipv6() == ipv6)
                    .collect();
                installs.nva_fast.push((ipv6, n.install(&t)?));
            }
            fast = Some(n);
        }
        let live = Live {
            topo,
            obj,
            _sinks: sinks,
            nva,
            fast,
            dxr,
            dsts,
            dst_routes,
            sink_idx,
        };
        Ok((live, installs))
    }

    fn attach(&mut self, mode: Mode) -> Result<Option<Attached>> {
        let k = mode.full as usize;
        let dut = &self.topo.duts[k];
        Ok(match mode.kind {
            Kind::Drop => Some(self.obj.attach(SINK, &dut.ns, "d0")?),
            Kind::Minimal => Some(self.obj.attach(FWD, &dut.ns, "d0")?),
            Kind::Linux => Some(self.obj.attach(PASS, &dut.ns, "d0")?),
            Kind::Nva | Kind::NvaFast | Kind::NvaDxr => {
                self.nva_of(mode)?.attach(dut)?;
                None
            }
        })
    }

    fn nva_of(&mut self, mode: Mode) -> Result<&mut NvaDut> {
        match mode.kind {
            Kind::NvaFast => self
                .fast
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("no DIR-24-8 DUT")),
            Kind::NvaDxr => self
                .dxr
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("no DXR DUT")),
            _ => Ok(&mut self.nva[mode.full as usize]),
        }
    }

    /// One measurement of `mode`.
    pub fn sample(&mut self, p: &Params, mode: Mode, ipv6: bool, size: usize) -> Result<Sample> {
        let k = mode.full as usize;
        let dsts = &self.dsts[k][ipv6 as usize];
        let dsts = &dsts[..if mode.hot { p.hot_dsts } else { p.dsts }];
        let frame;
        let traffic = match p.generator {
            Generator::LiveFrames => {
                frame = generator::configure(&mut self.obj, ipv6, size, p.flows, dsts)?;
                Traffic::Frame(&frame)
            }
            Generator::Pktgen => {
                ensure!(!mode.full, "pktgen: the 1-route modes only");
                let route = if ipv6 {
                    IpNet::V6(routes::single_v6())
                } else {
                    IpNet::V4(routes::single_v4())
                };
                Traffic::Pktgen(pktgen_config(route, dsts.len(), k, size, p))
            }
        };
        let guard = self.attach(mode)?;
        let before = self.nva_of(mode)?.fib.dataplane().counters(1)?;
        let res = measure(
            &self.obj,
            self.topo,
            &self.sink_idx[k],
            p,
            k,
            &traffic,
            |_| Ok(()),
        );
        drop(guard);
        if !mode.kind.is_nva() {
            return res.map(|(s, _)| s);
        }
        let nva = self.nva_of(mode)?;
        nva.detach();
        let after = nva.fib.dataplane().counters(1)?;
        let delta: Vec<u64> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.packets - b.packets)
            .collect();
        let total = delta.iter().sum::<u64>().max(1) as f64;
        let other = (0..delta.len())
            .filter(|r| *r != reason::FORWARDED as usize)
            .max_by_key(|r| delta[*r])
            .unwrap_or(0);
        let name = if delta[other] == 0 {
            "-"
        } else {
            reason::NAMES[other]
        };
        let (mut s, _) = res?;
        s.xdp = Some((delta[reason::FORWARDED as usize] as f64 / total, name));
        Ok(s)
    }

    /// All cells, modes interleaved within each run.
    pub fn run_all(&mut self, p: &Params, families: &[bool]) -> Result<Vec<Cell>> {
        let mut cells: Vec<Cell> = Vec::new();
        for &ipv6 in families {
            for &size in &p.sizes {
                for mode in MODES {
                    if mode.kind == Kind::NvaFast && self.fast.is_none() {
                        continue;
                    }
                    if mode.kind == Kind::NvaDxr && (self.dxr.is_none() || ipv6) {
                        continue;
                    }
                    if mode.full && p.generator == Generator::Pktgen {
                        continue;
                    }
                    cells.push(Cell {
                        ipv6,
                        size,
                        mode,
                        samples: vec![],
                    });
                }
            }
        }
        for run in 0..p.runs {
            for c in cells.iter_mut() {
                let s = self.sample(p, c.mode, c.ipv6, c.size)?;
                let xdp = match s.xdp {
                    Some((f, other)) => {
                        format!(", {:.1}% forwarded in XDP, else {other}", 100.0 * f)
                    }
                    None => String::new(),
                };
                eprintln!(
                    "nva-bench: run {} {} {:>4} B {:?}{}: {:.2} Mpps (generated {:.2}; frames generated {}, received {}){xdp}",
                    run + 1,
                    if c.ipv6 { "IPv6" } else { "IPv4" },
                    c.size,
                    c.mode.kind,
                    match (c.mode.full, c.mode.hot) {
                        (false, _) => " 1 route",
                        (true, false) => " full",
                        (true, true) => " full, hot destinations",
                    },
                    s.pps / 1e6,
                    s.gen_pps / 1e6,
                    s.frames.0,
                    s.frames.1,
                );
                c.samples.push(s);
            }
        }
        Ok(cells)
    }
}

/// All of nva's per-packet features on. The 1-route DUT's destination is east-west, in
/// a segment with a denied pair (the packets pass the check); the full tables are
/// north-south (the Internet), classified past the operator's private prefixes.
pub fn features(full: bool) -> Features {
    let net = |s: &str| -> IpNet { s.parse().expect("literal") };
    let (v4, v6) = (
        IpNet::V4(routes::single_v4()),
        IpNet::V6(routes::single_v6()),
    );
    let mut east_west = vec![net("10.0.0.0/8"), net("172.16.0.0/12"), net("fd00::/8")];
    if !full {
        east_west.extend([v4, v6]);
    }
    Features {
        east_west,
        segments: vec![
            (net("10.100.0.0/16"), 1),
            (net("fd00:100::/32"), 1),
            (v4, 2),
            (v6, 2),
            (net("10.250.0.0/16"), 3),
        ],
        deny: vec![(1, 3), (3, 2)],
    }
}

/// Runs the generator toward DUT `k` and measures; `during` runs on another thread
/// while the measurement window is open, until the flag it gets is set.
fn measure<T: Send>(
    obj: &BenchObject,
    topo: &Topology,
    sink_idx: &[u32],
    p: &Params,
    k: usize,
    traffic: &Traffic,
    during: impl FnOnce(&AtomicBool) -> Result<T> + Send,
) -> Result<(Sample, T)> {
    let dut = &topo.duts[k];
    let max = (40e6 * (p.warmup + p.secs + 5.0)) as u64;
    // `generated` counts the frames sent so far.
    let window = |generated: &mut dyn FnMut() -> Result<u64>| {
        let mut read = || -> Result<(Instant, u64, [u64; 64])> {
            Ok((Instant::now(), generated()?, obj.received()?))
        };
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| -> Result<(Sample, T)> {
            sleep(p.warmup)?;
            let (t0, g0, r0) = read()?;
            let worker = s.spawn(|| during(&stop));
            let slept = sleep(p.secs);
            let (t1, g1, r1) = read()?;
            stop.store(true, Ordering::SeqCst);
            let extra = worker
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
            slept?;
            let dt = (t1 - t0).as_secs_f64();
            let total: u64 = r1.iter().zip(&r0).map(|(a, b)| a - b).sum();
            let per: Vec<u64> = sink_idx
                .iter()
                .map(|i| r1[(*i & 63) as usize] - r0[(*i & 63) as usize])
                .collect();
            let fwd: u64 = per.iter().sum::<u64>().max(1);
            Ok((
                Sample {
                    pps: total as f64 / dt,
                    gen_pps: (g1 - g0) as f64 / dt,
                    frames: (g1 - g0, total),
                    spread: per.iter().map(|c| *c as f64 / fwd as f64).collect(),
                    xdp: None,
                    load: crate::machine::load1(),
                },
                extra,
            ))
        })
    };
    match traffic {
        Traffic::Frame(frame) => generator::run(
            obj,
            &topo.gen_ns,
            dut.gen_ifindex,
            p.cpu,
            frame,
            max,
            || window(&mut || obj.generated()),
        )?,
        Traffic::Pktgen(cfg) => {
            pktgen::run(Some(&topo.gen_ns), cfg, true, |pg| {
                window(&mut || pg.sent())
            })?
            .0
        }
    }
}
