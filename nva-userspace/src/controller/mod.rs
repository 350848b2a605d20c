//! The controller: the one owner of the routing state (config, interfaces, addresses,
//! the kernel's routes and neighbours as seen, static routes, the BGP feed, the FIB and
//! through it the data plane, health).
//!
//! It takes inputs (netlink and route events, BGP session events, probe results, the
//! once-a-second tick, a reload, queries) and returns what the daemon must carry out
//! ([`Output`]: session commands, kernel-route operations, neighbour resolutions).
//! Its own I/O is its data plane ([`Device`]: the FIB's map writes, ports, attaching;
//! the self check reads attachment and counters) and the prober's handle.
//! The daemon's select loop is its only caller; the control socket and metrics send it
//! [`Query`]s, run on the loop's task, so nothing else ever holds the routing state.
mod device;
mod machine;
mod reload;
mod self_health;
mod settings;
mod statics;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use ipnet::IpNet;
use nva_common::{MAX_IF_SLOTS, Settings};
use tracing::{info, warn};

pub use device::Device;
#[cfg(test)]
pub use device::TestDevice;
pub use machine::Machine;
pub use reload::{ReloadPlan, Reloaded};
pub use settings::load_options;

use crate::{
    bgp::{Command as BgpCommand, Event as SessionEvent, PeerConfig, PeerId},
    bgp_install::BgpInstall,
    config::{Config, XdpMode},
    dataplane::Dataplane,
    fib::{Fib, KernelOp, Neigh, NhKey, Port, Source, Table},
    health::{HealthEvent, Prober},
    netlink::{AddrInfo, routes::GatewayRoute},
    resolve::Resolver,
    rib::RibChange,
    routing::BgpFeed,
};

/// A question for the controller, answered on its task with read access to everything
/// (as GoBGP's server runs its management operations): the closure sends its answer
/// back on a channel it owns. A question should copy what it needs and leave the rest
/// (serialising a million routes) to the asker.
pub type Query = Box<dyn FnOnce(&Controller) + Send>;

/// How long a question waits for the controller (busy with a long input: a reload, a
/// full table arriving) before the asker gets an error instead.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the controller: `question` runs on its task; its answer comes back here.
/// Fails when nva is stopping or the controller does not get to it in time.
pub async fn ask<T: Send + 'static>(
    queries: &tokio::sync::mpsc::Sender<Query>,
    question: impl FnOnce(&Controller) -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let query: Query = Box::new(move |c| {
        let _ = tx.send(question(c));
    });
    let asked = async {
        queries
            .send(query)
            .await
            .map_err(|_| anyhow::anyhow!("nva is stopping"))?;
        rx.await.map_err(|_| anyhow::anyhow!("nva is stopping"))
    };
    tokio::time::timeout(ASK_TIMEOUT, asked)
        .await
        .map_err(|_| anyhow::anyhow!("nva is busy: no answer within {ASK_TIMEOUT:?}"))?
}

/// What the daemon must carry out after an input. The kernel operations keep their
/// order (objects first, routes, deletions last); the rest is independent.
#[derive(Debug, Default)]
pub struct Output {
    /// BGP session commands.
    pub bgp: Vec<(PeerId, BgpCommand)>,
    /// Kernel mirror changes (objects first, routes, deletions last).
    pub kernel: Vec<KernelOp>,
    /// Neighbours to ask the kernel to resolve now.
    pub resolve: Vec<(u32, IpAddr)>,
    /// Interfaces XDP was attached to (their ICMP redirects go off).
    pub attached: Vec<String>,
}

impl Output {
    /// The prefixes this output mirrors into the kernel (after the start: kernel routes
    /// of an earlier run under other prefixes are stale).
    pub fn kernel_prefixes(&self) -> HashSet<IpNet> {
        self.kernel
            .iter()
            .filter_map(|op| match op {
                KernelOp::Route(prefix, Some(_)) => Some(*prefix),
                _ => None,
            })
            .collect()
    }
}

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

