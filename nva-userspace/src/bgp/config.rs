//! Per-peer configuration of a BGP session (what the daemon's config file will map to).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::Deserialize;

use super::codec::Family;

/// Who opens the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConnectMode {
    /// Connect out, and also accept the peer's connections (collisions resolved by
    /// RFC 4271 §6.8).
    #[default]
    Active,
    /// Only accept connections.
    Passive,
}

/// Messages a session sent and received, counted by the session task and read by the
/// owner (`nva bgp neighbors`, metrics). Shared, not part of what a config compares.
#[derive(Clone, Debug, Default)]
pub struct MessageCounters(pub std::sync::Arc<MessageCounts>);

#[derive(Debug, Default)]
pub struct MessageCounts {
    pub received: std::sync::atomic::AtomicU64,
    pub sent: std::sync::atomic::AtomicU64,
    pub updates_received: std::sync::atomic::AtomicU64,
    pub updates_sent: std::sync::atomic::AtomicU64,
}

impl MessageCounters {
    pub fn add(counter: &std::sync::atomic::AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// (received, sent, UPDATEs received, UPDATEs sent).
    pub fn read(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.0;
        (
            c.received.load(Relaxed),
            c.sent.load(Relaxed),
            c.updates_received.load(Relaxed),
            c.updates_sent.load(Relaxed),
        )
    }
}

impl PartialEq for MessageCounters {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for MessageCounters {}

/// Everything one session needs. Durations are in seconds in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Name for logs.
    #[serde(default)]
    pub name: String,
    pub remote_addr: IpAddr,
    #[serde(default = "default_port")]
    pub remote_port: u16,
    pub remote_as: u32,
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Source address of outgoing connections (needed for multihop over loopbacks).
    #[serde(default)]
    pub local_addr: Option<IpAddr>,
    #[serde(default)]
    pub mode: ConnectMode,
    /// Proposed hold time (s); 0 disables keepalives. Route servers use 180.
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// Keepalive interval (s); the effective one is min(this, negotiated hold / 3).
    #[serde(default = "default_keepalive")]
    pub keepalive: u16,
    /// Seconds between connection attempts while the peer does not answer.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u16,
    /// Back-off after a session failure: starts at `min`, doubles up to `max` (s).
    #[serde(default = "default_backoff_min")]
    pub backoff_min: u16,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: u16,
    /// eBGP multihop: TTL of our packets (1 = directly connected, the default).
    #[serde(default)]
    pub multihop_ttl: Option<u8>,
    /// RFC 5082 GTSM: send with TTL 255, accept only TTL >= 254 (exclusive with multihop).
    #[serde(default)]
    pub gtsm: bool,
    /// RFC 2385 TCP MD5 signature key.
    #[serde(default)]
    pub md5_password: Option<String>,
    /// Address families to negotiate.
    #[serde(default = "default_families")]
    pub families: Vec<FamilyName>,
    /// Next hop for IPv6 routes we announce without one over an IPv4 session.
    #[serde(default)]
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Next hop for IPv4 routes we announce without one over an IPv6 session.
    #[serde(default)]
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Advertise graceful restart (helper) with this restart time (s).
    #[serde(default = "default_gr")]
    pub graceful_restart_time: Option<u16>,
    /// Restarting-speaker side of graceful restart (RFC 4724): list our families in the
    /// capability so the peer keeps our routes while we restart, with the F bit set
    /// when our forwarding state survives (nva's pinned XDP program).
    #[serde(default)]
    pub gr_forwarding_preserved: bool,
    /// R bit: we have just restarted (the peer keeps our routes until our End-of-RIB).
    #[serde(default)]
    pub gr_restarting: bool,
    /// Offer RFC 8654 extended messages.
    #[serde(default = "default_true")]
    pub extended_message: bool,
    /// Require the first AS of eBGP paths to be the peer's (off for route servers,
    /// which do not prepend themselves).
    #[serde(default)]
    pub enforce_first_as: bool,
    /// Where the session counts its messages.
    #[serde(skip)]
    pub counters: MessageCounters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum FamilyName {
    #[serde(rename = "ipv4-unicast")]
    Ipv4Unicast,
    #[serde(rename = "ipv6-unicast")]
    Ipv6Unicast,
}

impl From<FamilyName> for Family {
    fn from(f: FamilyName) -> Family {
        match f {
            FamilyName::Ipv4Unicast => Family::Ipv4Unicast,
            FamilyName::Ipv6Unicast => Family::Ipv6Unicast,
        }
    }
}

fn default_port() -> u16 {
    179
}
fn default_hold() -> u16 {
    90
}
fn default_keepalive() -> u16 {
    30
}
fn default_connect_retry() -> u16 {
    30
}
fn default_backoff_min() -> u16 {
    1
}
fn default_backoff_max() -> u16 {
    120
}
fn default_families() -> Vec<FamilyName> {
    vec![FamilyName::Ipv4Unicast, FamilyName::Ipv6Unicast]
}
fn default_gr() -> Option<u16> {
    Some(120)
}
fn default_true() -> bool {
    true
}

impl PeerConfig {
    /// A configuration with the defaults above.
    pub fn new(remote_addr: IpAddr, remote_as: u32, local_as: u32, router_id: Ipv4Addr) -> Self {
        PeerConfig {
            name: remote_addr.to_string(),
            remote_addr,
            remote_port: default_port(),
            remote_as,
            local_as,
            router_id,
            local_addr: None,
            mode: ConnectMode::Active,
            hold_time: default_hold(),
            keepalive: default_keepalive(),
            connect_retry: default_connect_retry(),
            backoff_min: default_backoff_min(),
            backoff_max: default_backoff_max(),
            multihop_ttl: None,
            gtsm: false,
            md5_password: None,
            families: default_families(),
            next_hop_v6: None,
            next_hop_v4: None,
            graceful_restart_time: default_gr(),
            gr_forwarding_preserved: false,
            gr_restarting: false,
            extended_message: true,
            enforce_first_as: false,
            counters: MessageCounters::default(),
        }
    }

    pub fn is_ibgp(&self) -> bool {
        self.remote_as == self.local_as
    }

    pub fn families(&self) -> Vec<Family> {
        let mut f: Vec<Family> = self.families.iter().map(|&f| f.into()).collect();
        f.sort();
        f.dedup();
        f
    }

    pub fn connect_retry(&self) -> Duration {
        Duration::from_secs(self.connect_retry.max(1) as u64)
    }

    /// Checks combinations the types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.gtsm && self.multihop_ttl.is_some() {
            return Err(format!(
                "peer {}: gtsm and multihop_ttl exclude each other",
                self.name
            ));
        }
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(format!(
                "peer {}: hold_time must be 0 or at least 3",
                self.name
            ));
        }
        if self.families.is_empty() {
            return Err(format!("peer {}: no address family", self.name));
        }
        if self.md5_password.as_ref().is_some_and(|p| p.len() > 80) {
            return Err(format!(
                "peer {}: md5_password longer than 80 bytes",
                self.name
            ));
        }
        if self.backoff_min == 0 || self.backoff_max < self.backoff_min {
            return Err(format!(
                "peer {}: need 0 < backoff_min <= backoff_max",
                self.name
            ));
        }
        Ok(())
    }
}
