//! The BGP speaker of nva.
//!
//! - [`codec`]: the wire format, pure (bytes in, values out), fuzzed.
//! - [`fsm`]: the RFC 4271 state machine, pure.
//! - [`negotiate`]: our OPEN and the checks of the peer's.
//! - [`session`]: one tokio task per peer (connect/accept, timers, UPDATE in/out),
//!   talking to its owner through [`Event`]s and [`Command`]s.
//! - [`speaker`]: the peers and the listening sockets.
//!
//! RIB, best-path selection and policy are not here: they consume [`Event`]s and send
//! [`Command`]s.

pub mod adj_rib_out;
pub mod codec;
mod collision;
pub mod config;
pub mod event;
pub mod export;
pub mod fsm;
pub mod import;
pub mod negotiate;
pub mod session;
pub mod socket;
pub mod speaker;
mod transport;

pub use codec::{Community, NextHop, Origin, PathAttrs};
pub use config::{ConnectMode, PeerConfig};
pub use event::{Command, DownReason, Event, PeerId, SessionInfo};
pub use session::{PeerHandle, spawn_session};
pub use speaker::Speaker;
// The interop tests with BIRD and GoBGP are in tests/bgp_interop.
#[cfg(test)]
mod tests_local;
