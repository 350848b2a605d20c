//! The BGP codec compiled on its own: it is a pure module (std + ipnet), so the fuzzer
//! does not have to build the whole nva crate (and its eBPF build script).
#[path = "../../src/bgp/codec/mod.rs"]
pub mod codec;
