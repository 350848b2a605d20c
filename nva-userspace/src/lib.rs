//! nva: the controller of an XDP hub router. The route path is one straight line:
//! sources of routes (config, local addresses, BGP later) -> `fib` (next hops, ECMP
//! groups, make-before-break writes) -> `dataplane` (the BPF maps).
pub mod bgp;
pub mod bgp_install;
pub mod config;
pub mod control;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod fib;
pub mod health;
pub mod instance_lock;
pub mod kernel_sync;
pub mod metrics;
pub mod netlink;
pub mod notify;
pub mod policy;
pub mod preflight;
pub mod resolve;
pub mod rib;
pub mod routing;

/// Hash map for tables keyed by what peers send (prefixes): foldhash is about as fast as
/// FxHash on small keys but seeded per process, so a peer cannot pick prefixes that all
/// collide (SipHash, std's default, cost 20-30 ns per lookup on a million-route table).
pub type PrefixMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