/// How the BGP speaker starts: where it listens and whom it peers with.
pub struct BgpStart {
    /// `bgp.listen`, or None for port 179 of each of these families (IPv4 = true).
    pub listen: Option<SocketAddr>,
    pub families: Vec<bool>,
    pub peers: Vec<PeerConfig>,
    /// The first announcements.
    pub commands: Vec<(PeerId, BgpCommand)>,
}

/// A BGP peer to restart or refresh (`nva bgp clear`).
pub struct Clear {
    pub peer: PeerId,
    /// Its session settings (to start it again).
    pub config: Option<PeerConfig>,
    /// For a soft clear: everything announced to it again.
    pub commands: Vec<(PeerId, BgpCommand)>,
}

/// The routing state. See the module comment. `D` is the data plane (a test device in
/// unit tests).
pub struct Controller<D: Device = Dataplane> {
    config: Config,
    /// What the data plane's SETTINGS map holds.
    settings: Settings,
    /// Packets per second per (counter slot, reason) over the last second.
    rates: HashMap<(u32, u32), f64>,
    last_sample: Option<(Instant, PacketCounts)>,
    fib: Fib<D>,
    ifaces: Vec<Iface>,
    /// Addresses of the box, for connected subnets.
    addrs: Vec<AddrInfo>,
    /// Next hops to ask the kernel to resolve right away.
    resolve_now: Vec<(u32, IpAddr)>,
    /// The segments as the data plane has them.
    segments: reload::AppliedSegments,
    /// The kernel's usable neighbour entries (MACs), so a new next hop of any source
    /// is written resolved before any route points at it.
    known_macs: HashMap<(u32, IpAddr), [u8; 6]>,
    /// Neighbour entries whose resolution failed (a gateway not yet a next hop of
    /// any route is judged by them too).
    neigh_failed: HashSet<(u32, IpAddr)>,
    /// The kernel's gateway routes that are not nva's own, by (prefix, metric): next
    /// hops resolve through them.
    kernel_routes: HashMap<(IpNet, u32), GatewayRoute>,
    /// The static routes of the running config, checked against the machine.
    planned: Vec<statics::PlannedRoute>,
    /// Static routes not installed because no next hop resolves (logged once).
    unresolved_statics: HashSet<IpNet>,
    /// Next-hop health probes.
    prober: Prober,
    /// Since when the self check passes (None while it fails).
    healthy_since: Option<Instant>,
    /// How many interfaces run nva's program, as the kernel said at the last look.
    kernel_links: Option<usize>,
    /// The BGP feed, when BGP is configured.
    bgp: Option<BgpFeed>,
    /// BGP's selected routes waiting for a next hop the FIB can hold.
    bgp_install: BgpInstall,
    started: Instant,
}

/// Packets per (counter slot, reason).
type PacketCounts = HashMap<(u32, u32), u64>;

/// Read access, for queries.
impl<D: Device> Controller<D> {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn fib(&self) -> &Fib<D> {
        &self.fib
    }

    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// Packets per second of a counter slot and reason over the last second.
    pub fn rate(&self, slot: u32, reason: u32) -> f64 {
        self.rates.get(&(slot, reason)).copied().unwrap_or(0.0)
    }

    pub fn bgp(&self) -> Option<&BgpFeed> {
        self.bgp.as_ref()
    }

