//! `nva run`: wires config, netlink, the data plane, the FIB programmer and the control
//! socket together, then follows link and neighbour changes until SIGINT/SIGTERM
//! (graceful: detach, remove kernel routes) or SIGQUIT (exit for a restart: with a pin
//! directory the XDP program keeps forwarding until the next nva replaces it).
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use nva_common::{
    MAX_IF_SLOTS, MAX_SEGMENTS, PORT_FORCE_EAST_WEST, PORT_FORCE_NORTH_SOUTH, SET_DROP_NO_ROUTE_EW,
    SET_DROP_NO_ROUTE_NS, SET_SEGMENTS, SET_SYMMETRIC_HASH, Settings,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{info, warn};

use crate::{
    bgp::{Command as BgpCommand, Event as SessionEvent, PeerId, Speaker},
    bgp_install::BgpInstall,
    config::{
        Config, FibKind, Ipv6FibKind, NoRoute, ProbeSetting, RouteAction, SegmentAction,
        TrafficClass, XdpMode,
    },
    control,
    dataplane::{Dataplane, LoadOptions},
    fib::{DEFAULT_EAST_WEST, Fib, KernelOp, NhKey, Port, Source, Table, Target},
    health::{ProbeKind, ProbeSpec, Prober},
    metrics,
    netlink::{
        self, AddrInfo, LinkInfo, Neighbour, NetEvent, Netlink,
        routes::{GatewayRoute, KernelRoute, RouteEvent},
    },
    resolve::{self, Resolver, ResolvingRoute},
    rib::RibChange,
    routing::{BgpFeed, Reconfigured},
};

/// An interface nva forwards between.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    /// Counter slot in the data plane.
    pub slot: u32,
    /// `PORT_*` flags (class override).
    pub flags: u32,
    pub port: Port,
}

/// Everything the control socket can look at, behind one lock.
pub struct State {
    pub config: Config,
    /// Where the config came from (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// What the data plane's SETTINGS map holds.
    pub settings: Settings,
    /// Packets per second per (counter slot, reason) over the last second.
    pub rates: HashMap<(u32, u32), f64>,
    last_sample: Option<(Instant, PacketCounts)>,
    pub fib: Fib,
    pub ifaces: Vec<Iface>,
    /// Addresses of the box, for connected subnets.
    pub addrs: Vec<AddrInfo>,
    /// Next hops to ask the kernel to resolve right away.
    pub resolve_now: Vec<(u32, IpAddr)>,
    /// Prefixes currently programmed into segments.
    segment_prefixes: Vec<IpNet>,
    /// Neighbour MACs seen at start, so new next hops are resolved before any route
    /// points at them.
    known_macs: HashMap<(u32, IpAddr), [u8; 6]>,
    /// Neighbour entries whose resolution failed (a gateway not yet a next hop of
    /// any route is judged by them too).
    neigh_failed: HashSet<(u32, IpAddr)>,
    /// The kernel's gateway routes that are not nva's own, by (prefix, metric): next
    /// hops resolve through them.
    kernel_routes: HashMap<(IpNet, u32), GatewayRoute>,
    /// The static routes of the running config, checked against the machine.
    planned: Vec<PlannedRoute>,
    /// Static routes not installed because no next hop resolves (logged once).
    unresolved_statics: HashSet<IpNet>,
    /// Next-hop health probes.
    pub prober: Prober,
    /// Since when the self check passes (None while it fails).
    healthy_since: Option<Instant>,
    /// The BGP feed, when BGP is configured.
    pub bgp: Option<BgpFeed>,
    /// BGP's selected routes waiting for a next hop the FIB can hold.
    bgp_install: BgpInstall,
    pub started: Instant,
}

