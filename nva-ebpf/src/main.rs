//! nva's XDP data plane. Read top to bottom: `main.rs` (entry and counting),
//! `forward.rs` (the packet path), `packet.rs` (headers), `flow.rs` (ECMP hash),
//! `maps.rs` (the maps, whose types live in `nva-common`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod flow;
#[cfg(target_arch = "bpf")]
mod forward;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{macros::xdp, programs::XdpContext};
    use nva_common::{MAX_IF_SLOTS, MAX_IFINDEX, NUM_REASONS};

    use crate::{forward, maps};

    /// The forwarding program attached to every interface nva routes between.
    #[xdp]
    pub fn nva_forward(ctx: XdpContext) -> u32 {
        let len = (ctx.data_end() - ctx.data()) as u64;
        let verdict = forward::process(&ctx);
        count(&ctx, verdict.reason, len);
        verdict.action
    }

    /// Every packet is counted exactly once: on its ingress interface's slot, under
    /// the reason for what was done with it.
    #[inline(always)]
    fn count(ctx: &XdpContext, reason: u32, len: u64) {
        let ifindex = ctx.ingress_ifindex() as u32;
        let mut slot = 0;
        if ifindex < MAX_IFINDEX {
            if let Some(s) = maps::IF_SLOTS.get(ifindex) {
                slot = *s;
            }
        }
        if slot >= MAX_IF_SLOTS {
            slot = 0;
        }
        let index = slot * NUM_REASONS + (reason & (NUM_REASONS - 1));
        if let Some(cell) = maps::COUNTERS.get_ptr_mut(index) {
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
