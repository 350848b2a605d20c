//! The loaded XDP program and typed access to its maps.
//!
//! This is the only place that touches BPF maps; the FIB programmer decides what to
//! write and in which order.
mod attach_diag;
pub mod cells;
pub mod dir24;
pub mod dxr;
pub mod mbt6;
mod routes;
#[cfg(test)]
mod testing;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{
        Array, DevMapHash, IterableMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key,
    },
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nva_common::{
    CLASS_EAST_WEST, CLASS_NORTH_SOUTH, Counter, DIR8_BLOCKS, DIR24_ENTRIES, DXR_RANGE_CELLS,
    DXR_TOP_BITS, DXR_TOP_ENTRIES, EcmpGroup, FIB_DIR24, FIB_DXR, FIB_KINDS_GLOBAL, FIB_LPM_TRIE,
    FIB_MULTIBIT, FibKinds, MAX_IF_SLOTS, MAX_IFINDEX, MAX_SEGMENTS, MBT6_BLOCK, MBT6_BLOCKS,
    MBT6_ROOT_ENTRIES, NUM_REASONS, NextHop, POLICY_RANGE_CELLS, POLICY_TOP_BITS,
    POLICY_TOP_ENTRIES, PortInfo, Route, SEGMENT_DENY, Settings, XDP_PROGRAM, dir_entry, dir_route,
    map_names, policy_entry,
};

use cells::MmapCells;
use dir24::Dir24;
use dxr::Dxr;
use mbt6::Mbt6;

/// How to build the data plane's tables (fixed for the life of the loaded program).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Per class (0 east-west, 1 north-south): IPv4 FIB as DIR-24-8 instead of the trie.
    pub dir24_ipv4: [bool; 2],
    /// Per class: IPv6 FIB as the multibit trie instead of the LPM trie.
    pub multibit_ipv6: [bool; 2],
    /// Blocks of each multibit trie (0: `MBT6_BLOCKS`).
    pub multibit_blocks: u32,
    /// DIR-24-8 blocks for prefixes longer than /24 per table (0: `DIR8_BLOCKS`).
    pub dir24_blocks: u32,
    /// Per class: IPv4 FIB as DXR instead of the trie (exclusive with `dir24_ipv4`).
    pub dxr_ipv4: [bool; 2],
    /// Range cells of each DXR table (0: `DXR_RANGE_CELLS`).
    pub dxr_cells: u32,
    /// bpffs directory for the state that outlives the process: the XDP links (so
    /// forwarding goes on while nva restarts), the counters, and the settings (so a
    /// restart keeps the ECMP hash seed). None: nothing outlives the process.
    pub pin_dir: Option<PathBuf>,
}

impl LoadOptions {
    /// The structure of each FIB, as the program is loaded with it.
    pub fn fib_kinds(&self) -> Result<FibKinds> {
        let mut kinds = FibKinds::default();
        for c in 0..2 {
            kinds.v4[c] = match (self.dir24_ipv4[c], self.dxr_ipv4[c]) {
                (true, true) => bail!("an IPv4 FIB is either DIR-24-8 or DXR, not both"),
                (true, false) => FIB_DIR24,
                (false, true) => FIB_DXR,
                (false, false) => FIB_LPM_TRIE,
            };
            kinds.v6[c] = if self.multibit_ipv6[c] {
                FIB_MULTIBIT
            } else {
                FIB_LPM_TRIE
            };
        }
        Ok(kinds)
    }
}

/// Maps shared by a running program and its successor after a restart.
const PINNED_MAPS: [&str; 3] = [
    map_names::COUNTERS,
    map_names::CLASS_COUNTERS,
    map_names::SEGMENT_DROPS,
];

impl FibMemory {
    /// The table's name (`CLASS_NAMES`).
    pub fn table(&self) -> &'static str {
        nva_common::CLASS_NAMES[self.class as usize]
    }

    pub fn family(&self) -> &'static str {
        if self.ipv6 { "ipv6" } else { "ipv4" }
    }
}