impl State {
    /// Runs a BGP event through the feed; returns the session commands to send.
    fn bgp_event(&mut self, event: BgpEvent) -> Vec<(PeerId, BgpCommand)> {
        if self.bgp.is_none() {
            return Vec::new();
        }
        let before: HashSet<u16> = self.fib.nexthop_views().iter().map(|n| n.id).collect();
        let resolver = self.resolver();
        let fib = &self.fib;
        let classify = |p| fib.classify(p);
        let out = self.bgp.as_mut().map(|feed| match event {
            BgpEvent::Session(e) => feed.handle_event(e, &classify, &resolver),
            BgpEvent::SweepStale(peer) => Ok(feed.sweep_stale(peer)),
        });
        let out =
            out.map(|r| r.and_then(|out| self.install_bgp(&out.changes).map(|()| out.commands)));
        // New next hops: use MACs already known from the neighbour table.
        for nh in self.fib.nexthop_views() {
            if !before.contains(&nh.id)
                && let Some(mac) = self.known_macs.get(&(nh.ifindex, nh.via))
            {
                let _ = self
                    .fib
                    .update_neighbour(nh.ifindex, nh.via, Some(*mac), false);
            }
        }
        match out {
            Some(Ok(commands)) => commands,
            Some(Err(e)) => {
                warn!("BGP: programming the FIB failed: {e:#}");
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Writes the BGP feed's selection changes into the FIB, over the gateways its
    /// next hops resolve to now.
    fn install_bgp(&mut self, changes: &[(Table, RibChange)]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let ports = self.ports();
        let State {
            bgp,
            bgp_install,
            fib,
            ..
        } = self;
        let Some(feed) = bgp.as_ref() else {
            return Ok(());
        };
        bgp_install.apply(changes, feed.tracker(), fib, &|i| ports.get(&i).cloned())
    }
}

impl State {
    /// The egress ports by ifindex.
    fn ports(&self) -> HashMap<u32, Port> {
        self.ifaces
            .iter()
            .map(|f| (f.ifindex, f.port.clone()))
            .collect()
    }

    /// A snapshot of everything next hops resolve through: connected subnets of nva's
    /// interfaces, static routes with direct next hops, the kernel's gateway routes
    /// over nva's interfaces, and which gateways are down.
    fn resolver(&self) -> Resolver {
        let mut r = base_resolver(
            &self.config,
            &self.ifaces,
            &self.addrs,
            &self.planned,
            self.kernel_routes.values(),
        );
        let ports = self.ports();
        let fib_live: HashMap<NhKey, bool> = self
            .fib
            .nexthop_views()
            .iter()
            .map(|v| {
                (
                    NhKey {
                        ifindex: v.ifindex,
                        via: v.via,
                        vlan: v.vlan,
                    },
                    v.live,
                )
            })
            .collect();
        for hop in r.routes.iter().flat_map(|r| &r.hops) {
            let down = match fib_live.get(hop) {
                Some(live) => !live,
                None => {
                    !ports.get(&hop.ifindex).is_some_and(|p| p.up)
                        || self.neigh_failed.contains(&(hop.ifindex, hop.via))
                }
            };
            if down {
                r.down.insert(*hop);
            }
        }
        r.probe_down = self
            .prober
            .status()
            .into_iter()
            .filter(|st| !st.healthy)
            .map(|st| st.spec.target)
            .collect();
        r
    }

    /// Next-hop tracking: after anything a resolution reads changed (routes, links,
    /// neighbours, probes), static routes over recursive next hops and BGP routes
    /// follow their next hops' new resolution. Nothing is rewritten when nothing moved.
    fn follow_resolution(&mut self) -> Vec<(PeerId, BgpCommand)> {
        let planned = std::mem::take(&mut self.planned);
        if let Err(e) = self.apply_static_routes(&planned) {
            warn!("re-resolving static routes: {e:#}");
        }
        self.planned = planned;
        if self.bgp.is_none() {
            return Vec::new();
        }
        let resolver = self.resolver();
        let Some(out) = self
            .bgp
            .as_mut()
            .map(|feed| feed.follow_resolution(&resolver))
        else {
            return Vec::new();
        };
        if let Err(e) = self.install_bgp(&out.changes) {
            warn!("BGP: following next-hop resolution failed: {e:#}");
            return Vec::new();
        }
        out.commands
    }
}

impl State {
    /// `resolved_via` for many routes: BGP routes share a few next hops, so each next-hop
    /// set is described once (`memo`), the same JSON shared by every route over it.
    pub fn resolved_via_memo(
        &self,
        source: Source,
        table: Table,
        prefix: &IpNet,
        memo: &mut HashMap<Vec<IpAddr>, std::sync::Arc<Vec<serde_json::Value>>>,
    ) -> Option<std::sync::Arc<Vec<serde_json::Value>>> {
        if source != Source::Bgp {
            let via = self.resolved_via(source, table, prefix);
            return (!via.is_empty()).then(|| std::sync::Arc::new(via));
        }
        let feed = self.bgp.as_ref()?;
        let nexthops = feed.selected_nexthops(table, prefix)?;
        let described = memo
            .entry(nexthops)
            .or_insert_with_key(|hops| std::sync::Arc::new(feed.describe_nexthops(hops)));
        (!described.is_empty()).then(|| described.clone())
    }

    /// How a route's next hops resolve, for `nva routes`: BGP next hops and static
    /// routes' recursive next hops with what they resolve through (empty for routes
    /// over directly connected next hops).
    pub fn resolved_via(
        &self,
        source: Source,
        table: Table,
        prefix: &IpNet,
    ) -> Vec<serde_json::Value> {
        match source {
            Source::Bgp => self
                .bgp
                .as_ref()
                .map(|feed| feed.resolved_via(table, prefix))
                .unwrap_or_default(),
            Source::Static | Source::StaticBackup => {
                let Some(route) = self.planned.iter().find(|r| r.prefix == *prefix) else {
                    return Vec::new();
                };
                let hops = if source == Source::Static {
                    &route.target
                } else {
                    &route.backup
                };
                let recursive: Vec<IpAddr> = hops
                    .iter()
                    .filter_map(|h| match h {
                        PlannedHop::Recursive(via) => Some(*via),
                        PlannedHop::Direct(_) => None,
                    })
                    .collect();
                if recursive.is_empty() {
                    return Vec::new();
                }
                let resolver = self.resolver();
                recursive
                    .into_iter()
                    .map(|via| {
                        let r = resolver.resolve(via);
                        serde_json::json!({
                            "next_hop": via,
                            "resolution": r.describe(),
                            "gateways": r.hops().iter().map(|h| h.via).collect::<Vec<_>>(),
                        })
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

impl State {
    /// Routes that could not be installed are tried again (once a second): room may
    /// have come back (blocks or groups freed, next hops released).
    fn retry_failed_routes(&mut self) {
        // The resolver snapshot is built only when a BGP route waits for it.
        if self.bgp_install.has_unapplied()
            && let Some(feed) = &self.bgp
        {
            let keys = self.bgp_install.take_unapplied();
            let changes = feed.selections(&keys);
            if let Err(e) = self.install_bgp(&changes) {
                warn!("BGP: retrying routes: {e:#}");
            }
        }
        self.fib.retry_failed();
    }
}

/// Graceful-restart timers, one generation per restart of a peer: a timer belongs to
/// the restart that armed it, so an earlier restart's timer never sweeps the paths a
/// later restart keeps.
#[derive(Debug, Default)]
struct RestartTimers(HashMap<PeerId, u64>);

impl RestartTimers {
    /// A restart of `peer` began: returns its generation.
    fn arm(&mut self, peer: PeerId) -> u64 {
        let g = self.0.entry(peer).or_default();
        *g += 1;
        *g
    }

    /// Whether the timer of `generation` is the current restart's.
    fn expired(&self, peer: PeerId, generation: u64) -> bool {
        self.0.get(&peer) == Some(&generation)
    }
}

#[cfg(test)]
mod restart_timer_tests {
    use super::RestartTimers;

    #[test]
    fn a_timer_of_an_earlier_restart_does_not_sweep() {
        let peer = "10.0.255.4".parse().unwrap();
        let other = "10.0.255.5".parse().unwrap();
        let mut t = RestartTimers::default();
        let first = t.arm(peer);
        let o = t.arm(other);
        assert!(t.expired(peer, first));
        let second = t.arm(peer);
        assert!(
            !t.expired(peer, first),
            "the first restart's timer is stale"
        );
        assert!(t.expired(peer, second));
        assert!(t.expired(other, o));
    }
}

/// Inputs of the BGP feed: session events and graceful-restart timers.
pub enum BgpEvent {
    Session(crate::bgp::Event),
    SweepStale(PeerId),
}

impl State {
    /// The probes the configuration asks for: every next hop of the static routes with
    /// its own `probe` or `health.probe`, plus `health.track` targets.
    fn wanted_probes(&self) -> Vec<ProbeSpec> {
        let h = &self.config.health;
        let default: ProbeSetting = h.probe.parse().unwrap_or(ProbeSetting::None);
        let mut specs = Vec::new();
        let mut add = |target: IpAddr, dev: Option<&str>, setting: ProbeSetting| {
            let kind = match setting {
                ProbeSetting::None => return,
                ProbeSetting::Icmp => ProbeKind::Icmp,
                ProbeSetting::Tcp(port) => ProbeKind::Tcp { port },
                ProbeSetting::UdpEcho(port) => ProbeKind::UdpEcho { port },
            };
            let spec = ProbeSpec {
                target,
                interface: dev.map(str::to_string),
                kind,
                interval: Duration::from_millis(h.interval_ms),
                multiplier: h.multiplier,
                hold_down: Duration::from_millis(h.hold_down_ms),
            };
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        };
        for route in &self.config.routes {
            for nh in route.nexthops.iter().chain(&route.backup_nexthops) {
                let setting = nh
                    .probe
                    .as_deref()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(default);
                let dev = nh.dev.as_deref().or_else(|| {
                    self.fib
                        .nexthop_views()
                        .into_iter()
                        .find(|v| v.via == nh.via)
                        .and_then(|v| self.ifaces.iter().find(|f| f.ifindex == v.ifindex))
                        .map(|f| f.name.as_str())
                });
                add(nh.via, dev, setting);
            }
        }
        for t in &h.track {
            if let Ok(setting) = t.probe.parse() {
                add(t.target, None, setting);
            }
        }
        specs
    }

    /// Withdraws (or prepends) the BGP announcements while the self check fails, and
    /// announces normally again after the hold-down of good health.
    fn follow_self_health(&mut self) -> Vec<(PeerId, BgpCommand)> {
        let problems = self.self_check();
        let now = Instant::now();
        if !problems.is_empty() {
            self.healthy_since = None;
        } else if self.healthy_since.is_none() {
            self.healthy_since = Some(now);
        }
        let when_sick = self.config.health.when_sick;
        let hold_down = Duration::from_millis(self.config.health.hold_down_ms);
        let Some(feed) = self.bgp.as_mut() else {
            return Vec::new();
        };
        match (feed.degraded(), problems.is_empty()) {
            (None, false) => {
                warn!(
                    ?problems,
                    ?when_sick,
                    "nva is unhealthy: degrading its announcements"
                );
                feed.set_degraded(Some(when_sick))
            }
            (Some(_), true)
                if self
                    .healthy_since
                    .is_some_and(|t| now.duration_since(t) >= hold_down) =>
            {
                info!("nva is healthy again: announcing normally");
                feed.set_degraded(None)
            }
            _ => Vec::new(),
        }
    }

    /// Self health: XDP attached to every interface, maps answering, every interface
    /// up, every tracked target answering. Returns the problems (empty = healthy).
    pub fn self_check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let dp = self.fib.dataplane();
        for f in &self.ifaces {
            if !dp.attached().any(|i| i == f.ifindex) {
                problems.push(format!("XDP not attached to {}", f.name));
            }
            if !f.port.up {
                problems.push(format!("interface {} is down", f.name));
            }
        }
        if dp.counters(0).is_err() {
            problems.push("data-plane maps do not answer".into());
        }
        if let Some(links) = dp.kernel_links()
            && links < self.ifaces.len()
            && self.config.dataplane.xdp_mode == XdpMode::Native
        {
            problems.push(format!(
                "the kernel has {links} XDP links of nva's program for {} interfaces",
                self.ifaces.len()
            ));
        }
        let tracked: Vec<IpAddr> = self.config.health.track.iter().map(|t| t.target).collect();
        for st in self.prober.status() {
            if tracked.contains(&st.spec.target) && !st.healthy {
                problems.push(format!("tracked target {} does not answer", st.spec.target));
            }
        }
        problems
    }

    /// Samples the counters and updates `rates` (called once a second).
    fn sample_rates(&mut self) {
        let now = Instant::now();
        let mut sample = HashMap::new();
        for iface in &self.ifaces {
            if let Ok(cells) = self.fib.dataplane().counters(iface.slot) {
                for (reason, c) in cells.iter().enumerate() {
                    sample.insert((iface.slot, reason as u32), c.packets);
                }
            }
        }
        if let Some((then, prev)) = &self.last_sample {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            self.rates = sample
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        v.saturating_sub(*prev.get(k).unwrap_or(v)) as f64 / secs,
                    )
                })
                .collect();
        }
        self.last_sample = Some((now, sample));
    }

    /// Turns planned static routes into routes of the FIB, and withdraws static routes
    /// that are no longer configured. Unchanged routes are not touched; changed ones are
    /// replaced make-before-break.
    fn apply_static_routes(&mut self, planned: &[PlannedRoute]) -> Result<()> {
        let mut wanted = std::collections::HashSet::new();
        let recursive = planned.iter().any(|r| {
            r.target
                .iter()
                .chain(&r.backup)
                .any(|h| matches!(h, PlannedHop::Recursive(_)))
        });
        let resolver = if recursive {
            self.resolver()
        } else {
            Resolver::default()
        };
        for route in planned {
            let table = route
                .table
                .unwrap_or_else(|| self.fib.classify(route.prefix));
            let target = match route.action {
                RouteAction::Forward => {
                    let ids = self.nexthop_ids(&route.target, &resolver)?;
                    if ids.is_empty() {
                        // No next hop resolves: not installed until one does.
                        if self.unresolved_statics.insert(route.prefix) {
                            warn!(prefix = %route.prefix, "static route not installed: none of its next hops resolves");
                        }
                        None
                    } else {
                        if self.unresolved_statics.remove(&route.prefix) {
                            info!(prefix = %route.prefix, "static route installed: its next hops resolve again");
                        }
                        Some(Target::Forward(ids.into()))
                    }
                }
                RouteAction::Blackhole => Some(Target::Blackhole),
                RouteAction::Kernel => Some(Target::Kernel),
            };
            if let Some(target) = target {
                self.fib
                    .set_route_in(table, route.prefix, Source::Static, target)?;
                wanted.insert((table, route.prefix.trunc(), Source::Static));
            }
            if !route.backup.is_empty() {
                let ids = self.nexthop_ids(&route.backup, &resolver)?;
                if !ids.is_empty() {
                    self.fib.set_route_in(
                        table,
                        route.prefix,
                        Source::StaticBackup,
                        Target::Forward(ids.into()),
                    )?;
                    wanted.insert((table, route.prefix.trunc(), Source::StaticBackup));
                }
            }
        }
        for source in [Source::Static, Source::StaticBackup] {
            for (table, prefix) in self.fib.prefixes_of(source) {
                if !wanted.contains(&(table, prefix, source)) {
                    self.fib.remove_route_in(table, prefix, source)?;
                }
            }
        }
        Ok(())
    }

    /// The data plane's next hops of a static route: direct ones as they are,
    /// recursive ones through what they resolve to (none when unresolved).
    fn nexthop_ids(&mut self, hops: &[PlannedHop], resolver: &Resolver) -> Result<Vec<u16>> {
        let mut ids = Vec::new();
        for hop in hops {
            let keys: Vec<NhKey> = match hop {
                PlannedHop::Direct(k) => vec![*k],
                PlannedHop::Recursive(via) => resolver.resolve(*via).hops().to_vec(),
            };
            for key in keys {
                let port = &self
                    .ifaces
                    .iter()
                    .find(|f| f.ifindex == key.ifindex)
                    .context("next hop on an unknown interface")?
                    .port;
                let id = self.fib.nexthop(key, port)?;
                if let Some(mac) = self.known_macs.get(&(key.ifindex, key.via)) {
                    self.fib
                        .update_neighbour(key.ifindex, key.via, Some(*mac), false)?;
                }
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Programs the east-west prefix set and the segments with their policy.
    fn apply_separation(&mut self, config: &Config) -> Result<()> {
        let mut east_west: Vec<IpNet> = Vec::new();
        if config.separation.default_east_west {
            east_west.extend(
                DEFAULT_EAST_WEST
                    .iter()
                    .map(|p| p.parse::<IpNet>().expect("valid")),
            );
        }
        east_west.extend(config.separation.east_west.iter().copied());
        self.fib.set_east_west(&east_west)?;

        let dp = self.fib.dataplane_mut();
        let mut programmed = Vec::new();
        for seg in &config.segments {
            let id = config.segment_id(&seg.name).expect("validated");
            for p in &seg.prefixes {
                dp.set_segment_prefix(p, Some(id))?;
                programmed.push(*p);
            }
        }
        for p in &self.segment_prefixes {
            if !programmed.contains(p) {
                dp.set_segment_prefix(p, None)?;
            }
        }
        self.segment_prefixes = programmed;
        // Each cell is written once with its final value: a reload never opens a window
        // in which a denied pair is allowed (clearing the matrix first did).
        let denied: HashSet<(u32, u32)> = config
            .segment_rules
            .iter()
            .filter(|r| r.action == SegmentAction::Deny)
            .map(|r| {
                (
                    config.segment_id(&r.from).expect("validated"),
                    config.segment_id(&r.to).expect("validated"),
                )
            })
            .collect();
        for from in 0..MAX_SEGMENTS {
            for to in 0..MAX_SEGMENTS {
                dp.set_segment_policy(from, to, denied.contains(&(from, to)))?;
            }
        }
        Ok(())
    }

    /// Applies a new configuration (SIGHUP): interfaces added or removed, settings,
    /// static routes. Only differences touch the data plane; unchanged routes keep
    /// forwarding throughout. On error the running state stays as it was as far as it
    /// got, and the error names what failed.
    fn reload(
        &mut self,
        config: Config,
        links: &[LinkInfo],
        addrs: &[AddrInfo],
    ) -> Result<Option<Reconfigured>> {
        // The new config is recorded as running only once all of it applied: when a part
        // fails, the old one stays recorded, so the same file sent again is applied again
        // (and what did apply is left as it is, consistent on its own).
        let old_config = self.config.clone();
        let old_planned = self.planned.clone();
        let result = self.apply_config(config, links, addrs);
        if result.is_err() {
            self.config = old_config;
            self.planned = old_planned;
        }
        result
    }

    fn apply_config(
        &mut self,
        config: Config,
        links: &[LinkInfo],
        addrs: &[AddrInfo],
    ) -> Result<Option<Reconfigured>> {
        let kernel: Vec<GatewayRoute> = self.kernel_routes.values().cloned().collect();
        let (new_ifaces, planned) = plan(&config, links, addrs, &kernel)?;
        if config.control != self.config.control {
            warn!("control.socket changes take effect at the next start");
        }
        let bgp_changed = config.bgp != self.config.bgp
            || config.policies != self.config.policies
            || config.prefix_lists != self.config.prefix_lists
            || (config.routes != self.config.routes
                && config.bgp.as_ref().is_some_and(|b| b.announce_static));
        if config.bgp.as_ref().map(|b| b.listen) != self.config.bgp.as_ref().map(|b| b.listen) {
            warn!("bgp.listen changes take effect at the next start");
        }
        if load_options(&config) != *self.fib.dataplane().options() {
            warn!("dataplane.ipv4_fib_* / ipv6_fib_* changes take effect at the next start");
        }
        let generic = config.dataplane.xdp_mode == XdpMode::Generic;
        let mode_changed = config.dataplane.xdp_mode != self.config.dataplane.xdp_mode;
        // New interfaces first, so routes can use them.
        for mut iface in new_ifaces.clone() {
            if self.ifaces.iter().any(|f| f.ifindex == iface.ifindex) {
                continue;
            }
            iface.slot = free_slot(&self.ifaces)?;
            let dp = self.fib.dataplane_mut();
            dp.add_port(iface.ifindex, iface.slot, iface.flags, iface.port.mac)?;
            dp.attach(iface.ifindex, &iface.name, generic)?;
            info!(interface = %iface.name, "XDP attached (reload)");
            no_redirects(&iface.name);
            self.ifaces.push(iface);
        }
        let settings = Settings {
            hash_seed: config
                .dataplane
                .hash_seed
                .unwrap_or(self.settings.hash_seed),
            flags: settings_of(&config).flags,
        };
        self.fib.dataplane_mut().set_settings(settings)?;
        self.settings = settings;
        // Class overrides of interfaces that stay.
        for iface in &new_ifaces {
            if let Some(cur) = self.ifaces.iter_mut().find(|f| f.ifindex == iface.ifindex)
                && cur.flags != iface.flags
            {
                cur.flags = iface.flags;
                let (ifindex, slot, flags, mac) = (cur.ifindex, cur.slot, cur.flags, cur.port.mac);
                self.fib
                    .dataplane_mut()
                    .add_port(ifindex, slot, flags, mac)?;
            }
        }
        self.fib
            .set_keep_dead_routes(config.health.keep_dead_routes);
        self.apply_separation(&config)?;
        // Resolution reads the new config's settings and static routes.
        self.config = config.clone();
        self.planned = planned.clone();
        self.apply_static_routes(&planned)
            .context("static routes")?;
        let specs = self.wanted_probes();
        self.prober.set(specs);
        // Interfaces no longer configured: nothing routes through them now.
        let removed: Vec<Iface> = self
            .ifaces
            .iter()
            .filter(|f| !new_ifaces.iter().any(|n| n.ifindex == f.ifindex))
            .cloned()
            .collect();
        for iface in removed {
            let dp = self.fib.dataplane_mut();
            dp.detach(iface.ifindex, &iface.name)?;
            dp.remove_port(iface.ifindex)?;
            self.ifaces.retain(|f| f.ifindex != iface.ifindex);
            info!(interface = %iface.name, "XDP detached (reload)");
        }
        if mode_changed {
            for iface in self.ifaces.clone() {
                let dp = self.fib.dataplane_mut();
                dp.detach(iface.ifindex, &iface.name)?;
                dp.attach(iface.ifindex, &iface.name, generic)?;
            }
            info!(mode = ?config.dataplane.xdp_mode, "XDP re-attached in the new mode");
        }
        let reconfigured = if bgp_changed {
            self.reconfigure_bgp(&config).context("BGP")?
        } else {
            None
        };
        self.config = config;
        Ok(reconfigured)
    }

    /// BGP peers, policies or announcements changed: the feed adapts, and the daemon
    /// starts/stops sessions as returned.
    fn reconfigure_bgp(&mut self, config: &Config) -> Result<Option<Reconfigured>> {
        let out = match self.bgp.as_mut().map(|feed| feed.reconfigure(config)) {
            Some(result) => {
                let out = result?;
                self.install_bgp(&out.changes)?;
                Some(out)
            }
            None => BgpFeed::new(config).map(|mut feed| {
                let add = feed.session_configs();
                let commands = feed.export_all();
                self.bgp = Some(feed);
                Reconfigured {
                    add,
                    remove: Vec::new(),
                    commands,
                    changes: Vec::new(),
                }
            }),
        };
        if config.bgp.is_none() {
            self.bgp = None;
        }
        Ok(out)
    }

    /// Keeps the host route of a neighbour on a connected subnet of one of our ports in
    /// step with the neighbour entry: present while usable, gone otherwise (the kernel
    /// then resolves it again, and the route comes back with the entry).
    fn neighbour_route(&mut self, n: &Neighbour) -> Result<()> {
        let Some(iface) = self.ifaces.iter().find(|f| f.ifindex == n.ifindex) else {
            return Ok(());
        };
        let on_subnet = self.addrs.iter().any(|a| {
            a.ifindex == n.ifindex
                && a.addr != n.ip
                && IpNet::new(a.addr, a.prefix_len).is_ok_and(|net| net.contains(&n.ip))
        });
        let link_local = match n.ip {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        };
        // Link-local destinations are never forwarded (the data plane passes them).
        if !on_subnet || link_local || n.ip.is_multicast() {
            return Ok(());
        }
        let host = IpNet::from(n.ip);
        if n.usable && n.mac.is_some() {
            let key = NhKey {
                ifindex: n.ifindex,
                via: n.ip,
                vlan: 0,
            };
            let port = iface.port.clone();
            let id = self.fib.nexthop(key, &port)?;
            self.fib
                .update_neighbour(n.ifindex, n.ip, n.mac, n.failed)?;
            self.fib
                .set_route(host, Source::Neighbour, Target::Forward([id].into()))
        } else {
            self.fib.remove_route(host, Source::Neighbour)
        }
    }
}

pub type Shared = Arc<Mutex<State>>;

/// Packets per (counter slot, reason).
type PacketCounts = HashMap<(u32, u32), u64>;

fn port_of(link: &LinkInfo) -> Port {
    Port {
        name: link.name.clone(),
        mac: link.mac,
        mtu: link.mtu,
        up: link.up,
    }
}

/// A static route's next hop, checked against the machine.
#[derive(Clone, Debug, PartialEq)]
enum PlannedHop {
    /// On a connected subnet of (or explicitly out of) one of nva's interfaces.
    Direct(NhKey),
    /// Anywhere else: resolved through other routes (see `resolve`).
    Recursive(IpAddr),
}

/// A static route with its next hops checked against the machine.
#[derive(Clone, Debug)]
struct PlannedRoute {
    prefix: IpNet,
    /// Explicit table; by the prefix's class when None.
    table: Option<Table>,
    target: Vec<PlannedHop>,
    /// Backup next hops (used while all of `target` are down).
    backup: Vec<PlannedHop>,
    action: RouteAction,
}

/// What next hops resolve through, from the config and the machine (without which
/// gateways are down: see `State::resolver`).
fn base_resolver<'a>(
    config: &Config,
    ifaces: &[Iface],
    addrs: &[AddrInfo],
    planned: &[PlannedRoute],
    kernel: impl Iterator<Item = &'a GatewayRoute>,
) -> Resolver {
    let attached: HashSet<u32> = ifaces.iter().map(|f| f.ifindex).collect();
    let mut r = Resolver {
        connected: addrs
            .iter()
            .filter(|a| attached.contains(&a.ifindex))
            .filter_map(|a| Some((IpNet::new(a.addr, a.prefix_len).ok()?.trunc(), a.ifindex)))
            .collect(),
        own: addrs.iter().map(|a| a.addr).collect(),
        via_default: config.resolve.via_default,
        ..Default::default()
    };
    for route in planned {
        if route.action != RouteAction::Forward {
            continue;
        }
        let hops: Option<Vec<NhKey>> = route
            .target
            .iter()
            .map(|h| match h {
                PlannedHop::Direct(k) => Some(*k),
                PlannedHop::Recursive(_) => None,
            })
            .collect();
        if let Some(hops) = hops {
            r.routes.push(ResolvingRoute {
                prefix: route.prefix,
                origin: resolve::Origin::Static,
                hops,
            });
        }
    }
    if config.resolve.kernel_routes {
        // Among routes of one prefix, the lowest metric.
        let mut best: HashMap<IpNet, &GatewayRoute> = HashMap::new();
        for g in kernel {
            if g.hops.iter().all(|(_, oif)| attached.contains(oif)) {
                let e = best.entry(g.prefix).or_insert(g);
                if g.metric < e.metric {
                    *e = g;
                }
            }
        }
        for g in best.into_values() {
            r.routes.push(ResolvingRoute {
                prefix: g.prefix,
                origin: resolve::Origin::Kernel,
                hops: g
                    .hops
                    .iter()
                    .map(|(via, ifindex)| NhKey {
                        ifindex: *ifindex,
                        via: *via,
                        vlan: 0,
                    })
                    .collect(),
            });
        }
    }
    r.index();
    r
}

/// Checks the config against the machine (interfaces exist, next hops are on a
/// connected subnet of a configured interface or resolve through a route) before
/// anything is attached.
fn plan(
    config: &Config,
    links: &[LinkInfo],
    addrs: &[AddrInfo],
    kernel: &[GatewayRoute],
) -> Result<(Vec<Iface>, Vec<PlannedRoute>)> {
    let mut ifaces = Vec::new();
    for (i, iface) in config.interfaces.iter().enumerate() {
        let link = links
            .iter()
            .find(|l| l.name == iface.name)
            .with_context(|| {
                format!("interfaces[{i}].name: no interface named {:?}", iface.name)
            })?;
        ifaces.push(Iface {
            name: iface.name.clone(),
            ifindex: link.ifindex,
            slot: 0,
            flags: match iface.class {
                None => 0,
                Some(TrafficClass::EastWest) => PORT_FORCE_EAST_WEST,
                Some(TrafficClass::NorthSouth) => PORT_FORCE_NORTH_SOUTH,
            },
            port: port_of(link),
        });
    }
    let mut routes = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let plan_hops = |list: &[crate::config::NextHopSpec],
                         name: &str|
         -> Result<Vec<PlannedHop>> {
            let mut out = Vec::new();
            for (j, nh) in list.iter().enumerate() {
                let field = format!("routes[{i}].{name}[{j}]");
                if addrs.iter().any(|a| a.addr == nh.via) {
                    bail!("{field}.via: {} is an address of this box", nh.via);
                }
                let iface_idx = match &nh.dev {
                    Some(dev) => Some(ifaces.iter().position(|f| &f.name == dev).with_context(
                        || format!("{field}.dev: {dev:?} is not a configured interface"),
                    )?),
                    None => ifaces.iter().position(|f| {
                        addrs.iter().any(|a| {
                            a.ifindex == f.ifindex
                                && IpNet::new(a.addr, a.prefix_len)
                                    .is_ok_and(|n| n.contains(&nh.via))
                        })
                    }),
                };
                out.push(match iface_idx {
                    Some(idx) => PlannedHop::Direct(NhKey {
                        ifindex: ifaces[idx].ifindex,
                        via: nh.via,
                        vlan: nh.vlan.unwrap_or(0),
                    }),
                    None if nh.vlan.is_some() => bail!(
                        "{field}.vlan: a VLAN next hop must be on a connected subnet (or set `dev`)"
                    ),
                    // Not on a connected subnet: resolved through other routes.
                    None => PlannedHop::Recursive(nh.via),
                });
            }
            Ok(out)
        };
        let target = plan_hops(&route.nexthops, "nexthops")?;
        let backup = plan_hops(&route.backup_nexthops, "backup_nexthops")?;
        routes.push(PlannedRoute {
            prefix: route.prefix,
            table: route.table.map(table_of),
            backup,
            target,
            action: route.action,
        });
    }
    // A next hop off the connected subnets must resolve through some route now (a
    // static route with direct next hops, or the kernel's); later it may come and go.
    let resolver = base_resolver(config, &ifaces, addrs, &routes, kernel.iter());
    for (i, route) in routes.iter().enumerate() {
        for (name, hops) in [
            ("nexthops", &route.target),
            ("backup_nexthops", &route.backup),
        ] {
            for (j, hop) in hops.iter().enumerate() {
                if let PlannedHop::Recursive(via) = hop
                    && let resolve::Resolution::Unresolved(why) = resolver.resolve(*via)
                {
                    bail!(
                        "routes[{i}].{name}[{j}].via: {via} is not on a connected subnet of \
                         any configured interface and {why} (add a route to it, set `dev`, \
                         or add an address)"
                    );
                }
            }
        }
    }
    Ok((ifaces, routes))
}

/// Routes every address of the box implies: the address itself is local, its subnet
/// is connected (the kernel resolves and forwards to hosts there).
fn address_routes(addr: &AddrInfo) -> Vec<(IpNet, Source, Target)> {
    let is_link_local = match addr.addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    };
    if is_link_local || addr.addr.is_loopback() {
        return vec![];
    }
    let host = IpNet::from(addr.addr);
    let mut out = vec![(host, Source::Local, Target::Local)];
    if let Ok(net) = IpNet::new(addr.addr, addr.prefix_len) {
        let net = net.trunc();
        if net != host {
            out.push((net, Source::Connected, Target::Connected));
        }
    }
    out
}

/// A router that sends traffic back out of the interface it came in on (a single-NIC
/// NVA, as Azure recommends) must not send ICMP redirects for what the kernel forwards
/// (packets XDP passes up): the kernel ORs `all` with the interface's setting, so both
/// go off.
fn no_redirects(ifname: &str) {
    for scope in ["all", ifname] {
        let path = format!("/proc/sys/net/ipv4/conf/{scope}/send_redirects");
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "0" => {}
            Ok(_) => match std::fs::write(&path, "0") {
                Ok(()) => info!(%path, "ICMP redirects turned off"),
                Err(e) => warn!(%path, "cannot turn ICMP redirects off: {e}"),
            },
            Err(e) => warn!(%path, "cannot read: {e}"),
        }
    }
}

fn settings_of(config: &Config) -> Settings {
    let mut flags = 0;
    if config.dataplane.symmetric_hash {
        flags |= SET_SYMMETRIC_HASH;
    }
    let sep = &config.separation;
    if sep.no_route_east_west.unwrap_or(config.dataplane.no_route) == NoRoute::Drop {
        flags |= SET_DROP_NO_ROUTE_EW;
    }
    if sep
        .no_route_north_south
        .unwrap_or(config.dataplane.no_route)
        == NoRoute::Drop
    {
        flags |= SET_DROP_NO_ROUTE_NS;
    }
    if config
        .segment_rules
        .iter()
        .any(|r| r.action == SegmentAction::Deny)
    {
        flags |= SET_SEGMENTS;
    }
    let hash_seed = config.dataplane.hash_seed.unwrap_or_else(random_seed);
    Settings { hash_seed, flags }
}

fn random_seed() -> u32 {
    let mut seed = [0u8; 4];
    // SAFETY: valid buffer of the given length.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != 4 {
        // Not security relevant: fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ t.as_secs() as u32;
    }
    u32::from_ne_bytes(seed)
}

fn table_of(class: TrafficClass) -> Table {
    match class {
        TrafficClass::EastWest => Table::EastWest,
        TrafficClass::NorthSouth => Table::NorthSouth,
    }
}

fn load_options(config: &Config) -> LoadOptions {
    LoadOptions {
        dir24_ipv4: [
            config.dataplane.ipv4_fib_east_west == FibKind::Dir24_8,
            config.dataplane.ipv4_fib_north_south == FibKind::Dir24_8,
        ],
        multibit_ipv6: [
            config.dataplane.ipv6_fib_east_west == Ipv6FibKind::Multibit,
            config.dataplane.ipv6_fib_north_south == Ipv6FibKind::Multibit,
        ],
        multibit_blocks: config.dataplane.ipv6_fib_blocks.unwrap_or(0),
        dir24_blocks: config.dataplane.ipv4_fib_blocks.unwrap_or(0),
        dxr_ipv4: [
            config.dataplane.ipv4_fib_east_west == FibKind::Dxr,
            config.dataplane.ipv4_fib_north_south == FibKind::Dxr,
        ],
        dxr_cells: config.dataplane.ipv4_fib_ranges.unwrap_or(0),
        pin_dir: config.dataplane.pin_path.as_ref().map(PathBuf::from),
    }
}

/// The first free counter slot.
fn free_slot(ifaces: &[Iface]) -> Result<u32> {
    (1..MAX_IF_SLOTS)
        .find(|s| !ifaces.iter().any(|f| f.slot == *s))
        .context("too many interfaces")
}

/// `nva config check`: what `nva run` checks against the machine before it touches
/// anything (interfaces exist, next hops are connected or resolve).
pub async fn check_on_host(config: &Config) -> Result<()> {
    let nl = Netlink::connect()?;
    let links = nl.links().await?;
    let addrs = nl.addresses().await?;
    let kernel = nl.gateway_routes().await?;
    plan(config, &links, &addrs, &kernel)?;
    Ok(())
}

/// An exclusive lock held for the daemon's lifetime (released by the kernel when the
/// process ends, however it ends). A clean exit also removes the file, while still
/// holding the lock, so stopped instances leave nothing behind.
struct InstanceLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
}

/// Takes the lock at `path` or says who holds it: a second `nva run` on the same control
/// socket or pin path must refuse before it touches anything (kernel routes, XDP, maps).
fn lock_instance(path: &std::path::Path, what: &str) -> Result<InstanceLock> {
    use std::{io::Write, os::fd::AsRawFd};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(path).unwrap_or_default();
        bail!(
            "another nva is running with this {what} (pid {}; lock {}): refusing to start",
            holder.trim(),
            path.display()
        );
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(InstanceLock {
        path: path.to_path_buf(),
        _file: file,
    })
}

/// The instance locks: one per control socket, one per pin path.
fn lock_instances(config: &Config, socket: &std::path::Path) -> Result<Vec<InstanceLock>> {
    let mut locks = vec![lock_instance(
        &PathBuf::from(format!("{}.lock", socket.display())),
        "control socket",
    )?];
    if let Some(pin) = &config.dataplane.pin_path {
        let name: String = pin
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        locks.push(lock_instance(
            &PathBuf::from(format!("/run/nva/pin{name}.lock")),
            "pin path",
        )?);
    }
    Ok(locks)
}

pub async fn run(config: Config, config_path: PathBuf, socket: PathBuf) -> Result<()> {
    let _locks = lock_instances(&config, &socket)?;
    for w in config.warnings() {
        warn!("config: {w}");
    }
    let nl = Netlink::connect()?;
    // Subscribe before dumping so no change between the dump and the watch is lost.
    let mut events = netlink::watch()?;
    let links = nl.links().await?;
    let addrs = nl.addresses().await?;
    // Routes next hops may resolve through; watched before the dump like the rest.
    let mut route_events = netlink::routes::watch_routes()?;
    let gateway_routes = nl.gateway_routes().await?;
    let (mut ifaces, planned) = plan(&config, &links, &addrs, &gateway_routes)?;
    for i in 0..ifaces.len() {
        ifaces[i].slot = free_slot(&ifaces[..i])?;
    }

    let neighbours = nl.neighbours().await?;

    let mut dp = Dataplane::load_with(load_options(&config))?;
    let mut settings = settings_of(&config);
    if config.dataplane.hash_seed.is_none()
        && let Some(seed) = dp.previous_hash_seed()
    {
        // A restart keeps flows on their paths.
        settings.hash_seed = seed;
    }
    dp.set_settings(settings)?;
    for iface in &ifaces {
        dp.add_port(iface.ifindex, iface.slot, iface.flags, iface.port.mac)?;
    }
    let (kernel, kernel_sync) = spawn_kernel_sync(nl.clone())?;

    // Program everything before attaching: after a restart the new program replaces
    // the running one atomically, so its tables must be complete first.
    let (prober, mut health_events) = Prober::start()?;
    let mut fib = Fib::new(dp);
    // Nexthop objects an earlier run left: this run's ids start above them, and they go
    // (with any route still naming them) once this run's routes have replaced theirs.
    let stale_nexthops = netlink::nexthops::Nexthops::open()
        .and_then(|mut n| n.own())
        .unwrap_or_else(|e| {
            warn!("listing the kernel's nexthop objects: {e:#}");
            Vec::new()
        });
    fib.set_kernel_id_base(stale_nexthops.iter().max().map_or(1, |m| m + 1));
    for addr in &addrs {
        for (prefix, source, target) in address_routes(addr) {
            fib.set_route(prefix, source, target)?;
        }
    }
    let metrics_listen = config.metrics.listen;
    let mut state = State {
        config,
        config_path,
        settings,
        rates: HashMap::new(),
        last_sample: None,
        fib,
        ifaces,
        addrs,
        resolve_now: Vec::new(),
        segment_prefixes: Vec::new(),
        prober,
        healthy_since: None,
        bgp: None,
        bgp_install: BgpInstall::default(),
        known_macs: neighbours
            .iter()
            .filter(|n| n.usable)
            .filter_map(|n| Some(((n.ifindex, n.ip), n.mac?)))
            .collect(),
        neigh_failed: neighbours
            .iter()
            .filter(|n| n.failed)
            .map(|n| (n.ifindex, n.ip))
            .collect(),
        kernel_routes: gateway_routes
            .into_iter()
            .map(|g| ((g.prefix, g.metric), g))
            .collect(),
        planned: planned.clone(),
        unresolved_statics: HashSet::new(),
        started: Instant::now(),
    };
    let config = state.config.clone();
    state
        .fib
        .set_keep_dead_routes(config.health.keep_dead_routes);
    state.apply_separation(&config)?;
    state.apply_static_routes(&planned)?;
    let specs = state.wanted_probes();
    state.prober.set(specs);
    for n in &neighbours {
        state
            .fib
            .update_neighbour(n.ifindex, n.ip, n.mac.filter(|_| n.usable), n.failed)?;
        state.neighbour_route(n)?;
    }
    state.bgp = BgpFeed::new(&config);
    if let Some(feed) = state.bgp.as_mut() {
        let dp = state.fib.dataplane();
        feed.set_restart_state(
            dp.options().pin_dir.is_some(),
            dp.previous_hash_seed().is_some(),
        );
    }
    if let Some(bgp) = &config.bgp {
        state.fib.set_mirror_bgp(bgp.kernel_routes);
    }
    let mut kernel_prefixes = std::collections::HashSet::new();
    for op in state.fib.take_kernel_ops() {
        if let KernelOp::Route(prefix, Some(_)) = &op {
            kernel_prefixes.insert(*prefix);
        }
        let _ = kernel.send(op);
    }
    // Kernel routes of an earlier run that this configuration no longer has.
    let removed = nl.flush_own_routes_except(&kernel_prefixes).await?;
    if removed > 0 {
        info!(removed, "removed stale kernel routes of an earlier run");
    }
    // Queued after this run's first routes, which replace the kept ones' objects.
    for id in stale_nexthops {
        let _ = kernel.send(KernelOp::DelNexthop { id, ids: 1 });
    }

    let generic = config.dataplane.xdp_mode == XdpMode::Generic;
    for iface in state.ifaces.clone() {
        // On error the data plane is dropped, which detaches what was attached.
        state
            .fib
            .dataplane_mut()
            .attach(iface.ifindex, &iface.name, generic)?;
        info!(interface = %iface.name, ifindex = iface.ifindex, mode = ?config.dataplane.xdp_mode, "XDP attached");
        no_redirects(&iface.name);
    }
    let (v4, v6) = state.fib.route_count();
    info!(routes_v4 = v4, routes_v6 = v6, "FIB programmed");
    let fibs: Vec<String> = state
        .fib
        .dataplane()
        .fib_memory()
        .iter()
        .map(|m| format!("{}/{}={}", m.table(), m.family(), m.structure))
        .collect();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %state.config_path.display(),
        control = %socket.display(),
        metrics = ?state.config.metrics.listen,
        bgp = state.config.bgp.is_some(),
        fib = %fibs.join(","),
        interfaces = state.ifaces.len(),
        "nva started"
    );
    let state: Shared = Arc::new(Mutex::new(state));
    let group = state
        .lock()
        .expect("state lock")
        .config
        .control
        .group
        .clone();
    let (action_tx, mut actions) = mpsc::channel::<control::ActionRequest>(4);
    let control = control::serve(&socket, group.as_deref(), state.clone(), action_tx)
        .with_context(|| format!("control socket {}", socket.display()))?;
    let metrics = match metrics_listen {
        Some(addr) => Some(
            metrics::serve(addr, state.clone())
                .await
                .with_context(|| format!("metrics.listen {addr}"))?,
        ),
        None => None,
    };

    // BGP: sessions run on their own tasks; their events come back here.
    let (session_tx, mut session_rx) = mpsc::channel::<SessionEvent>(1024);
    let (sweep_tx, mut sweep_rx) = mpsc::unbounded_channel::<(PeerId, u64)>();
    let mut restarts = RestartTimers::default();
    let mut speaker = Speaker::new(session_tx);
    let initial = {
        let mut st = state.lock().expect("state lock");
        match st.bgp.as_mut() {
            Some(feed) => {
                match feed.config.listen {
                    Some(listen) => {
                        speaker
                            .listen(listen)
                            .with_context(|| format!("bgp.listen {listen}"))?;
                    }
                    None => {
                        // Port 179 of each family nva has peers in; only a warning when
                        // taken (another BGP daemon on the box).
                        let families: HashSet<bool> = feed
                            .config
                            .peers
                            .iter()
                            .map(|p| p.address.is_ipv4())
                            .collect();
                        for v4 in families {
                            let any: IpAddr = if v4 {
                                std::net::Ipv4Addr::UNSPECIFIED.into()
                            } else {
                                std::net::Ipv6Addr::UNSPECIFIED.into()
                            };
                            let addr = std::net::SocketAddr::new(any, 179);
                            if let Err(e) = speaker.listen(addr) {
                                warn!(%addr, "BGP: not accepting connections: {e}");
                            }
                        }
                    }
                }
                for peer in feed.session_configs() {
                    speaker
                        .add_peer(peer)
                        .map_err(|e| anyhow::anyhow!("bgp.peers: {e}"))?;
                }
                feed.export_all()
            }
            None => Vec::new(),
        }
    };
    send_commands(&speaker, initial).await;
    crate::notify::ready(&format!(
        "forwarding: {v4} IPv4 and {v6} IPv6 routes programmed"
    ));

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigquit = signal(SignalKind::quit())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // SIGQUIT: exit for a restart or upgrade; with a pin directory, forwarding goes on
    // with the current tables until the next nva takes over.
    let mut keep_forwarding = false;
    let mut resolution_commands = Vec::new();
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigquit.recv() => {
                info!("SIGQUIT: exiting for a restart");
                keep_forwarding = true;
                break;
            }
            _ = sighup.recv() => {
                match apply_reload(&nl, &state, &mut speaker, &kernel).await {
                    Ok(summary) => info!(%summary, "SIGHUP: configuration reloaded"),
                    Err(e) => warn!("SIGHUP: configuration not reloaded: {e}"),
                }
            }
            Some((action, reply)) = actions.recv() => {
                let result = match action {
                    control::Action::Reload => {
                        let result = apply_reload(&nl, &state, &mut speaker, &kernel).await;
                        match &result {
                            Ok(summary) => info!(%summary, "reload: configuration reloaded"),
                            Err(e) => warn!("reload: configuration not reloaded: {e}"),
                        }
                        result
                    }
                    control::Action::ClearPeer { peer, soft } => {
                        clear_peer(&state, &mut speaker, &peer, soft).await
                    }
                };
                let _ = reply.send(result);
            }
            Some(event) = health_events.recv() => {
                let commands = {
                    let mut st = state.lock().expect("state lock");
                    let mut commands = Vec::new();
                    if st.wanted_probes().contains(&event.spec) {
                        info!(target = %event.spec.target, healthy = event.healthy, "health probe");
                        if let Err(e) = st.fib.update_health(event.spec.target, event.healthy) {
                            warn!("applying a health change: {e:#}");
                        }
                        commands = st.follow_resolution();
                        for op in st.fib.take_kernel_ops() {
                            let _ = kernel.send(op);
                        }
                    }
                    commands
                };
                send_commands(&speaker, commands).await;
            }
            Some(event) = route_events.recv() => {
                let commands = {
                    let mut st = state.lock().expect("state lock");
                    match event {
                        RouteEvent::Added(g) => {
                            st.kernel_routes.insert((g.prefix, g.metric), g);
                        }
                        RouteEvent::Removed { prefix, metric } => {
                            st.kernel_routes.remove(&(prefix, metric));
                        }
                        RouteEvent::Overrun => {
                            drop(st);
                            warn!("netlink: route notifications lost, dumping the kernel's routes again");
                            let routes = nl.gateway_routes().await.unwrap_or_else(|e| {
                                warn!("dumping kernel routes: {e:#}");
                                Vec::new()
                            });
                            st = state.lock().expect("state lock");
                            st.kernel_routes = routes.into_iter().map(|g| ((g.prefix, g.metric), g)).collect();
                        }
                    }
                    let commands = st.follow_resolution();
                    for op in st.fib.take_kernel_ops() {
                        let _ = kernel.send(op);
                    }
                    commands
                };
                send_commands(&speaker, commands).await;
            }
            Some(event) = session_rx.recv() => {
                let stale = match &event {
                    SessionEvent::Down { peer, stale_for: Some(t), .. } => Some((*peer, *t)),
                    _ => None,
                };
                let (commands, unresolved) = {
                    let mut st = state.lock().expect("state lock");
                    let commands = st.bgp_event(BgpEvent::Session(event));
                    for op in st.fib.take_kernel_ops() {
                        let _ = kernel.send(op);
                    }
                    (commands, st.fib.unresolved())
                };
                send_commands(&speaker, commands).await;
                // New BGP next hops: resolve now rather than at the next tick.
                for (ifindex, ip) in unresolved {
                    let _ = nl.resolve(ifindex, ip).await;
                }
                if let Some((peer, after)) = stale {
                    let tx = sweep_tx.clone();
                    let generation = restarts.arm(peer);
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send((peer, generation));
                    });
                }
            }
            Some((peer, generation)) = sweep_rx.recv() => {
                if !restarts.expired(peer, generation) {
                    // The timer of an earlier restart: a later one has its own.
                    continue;
                }
                let commands = {
                    let mut st = state.lock().expect("state lock");
                    let commands = st.bgp_event(BgpEvent::SweepStale(peer));
                    for op in st.fib.take_kernel_ops() {
                        let _ = kernel.send(op);
                    }
                    commands
                };
                send_commands(&speaker, commands).await;
            }
            event = events.recv() => match event {
                Some(event) => {
                    let resolve: Vec<_> = {
                        let mut st = state.lock().expect("state lock");
                        if let Err(e) = apply_event(&mut st, event) {
                            warn!("applying a netlink change: {e:#}");
                        }
                        resolution_commands.extend(st.follow_resolution());
                        for op in st.fib.take_kernel_ops() {
                            let _ = kernel.send(op);
                        }
                        st.resolve_now.drain(..).collect()
                    };
                    send_commands(&speaker, std::mem::take(&mut resolution_commands)).await;
                    for (ifindex, ip) in resolve {
                        if let Err(e) = nl.resolve(ifindex, ip).await {
                            warn!(%ip, ifindex, "neighbour resolution request failed: {e:#}");
                        }
                    }
                }
                None => bail!("netlink event stream ended"),
            },
            _ = tick.tick() => {
                crate::notify::watchdog();
                let due = {
                    let mut st = state.lock().expect("state lock");
                    st.sample_rates();
                    st.retry_failed_routes();
                    for op in st.fib.take_kernel_ops() {
                        let _ = kernel.send(op);
                    }
                    st.bgp.as_mut().map(|feed| {
                        let configs = feed.session_configs();
                        feed.due_restarts()
                            .into_iter()
                            .filter_map(|p| configs.iter().find(|c| c.remote_addr == p).cloned())
                            .collect::<Vec<_>>()
                    })
                };
                for config in due.unwrap_or_default() {
                    info!(peer = %config.name, "BGP: max-prefix restart timer: starting the session again");
                    restart_session(&state, &mut speaker, config.remote_addr, config).await;
                }
                let commands = state.lock().expect("state lock").follow_self_health();
                send_commands(&speaker, commands).await;
                // Ask the kernel to resolve next hops we have no MAC for yet; packets
                // meanwhile go to the kernel (counted as passed-neigh), which also resolves.
                let unresolved = state.lock().expect("state lock").fib.unresolved();
                for (ifindex, ip) in unresolved {
                    if let Err(e) = nl.resolve(ifindex, ip).await {
                        warn!(%ip, ifindex, "neighbour resolution request failed: {e:#}");
                    }
                }
            }
        }
    }
    crate::notify::stopping();
    control.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if !keep_forwarding {
        // Withdraw what we announce and give the peers time to move traffic away
        // before the data plane goes.
        let (withdrawals, drain) = {
            let st = state.lock().expect("state lock");
            let drain = Duration::from_millis(st.config.health.drain_ms);
            let w = st
                .bgp
                .as_ref()
                .map(BgpFeed::withdraw_all)
                .unwrap_or_default();
            (w, drain)
        };
        if !withdrawals.is_empty() {
            send_commands(&speaker, withdrawals).await;
            info!(
                drain_ms = drain.as_millis() as u64,
                "announcements withdrawn, draining"
            );
            tokio::time::sleep(drain).await;
        }
    }
    speaker.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    let pinned = state
        .lock()
        .expect("state lock")
        .fib
        .dataplane()
        .options()
        .pin_dir
        .is_some();
    if keep_forwarding && pinned {
        // Pinned links keep the XDP program attached; kernel routes stay for what it
        // passes up. The next nva replaces both.
        info!("XDP left attached for the next nva");
        return Ok(());
    }
    state
        .lock()
        .expect("state lock")
        .fib
        .dataplane_mut()
        .unpin_and_detach();
    info!("XDP detached");
    // Pending mirror updates are moot: everything of nva's goes. (Requests already
    // queued on the netlink socket reach the kernel before the flush's dump does.)
    drop(kernel);
    kernel_sync.abort();
    let _ = kernel_sync.await;
    // The flush's own deletions would come back as a million notifications to parse.
    drop(route_events);
    // The plain routes nva mirrored, by prefix; then every nexthop object of nva's,
    // which takes the routes naming it (nearly all) with it in one go; then a flush of
    // anything of nva's still there (little or nothing).
    let prefixes = state
        .lock()
        .expect("state lock")
        .fib
        .kernel_plain_prefixes();
    match tokio::task::spawn_blocking(move || netlink::routes::delete_routes_batched(&prefixes))
        .await
    {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => warn!(failed = n, "removing kernel routes: some deletions failed"),
        Ok(Err(e)) => warn!("removing kernel routes: {e:#}"),
        Err(e) => warn!("removing kernel routes: {e}"),
    }
    let objects = tokio::task::spawn_blocking(|| -> Result<usize> {
        let mut nexthops = netlink::nexthops::Nexthops::open()?;
        let ids = nexthops.own()?;
        for id in &ids {
            nexthops.delete(*id, 1)?;
        }
        Ok(ids.len())
    })
    .await;
    match objects {
        Ok(Ok(n)) => info!(objects = n, "kernel nexthop objects removed"),
        Ok(Err(e)) => warn!("removing kernel nexthop objects: {e:#}"),
        Err(e) => warn!("removing kernel nexthop objects: {e}"),
    }
    match nl.flush_own_routes().await {
        Ok(n) => info!(left_over = n, "kernel routes removed"),
        Err(e) => warn!("removing kernel routes: {e:#}"),
    }
    Ok(())
}

