//! IPv4: the header checks, and what the shared tail (`forward::forward`) asks of an
//! IPv4 packet.
use aya_ebpf::{
    maps::{Array, LpmTrie, lpm_trie::Key},
    programs::XdpContext,
};
use nva_common::{CLASS_NORTH_SOUTH, FIB_DIR24, FIB_DXR, PortInfo, Route, reason};

use crate::{
    fib::{dir24_lookup, dxr_lookup, policy_v4},
    flow,
    forward::{Family, Flow, MALFORMED, Verdict, forward, l4_ports, pass},
    maps::{
        DIR8_EW, DIR8_NS, DIR24_EW, DIR24_NS, DXR_RANGES_EW, DXR_RANGES_NS, DXR_TOP_EW, DXR_TOP_NS,
        FIB_V4_EW, FIB_V4_NS, load_time,
    },
    packet::*,
};

/// A checked IPv4 packet.
struct V4 {
    ip: *mut Ipv4Hdr,
    /// Offset of the L4 header (after the options).
    l4: usize,
    tot_len: usize,
    dst: [u8; 4],
    /// The destination's segment: the policy table gives it with the class
    /// (`east_west`), in one read.
    dst_segment: u32,
}

/// The IPv4 packet path, the header at `l3`. Not inlined: one BPF function that both
/// framings (plain, VLAN-tagged) call with a constant offset.
pub fn ipv4(ctx: &XdpContext, port: &PortInfo, l3: usize, in_vlan: bool) -> Verdict {
    match parse_v4(ctx, l3) {
        Ok(mut packet) => forward(ctx, port, &mut packet, in_vlan),
        Err(verdict) => verdict,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Result<V4, Verdict> {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, l3) else {
        return Err(MALFORMED);
    };
    // SAFETY (all header reads below): ptr_at checked the header lies in the frame.
    let version_ihl = unsafe { (*ip).version_ihl };
    let hdr_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || hdr_len < IPV4_MIN_LEN {
        return Err(MALFORMED);
    }
    let tot_len = u16::from_be(unsafe { (*ip).tot_len }) as usize;
    if tot_len < hdr_len || l3 + tot_len > frame_len(ctx) {
        return Err(MALFORMED);
    }
    if !ipv4_checksum_ok(ctx, l3, hdr_len) {
        return Err(MALFORMED);
    }
    let dst = unsafe { (*ip).dst };
    // Multicast, reserved and limited broadcast are never routed here.
    if dst[0] >= 224 {
        return Err(pass(reason::PASS_LOCAL));
    }
    Ok(V4 {
        ip,
        l4: l3 + hdr_len,
        tot_len,
        dst,
        dst_segment: 0,
    })
}

impl Family for V4 {
    const ETHERTYPE: u16 = ETH_P_IP;

    #[inline(always)]
    fn east_west(&mut self) -> bool {
        let east_west;
        (east_west, self.dst_segment) = policy_v4(self.dst);
        east_west
    }

    #[inline(always)]
    fn route(&self, class: u32) -> Option<Route> {
        if class == CLASS_NORTH_SOUTH {
            let kind = load_time(|k| &k.v4[1]);
            fib_v4(
                kind,
                &FIB_V4_NS,
                &DIR24_NS,
                &DIR8_NS,
                &DXR_TOP_NS,
                &DXR_RANGES_NS,
                self.dst,
            )
        } else {
            let kind = load_time(|k| &k.v4[0]);
            fib_v4(
                kind,
                &FIB_V4_EW,
                &DIR24_EW,
                &DIR8_EW,
                &DXR_TOP_EW,
                &DXR_RANGES_EW,
                self.dst,
            )
        }
    }

    #[inline(always)]
    fn ttl(&self) -> u8 {
        // SAFETY: parse_v4 checked the header lies in the frame.
        unsafe { (*self.ip).ttl }
    }

    #[inline(always)]
    fn segments(&self) -> (u32, u32) {
        (policy_v4(self.src()).1, self.dst_segment)
    }

    #[inline(always)]
    fn flow(&self, ctx: &XdpContext) -> Flow {
        // SAFETY: parse_v4 checked the header lies in the frame.
        let (proto, frag_off) = unsafe { ((*self.ip).proto, (*self.ip).frag_off) };
        // Fragments (more-fragments set or non-zero offset) carry no reliable ports:
        // hash on L3 only so every fragment of a datagram takes the same path.
        let (sport, dport) = if u16::from_be(frag_off) & 0x3fff != 0 {
            (0, 0)
        } else {
            l4_ports(ctx, self.l4, proto)
        };
        Flow {
            src: flow::fold_v4(self.src()),
            dst: flow::fold_v4(self.dst),
            proto,
            sport,
            dport,
        }
    }

    #[inline(always)]
    fn ip_len(&self) -> usize {
        self.tot_len
    }

    #[inline(always)]
    fn decrement_ttl(&self) {
        // Incremental checksum update (RFC 1624), as xdp_fwd does.
        // SAFETY: parse_v4 checked the header lies in the frame.
        unsafe {
            let ip = self.ip;
            let mut check = (*ip).check as u32;
            check += 0x0100u16.to_be() as u32;
            (*ip).check = (check + (check >= 0xffff) as u32) as u16;
            (*ip).ttl -= 1;
        }
    }
}

impl V4 {
    /// The source address, read when needed (a value less to keep across the lookups).
    #[inline(always)]
    fn src(&self) -> [u8; 4] {
        // SAFETY: parse_v4 checked the header lies in the frame.
        unsafe { (*self.ip).src }
    }
}

/// The IPv4 FIB of one class, whichever structure it is (`kind`, a load-time constant:
/// the verifier only follows the branch in use).
#[inline(always)]
fn fib_v4(
    kind: u32,
    trie: &LpmTrie<[u8; 4], Route>,
    dir24: &Array<u64>,
    dir8: &Array<u64>,
    dxr_top: &Array<u64>,
    dxr_ranges: &Array<u64>,
    dst: [u8; 4],
) -> Option<Route> {
    match kind {
        FIB_DIR24 => dir24_lookup(dir24, dir8, dst),
        FIB_DXR => dxr_lookup(dxr_top, dxr_ranges, dst),
        _ => trie.get(Key::new(32, dst)).copied(),
    }
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
