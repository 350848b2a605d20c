//! The packet path: parse, look up, choose a next hop, rewrite, redirect.
//!
//! The fast path is flat; anything unusual leaves early with a `Verdict` that names
//! the counted reason. Nothing is forwarded unless its headers were fully checked.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_xdp_adjust_head,
    maps::{Array, lpm_trie::Key},
    programs::XdpContext,
};
use nva_common::{
    CLASS_EAST_WEST, CLASS_NORTH_SOUTH, DIR_EXT, DXR_TOP_BITS, ECMP_BUCKETS, MAX_SEGMENTS,
    MBT6_LEVELS, MBT6_ROOT_BITS, MBT6_STRIDE, NH_RESOLVED, NH_VALID, NextHop, POLICY_TOP_BITS,
    PORT_FORCE_EAST_WEST, PORT_FORCE_NORTH_SOUTH, PortInfo, ROUTE_BLACKHOLE, ROUTE_CONNECTED,
    ROUTE_FORWARD, ROUTE_LOCAL, Route, SEGMENT_DENY, SET_DIR24_EW, SET_DIR24_NS,
    SET_DROP_NO_ROUTE_EW, SET_DROP_NO_ROUTE_NS, SET_DXR_EW, SET_DXR_NS, SET_MBT6_EW, SET_MBT6_NS,
    SET_SEGMENTS, SET_SYMMETRIC_HASH, Settings, dir_route, dxr_entry, policy_of, reason,
};

use crate::{
    flow,
    maps::{
        CLASS_V6, DIR8_EW, DIR8_NS, DIR24_EW, DIR24_NS, DXR_RANGES_EW, DXR_RANGES_NS, DXR_TOP_EW,
        DXR_TOP_NS, FIB_V4_EW, FIB_V4_NS, FIB_V6_EW, FIB_V6_NS, GROUPS, MBT6_NODES_EW,
        MBT6_NODES_NS, MBT6_ROOT_EW, MBT6_ROOT_NS, NEXTHOPS, POLICY_RANGES_V4, POLICY_TOP_V4,
        SEGMENT_DROPS, SEGMENT_POLICY, SEGMENT_V6, SETTINGS, TX_PORTS,
    },
    packet::*,
};

pub struct Verdict {
    pub action: u32,
    pub reason: u32,
    /// Traffic class the packet was looked up in, or `NO_CLASS`.
    pub class: u32,
}

/// Not classified (not IP, malformed, link-scoped).
pub const NO_CLASS: u32 = u32::MAX;

#[inline(always)]
const fn pass(reason: u32) -> Verdict {
    Verdict {
        action: XDP_PASS,
        reason,
        class: NO_CLASS,
    }
}

#[inline(always)]
const fn drop(reason: u32) -> Verdict {
    Verdict {
        action: XDP_DROP,
        reason,
        class: NO_CLASS,
    }
}

#[inline(always)]
fn in_class(mut verdict: Verdict, class: u32) -> Verdict {
    verdict.class = class;
    verdict
}

/// The class of a destination: the ingress port may force one; otherwise east-west
/// when the destination is in the east-west prefixes, else north-south.
#[inline(always)]
fn classify(port: &PortInfo, east_west: bool) -> u32 {
    if port.flags & PORT_FORCE_EAST_WEST != 0 {
        CLASS_EAST_WEST
    } else if port.flags & PORT_FORCE_NORTH_SOUTH != 0 || !east_west {
        CLASS_NORTH_SOUTH
    } else {
        CLASS_EAST_WEST
    }
}

/// Segment policy for east-west traffic: true (and counted) when the pair is denied.
#[inline(always)]
fn segment_denied(from: u32, to: u32, len: usize) -> bool {
    if from >= MAX_SEGMENTS || to >= MAX_SEGMENTS {
        return false;
    }
    let pair = from * MAX_SEGMENTS + to;
    match SEGMENT_POLICY.get(pair) {
        Some(&SEGMENT_DENY) => {}
        _ => return false,
    }
    if let Some(cell) = SEGMENT_DROPS.get_ptr_mut(pair) {
        // SAFETY: per-CPU cell.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += len as u64;
        }
    }
    true
}

