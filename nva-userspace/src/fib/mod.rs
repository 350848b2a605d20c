//! The FIB programmer: turns routes from every source (local addresses, connected
//! subnets, static routes, later BGP) into next hops, ECMP groups and trie entries in
//! the data plane's maps.
//!
//! Ordering rules that keep the data plane consistent (make-before-break):
//! - a next hop is written (with its egress port already in TX_PORTS) before any
//!   group names it;
//! - a group is written before any route points at it;
//! - a route is repointed or removed before the group it used is released.
//!
//! A next hop that goes down (link down, neighbour FAILED) is taken out of every group
//! by rewriting only its buckets (resilient hashing); other flows keep their path.
pub mod buckets;
#[cfg(test)]
pub(crate) mod recorder;
mod slots;
mod stored;
#[cfg(test)]
mod tests;
mod writer;

use std::{net::IpAddr, sync::Arc};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use nva_common::{
    CLASS_EAST_WEST, CLASS_NAMES, CLASS_NORTH_SOUTH, ECMP_BUCKETS, EcmpGroup, MAX_GROUPS,
    MAX_NEXTHOPS, NH_RESOLVED, NH_VALID, NextHop, ROUTE_BLACKHOLE, ROUTE_CONNECTED, ROUTE_FORWARD,
    ROUTE_LOCAL, Route,
};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::{dataplane::Dataplane, netlink::routes::KernelRoute};
use buckets::NhId;
use slots::Slots;
use stored::{SourceLists, Sources, TargetId, Targets};
pub use writer::FibWriter;

/// A change the kernel's routing table must follow, applied in order (see
/// `netlink::nexthops`: mirrored forward routes name nexthop objects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelOp {
    /// Create nexthop object `id` over (gateway, ifindex) hops, before any route names
    /// it. Ids are never reused within a run.
    AddNexthop { id: u32, hops: Arc<[(IpAddr, u32)]> },
    /// Set nva's route for a prefix (None = remove it).
    Route(IpNet, Option<KernelRoute>),
    /// Delete object `id` (`ids` ids, see `nexthops::ids_needed`) once no route names it.
    DelNexthop { id: u32, ids: u32 },
}

/// A target's nexthop object in the kernel.
#[derive(Clone, Copy, Debug)]
struct KernelObject {
    id: u32,
    ids: u32,
    /// Mirrored prefixes naming it.
    routes: usize,
}

/// Where a route came from. When several sources have the same prefix, the greatest
/// (last listed) wins.
/// A gateway's neighbour entry as the kernel has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neigh {
    /// Its MAC, when the entry is usable.
    pub mac: Option<[u8; 6]>,
    /// Its resolution failed.
    pub failed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Connected,
    /// Host routes to resolved neighbours on connected subnets, so traffic to directly
    /// attached hosts is forwarded in XDP too, not only by the kernel.
    Neighbour,
    /// Static backup next hops, used while every primary next hop is down (and, being
    /// "floating", only when BGP has no usable route either).
    StaticBackup,
    /// Learned over BGP.
    Bgp,
    Static,
    Local,
}

/// What a route does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// ECMP over these next hops (shared: a full table has a million routes over a few
    /// next-hop sets, and cloning a route must not allocate).
    Forward(Arc<[NhId]>),
    /// An address of this box.
    Local,
    /// A connected subnet (the kernel resolves hosts).
    Connected,
    /// Hand to the kernel.
    Kernel,
    Blackhole,
}

/// Identity of a next hop: the same address on the same port and VLAN is one next hop,
/// shared by every route and group that uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NhKey {
    pub ifindex: u32,
    pub via: IpAddr,
    pub vlan: u16,
}

/// Egress port facts a next hop needs.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub up: bool,
}

#[derive(Clone, Debug)]
struct NhEntry {
    key: NhKey,
    port: Port,
    dmac: Option<[u8; 6]>,
    neigh_failed: bool,
    /// A health probe declared it down.
    probe_down: bool,
    /// Routes (of any source, installed or not) naming this next hop; it is freed at 0.
    refs: usize,
}

impl NhEntry {
    fn live(&self) -> bool {
        self.port.up && !self.neigh_failed && !self.probe_down
    }

    fn to_map(&self) -> NextHop {
        NextHop {
            ifindex: self.key.ifindex,
            flags: NH_VALID | if self.dmac.is_some() { NH_RESOLVED } else { 0 },
            mtu: self.port.mtu.min(u16::MAX as u32) as u16,
            vlan: self.key.vlan,
            smac: self.port.mac,
            dmac: self.dmac.unwrap_or([0; 6]),
        }
    }
}

struct Group {
    members: Vec<NhId>,
    buckets: [NhId; ECMP_BUCKETS],
    refs: usize,
}