/// Takes the two array maps of an mmap-written FIB out of the object (kept open in
/// `keep`) and, when the FIB is `used`, maps `lens` u32 cells of each.
fn map_pair(
    ebpf: &mut Ebpf,
    names: (&'static str, &'static str),
    lens: (u32, u32),
    used: bool,
    keep: &mut Vec<(&'static str, MapData)>,
) -> Result<Option<(MmapCells, MmapCells)>> {
    let mut cells = Vec::new();
    for (name, len) in [(names.0, lens.0), (names.1, lens.1)] {
        let Some(aya::maps::Map::Array(data)) = ebpf.take_map(name) else {
            bail!("map {name} missing from the eBPF object");
        };
        if used {
            cells.push(MmapCells::map(data.fd().as_fd(), len as usize)?);
        }
        keep.push((name, data));
    }
    Ok(match (cells.pop(), cells.pop()) {
        (Some(second), Some(first)) => Some((first, second)),
        _ => None,
    })
}

/// One FIB's structure and memory (see `Dataplane::fib_memory`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct FibMemory {
    pub class: u32,
    pub ipv6: bool,
    pub structure: &'static str,
    /// Kernel memory of the FIB's maps, in bytes.
    pub kernel_bytes: u64,
    /// (in use, total) blocks of a DIR-24-8 or multibit FIB.
    pub blocks: Option<(usize, usize)>,
}

/// Resident memory of this process, in bytes (0 if unreadable).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        // SAFETY: sysconf has no memory-safety preconditions.
        .map_or(0, |pages| {
            pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
        })
}

