//! Lookups in the array-based tables userspace writes through mmap: the DIR-24-8, DXR and
//! multibit FIBs and the IPv4 policy table. (The LPM tries are the kernel's own.)
use aya_ebpf::maps::Array;
use nva_common::{
    DIR_EXT, DXR_TOP_BITS, MBT6_LEVELS, MBT6_ROOT_BITS, MBT6_STRIDE, POLICY_TOP_BITS, Route,
    dir_route, dxr_entry, policy_of,
};

use crate::maps::{POLICY_RANGES_V4, POLICY_TOP_V4};

/// DIR-24-8 lookup: one array read, two for destinations under a prefix longer than /24.
#[inline(always)]
pub fn dir24_lookup(tbl24: &Array<u64>, tbl8: &Array<u64>, dst: [u8; 4]) -> Option<Route> {
    let addr = u32::from_be_bytes(dst);
    let mut entry = dir_cell(tbl24, addr >> 8)?;
    if entry & DIR_EXT != 0 {
        entry = dir_cell(tbl8, ((entry & 0x00ff_ffff) << 8) | (addr & 0xff))?;
    }
    dir_route(entry)
}

/// DXR lookup: the /16's top cell is the route, or points to a chunk of ranges sorted
/// by first address: binary search for the last range starting at or before `dst`.
#[inline(always)]
pub fn dxr_lookup(top: &Array<u64>, ranges: &Array<u64>, dst: [u8; 4]) -> Option<Route> {
    dir_route(dxr_find(top, ranges, DXR_TOP_BITS, dst)?)
}

/// The entry of a DXR table whose top is indexed by `bits` bits for `dst` (0: none).
#[inline(always)]
fn dxr_find(top: &Array<u64>, ranges: &Array<u64>, bits: u32, dst: [u8; 4]) -> Option<u32> {
    let addr = u32::from_be_bytes(dst);
    let t = dir_cell(top, addr >> (32 - bits))?;
    if t & DIR_EXT == 0 {
        return Some(t);
    }
    let low = addr & ((1 << (32 - bits)) - 1);
    let off = t & !DIR_EXT;
    let mut n = dir_cell(ranges, off)?;
    let mut base = off + 1;
    // At most 65,536 ranges: 16 halvings.
    for _ in 0..17 {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        if dir_cell(ranges, base + half)? >> 16 <= low {
            base += half;
        }
        n -= half;
    }
    Some(dxr_entry(dir_cell(ranges, base)?))
}

/// (east-west, segment) of an IPv4 address, from the policy table.
#[inline(always)]
pub fn policy_v4(addr: [u8; 4]) -> (bool, u32) {
    policy_of(dxr_find(&POLICY_TOP_V4, &POLICY_RANGES_V4, POLICY_TOP_BITS, addr).unwrap_or(0))
}

/// Multibit-trie IPv6 lookup: the root by the top 20 bits, then one 16-entry block
/// (one cache line) per 4 bits until an entry is a route.
#[inline(always)]
pub fn mbt6_lookup(root: &Array<u64>, nodes: &Array<u64>, dst: [u8; 16]) -> Option<Route> {
    let hi = u64::from_be_bytes([
        dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], dst[6], dst[7],
    ]);
    let lo = u64::from_be_bytes([
        dst[8], dst[9], dst[10], dst[11], dst[12], dst[13], dst[14], dst[15],
    ]);
    let mut entry = dir_cell(root, (hi >> (64 - MBT6_ROOT_BITS)) as u32)?;
    // Bit offset of the next 4 bits, counted from the top of the address.
    let mut bit = MBT6_ROOT_BITS;
    for _ in 0..MBT6_LEVELS {
        if entry & DIR_EXT == 0 {
            break;
        }
        let nibble = if bit < 64 {
            hi >> (64 - MBT6_STRIDE - bit)
        } else {
            lo >> (128 - MBT6_STRIDE - bit)
        } as u32
            & 0xf;
        entry = dir_cell(nodes, ((entry & 0x0fff_ffff) << MBT6_STRIDE) | nibble)?;
        bit += MBT6_STRIDE;
    }
    if entry & DIR_EXT != 0 {
        return None;
    }
    dir_route(entry)
}

/// u32 cell `i` of a table stored two cells per u64 element.
#[inline(always)]
fn dir_cell(table: &Array<u64>, i: u32) -> Option<u32> {
    let pair = *table.get(i >> 1)?;
    Some(if i & 1 == 0 {
        pair as u32
    } else {
        (pair >> 32) as u32
    })
}