/// What the data plane holds for a prefix. Holds a reference to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Installed {
    source: Source,
    target: TargetId,
    /// The ECMP group it uses, 0 for none (group ids start at 1).
    group: u32,
}

impl Installed {
    fn group(&self) -> Option<u32> {
        (self.group != 0).then_some(self.group)
    }
}

/// One prefix of one table: the routes offered and the one installed. Removed when both
/// are empty.
#[derive(Debug, Default)]
struct Entry {
    sources: Sources,
    installed: Option<Installed>,
}

/// What `nva nexthops` shows.
#[derive(Clone, Debug, Serialize)]
pub struct NextHopView {
    pub id: NhId,
    pub via: IpAddr,
    pub dev: String,
    pub ifindex: u32,
    pub vlan: u16,
    pub mac: Option<String>,
    pub resolved: bool,
    pub link_up: bool,
    pub neighbour_failed: bool,
    /// A health probe declared it down.
    pub probe_down: bool,
    pub live: bool,
    /// Routes naming it.
    pub routes: usize,
}

/// What `nva routes` shows.
#[derive(Clone, Debug, Serialize)]
pub struct RouteView {
    pub table: Table,
    pub prefix: IpNet,
    pub source: Source,
    pub action: &'static str,
    pub nexthops: Vec<IpAddr>,
    /// Next hops that currently receive traffic.
    pub live_nexthops: Vec<IpAddr>,
    pub group: Option<u32>,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The data plane's route tables: east-west (private destinations) and north-south
/// (everything else). A packet is looked up only in its own class's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Table {
    EastWest,
    NorthSouth,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::EastWest, Table::NorthSouth];

    /// The class id the data plane uses for this table.
    pub fn class(self) -> u32 {
        match self {
            Table::EastWest => CLASS_EAST_WEST,
            Table::NorthSouth => CLASS_NORTH_SOUTH,
        }
    }

    pub fn name(self) -> &'static str {
        CLASS_NAMES[self.class() as usize]
    }
}

/// East-west unless configured otherwise: RFC 1918, shared address space (RFC 6598)
/// and unique local IPv6 (RFC 4193).
pub const DEFAULT_EAST_WEST: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// Generic over where its writes go (`FibWriter`): the data plane's maps, or a
/// recording in unit tests.
pub struct Fib<W: FibWriter = Dataplane> {
    dp: W,
    /// Prefixes whose destinations are east-west.
    east_west: Vec<IpNet>,
    nexthops: Slots<NhId, NhEntry>,
    nh_ids: FxHashMap<NhKey, NhId>,
    groups: Slots<u32, Group>,
    group_ids: FxHashMap<Vec<NhId>, u32>,
    /// Every source's route, and what is in the data plane, per table and prefix (one
    /// map: a route change finds both with one lookup).
    entries: crate::PrefixMap<(Table, IpNet), Entry>,
    /// The targets `entries` name, each stored once.
    targets: Targets,
    /// The routes of prefixes with more than one source.
    lists: SourceLists,
    /// Kernel route changes not yet taken by the daemon (see `take_kernel_ops`).
    kernel_ops: Vec<KernelOp>,
    /// The nexthop objects of mirrored forward targets (each holds a reference to its
    /// target).
    kernel_objects: FxHashMap<TargetId, KernelObject>,
    /// The next kernel nexthop object id.
    next_kernel_id: u32,
    stats: FibStats,
    keep_dead_routes: bool,
    /// Mirror BGP routes into the kernel.
    mirror_bgp: bool,
    /// Routes that could not be installed, with why (see `settle`).
    failed: std::collections::HashMap<(Table, IpNet), String>,
    /// When a failure was last logged.
    failure_logged: Option<std::time::Instant>,
}

/// Upper bounds (seconds) of the route-change duration histogram.
pub const UPDATE_BUCKETS: [f64; 10] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 1e-3, 1e-2, 1e-1,
];

/// How much work route changes cost (for metrics).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FibStats {
    /// Route changes written to the data plane.
    pub updates: u64,
    /// Total time spent writing them.
    pub seconds: f64,
    /// Route changes per duration bucket (`UPDATE_BUCKETS` upper bounds, then the rest).
    pub buckets: [u64; UPDATE_BUCKETS.len() + 1],
    /// Route changes that could not be installed (each retried later).
    pub install_failures: u64,
}

impl<W: FibWriter> Fib<W> {
    pub fn new(dp: W) -> Self {
        Self {
            dp,
            east_west: Vec::new(),
            nexthops: Slots::new(),
            nh_ids: FxHashMap::default(),
            groups: Slots::new(),
            group_ids: FxHashMap::default(),
            entries: crate::PrefixMap::default(),
            targets: Targets::default(),
            lists: SourceLists::default(),
            kernel_ops: Vec::new(),
            kernel_objects: FxHashMap::default(),
            next_kernel_id: 1,
            stats: FibStats::default(),
            keep_dead_routes: false,
            mirror_bgp: true,
            failed: std::collections::HashMap::new(),
            failure_logged: None,
        }
    }

