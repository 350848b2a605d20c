//! The benchmark helper programs (`bench/ebpf`, built by build.rs) and their maps.
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, DevMap, MapData, PerCpuArray, ProgramArray},
    programs::{Xdp, XdpMode, xdp::XdpLink},
};
use nva_testkit::Netns;

use crate::generator::GenConfig;

/// The helper programs' object (crate `nva-bench-ebpf`, its bin `nva-bench`).
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nva-bench"));

pub const GEN: &str = "bench_gen";
pub const SINK: &str = "bench_sink";
pub const PASS: &str = "bench_pass";
pub const FWD: &str = "bench_fwd";
pub const CYCLE: &str = "bench_cycle";

/// Mirror of `FwdPort` in `bench/ebpf/src/main.rs`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FwdPort {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

// SAFETY: plain old data, no padding (12 bytes of u8).
unsafe impl aya::Pod for FwdPort {}

/// Capacity of the reference forwarder's port maps.
const FWD_MAX_PORTS: usize = 8;

/// Capacity of GEN_DSTS.
pub const MAX_DSTS: usize = 1 << 16;

pub struct BenchObject {
    ebpf: Ebpf,
    config: Array<MapData, GenConfig>,
    dsts: Array<MapData, [u16; 8]>,
    seq: PerCpuArray<MapData, u64>,
    sink: PerCpuArray<MapData, u64>,
    fwd_macs: Array<MapData, FwdPort>,
    fwd_tx: DevMap<MapData>,
    fwd_mask: Array<MapData, u32>,
    cycle_target: ProgramArray<MapData>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// An attached helper program; detached on drop.
pub struct Attached(#[allow(dead_code)] XdpLink);

impl BenchObject {
    pub fn load() -> Result<BenchObject> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading the bench object")?;
        for name in [GEN, SINK, PASS, FWD, CYCLE] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no program {name}"))?
                .try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        Ok(BenchObject {
            config: take(&mut ebpf, "GEN_CONFIG")?,
            dsts: take(&mut ebpf, "GEN_DSTS")?,
            seq: take(&mut ebpf, "GEN_SEQ")?,
            sink: take(&mut ebpf, "SINK_COUNT")?,
            fwd_macs: take(&mut ebpf, "FWD_MACS")?,
            fwd_tx: take(&mut ebpf, "FWD_TX")?,
            fwd_mask: take(&mut ebpf, "FWD_PORT_MASK")?,
            cycle_target: take(&mut ebpf, "CYCLE_TARGET")?,
            ebpf,
        })
    }

    pub fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?)
    }

    /// Attaches `name` (native mode) to `ifname` in `ns`.
    pub fn attach(&mut self, name: &str, ns: &Netns, ifname: &str) -> Result<Attached> {
        let ifindex = ns.ifindex(ifname)?;
        let p: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let link = ns
            .run(|| p.attach_to_if_index(ifindex, XdpMode::Driver))
            .with_context(|| format!("attaching {name} to {}:{ifname}", ns.name()))?;
        Ok(Attached(p.take_link(link)?))
    }

    /// Sets the reference forwarder's egress ports (ifindex, own MAC, next hop's MAC; a
    /// power of two of them), with ifindexes of `ns`.
    pub fn set_forwarder(&mut self, ns: &Netns, ports: &[(u32, [u8; 6], [u8; 6])]) -> Result<()> {
        anyhow::ensure!(
            ports.len().is_power_of_two() && ports.len() <= FWD_MAX_PORTS,
            "reference forwarder: a power of two of ports, at most {FWD_MAX_PORTS}"
        );
        for (i, (ifindex, smac, dmac)) in ports.iter().enumerate() {
            self.fwd_macs.set(
                i as u32,
                FwdPort {
                    dmac: *dmac,
                    smac: *smac,
                },
                0,
            )?;
            // DEVMAP resolves the ifindex in the caller's namespace.
            ns.run(|| self.fwd_tx.set(i as u32, *ifindex, None, 0))?;
        }
        self.fwd_mask.set(0, ports.len() as u32 - 1, 0)?;
        Ok(())
    }

    /// The program `bench_cycle` tail-calls (a program of another object too).
    pub fn set_cycle_target(&mut self, target: &aya::programs::ProgramFd) -> Result<()> {
        Ok(self.cycle_target.set(0, target, 0)?)
    }

    pub fn set_config(&mut self, cfg: &GenConfig) -> Result<()> {
        Ok(self.config.set(0, cfg, 0)?)
    }

    /// Fills GEN_DSTS with `dsts` (length a power of two, at most MAX_DSTS).
    pub fn set_dsts(&mut self, dsts: &[IpAddr]) -> Result<()> {
        for (i, d) in dsts.iter().enumerate() {
            let mut bytes = [0u8; 16];
            match d {
                IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
                IpAddr::V6(a) => bytes = a.octets(),
            }
            let mut words = [0u16; 8];
            for (w, c) in words.iter_mut().zip(bytes.chunks(2)) {
                *w = u16::from_ne_bytes([c[0], c[1]]);
            }
            self.dsts.set(i as u32, words, 0)?;
        }
        Ok(())
    }

    /// Frames generated so far (all CPUs).
    pub fn generated(&self) -> Result<u64> {
        Ok(self.seq.get(&0, 0)?.iter().sum())
    }

    /// Frames received by sinks so far, per ingress ifindex & 63 (all CPUs).
    pub fn received(&self) -> Result<[u64; 64]> {
        let mut out = [0u64; 64];
        for (i, cell) in out.iter_mut().enumerate() {
            *cell = self.sink.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }
}
