//! nva's XDP data plane. Read top to bottom: `main.rs` (entry and counting),
//! `forward.rs` (the packet path, the same for both families), `ipv4.rs` and `ipv6.rs`
//! (what differs per family), `fib.rs` (the array-based FIB lookups), `packet.rs`
//! (headers), `flow.rs` (ECMP hash), `maps.rs` (the maps, whose types and names live in
//! `nva-common`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod fib;
#[cfg(target_arch = "bpf")]
mod flow;
#[cfg(target_arch = "bpf")]
mod forward;
#[cfg(target_arch = "bpf")]
mod ipv4;
#[cfg(target_arch = "bpf")]
mod ipv6;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use nva_common::{MAX_IF_SLOTS, MAX_IFINDEX, NUM_CLASSES, NUM_REASONS, PortInfo};

    use crate::{forward, maps};

    /// The forwarding program attached to every interface nva routes between.
    #[xdp]
    pub fn nva_forward(ctx: XdpContext) -> u32 {
        let len = (ctx.data_end() - ctx.data()) as u64;
        let port = port_info(&ctx);
        let verdict = forward::process(&ctx, &port);
        count(&port, &verdict, len);
        verdict.action
    }

    /// What nva knows about the ingress port (slot 0 and no flags if nothing).
    #[inline(always)]
    fn port_info(ctx: &XdpContext) -> PortInfo {
        let ifindex = ctx.ingress_ifindex() as u32;
        if ifindex < MAX_IFINDEX {
            if let Some(p) = maps::PORTS.get(ifindex) {
                return *p;
            }
        }
        PortInfo::default()
    }

    /// Every packet is counted exactly once on its ingress interface's slot, under the
    /// reason for what was done with it, and once more under its traffic class when it
    /// was classified.
    #[inline(always)]
    fn count(port: &PortInfo, verdict: &forward::Verdict, len: u64) {
        let slot = if port.slot < MAX_IF_SLOTS {
            port.slot
        } else {
            0
        };
        let reason = verdict.reason & (NUM_REASONS - 1);
        add(maps::COUNTERS.get_ptr_mut(slot * NUM_REASONS + reason), len);
        if verdict.class < NUM_CLASSES {
            add(
                maps::CLASS_COUNTERS.get_ptr_mut(verdict.class * NUM_REASONS + reason),
                len,
            );
        }
    }

    #[inline(always)]
    fn add(cell: Option<*mut nva_common::Counter>, len: u64) {
        if let Some(cell) = cell {
            // SAFETY: per-CPU cell, no concurrent writer on this CPU.
            unsafe {
                (*cell).packets += 1;
                (*cell).bytes += len;
            }
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: the verifier rejects any program that could reach a panic.
        unsafe { core::hint::unreachable_unchecked() }
    }
}

/// The crate is only meaningful for the BPF target; this keeps host builds of the
/// workspace (clippy, check) working.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
