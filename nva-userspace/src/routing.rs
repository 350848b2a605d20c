//! The BGP feed: peers -> import policy -> RIB (one per table), and what nva announces
//! (originated prefixes, static and learned routes through export policy).
//!
//! It never touches the FIB: each input returns the RIB changes (for `bgp_install` to
//! write into the FIB) and the session commands to send (which the daemon sends without
//! holding its state lock).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use ipnet::IpNet;
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    bgp::{
        Command, Event, Origin, PathAttrs, PeerConfig, PeerId,
        codec::{AsPath, Notification},
    },
    config::{self, MaxPrefixAction, SickAction, TrafficClass},
    fib::Table,
    policy::{Policy, PolicyContext, PrefixList},
    resolve::{Resolution, Resolver, Tracker, Unresolved},
    rib::{PeerInfo, Rib, RibChange},
};

/// Routes announced and prefixes withdrawn by one UPDATE, for one table.
type Batch = (Vec<(IpNet, Arc<PathAttrs>)>, Vec<IpNet>);

/// What `nva bgp` shows per peer.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: IpAddr,
    pub remote_as: u32,
    pub state: &'static str,
    /// Seconds in the current state.
    pub uptime_secs: u64,
    /// Prefixes received in UPDATEs (announcements, counted as they arrive).
    pub received: u64,
    /// Prefixes accepted by import policy, now in the RIB.
    pub accepted: usize,
    /// Announcements treated as withdrawals because their next hop can never be one
    /// (nva's own address, loopback, unspecified, multicast).
    pub invalid_next_hop: u64,
    /// Announced prefixes ignored because no router forwards to them (loopback,
    /// multicast, reserved, link-local, "this network").
    pub martian: u64,
    /// Paths in the RIB whose next hop does not resolve (not eligible as best path).
    pub unresolved: usize,
    /// Prefixes we announce to it.
    pub announced: usize,
    /// Prefixes not announced because of `max_announce`.
    pub announce_suppressed: usize,
    pub last_error: Option<String>,
    /// Seconds since `last_error`.
    pub last_error_secs: Option<u64>,
    #[serde(skip)]
    last_error_at: Option<Instant>,
    /// The max-prefix limit was hit.
    pub max_prefix_reached: bool,
    /// The max-prefix limit, if one is configured.
    pub max_prefix: Option<usize>,
    /// What the session negotiated (while it is Established).
    pub session: Option<Negotiated>,
    /// Times an Established session ended.
    pub flaps: u64,
    /// Messages received and sent (all types) and UPDATEs sent, counted by the session.
    pub messages_received: u64,
    pub messages_sent: u64,
    pub updates_sent: u64,
    #[serde(skip)]
    counters: crate::bgp::config::MessageCounters,
    /// UPDATE messages received (with routes or withdrawals) and prefixes withdrawn in
    /// them, counted as they arrive.
    pub updates_received: u64,
    pub withdrawn_received: u64,
    /// Prefixes the peer announces now that are not in the RIB: import policy rejected
    /// them, or their next hop can never be one (`nva bgp PREFIX` says which).
    pub rejected_by_policy: usize,
    /// Prefixes the peer announces now: accepted plus rejected (not those dropped on
    /// receipt: AS-path loops and martians, counted apart).
    pub received_now: usize,
    /// Per family (IPv4, IPv6): accepted (in the RIB) and announced to the peer.
    pub accepted_by_family: [usize; 2],
    pub announced_by_family: [usize; 2],
    /// Per family: not in the RIB (rejected by policy or next hop); filled by `neighbors`.
    pub rejected_by_family: [usize; 2],
    #[serde(skip)]
    since: Instant,
}

/// What a BGP session negotiated, for `nva bgp neighbors`.
#[derive(Clone, Debug, Serialize)]
pub struct Negotiated {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    pub router_id: std::net::Ipv4Addr,
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    pub extended_message: bool,
    pub route_refresh: bool,
    /// The peer's graceful restart capability (restart time in seconds).
    pub graceful_restart: Option<u16>,
    pub families: Vec<&'static str>,
}

/// What the daemon must do with the speaker after a reconfiguration.
pub struct Reconfigured {
    /// Sessions to start (new peers, and changed ones after they were removed).
    pub add: Vec<PeerConfig>,
    /// Sessions to stop (first).
    pub remove: Vec<PeerId>,
    pub commands: Vec<(PeerId, Command)>,
    /// Selection changes for the FIB.
    pub changes: Vec<(Table, RibChange)>,
}

/// What an input to the feed produced.
#[derive(Debug, Default)]
pub struct FeedOutput {
    /// Session commands to send.
    pub commands: Vec<(PeerId, Command)>,
    /// Selection changes, per table, for the FIB.
    pub changes: Vec<(Table, RibChange)>,
}

/// The table a destination belongs to by its class (`Fib::classify`).
pub type Classify<'a> = &'a dyn Fn(IpNet) -> Table;

pub struct BgpFeed {
    pub config: config::Bgp,
    ribs: [Rib; 2],
    pub peers: BTreeMap<PeerId, PeerStatus>,
    peer_configs: HashMap<PeerId, config::BgpPeer>,
    policies: HashMap<String, Policy>,
    prefix_lists: HashMap<String, PrefixList>,
    /// What we announce to each peer.
    exported: HashMap<PeerId, HashMap<IpNet, Arc<PathAttrs>>>,
    /// Static routes to announce when `announce_static`.
    statics: Vec<IpNet>,
    /// While nva is unhealthy: what its announcements become.
    degraded: Option<SickAction>,
    /// Graceful restart, restarting side: (forwarding survives a restart, we just
    /// restarted with it).
    restart_state: (bool, bool),
    /// What every BGP next hop in the RIBs resolves to (next-hop tracking).
    tracker: Tracker,
    /// Per configured aggregate: the more specific prefixes that make it active.
    aggregates: Vec<(config::Aggregate, HashSet<IpNet>)>,
    /// Per peer: prefixes held back by its `max_announce`.
    suppressed: HashMap<PeerId, HashSet<IpNet>>,
    /// Peers torn down by max-prefix with a restart timer: when to start them again.
    restarts: HashMap<PeerId, Instant>,
    /// Per peer: prefixes it announces now that are not in the RIB (import policy
    /// rejected them, or their next hop can never be one), with the path and why: what
    /// `nva bgp PREFIX` shows beside the RIB's paths (an Adj-RIB-In of the rejected).
    rejected: HashMap<PeerId, HashMap<IpNet, (Arc<PathAttrs>, Rejection)>>,
}