    pub fn stats(&self) -> FibStats {
        self.stats
    }

    /// Kernel route changes since the last call, in order. Routes from configured
    /// sources (static, and later BGP) are mirrored into the kernel so that what the data
    /// plane passes up meets the same routes there.
    pub fn take_kernel_ops(&mut self) -> Vec<KernelOp> {
        std::mem::take(&mut self.kernel_ops)
    }

    /// Kernel nexthop object ids this FIB hands out start at `base` (above those an
    /// earlier run left, which are deleted once this run's routes replaced theirs).
    pub fn set_kernel_id_base(&mut self, base: u32) {
        self.next_kernel_id = self.next_kernel_id.max(base);
    }

    /// Prefixes nva mirrors into the kernel as plain routes, not naming a nexthop
    /// object (blackholes): what to remove one by one on exit; the rest goes with
    /// their objects.
    pub fn kernel_plain_prefixes(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .entries
            .iter()
            .filter_map(|((_, p), e)| {
                let i = e.installed.as_ref()?;
                let target = self.targets.get(i.target);
                (self.mirrored(i.source, target) && matches!(target, Target::Blackhole))
                    .then_some(*p)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether a route of `source` with `target` is mirrored into the kernel.
    fn mirrored(&self, source: Source, target: &Target) -> bool {
        let by_source = match source {
            Source::Static | Source::StaticBackup => true,
            Source::Bgp => self.mirror_bgp,
            _ => false,
        };
        by_source && matches!(target, Target::Forward(_) | Target::Blackhole)
    }

    /// The kernel route of a mirrored target, for one more prefix: a forward target
    /// names its nexthop object, created with its first prefix.
    fn acquire_kernel_route(&mut self, target: TargetId) -> KernelRoute {
        if let Some(object) = self.kernel_objects.get_mut(&target) {
            object.routes += 1;
            return KernelRoute::Nexthop(object.id);
        }
        let Target::Forward(members) = self.targets.get(target) else {
            return KernelRoute::Blackhole;
        };
        let hops: Arc<[(IpAddr, u32)]> = members
            .iter()
            .map(|id| (self.nexthops[id].key.via, self.nexthops[id].key.ifindex))
            .collect();
        let id = self.next_kernel_id;
        let ids = crate::netlink::nexthops::ids_needed(hops.len());
        self.next_kernel_id += ids;
        self.kernel_ops.push(KernelOp::AddNexthop { id, hops });
        self.targets.retain(target);
        self.kernel_objects
            .insert(target, KernelObject { id, ids, routes: 1 });
        KernelRoute::Nexthop(id)
    }

    /// One prefix less names `target`'s kernel route; its object goes with the last.
    fn release_kernel_route(&mut self, target: TargetId) {
        let Some(object) = self.kernel_objects.get_mut(&target) else {
            return;
        };
        object.routes -= 1;
        if object.routes == 0 {
            let KernelObject { id, ids, .. } = *object;
            self.kernel_objects.remove(&target);
            self.kernel_ops.push(KernelOp::DelNexthop { id, ids });
            self.targets.release(target);
        }
    }

    /// Sets the east-west destination prefixes (everything else is north-south) and
    /// programs the data plane's classifier with them.
    pub fn set_east_west(&mut self, prefixes: &[IpNet]) -> Result<()> {
        let wanted: Vec<IpNet> = prefixes.iter().map(IpNet::trunc).collect();
        for p in &wanted {
            self.dp.set_class_prefix(p, Some(CLASS_EAST_WEST))?;
        }
        for p in self.east_west.clone() {
            if !wanted.contains(&p) {
                self.dp.set_class_prefix(&p, None)?;
            }
        }
        self.east_west = wanted;
        Ok(())
    }

    /// The table a destination (or a route's prefix) belongs to.
    pub fn classify(&self, prefix: IpNet) -> Table {
        let ew = self
            .east_west
            .iter()
            .any(|e| e.prefix_len() <= prefix.prefix_len() && e.contains(&prefix.network()));
        if ew {
            Table::EastWest
        } else {
            Table::NorthSouth
        }
    }

    pub fn dataplane(&self) -> &W {
        &self.dp
    }

    pub fn dataplane_mut(&mut self) -> &mut W {
        &mut self.dp
    }

    /// Finds or creates the next hop `key` and writes it to the data plane.
    pub fn nexthop(&mut self, key: NhKey, port: &Port) -> Result<NhId> {
        self.nexthop_with(key, port, Neigh::default())
    }

    /// `nexthop`, and a new one starts with the neighbour's state as the kernel has it
    /// (its MAC: usable before any route names it; or failed: not used until it
    /// answers). An existing next hop keeps its state (neighbour events keep it
    /// current).
    pub fn nexthop_with(&mut self, key: NhKey, port: &Port, neigh: Neigh) -> Result<NhId> {
        if let Some(&id) = self.nh_ids.get(&key) {
            return Ok(id);
        }
        let id = (1..MAX_NEXTHOPS as NhId)
            .find(|id| !self.nexthops.contains_key(id))
            .context("next-hop table full")?;
        let entry = NhEntry {
            key,
            port: port.clone(),
            dmac: neigh.mac,
            neigh_failed: neigh.failed,
            probe_down: false,
            refs: 0,
        };
        self.dp.write_nexthop(id, &entry.to_map())?;
        self.nexthops.insert(id, entry);
        self.nh_ids.insert(key, id);
        Ok(id)
    }

    /// Sets (or replaces) the route of `source` for `prefix` in the table the prefix
    /// belongs to; routes that describe the box itself (local, connected, neighbour)
    /// go into both tables.
    pub fn set_route(&mut self, prefix: IpNet, source: Source, target: Target) -> Result<()> {
        for table in self.tables_for(prefix, source) {
            self.set_route_in(*table, prefix, source, target.clone())?;
        }
        Ok(())
    }

    fn tables_for(&self, prefix: IpNet, source: Source) -> &'static [Table] {
        match source {
            Source::Local | Source::Connected | Source::Neighbour => &Table::ALL,
            Source::Static | Source::StaticBackup | Source::Bgp => match self.classify(prefix) {
                Table::EastWest => &[Table::EastWest],
                Table::NorthSouth => &[Table::NorthSouth],
            },
        }
    }

    /// Sets (or replaces) the route of `source` for `prefix` in `table`.
    pub fn set_route_in(
        &mut self,
        table: Table,
        prefix: IpNet,
        source: Source,
        target: Target,
    ) -> Result<()> {
        let prefix = prefix.trunc();
        if let Target::Forward(members) = &target {
            if members.is_empty() {
                bail!("route {prefix}: forward route without next hops");
            }
            if let Some(m) = members.iter().find(|m| !self.nexthops.contains_key(m)) {
                bail!("route {prefix}: unknown next hop id {m}");
            }
        }
        self.retain_target(&target);
        let id = self.targets.intern(target);
        let entry = self.entries.entry((table, prefix)).or_default();
        let old = self.lists.insert(&mut entry.sources, source, id);
        let result = self.reinstall(table, prefix);
        self.release_offered(old)?;
        self.settle(table, prefix, result);
        Ok(())
    }

    /// Withdraws the routes of `source` for `prefix` from every table; another
    /// source's route, if any, takes its place.
    pub fn remove_route(&mut self, prefix: IpNet, source: Source) -> Result<()> {
        for table in Table::ALL {
            self.remove_route_in(table, prefix, source)?;
        }
        Ok(())
    }

    pub fn remove_route_in(&mut self, table: Table, prefix: IpNet, source: Source) -> Result<()> {
        let prefix = prefix.trunc();
        let key = (table, prefix);
        let Some(entry) = self.entries.get_mut(&key) else {
            return Ok(());
        };
        let Some(removed) = self.lists.remove(&mut entry.sources, source) else {
            return Ok(());
        };
        let result = self.reinstall(table, prefix);
        self.release_offered(Some(removed))?;
        self.settle(table, prefix, result);
        Ok(())
    }

    /// Records how installing a prefix went. A route that cannot be installed (a full
    /// DIR-24-8 or multibit FIB, a full group table, a map error) fails on its own: it
    /// is listed (`nva routes --uninstalled`), counted, logged (at most every 10 s) and
    /// retried by `retry_failed` until room comes back; other routes go on.
    fn settle(&mut self, table: Table, prefix: IpNet, result: Result<()>) {
        let key = (table, prefix);
        match result {
            Ok(()) => {
                self.failed.remove(&key);
            }
            Err(e) => {
                self.stats.install_failures += 1;
                let now = std::time::Instant::now();
                if self
                    .failure_logged
                    .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10))
                {
                    self.failure_logged = Some(now);
                    tracing::warn!(
                        failed_routes = self.failed.len() + 1,
                        "FIB: a route could not be installed (listed by `nva routes --uninstalled`, retried): {e:#}"
                    );
                }
                self.failed.insert(key, format!("{e:#}"));
            }
        }
    }