    pub fn prober(&self) -> &Prober {
        &self.prober
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether the data plane is pinned (it can outlive this process).
    pub fn pinned(&self) -> bool {
        self.fib.dataplane().options().pin_dir.is_some()
    }
}

/// Start and stop.
impl<D: Device> Controller<D> {
    /// Checks `config` against the machine, programs the data plane completely (ports,
    /// settings, separation, connected and static routes, neighbours) without
    /// attaching it, and sets up the BGP feed. `kernel_id_base` is the first kernel
    /// nexthop id of this run (above an earlier run's).
    pub fn start(
        config: Config,
        machine: Machine,
        mut dp: D,
        prober: Prober,
        kernel_id_base: u32,
    ) -> Result<(Self, Output)> {
        let (mut ifaces, planned) = statics::plan(&config, &machine)?;
        for i in 0..ifaces.len() {
            ifaces[i].slot = free_slot(&ifaces[..i])?;
        }
        let mut settings = settings::settings_of(&config);
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
        let mut fib = Fib::new(dp);
        fib.set_kernel_id_base(kernel_id_base);
        for addr in &machine.addrs {
            for (prefix, source, target) in machine::address_routes(addr) {
                fib.set_route(prefix, source, target)?;
            }
        }
        let Machine {
            addrs,
            neighbours,
            gateway_routes,
            ..
        } = machine;
        let mut c = Controller {
            settings,
            rates: HashMap::new(),
            last_sample: None,
            fib,
            ifaces,
            addrs,
            resolve_now: Vec::new(),
            segments: Default::default(),
            prober,
            healthy_since: None,
            kernel_links: None,
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
            config,
        };
        c.fib.set_keep_dead_routes(c.config.health.keep_dead_routes);
        let config = c.config.clone();
        c.apply_separation(&config)?;
        c.apply_static_routes(&planned)?;
        let specs = c.wanted_probes();
        c.prober.set(specs);
        for n in &neighbours {
            c.fib
                .update_neighbour(n.ifindex, n.ip, n.mac.filter(|_| n.usable), n.failed)?;
            c.neighbour_route(n)?;
        }
        c.bgp = BgpFeed::new(&config);
        if let Some(feed) = c.bgp.as_mut() {
            let dp = c.fib.dataplane();
            feed.set_restart_state(
                dp.options().pin_dir.is_some(),
                dp.previous_hash_seed().is_some(),
            );
        }
        if let Some(bgp) = &config.bgp {
            c.fib.set_mirror_bgp(bgp.kernel_routes);
        }
        let out = c.output(Vec::new());
        Ok((c, out))
    }

    /// Attaches XDP to every interface (after `start` programmed everything: after a
    /// restart the new program replaces the running one atomically, so its tables
    /// must be complete first). On error the data plane, when dropped, detaches what
    /// was attached.
    pub fn attach_all(&mut self) -> Result<Output> {
        let generic = self.config.dataplane.xdp_mode == XdpMode::Generic;
        let mut out = Output::default();
        for iface in &self.ifaces {
            self.fib
                .dataplane_mut()
                .attach(iface.ifindex, &iface.name, generic)?;
            info!(interface = %iface.name, ifindex = iface.ifindex, mode = ?self.config.dataplane.xdp_mode, "XDP attached");
            out.attached.push(iface.name.clone());
        }
        self.refresh_kernel_links();
        Ok(out)
    }

    /// How the BGP speaker starts, when BGP is configured.
    pub fn bgp_start(&mut self) -> Option<BgpStart> {
        let feed = self.bgp.as_mut()?;
        let mut families: Vec<bool> = feed
            .config
            .peers
            .iter()
            .map(|p| p.address.is_ipv4())
            .collect();
        families.sort_unstable();
        families.dedup();
        Some(BgpStart {
            listen: feed.config.listen,
            families,
            peers: feed.session_configs(),
            commands: feed.export_all(),
        })
    }

    /// The withdrawals of everything nva announces, and how long to wait after them
    /// (a graceful stop).
    pub fn withdraw_all(&self) -> (Vec<(PeerId, BgpCommand)>, Duration) {
        let drain = Duration::from_millis(self.config.health.drain_ms);
        let w = self
            .bgp
            .as_ref()
            .map(BgpFeed::withdraw_all)
            .unwrap_or_default();
        (w, drain)
    }

    /// Detaches XDP and removes the pins (a stop without a successor).
    pub fn detach(&mut self) {
        self.fib.dataplane_mut().unpin_and_detach();
    }

