//! The maps are the API between the controller and the XDP data plane.
//!
//! Every map's key and value type is defined here, once, so both sides agree by
//! construction. The packet path only ever reads these maps (except the counters);
//! the controller writes them.
//!
//! Lookup chain for a forwarded packet:
//!
//! ```text
//! PORTS[ingress ifindex]              (counter slot, class override)
//! POLICY_TOP_V4 + POLICY_RANGES_V4 / CLASS_V6 (LPM trie)
//!                                     (destination -> east-west; no match = north-south)
//! the class's FIB: an LPM trie (FIB_V4_EW / FIB_V4_NS / FIB_V6_EW / FIB_V6_NS), DIR-24-8,
//!   DXR or the multibit trie (which one is `FibKinds`, fixed when the program is loaded)
//! segments, east-west only: the policy table (IPv4) or SEGMENT_V6, then SEGMENT_POLICY
//!   (source and destination segment -> allow/deny)
//!   -> GROUPS[route.group]            (resilient ECMP group: 256 buckets of next-hop ids)
//!   -> NEXTHOPS[group.buckets[hash]]  (egress ifindex, MACs, VLAN, MTU)
//!   -> TX_PORTS[nexthop.ifindex]      (DEVMAP_HASH used by bpf_redirect_map)
//! ```
//!
//! Every FIB maps a destination to a `Route` (action + group id), so the structures are
//! interchangeable without the controller changing anything but the writer.
#![no_std]

/// Declares the map names once: each constant's value is its own identifier, the name of
/// the eBPF object's static, so the two cannot differ by a typo; the eBPF crate's `maps!`
/// accepts only a map named here, and the loader takes the maps by these constants.
macro_rules! map_names {
    ($($name:ident),* $(,)?) => {
        /// Map names, as the eBPF object declares them.
        pub mod map_names {
            $(pub const $name: &str = stringify!($name);)*
        }
    };
}

map_names!(
    FIB_V4_EW,
    FIB_V4_NS,
    FIB_V6_EW,
    FIB_V6_NS,
    CLASS_V4,
    CLASS_V6,
    SEGMENT_V4,
    SEGMENT_V6,
    SEGMENT_POLICY,
    SEGMENT_DROPS,
    GROUPS,
    NEXTHOPS,
    TX_PORTS,
    PORTS,
    COUNTERS,
    CLASS_COUNTERS,
    DIR24_EW,
    DIR24_NS,
    DIR8_EW,
    DIR8_NS,
    MBT6_ROOT_EW,
    MBT6_ROOT_NS,
    MBT6_NODES_EW,
    MBT6_NODES_NS,
    POLICY_TOP_V4,
    POLICY_RANGES_V4,
    DXR_TOP_EW,
    DXR_TOP_NS,
    DXR_RANGES_EW,
    DXR_RANGES_NS,
    SETTINGS,
);

/// Traffic classes; each has its own FIB, no-route policy and counters.
pub const CLASS_EAST_WEST: u32 = 0;
pub const CLASS_NORTH_SOUTH: u32 = 1;
pub const NUM_CLASSES: u32 = 2;
pub const CLASS_NAMES: [&str; NUM_CLASSES as usize] = ["east-west", "north-south"];

/// Segments: ids 1..MAX_SEGMENTS-1 (0 = the address is in no segment).
pub const MAX_SEGMENTS: u32 = 16;
/// Capacity of the classification and segment tries.
pub const MAX_CLASS_PREFIXES: u32 = 4096;
pub const MAX_SEGMENT_PREFIXES: u32 = 16384;

/// `SEGMENT_POLICY[from * MAX_SEGMENTS + to]`: deny east-west traffic from segment
/// `from` to segment `to` (0 = allow).
pub const SEGMENT_DENY: u32 = 1;

/// Name of the XDP program in the object.
pub const XDP_PROGRAM: &str = "nva_forward";

