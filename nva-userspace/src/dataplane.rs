//! The loaded XDP program and typed access to its maps.
//!
//! This is the only place that touches BPF maps; the FIB programmer decides what to
//! write and in which order.
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, include_bytes_aligned,
    maps::{Array, DevMapHash, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use ipnet::IpNet;
use nva_common::{
    Counter, EcmpGroup, MAX_IF_SLOTS, MAX_IFINDEX, NUM_REASONS, NextHop, Route, Settings,
    XDP_PROGRAM, map_names,
};

/// The eBPF object built from `nva-ebpf` by build.rs.
pub static EBPF_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nva"));

pub struct Dataplane {
    ebpf: Ebpf,
    fib_v4: LpmTrie<MapData, [u8; 4], Route>,
    fib_v6: LpmTrie<MapData, [u8; 16], Route>,
    groups: Array<MapData, EcmpGroup>,
    nexthops: Array<MapData, NextHop>,
    tx_ports: DevMapHash<MapData>,
    if_slots: Array<MapData, u32>,
    counters: PerCpuArray<MapData, Counter>,
    settings: Array<MapData, Settings>,
    attached: Vec<(u32, XdpLinkId)>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl Dataplane {
    /// Loads the program into the kernel (running the verifier) and creates its maps.
    /// Nothing is attached yet.
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT).context("loading the eBPF object")?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing from the eBPF object"))?
            .try_into()?;
        program
            .load()
            .context("loading the XDP program (verifier)")?;
        Ok(Self {
            fib_v4: take(&mut ebpf, map_names::FIB_V4)?,
            fib_v6: take(&mut ebpf, map_names::FIB_V6)?,
            groups: take(&mut ebpf, map_names::GROUPS)?,
            nexthops: take(&mut ebpf, map_names::NEXTHOPS)?,
            tx_ports: take(&mut ebpf, map_names::TX_PORTS)?,
            if_slots: take(&mut ebpf, map_names::IF_SLOTS)?,
            counters: take(&mut ebpf, map_names::COUNTERS)?,
            settings: take(&mut ebpf, map_names::SETTINGS)?,
            ebpf,
            attached: Vec::new(),
        })
    }

    pub fn program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing"))?
            .try_into()?)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing"))?
            .try_into()?)
    }

    /// Attaches the program to an interface. Native (driver) mode fails rather than
    /// silently falling back; generic mode must be asked for.
    pub fn attach(&mut self, ifindex: u32, name: &str, generic: bool) -> Result<()> {
        let mode = if generic {
            XdpMode::Skb
        } else {
            XdpMode::Driver
        };
        let link = self
            .program_mut()?
            .attach_to_if_index(ifindex, mode)
            .with_context(|| format!("attaching XDP ({mode:?} mode) to {name}"))?;
        self.attached.push((ifindex, link));
        Ok(())
    }

    /// Detaches from one interface.
    pub fn detach(&mut self, ifindex: u32) -> Result<()> {
        let Some(pos) = self.attached.iter().position(|(i, _)| *i == ifindex) else {
            return Ok(());
        };
        let (_, link) = self.attached.remove(pos);
        self.program_mut()?
            .detach(link)
            .with_context(|| format!("detaching XDP from ifindex {ifindex}"))
    }

    /// Detaches from every interface (also happens when the Dataplane is dropped).
    pub fn detach_all(&mut self) {
        let links: Vec<_> = self.attached.drain(..).collect();
        if let Ok(program) = self.program_mut() {
            for (_, link) in links {
                let _ = program.detach(link);
            }
        }
    }

    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.iter().map(|(i, _)| *i)
    }

    pub fn set_settings(&mut self, settings: Settings) -> Result<()> {
        Ok(self.settings.set(0, settings, 0)?)
    }

    /// Gives an interface its counter slot and makes it a redirect target.
    pub fn add_port(&mut self, ifindex: u32, slot: u32) -> Result<()> {
        if slot == 0 || slot >= MAX_IF_SLOTS {
            bail!("counter slot {slot} out of range");
        }
        if ifindex < MAX_IFINDEX {
            self.if_slots.set(ifindex, slot, 0)?;
        }
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to TX_PORTS"))?;
        Ok(())
    }

    /// Undoes `add_port` (after no next hop uses the port any more).
    pub fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        if ifindex < MAX_IFINDEX {
            self.if_slots.set(ifindex, 0, 0)?;
        }
        match self.tx_ports.remove(ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn write_nexthop(&mut self, id: u16, nh: &NextHop) -> Result<()> {
        Ok(self.nexthops.set(id as u32, nh, 0)?)
    }

    pub fn write_group(&mut self, id: u32, group: &EcmpGroup) -> Result<()> {
        Ok(self.groups.set(id, group, 0)?)
    }

    pub fn insert_route(&mut self, prefix: &IpNet, route: Route) -> Result<()> {
        match prefix {
            IpNet::V4(p) => self.fib_v4.insert(
                &Key::new(p.prefix_len() as u32, p.network().octets()),
                route,
                0,
            )?,
            IpNet::V6(p) => self.fib_v6.insert(
                &Key::new(p.prefix_len() as u32, p.network().octets()),
                route,
                0,
            )?,
        }
        Ok(())
    }

    pub fn remove_route(&mut self, prefix: &IpNet) -> Result<()> {
        match prefix {
            IpNet::V4(p) => self
                .fib_v4
                .remove(&Key::new(p.prefix_len() as u32, p.network().octets()))?,
            IpNet::V6(p) => self
                .fib_v6
                .remove(&Key::new(p.prefix_len() as u32, p.network().octets()))?,
        }
        Ok(())
    }

    /// Longest-prefix match in the data plane's own FIB (what a packet would hit).
    pub fn lookup(&self, addr: IpAddr) -> Option<Route> {
        match addr {
            IpAddr::V4(a) => self.fib_v4.get(&Key::new(32, a.octets()), 0).ok(),
            IpAddr::V6(a) => self.fib_v6.get(&Key::new(128, a.octets()), 0).ok(),
        }
    }

    pub fn read_nexthop(&self, id: u16) -> Result<NextHop> {
        Ok(self.nexthops.get(&(id as u32), 0)?)
    }

    pub fn read_group(&self, id: u32) -> Result<EcmpGroup> {
        Ok(self.groups.get(&id, 0)?)
    }

    /// Counters of one slot, summed over CPUs, indexed by reason.
    pub fn counters(&self, slot: u32) -> Result<[Counter; NUM_REASONS as usize]> {
        let mut out = [Counter::default(); NUM_REASONS as usize];
        for (reason, cell) in out.iter_mut().enumerate() {
            let per_cpu = self
                .counters
                .get(&(slot * NUM_REASONS + reason as u32), 0)?;
            for c in per_cpu.iter() {
                cell.packets += c.packets;
                cell.bytes += c.bytes;
            }
        }
        Ok(out)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}
