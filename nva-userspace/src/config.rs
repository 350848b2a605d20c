//! The configuration file (TOML).
//!
//! Parsing rejects unknown fields; validation checks what serde cannot (prefixes are
//! canonical, next hops match the prefix family, names are unique) and names the
//! offending field as a path, e.g. `routes[2].nexthops[0].via`. Nothing is attached
//! or written until the whole file is valid.
use std::{collections::HashSet, net::IpAddr, path::Path};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dataplane: Dataplane,
    #[serde(default)]
    pub control: Control,
    /// Interfaces the XDP program is attached to and forwards between.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub separation: Separation,
    /// Named sets of east-west prefixes (e.g. dev, prod, shared).
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// Allow/deny between segments for east-west traffic; pairs not listed are allowed.
    #[serde(default)]
    pub segment_rules: Vec<SegmentRule>,
    #[serde(default)]
    pub health: Health,
    /// The BGP speaker; off when absent.
    #[serde(default)]
    pub bgp: Option<Bgp>,
    /// Route policies, referenced by name from BGP peers.
    #[serde(default)]
    pub policies: Vec<crate::policy::Policy>,
    #[serde(default)]
    pub prefix_lists: Vec<crate::policy::PrefixList>,
    /// How next hops off the connected subnets are resolved.
    #[serde(default)]
    pub resolve: Resolve,
}

/// Recursive next-hop resolution (BGP next hops and static routes' next hops that are
/// not on a connected subnet).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// The kernel's default route may resolve next hops (a cloud VM's route to its
    /// subnet gateway from DHCP), like FRR's `ip nht resolve-via-default`.
    #[serde(default = "yes")]
    pub via_default: bool,
    /// The kernel's gateway routes over nva's interfaces (not nva's own) may resolve
    /// next hops; nva's static routes always may.
    #[serde(default = "yes")]
    pub kernel_routes: bool,
}