/// Capacity of the IPv4 and IPv6 LPM tries.
pub const MAX_ROUTES_V4: u32 = 1 << 21;
pub const MAX_ROUTES_V6: u32 = 1 << 19;
/// Next-hop ids are u16 in the bucket table; id 0 is reserved for "no next hop".
pub const MAX_NEXTHOPS: u32 = 4096;
/// ECMP group ids; group 0 is reserved and never used by a route.
pub const MAX_GROUPS: u32 = 4096;
/// Buckets per ECMP group. A power of two so the bucket is `hash & (ECMP_BUCKETS - 1)`.
pub const ECMP_BUCKETS: usize = 256;
/// `PORTS` is indexed by ifindex directly (an array lookup is inlined by the verifier);
/// interfaces with a larger ifindex count in slot 0.
pub const MAX_IFINDEX: u32 = 4096;
/// Counter slots: slot 0 collects interfaces without a slot of their own.
pub const MAX_IF_SLOTS: u32 = 64;

/// Value of the FIB tries: what to do with a packet whose destination matched the prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// One of the `ROUTE_*` actions.
    pub action: u32,
    /// ECMP group id in `GROUPS`, for `ROUTE_FORWARD`.
    pub group: u32,
}

/// Forward through the route's ECMP group.
pub const ROUTE_FORWARD: u32 = 1;
/// Destination is an address of this box: hand to the kernel.
pub const ROUTE_LOCAL: u32 = 2;
/// Directly connected subnet: the kernel resolves the host and forwards.
pub const ROUTE_CONNECTED: u32 = 3;
/// Drop (and count).
pub const ROUTE_BLACKHOLE: u32 = 4;

/// A resilient ECMP group: the flow hash picks a bucket, the bucket names a next hop.
/// Removing a next hop rewrites only the buckets that named it, so other flows keep
/// their path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcmpGroup {
    /// Next-hop id (index into `NEXTHOPS`) per bucket; 0 = no usable next hop.
    pub buckets: [u16; ECMP_BUCKETS],
}

/// A next hop as the data plane needs it to rewrite and send a frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface; must be present in `TX_PORTS` before `NH_VALID` is set.
    pub ifindex: u32,
    /// `NH_*` flags.
    pub flags: u32,
    /// Egress MTU (L3 bytes); larger packets go to the kernel (fragment / ICMP).
    pub mtu: u16,
    /// 802.1Q VLAN id to tag with on egress; 0 = untagged.
    pub vlan: u16,
    /// Source MAC: the egress interface's address.
    pub smac: [u8; 6],
    /// Destination MAC: the next hop's address from the neighbour table.
    pub dmac: [u8; 6],
}

/// The entry is in use and its egress port is in `TX_PORTS`.
pub const NH_VALID: u32 = 1;
/// `dmac` holds a resolved neighbour address.
pub const NH_RESOLVED: u32 = 2;

/// DIR-24-8, the constant-time IPv4 FIB (per class, chosen in the config instead of the
/// LPM trie): `DIR24[dst >> 8]` is a route entry or points to a 256-entry block of
/// `DIR8` for destinations under a prefix longer than /24. One u32 per entry, so every
/// entry update is a single atomic store and a lookup never sees half a route.
pub const DIR24_ENTRIES: u32 = 1 << 24;
/// Default number of 256-entry blocks for prefixes longer than /24 (64 MiB per table):
/// a full table where 64k /24s hold longer prefixes (links, host routes) fits.
/// `dataplane.ipv4_fib_blocks` sets it per start.
pub const DIR8_BLOCKS: u32 = 1 << 16;
/// Entry bit: the low 24 bits are a DIR8 block index.
pub const DIR_EXT: u32 = 1 << 31;
/// Route entries: action in bits 28..30, ECMP group in bits 0..27; 0 = no route.
pub const DIR_ACTION_SHIFT: u32 = 28;
pub const DIR_GROUP_MASK: u32 = (1 << 28) - 1;

/// Encodes a route as a DIR-24-8 entry.
pub const fn dir_entry(route: Route) -> u32 {
    (route.action << DIR_ACTION_SHIFT) | (route.group & DIR_GROUP_MASK)
}

/// Decodes a (non-extended) DIR-24-8 entry; None for "no route".
pub const fn dir_route(entry: u32) -> Option<Route> {
    if entry == 0 {
        return None;
    }
    Some(Route {
        action: (entry >> DIR_ACTION_SHIFT) & 7,
        group: entry & DIR_GROUP_MASK,
    })
}