/// Why a received path is not in the RIB.
#[derive(Clone, Debug)]
enum Rejection {
    /// Import policy (its name).
    Policy(Arc<str>),
    /// Its next hop can never be one (treat-as-withdraw).
    NextHop,
}

impl Rejection {
    fn describe(&self) -> String {
        match self {
            Rejection::Policy(name) => format!("rejected by import policy {name}"),
            Rejection::NextHop => "next hop can never be one (treated as withdrawn)".into(),
        }
    }
}

impl PeerStatus {
    fn new(p: &config::BgpPeer) -> Self {
        PeerStatus {
            name: p.name.clone(),
            address: p.address,
            remote_as: p.remote_as,
            state: "idle",
            uptime_secs: 0,
            received: 0,
            accepted: 0,
            invalid_next_hop: 0,
            martian: 0,
            unresolved: 0,
            announced: 0,
            announce_suppressed: 0,
            last_error: None,
            last_error_secs: None,
            last_error_at: None,
            max_prefix_reached: false,
            max_prefix: p.max_prefix,
            session: None,
            flaps: 0,
            messages_received: 0,
            messages_sent: 0,
            updates_sent: 0,
            counters: Default::default(),
            updates_received: 0,
            withdrawn_received: 0,
            rejected_by_policy: 0,
            received_now: 0,
            accepted_by_family: [0; 2],
            announced_by_family: [0; 2],
            rejected_by_family: [0; 2],
            since: Instant::now(),
        }
    }
}

/// The table whose RIB is `ribs[i]`.
fn table_at(i: usize) -> Table {
    if i == 0 {
        Table::EastWest
    } else {
        Table::NorthSouth
    }
}

fn table_index(t: Table) -> usize {
    match t {
        Table::EastWest => 0,
        Table::NorthSouth => 1,
    }
}

impl BgpFeed {
    pub fn new(config: &config::Config) -> Option<Self> {
        let bgp = config.bgp.clone()?;
        let peers = bgp
            .peers
            .iter()
            .map(|p| (p.address, PeerStatus::new(p)))
            .collect();
        let mut feed = Self {
            ribs: [
                Rib::new(bgp.multipath, bgp.max_paths),
                Rib::new(bgp.multipath, bgp.max_paths),
            ],
            peer_configs: bgp.peers.iter().map(|p| (p.address, p.clone())).collect(),
            policies: config
                .policies
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
            prefix_lists: config
                .prefix_lists
                .iter()
                .map(|l| (l.name.clone(), l.clone()))
                .collect(),
            exported: HashMap::new(),
            statics: if bgp.announce_static {
                config.routes.iter().map(|r| r.prefix).collect()
            } else {
                Vec::new()
            },
            degraded: None,
            restart_state: (false, false),
            tracker: Tracker::default(),
            aggregates: Vec::new(),
            suppressed: HashMap::new(),
            restarts: HashMap::new(),
            rejected: HashMap::new(),
            peers,
            config: bgp,
        };
        feed.reset_aggregates();
        Some(feed)
    }

    /// Recomputes every aggregate's contributors (at start and after a reload).
    fn reset_aggregates(&mut self) {
        let mut aggregates: Vec<(config::Aggregate, HashSet<IpNet>)> = self
            .config
            .aggregates
            .iter()
            .map(|a| (a.clone(), HashSet::new()))
            .collect();
        let candidates = self
            .ribs
            .iter()
            .flat_map(|r| r.best_routes().map(|(p, _, _)| p))
            .chain(self.statics.iter().copied());
        for p in candidates {
            for (a, set) in &mut aggregates {
                if Self::contributes(&a.prefix, &p) {
                    set.insert(p);
                }
            }
        }
        self.aggregates = aggregates;
    }

    /// A route makes an aggregate active when it is strictly more specific.
    fn contributes(aggregate: &IpNet, prefix: &IpNet) -> bool {
        prefix.prefix_len() > aggregate.prefix_len() && aggregate.contains(prefix)
    }

    /// Follows RIB changes into the aggregates; returns the prefixes whose export may
    /// have changed (an aggregate that became active or inactive, and with
    /// `summary_only` the routes it covers).
    fn track_aggregates(&mut self, changes: &[(Table, RibChange)]) -> Vec<IpNet> {
        if self.aggregates.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let ribs = &self.ribs;
        for (a, set) in &mut self.aggregates {
            let was_active = !set.is_empty();
            for (_, c) in changes {
                let p = c.prefix();
                if !Self::contributes(&a.prefix, &p) {
                    continue;
                }
                let selected = ribs.iter().any(|r| r.selection(&p).is_some());
                if selected {
                    set.insert(p);
                } else {
                    set.remove(&p);
                }
            }
            if was_active == set.is_empty() {
                info!(aggregate = %a.prefix, active = !set.is_empty(), "BGP aggregate");
                out.push(a.prefix);
                if a.summary_only {
                    out.extend(set.iter().copied());
                }
            }
        }
        out
    }

    fn active_aggregate(&self, prefix: &IpNet) -> bool {
        self.aggregates
            .iter()
            .any(|(a, set)| a.prefix == *prefix && !set.is_empty())
    }