impl Default for Resolve {
    fn default() -> Self {
        Resolve {
            via_default: true,
            kernel_routes: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    pub local_as: u32,
    pub router_id: std::net::Ipv4Addr,
    /// Paths of equal preference from different peers become one ECMP group.
    #[serde(default = "yes")]
    pub multipath: bool,
    #[serde(default = "default_max_paths")]
    pub max_paths: usize,
    /// Accept sessions on this address (e.g. "10.0.1.4:179"). By default nva accepts
    /// on port 179 of every address of each family it has peers in (a peer's reconnect
    /// then does not wait for nva's own retry timer; route servers refuse connections for
    /// a while after an error); a default port that cannot be bound is only a warning.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Prefixes nva originates (announced to every peer, subject to export policy).
    #[serde(default)]
    pub announce: Vec<IpNet>,
    /// Also announce the static routes.
    #[serde(default)]
    pub announce_static: bool,
    /// Summaries announced while a more specific route is in the RIB (or a static
    /// route is announced), e.g. an NVA in front of a large SD-WAN or a full table,
    /// under a route server's limit of 1,000 routes per peer.
    #[serde(default)]
    pub aggregates: Vec<Aggregate>,
    /// Mirror BGP routes into the kernel's table like static routes (what XDP passes
    /// up, e.g. TTL expiry, then meets the same routes).
    #[serde(default = "yes")]
    pub kernel_routes: bool,
    #[serde(default)]
    pub peers: Vec<BgpPeer>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    pub prefix: IpNet,
    /// Announce only the summary, not the more specific routes it covers.
    #[serde(default)]
    pub summary_only: bool,
}

fn default_max_paths() -> usize {
    16
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    pub name: String,
    pub address: IpAddr,
    pub remote_as: u32,
    /// Peers of one group (e.g. the two endpoints of one route server) never get a
    /// route learned from another member (split horizon over the group).
    #[serde(default)]
    pub group: Option<String>,
    /// Table its routes go into (default: by the class of each prefix).
    #[serde(default)]
    pub table: Option<TrafficClass>,
    /// Import policy (default: accept everything).
    #[serde(default)]
    pub import: Option<String>,
    /// Export policy over originated, static and learned routes (default: announce only
    /// the originated prefixes).
    #[serde(default)]
    pub export: Option<String>,
    /// Most prefixes accepted from this peer.
    #[serde(default)]
    pub max_prefix: Option<usize>,
    /// Most prefixes announced to this peer: Azure Route Server drops the session of
    /// a peer that announces more than 1,000. Beyond it nothing more is sent; nva
    /// warns, `nva health` and the metric `nva_bgp_announce_limited` say so.
    #[serde(default)]
    pub max_announce: Option<usize>,
    #[serde(default)]
    pub max_prefix_action: MaxPrefixAction,
    /// After a max-prefix teardown, start the session again after this many seconds
    /// (default: stay down until `nva bgp clear PEER` or a restart).
    #[serde(default)]
    pub max_prefix_restart: Option<u16>,
    /// Only accept the peer's connections (needs `bgp.listen`).
    #[serde(default)]
    pub passive: bool,
    #[serde(default)]
    pub port: Option<u16>,
    /// Source address for the session (multihop over a loopback).
    #[serde(default)]
    pub local_addr: Option<IpAddr>,
    /// Hold time proposed (s); route servers use 180 (keepalive 60).
    #[serde(default)]
    pub hold_time: Option<u16>,
    #[serde(default)]
    pub keepalive: Option<u16>,
    #[serde(default)]
    pub connect_retry: Option<u16>,
    /// eBGP multihop TTL (route servers are not directly connected).
    #[serde(default)]
    pub multihop_ttl: Option<u8>,
    /// RFC 5082 GTSM (exclusive with multihop).
    #[serde(default)]
    pub gtsm: bool,
    #[serde(default)]
    pub md5_password: Option<String>,
    /// Graceful restart (receiving side): keep a restarting peer's routes this long (s).
    #[serde(default)]
    pub graceful_restart_time: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MaxPrefixAction {
    /// Log and keep accepting.
    Warn,
    /// Keep the session, accept no new prefixes.
    Stop,
    /// Send Cease (maximum number of prefixes reached) and keep the session down.
    #[default]
    Teardown,
}

/// What an unhealthy nva does with its announcements so that the route server moves
/// traffic to the other NVAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SickAction {
    /// Withdraw everything it announces.
    #[default]
    Withdraw,
    /// Keep announcing with the local AS prepended this many extra times.
    Prepend(u8),
}

/// Next-hop health checking.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Default probe for every next hop: "none" (link and neighbour state only), "icmp",
    /// "tcp:PORT" or "udp-echo:PORT". A next hop's own `probe` overrides it.
    #[serde(default)]
    pub probe: ProbeSetting,
    /// Probe interval; a next hop is down after `multiplier` intervals without answer.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_multiplier")]
    pub multiplier: u32,
    /// A next hop that was down must answer this long before it carries traffic again.
    #[serde(default = "default_hold_down")]
    pub hold_down_ms: u64,
    /// With BGP, what nva does while its self check fails: `withdraw` (default) or
    /// `{ prepend = N }` (stay announced, N extra AS-path prepends: become passive).
    /// It announces normally again after `hold_down_ms` of good health.
    #[serde(default)]
    pub when_sick: SickAction,
    /// Extra targets whose failure makes nva itself unhealthy (e.g. "the internet next
    /// hop answers"); see `nva health`.
    #[serde(default)]
    pub track: Vec<TrackedTarget>,
    /// On SIGTERM with BGP: withdraw nva's announcements, then wait this long for the
    /// peers to move traffic away before detaching (only while a session is up). A
    /// route server reprograms the fabric in seconds, not milliseconds.
    #[serde(default = "default_drain")]
    pub drain_ms: u64,
    /// When every next hop of a route is down: withdraw it from the data plane (its
    /// traffic falls through to a backup route or a less specific prefix; default), or
    /// keep it (its traffic meets the no-route policy).
    #[serde(default)]
    pub keep_dead_routes: bool,
}

fn default_interval() -> u64 {
    100
}
fn default_multiplier() -> u32 {
    3
}
fn default_hold_down() -> u64 {
    1000
}
fn default_drain() -> u64 {
    5000
}

impl Default for Health {
    fn default() -> Self {
        Self {
            probe: ProbeSetting::None,
            interval_ms: default_interval(),
            multiplier: default_multiplier(),
            hold_down_ms: default_hold_down(),
            track: Vec::new(),
            when_sick: SickAction::Withdraw,
            drain_ms: default_drain(),
            keep_dead_routes: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackedTarget {
    pub target: IpAddr,
    /// "icmp", "tcp:PORT" or "udp-echo:PORT".
    pub probe: ProbeSetting,
}

/// A probe setting, parsed from its text ("none", "icmp", "tcp:PORT", "udp-echo:PORT")
/// when the config is read: a bad one is refused with its line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum ProbeSetting {
    #[default]
    None,
    Icmp,
    Tcp(u16),
    UdpEcho(u16),
}

impl TryFrom<String> for ProbeSetting {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ProbeSetting> for String {
    fn from(p: ProbeSetting) -> String {
        match p {
            ProbeSetting::None => "none".into(),
            ProbeSetting::Icmp => "icmp".into(),
            ProbeSetting::Tcp(port) => format!("tcp:{port}"),
            ProbeSetting::UdpEcho(port) => format!("udp-echo:{port}"),
        }
    }
}

impl std::str::FromStr for ProbeSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port"))
        };
        match s.split_once(':') {
            None if s == "none" => Ok(Self::None),
            None if s == "icmp" => Ok(Self::Icmp),
            Some(("tcp", p)) => Ok(Self::Tcp(port(p)?)),
            Some(("udp-echo", p)) => Ok(Self::UdpEcho(port(p)?)),
            _ => Err(format!(
                "{s:?} is not a probe (none, icmp, tcp:PORT, udp-echo:PORT)"
            )),
        }
    }
}

/// East-west (private) versus north-south (internet) traffic.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficClass {
    EastWest,
    NorthSouth,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Separation {
    /// Destination prefixes that are east-west besides the defaults.
    #[serde(default)]
    pub east_west: Vec<IpNet>,
    /// Include the defaults (RFC 1918, 100.64.0.0/10, fc00::/7) in the east-west set.
    #[serde(default = "yes")]
    pub default_east_west: bool,
    /// No-route policy for east-west traffic (default: `dataplane.no_route`).
    #[serde(default)]
    pub no_route_east_west: Option<NoRoute>,
    /// No-route policy for north-south traffic (default: `dataplane.no_route`).
    #[serde(default)]
    pub no_route_north_south: Option<NoRoute>,
}

fn yes() -> bool {
    true
}

impl Default for Separation {
    fn default() -> Self {
        Self {
            east_west: Vec::new(),
            default_east_west: true,
            no_route_east_west: None,
            no_route_north_south: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    /// The data plane's id of the segment (1-based, in config order), set when the
    /// config is parsed.
    #[serde(skip)]
    pub id: u32,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    /// Source segment.
    pub from: String,
    /// Destination segment.
    pub to: String,
    pub action: SegmentAction,
    /// The ids of `from` and `to`, set when the config is parsed.
    #[serde(skip)]
    pub ids: (u32, u32),
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentAction {
    Allow,
    Deny,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address to serve Prometheus metrics on (`GET /metrics`), e.g. "127.0.0.1:9450".
    /// Off when absent.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// `native` (driver mode, the default) or `generic` (skb mode, an explicit fallback
    /// for drivers without XDP support; much slower).
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// What to do with packets that have no route: `pass` to the kernel (default) or `drop`.
    #[serde(default)]
    pub no_route: NoRoute,
    /// Give both directions of a flow the same ECMP hash (for stateful next hops).
    #[serde(default)]
    pub symmetric_hash: bool,
    /// ECMP hash seed; random per start when absent.
    #[serde(default)]
    pub hash_seed: Option<u32>,
    /// IPv4 FIB structure of the east-west table: `lpm-trie` (default), `dir-24-8`
    /// (constant lookup cost; about 130 MB per table) or `dxr` (a full table in 16 MB, a
    /// binary search within the destination's /16: about a third slower than DIR-24-8).
    /// Takes effect at start.
    #[serde(default)]
    pub ipv4_fib_east_west: FibKind,
    /// IPv4 FIB structure of the north-south table (where a full table lives).
    #[serde(default)]
    pub ipv4_fib_north_south: FibKind,
    /// IPv6 FIB structure of the east-west table: `lpm-trie` (default) or `multibit`
    /// (a 20-bit root and 4-bit strides: a handful of cache lines per lookup at any
    /// table size; memory per table is `ipv6_fib_blocks` x 64 bytes). Takes effect at
    /// start.
    #[serde(default)]
    pub ipv6_fib_east_west: Ipv6FibKind,
    /// IPv6 FIB structure of the north-south table.
    #[serde(default)]
    pub ipv6_fib_north_south: Ipv6FibKind,
    /// Blocks of each multibit IPv6 FIB (64 bytes each; default 2097152 = 128 MiB, about
    /// 400k routes of a table as sparse as a uniformly random one, more of a real one).
    #[serde(default)]
    pub ipv6_fib_blocks: Option<u32>,
    /// Blocks of each DIR-24-8 IPv4 FIB for prefixes longer than /24: one per /24 that
    /// holds any (1 KiB each; default 65536 = 64 MiB, a full table with 64k such /24s).
    /// `nva status` shows the blocks in use. Takes effect at start.
    #[serde(default)]
    pub ipv4_fib_blocks: Option<u32>,
    /// Range cells of each DXR IPv4 FIB (4 bytes each; default 4194304 = 16 MiB, about
    /// 2.5M routes of a full table). `nva status` shows the cells in use. Takes effect
    /// at start.
    #[serde(default)]
    pub ipv4_fib_ranges: Option<u32>,
    /// bpffs directory (e.g. "/sys/fs/bpf/nva") where the XDP attachments, counters and
    /// settings are pinned so that a restarted nva takes over without a forwarding gap
    /// (exit with SIGQUIT to leave forwarding running). Off when absent.
    #[serde(default)]
    pub pin_path: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FibKind {
    #[default]
    LpmTrie,
    #[serde(rename = "dir-24-8")]
    Dir24_8,
    Dxr,
}

impl Default for Dataplane {
    fn default() -> Self {
        Self {
            xdp_mode: XdpMode::Native,
            no_route: NoRoute::Pass,
            symmetric_hash: false,
            hash_seed: None,
            ipv4_fib_east_west: FibKind::LpmTrie,
            ipv4_fib_north_south: FibKind::LpmTrie,
            ipv6_fib_east_west: Ipv6FibKind::LpmTrie,
            ipv6_fib_north_south: Ipv6FibKind::LpmTrie,
            ipv6_fib_blocks: None,
            ipv4_fib_blocks: None,
            ipv4_fib_ranges: None,
            pin_path: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Ipv6FibKind {
    #[default]
    LpmTrie,
    Multibit,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    #[default]
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NoRoute {
    #[default]
    Pass,
    Drop,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// Unix socket the CLI talks to. Only root may use it (mode 0600) unless `group` is
    /// set.
    #[serde(default = "default_socket")]
    pub socket: String,
    /// A group whose members may use the CLI too (mode 0660), like FRR's frrvty group
    /// or BIRD's `-g`.
    #[serde(default)]
    pub group: Option<String>,
}

pub const DEFAULT_SOCKET: &str = "/run/nva/nva.sock";

fn default_socket() -> String {
    DEFAULT_SOCKET.to_string()
}

impl Default for Control {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            group: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// Look up everything entering here in this class's table, whatever the
    /// destination (default: classify by destination).
    #[serde(default)]
    pub class: Option<TrafficClass>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    pub prefix: IpNet,
    /// `forward` (default, needs next hops), `blackhole` (drop) or `kernel` (pass).
    #[serde(default)]
    pub action: RouteAction,
    /// ECMP next hops; traffic is spread over all of them by flow hash.
    #[serde(default)]
    pub nexthops: Vec<NextHopSpec>,
    /// Table the route goes into (default: the class of its prefix).
    #[serde(default)]
    pub table: Option<TrafficClass>,
    /// Next hops used only while every one of `nexthops` is down.
    #[serde(default)]
    pub backup_nexthops: Vec<NextHopSpec>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAction {
    #[default]
    Forward,
    Blackhole,
    Kernel,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct NextHopSpec {
    /// Next-hop address; must be on a connected subnet of one of the interfaces.
    pub via: IpAddr,
    /// Egress interface; found from the connected subnets when absent.
    #[serde(default)]
    pub dev: Option<String>,
    /// 802.1Q VLAN id to tag frames to this next hop with (1-4094); untagged when absent.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Health probe for this next hop (overrides `health.probe`).
    #[serde(default)]
    pub probe: Option<ProbeSetting>,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The way to a `Config`: read, checked, and what refers to other parts resolved
    /// (segment ids), so what uses it never checks or looks up again. (Deserialised
    /// any other way, a config has no segment ids: nva never does that.)
    pub fn parse(text: &str) -> Result<Self> {
        let mut config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        for (i, seg) in config.segments.iter_mut().enumerate() {
            seg.id = i as u32 + 1;
        }
        let id = |segments: &[Segment], name: &str| {
            segments.iter().find(|s| s.name == name).map_or(0, |s| s.id)
        };
        for rule in &mut config.segment_rules {
            rule.ids = (
                id(&config.segments, &rule.from),
                id(&config.segments, &rule.to),
            );
        }
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.interfaces.is_empty() {
            bail!("interfaces: at least one interface is needed");
        }
        let mut names = HashSet::new();
        for (i, iface) in self.interfaces.iter().enumerate() {
            if iface.name.is_empty() || iface.name.len() > 15 {
                bail!(
                    "interfaces[{i}].name: {:?} is not a valid interface name",
                    iface.name
                );
            }
            if !names.insert(iface.name.as_str()) {
                bail!("interfaces[{i}].name: {:?} is listed twice", iface.name);
            }
        }
        if self.control.socket.is_empty() {
            bail!("control.socket: must not be empty");
        }
        if let Some(n) = self.dataplane.ipv6_fib_blocks
            && !(1024..=1 << 24).contains(&n)
        {
            bail!("dataplane.ipv6_fib_blocks: {n} is outside 1024..=16777216");
        }
        if let Some(n) = self.dataplane.ipv4_fib_blocks
            && !(16..=1 << 20).contains(&n)
        {
            bail!("dataplane.ipv4_fib_blocks: {n} is outside 16..=1048576");
        }
        if let Some(n) = self.dataplane.ipv4_fib_ranges
            && !(1024..=1 << 28).contains(&n)
        {
            bail!("dataplane.ipv4_fib_ranges: {n} is outside 1024..=268435456");
        }
        for (i, p) in self.separation.east_west.iter().enumerate() {
            if p.trunc() != *p {
                bail!("separation.east_west[{i}]: {p} has host bits set");
            }
        }
        self.validate_segments()?;
        self.validate_bgp()?;
        for (i, t) in self.health.track.iter().enumerate() {
            if t.probe == ProbeSetting::None {
                bail!("health.track[{i}].probe: must probe something");
            }
        }
        if self.health.interval_ms < 10 || self.health.multiplier == 0 {
            bail!("health: interval_ms must be >= 10 and multiplier >= 1");
        }
        let mut prefixes = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            if route.prefix.trunc() != route.prefix {
                bail!(
                    "{field}.prefix: {} has host bits set (did you mean {}?)",
                    route.prefix,
                    route.prefix.trunc()
                );
            }
            if !prefixes.insert((route.prefix, route.table)) {
                bail!("{field}.prefix: {} is configured twice", route.prefix);
            }
            match route.action {
                RouteAction::Forward if route.nexthops.is_empty() => {
                    bail!("{field}.nexthops: a forward route needs at least one next hop")
                }
                RouteAction::Blackhole | RouteAction::Kernel if !route.nexthops.is_empty() => {
                    bail!(
                        "{field}.nexthops: a {:?} route takes no next hops",
                        route.action
                    )
                }
                _ => {}
            }
            if !route.backup_nexthops.is_empty() && route.action != RouteAction::Forward {
                bail!("{field}.backup_nexthops: only forward routes have backups");
            }
            let mut seen = HashSet::new();
            let all = route
                .nexthops
                .iter()
                .enumerate()
                .map(|(j, nh)| (format!("{field}.nexthops[{j}]"), nh))
                .chain(
                    route
                        .backup_nexthops
                        .iter()
                        .enumerate()
                        .map(|(j, nh)| (format!("{field}.backup_nexthops[{j}]"), nh)),
                );
            for (field, nh) in all {
                if nh.via.is_ipv4() != route.prefix.addr().is_ipv4() {
                    bail!(
                        "{field}.via: {} is not of the same address family as the prefix {}",
                        nh.via,
                        route.prefix
                    );
                }
                if nh.via.is_unspecified() || nh.via.is_multicast() || nh.via.is_loopback() {
                    bail!("{field}.via: {} cannot be a next hop", nh.via);
                }
                if let Some(dev) = &nh.dev
                    && !names.contains(dev.as_str())
                {
                    bail!("{field}.dev: {dev:?} is not one of the configured interfaces");
                }
                if let Some(vlan) = nh.vlan
                    && !(1..=4094).contains(&vlan)
                {
                    bail!("{field}.vlan: {vlan} is not a VLAN id (1-4094)");
                }
                if !seen.insert(nh) {
                    bail!("{field}: next hop {} is listed twice", nh.via);
                }
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_bgp(&self) -> Result<()> {
        let lists: std::collections::HashMap<String, crate::policy::PrefixList> = self
            .prefix_lists
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        let mut names = HashSet::new();
        for (i, l) in self.prefix_lists.iter().enumerate() {
            if !names.insert(l.name.as_str()) {
                bail!("prefix_lists[{i}].name: {:?} is defined twice", l.name);
            }
            l.validate(&format!("prefix_lists[{i}]"))?;
        }
        let mut policies = HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            if !policies.insert(p.name.as_str()) {
                bail!("policies[{i}].name: {:?} is defined twice", p.name);
            }
            p.validate(&format!("policies[{i}]"), &lists)?;
        }
        let Some(bgp) = &self.bgp else {
            return Ok(());
        };
        if bgp.local_as == 0 {
            bail!("bgp.local_as: 0 is not an AS number");
        }
        if bgp.max_paths == 0 {
            bail!("bgp.max_paths: must be at least 1");
        }
        for (i, p) in bgp.announce.iter().enumerate() {
            if p.trunc() != *p {
                bail!("bgp.announce[{i}]: {p} has host bits set");
            }
        }
        for (i, a) in bgp.aggregates.iter().enumerate() {
            if a.prefix.trunc() != a.prefix {
                bail!("bgp.aggregates[{i}].prefix: {} has host bits set", a.prefix);
            }
        }
        let mut addrs = HashSet::new();
        let mut peer_names = HashSet::new();
        for (i, peer) in bgp.peers.iter().enumerate() {
            let field = format!("bgp.peers[{i}]");
            if !addrs.insert(peer.address) {
                bail!("{field}.address: {} is configured twice", peer.address);
            }
            if peer.name.is_empty() || !peer_names.insert(peer.name.as_str()) {
                bail!("{field}.name: {:?} is empty or used twice", peer.name);
            }
            // What the session would refuse later, refused before anything is attached.
            if let Some(h) = peer.hold_time
                && (h == 1 || h == 2)
            {
                bail!("{field}.hold_time: must be 0 or at least 3 (RFC 4271)");
            }
            if let (Some(k), Some(h)) = (peer.keepalive, peer.hold_time)
                && h != 0
                && k >= h
            {
                bail!("{field}.keepalive: {k} must be less than hold_time {h}");
            }
            if peer.md5_password.as_ref().is_some_and(|p| p.len() > 80) {
                bail!("{field}.md5_password: longer than 80 bytes (TCP MD5 key limit)");
            }
            if peer.remote_as == 0 {
                bail!("{field}.remote_as: 0 is not an AS number");
            }
            for (what, name) in [("import", &peer.import), ("export", &peer.export)] {
                if let Some(name) = name
                    && !policies.contains(name.as_str())
                {
                    bail!("{field}.{what}: no policy named {name:?}");
                }
            }
            if peer.gtsm && peer.multihop_ttl.is_some() {
                bail!("{field}.gtsm: GTSM and multihop_ttl exclude each other");
            }
            if peer.max_prefix == Some(0) {
                bail!("{field}.max_prefix: must be at least 1");
            }
            if peer.max_announce == Some(0) {
                bail!("{field}.max_announce: must be at least 1");
            }
        }
        Ok(())
    }

    /// What is valid but probably wrong (printed by `nva config check`, logged by
    /// `nva run`).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(bgp) = &self.bgp else {
            return out;
        };
        // Azure Route Server (65515) and Virtual WAN hubs (65520).
        let route_server = |asn: u32| asn == 65515 || asn == 65520;
        let reserved =
            |asn: u32| matches!(asn, 8074 | 8075 | 12076) || (65515..=65520).contains(&asn);
        for (i, peer) in bgp.peers.iter().enumerate() {
            if !route_server(peer.remote_as) {
                continue;
            }
            let field = format!("bgp.peers[{i}]");
            if reserved(bgp.local_as) {
                out.push(format!(
                    "bgp.local_as: {} is reserved by Azure (8074, 8075, 12076, 65515-65520): \
                     the route server {field} ({}) will refuse it",
                    bgp.local_as, peer.name
                ));
            }
            if bgp.local_as > 65535 {
                out.push(format!(
                    "bgp.local_as: {} is a 4-octet AS; route servers ({field}, {}) accept \
                     16-bit ASNs only",
                    bgp.local_as, peer.name
                ));
            }
            if peer.multihop_ttl.is_none() && !peer.gtsm {
                out.push(format!(
                    "{field}.multihop_ttl: a route server's endpoints are in their own subnet \
                     (set multihop_ttl = 2)"
                ));
            }
        }
        out.dedup();
        out
    }

    fn validate_segments(&self) -> Result<()> {
        let max = nva_common::MAX_SEGMENTS as usize - 1;
        if self.segments.len() > max {
            bail!("segments: at most {max} segments");
        }
        let mut names = HashSet::new();
        let mut seen = HashSet::new();
        // Every prefix with its segment, to find overlaps across segments.
        let mut all: Vec<(IpNet, usize)> = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.name.is_empty() {
                bail!("segments[{i}].name: must not be empty");
            }
            if !names.insert(seg.name.as_str()) {
                bail!("segments[{i}].name: {:?} is defined twice", seg.name);
            }
            for (j, p) in seg.prefixes.iter().enumerate() {
                if p.trunc() != *p {
                    bail!("segments[{i}].prefixes[{j}]: {p} has host bits set");
                }
                if !seen.insert(*p) {
                    bail!("segments[{i}].prefixes[{j}]: {p} is in two segments");
                }
                // A prefix inside another segment's would silently take part of it.
                if let Some((q, k)) = all
                    .iter()
                    .find(|(q, k)| *k != i && (q.contains(p) || p.contains(q)))
                {
                    bail!(
                        "segments[{i}].prefixes[{j}]: {p} overlaps {q} of segment {:?}",
                        self.segments[*k].name
                    );
                }
                all.push((*p, i));
            }
        }
        for (i, rule) in self.segment_rules.iter().enumerate() {
            for (field, name) in [("from", &rule.from), ("to", &rule.to)] {
                if !names.contains(name.as_str()) {
                    bail!("segment_rules[{i}].{field}: no segment named {name:?}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [dataplane]
        no_route = "drop"
        symmetric_hash = true

        [[interfaces]]
        name = "eth0"
        [[interfaces]]
        name = "eth1"

        [[routes]]
        prefix = "10.100.0.0/16"
        nexthops = [{ via = "10.0.1.2" }, { via = "10.0.2.2", dev = "eth1" }]

        [[routes]]
        prefix = "fd00:100::/64"
        nexthops = [{ via = "fd00:1::2", vlan = 10 }]

        [[routes]]
        prefix = "192.0.2.0/24"
        action = "blackhole"
    "#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.dataplane.no_route, NoRoute::Drop);
        assert!(c.dataplane.symmetric_hash);
        assert_eq!(c.dataplane.xdp_mode, XdpMode::Native);
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.routes[0].nexthops.len(), 2);
        assert_eq!(c.routes[1].nexthops[0].vlan, Some(10));
        assert_eq!(c.routes[2].action, RouteAction::Blackhole);
        assert_eq!(c.control.socket, DEFAULT_SOCKET);
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("10.100.0.0/16", "10.100.0.1/16"),
                "routes[0].prefix",
            ),
            (
                GOOD.replace("10.0.1.2", "fd00::1"),
                "routes[0].nexthops[0].via",
            ),
            (
                GOOD.replace("dev = \"eth1\"", "dev = \"eth9\""),
                "routes[0].nexthops[1].dev",
            ),
            (
                GOOD.replace("vlan = 10", "vlan = 4095"),
                "routes[1].nexthops[0].vlan",
            ),
            (
                GOOD.replace("name = \"eth1\"", "name = \"eth0\""),
                "interfaces[1].name",
            ),
            (
                GOOD.replace(
                    "action = \"blackhole\"",
                    "action = \"blackhole\"\nnexthops = [{ via = \"10.0.1.2\" }]",
                ),
                "routes[2].nexthops",
            ),
            (
                GOOD.replace("no_route = \"drop\"", "no_route = \"maybe\""),
                "no_route",
            ),
            (
                GOOD.replace("symmetric_hash", "symetric_hash"),
                "symetric_hash",
            ),
            (
                GOOD.replace("no_route = \"drop\"", "ipv6_fib_north_south = \"dir-24-8\""),
                "ipv6_fib_north_south",
            ),
            (
                GOOD.replace("no_route = \"drop\"", "ipv6_fib_blocks = 10"),
                "dataplane.ipv6_fib_blocks",
            ),
            (
                GOOD.replace("prefix = \"192.0.2.0/24\"", "prefix = \"192.0.2.0/33\""),
                "prefix",
            ),
        ];
        for (text, field) in cases {
            let err = error_of(&text);
            assert!(err.contains(field), "error {err:?} should name {field}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = Config::parse(include_str!("../../dist/nva.toml")).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert!(c.metrics.listen.is_some());
    }

    #[test]
    fn probes_are_parsed_when_the_config_is_read() {
        let with = |probe: &str| {
            GOOD.replace(
                "nexthops = [{ via = \"10.0.1.2\" }, ",
                &format!("nexthops = [{{ via = \"10.0.1.2\", probe = \"{probe}\" }}, "),
            )
        };
        let c = Config::parse(&with("tcp:179")).unwrap();
        assert_eq!(c.routes[0].nexthops[0].probe, Some(ProbeSetting::Tcp(179)));
        assert_eq!(c.routes[0].nexthops[1].probe, None);
        assert_eq!(c.health.probe, ProbeSetting::None);
        let e = error_of(&with("tcp:0"));
        assert!(
            e.contains("\"0\" is not a port") && e.contains("probe"),
            "{e}"
        );
        let e = error_of(&with("ping"));
        assert!(e.contains("is not a probe"), "{e}");
        for p in ["none", "icmp", "tcp:80", "udp-echo:7"] {
            let parsed: ProbeSetting = p.parse().unwrap();
            assert_eq!(String::from(parsed), p, "written back as read");
        }
    }

    #[test]
    fn segments_and_separation() {
        let text = format!(
            "{GOOD}\n[separation]\neast_west = [\"203.0.113.0/24\"]\nno_route_north_south = \"drop\"\n\
             [[segments]]\nname = \"dev\"\nprefixes = [\"10.1.0.0/16\"]\n\
             [[segments]]\nname = \"prod\"\nprefixes = [\"10.2.0.0/16\"]\n\
             [[segment_rules]]\nfrom = \"dev\"\nto = \"prod\"\naction = \"deny\"\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.segments[1].id, 2);
        assert_eq!(c.segment_rules[0].ids, (1, 2));
        assert_eq!(c.separation.no_route_north_south, Some(NoRoute::Drop));
        assert!(c.separation.default_east_west);
        let bad = text.replace("to = \"prod\"", "to = \"qa\"");
        assert!(error_of(&bad).contains("segment_rules[0].to"));
        let bad = text.replace("10.2.0.0/16", "10.1.0.0/16");
        assert!(error_of(&bad).contains("segments[1].prefixes[0]"));
    }

    #[test]
    fn needs_an_interface() {
        assert!(error_of("").contains("interfaces"));
    }

    #[test]
    fn route_server_peers_get_warnings_about_reserved_and_4_octet_asns() {
        let peer = "[[bgp.peers]]\nname = \"rs1\"\naddress = \"10.0.255.4\"\nremote_as = 65515\n";
        let with = |local_as: u32, extra: &str| {
            Config::parse(&format!(
                "{GOOD}\n[bgp]\nlocal_as = {local_as}\nrouter_id = \"10.0.1.4\"\n{peer}{extra}"
            ))
            .unwrap()
            .warnings()
        };
        assert!(with(65001, "multihop_ttl = 2\n").is_empty());
        let w = with(65515, "multihop_ttl = 2\n");
        assert!(
            w[0].contains("bgp.local_as") && w[0].contains("reserved"),
            "{w:?}"
        );
        let w = with(4_200_000_000, "multihop_ttl = 2\n");
        assert!(w[0].contains("16-bit"), "{w:?}");
        let w = with(65001, "");
        assert!(w[0].contains("bgp.peers[0].multihop_ttl"), "{w:?}");
    }

    #[test]
    fn aggregates_and_announce_limits_are_checked() {
        let bgp = "[bgp]\nlocal_as = 65001\nrouter_id = \"10.0.1.4\"\n";
        let c = Config::parse(&format!(
            "{GOOD}\n{bgp}[[bgp.aggregates]]\nprefix = \"10.0.0.0/8\"\nsummary_only = true\n"
        ))
        .unwrap();
        assert!(c.bgp.unwrap().aggregates[0].summary_only);
        let err = error_of(&format!(
            "{GOOD}\n{bgp}[[bgp.aggregates]]\nprefix = \"10.1.0.0/8\"\n"
        ));
        assert!(err.contains("bgp.aggregates[0].prefix"), "{err}");
        let err = error_of(&format!(
            "{GOOD}\n{bgp}[[bgp.peers]]\nname = \"a\"\naddress = \"10.0.0.9\"\nremote_as = 65002\nmax_announce = 0\n"
        ));
        assert!(err.contains("bgp.peers[0].max_announce"), "{err}");
        // Defaults an operator relies on.
        let c = Config::parse(GOOD).unwrap();
        assert!(c.resolve.via_default && c.resolve.kernel_routes);
        assert_eq!(c.health.drain_ms, 5000);
    }

    #[test]
    fn session_settings_are_checked_before_anything_runs() {
        let bgp = "[bgp]\nlocal_as = 65001\nrouter_id = \"10.0.1.4\"\n";
        let peer = |extra: &str| {
            format!(
                "{GOOD}\n{bgp}[[bgp.peers]]\nname = \"a\"\naddress = \"10.0.0.9\"\nremote_as = 65002\n{extra}"
            )
        };
        for (extra, field) in [
            ("hold_time = 2\n", "bgp.peers[0].hold_time"),
            ("hold_time = 9\nkeepalive = 9\n", "bgp.peers[0].keepalive"),
            (
                &format!("md5_password = \"{}\"\n", "k".repeat(81)),
                "bgp.peers[0].md5_password",
            ),
            (
                "[[bgp.peers]]\nname = \"a\"\naddress = \"10.0.0.10\"\nremote_as = 65003\n",
                "bgp.peers[1].name",
            ),
        ] {
            let err = error_of(&peer(extra));
            assert!(err.contains(field), "{err} should name {field}");
        }
        assert!(Config::parse(&peer("hold_time = 9\nkeepalive = 3\n")).is_ok());
        let segments = format!(
            "{GOOD}\n[[segments]]\nname = \"dev\"\nprefixes = [\"10.1.0.0/16\"]\n\
             [[segments]]\nname = \"prod\"\nprefixes = [\"10.1.2.0/24\"]\n"
        );
        let err = error_of(&segments);
        assert!(
            err.contains("segments[1].prefixes[0]") && err.contains("overlaps"),
            "{err}"
        );
    }
}