/// DXR ("D16R", Zec et al.), the compact IPv4 FIB (per class, chosen in the config):
/// a full table in 8 MB of ranges instead of DIR-24-8's 64 MB first level. Measured
/// here (BENCHMARKS.md) it is about a third slower than DIR-24-8 per lookup with a full
/// table and many destinations (a binary search is a chain of dependent reads), for an
/// eighth of the memory: the choice for small VMs.
///
/// `DXR_TOP[dst >> 16]` (2^16 u32 cells, 256 KiB) is either a route entry (DIR-24-8
/// encoding, 0 = no route) for the whole /16, or `DIR_EXT | offset` of a chunk in `DXR_RANGES`:
/// one cell with the number n of ranges, then n range cells sorted by start. A range
/// cell is `start << 16 | dxr_compact(entry)` where start is the low 16 bits of the
/// first address of the range; a lookup binary-searches the last range starting at or
/// before the destination (at most 16 steps; a full table's chunks hold about 30 ranges:
/// two cache lines). (2^18 top cells, measured too, were slower still.)
/// Chunks are written before the top cell switches to them (make-before-break).
pub const DXR_TOP_BITS: u32 = 16;
pub const DXR_TOP_ENTRIES: u32 = 1 << DXR_TOP_BITS;
/// Default cells of `DXR_RANGES` per table (16 MiB): a 1M-route table takes about
/// 1.5M range cells, chunks are allocated in power-of-two sizes.
pub const DXR_RANGE_CELLS: u32 = 1 << 22;
/// Bits of the ECMP group in a compact range entry (`MAX_GROUPS` must fit).
pub const DXR_GROUP_BITS: u32 = 12;
const _: () = assert!(MAX_GROUPS <= 1 << DXR_GROUP_BITS);

/// A route entry (DIR-24-8 encoding) as the 16 bits of a DXR range cell, or None if it
/// does not fit (a group beyond `MAX_GROUPS`).
pub const fn dxr_compact(entry: u32) -> Option<u32> {
    let action = (entry >> DIR_ACTION_SHIFT) & 7;
    let group = entry & DIR_GROUP_MASK;
    if entry & DIR_EXT != 0 || group >= 1 << DXR_GROUP_BITS {
        return None;
    }
    Some(action << DXR_GROUP_BITS | group)
}

/// The route entry (DIR-24-8 encoding) of a DXR range cell.
pub const fn dxr_entry(cell: u32) -> u32 {
    let c = cell & 0xffff;
    ((c >> DXR_GROUP_BITS) << DIR_ACTION_SHIFT) | (c & ((1 << DXR_GROUP_BITS) - 1))
}

/// What an IPv4 address's policy is, for the class of a destination and the segment of
/// a source or destination, in one DXR table (`POLICY_TOP_V4`, `POLICY_RANGES_V4`):
/// one read for most addresses, instead of a walk of the class and segment LPM tries
/// each. Userspace builds it from the union of the class and segment prefixes, each
/// carrying the class and segment its address range has. The table's route entries are
/// `policy_entry` values (0: north-south, no segment).
pub const POLICY_RANGE_CELLS: u32 = 1 << 16;
/// The policy table's top: /16 chunks (256 KiB; class and segment prefixes are few).
pub const POLICY_TOP_BITS: u32 = 16;
pub const POLICY_TOP_ENTRIES: u32 = 1 << POLICY_TOP_BITS;

/// The policy table's entry for (east-west, segment).
pub const fn policy_entry(east_west: bool, segment: u32) -> u32 {
    1 + (segment << 1 | east_west as u32)
}

/// (east-west, segment) of a policy table entry.
pub const fn policy_of(entry: u32) -> (bool, u32) {
    if entry == 0 {
        return (false, 0);
    }
    ((entry - 1) & 1 != 0, (entry - 1) >> 1)
}