    /// Covered by an active `summary_only` aggregate (and not that aggregate).
    fn summarised(&self, prefix: &IpNet) -> bool {
        self.aggregates.iter().any(|(a, set)| {
            a.summary_only && !set.is_empty() && Self::contributes(&a.prefix, prefix)
        })
    }

    /// Session configurations for the speaker.
    pub fn session_configs(&self) -> Vec<PeerConfig> {
        self.config
            .peers
            .iter()
            .map(|p| {
                let mut c = PeerConfig::new(
                    p.address,
                    p.remote_as,
                    self.config.local_as,
                    self.config.router_id,
                );
                c.name = p.name.clone();
                if let Some(port) = p.port {
                    c.remote_port = port;
                }
                c.local_addr = p.local_addr;
                if p.passive {
                    c.mode = crate::bgp::ConnectMode::Passive;
                }
                if let Some(h) = p.hold_time {
                    c.hold_time = h;
                }
                if let Some(k) = p.keepalive {
                    c.keepalive = k;
                }
                if let Some(r) = p.connect_retry {
                    c.connect_retry = r;
                }
                c.multihop_ttl = p.multihop_ttl;
                c.gtsm = p.gtsm;
                c.md5_password = p.md5_password.clone();
                if p.graceful_restart_time.is_some() {
                    c.graceful_restart_time = p.graceful_restart_time;
                }
                (c.gr_forwarding_preserved, c.gr_restarting) = self.restart_state;
                if let Some(st) = self.peers.get(&p.address) {
                    c.counters = st.counters.clone();
                }
                c
            })
            .collect()
    }

    /// With a pinned data plane, forwarding survives a restart of nva: peers are asked
    /// to keep our routes meanwhile (graceful restart), and after a restart the new
    /// sessions say so (R and F bits) so the peers wait for our End-of-RIB.
    pub fn set_restart_state(&mut self, forwarding_survives: bool, restarted: bool) {
        self.restart_state = (forwarding_survives, forwarding_survives && restarted);
    }

    fn table_for(&self, peer: PeerId, prefix: &IpNet, classify: Classify) -> Table {
        match self.peer_configs.get(&peer).and_then(|p| p.table) {
            Some(TrafficClass::EastWest) => Table::EastWest,
            Some(TrafficClass::NorthSouth) => Table::NorthSouth,
            None => classify(*prefix),
        }
    }

    /// What every BGP next hop resolves to (for the FIB: their gateways).
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The current selection of these prefixes, as changes (to write them again).
    pub fn selections(&self, keys: &[(Table, IpNet)]) -> Vec<(Table, RibChange)> {
        keys.iter()
            .filter_map(|(t, p)| Some((*t, self.ribs[table_index(*t)].selection(p)?)))
            .collect()
    }

