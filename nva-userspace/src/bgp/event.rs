//! The channel API between sessions and their owner (RIB, daemon).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::codec::{Capability, Family, GracefulRestart, Notification, PathAttrs};

/// Identifies a peer: its configured address (unique per speaker).
pub type PeerId = IpAddr;

/// What was negotiated when a session came up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub peer_as: u32,
    pub peer_router_id: Ipv4Addr,
    pub local_addr: SocketAddr,
    pub remote_addr: SocketAddr,
    /// Negotiated hold time (s), 0 = none.
    pub hold_time: u16,
    /// Effective keepalive interval (s), 0 = none.
    pub keepalive: u16,
    pub ibgp: bool,
    pub four_octet_as: bool,
    pub extended_message: bool,
    /// The peer accepts ROUTE-REFRESH.
    pub route_refresh: bool,
    /// Families both sides announced.
    pub families: Vec<Family>,
    /// The peer's graceful restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// Everything the peer offered, including capabilities we do not use.
    pub peer_capabilities: Vec<Capability>,
}

/// Why an Established session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION (hold timer expired, UPDATE error, ...).
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION (e.g. Cease when its protocol is disabled).
    NotificationReceived(Notification),
    /// TCP closed or failed without a NOTIFICATION.
    ConnectionLost(String),
    /// A newer connection from the same peer replaced this one (collision, restart).
    Replaced,
    /// [`Command::Shutdown`].
    Shutdown,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::NotificationSent(n) => write!(f, "sent NOTIFICATION {n}"),
            DownReason::NotificationReceived(n) => write!(f, "received NOTIFICATION {n}"),
            DownReason::ConnectionLost(e) => write!(f, "connection lost: {e}"),
            DownReason::Replaced => f.write_str("replaced by a new connection"),
            DownReason::Shutdown => f.write_str("shut down"),
        }
    }
}

/// What a session tells its owner. Events of one peer arrive in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Established {
        peer: PeerId,
        caps: SessionInfo,
    },
    /// Routes learnt or lost. `announced` replaces any earlier route of the same prefix
    /// from this peer. Next hops are those of each route's family (see
    /// [`PathAttrs::next_hop`]); routes failing the AS-path loop check arrive as
    /// withdrawals, as do RFC 7606 treat-as-withdraw prefixes.
    Update {
        peer: PeerId,
        announced: Vec<(IpNet, Arc<PathAttrs>)>,
        withdrawn: Vec<IpNet>,
        /// Announced prefixes ignored as martians (in `withdrawn` too).
        martian: usize,
    },
    /// RFC 4724 End-of-RIB: the peer has sent its whole table for `family`; routes
    /// still marked stale from before a graceful restart can go.
    EndOfRib {
        peer: PeerId,
        family: Family,
    },
    /// An Established session ended: drop the peer's routes, or, when `stale_for` is
    /// set (the peer does graceful restart and the connection was lost without a
    /// NOTIFICATION), keep them as stale for at most that long (RFC 4724 §4.2).
    Down {
        peer: PeerId,
        reason: DownReason,
        stale_for: Option<Duration>,
    },
}

/// What the owner tells a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Advertise (or replace) these routes, now and after every reconnect. Missing
    /// next hops become our own address (next-hop-self); the session prepends the
    /// local AS towards eBGP peers. Policy (what to export, extra prepends) is the
    /// caller's.
    Announce(Vec<(IpNet, Arc<PathAttrs>)>),
    /// Stop advertising these prefixes.
    Withdraw(Vec<IpNet>),
    /// Ask the peer to send its routes again (RFC 2918), if it supports it.
    RouteRefresh,
    /// Send Cease / administrative shutdown and stop the session task for good.
    Shutdown,
    /// Send this NOTIFICATION (e.g. Cease / maximum number of prefixes reached) and
    /// stop the session task for good.
    Stop(Notification),
}
