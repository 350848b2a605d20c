//! ECMP flow hash: murmur3-style mixing of (src, dst, proto, ports) with a per-boot seed.
//!
//! Addresses are folded to 32 bits first (IPv6: xor of the four words). In symmetric
//! mode the (address, port) pairs are put in a canonical order, so both directions of
//! a flow hash the same.

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Flow hash over folded addresses `a` (source) and `b` (destination), the L4 protocol
/// and the ports (0 when the packet has none we can trust, e.g. fragments).
#[inline(always)]
pub fn hash(seed: u32, symmetric: bool, a: u32, b: u32, proto: u8, pa: u16, pb: u16) -> u32 {
    let (a, b, pa, pb) = if symmetric && (a > b || (a == b && pa > pb)) {
        (b, a, pb, pa)
    } else {
        (a, b, pa, pb)
    };
    let mut h = mix(seed, a);
    h = mix(h, b);
    h = mix(h, ((pa as u32) << 16) | pb as u32);
    h = mix(h, proto as u32);
    finish(h)
}

#[inline(always)]
pub fn fold_v4(addr: [u8; 4]) -> u32 {
    u32::from_ne_bytes(addr)
}

#[inline(always)]
pub fn fold_v6(addr: [u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    w(0) ^ w(4) ^ w(8) ^ w(12)
}