    fn policy_ctx(&self, table: Option<Table>) -> PolicyContext<'_> {
        PolicyContext {
            local_as: self.config.local_as,
            local_next_hop_v4: None,
            local_next_hop_v6: None,
            prefix_lists: &self.prefix_lists,
            table: table.map(Table::name),
        }
    }

    /// Handles one session event; returns commands to send to peers.
    pub fn handle_event(
        &mut self,
        event: Event,
        classify: Classify,
        resolver: &Resolver,
    ) -> Result<FeedOutput> {
        let mut changes: Vec<(Table, RibChange)> = Vec::new();
        let mut commands = Vec::new();
        match event {
            Event::Established { peer, caps } => {
                info!(peer = %peer, asn = caps.peer_as, "BGP session established");
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.state = "established";
                    st.since = Instant::now();
                    st.session = Some(Negotiated {
                        local: caps.local_addr,
                        remote: caps.remote_addr,
                        router_id: caps.peer_router_id,
                        hold_time: caps.hold_time,
                        keepalive: caps.keepalive,
                        four_octet_as: caps.four_octet_as,
                        extended_message: caps.extended_message,
                        route_refresh: caps.route_refresh,
                        graceful_restart: caps
                            .peer_graceful_restart
                            .as_ref()
                            .map(|g| g.restart_time),
                        families: caps
                            .families
                            .iter()
                            .map(|f| match f {
                                crate::bgp::codec::Family::Ipv4Unicast => "ipv4-unicast",
                                crate::bgp::codec::Family::Ipv6Unicast => "ipv6-unicast",
                            })
                            .collect(),
                    });
                }
                for rib in &mut self.ribs {
                    rib.peer_up(PeerInfo {
                        id: peer,
                        remote_as: caps.peer_as,
                        local_as: self.config.local_as,
                        router_id: caps.peer_router_id,
                        address: peer,
                    });
                }
            }
            Event::Update {
                peer,
                announced,
                withdrawn,
                martian,
            } => {
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.updates_received += 1;
                    st.withdrawn_received += withdrawn.len() as u64;
                }
                if let Some(set) = self.rejected.get_mut(&peer) {
                    for p in &withdrawn {
                        set.remove(p);
                    }
                }
                let import_name: Option<Arc<str>> = self
                    .peer_configs
                    .get(&peer)
                    .and_then(|p| p.import.as_deref())
                    .map(Arc::from);
                if martian > 0
                    && let Some(st) = self.peers.get_mut(&peer)
                {
                    if st.martian == 0 {
                        warn!(peer = %peer, "BGP: announced loopback, multicast, reserved or link-local prefixes are ignored (counted in `nva bgp`)");
                    }
                    st.martian += martian as u64;
                }
                let import = self
                    .peer_configs
                    .get(&peer)
                    .and_then(|p| p.import.clone())
                    .and_then(|name| self.policies.get(&name).cloned());
                let limit = self
                    .peer_configs
                    .get(&peer)
                    .and_then(|p| p.max_prefix.map(|m| (m, p.max_prefix_action)));
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.received += announced.len() as u64;
                }
                let mut per_table: [Batch; 2] = Default::default();
                // A withdrawal goes to both tables: a reload may have changed the
                // prefix's class since the path was learned (the RIB ignores withdrawals
                // of paths it does not have).
                for prefix in withdrawn {
                    per_table[0].1.push(prefix);
                    per_table[1].1.push(prefix);
                }
                // The routes of one UPDATE share their next hop: judge it once.
                let mut judged: Option<(IpAddr, bool)> = None;
                let mut invalid = 0u64;
                for (prefix, attrs) in announced {
                    let table = self.table_for(peer, &prefix, classify);
                    let t = table_index(table);
                    if let Some(via) = crate::bgp::import::next_hop_addr(&attrs.next_hop) {
                        let ok = match judged {
                            Some((v, ok)) if v == via => ok,
                            _ => {
                                let ok = self.track_next_hop(peer, via, resolver);
                                judged = Some((via, ok));
                                ok
                            }
                        };
                        if !ok {
                            // RFC 7606 treat-as-withdraw: it can never be forwarded to.
                            invalid += 1;
                            self.rejected
                                .entry(peer)
                                .or_default()
                                .insert(prefix, (attrs, Rejection::NextHop));
                            per_table[0].1.push(prefix);
                            per_table[1].1.push(prefix);
                            continue;
                        }
                    }
                    let accepted = match &import {
                        Some(policy) => policy
                            .apply(&prefix, &attrs, &self.policy_ctx(Some(table)))
                            .map(Arc::new),
                        None => Some(attrs.clone()),
                    };
                    match accepted {
                        Some(a) => {
                            if let Some(set) = self.rejected.get_mut(&peer) {
                                set.remove(&prefix);
                            }
                            per_table[t].0.push((prefix, a));
                        }
                        // Rejected: if an earlier version was accepted, it goes.
                        None => {
                            let policy = import_name.clone().unwrap_or_else(|| Arc::from("?"));
                            self.rejected
                                .entry(peer)
                                .or_default()
                                .insert(prefix, (attrs, Rejection::Policy(policy)));
                            per_table[0].1.push(prefix);
                            per_table[1].1.push(prefix);
                        }
                    }
                }
                if invalid > 0
                    && let Some(st) = self.peers.get_mut(&peer)
                {
                    if st.invalid_next_hop == 0 {
                        warn!(peer = %peer, next_hop = ?judged.map(|j| j.0), "BGP: routes with an invalid next hop are treated as withdrawn (counted in `nva bgp`)");
                    }
                    st.invalid_next_hop += invalid;
                }
                let mut teardown = false;
                for (t, (mut announced, withdrawn)) in per_table.into_iter().enumerate() {
                    if let Some((max, action)) = limit {
                        let count = self.prefix_count(peer);
                        let rib = &self.ribs[t];
                        let new: Vec<usize> = announced
                            .iter()
                            .enumerate()
                            .filter(|(_, (p, _))| {
                                !rib.paths(p).iter().any(|(from, ..)| *from == peer)
                            })
                            .map(|(i, _)| i)
                            .collect();
                        if count + new.len() > max {
                            let status = self.peers.get_mut(&peer);
                            let first = status.as_ref().is_some_and(|s| !s.max_prefix_reached);
                            if let Some(s) = status {
                                s.max_prefix_reached = true;
                            }
                            if first {
                                warn!(peer = %peer, max, ?action, "maximum number of prefixes reached");
                            }
                            match action {
                                MaxPrefixAction::Warn => {}
                                MaxPrefixAction::Stop => {
                                    // Keep updates of known prefixes, take in new ones only
                                    // up to the limit.
                                    let room = max.saturating_sub(count);
                                    let drop: HashSet<usize> = new.into_iter().skip(room).collect();
                                    let mut i = 0;
                                    announced.retain(|_| {
                                        let keep = !drop.contains(&i);
                                        i += 1;
                                        keep
                                    });
                                }
                                MaxPrefixAction::Teardown => teardown = true,
                            }
                        }
                    }
                    if teardown {
                        break;
                    }
                    let table = table_at(t);
                    for c in self.ribs[t].update(peer, announced, &withdrawn) {
                        changes.push((table, c));
                    }
                }
                if teardown {
                    commands.push((peer, Command::Stop(Notification::cease(1))));
                    if let Some(secs) = self
                        .peer_configs
                        .get(&peer)
                        .and_then(|p| p.max_prefix_restart)
                    {
                        self.restarts
                            .insert(peer, Instant::now() + Duration::from_secs(u64::from(secs)));
                    }
                    changes.extend(self.drop_peer(peer, "maximum number of prefixes reached"));
                }
            }
            Event::EndOfRib { peer, family } => {
                for (t, rib) in self.ribs.iter_mut().enumerate() {
                    let table = table_at(t);
                    changes.extend(
                        rib.sweep_stale_family(peer, family)
                            .into_iter()
                            .map(|c| (table, c)),
                    );
                }
            }
            Event::Down {
                peer,
                reason,
                stale_for,
            } => {
                warn!(peer = %peer, %reason, "BGP session down");
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.flaps += 1;
                    st.session = None;
                    st.last_error_at = Some(Instant::now());
                }
                if stale_for.is_some() {
                    // Graceful restart: keep forwarding on its routes; the daemon sweeps
                    // them when the restart time is over (or at End-of-RIB).
                    for rib in &mut self.ribs {
                        rib.mark_stale(peer);
                    }
                    if let Some(st) = self.peers.get_mut(&peer) {
                        st.state = "restarting";
                        st.since = Instant::now();
                        st.last_error = Some(reason.to_string());
                    }
                } else {
                    changes.extend(self.drop_peer(peer, &reason.to_string()));
                }
            }
        }
        commands.extend(self.export_changes(&changes));
        self.refresh_counts();
        Ok(FeedOutput { commands, changes })
    }

    /// Applies a new configuration (SIGHUP): peers added, removed or changed, new
    /// policies and announcements. Import policy changes take effect through a route
    /// refresh from the peer; session parameter changes restart that session.
    pub fn reconfigure(&mut self, config: &config::Config) -> Result<Reconfigured> {
        let Some(new) = config.bgp.clone() else {
            // BGP removed: every peer goes.
            let remove: Vec<PeerId> = self.peers.keys().copied().collect();
            let mut changes = Vec::new();
            for p in &remove {
                changes.extend(self.drop_peer(*p, "removed from the configuration"));
            }
            return Ok(Reconfigured {
                add: Vec::new(),
                remove,
                commands: Vec::new(),
                changes,
            });
        };
        let identity_changed =
            new.local_as != self.config.local_as || new.router_id != self.config.router_id;
        if new.multipath != self.config.multipath || new.max_paths != self.config.max_paths {
            warn!("bgp.multipath and bgp.max_paths changes take effect at the next start");
        }
        let old_sessions: HashMap<PeerId, PeerConfig> = self
            .session_configs()
            .into_iter()
            .map(|c| (c.remote_addr, c))
            .collect();
        let old_peers = self.peer_configs.clone();
        let old_policies = std::mem::take(&mut self.policies);
        let old_lists = std::mem::take(&mut self.prefix_lists);
        self.policies = config
            .policies
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        self.prefix_lists = config
            .prefix_lists
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        self.statics = if new.announce_static {
            config.routes.iter().map(|r| r.prefix).collect()
        } else {
            Vec::new()
        };
        let (multipath, max_paths) = (self.config.multipath, self.config.max_paths);
        self.config = new.clone();
        self.config.multipath = multipath;
        self.config.max_paths = max_paths;
        self.reset_aggregates();
        self.suppressed.clear();
        self.peer_configs = new.peers.iter().map(|p| (p.address, p.clone())).collect();
        let new_sessions: HashMap<PeerId, PeerConfig> = self
            .session_configs()
            .into_iter()
            .map(|c| (c.remote_addr, c))
            .collect();

        let (mut add, mut remove, mut commands, mut changes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (addr, old) in &old_sessions {
            let table_changed = old_peers.get(addr).map(|p| p.table)
                != self.peer_configs.get(addr).map(|p| p.table);
            match new_sessions.get(addr) {
                Some(cfg) if cfg == old && !identity_changed && !table_changed => {
                    // A different policy, or the same one edited (its rules or the
                    // prefix lists it may use): the peer's routes are judged again.
                    let old_import = old_peers.get(addr).and_then(|p| p.import.clone());
                    let new_import = self.peer_configs.get(addr).and_then(|p| p.import.clone());
                    let import_changed = old_import != new_import
                        || new_import.as_ref().is_some_and(|name| {
                            old_policies.get(name) != self.policies.get(name)
                                || old_lists != self.prefix_lists
                        });
                    if import_changed {
                        commands.push((*addr, Command::RouteRefresh));
                    }
                }
                _ => {
                    changes.extend(self.drop_peer(*addr, "reconfigured"));
                    self.exported.remove(addr);
                    remove.push(*addr);
                    if let Some(cfg) = new_sessions.get(addr) {
                        add.push(cfg.clone());
                    }
                }
            }
        }
        for (addr, cfg) in &new_sessions {
            if !old_sessions.contains_key(addr) {
                add.push(cfg.clone());
            }
        }
        for addr in remove.iter().filter(|a| !new_sessions.contains_key(a)) {
            self.peers.remove(addr);
        }
        for p in &new.peers {
            let entry = self
                .peers
                .entry(p.address)
                .or_insert_with(|| PeerStatus::new(p));
            entry.name = p.name.clone();
            entry.remote_as = p.remote_as;
        }
        // New sessions count their messages where `nva bgp neighbors` reads them.
        for cfg in &mut add {
            if let Some(st) = self.peers.get(&cfg.remote_addr) {
                cfg.counters = st.counters.clone();
            }
        }
        commands.extend(self.export_all());
        Ok(Reconfigured {
            add,
            remove,
            commands,
            changes,
        })
    }

    /// Graceful-restart timer expiry for `peer`.
    pub fn sweep_stale(&mut self, peer: PeerId) -> FeedOutput {
        let mut changes = Vec::new();
        for (t, rib) in self.ribs.iter_mut().enumerate() {
            let table = table_at(t);
            changes.extend(rib.sweep_stale(peer).into_iter().map(|c| (table, c)));
        }
        let commands = self.export_changes(&changes);
        self.refresh_counts();
        FeedOutput { commands, changes }
    }

    fn drop_peer(&mut self, peer: PeerId, why: &str) -> Vec<(Table, RibChange)> {
        if let Some(st) = self.peers.get_mut(&peer) {
            st.state = "idle";
            st.since = Instant::now();
            st.last_error = Some(why.to_string());
            st.last_error_at = Some(Instant::now());
            st.session = None;
        }
        self.rejected.remove(&peer);
        let mut changes = Vec::new();
        for (t, rib) in self.ribs.iter_mut().enumerate() {
            let table = table_at(t);
            changes.extend(rib.peer_down(peer).into_iter().map(|c| (table, c)));
        }
        changes
    }

    fn prefix_count(&self, peer: PeerId) -> usize {
        self.ribs.iter().map(|r| r.prefix_count(peer)).sum()
    }

    fn refresh_counts(&mut self) {
        // Constant time per peer: this runs after every UPDATE.
        let counts: Vec<(PeerId, [usize; 2], usize)> = self
            .peers
            .keys()
            .map(|p| {
                let mut accepted = [0; 2];
                for rib in &self.ribs {
                    let c = rib.family_counts(*p);
                    accepted = [accepted[0] + c[0], accepted[1] + c[1]];
                }
                (*p, accepted, self.exported.get(p).map_or(0, HashMap::len))
            })
            .collect();
        for (p, accepted, announced) in counts {
            let suppressed = self.suppressed.get(&p).map_or(0, HashSet::len);
            let rejected = self.rejected.get(&p).map_or(0, HashMap::len);
            if let Some(st) = self.peers.get_mut(&p) {
                st.accepted = accepted.iter().sum();
                st.accepted_by_family = accepted;
                st.announced = announced;
                st.announce_suppressed = suppressed;
                st.rejected_by_policy = rejected;
                st.received_now = st.accepted + rejected;
            }
        }
    }

    /// Tracks a next hop seen in an UPDATE; false when it can never be one (the paths
    /// are then treated as withdrawn). A next hop new to the RIBs that does not resolve
    /// makes its paths ineligible from the start.
    fn track_next_hop(&mut self, peer: PeerId, via: IpAddr, resolver: &Resolver) -> bool {
        let new = self.tracker.get(via).is_none();
        let resolution = if new {
            resolver.resolve(via)
        } else {
            self.tracker.get(via).cloned().expect("tracked")
        };
        match resolution {
            Resolution::Unresolved(Unresolved::Invalid(_)) => false,
            Resolution::Unresolved(why) => {
                if new {
                    info!(peer = %peer, next_hop = %via, %why, "BGP next hop does not resolve: its paths are not eligible");
                    for rib in &mut self.ribs {
                        rib.set_unreachable_unused(via);
                    }
                    self.tracker.track(via, resolver);
                }
                true
            }
            _ => {
                if new {
                    self.tracker.track(via, resolver);
                }
                true
            }
        }
    }

    /// Next-hop tracking: resolves every BGP next hop again (a resolving route, a
    /// gateway's neighbour entry, a link or a probe changed). Paths whose next hop
    /// stopped resolving lose their eligibility (an alternative path takes over);
    /// routes whose resolution moved are re-installed over the new gateways. Only
    /// routes that really change are touched.
    pub fn follow_resolution(&mut self, resolver: &Resolver) -> FeedOutput {
        let changed = self.tracker.refresh(resolver);
        if changed.is_empty() {
            return FeedOutput::default();
        }
        let mut changes = Vec::new();
        for (t, rib) in self.ribs.iter_mut().enumerate() {
            let table = table_at(t);
            changes.extend(
                rib.set_reachability(&changed)
                    .into_iter()
                    .map(|c| (table, c)),
            );
        }
        let commands = self.export_changes(&changes);
        self.refresh_counts();
        FeedOutput { commands, changes }
    }

    /// The peer named `name` (or with that address).
    pub fn peer_by_name_or_address(&self, name: &str) -> Option<PeerId> {
        self.peers
            .iter()
            .find(|(id, st)| st.name == name || id.to_string() == name)
            .map(|(id, _)| *id)
    }

    /// Peers whose max-prefix restart timer has run out (taken: the caller restarts them).
    pub fn due_restarts(&mut self) -> Vec<PeerId> {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .restarts
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &due {
            self.restarts.remove(p);
        }
        due
    }

    /// A fresh session task replaced the peer's: it knows nothing of what we announced,
    /// so everything is announced again (and the max-prefix state is reset).
    pub fn session_restarted(&mut self, peer: PeerId) -> Vec<(PeerId, Command)> {
        self.exported.remove(&peer);
        self.suppressed.remove(&peer);
        self.restarts.remove(&peer);
        if let Some(st) = self.peers.get_mut(&peer) {
            st.max_prefix_reached = false;
        }
        self.export_all()
    }

    /// A peer's Established status for the self-health and CLI.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        // Paths over unresolved next hops: counted when asked (one pass over the RIBs,
        // only while some next hop does not resolve).
        let unresolved: Vec<IpAddr> = self
            .tracker
            .iter()
            .filter(|(_, r)| !r.is_resolved())
            .map(|(a, _)| *a)
            .collect();
        let mut per_peer: HashMap<PeerId, usize> = HashMap::new();
        if !unresolved.is_empty() {
            for rib in &self.ribs {
                for (peer, n) in rib.paths_via(&unresolved) {
                    *per_peer.entry(peer).or_default() += n;
                }
            }
        }
        self.peers
            .iter()
            .map(|(id, s)| {
                let mut s = s.clone();
                s.uptime_secs = s.since.elapsed().as_secs();
                s.last_error_secs = s.last_error_at.map(|t| t.elapsed().as_secs());
                (s.messages_received, s.messages_sent, _, s.updates_sent) = s.counters.read();
                s.unresolved = per_peer.get(id).copied().unwrap_or(0);
                s
            })
            .collect()
    }

    /// `statuses` with what is announced to each peer per family (a pass over those
    /// routes: for `nva bgp neighbors`, not for every scrape).
    pub fn neighbors(&self) -> Vec<PeerStatus> {
        fn by_family<'a>(prefixes: impl Iterator<Item = &'a IpNet>) -> [usize; 2] {
            let mut n = [0; 2];
            for p in prefixes {
                n[p.addr().is_ipv6() as usize] += 1;
            }
            n
        }
        let mut out = self.statuses();
        // Peers are keyed by their address.
        for s in &mut out {
            s.announced_by_family = by_family(
                self.exported
                    .get(&s.address)
                    .into_iter()
                    .flat_map(HashMap::keys),
            );
            s.rejected_by_family = by_family(
                self.rejected
                    .get(&s.address)
                    .into_iter()
                    .flat_map(HashMap::keys),
            );
        }
        out
    }

    /// Attributes of a route nva originates.
    fn originated() -> Arc<PathAttrs> {
        Arc::new(PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            ..Default::default()
        })
    }

    /// What `peer` should get for `prefix`: originated, static or learned (with export
    /// policy when one is configured; without one, only originated prefixes).
    fn export_for(&self, peer: PeerId, prefix: &IpNet) -> Option<Arc<PathAttrs>> {
        let cfg = self.peer_configs.get(&peer)?;
        let policy = cfg.export.as_ref().and_then(|n| self.policies.get(n));
        let mut table = None;
        // A static or learned route covering the peer's own session address would pull
        // the session itself through nva (the /32 routes to a route server's endpoints
        // with `announce_static`): never announced to that peer. Explicitly originated
        // prefixes (`announce`, e.g. a summary) are the operator's intent and stay.
        let originated = self.config.announce.contains(prefix) || self.active_aggregate(prefix);
        if !originated && (prefix.contains(&peer) || self.summarised(prefix)) {
            return None;
        }
        let candidate = if originated || self.statics.contains(prefix) {
            Some(Self::originated())
        } else if policy.is_some() {
            // A learned route: not back to the peer it came from nor to another peer
            // of its group (split horizon: the other endpoint of one route server),
            // not from iBGP to iBGP.
            let same_group = |from: &PeerId| {
                cfg.group.is_some()
                    && self
                        .peer_configs
                        .get(from)
                        .is_some_and(|f| f.group == cfg.group)
            };
            let learned = self.ribs.iter().enumerate().find_map(|(i, rib)| {
                rib.paths(prefix)
                    .into_iter()
                    .find(|(_, _, best, _)| *best)
                    .filter(|(from, ..)| *from != peer && !same_group(from))
                    .map(|(from, attrs, ..)| (from, attrs, table_at(i)))
            });
            match learned {
                Some((from, attrs, t)) => {
                    table = Some(t);
                    let from_ibgp = self
                        .peer_configs
                        .get(&from)
                        .is_some_and(|f| f.remote_as == self.config.local_as);
                    if from_ibgp && cfg.remote_as == self.config.local_as {
                        None
                    } else {
                        // nva forwards the traffic itself: next hop self.
                        let mut a = (*attrs).clone();
                        a.next_hop = None;
                        Some(Arc::new(a))
                    }
                }
                None => None,
            }
        } else {
            None
        };
        let attrs = candidate?;
        // Well-known communities, AS prepend and next-hop-self are applied by the
        // session (bgp::export) when it sends.
        let attrs = match policy {
            Some(p) => Arc::new(p.apply(prefix, &attrs, &self.policy_ctx(table))?),
            None => attrs,
        };
        match self.degraded {
            None => Some(attrs),
            Some(SickAction::Withdraw) => None,
            Some(SickAction::Prepend(n)) => {
                let mut a = (*attrs).clone();
                a.as_path.prepend(self.config.local_as, n as usize);
                Some(Arc::new(a))
            }
        }
    }

    /// nva became unhealthy (`Some`) or healthy again (`None`): re-exports everything
    /// accordingly and returns the commands.
    pub fn set_degraded(&mut self, action: Option<SickAction>) -> Vec<(PeerId, Command)> {
        if self.degraded == action {
            return Vec::new();
        }
        self.degraded = action;
        self.export_all()
    }

    pub fn degraded(&self) -> Option<SickAction> {
        self.degraded
    }

    /// Withdrawals of everything announced to established peers (graceful shutdown).
    pub fn withdraw_all(&self) -> Vec<(PeerId, Command)> {
        self.exported
            .iter()
            .filter(|(p, m)| {
                !m.is_empty() && self.peers.get(p).is_some_and(|s| s.state == "established")
            })
            .map(|(p, m)| (*p, Command::Withdraw(m.keys().copied().collect())))
            .collect()
    }

    /// Full announcement set for every peer (at start and after a reload).
    pub fn export_all(&mut self) -> Vec<(PeerId, Command)> {
        let mut prefixes: HashSet<IpNet> = self.config.announce.iter().copied().collect();
        prefixes.extend(self.statics.iter().copied());
        prefixes.extend(self.aggregates.iter().map(|(a, _)| a.prefix));
        for rib in &self.ribs {
            prefixes.extend(rib.best_routes().map(|(p, _, _)| p));
        }
        for peer in self.peers.keys() {
            prefixes.extend(self.exported.get(peer).into_iter().flat_map(|m| m.keys()));
        }
        let prefixes: Vec<IpNet> = prefixes.into_iter().collect();
        let out = self.export_prefixes(&prefixes);
        self.refresh_counts();
        out
    }

    fn export_changes(&mut self, changes: &[(Table, RibChange)]) -> Vec<(PeerId, Command)> {
        let mut prefixes: Vec<IpNet> = changes.iter().map(|(_, c)| c.prefix()).collect();
        prefixes.extend(self.track_aggregates(changes));
        self.export_prefixes(&prefixes)
    }

    fn export_prefixes(&mut self, prefixes: &[IpNet]) -> Vec<(PeerId, Command)> {
        let mut out = Vec::new();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            let limit = self.peer_configs.get(&peer).and_then(|p| p.max_announce);
            let mut announce = Vec::new();
            let mut withdraw = Vec::new();
            // Withdrawals first (they make room under the limit), then announcements;
            // prefixes held back earlier are retried once room comes back.
            let mut wanted = Vec::new();
            for prefix in prefixes {
                let want = self.export_for(peer, prefix);
                let have = self.exported.entry(peer).or_default();
                match want {
                    Some(a) => wanted.push((*prefix, a)),
                    None => {
                        if have.remove(prefix).is_some() {
                            withdraw.push(*prefix);
                        }
                        if let Some(s) = self.suppressed.get_mut(&peer) {
                            s.remove(prefix);
                        }
                    }
                }
            }
            if let Some(max) = limit {
                let held = self.suppressed.get(&peer).cloned().unwrap_or_default();
                let have = self.exported.entry(peer).or_default();
                if have.len() < max {
                    for prefix in held {
                        if wanted.iter().all(|(p, _)| *p != prefix)
                            && let Some(a) = self.export_for(peer, &prefix)
                        {
                            wanted.push((prefix, a));
                        }
                    }
                }
            }
            let mut newly_suppressed = 0usize;
            for (prefix, a) in wanted {
                let have = self.exported.entry(peer).or_default();
                if have.get(&prefix) == Some(&a) {
                    continue;
                }
                let full =
                    limit.is_some_and(|max| !have.contains_key(&prefix) && have.len() >= max);
                if full {
                    // Originated prefixes and aggregates (the operator's intent) take
                    // the place of a learned or static one; anything else waits.
                    let intended =
                        |p: &IpNet| self.config.announce.contains(p) || self.active_aggregate(p);
                    let evict = if intended(&prefix) {
                        self.exported[&peer]
                            .keys()
                            .filter(|p| !intended(p))
                            .max_by_key(|p| (p.prefix_len(), **p))
                            .copied()
                    } else {
                        None
                    };
                    let Some(evicted) = evict else {
                        if self.suppressed.entry(peer).or_default().insert(prefix) {
                            newly_suppressed += 1;
                        }
                        continue;
                    };
                    let have = self.exported.entry(peer).or_default();
                    have.remove(&evicted);
                    announce.retain(|(p, _)| *p != evicted);
                    if !withdraw.contains(&evicted) {
                        withdraw.push(evicted);
                    }
                    self.suppressed.entry(peer).or_default().insert(evicted);
                    newly_suppressed += 1;
                }
                let have = self.exported.entry(peer).or_default();
                have.insert(prefix, a.clone());
                if let Some(s) = self.suppressed.get_mut(&peer) {
                    s.remove(&prefix);
                }
                announce.push((prefix, a));
            }
            if newly_suppressed > 0 {
                warn!(
                    peer = %peer,
                    max = limit.unwrap_or(0),
                    held_back = self.suppressed.get(&peer).map_or(0, HashSet::len),
                    "BGP: max_announce reached, prefixes held back"
                );
            }
            if !announce.is_empty() {
                out.push((peer, Command::Announce(announce)));
            }
            if !withdraw.is_empty() {
                out.push((peer, Command::Withdraw(withdraw)));
            }
        }
        out
    }

    /// Paths the RIBs hold for a prefix (for the CLI).
    pub fn paths(&self, prefix: &IpNet) -> serde_json::Value {
        let mut out = Vec::new();
        for (t, rib) in self.ribs.iter().enumerate() {
            for (peer, attrs, best, multipath) in rib.paths(prefix) {
                let via = crate::bgp::import::next_hop_addr(&attrs.next_hop);
                let resolution = via.and_then(|v| self.tracker.get(v));
                out.push(serde_json::json!({
                    "resolved": resolution.is_none_or(Resolution::is_resolved),
                    "resolution": resolution.map(Resolution::describe),
                    "gateways": resolution.map(|r| r.hops().iter().map(|h| h.via).collect::<Vec<_>>()),
                    "table": table_at(t).name(),
                    "peer": peer,
                    "as_path": attrs.as_path.to_string(),
                    "next_hop": crate::bgp::import::next_hop_addr(&attrs.next_hop),
                    "local_pref": attrs.local_pref,
                    "med": attrs.med,
                    "best": best,
                    "multipath": multipath,
                }));
            }
        }
        // Paths received but not in the RIB, with the reason.
        let prefix = prefix.trunc();
        for (peer, set) in &self.rejected {
            if let Some((attrs, why)) = set.get(&prefix) {
                out.push(serde_json::json!({
                    "table": null,
                    "peer": peer,
                    "as_path": attrs.as_path.to_string(),
                    "next_hop": crate::bgp::import::next_hop_addr(&attrs.next_hop),
                    "local_pref": attrs.local_pref,
                    "med": attrs.med,
                    "best": false,
                    "multipath": false,
                    "rejected": why.describe(),
                }));
            }
        }
        serde_json::Value::Array(out)
    }

    /// How the selected next hops of a BGP route resolve (for `nva routes`): one
    /// entry per BGP next hop, with the gateways the data plane sends to.
    pub fn resolved_via(&self, table: Table, prefix: &IpNet) -> Vec<serde_json::Value> {
        self.selected_nexthops(table, prefix)
            .map(|nexthops| self.describe_nexthops(&nexthops))
            .unwrap_or_default()
    }

    /// The BGP next hops of the path(s) selected for `prefix`.
    pub fn selected_nexthops(&self, table: Table, prefix: &IpNet) -> Option<Vec<IpAddr>> {
        match self.ribs[table_index(table)].selection(prefix) {
            Some(RibChange::Set { nexthops, .. }) => Some(nexthops.to_vec()),
            _ => None,
        }
    }

    /// How BGP next hops resolve (what `nva routes` shows as `resolved_via`).
    pub fn describe_nexthops(&self, nexthops: &[IpAddr]) -> Vec<serde_json::Value> {
        nexthops
            .iter()
            .map(|via| {
                let r = self.tracker.get(*via);
                serde_json::json!({
                    "next_hop": via,
                    "resolution": r.map(Resolution::describe),
                    "gateways": r.map(|r| r.hops().iter().map(|h| h.via).collect::<Vec<_>>()),
                })
            })
            .collect()
    }

    /// Prefixes learned over BGP, per table (for metrics).
    pub fn rib_sizes(&self) -> [usize; 2] {
        [self.ribs[0].len(), self.ribs[1].len()]
    }

    pub fn stale_timer(&self, peer: PeerId) -> Option<Duration> {
        self.peer_configs
            .get(&peer)
            .and_then(|p| p.graceful_restart_time)
            .map(|s| Duration::from_secs(s as u64))
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
pub(crate) mod tests;
