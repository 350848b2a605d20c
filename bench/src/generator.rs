//! The live-frames generator: `bench_gen` run by BPF_PROG_TEST_RUN with
//! BPF_F_TEST_XDP_LIVE_FRAMES on the generator's veth, on one pinned CPU, in one long
//! call (huge repeat) that is interrupted by a signal when the measurement is done.
use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Result, bail, ensure};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};

use nva_testkit::{
    Netns,
    checksum::{fold, sum_words},
};

use crate::{
    frames::{self, Udp},
    object::{BenchObject, GEN, MAX_DSTS},
    topology::{DUT_MAC, GEN_MAC, GEN_V4, GEN_V6},
};

/// Mirror of `GenConfig` in `bench/ebpf/src/main.rs`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    pub hdr: [u64; 8],
    pub ipv6: u32,
    pub flow_mask: u32,
    pub dst_mask: u32,
    pub csum_partial: u32,
}

// SAFETY: plain old data, no padding (64 + 4 * 4 bytes).
unsafe impl aya::Pod for GenConfig {}

/// Frames per BPF_PROG_TEST_RUN batch (the kernel's default).
const BATCH: u32 = 64;

/// Writes the template for `size`-byte frames of `flows` flows to `dsts` (a power of two
/// of them) and returns the frame to hand to the test run.
pub fn configure(
    obj: &mut BenchObject,
    ipv6: bool,
    size: usize,
    flows: u32,
    dsts: &[IpAddr],
) -> Result<Vec<u8>> {
    ensure!(
        flows.is_power_of_two() && flows <= 32768,
        "flows must be a power of two"
    );
    ensure!(
        dsts.len().is_power_of_two() && dsts.len() <= MAX_DSTS,
        "destinations: a power of two"
    );
    let u = Udp {
        dmac: DUT_MAC,
        smac: GEN_MAC,
        src: if ipv6 {
            IpAddr::V6(GEN_V6)
        } else {
            IpAddr::V4(GEN_V4)
        },
        dst: dsts[0],
        sport: 1024,
        dport: 9,
        ttl: 64,
    };
    let frame = frames::udp(&u, frames::frame_len(size));
    let mut hdr = [0u64; 8];
    for (w, c) in hdr.iter_mut().zip(frame[..64].chunks(8)) {
        *w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
    }
    let mut partial = 0;
    if !ipv6 {
        let mut ip = frame[14..34].to_vec();
        ip[10..12].fill(0);
        ip[16..20].fill(0);
        partial = native_partial_sum(&ip);
    }
    obj.set_config(&GenConfig {
        hdr,
        ipv6: ipv6 as u32,
        flow_mask: flows - 1,
        dst_mask: dsts.len() as u32 - 1,
        csum_partial: partial,
    })?;
    obj.set_dsts(dsts)?;
    Ok(frame)
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Installs a no-op SIGUSR1 handler (without SA_RESTART) so the signal interrupts the
/// generator's syscall instead of killing the process.
pub fn install_signal() {
    // SAFETY: a zeroed sigaction with a valid handler; plain libc calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t filled with CPU_SET; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Whether the first OS error in `e`'s chain is `errno`.
fn os_error_is(e: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(errno);
        }
        cur = err.source();
    }
    false
}

fn interrupted(e: &(dyn std::error::Error + 'static)) -> bool {
    os_error_is(e, libc::EINTR)
}

/// Whether this kernel injects live frames from BPF_PROG_TEST_RUN: some hardened
/// kernels refuse BPF_F_TEST_XDP_LIVE_FRAMES with EPERM even to root (seen on a
/// 6.18 kernel with lockdown=integrity). One XDP_PASS frame out of `ifindex` in `gen_ns`.
pub fn live_frames_allowed(obj: &BenchObject, gen_ns: &Netns, ifindex: u32) -> Result<bool> {
    let prog = obj.program(crate::object::PASS)?;
    let frame = vec![0u8; 64];
    let mut ctx = Vec::new();
    for v in [0u32, frame.len() as u32, 0, ifindex, 0, 0] {
        ctx.extend_from_slice(&v.to_ne_bytes());
    }
    gen_ns.run(|| {
        let opts = TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..Default::default()
        };
        match prog.test_run(opts) {
            Ok(_) => Ok(true),
            // The OS error is the source of aya's error (its Display does not show it).
            Err(e) if os_error_is(&e, libc::EPERM) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context("probing live frames")),
        }
    })
}

/// Generates `frame`s out of `ifindex` (in `gen`) on `cpu` while `measure` runs on the
/// calling thread, then stops the generator. `max_frames` bounds the run in any case.
pub fn run<R>(
    obj: &BenchObject,
    gen_ns: &Netns,
    ifindex: u32,
    cpu: usize,
    frame: &[u8],
    max_frames: u64,
    measure: impl FnOnce() -> R,
) -> Result<R> {
    let stop = AtomicBool::new(false);
    let tid = AtomicU64::new(0);
    let prog = obj.program(GEN)?;
    let mut ctx = Vec::new();
    for v in [0u32, frame.len() as u32, 0, ifindex, 0, 0] {
        ctx.extend_from_slice(&v.to_ne_bytes());
    }
    std::thread::scope(|s| {
        let worker = s.spawn(|| -> Result<()> {
            // SAFETY: pthread_self has no preconditions.
            tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            gen_ns.enter()?;
            pin(cpu)?;
            let mut left = max_frames;
            while !stop.load(Ordering::SeqCst) && left > 0 {
                let repeat = left.min(u32::MAX as u64) as u32;
                let opts = TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..Default::default()
                };
                match prog.test_run(opts) {
                    Ok(_) => left -= repeat as u64,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => return Err(anyhow::Error::new(e).context("live-frames test run")),
                }
            }
            Ok(())
        });
        let out = measure();
        stop.store(true, Ordering::SeqCst);
        while !worker.is_finished() {
            let t = tid.load(Ordering::SeqCst);
            if t != 0 {
                // SAFETY: the thread is alive (not finished) and joined below.
                unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        Ok(out)
    })
}

/// The folded one's-complement sum of `bytes` as the generator program adds them: 16-bit
/// words as they lie in memory (native order), not big-endian.
fn native_partial_sum(bytes: &[u8]) -> u32 {
    u16::from_ne_bytes(fold(sum_words(bytes, 0)).to_be_bytes()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_sum_is_in_native_order() {
        let hdr: Vec<u8> = (0u8..20).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        // Summed word by word in native order, folded twice (at most 10 words).
        let mut sum: u32 = hdr
            .chunks(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]) as u32)
            .sum();
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        assert_eq!(native_partial_sum(&hdr), sum);
    }
}