/// Sends session commands (outside the state lock).
async fn send_commands(speaker: &Speaker, commands: Vec<(PeerId, BgpCommand)>) {
    for (peer, command) in commands {
        if let Some(tx) = speaker.commands(peer) {
            let _ = tx.send(command).await;
        }
    }
}

/// `nva bgp clear PEER [--soft]`: restarts the session (a hard clear, e.g. after a
/// max-prefix teardown), or asks the peer for its routes again and re-announces ours.
async fn clear_peer(
    state: &Shared,
    speaker: &mut Speaker,
    name: &str,
    soft: bool,
) -> Result<String, String> {
    let (id, config, commands) = {
        let mut st = state.lock().expect("state lock");
        let Some(feed) = st.bgp.as_mut() else {
            return Err("BGP is not configured".into());
        };
        let Some(id) = feed.peer_by_name_or_address(name) else {
            return Err(format!("no BGP peer {name:?}"));
        };
        let config = feed
            .session_configs()
            .into_iter()
            .find(|c| c.remote_addr == id);
        let commands = if soft { feed.export_all() } else { Vec::new() };
        (id, config, commands)
    };
    if soft {
        send_commands(speaker, vec![(id, BgpCommand::RouteRefresh)]).await;
        send_commands(speaker, commands).await;
        return Ok(format!(
            "soft clear of {name}: route refresh sent, announcements sent again"
        ));
    }
    let Some(config) = config else {
        return Err(format!("no session configuration for {name:?}"));
    };
    restart_session(state, speaker, id, config).await;
    Ok(format!("session with {name} restarted"))
}