/// Multibit trie, the IPv6 counterpart of DIR-24-8 (per class, chosen in the config):
/// `MBT6_ROOT[dst >> 108]` (the top 20 bits) is a route entry or points to a 16-entry
/// block of `MBT6_NODES`, indexed by the next 4 bits of the destination, whose entries
/// again are routes or point to further blocks (27 levels at most, 7 for a /48). Routes
/// are expanded to the level boundary (leaf pushing), so a lookup stops at the first
/// route entry it reads. Entries use the DIR-24-8 encoding (`DIR_EXT` + block index). A
/// block is 64 bytes, one cache line: a lookup reads one line per level. Strides are 4
/// bits because that keeps the memory of a sparse table (a real one, or the uniform random
/// benchmark table) proportional to its routes: 200k IPv6 routes take about 1M blocks
/// (64 MiB) where 8-bit strides would take 480 MiB. The 20-bit root (4 MiB) measured
/// 10-20% faster than a 16-bit one at 200k routes.
pub const MBT6_ROOT_BITS: u32 = 20;
pub const MBT6_ROOT_ENTRIES: u32 = 1 << MBT6_ROOT_BITS;
pub const MBT6_STRIDE: u32 = 4;
pub const MBT6_BLOCK: u32 = 1 << MBT6_STRIDE;
/// Levels below the root: (128 - 20) / 4.
pub const MBT6_LEVELS: u32 = (128 - MBT6_ROOT_BITS) / MBT6_STRIDE;
/// Default number of blocks (2^21: 128 MiB per table), enough for about 400k routes
/// spread uniformly at random (real tables cluster and need fewer).
pub const MBT6_BLOCKS: u32 = 1 << 21;

/// Per ingress interface facts (`PORTS[ifindex]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// Counter slot (0 = not one of ours).
    pub slot: u32,
    /// `PORT_*` flags.
    pub flags: u32,
    /// The interface's MAC: a unicast frame addressed to another MAC is not for this
    /// router (a flooding segment) and goes to the kernel, counted. All zero: no check.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Everything entering this port is east-west (looked up in the east-west FIB).
pub const PORT_FORCE_EAST_WEST: u32 = 1;
/// Everything entering this port is north-south.
pub const PORT_FORCE_NORTH_SOUTH: u32 = 2;

/// Data-plane settings (single entry, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Per-boot seed of the ECMP flow hash.
    pub hash_seed: u32,
    /// `SET_*` flags.
    pub flags: u32,
}

/// Both directions of a flow get the same ECMP hash.
pub const SET_SYMMETRIC_HASH: u32 = 1;
/// East-west packets without a route are dropped (and counted) instead of passed.
pub const SET_DROP_NO_ROUTE_EW: u32 = 2;
/// North-south packets without a route are dropped (and counted) instead of passed.
pub const SET_DROP_NO_ROUTE_NS: u32 = 4;
/// Both classes drop packets without a route.
pub const SET_DROP_NO_ROUTE: u32 = SET_DROP_NO_ROUTE_EW | SET_DROP_NO_ROUTE_NS;
/// Segment policy is enforced (some segment pair is denied).
pub const SET_SEGMENTS: u32 = 8;
// Bits 16..512 selected the FIB structures until they became the load-time constant
// `FibKinds`; a settings map pinned by an older nva may still carry them (ignored).

/// Which structure each FIB is: fixed when the program is loaded, so it is not a
/// setting but a load-time constant (the global `FIB_KINDS_GLOBAL` in the object's
/// read-only data, written by the loader). The verifier then knows the value and skips
/// the lookups of the structures not in use: they cost neither a branch per packet nor
/// verification.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibKinds {
    /// Per class (east-west, north-south): `FIB_LPM_TRIE`, `FIB_DIR24` or `FIB_DXR`.
    pub v4: [u32; NUM_CLASSES as usize],
    /// Per class: `FIB_LPM_TRIE` or `FIB_MULTIBIT`.
    pub v6: [u32; NUM_CLASSES as usize],
}

/// The kernel's LPM trie (`FIB_V4_*`, `FIB_V6_*`).
pub const FIB_LPM_TRIE: u32 = 0;
/// DIR-24-8 (`DIR24_*`, `DIR8_*`), IPv4.
pub const FIB_DIR24: u32 = 1;
/// DXR (`DXR_TOP_*`, `DXR_RANGES_*`), IPv4.
pub const FIB_DXR: u32 = 2;
/// The multibit trie (`MBT6_ROOT_*`, `MBT6_NODES_*`), IPv6.
pub const FIB_MULTIBIT: u32 = 3;

