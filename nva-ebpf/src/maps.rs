//! Map definitions. Key/value layouts and sizes come from `nva-common`, and so do the
//! names: `maps!` only accepts a map whose name is in `nva_common::map_names`.
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, DevMapHash, LpmTrie, PerCpuArray},
};
use nva_common::{
    Counter, EcmpGroup, FIB_LPM_TRIE, FibKinds, MAX_CLASS_PREFIXES, MAX_GROUPS, MAX_IF_SLOTS,
    MAX_IFINDEX, MAX_NEXTHOPS, MAX_ROUTES_V4, MAX_ROUTES_V6, MAX_SEGMENT_PREFIXES, MAX_SEGMENTS,
    NUM_CLASSES, NUM_REASONS, NextHop, POLICY_RANGE_CELLS, POLICY_TOP_ENTRIES, PortInfo, Route,
    Settings,
};

/// Declares the maps (`#[map] pub static NAME: TYPE = INIT;`), each checked at compile
/// time against the shared list of names the loader takes them by.
macro_rules! maps {
    ($($(#[doc = $doc:literal])* $name:ident: $ty:ty = $init:expr;)*) => {
        $(
            $(#[doc = $doc])*
            #[map]
            pub static $name: $ty = $init;
            const _: &str = nva_common::map_names::$name;
        )*
    };
}

maps! {
    /// IPv4 FIBs, one per traffic class: destination prefix (network byte order) -> route.
    FIB_V4_EW: LpmTrie<[u8; 4], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V4, 0);
    FIB_V4_NS: LpmTrie<[u8; 4], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V4, 0);

    /// IPv6 FIBs, one per traffic class.
    FIB_V6_EW: LpmTrie<[u8; 16], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V6, 0);
    FIB_V6_NS: LpmTrie<[u8; 16], Route> = LpmTrie::with_max_entries(MAX_ROUTES_V6, 0);

    /// Destination prefixes of east-west traffic (value: class); no match = north-south.
    CLASS_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_CLASS_PREFIXES, 0);
    CLASS_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_CLASS_PREFIXES, 0);

    /// The IPv4 policy table (class and segment per address; see nva-common), written
    /// through mmap like the DXR FIBs; two u32 cells per element.
    POLICY_TOP_V4: Array<u64> =
        Array::with_max_entries(POLICY_TOP_ENTRIES / 2, BPF_F_MMAPABLE);
    POLICY_RANGES_V4: Array<u64> =
        Array::with_max_entries(POLICY_RANGE_CELLS / 2, BPF_F_MMAPABLE);

    /// Prefix -> segment id, for east-west segmentation.
    SEGMENT_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_SEGMENT_PREFIXES, 0);
    SEGMENT_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_SEGMENT_PREFIXES, 0);

    /// `[from * MAX_SEGMENTS + to]` -> SEGMENT_DENY or 0.
    SEGMENT_POLICY: Array<u32> = Array::with_max_entries(MAX_SEGMENTS * MAX_SEGMENTS, 0);

    /// Denied packets per segment pair, `[from * MAX_SEGMENTS + to]`.
    SEGMENT_DROPS: PerCpuArray<Counter> =
        PerCpuArray::with_max_entries(MAX_SEGMENTS * MAX_SEGMENTS, 0);

    /// ECMP groups by id.
    GROUPS: Array<EcmpGroup> = Array::with_max_entries(MAX_GROUPS, 0);

    /// Next hops by id.
    NEXTHOPS: Array<NextHop> = Array::with_max_entries(MAX_NEXTHOPS, 0);

    /// Egress ports for bpf_redirect_map, keyed by ifindex.
    TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_IF_SLOTS, 0);

    /// ifindex -> counter slot and class override.
    PORTS: Array<PortInfo> = Array::with_max_entries(MAX_IFINDEX, 0);

    /// Per-CPU packet/byte counters: `slot * NUM_REASONS + reason`.
    COUNTERS: PerCpuArray<Counter> =
        PerCpuArray::with_max_entries(MAX_IF_SLOTS * NUM_REASONS, 0);

    /// Per-CPU packet/byte counters per traffic class: `class * NUM_REASONS + reason`.
    CLASS_COUNTERS: PerCpuArray<Counter> =
        PerCpuArray::with_max_entries(NUM_CLASSES * NUM_REASONS, 0);

    /// DIR-24-8 IPv4 FIBs per class (see nva-common). Userspace writes them through mmap.
    /// Array elements are padded to 8 bytes, so each u64 element holds two consecutive
    /// u32 entries (the low half first): the mmap then shows a dense u32 array.
    /// Sized to one element in the object; the loader sizes them when a table uses them.
    DIR24_EW: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    DIR24_NS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    DIR8_EW: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    DIR8_NS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

    /// DXR IPv4 FIBs per class (see nva-common), written through mmap like DIR-24-8 and
    /// sized the same way (one element in the object).
    DXR_TOP_EW: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    DXR_TOP_NS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    DXR_RANGES_EW: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    DXR_RANGES_NS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

    /// Multibit IPv6 FIBs per class (see nva-common), written through mmap like DIR-24-8
    /// and sized the same way (one element in the object).
    MBT6_ROOT_EW: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    MBT6_ROOT_NS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    MBT6_NODES_EW: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
    MBT6_NODES_NS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

    /// Settings (one entry).
    SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
}

/// The structure of each FIB, a load-time constant: the loader overwrites this default
/// in the object's read-only data (`nva_common::FIB_KINDS_GLOBAL`, hence the fixed
/// symbol name) before the program is verified, and the verifier, which knows the
/// frozen value, skips the lookups of the structures not in use. Read it only through
/// `load_time`.
#[unsafe(no_mangle)]
static FIB_KINDS: FibKinds = FibKinds {
    v4: [FIB_LPM_TRIE; 2],
    v6: [FIB_LPM_TRIE; 2],
};

/// The loaded value of a field of `FIB_KINDS`. A volatile read, so the compiler reads the
/// map instead of folding in the default it sees in the object; the field is a constant
/// offset, so the verifier sees a known value.
#[inline(always)]
pub fn load_time(field: impl FnOnce(&FibKinds) -> &u32) -> u32 {
    // SAFETY: a read of an immutable static.
    unsafe { core::ptr::read_volatile(field(&FIB_KINDS)) }
}