/// Stops a BGP session and starts it afresh (its routes go, then come back with it).
async fn restart_session(
    state: &Shared,
    speaker: &mut Speaker,
    peer: PeerId,
    config: crate::bgp::PeerConfig,
) {
    speaker.remove_peer(peer).await;
    if let Err(e) = speaker.add_peer(config) {
        warn!(%peer, "BGP: session not restarted: {e}");
        return;
    }
    let commands = state
        .lock()
        .expect("state lock")
        .bgp
        .as_mut()
        .map(|feed| feed.session_restarted(peer))
        .unwrap_or_default();
    send_commands(speaker, commands).await;
}

/// Reloads the config file (SIGHUP or `nva reload`): applies it, starts and stops BGP
/// sessions, follows the new resolution; returns a summary of what changed, or why
/// nothing did.
async fn apply_reload(
    nl: &Netlink,
    state: &Shared,
    speaker: &mut Speaker,
    kernel: &mpsc::UnboundedSender<KernelOp>,
) -> Result<String, String> {
    let before = state.lock().expect("state lock").config.clone();
    let outcome = reload(nl, state).await;
    let mut failures = Vec::new();
    if let Ok(Some(r)) = &outcome {
        for peer in &r.remove {
            speaker.remove_peer(*peer).await;
        }
        for cfg in &r.add {
            if let Err(e) = speaker.add_peer(cfg.clone()) {
                failures.push(format!("BGP peer {} not added: {e}", cfg.name));
            }
        }
    }
    let commands = {
        let mut st = state.lock().expect("state lock");
        let commands = st.follow_resolution();
        for op in st.fib.take_kernel_ops() {
            let _ = kernel.send(op);
        }
        commands
    };
    send_commands(speaker, commands).await;
    match outcome {
        Err(e) => Err(format!("{e:#}")),
        Ok(bgp) => {
            if let Some(r) = bgp {
                send_commands(speaker, r.commands).await;
            }
            let after = state.lock().expect("state lock").config.clone();
            let summary = config_changes(&before, &after);
            if failures.is_empty() {
                Ok(summary)
            } else {
                Err(format!("{summary}; but {}", failures.join("; ")))
            }
        }
    }
}

