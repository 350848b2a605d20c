//! IPv6: the header checks, extension headers, and what the shared tail
//! (`forward::forward`) asks of an IPv6 packet.
use aya_ebpf::{
    maps::{Array, LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};
use nva_common::{CLASS_NORTH_SOUTH, FIB_MULTIBIT, PortInfo, Route, reason};

use crate::{
    fib::mbt6_lookup,
    flow,
    forward::{Family, Flow, MALFORMED, Verdict, forward, l4_ports, pass},
    maps::{
        CLASS_V6, FIB_V6_EW, FIB_V6_NS, MBT6_NODES_EW, MBT6_NODES_NS, MBT6_ROOT_EW, MBT6_ROOT_NS,
        SEGMENT_V6, load_time,
    },
    packet::*,
};

/// A checked IPv6 packet.
struct V6 {
    ip: *mut Ipv6Hdr,
    l3: usize,
    payload_len: usize,
    src: [u8; 16],
    /// The destination, as the key of the tries.
    dst: Key<[u8; 16]>,
}

/// The IPv6 packet path, the header at `l3` (a BPF function of its own, as `ipv4`).
pub fn ipv6(ctx: &XdpContext, port: &PortInfo, l3: usize, in_vlan: bool) -> Verdict {
    match parse_v6(ctx, l3) {
        Ok(mut packet) => forward(ctx, port, &mut packet, in_vlan),
        Err(verdict) => verdict,
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Result<V6, Verdict> {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
        return Err(MALFORMED);
    };
    // SAFETY (all header reads below): ptr_at checked the header lies in the frame.
    let first = unsafe { (*ip).version_tc_flow[0] };
    if first >> 4 != 6 {
        return Err(MALFORMED);
    }
    let payload_len = u16::from_be(unsafe { (*ip).payload_len }) as usize;
    if l3 + IPV6_LEN + payload_len > frame_len(ctx) {
        return Err(MALFORMED);
    }
    let dst = unsafe { (*ip).dst };
    let src = unsafe { (*ip).src };
    // Multicast and link-local (either end) are link-scoped: never routed.
    if dst[0] == 0xff || is_link_local_v6(&dst) || is_link_local_v6(&src) {
        return Err(pass(reason::PASS_LOCAL));
    }
    let dst = Key::new(128, dst);
    Ok(V6 {
        ip,
        l3,
        payload_len,
        src,
        dst,
    })
}

impl Family for V6 {
    const ETHERTYPE: u16 = ETH_P_IPV6;

    #[inline(always)]
    fn east_west(&mut self) -> bool {
        CLASS_V6.get(&self.dst).is_some()
    }

    #[inline(always)]
    fn route(&self, class: u32) -> Option<Route> {
        if class == CLASS_NORTH_SOUTH {
            let kind = load_time(|k| &k.v6[1]);
            fib_v6(kind, &FIB_V6_NS, &MBT6_ROOT_NS, &MBT6_NODES_NS, &self.dst)
        } else {
            let kind = load_time(|k| &k.v6[0]);
            fib_v6(kind, &FIB_V6_EW, &MBT6_ROOT_EW, &MBT6_NODES_EW, &self.dst)
        }
    }

    #[inline(always)]
    fn ttl(&self) -> u8 {
        // SAFETY: parse_v6 checked the header lies in the frame.
        unsafe { (*self.ip).hop_limit }
    }

    #[inline(always)]
    fn segments(&self) -> (u32, u32) {
        let from = SEGMENT_V6.get(Key::new(128, self.src)).copied();
        let to = SEGMENT_V6.get(&self.dst).copied();
        (from.unwrap_or(0), to.unwrap_or(0))
    }

    #[inline(always)]
    fn flow(&self, ctx: &XdpContext) -> Flow {
        // SAFETY: parse_v6 checked the header lies in the frame.
        let next_hdr = unsafe { (*self.ip).next_hdr };
        let (proto, sport, dport) = ipv6_l4(ctx, self.l3, next_hdr);
        Flow {
            src: flow::fold_v6(self.src),
            dst: flow::fold_v6(self.dst.data),
            proto,
            sport,
            dport,
        }
    }

    #[inline(always)]
    fn ip_len(&self) -> usize {
        IPV6_LEN + self.payload_len
    }

    #[inline(always)]
    fn decrement_ttl(&self) {
        // SAFETY: parse_v6 checked the header lies in the frame.
        unsafe { (*self.ip).hop_limit -= 1 };
    }
}

/// The IPv6 FIB of one class (`kind`: a load-time constant, as for `fib_v4`).
#[inline(always)]
fn fib_v6(
    kind: u32,
    trie: &LpmTrie<[u8; 16], Route>,
    root: &Array<u64>,
    nodes: &Array<u64>,
    dst: &Key<[u8; 16]>,
) -> Option<Route> {
    match kind {
        FIB_MULTIBIT => mbt6_lookup(root, nodes, dst.data),
        _ => trie.get(dst).copied(),
    }
}

#[inline(always)]
fn is_link_local_v6(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// Skips the common IPv6 extension headers to find the L4 protocol and ports.
/// Fragments hash on L3 only (ports 0), like IPv4 fragments.
#[inline(always)]
fn ipv6_l4(ctx: &XdpContext, l3: usize, first: u8) -> (u8, u16, u16) {
    let mut next = first;
    let mut off = l3 + IPV6_LEN;
    let mut i = 0;
    while i < 4 {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH => {
                let Some(ext) = ptr_at::<[u8; 2]>(ctx, off) else {
                    return (next, 0, 0);
                };
                let (nh, len) = unsafe { ((*ext)[0], (*ext)[1] as usize) };
                off += if next == IPV6_AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                next = nh;
            }
            IPV6_FRAGMENT => return (next, 0, 0),
            _ => break,
        }
        i += 1;
    }
    let (sport, dport) = l4_ports(ctx, off, next);
    (next, sport, dport)
}