    /// The prefixes mirrored into the kernel as plain routes (deleted one by one at a
    /// stop; the others go with their nexthop objects).
    pub fn kernel_plain_prefixes(&self) -> Vec<IpNet> {
        self.fib.kernel_plain_prefixes()
    }

    /// Ends an input: what the FIB queued for the kernel and the resolutions asked
    /// for go out with the session commands.
    fn output(&mut self, bgp: Vec<(PeerId, BgpCommand)>) -> Output {
        Output {
            bgp,
            kernel: self.fib.take_kernel_ops(),
            resolve: std::mem::take(&mut self.resolve_now),
            attached: Vec::new(),
        }
    }
}

/// Inputs.
impl<D: Device> Controller<D> {
    /// A link, address or neighbour change.
    pub fn netlink_event(&mut self, event: crate::netlink::NetEvent) -> Output {
        if let Err(e) = self.apply_event(event) {
            warn!("applying a netlink change: {e:#}");
        }
        let commands = self.follow_resolution();
        self.output(commands)
    }

    /// A gateway route of the kernel's came or went (`all`: the whole set, after lost
    /// notifications).
    pub fn kernel_route(&mut self, change: KernelRouteChange) -> Output {
        match change {
            KernelRouteChange::Added(g) => {
                self.kernel_routes.insert((g.prefix, g.metric), g);
            }
            KernelRouteChange::Removed { prefix, metric } => {
                self.kernel_routes.remove(&(prefix, metric));
            }
            KernelRouteChange::All(routes) => {
                self.kernel_routes = routes
                    .into_iter()
                    .map(|g| ((g.prefix, g.metric), g))
                    .collect();
            }
        }
        let commands = self.follow_resolution();
        self.output(commands)
    }

    /// A probe's verdict changed.
    pub fn health_event(&mut self, event: HealthEvent) -> Output {
        if !self.wanted_probes().contains(&event.spec) {
            // A probe of an earlier config, stopped since.
            return Output::default();
        }
        info!(target = %event.spec.target, healthy = event.healthy, "health probe");
        if let Err(e) = self.fib.update_health(event.spec.target, event.healthy) {
            warn!("applying a health change: {e:#}");
        }
        let commands = self.follow_resolution();
        self.output(commands)
    }

    /// A BGP session event; new next hops are resolved at once.
    pub fn session_event(&mut self, event: SessionEvent) -> Output {
        let commands = self.bgp_event(BgpEvent::Session(event));
        let mut out = self.output(commands);
        out.resolve.extend(self.fib.unresolved());
        out
    }

    /// A graceful restart's time is up: the peer's stale routes go.
    pub fn sweep_stale(&mut self, peer: PeerId) -> Output {
        let commands = self.bgp_event(BgpEvent::SweepStale(peer));
        self.output(commands)
    }

    /// The daemon restarted a session: what to announce on it.
    pub fn session_restarted(&mut self, peer: PeerId) -> Output {
        let commands = self
            .bgp
            .as_mut()
            .map(|feed| feed.session_restarted(peer))
            .unwrap_or_default();
        self.output(commands)
    }

    /// `nva bgp clear`: the peer named, and for a soft clear what to send it again.
    pub fn clear_peer(&mut self, name: &str, soft: bool) -> Result<Clear, String> {
        let Some(feed) = self.bgp.as_mut() else {
            return Err("BGP is not configured".into());
        };
        let Some(peer) = feed.peer_by_name_or_address(name) else {
            return Err(format!("no BGP peer {name:?}"));
        };
        let config = feed
            .session_configs()
            .into_iter()
            .find(|c| c.remote_addr == peer);
        let commands = if soft { feed.export_all() } else { Vec::new() };
        Ok(Clear {
            peer,
            config,
            commands,
        })
    }