/// What a reload changed, in a line.
fn config_changes(old: &Config, new: &Config) -> String {
    fn diff<T: PartialEq>(old: &[T], new: &[T]) -> (usize, usize) {
        (
            new.iter().filter(|x| !old.contains(x)).count(),
            old.iter().filter(|x| !new.contains(x)).count(),
        )
    }
    let mut parts = Vec::new();
    let (added, removed) = diff(&old.routes, &new.routes);
    if added + removed > 0 {
        parts.push(format!("static routes +{added} -{removed}"));
    }
    let (added, removed) = diff(&old.interfaces, &new.interfaces);
    if added + removed > 0 {
        parts.push(format!("interfaces +{added} -{removed}"));
    }
    let peers = |c: &Config| c.bgp.as_ref().map(|b| b.peers.clone()).unwrap_or_default();
    let (added, removed) = diff(&peers(old), &peers(new));
    if added + removed > 0 {
        parts.push(format!("BGP peers +{added} -{removed}"));
    }
    if old.policies != new.policies || old.prefix_lists != new.prefix_lists {
        parts.push("policies".into());
    }
    if old.segments != new.segments || old.segment_rules != new.segment_rules {
        parts.push("segments".into());
    }
    if old.separation != new.separation {
        parts.push("separation".into());
    }
    if old.health != new.health {
        parts.push("health".into());
    }
    if parts.is_empty() && old != new {
        parts.push("settings".into());
    }
    if parts.is_empty() {
        "reloaded: nothing changed".into()
    } else {
        format!("reloaded: {}", parts.join(", "))
    }
}

