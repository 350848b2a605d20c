//! The packet path: parse, look up, choose a next hop, rewrite, redirect.
//!
//! The fast path is flat; anything unusual leaves early with a `Verdict` that names
//! the counted reason. Nothing is forwarded unless its headers were fully checked.
//!
//! Each IP family (`ipv4.rs`, `ipv6.rs`) checks its header into a small struct;
//! everything after that (class, route, TTL, segments, hash, next hop, MTU, rewrite) is
//! one family-independent function, `forward`, which asks the struct for the little that
//! differs (the `Family` trait).
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use nva_common::{
    CLASS_EAST_WEST, CLASS_NORTH_SOUTH, ECMP_BUCKETS, MAX_SEGMENTS, NH_RESOLVED, NH_VALID, NextHop,
    PORT_FORCE_EAST_WEST, PORT_FORCE_NORTH_SOUTH, PortInfo, ROUTE_BLACKHOLE, ROUTE_CONNECTED,
    ROUTE_FORWARD, ROUTE_LOCAL, Route, SEGMENT_DENY, SET_DROP_NO_ROUTE_EW, SET_DROP_NO_ROUTE_NS,
    SET_SEGMENTS, SET_SYMMETRIC_HASH, Settings, reason,
};

use crate::{
    flow,
    ipv4::ipv4,
    ipv6::ipv6,
    maps::{GROUPS, NEXTHOPS, SEGMENT_DROPS, SEGMENT_POLICY, SETTINGS, TX_PORTS},
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
pub const fn pass(reason: u32) -> Verdict {
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

pub const MALFORMED: Verdict = drop(reason::DROP_MALFORMED);

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

/// What the shared tail (`forward`) asks of a parsed packet: the few steps whose
/// details depend on the IP family. Everything else is `forward`'s, once.
pub trait Family {
    /// The EtherType the frame goes out with.
    const ETHERTYPE: u16;
    /// Looks up whether the destination is in the east-west prefixes (and keeps what
    /// the same read gives, such as the IPv4 destination segment). Asked once, after
    /// the settings are read.
    fn east_west(&mut self) -> bool;
    /// The route for the destination in the FIB of `class`.
    fn route(&self, class: u32) -> Option<Route>;
    /// TTL / hop limit as received.
    fn ttl(&self) -> u8;
    /// (source segment, destination segment); asked only when segments are enforced.
    fn segments(&self) -> (u32, u32);
    /// What the ECMP hash covers.
    fn flow(&self, ctx: &XdpContext) -> Flow;
    /// Bytes of the IP packet: what the egress MTU limits.
    fn ip_len(&self) -> usize;
    /// Decrements the TTL / hop limit (and updates the header checksum). The last
    /// change before the frame is sent.
    fn decrement_ttl(&self);
}

/// The ECMP hash's input: folded addresses, L4 protocol and ports (0 when the packet
/// carries none that can be trusted).
pub struct Flow {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// Everything after parsing, for both families: class, route, TTL, segments, ECMP
/// next hop, MTU, rewrite and send. Each step that does not forward the packet leaves
/// with the verdict that names why, counted under the packet's class.
#[inline(always)]
pub fn forward<F: Family>(
    ctx: &XdpContext,
    port: &PortInfo,
    packet: &mut F,
    in_vlan: bool,
) -> Verdict {
    let settings = settings();
    let class = classify(port, packet.east_west());
    in_class(forward_in(ctx, packet, &settings, class, in_vlan), class)
}

#[inline(always)]
fn forward_in<F: Family>(
    ctx: &XdpContext,
    packet: &F,
    settings: &Settings,
    class: u32,
    in_vlan: bool,
) -> Verdict {
    let group = match forward_group(packet.route(class).as_ref(), settings, class) {
        Ok(group) => group,
        Err(verdict) => return verdict,
    };
    if packet.ttl() <= 1 {
        return pass(reason::PASS_TTL);
    }
    if class == CLASS_EAST_WEST && settings.flags & SET_SEGMENTS != 0 {
        let (from, to) = packet.segments();
        if segment_denied(from, to, frame_len(ctx)) {
            return drop(reason::DROP_SEGMENT);
        }
    }
    let f = packet.flow(ctx);
    let symmetric = settings.flags & SET_SYMMETRIC_HASH != 0;
    let hash = flow::hash(
        settings.hash_seed,
        symmetric,
        f.src,
        f.dst,
        f.proto,
        f.sport,
        f.dport,
    );
    let Some(nh) = select_nexthop(group, hash) else {
        return no_route(settings, class);
    };
    if nh.flags & NH_RESOLVED == 0 {
        return pass(reason::PASS_NEIGH);
    }
    if packet.ip_len() > nh.mtu as usize {
        return pass(reason::PASS_MTU);
    }
    if !egress_ready(ctx, &nh) {
        return pass(reason::PASS_NO_TXPORT);
    }
    packet.decrement_ttl();
    emit(ctx, &nh, in_vlan, F::ETHERTYPE)
}

/// Ports of TCP/UDP/SCTP/UDP-Lite, or the echo identifier of ICMP/ICMPv6 echo
/// (so pings of different sessions spread too). (0, 0) when there is none.
#[inline(always)]
pub fn l4_ports(ctx: &XdpContext, off: usize, proto: u8) -> (u16, u16) {
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