    /// Once a second: rates, routes that failed retried, self health followed,
    /// next hops without a MAC resolved. Returns, besides, the sessions whose
    /// max-prefix restart timer ran out (for the daemon to start again).
    pub fn tick(&mut self) -> (Output, Vec<PeerConfig>) {
        self.sample_rates();
        self.retry_failed_routes();
        let due = self
            .bgp
            .as_mut()
            .map(|feed| {
                let configs = feed.session_configs();
                feed.due_restarts()
                    .into_iter()
                    .filter_map(|p| configs.iter().find(|c| c.remote_addr == p).cloned())
                    .collect()
            })
            .unwrap_or_default();
        self.refresh_kernel_links();
        let commands = self.follow_self_health();
        let mut out = self.output(commands);
        // Packets meanwhile go to the kernel (counted as passed-neigh), which also
        // resolves.
        out.resolve.extend(self.fib.unresolved());
        (out, due)
    }
}

/// A change of the kernel's gateway routes.
pub enum KernelRouteChange {
    Added(GatewayRoute),
    Removed { prefix: IpNet, metric: u32 },
    All(Vec<GatewayRoute>),
}

/// Inputs of the BGP feed: session events and graceful-restart timers.
enum BgpEvent {
    Session(SessionEvent),
    SweepStale(PeerId),
}

/// BGP into the FIB.
impl<D: Device> Controller<D> {
    /// Runs a BGP event through the feed; returns the session commands to send.
    fn bgp_event(&mut self, event: BgpEvent) -> Vec<(PeerId, BgpCommand)> {
        if self.bgp.is_none() {
            return Vec::new();
        }
        let resolver = self.resolver();
        let fib = &self.fib;
        let classify = |p| fib.classify(p);
        let out = self.bgp.as_mut().map(|feed| match event {
            BgpEvent::Session(e) => feed.handle_event(e, &classify, &resolver),
            BgpEvent::SweepStale(peer) => Ok(feed.sweep_stale(peer)),
        });
        let out =
            out.map(|r| r.and_then(|out| self.install_bgp(&out.changes).map(|()| out.commands)));
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
        let Controller {
            bgp,
            bgp_install,
            fib,
            ifaces,
            known_macs,
            neigh_failed,
            ..
        } = self;
        let Some(feed) = bgp.as_ref() else {
            return Ok(());
        };
        bgp_install.apply(changes, feed.tracker(), fib, &|key| {
            gateway(ifaces, known_macs, neigh_failed, key)
        })
    }

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

/// Next-hop resolution.
impl<D: Device> Controller<D> {
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
        let mut r = statics::base_resolver(
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
        // A copy, not taken: resolution reads the static routes too (a recursive next
        // hop resolving through another static route found nothing while they were
        // taken out, and its route stayed withdrawn).
        let planned = self.planned.clone();
        if let Err(e) = self.apply_static_routes(&planned) {
            warn!("re-resolving static routes: {e:#}");
        }
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
                self.static_resolved_via(source == Source::StaticBackup, prefix)
            }
            _ => Vec::new(),
        }
    }
}

/// `nva config check` and every start and reload: the config against the machine
/// (interfaces exist, next hops are connected or resolve), before anything is touched.
pub fn check(config: &Config, machine: &Machine) -> Result<()> {
    statics::plan(config, machine).map(|_| ())
}

/// A gateway's egress port and its neighbour entry as the kernel has it (None when
/// the gateway is out of none of nva's interfaces).
fn gateway(
    ifaces: &[Iface],
    known_macs: &HashMap<(u32, IpAddr), [u8; 6]>,
    neigh_failed: &HashSet<(u32, IpAddr)>,
    key: NhKey,
) -> Option<(Port, Neigh)> {
    let port = ifaces
        .iter()
        .find(|f| f.ifindex == key.ifindex)?
        .port
        .clone();
    let at = (key.ifindex, key.via);
    let neigh = Neigh {
        mac: known_macs.get(&at).copied(),
        failed: neigh_failed.contains(&at),
    };
    Some((port, neigh))
}

/// The first free counter slot.
fn free_slot(ifaces: &[Iface]) -> Result<u32> {
    (1..MAX_IF_SLOTS)
        .find(|s| !ifaces.iter().any(|f| f.slot == *s))
        .context("too many interfaces")
}