    /// Tries the routes that could not be installed again (after room was freed).
    /// Returns how many are installed now.
    pub fn retry_failed(&mut self) -> usize {
        if self.failed.is_empty() {
            return 0;
        }
        let keys: Vec<(Table, IpNet)> = self.failed.keys().copied().collect();
        let mut done = 0;
        for (table, prefix) in keys {
            if !self.entries.contains_key(&(table, prefix)) {
                self.failed.remove(&(table, prefix));
                continue;
            }
            let result = self.reinstall(table, prefix);
            let ok = result.is_ok();
            self.settle(table, prefix, result);
            if ok {
                done += 1;
            }
        }
        if done > 0 {
            tracing::info!(
                installed = done,
                left = self.failed.len(),
                "FIB: routes that had failed are installed now"
            );
        }
        done
    }

    /// How many routes could not be installed.
    pub fn failed_count(&self) -> usize {
        self.failed.len()
    }

    /// Routes that could not be installed: (table, prefix, why).
    pub fn failed_routes(&self) -> Vec<(Table, IpNet, String)> {
        let mut out: Vec<_> = self
            .failed
            .iter()
            .map(|((t, p), why)| (*t, *p, why.clone()))
            .collect();
        out.sort_by_key(|(t, p, _)| (*t, *p));
        out
    }