const MALFORMED: Verdict = drop(reason::DROP_MALFORMED);

#[inline(always)]
pub fn process(ctx: &XdpContext, port: &PortInfo) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return MALFORMED;
    };
    // SAFETY: bounds checked by ptr_at.
    let (proto, dst) = unsafe { ((*eth).proto, (*eth).dst) };
    // Unicast for another MAC: a shared segment flooded it here. Forwarding it would
    // duplicate what its real router forwards.
    if dst[0] & 1 == 0 && port.mac != [0; 6] && dst != port.mac {
        return pass(reason::PASS_OTHER_HOST);
    }
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let Some(vlan) = ptr_at::<VlanHdr>(ctx, ETH_LEN) else {
            return MALFORMED;
        };
        // SAFETY: bounds checked by ptr_at.
        let inner = unsafe { (*vlan).proto };
        // Separate calls with constant offsets keep the verifier's job simple.
        return match inner {
            ETH_P_IP => ipv4(ctx, port, ETH_LEN + VLAN_LEN, true),
            ETH_P_IPV6 => ipv6(ctx, port, ETH_LEN + VLAN_LEN, true),
            _ => pass(reason::PASS_NOT_IP),
        };
    }
    match proto {
        ETH_P_IP => ipv4(ctx, port, ETH_LEN, false),
        ETH_P_IPV6 => ipv6(ctx, port, ETH_LEN, false),
        _ => pass(reason::PASS_NOT_IP),
    }
}

#[inline(always)]
fn settings() -> Settings {
    match SETTINGS.get(0) {
        Some(s) => *s,
        None => Settings::default(),
    }
}

#[inline(always)]
fn no_route(settings: &Settings, class: u32) -> Verdict {
    let flag = if class == CLASS_NORTH_SOUTH {
        SET_DROP_NO_ROUTE_NS
    } else {
        SET_DROP_NO_ROUTE_EW
    };
    if settings.flags & flag != 0 {
        drop(reason::DROP_NO_ROUTE)
    } else {
        pass(reason::PASS_NO_ROUTE)
    }
}