/// The kernel's memory figure for a map ("memlock" in its fdinfo; 0 if unreadable).
fn memlock(map: &MapData) -> u64 {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fdinfo/{}", map.fd().as_fd().as_raw_fd());
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Per class (east-west, north-south): the two arrays of the DIR-24-8 FIB and of the
/// multibit trie.
const DIR24_MAPS: [(&str, &str); 2] = [
    (map_names::DIR24_EW, map_names::DIR8_EW),
    (map_names::DIR24_NS, map_names::DIR8_NS),
];
const DXR_MAPS: [(&str, &str); 2] = [
    (map_names::DXR_TOP_EW, map_names::DXR_RANGES_EW),
    (map_names::DXR_TOP_NS, map_names::DXR_RANGES_NS),
];
const MBT6_MAPS: [(&str, &str); 2] = [
    (map_names::MBT6_ROOT_EW, map_names::MBT6_NODES_EW),
    (map_names::MBT6_ROOT_NS, map_names::MBT6_NODES_NS),
];

/// Fewest blocks a multibit trie may have (one full path).
const MBT6_LEVELS_MIN: u32 = nva_common::MBT6_LEVELS + 1;

/// The eBPF object built from `nva-ebpf` by build.rs.
pub static EBPF_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nva"));

pub struct Dataplane {
    ebpf: Ebpf,
    /// Per class (index: 0 east-west, 1 north-south): IPv4 and IPv6 FIBs.
    fib_v4: [LpmTrie<MapData, [u8; 4], Route>; 2],
    fib_v6: [LpmTrie<MapData, [u8; 16], Route>; 2],
    class_v4: LpmTrie<MapData, [u8; 4], u32>,
    class_v6: LpmTrie<MapData, [u8; 16], u32>,
    segment_v4: LpmTrie<MapData, [u8; 4], u32>,
    segment_v6: LpmTrie<MapData, [u8; 16], u32>,
    segment_policy: Array<MapData, u32>,
    segment_drops: PerCpuArray<MapData, Counter>,
    groups: Array<MapData, EcmpGroup>,
    nexthops: Array<MapData, NextHop>,
    tx_ports: DevMapHash<MapData>,
    ports: Array<MapData, PortInfo>,
    counters: PerCpuArray<MapData, Counter>,
    class_counters: PerCpuArray<MapData, Counter>,
    settings: Array<MapData, Settings>,
    /// DIR-24-8 IPv4 FIBs per class, when configured (replacing that class's v4 trie).
    dir24: [Option<Dir24<MmapCells>>; 2],
    /// DXR IPv4 FIBs per class, when configured (replacing that class's v4 trie).
    dxr: [Option<Dxr<MmapCells>>; 2],
    /// The IPv4 policy table (class and segment per address) the data plane reads
    /// instead of the IPv4 class and segment tries, built from these prefixes.
    policy_v4: Dxr<MmapCells>,
    class_prefixes_v4: BTreeMap<Ipv4Net, u32>,
    segment_prefixes_v4: BTreeMap<Ipv4Net, u32>,
    policy_installed: BTreeMap<Ipv4Net, u32>,
    /// Multibit IPv6 FIBs per class, when configured (replacing that class's v6 trie).
    mbt6: [Option<Mbt6<MmapCells>>; 2],
    /// Keeps the DIR-24-8 and multibit maps open while they are mapped.
    dir_maps: Vec<(&'static str, MapData)>,
    options: LoadOptions,
    /// Settings of the program this one replaces (from the pin directory).
    previous_settings: Option<Settings>,
    attached: Vec<(u32, XdpLinkId)>,
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

impl Dataplane {
    /// Loads the program into the kernel (running the verifier) and creates its maps.
    /// Nothing is attached yet.
    pub fn load() -> Result<Self> {
        Self::load_with(LoadOptions::default())
    }

    pub fn load_with(options: LoadOptions) -> Result<Self> {
        let kinds = options.fib_kinds()?;
        let mut loader = EbpfLoader::new();
        // A load-time constant, not a setting: the verifier drops the other structures'
        // lookups from the program.
        loader.override_global(FIB_KINDS_GLOBAL, &kinds, true);
        let mut previous_settings = None;
        if let Some(dir) = &options.pin_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the pin directory {}", dir.display()))?;
            let settings_pin = dir.join(map_names::SETTINGS);
            if settings_pin.exists() {
                let old: Array<MapData, Settings> = Array::try_from(aya::maps::Map::Array(
                    MapData::from_pin(&settings_pin).context("opening the pinned settings")?,
                ))?;
                previous_settings = old.get(&0, 0).ok();
                // The new program gets its own settings (it may use other tables).
                std::fs::remove_file(&settings_pin)?;
            }
            for name in PINNED_MAPS.iter().chain([&map_names::SETTINGS]) {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mbt_blocks = match options.multibit_blocks {
            0 => MBT6_BLOCKS,
            n => n.max(MBT6_LEVELS_MIN),
        };
        // u32 cells of each array of the mmap-written FIBs.
        let dir_blocks = match options.dir24_blocks {
            0 => DIR8_BLOCKS,
            n => n,
        };
        let dir_lens = (DIR24_ENTRIES, dir_blocks * 256);
        let mbt_lens = (MBT6_ROOT_ENTRIES, mbt_blocks * MBT6_BLOCK);
        let dxr_cells = match options.dxr_cells {
            0 => DXR_RANGE_CELLS,
            n => n.next_multiple_of(2),
        };
        let dxr_lens = (DXR_TOP_ENTRIES, dxr_cells);
        for c in 0..2 {
            for (used, names, lens) in [
                (options.dir24_ipv4[c], DIR24_MAPS[c], dir_lens),
                (options.dxr_ipv4[c], DXR_MAPS[c], dxr_lens),
                (options.multibit_ipv6[c], MBT6_MAPS[c], mbt_lens),
            ] {
                if used {
                    // Two u32 cells per (8-byte) array element.
                    loader.map_max_entries(names.0, lens.0 / 2);
                    loader.map_max_entries(names.1, lens.1 / 2);
                }
            }
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing from the eBPF object"))?
            .try_into()?;
        program
            .load()
            .context("loading the XDP program (verifier)")?;
        let mut dir_maps = Vec::new();
        let (top, ranges) = map_pair(
            &mut ebpf,
            (map_names::POLICY_TOP_V4, map_names::POLICY_RANGES_V4),
            (POLICY_TOP_ENTRIES, POLICY_RANGE_CELLS),
            true,
            &mut dir_maps,
        )?
        .expect("mapped when used");
        let policy_v4 = Dxr::new(top, ranges, POLICY_RANGE_CELLS, POLICY_TOP_BITS as u8);
        let mut dir24 = [None, None];
        let mut dxr = [None, None];
        let mut mbt6 = [None, None];
        for c in 0..2 {
            let used = options.dir24_ipv4[c];
            if let Some((t24, t8)) =
                map_pair(&mut ebpf, DIR24_MAPS[c], dir_lens, used, &mut dir_maps)?
            {
                dir24[c] = Some(Dir24::new(t24, t8, dir_blocks));
            }
            let used = options.dxr_ipv4[c];
            if let Some((top, ranges)) =
                map_pair(&mut ebpf, DXR_MAPS[c], dxr_lens, used, &mut dir_maps)?
            {
                dxr[c] = Some(Dxr::new(top, ranges, dxr_cells, DXR_TOP_BITS as u8));
            }
            let used = options.multibit_ipv6[c];
            if let Some((r, n)) = map_pair(&mut ebpf, MBT6_MAPS[c], mbt_lens, used, &mut dir_maps)?
            {
                mbt6[c] = Some(Mbt6::new(r, n, mbt_blocks));
            }
        }
        Ok(Self {
            dir24,
            dxr,
            policy_v4,
            class_prefixes_v4: BTreeMap::new(),
            segment_prefixes_v4: BTreeMap::new(),
            policy_installed: BTreeMap::new(),
            mbt6,
            dir_maps,
            options,
            previous_settings,
            fib_v4: [
                take(&mut ebpf, map_names::FIB_V4_EW)?,
                take(&mut ebpf, map_names::FIB_V4_NS)?,
            ],
            fib_v6: [
                take(&mut ebpf, map_names::FIB_V6_EW)?,
                take(&mut ebpf, map_names::FIB_V6_NS)?,
            ],
            class_v4: take(&mut ebpf, map_names::CLASS_V4)?,
            class_v6: take(&mut ebpf, map_names::CLASS_V6)?,
            segment_v4: take(&mut ebpf, map_names::SEGMENT_V4)?,
            segment_v6: take(&mut ebpf, map_names::SEGMENT_V6)?,
            segment_policy: take(&mut ebpf, map_names::SEGMENT_POLICY)?,
            segment_drops: take(&mut ebpf, map_names::SEGMENT_DROPS)?,
            groups: take(&mut ebpf, map_names::GROUPS)?,
            nexthops: take(&mut ebpf, map_names::NEXTHOPS)?,
            tx_ports: take(&mut ebpf, map_names::TX_PORTS)?,
            ports: take(&mut ebpf, map_names::PORTS)?,
            counters: take(&mut ebpf, map_names::COUNTERS)?,
            class_counters: take(&mut ebpf, map_names::CLASS_COUNTERS)?,
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
    ///
    /// With a pin directory, the attachment is a pinned bpf_link: if one is left by an
    /// earlier run, this program atomically replaces the old one on it (no packet sees
    /// an interface without XDP); otherwise the new link is pinned so that it survives
    /// this process.
    pub fn attach(&mut self, ifindex: u32, name: &str, generic: bool) -> Result<()> {
        let mode = if generic {
            XdpMode::Skb
        } else {
            XdpMode::Driver
        };
        let pin = self.link_pin(name);
        if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
            let link = PinnedLink::from_pin(pin)
                .with_context(|| format!("opening the pinned XDP link of {name}"))?;
            let link = XdpLink::try_from(FdLink::from(link))?;
            let id = self
                .program_mut()?
                .attach_to_link(link)
                .with_context(|| format!("replacing the XDP program on {name}"))?;
            self.attached.push((ifindex, id));
            return Ok(());
        }
        let program = self.program_mut()?;
        let id = match program.attach_to_if_index(ifindex, mode) {
            Ok(id) => id,
            Err(e) => {
                // bpf_link_create gives only an errno: ask the kernel why through netlink.
                let why = (!generic)
                    .then(|| program.fd().ok())
                    .flatten()
                    .and_then(|fd| attach_diag::kernel_reason(ifindex, fd.as_fd().as_raw_fd()));
                let mut msg = format!("attaching XDP ({mode:?} mode) to {name}");
                if let Some(why) = why {
                    msg += &format!(": the kernel says \"{why}\"");
                    if let Some(fix) = attach_diag::advice(name, &why) {
                        msg += &format!("; {fix}");
                    }
                }
                return Err(anyhow::Error::new(e).context(msg));
            }
        };
        if let Some(pin) = pin {
            let link: FdLink = program.take_link(id)?.try_into().with_context(|| {
                format!("{name}: pinning needs a bpf_link attachment (kernel >= 5.9)")
            })?;
            let pinned = link
                .pin(&pin)
                .with_context(|| format!("pinning the XDP link of {name}"))?;
            let id = program.attach_to_link(XdpLink::try_from(FdLink::from(pinned))?)?;
            self.attached.push((ifindex, id));
        } else {
            self.attached.push((ifindex, id));
        }
        Ok(())
    }

    fn link_pin(&self, name: &str) -> Option<PathBuf> {
        self.options
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("link-{name}")))
    }

    /// The ECMP hash seed of the program this one replaced, if any.
    pub fn previous_hash_seed(&self) -> Option<u32> {
        self.previous_settings.map(|s| s.hash_seed)
    }

    /// Graceful end: removes the pins (links and maps), then detaches. Without this,
    /// pinned links keep forwarding after the process exits.
    pub fn unpin_and_detach(&mut self) {
        if let Some(dir) = self.options.pin_dir.clone() {
            let _ = remove_pins(&dir);
        }
        self.detach_all();
    }

    /// Detaches from one interface (and drops its pin).
    pub fn detach(&mut self, ifindex: u32, name: &str) -> Result<()> {
        let Some(pos) = self.attached.iter().position(|(i, _)| *i == ifindex) else {
            return Ok(());
        };
        if let Some(pin) = self.link_pin(name) {
            let _ = std::fs::remove_file(pin);
        }
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

    /// Of the interfaces nva attached, how many the kernel says run this program (checks
    /// that nothing detached it behind our back, e.g. `bpftool link detach`).
    ///
    /// None when it cannot be told (e.g. no file descriptor left to open a link with):
    /// a fact that cannot be read is not a failure, and must never make nva withdraw its
    /// routes.
    pub fn kernel_links(&self) -> Option<usize> {
        let id = self.program().ok()?.info().ok()?.id();
        // What each interface runs, from rtnetlink: no capability needed (listing BPF
        // links would need CAP_SYS_ADMIN, which the service does not have).
        let running = crate::netlink::xdp::xdp_program_ids().ok()?;
        Some(
            self.attached
                .iter()
                .filter(|(ifindex, _)| running.get(ifindex) == Some(&id))
                .count(),
        )
    }

    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.iter().map(|(i, _)| *i)
    }

    /// Writes the settings (hash seed, `SET_*` flags). The FIB structures are not
    /// settings: they were fixed when the program was loaded (`LoadOptions::fib_kinds`).
    pub fn set_settings(&mut self, settings: Settings) -> Result<()> {
        Ok(self.settings.set(0, settings, 0)?)
    }

    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Per table and family: the FIB structure and the kernel memory its maps take
    /// (the kernel's own figure, "memlock" in the map's fdinfo).
    pub fn fib_memory(&self) -> Vec<FibMemory> {
        let fast = |name: &str| {
            self.dir_maps
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, m)| memlock(m))
        };
        let mut out = Vec::new();
        for (c, class) in [CLASS_EAST_WEST, CLASS_NORTH_SOUTH].into_iter().enumerate() {
            let (tbl24, tbl8) = DIR24_MAPS[c];
            let (top, ranges) = DXR_MAPS[c];
            let (root, nodes) = MBT6_MAPS[c];
            out.push(match (&self.dir24[c], &self.dxr[c]) {
                (Some(d), _) => FibMemory {
                    class,
                    ipv6: false,
                    structure: "dir-24-8",
                    kernel_bytes: fast(tbl24) + fast(tbl8),
                    blocks: Some((d.blocks_used(), d.blocks_total())),
                },
                (None, Some(d)) => FibMemory {
                    class,
                    ipv6: false,
                    structure: "dxr",
                    kernel_bytes: fast(top) + fast(ranges),
                    blocks: Some((d.cells_used(), d.cells_total())),
                },
                (None, None) => FibMemory {
                    class,
                    ipv6: false,
                    structure: "lpm-trie",
                    kernel_bytes: memlock(self.fib_v4[c].map()),
                    blocks: None,
                },
            });
            out.push(match &self.mbt6[c] {
                Some(m) => FibMemory {
                    class,
                    ipv6: true,
                    structure: "multibit",
                    kernel_bytes: fast(root) + fast(nodes),
                    blocks: Some((m.blocks_used(), m.blocks_total())),
                },
                None => FibMemory {
                    class,
                    ipv6: true,
                    structure: "lpm-trie",
                    kernel_bytes: memlock(self.fib_v6[c].map()),
                    blocks: None,
                },
            });
        }
        out
    }

    /// Gives an interface its counter slot and class override (`PORT_*` flags) and
    /// makes it a redirect target.
    /// `mac` is the interface's own (unicast frames for other MACs are not forwarded);
    /// all zero disables that check.
    pub fn add_port(&mut self, ifindex: u32, slot: u32, flags: u32, mac: [u8; 6]) -> Result<()> {
        if slot == 0 || slot >= MAX_IF_SLOTS {
            bail!("counter slot {slot} out of range");
        }
        if ifindex < MAX_IFINDEX {
            let port = PortInfo {
                slot,
                flags,
                mac,
                _pad: [0; 2],
            };
            self.ports.set(ifindex, port, 0)?;
        }
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to TX_PORTS"))?;
        Ok(())
    }

    /// Undoes `add_port` (after no next hop uses the port any more).
    pub fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        if ifindex < MAX_IFINDEX {
            self.ports.set(ifindex, PortInfo::default(), 0)?;
        }
        ignore_missing(self.tx_ports.remove(ifindex))
    }

    pub fn write_nexthop(&mut self, id: u16, nh: &NextHop) -> Result<()> {
        Ok(self.nexthops.set(id as u32, nh, 0)?)
    }

    pub fn write_group(&mut self, id: u32, group: &EcmpGroup) -> Result<()> {
        Ok(self.groups.set(id, group, 0)?)
    }

    /// Inserts or replaces a route in the FIB of traffic class `class`.
    pub fn insert_route(&mut self, class: u32, prefix: &IpNet, route: Route) -> Result<()> {
        let c = class_index(class);
        match prefix {
            IpNet::V4(p) => match (&mut self.dir24[c], &mut self.dxr[c]) {
                (Some(dir), _) => dir.insert(*p, dir_entry(route))?,
                (None, Some(dxr)) => dxr.insert(*p, dir_entry(route))?,
                (None, None) => self.fib_v4[c].insert(&key4(p), route, 0)?,
            },
            IpNet::V6(p) => match &mut self.mbt6[c] {
                Some(mbt) => mbt.insert(*p, dir_entry(route))?,
                None => self.fib_v6[c].insert(&key6(p), route, 0)?,
            },
        }
        Ok(())
    }

    pub fn remove_route(&mut self, class: u32, prefix: &IpNet) -> Result<()> {
        let c = class_index(class);
        match prefix {
            IpNet::V4(p) => match (&mut self.dir24[c], &mut self.dxr[c]) {
                (Some(dir), _) => dir.remove(*p),
                (None, Some(dxr)) => dxr.remove(*p)?,
                (None, None) => self.fib_v4[c].remove(&key4(p))?,
            },
            IpNet::V6(p) => match &mut self.mbt6[c] {
                Some(mbt) => mbt.remove(*p),
                None => self.fib_v6[c].remove(&key6(p))?,
            },
        }
        Ok(())
    }

    /// Longest-prefix match in the FIB of `class` (what a packet would hit).
    pub fn lookup(&self, class: u32, addr: IpAddr) -> Option<Route> {
        let c = class_index(class);
        match addr {
            IpAddr::V4(a) => match (&self.dir24[c], &self.dxr[c]) {
                (Some(dir), _) => dir_route(dir.lookup(a)),
                (None, Some(dxr)) => dir_route(dxr.lookup(a)),
                (None, None) => self.fib_v4[c].get(&Key::new(32, a.octets()), 0).ok(),
            },
            IpAddr::V6(a) => match &self.mbt6[c] {
                Some(mbt) => dir_route(mbt.lookup(a)),
                None => self.fib_v6[c].get(&Key::new(128, a.octets()), 0).ok(),
            },
        }
    }

    /// The class the data plane gives a destination (without port overrides).
    pub fn classify(&self, addr: IpAddr) -> u32 {
        let hit = match addr {
            IpAddr::V4(a) => self.class_v4.get(&Key::new(32, a.octets()), 0).ok(),
            IpAddr::V6(a) => self.class_v6.get(&Key::new(128, a.octets()), 0).ok(),
        };
        hit.unwrap_or(CLASS_NORTH_SOUTH)
    }

    /// Marks destinations in `prefix` as `class` (None removes the entry).
    pub fn set_class_prefix(&mut self, prefix: &IpNet, class: Option<u32>) -> Result<()> {
        match (prefix, class) {
            (IpNet::V4(p), Some(c)) => self.class_v4.insert(&key4(p), c, 0)?,
            (IpNet::V6(p), Some(c)) => self.class_v6.insert(&key6(p), c, 0)?,
            (IpNet::V4(p), None) => ignore_missing(self.class_v4.remove(&key4(p)))?,
            (IpNet::V6(p), None) => ignore_missing(self.class_v6.remove(&key6(p)))?,
        }
        if let IpNet::V4(p) = prefix {
            match class {
                Some(c) => self.class_prefixes_v4.insert(p.trunc(), c),
                None => self.class_prefixes_v4.remove(&p.trunc()),
            };
            self.sync_policy_v4()?;
        }
        Ok(())
    }

    /// Puts `prefix` into segment `id` (None removes it).
    pub fn set_segment_prefix(&mut self, prefix: &IpNet, id: Option<u32>) -> Result<()> {
        match (prefix, id) {
            (IpNet::V4(p), Some(s)) => self.segment_v4.insert(&key4(p), s, 0)?,
            (IpNet::V6(p), Some(s)) => self.segment_v6.insert(&key6(p), s, 0)?,
            (IpNet::V4(p), None) => ignore_missing(self.segment_v4.remove(&key4(p)))?,
            (IpNet::V6(p), None) => ignore_missing(self.segment_v6.remove(&key6(p)))?,
        }
        if let IpNet::V4(p) = prefix {
            match id {
                Some(s) => self.segment_prefixes_v4.insert(p.trunc(), s),
                None => self.segment_prefixes_v4.remove(&p.trunc()),
            };
            self.sync_policy_v4()?;
        }
        Ok(())
    }

    /// Rewrites the IPv4 policy table from the class and segment prefixes: every prefix
    /// of either set carries the class and the segment of its range (the longest class
    /// and segment prefixes containing it), so a longest match in the union answers both.
    /// New and changed entries are written before stale ones are removed.
    fn sync_policy_v4(&mut self) -> Result<()> {
        let longest = |set: &BTreeMap<Ipv4Net, u32>, p: &Ipv4Net| {
            set.iter()
                .filter(|(q, _)| q.contains(p))
                .max_by_key(|(q, _)| q.prefix_len())
                .map(|(_, v)| *v)
        };
        let wanted: BTreeMap<Ipv4Net, u32> = self
            .class_prefixes_v4
            .keys()
            .chain(self.segment_prefixes_v4.keys())
            .map(|p| {
                let east_west = longest(&self.class_prefixes_v4, p).is_some();
                let segment = longest(&self.segment_prefixes_v4, p).unwrap_or(0);
                (*p, policy_entry(east_west, segment))
            })
            .collect();
        for (p, v) in &wanted {
            if self.policy_installed.get(p) != Some(v) {
                self.policy_v4.insert(*p, *v)?;
            }
        }
        for p in self.policy_installed.keys() {
            if !wanted.contains_key(p) {
                self.policy_v4.remove(*p)?;
            }
        }
        self.policy_installed = wanted;
        Ok(())
    }

    /// Denies (or allows) east-west traffic from segment `from` to segment `to`.
    pub fn set_segment_policy(&mut self, from: u32, to: u32, deny: bool) -> Result<()> {
        if from >= MAX_SEGMENTS || to >= MAX_SEGMENTS {
            bail!("segment id out of range");
        }
        let value = if deny { SEGMENT_DENY } else { 0 };
        Ok(self
            .segment_policy
            .set(from * MAX_SEGMENTS + to, value, 0)?)
    }

    /// Packets denied from segment `from` to `to`, summed over CPUs.
    pub fn segment_drops(&self, from: u32, to: u32) -> Result<Counter> {
        let cells = self.segment_drops.get(&(from * MAX_SEGMENTS + to), 0)?;
        Ok(sum(cells.iter()))
    }

    pub fn read_nexthop(&self, id: u16) -> Result<NextHop> {
        Ok(self.nexthops.get(&(id as u32), 0)?)
    }

    pub fn read_group(&self, id: u32) -> Result<EcmpGroup> {
        Ok(self.groups.get(&id, 0)?)
    }

    /// Counters of one interface slot, summed over CPUs, indexed by reason.
    pub fn counters(&self, slot: u32) -> Result<[Counter; NUM_REASONS as usize]> {
        let mut out = [Counter::default(); NUM_REASONS as usize];
        for (reason, cell) in out.iter_mut().enumerate() {
            let cells = self
                .counters
                .get(&(slot * NUM_REASONS + reason as u32), 0)?;
            *cell = sum(cells.iter());
        }
        Ok(out)
    }

    /// Counters of one traffic class, summed over CPUs, indexed by reason.
    pub fn class_counters(&self, class: u32) -> Result<[Counter; NUM_REASONS as usize]> {
        let mut out = [Counter::default(); NUM_REASONS as usize];
        for (reason, cell) in out.iter_mut().enumerate() {
            let index = class_index(class) as u32 * NUM_REASONS + reason as u32;
            *cell = sum(self.class_counters.get(&index, 0)?.iter());
        }
        Ok(out)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// Removes everything nva pinned under `dir`.
fn remove_pins(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("link-") || PINNED_MAPS.contains(&name) || name == map_names::SETTINGS {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

fn sum<'a>(cells: impl Iterator<Item = &'a Counter>) -> Counter {
    let mut total = Counter::default();
    for c in cells {
        total.packets += c.packets;
        total.bytes += c.bytes;
    }
    total
}

/// Index into the per-class map arrays (anything but north-south is east-west).
fn class_index(class: u32) -> usize {
    usize::from(class == CLASS_NORTH_SOUTH)
}

fn key4(p: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(p.prefix_len() as u32, p.network().octets())
}

fn key6(p: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(p.prefix_len() as u32, p.network().octets())
}

fn ignore_missing(r: Result<(), MapError>) -> Result<()> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    #[test]
    fn fib_kinds_follow_the_load_options() {
        assert_eq!(
            LoadOptions::default().fib_kinds().unwrap(),
            FibKinds {
                v4: [FIB_LPM_TRIE; 2],
                v6: [FIB_LPM_TRIE; 2]
            }
        );
        let options = LoadOptions {
            dir24_ipv4: [false, true],
            dxr_ipv4: [true, false],
            multibit_ipv6: [false, true],
            ..LoadOptions::default()
        };
        assert_eq!(
            options.fib_kinds().unwrap(),
            FibKinds {
                v4: [FIB_DXR, FIB_DIR24],
                v6: [FIB_LPM_TRIE, FIB_MULTIBIT]
            }
        );
        let both = LoadOptions {
            dir24_ipv4: [true, false],
            dxr_ipv4: [true, false],
            ..LoadOptions::default()
        };
        assert!(both.fib_kinds().is_err());
    }
}