/// Re-reads the config file and applies it; a bad file changes nothing.
async fn reload(nl: &Netlink, state: &Shared) -> Result<Option<Reconfigured>> {
    let path = state.lock().expect("state lock").config_path.clone();
    let config = Config::from_file(&path)?;
    let links = nl.links().await?;
    let addrs = nl.addresses().await?;
    // Check against the machine before touching anything.
    let kernel = nl.gateway_routes().await?;
    plan(&config, &links, &addrs, &kernel)?;
    state
        .lock()
        .expect("state lock")
        .reload(config, &links, &addrs)
}

/// Applies kernel route changes off the lock, on their own task.
///
/// Only each prefix's final state matters, so what is queued is coalesced per prefix and
/// up to 64 route requests are in flight at once: a full table reaches the kernel in
/// seconds instead of one netlink round trip per route. Per batch, the nexthop objects
/// are created first and deleted last, so no route ever names a missing object (the
/// kernel would drop it).
fn spawn_kernel_sync(
    nl: Netlink,
) -> Result<(mpsc::UnboundedSender<KernelOp>, tokio::task::JoinHandle<()>)> {
    use futures::StreamExt;
    // Opened here, in the daemon's network namespace.
    let mut nexthops = netlink::nexthops::Nexthops::open()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<KernelOp>();
    let task = tokio::spawn(async move {
        // The objects made, with their hops (to make one again the kernel dropped).
        let mut objects: HashMap<u32, std::sync::Arc<[(IpAddr, u32)]>> = HashMap::new();
        while let Some(first) = rx.recv().await {
            let mut adds = Vec::new();
            let mut routes: HashMap<IpNet, Option<KernelRoute>> = HashMap::new();
            let mut dels = Vec::new();
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    KernelOp::AddNexthop { id, hops } => adds.push((id, hops)),
                    KernelOp::Route(prefix, route) => {
                        routes.insert(prefix, route);
                    }
                    KernelOp::DelNexthop { id, ids } => dels.push((id, ids)),
                }
                if routes.len() < 8192 {
                    next = rx.try_recv().ok();
                }
            }
            // Objects are few and each request is answered at once: no need to leave
            // the task for them.
            for (id, hops) in adds {
                if let Err(e) = nexthops.add(id, &hops) {
                    warn!("kernel route sync: {e:#}");
                }
                objects.insert(id, hops);
            }
            let total = routes.len();
            let failed: Vec<(IpNet, Option<KernelRoute>)> = futures::stream::iter(routes)
                .map(|(prefix, route)| {
                    let nl = nl.clone();
                    async move {
                        let failed = apply_kernel_route(&nl, prefix, route.as_ref()).await;
                        failed.err().map(|_| (prefix, route))
                    }
                })
                .buffer_unordered(64)
                .filter_map(|r| async move { r })
                .collect()
                .await;
            // A failed change is retried once; one naming an object the kernel no
            // longer has (deleted behind nva's back, or with its device) after the
            // object is made again. What still fails is reported once per batch, not
            // once per route.
            let mut remade = HashSet::new();
            let mut still = Vec::new();
            for (prefix, route) in failed {
                if let Some(KernelRoute::Nexthop(id)) = &route
                    && let Some(hops) = objects.get(id)
                    && !remade.contains(id)
                    && nexthops.add(*id, hops).is_ok()
                {
                    remade.insert(*id);
                }
                if let Err(e) = apply_kernel_route(&nl, prefix, route.as_ref()).await {
                    still.push(e);
                }
            }
            if !remade.is_empty() {
                info!(
                    objects = remade.len(),
                    "kernel route sync: nexthop objects made again"
                );
            }
            if let Some(first) = still.first() {
                warn!(
                    failed = still.len(),
                    of = total,
                    "kernel route sync: route changes failed, the first: {first:#}"
                );
            }
            for (id, ids) in dels {
                if let Err(e) = nexthops.delete(id, ids) {
                    warn!("kernel route sync: {e:#}");
                }
                objects.remove(&id);
            }
        }
    });
    Ok((tx, task))
}