    /// (table, prefix) pairs a source currently has routes for.
    pub fn prefixes_of(&self, source: Source) -> Vec<(Table, IpNet)> {
        self.entries
            .iter()
            .filter(|(_, e)| self.lists.get(&e.sources).iter().any(|(s, _)| *s == source))
            .map(|(k, _)| *k)
            .collect()
    }

    fn reinstall(&mut self, table: Table, prefix: IpNet) -> Result<()> {
        let started = std::time::Instant::now();
        let key = (table, prefix);
        let before = self.installed(&key).copied();
        let result = self.reinstall_inner(table, prefix);
        let after = self.installed(&key).copied();
        if before.map(|i| (i.source, i.target)) == after.map(|i| (i.source, i.target)) {
            return result;
        }
        let secs = started.elapsed().as_secs_f64();
        self.stats.updates += 1;
        self.stats.seconds += secs;
        let bucket = UPDATE_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(UPDATE_BUCKETS.len());
        self.stats.buckets[bucket] += 1;
        // The kernel's view of the prefix: east-west's route if it is mirrored, else
        // north-south's. Only this table's entry changed, so if what it shows the kernel
        // is the same, so is the view. Compared as targets (the same next-hop ids are
        // the same kernel route), built only when it changed. (`before`'s target may be
        // released by now: its id is only compared.)
        fn shown<W: FibWriter>(fib: &Fib<W>, inst: Option<&Installed>) -> Option<TargetId> {
            inst.filter(|i| fib.mirrored(i.source, fib.targets.get(i.target)))
                .map(|i| i.target)
        }
        let (shown_before, shown_after) =
            (shown(self, before.as_ref()), shown(self, after.as_ref()));
        if shown_before == shown_after {
            return result;
        }
        // The other table's entry is the same before and after: read it once.
        let others = Table::ALL.map(|t| {
            (t != table)
                .then(|| shown(self, self.installed(&(t, prefix))))
                .flatten()
        });
        let view = |this: Option<TargetId>| {
            Table::ALL
                .iter()
                .zip(others)
                .find_map(|(t, other)| if *t == table { this } else { other })
        };
        let (kernel_before, kernel_after) = (view(shown_before), view(shown_after));
        if kernel_before != kernel_after {
            // The new object exists before the route names it; the old one goes after.
            let route = kernel_after.map(|t| self.acquire_kernel_route(t));
            self.kernel_ops.push(KernelOp::Route(prefix, route));
            if let Some(t) = kernel_before {
                self.release_kernel_route(t);
            }
        }
        result
    }

    fn reinstall_inner(&mut self, table: Table, prefix: IpNet) -> Result<()> {
        let key = (table, prefix);
        let class = table.class();
        // The most preferred source whose route can carry traffic; a forward route
        // whose next hops are all down is skipped (its destinations fall through to a
        // backup route or a less specific prefix) unless configured to stay.
        let Some(entry) = self.entries.get(&key) else {
            return Ok(());
        };
        let sources = self.lists.get(&entry.sources);
        let best = sources
            .iter()
            .rev()
            .find(|(_, t)| self.usable(self.targets.get(*t)))
            .or_else(|| {
                if self.keep_dead_routes {
                    sources.last()
                } else {
                    None
                }
            })
            .copied();
        let old = entry.installed;
        let Some((source, target)) = best else {
            if let Some(old) = old {
                self.dp.remove_route(class, &prefix)?;
                self.set_installed(key, None);
                if let Some(g) = old.group() {
                    self.release_group(g)?;
                }
            } else {
                self.set_installed(key, None);
            }
            return Ok(());
        };
        if let Some(old) = &old
            && old.source == source
            && old.target == target
        {
            return Ok(());
        }
        // Make before break: the new group exists before the route points at it.
        let (route, group) = match self.targets.get(target) {
            Target::Forward(members) => {
                let g = self.acquire_group(&members.clone())?;
                (
                    Route {
                        action: ROUTE_FORWARD,
                        group: g,
                    },
                    g,
                )
            }
            Target::Local => (route_of(ROUTE_LOCAL), 0),
            Target::Connected | Target::Kernel => (route_of(ROUTE_CONNECTED), 0),
            Target::Blackhole => (route_of(ROUTE_BLACKHOLE), 0),
        };
        if let Err(e) = self.dp.insert_route(class, &prefix, route) {
            if group != 0 {
                self.release_group(group)?;
            }
            return Err(e.context(format!("installing route {prefix} ({})", table.name())));
        }
        self.set_installed(
            key,
            Some(Installed {
                source,
                target,
                group,
            }),
        );
        if let Some(g) = old.and_then(|o| o.group()) {
            self.release_group(g)?;
        }
        Ok(())
    }