/// DIR-24-8 lookup: one array read, two for destinations under a prefix longer than /24.
#[inline(always)]
fn dir24_lookup(tbl24: &Array<u64>, tbl8: &Array<u64>, dst: [u8; 4]) -> Option<Route> {
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
fn dxr_lookup(top: &Array<u64>, ranges: &Array<u64>, dst: [u8; 4]) -> Option<Route> {
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
fn policy_v4(addr: [u8; 4]) -> (bool, u32) {
    policy_of(dxr_find(&POLICY_TOP_V4, &POLICY_RANGES_V4, POLICY_TOP_BITS, addr).unwrap_or(0))
}

/// Multibit-trie IPv6 lookup: the root by the top 20 bits, then one 16-entry block
/// (one cache line) per 4 bits until an entry is a route.
#[inline(always)]
fn mbt6_lookup(root: &Array<u64>, nodes: &Array<u64>, dst: [u8; 16]) -> Option<Route> {
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

/// The ECMP group to forward through, or the verdict for a packet that is not forwarded.
#[inline(always)]
fn forward_group(route: Option<&Route>, settings: &Settings, class: u32) -> Result<u32, Verdict> {
    let Some(route) = route else {
        return Err(no_route(settings, class));
    };
    match route.action {
        ROUTE_FORWARD => Ok(route.group),
        ROUTE_LOCAL => Err(pass(reason::PASS_LOCAL)),
        ROUTE_CONNECTED => Err(pass(reason::PASS_CONNECTED)),
        ROUTE_BLACKHOLE => Err(drop(reason::DROP_BLACKHOLE)),
        _ => Err(no_route(settings, class)),
    }
}

fn ipv4(ctx: &XdpContext, port: &PortInfo, l3: usize, in_vlan: bool) -> Verdict {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
        return MALFORMED;
    };
    // SAFETY (all header reads below): ptr_at checked the header lies in the frame.
    let version_ihl = unsafe { (*ip).version_ihl };
    let hdr_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || hdr_len < IPV4_MIN_LEN {
        return MALFORMED;
    }
    let tot_len = u16::from_be(unsafe { (*ip).tot_len }) as usize;
    if tot_len < hdr_len || l3 + tot_len > frame_len(ctx) {
        return MALFORMED;
    }
    if !ipv4_checksum_ok(ctx, l3, hdr_len) {
        return MALFORMED;
    }
    let dst = unsafe { (*ip).dst };
    // Multicast, reserved and limited broadcast are never routed here.
    if dst[0] >= 224 {
        return pass(reason::PASS_LOCAL);
    }
    let settings = settings();
    let key = Key::new(32, dst);
    let (east_west, dst_segment) = policy_v4(dst);
    let class = classify(port, east_west);
    let route = if class == CLASS_NORTH_SOUTH {
        if settings.flags & SET_DXR_NS != 0 {
            dxr_lookup(&DXR_TOP_NS, &DXR_RANGES_NS, dst)
        } else if settings.flags & SET_DIR24_NS != 0 {
            dir24_lookup(&DIR24_NS, &DIR8_NS, dst)
        } else {
            FIB_V4_NS.get(&key).copied()
        }
    } else if settings.flags & SET_DXR_EW != 0 {
        dxr_lookup(&DXR_TOP_EW, &DXR_RANGES_EW, dst)
    } else if settings.flags & SET_DIR24_EW != 0 {
        dir24_lookup(&DIR24_EW, &DIR8_EW, dst)
    } else {
        FIB_V4_EW.get(&key).copied()
    };
    let group = match forward_group(route.as_ref(), &settings, class) {
        Ok(group) => group,
        Err(verdict) => return in_class(verdict, class),
    };
    if unsafe { (*ip).ttl } <= 1 {
        return in_class(pass(reason::PASS_TTL), class);
    }
    let src = unsafe { (*ip).src };
    if class == CLASS_EAST_WEST && settings.flags & SET_SEGMENTS != 0 {
        let from = policy_v4(src).1;
        if segment_denied(from, dst_segment, frame_len(ctx)) {
            return in_class(drop(reason::DROP_SEGMENT), class);
        }
    }

    let proto = unsafe { (*ip).proto };
    // Fragments (more-fragments set or non-zero offset) carry no reliable ports:
    // hash on L3 only so every fragment of a datagram takes the same path.
    let fragment = u16::from_be(unsafe { (*ip).frag_off }) & 0x3fff != 0;
    let (sport, dport) = if fragment {
        (0, 0)
    } else {
        l4_ports(ctx, l3 + hdr_len, proto)
    };
    let hash = flow::hash(
        settings.hash_seed,
        settings.flags & SET_SYMMETRIC_HASH != 0,
        flow::fold_v4(src),
        flow::fold_v4(dst),
        proto,
        sport,
        dport,
    );
    let Some(nh) = select_nexthop(group, hash) else {
        return in_class(no_route(&settings, class), class);
    };
    if nh.flags & NH_RESOLVED == 0 {
        return in_class(pass(reason::PASS_NEIGH), class);
    }
    if tot_len > nh.mtu as usize {
        return in_class(pass(reason::PASS_MTU), class);
    }
    if !egress_ready(ctx, &nh) {
        return in_class(pass(reason::PASS_NO_TXPORT), class);
    }

    // TTL decrement with incremental checksum update (RFC 1624), as xdp_fwd does.
    unsafe {
        let mut check = (*ip).check as u32;
        check += 0x0100u16.to_be() as u32;
        (*ip).check = (check + (check >= 0xffff) as u32) as u16;
        (*ip).ttl -= 1;
    }
    in_class(emit(ctx, &nh, in_vlan, ETH_P_IP), class)
}

/// Verifies the IPv4 header checksum (the kernel would drop a bad one; so do we).
#[inline(always)]
fn ipv4_checksum_ok(ctx: &XdpContext, l3: usize, hdr_len: usize) -> bool {
    let mut sum: u32 = 0;
    let words = hdr_len / 2;
    let mut i = 0;
    while i < 30 {
        if i >= words {
            break;
        }
        let Some(word) = ptr_at::<u16>(ctx, l3 + i * 2) else {
            return false;
        };
        sum += unsafe { *word } as u32;
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

fn ipv6(ctx: &XdpContext, port: &PortInfo, l3: usize, in_vlan: bool) -> Verdict {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, l3) else {
        return MALFORMED;
    };
    // SAFETY (all header reads below): ptr_at checked the header lies in the frame.
    let first = unsafe { (*ip).version_tc_flow[0] };
    if first >> 4 != 6 {
        return MALFORMED;
    }
    let payload_len = u16::from_be(unsafe { (*ip).payload_len }) as usize;
    if l3 + IPV6_LEN + payload_len > frame_len(ctx) {
        return MALFORMED;
    }
    let dst = unsafe { (*ip).dst };
    let src = unsafe { (*ip).src };
    // Multicast and link-local (either end) are link-scoped: never routed.
    if dst[0] == 0xff || is_link_local_v6(&dst) || is_link_local_v6(&src) {
        return pass(reason::PASS_LOCAL);
    }
    let settings = settings();
    let key = Key::new(128, dst);
    let class = classify(port, CLASS_V6.get(&key).is_some());
    let route = if class == CLASS_NORTH_SOUTH {
        if settings.flags & SET_MBT6_NS != 0 {
            mbt6_lookup(&MBT6_ROOT_NS, &MBT6_NODES_NS, dst)
        } else {
            FIB_V6_NS.get(&key).copied()
        }
    } else if settings.flags & SET_MBT6_EW != 0 {
        mbt6_lookup(&MBT6_ROOT_EW, &MBT6_NODES_EW, dst)
    } else {
        FIB_V6_EW.get(&key).copied()
    };
    let group = match forward_group(route.as_ref(), &settings, class) {
        Ok(group) => group,
        Err(verdict) => return in_class(verdict, class),
    };
    if unsafe { (*ip).hop_limit } <= 1 {
        return in_class(pass(reason::PASS_TTL), class);
    }
    if class == CLASS_EAST_WEST && settings.flags & SET_SEGMENTS != 0 {
        let from = SEGMENT_V6.get(Key::new(128, src)).copied().unwrap_or(0);
        let to = SEGMENT_V6.get(&key).copied().unwrap_or(0);
        if segment_denied(from, to, frame_len(ctx)) {
            return in_class(drop(reason::DROP_SEGMENT), class);
        }
    }

    let (proto, sport, dport) = ipv6_l4(ctx, l3, unsafe { (*ip).next_hdr });
    let hash = flow::hash(
        settings.hash_seed,
        settings.flags & SET_SYMMETRIC_HASH != 0,
        flow::fold_v6(src),
        flow::fold_v6(dst),
        proto,
        sport,
        dport,
    );
    let Some(nh) = select_nexthop(group, hash) else {
        return in_class(no_route(&settings, class), class);
    };
    if nh.flags & NH_RESOLVED == 0 {
        return in_class(pass(reason::PASS_NEIGH), class);
    }
    if IPV6_LEN + payload_len > nh.mtu as usize {
        return in_class(pass(reason::PASS_MTU), class);
    }
    if !egress_ready(ctx, &nh) {
        return in_class(pass(reason::PASS_NO_TXPORT), class);
    }
    unsafe { (*ip).hop_limit -= 1 };
    in_class(emit(ctx, &nh, in_vlan, ETH_P_IPV6), class)
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

/// Ports of TCP/UDP/SCTP/UDP-Lite, or the echo identifier of ICMP/ICMPv6 echo
/// (so pings of different sessions spread too). (0, 0) when there is none.
#[inline(always)]
fn l4_ports(ctx: &XdpContext, off: usize, proto: u8) -> (u16, u16) {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => {
            match ptr_at::<[u16; 2]>(ctx, off) {
                Some(p) => unsafe { ((*p)[0], (*p)[1]) },
                None => (0, 0),
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => match ptr_at::<[u16; 4]>(ctx, off) {
            Some(p) => {
                let icmp_type = u16::from_be(unsafe { (*p)[0] }) >> 8;
                // ICMP echo request/reply 8/0, ICMPv6 128/129.
                if matches!(icmp_type, 0 | 8 | 128 | 129) {
                    (unsafe { (*p)[2] }, 0)
                } else {
                    (0, 0)
                }
            }
            None => (0, 0),
        },
        _ => (0, 0),
    }
}

/// Route's ECMP group -> bucket by hash -> next hop, if the chain leads to a valid one.
#[inline(always)]
fn select_nexthop(group: u32, hash: u32) -> Option<NextHop> {
    let group = GROUPS.get(group)?;
    let id = group.buckets[(hash as usize) & (ECMP_BUCKETS - 1)];
    if id == 0 {
        return None;
    }
    let nh = NEXTHOPS.get(id as u32)?;
    if nh.flags & NH_VALID == 0 {
        return None;
    }
    Some(*nh)
}

/// Writes the L2 header for the next hop (adding, removing or rewriting the VLAN tag)
/// and sends the frame: XDP_TX back out of the ingress port, else redirect.
///
/// The caller has already rewritten the frame (TTL / hop limit) and checked the egress
/// port (`egress_ready`): from here on a failure cannot hand the frame to the kernel as
/// it came, so it drops it (counted).
#[inline(always)]
fn emit(ctx: &XdpContext, nh: &NextHop, in_vlan: bool, ethertype: u16) -> Verdict {
    let out_vlan = nh.vlan != 0;
    let delta: i32 = match (in_vlan, out_vlan) {
        (true, false) => VLAN_LEN as i32,
        (false, true) => -(VLAN_LEN as i32),
        _ => 0,
    };
    if delta != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return drop(reason::DROP_EXCEPTION);
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return drop(reason::DROP_EXCEPTION);
    };
    unsafe {
        (*eth).dst = nh.dmac;
        (*eth).src = nh.smac;
    }
    if out_vlan {
        let Some(tag) = ptr_at::<VlanHdr>(ctx, ETH_LEN) else {
            return drop(reason::DROP_EXCEPTION);
        };
        unsafe {
            (*eth).proto = ETH_P_8021Q;
            (*tag).tci = (nh.vlan & 0x0fff).to_be();
            (*tag).proto = ethertype;
        }
    } else {
        unsafe { (*eth).proto = ethertype };
    }

    if nh.ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict {
            action: XDP_TX,
            reason: reason::TX,
            class: NO_CLASS,
        };
    }
    match TX_PORTS.redirect(nh.ifindex, XDP_DROP as u64) {
        Ok(action) => Verdict {
            action,
            reason: reason::FORWARDED,
            class: NO_CLASS,
        },
        Err(_) => drop(reason::DROP_EXCEPTION),
    }
}

/// The next hop's egress port can take the frame: the ingress port itself (XDP_TX), or
/// a port in the redirect map. Checked before the frame is touched, as the kernel's
/// xdp_fwd sample does (an interface a reload is removing may be gone from the map).
#[inline(always)]
fn egress_ready(ctx: &XdpContext, nh: &NextHop) -> bool {
    nh.ifindex == ctx.ingress_ifindex() as u32 || TX_PORTS.get(nh.ifindex).is_some()
}
