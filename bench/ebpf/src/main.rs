//! Benchmark helper programs (crate `nva-bench` loads them; they are not part of the data
//! plane):
//!
//! - `bench_gen`: the traffic generator. Run by BPF_PROG_TEST_RUN with
//!   BPF_F_TEST_XDP_LIVE_FRAMES on the generator's veth, it rewrites the whole header of
//!   every frame from a template (frames come back from the page pool carrying the DUT's
//!   edits), picks a destination and a source port per frame from a per-CPU sequence
//!   number (so ECMP spreads the flows), and returns XDP_TX (sent to the DUT).
//! - `bench_cycle`: the generator's frame writing, then a tail call into the program
//!   under test: program-only cost with a new destination for every packet.
//! - `bench_sink`: counts frames per CPU and ingress ifindex, then drops them.
//! - `bench_pass`: XDP_PASS, so a veth has NAPI for Linux's own forwarding path.
//! - `bench_fwd`: the reference DUT, a minimal forwarder with no lookup: it checks the
//!   headers it touches, decrements the TTL / hop limit (IPv4 checksum updated as
//!   xdp_fwd does), picks one of `FWD_PORTS` egress ports by the UDP source port (so it
//!   spreads over the same ports as nva's ECMP), rewrites both MACs and redirects. What
//!   nva does beyond that (classes, lookup, segments, hashing, counters) is its cost.
//!
//! The layout of `GenConfig` is mirrored in `bench/src/generator.rs`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
        macros::{map, xdp},
        maps::{Array, DevMap, PerCpuArray, ProgramArray},
        programs::XdpContext,
    };

    /// Bytes of every frame rewritten from the template (Ethernet + IP + UDP fit).
    const HDR: usize = 64;
    const ETH: usize = 14;

    #[repr(C)]
    pub struct GenConfig {
        /// The first 64 bytes of every frame (addresses and checksum filled per frame).
        pub hdr: [u64; HDR / 8],
        /// 0: IPv4, 1: IPv6.
        pub ipv6: u32,
        /// Flows - 1 (a power of two): source port = 1024 + (seq & flow_mask).
        pub flow_mask: u32,
        /// Destinations in GEN_DSTS - 1 (a power of two).
        pub dst_mask: u32,
        /// IPv4: ones'-complement sum of the template header without destination and
        /// checksum, as read in native order (byte-order independent, RFC 1071).
        pub csum_partial: u32,
    }

    #[map]
    static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);

    /// Destination addresses (IPv4 in the first 4 bytes).
    #[map]
    static GEN_DSTS: Array<[u16; 8]> = Array::with_max_entries(1 << 16, 0);

    /// Frames generated, per CPU (also the sequence number of the next frame).
    #[map]
    static GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Frames received, per CPU, indexed by ingress ifindex & 63.
    #[map]
    static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(64, 0);

    /// The reference forwarder's egress ports: MACs per port index (`FwdPort`, mirrored
    /// in `bench/src/object.rs`) and the DEVMAP it redirects through (same index).
    #[repr(C)]
    pub struct FwdPort {
        pub dmac: [u8; 6],
        pub smac: [u8; 6],
    }

    pub const FWD_MAX_PORTS: u32 = 8;

    #[map]
    static FWD_MACS: Array<FwdPort> = Array::with_max_entries(FWD_MAX_PORTS, 0);

    #[map]
    static FWD_TX: DevMap = DevMap::with_max_entries(FWD_MAX_PORTS, 0);

    /// Egress ports in use - 1 (a power of two minus one), in entry 0.
    #[map]
    static FWD_PORT_MASK: Array<u32> = Array::with_max_entries(1, 0);

    #[xdp]
    pub fn bench_fwd(ctx: XdpContext) -> u32 {
        let data = ctx.data();
        // Ethernet + IPv6 + UDP ports: enough for either family's fields below.
        if data + ETH + 44 > ctx.data_end() {
            return XDP_PASS;
        }
        let mask = match FWD_PORT_MASK.get(0) {
            Some(m) => *m,
            None => return XDP_ABORTED,
        };
        // SAFETY: the bytes read and written below lie in the first ETH + 44 bytes,
        // checked above; 16-bit fields sit at even offsets of an aligned frame.
        unsafe {
            let h = data as *mut u16;
            let proto = u16::from_be(*h.add(6));
            let sport = match proto {
                0x0800 => {
                    let b = data as *mut u8;
                    if *b.add(ETH) != 0x45 || *b.add(ETH + 8) <= 1 {
                        return XDP_PASS;
                    }
                    *b.add(ETH + 8) -= 1;
                    let mut check = *h.add((ETH + 10) / 2) as u32;
                    check += 0x0100u16.to_be() as u32;
                    *h.add((ETH + 10) / 2) = (check + (check >= 0xffff) as u32) as u16;
                    u16::from_be(*h.add((ETH + 20) / 2))
                }
                0x86dd => {
                    let b = data as *mut u8;
                    if *b.add(ETH + 7) <= 1 {
                        return XDP_PASS;
                    }
                    *b.add(ETH + 7) -= 1;
                    u16::from_be(*h.add((ETH + 40) / 2))
                }
                _ => return XDP_PASS,
            };
            let port = sport as u32 & mask;
            let Some(macs) = FWD_MACS.get(port) else {
                return XDP_ABORTED;
            };
            let b = data as *mut [u8; 6];
            *b = macs.dmac;
            *b.add(1) = macs.smac;
            FWD_TX.redirect(port, XDP_DROP as u64).unwrap_or(XDP_DROP)
        }
    }

    /// Writes the next generated frame over the frame's first HDR bytes; false when the
    /// frame is too short or a map is missing.
    #[inline(always)]
    fn generate(ctx: &XdpContext) -> bool {
        let data = ctx.data();
        if data + HDR > ctx.data_end() {
            return false;
        }
        let Some(cfg) = GEN_CONFIG.get(0) else {
            return false;
        };
        let Some(seq) = GEN_SEQ.get_ptr_mut(0) else {
            return false;
        };
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        let n = unsafe {
            let n = *seq;
            *seq = n + 1;
            n
        };
        let idx = ((n as u32).wrapping_mul(0x9e37_79b1) >> 8) & cfg.dst_mask;
        let Some(dst) = GEN_DSTS.get(idx) else {
            return false;
        };
        let sport = (1024 + (n as u32 & cfg.flow_mask)) as u16;
        // SAFETY: the first HDR bytes are inside the frame (checked above); the frame
        // data starts at an 8-byte aligned offset of its page, and the 16-bit fields
        // written below sit at even offsets.
        unsafe {
            let p = data as *mut u64;
            for (i, w) in cfg.hdr.iter().enumerate() {
                *p.add(i) = *w;
            }
            let h = data as *mut u16;
            if cfg.ipv6 == 0 {
                *h.add((ETH + 16) / 2) = dst[0];
                *h.add((ETH + 18) / 2) = dst[1];
                let mut sum = cfg.csum_partial + dst[0] as u32 + dst[1] as u32;
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                *h.add((ETH + 10) / 2) = !(sum as u16);
                *h.add((ETH + 20) / 2) = sport.to_be();
            } else {
                for (i, w) in dst.iter().enumerate() {
                    *h.add((ETH + 24) / 2 + i) = *w;
                }
                *h.add((ETH + 40) / 2) = sport.to_be();
            }
        }
        true
    }

    #[xdp]
    pub fn bench_gen(ctx: XdpContext) -> u32 {
        if generate(&ctx) { XDP_TX } else { XDP_ABORTED }
    }

    /// The program `bench_cycle` hands each generated frame to (slot 0).
    #[map]
    static CYCLE_TARGET: ProgramArray = ProgramArray::with_max_entries(1, 0);

    /// Program-only cost with a new destination per packet: run by BPF_PROG_TEST_RUN with
    /// a large repeat, it writes the next generated frame (as `bench_gen`) and tail-calls
    /// the program under test. The same run with an empty target gives the cost of
    /// generating, which is subtracted.
    #[xdp]
    pub fn bench_cycle(ctx: XdpContext) -> u32 {
        if !generate(&ctx) {
            return XDP_ABORTED;
        }
        // SAFETY: a tail call to an XDP program of the same kind.
        let _ = unsafe { CYCLE_TARGET.tail_call(&ctx, 0) };
        XDP_ABORTED
    }

    #[xdp]
    pub fn bench_sink(ctx: XdpContext) -> u32 {
        let i = ctx.ingress_ifindex() as u32 & 63;
        if let Some(c) = SINK_COUNT.get_ptr_mut(i) {
            // SAFETY: per-CPU cell, no concurrent writer on this CPU.
            unsafe { *c += 1 };
        }
        XDP_DROP
    }

    #[xdp]
    pub fn bench_pass(_ctx: XdpContext) -> u32 {
        XDP_PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: the verifier rejects any program that could reach a panic.
        unsafe { core::hint::unreachable_unchecked() }
    }
}

/// Host builds of the workspace (clippy, check) see an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