    fn installed(&self, key: &(Table, IpNet)) -> Option<&Installed> {
        self.entries.get(key).and_then(|e| e.installed.as_ref())
    }

    /// Records what is installed for `key` (moving the reference to its target),
    /// dropping the entry once it has neither routes nor an installed one.
    fn set_installed(&mut self, key: (Table, IpNet), installed: Option<Installed>) {
        if let Some(e) = self.entries.get_mut(&key) {
            if let Some(new) = &installed {
                self.targets.retain(new.target);
            }
            if let Some(old) = std::mem::replace(&mut e.installed, installed) {
                self.targets.release(old.target);
            }
            if e.installed.is_none() && matches!(e.sources, Sources::Empty) {
                self.entries.remove(&key);
            }
        }
    }

    fn acquire_group(&mut self, members: &[NhId]) -> Result<u32> {
        // Usually already sorted and unique: look it up without allocating.
        if members.windows(2).all(|w| w[0] < w[1])
            && let Some(&id) = self.group_ids.get(members)
        {
            self.groups.get_mut(&id).expect("indexed group").refs += 1;
            return Ok(id);
        }
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        if let Some(&id) = self.group_ids.get(&members) {
            self.groups.get_mut(&id).expect("indexed group").refs += 1;
            return Ok(id);
        }
        let id = (1..MAX_GROUPS)
            .find(|id| !self.groups.contains_key(id))
            .context("ECMP group table full")?;
        let mut group = Group {
            members: members.clone(),
            buckets: [0; ECMP_BUCKETS],
            refs: 1,
        };
        buckets::rebalance(&mut group.buckets, &self.live(&members));
        self.dp.write_group(
            id,
            &EcmpGroup {
                buckets: group.buckets,
            },
        )?;
        self.groups.insert(id, group);
        self.group_ids.insert(members, id);
        Ok(id)
    }

    fn release_group(&mut self, id: u32) -> Result<()> {
        let Some(group) = self.groups.get_mut(&id) else {
            return Ok(());
        };
        group.refs -= 1;
        if group.refs > 0 {
            return Ok(());
        }
        let group = self.groups.remove(&id).expect("present");
        self.group_ids.remove(&group.members);
        // No route points here any more; clear it so a stale id can never forward.
        self.dp.write_group(
            id,
            &EcmpGroup {
                buckets: [0; ECMP_BUCKETS],
            },
        )?;
        Ok(())
    }

    /// Counts a route's references to its next hops.
    fn retain_target(&mut self, target: &Target) {
        if let Target::Forward(members) = target {
            for m in members.iter() {
                if let Some(nh) = self.nexthops.get_mut(m) {
                    nh.refs += 1;
                }
            }
        }
    }

    /// Drops a route's references to its target and next hops (after the route is
    /// gone).
    fn release_offered(&mut self, target: Option<TargetId>) -> Result<()> {
        let Some(id) = target else {
            return Ok(());
        };
        if let Target::Forward(members) = self.targets.get(id).clone() {
            for m in members.iter() {
                self.unref_nexthop(*m)?;
            }
        }
        self.targets.release(id);
        Ok(())
    }

    fn unref_nexthop(&mut self, id: NhId) -> Result<()> {
        let Some(nh) = self.nexthops.get_mut(&id) else {
            return Ok(());
        };
        nh.refs = nh.refs.saturating_sub(1);
        if nh.refs == 0 {
            let nh = self.nexthops.remove(&id).expect("present");
            self.nh_ids.remove(&nh.key);
            self.dp.write_nexthop(
                id,
                &NextHop {
                    ifindex: 0,
                    flags: 0,
                    mtu: 0,
                    vlan: 0,
                    smac: [0; 6],
                    dmac: [0; 6],
                },
            )?;
        }
        Ok(())
    }