/// Name of the `FibKinds` global in the eBPF object.
pub const FIB_KINDS_GLOBAL: &str = "FIB_KINDS";

/// Per-CPU counter cell; `COUNTERS[slot * NUM_REASONS + reason]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Why the data plane did what it did with a packet. Every packet is counted under
/// exactly one reason, on its ingress interface.
pub mod reason {
    /// Redirected to another interface.
    pub const FORWARDED: u32 = 0;
    /// Sent back out of the ingress interface (XDP_TX).
    pub const TX: u32 = 1;
    /// Not IPv4/IPv6 (ARP, LLDP, ...): kernel.
    pub const PASS_NOT_IP: u32 = 2;
    /// For this box, multicast/broadcast, or link-scoped: kernel.
    pub const PASS_LOCAL: u32 = 3;
    /// TTL / hop limit would expire: kernel sends ICMP time exceeded.
    pub const PASS_TTL: u32 = 4;
    /// Next hop's MAC not resolved yet: kernel resolves and forwards.
    pub const PASS_NEIGH: u32 = 5;
    /// Larger than the egress MTU: kernel fragments or sends ICMP.
    pub const PASS_MTU: u32 = 6;
    /// No route (or no usable next hop) and the policy is to pass.
    pub const PASS_NO_ROUTE: u32 = 7;
    /// No route (or no usable next hop) and the policy is to drop.
    pub const DROP_NO_ROUTE: u32 = 8;
    /// Truncated or inconsistent headers, bad IPv4 checksum.
    pub const DROP_MALFORMED: u32 = 9;
    /// Destination in a connected subnet: kernel resolves the host.
    pub const PASS_CONNECTED: u32 = 10;
    /// Blackhole route.
    pub const DROP_BLACKHOLE: u32 = 11;
    /// Egress port missing from TX_PORTS (should not happen): kernel.
    pub const PASS_NO_TXPORT: u32 = 12;
    /// Anything else the fast path does not handle (e.g. VLAN re-tagging failed).
    pub const PASS_EXCEPTION: u32 = 13;
    /// East-west traffic between segments the policy denies.
    pub const DROP_SEGMENT: u32 = 14;
    /// A unicast frame for another MAC (flooded on a shared segment): not forwarded,
    /// so two routers on one segment never both forward it.
    pub const PASS_OTHER_HOST: u32 = 15;
    /// Something failed after the frame was already rewritten (TTL, MACs): it can no
    /// longer go to the kernel as it came, so it is dropped.
    pub const DROP_EXCEPTION: u32 = 16;
    /// The highest reason in use.
    pub const LAST: u32 = DROP_EXCEPTION;

    pub const NAMES: [&str; LAST as usize + 1] = [
        "forwarded",
        "tx",
        "passed-not-ip",
        "passed-local",
        "passed-ttl",
        "passed-neigh",
        "passed-mtu",
        "passed-no-route",
        "dropped-no-route",
        "dropped-malformed",
        "passed-connected",
        "dropped-blackhole",
        "passed-no-txport",
        "passed-exception",
        "dropped-segment",
        "passed-other-host",
        "dropped-exception",
    ];
}

/// Counter cells per interface slot (a power of two, so the index is a shift).
pub const NUM_REASONS: u32 = 32;

// The kernel copies map values verbatim: both sides must agree on these sizes, and a
// field added without thought to the layout (padding) fails the build here.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Route>() == 8);
    assert!(size_of::<EcmpGroup>() == 2 * ECMP_BUCKETS);
    assert!(size_of::<NextHop>() == 24);
    assert!(size_of::<PortInfo>() == 16);
    assert!(size_of::<Settings>() == 8);
    assert!(size_of::<FibKinds>() == 16);
    assert!(size_of::<Counter>() == 16);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, and have no padding bytes that matter
    // to the kernel (it copies them verbatim).
    unsafe impl aya::Pod for super::Route {}
    unsafe impl aya::Pod for super::EcmpGroup {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::PortInfo {}
    unsafe impl aya::Pod for super::FibKinds {}
}
