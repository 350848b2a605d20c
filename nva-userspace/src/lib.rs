//! nva: the controller of an XDP hub router. The route path is one straight line:
//! sources of routes (config, local addresses, BGP later) -> `fib` (next hops, ECMP
//! groups, make-before-break writes) -> `dataplane` (the BPF maps).
pub mod bench_object;
pub mod bgp;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod fib;
pub mod health;
pub mod metrics;
pub mod netlink;
pub mod policy;
pub mod rib;
pub mod routing;
