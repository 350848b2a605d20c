//! Map definitions. Key/value layouts and sizes come from `nva-common`.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, LpmTrie, PerCpuArray},
};
use nva_common::{
    Counter, EcmpGroup, MAX_GROUPS, MAX_IF_SLOTS, MAX_IFINDEX, MAX_NEXTHOPS, MAX_ROUTES_V4,
    MAX_ROUTES_V6, NUM_REASONS, NextHop, Route, Settings,
};

/// IPv4 FIB: destination prefix (network byte order) -> route.
#[map]
pub static FIB_V4: LpmTrie<[u8; 4], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V4, 0);

/// IPv6 FIB: destination prefix (network byte order) -> route.
#[map]
pub static FIB_V6: LpmTrie<[u8; 16], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V6, 0);

/// ECMP groups by id.
#[map]
pub static GROUPS: Array<EcmpGroup> = Array::with_max_entries(MAX_GROUPS, 0);

/// Next hops by id.
#[map]
pub static NEXTHOPS: Array<NextHop> = Array::with_max_entries(MAX_NEXTHOPS, 0);

/// Egress ports for bpf_redirect_map, keyed by ifindex.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_IF_SLOTS, 0);

/// ifindex -> counter slot.
#[map]
pub static IF_SLOTS: Array<u32> = Array::with_max_entries(MAX_IFINDEX, 0);

/// Per-CPU packet/byte counters: `slot * NUM_REASONS + reason`.
#[map]
pub static COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(MAX_IF_SLOTS * NUM_REASONS, 0);

/// Settings (one entry).
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