    fn usable(&self, target: &Target) -> bool {
        match target {
            Target::Forward(members) => members
                .iter()
                .any(|m| self.nexthops.get(m).is_some_and(NhEntry::live)),
            _ => true,
        }
    }

    pub fn set_mirror_bgp(&mut self, mirror: bool) {
        self.mirror_bgp = mirror;
    }

    /// Keep routes whose next hops are all down in the data plane (their traffic then
    /// meets the no-route policy) instead of falling through.
    pub fn set_keep_dead_routes(&mut self, keep: bool) {
        self.keep_dead_routes = keep;
    }

    fn live(&self, members: &[NhId]) -> Vec<NhId> {
        members
            .iter()
            .copied()
            .filter(|m| self.nexthops.get(m).is_some_and(NhEntry::live))
            .collect()
    }

    /// Applies a next hop's new state: rewrites its entry and, when its liveness
    /// changed, only its buckets in every group that names it.
    fn apply_nexthop(&mut self, id: NhId, was_live: bool) -> Result<()> {
        let nh = &self.nexthops[&id];
        let now_live = nh.live();
        self.dp.write_nexthop(id, &nh.to_map())?;
        if was_live == now_live {
            return Ok(());
        }
        tracing::info!(
            via = %nh.key.via,
            dev = %nh.port.name,
            live = now_live,
            "next hop {}",
            if now_live { "up" } else { "down" }
        );
        let affected: Vec<u32> = self
            .groups
            .iter()
            .filter(|(_, g)| g.members.contains(&id))
            .map(|(gid, _)| gid)
            .collect();
        // Groups that keep (or regain) a live member are rewritten before any route
        // moves to them; a group left without one only after its routes moved to a
        // fallback (until then its old buckets serve).
        let mut emptied = Vec::new();
        for gid in affected {
            let live = self.live(&self.groups[&gid].members);
            if live.is_empty() {
                emptied.push(gid);
                continue;
            }
            let group = self.groups.get_mut(&gid).expect("present");
            buckets::rebalance(&mut group.buckets, &live);
            let buckets = group.buckets;
            self.dp.write_group(gid, &EcmpGroup { buckets })?;
        }
        // Routes may switch between their own next hops and a fallback.
        let naming = self.targets.naming(id);
        let keys: Vec<(Table, IpNet)> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                self.lists
                    .get(&e.sources)
                    .iter()
                    .any(|(_, t)| naming.contains(t))
            })
            .map(|(k, _)| *k)
            .collect();
        for (table, prefix) in keys {
            let result = self.reinstall(table, prefix);
            self.settle(table, prefix, result);
        }
        // Still named (by routes configured to stay, or that could not move): their
        // traffic meets the no-route policy. (An id released above may already serve
        // another group, written with its live members when it was made.)
        for gid in emptied {
            let Some(members) = self.groups.get(&gid).map(|g| g.members.clone()) else {
                continue;
            };
            if !self.live(&members).is_empty() {
                continue;
            }
            if let Some(group) = self.groups.get_mut(&gid) {
                buckets::rebalance(&mut group.buckets, &[]);
                let buckets = group.buckets;
                self.dp.write_group(gid, &EcmpGroup { buckets })?;
            }
        }
        Ok(())
    }

    /// A health probe's verdict on the next hops with address `via`.
    pub fn update_health(&mut self, via: IpAddr, healthy: bool) -> Result<()> {
        let ids: Vec<NhId> = self
            .nexthops
            .iter()
            .filter(|(_, nh)| nh.key.via == via && nh.probe_down == healthy)
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let nh = self.nexthops.get_mut(&id).expect("present");
            let was_live = nh.live();
            nh.probe_down = !healthy;
            self.apply_nexthop(id, was_live)?;
        }
        Ok(())
    }

    /// An egress port changed (carrier, MAC, MTU).
    pub fn update_port(&mut self, ifindex: u32, port: &Port) -> Result<()> {
        let ids: Vec<NhId> = self
            .nexthops
            .iter()
            .filter(|(_, nh)| nh.key.ifindex == ifindex)
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let nh = self.nexthops.get_mut(&id).expect("present");
            let was_live = nh.live();
            nh.port = port.clone();
            self.apply_nexthop(id, was_live)?;
        }
        Ok(())
    }

    /// A neighbour entry changed: `mac` is the usable link-layer address (None when the
    /// entry is gone or not usable yet), `failed` when resolution failed.
    ///
    /// A next hop keeps its last known MAC when the entry merely disappears (garbage
    /// collection, link flap): only a failed resolution takes it out of its groups, and
    /// the daemon asks the kernel to resolve it again meanwhile.
    pub fn update_neighbour(
        &mut self,
        ifindex: u32,
        ip: IpAddr,
        mac: Option<[u8; 6]>,
        failed: bool,
    ) -> Result<()> {
        let ids: Vec<NhId> = self
            .nexthops
            .iter()
            .filter(|(_, nh)| nh.key.via == ip && nh.key.ifindex == ifindex)
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            let nh = self.nexthops.get_mut(&id).expect("present");
            let was_live = nh.live();
            let dmac = mac.or(nh.dmac);
            if nh.dmac == dmac && nh.neigh_failed == failed {
                continue;
            }
            tracing::debug!(%ip, ifindex, ?mac, failed, "next hop neighbour state");
            nh.dmac = dmac;
            nh.neigh_failed = failed;
            self.apply_nexthop(id, was_live)?;
        }
        Ok(())
    }

    /// True when `ip` on `ifindex` is one of the next hops.
    pub fn is_nexthop(&self, ifindex: u32, ip: IpAddr) -> bool {
        self.nexthops
            .values()
            .any(|nh| nh.key.ifindex == ifindex && nh.key.via == ip)
    }

    /// Next hops whose MAC is not known yet or whose resolution failed (to ask the
    /// kernel to resolve them again).
    pub fn unresolved(&self) -> Vec<(u32, IpAddr)> {
        self.nexthops
            .values()
            .filter(|nh| (nh.dmac.is_none() || nh.neigh_failed) && nh.port.up)
            .map(|nh| (nh.key.ifindex, nh.key.via))
            .collect()
    }

    pub fn nexthop_views(&self) -> Vec<NextHopView> {
        self.nexthops
            .iter()
            .map(|(id, nh)| NextHopView {
                id,
                via: nh.key.via,
                dev: nh.port.name.clone(),
                ifindex: nh.key.ifindex,
                vlan: nh.key.vlan,
                mac: nh.dmac.as_ref().map(format_mac),
                resolved: nh.dmac.is_some(),
                link_up: nh.port.up,
                neighbour_failed: nh.neigh_failed,
                probe_down: nh.probe_down,
                live: nh.live(),
                routes: nh.refs,
            })
            .collect()
    }

    /// The installed route a packet to `addr` matches: longest prefix in the table of
    /// the address's class (as the data plane classifies it without port overrides).
    pub fn longest_match(&self, addr: IpAddr) -> Option<RouteView> {
        self.longest_match_in(self.classify(IpNet::from(addr)), addr)
    }

    /// Longest prefix match for `addr` in one table.
    pub fn longest_match_in(&self, table: Table, addr: IpAddr) -> Option<RouteView> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let prefix = IpNet::new(addr, len).ok()?.trunc();
            let inst = self.installed(&(table, prefix))?;
            Some(self.route_view(table, &prefix, inst))
        })
    }

    fn route_view(&self, table: Table, prefix: &IpNet, inst: &Installed) -> RouteView {
        let (action, members) = match self.targets.get(inst.target) {
            Target::Forward(m) => ("forward", m.to_vec()),
            Target::Local => ("local", vec![]),
            Target::Connected => ("connected", vec![]),
            Target::Kernel => ("kernel", vec![]),
            Target::Blackhole => ("blackhole", vec![]),
        };
        let via = |ids: &[NhId]| ids.iter().map(|id| self.nexthops[id].key.via).collect();
        RouteView {
            table,
            prefix: *prefix,
            source: inst.source,
            action,
            nexthops: via(&members),
            live_nexthops: via(&self.live(&members)),
            group: inst.group(),
        }
    }

    /// Installed routes, sorted by table and prefix.
    pub fn route_views(&self) -> Vec<RouteView> {
        let mut routes: Vec<(&(Table, IpNet), &Installed)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| Some((k, e.installed.as_ref()?)))
            .collect();
        routes.sort_by_key(|(k, _)| *k);
        routes
            .into_iter()
            .map(|(k, i)| self.route_view(k.0, &k.1, i))
            .collect()
    }

    /// Installed (IPv4, IPv6) routes, over both tables.
    /// Installed routes by (IPv4?, source), without building views (a scrape counts a
    /// million routes in a few milliseconds).
    pub fn route_counts_by_source(&self) -> FxHashMap<(bool, Source), usize> {
        let mut counts = FxHashMap::default();
        for ((_, p), e) in &self.entries {
            if let Some(i) = &e.installed {
                *counts.entry((p.addr().is_ipv4(), i.source)).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn route_count(&self) -> (usize, usize) {
        let (mut v4, mut v6) = (0, 0);
        for ((_, p), e) in &self.entries {
            if e.installed.is_some() {
                if p.addr().is_ipv4() {
                    v4 += 1;
                } else {
                    v6 += 1;
                }
            }
        }
        (v4, v6)
    }
}

fn route_of(action: u32) -> Route {
    Route { action, group: 0 }
}