/// Sets (or, with None, removes) nva's kernel route for `prefix`.
async fn apply_kernel_route(
    nl: &Netlink,
    prefix: IpNet,
    route: Option<&KernelRoute>,
) -> Result<()> {
    match route {
        Some(route) => nl.replace_route(prefix, route).await,
        None => nl.delete_route(prefix).await,
    }
}

fn apply_event(st: &mut State, event: NetEvent) -> Result<()> {
    tracing::debug!(?event, "netlink event");
    match event {
        NetEvent::Link(link) => {
            let Some(idx) = st.ifaces.iter().position(|f| f.ifindex == link.ifindex) else {
                return Ok(());
            };
            let port = port_of(&link);
            if st.ifaces[idx].port.up != port.up {
                info!(interface = %link.name, up = port.up, "link state changed");
            }
            if st.ifaces[idx].port.mac != port.mac {
                let f = &st.ifaces[idx];
                let (slot, flags) = (f.slot, f.flags);
                st.fib
                    .dataplane_mut()
                    .add_port(link.ifindex, slot, flags, port.mac)?;
            }
            st.ifaces[idx].port = port.clone();
            st.fib.update_port(link.ifindex, &port)?;
        }
        NetEvent::LinkRemoved(ifindex) => {
            if let Some(idx) = st.ifaces.iter().position(|f| f.ifindex == ifindex) {
                warn!(interface = %st.ifaces[idx].name, "interface removed");
                let mut port = st.ifaces[idx].port.clone();
                port.up = false;
                st.ifaces[idx].port = port.clone();
                st.fib.update_port(ifindex, &port)?;
            }
        }
        NetEvent::Neighbour(n) => {
            if n.failed {
                st.neigh_failed.insert((n.ifindex, n.ip));
            } else {
                st.neigh_failed.remove(&(n.ifindex, n.ip));
            }
            st.fib
                .update_neighbour(n.ifindex, n.ip, n.mac.filter(|_| n.usable), n.failed)?;
            st.neighbour_route(&n)?;
        }
        NetEvent::NeighbourRemoved { ifindex, ip } => {
            st.neigh_failed.remove(&(ifindex, ip));
            st.fib.remove_route(IpNet::from(ip), Source::Neighbour)?;
            // Next hops keep their last MAC; ask the kernel for a fresh entry.
            if st.fib.is_nexthop(ifindex, ip) {
                st.resolve_now.push((ifindex, ip));
            }
        }
        NetEvent::AddrAdded(addr) => {
            for (prefix, source, target) in address_routes(&addr) {
                st.fib.set_route(prefix, source, target)?;
            }
            st.addrs.push(addr);
        }
        NetEvent::AddrRemoved(addr) => {
            for (prefix, source, _) in address_routes(&addr) {
                st.fib.remove_route(prefix, source)?;
            }
            st.addrs.retain(|a| a != &addr);
        }
    }
    Ok(())
}
