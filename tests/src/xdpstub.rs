//! A minimal hand-assembled XDP program (no compiler, no ELF) that redirects IPv4 UDP/TCP frames
//! to one egress interface with fixed MACs and no TTL change. It lets the harness check the
//! veth + XDP_REDIRECT behaviour the real router relies on, independently of nva.

use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, bail};

use crate::netns::{Netns, if_nametoindex};

const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT: i32 = 23;
const XDP_PASS: i32 = 2;

/// Encodes one `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// Program: if the frame is IPv4 UDP or TCP, set dst/src MAC and `bpf_redirect(ifindex, 0)`;
/// otherwise XDP_PASS.
fn program(ifindex: u32, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u64> {
    let w = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let h = |b: &[u8]| i32::from(u16::from_le_bytes([b[0], b[1]]));
    vec![
        insn(0x61, 2, 1, 0, 0),                 // 0: r2 = ctx->data
        insn(0x61, 3, 1, 4, 0),                 // 1: r3 = ctx->data_end
        insn(0xbf, 4, 2, 0, 0),                 // 2: r4 = r2
        insn(0x07, 4, 0, 0, 34),                // 3: r4 += 34 (eth + ipv4)
        insn(0x2d, 4, 3, 13, 0),                // 4: if r4 > r3 goto 18
        insn(0x69, 5, 2, 12, 0),                // 5: r5 = *(u16 *)(r2 + 12)  ethertype
        insn(0x55, 5, 0, 11, 0x0008),           // 6: if r5 != htons(0x0800) goto 18
        insn(0x71, 5, 2, 23, 0),                // 7: r5 = *(u8 *)(r2 + 23)  protocol
        insn(0x15, 5, 0, 1, 17),                // 8: if r5 == UDP goto 10
        insn(0x55, 5, 0, 8, 6),                 // 9: if r5 != TCP goto 18
        insn(0x62, 2, 0, 0, w(&dst_mac[0..4])), // 10..13: MACs
        insn(0x6a, 2, 0, 4, h(&dst_mac[4..6])),
        insn(0x62, 2, 0, 6, w(&src_mac[0..4])),
        insn(0x6a, 2, 0, 10, h(&src_mac[4..6])),
        insn(0xb7, 1, 0, 0, ifindex as i32), // 14: r1 = ifindex
        insn(0xb7, 2, 0, 0, 0),              // 15: r2 = 0
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT), // 16: call bpf_redirect
        insn(0x95, 0, 0, 0, 0),              // 17: exit
        insn(0xb7, 0, 0, 0, XDP_PASS),       // 18: r0 = XDP_PASS
        insn(0x95, 0, 0, 0, 0),              // 19: exit
    ]
}

fn bpf(cmd: i64, attr: &mut [u64; 16]) -> std::io::Result<i32> {
    // SAFETY: attr is a zero-padded bpf_attr of 128 bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<[u64; 16]>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as i32)
    }
}

/// An attached stub XDP program (a BPF link); detached when dropped.
pub struct XdpRedirect {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl XdpRedirect {
    /// Attaches to `in_if` in `ns` a program redirecting IPv4 UDP/TCP frames out of `out_if` (same
    /// namespace) with the given MACs (native XDP mode on veth).
    pub fn attach(
        ns: &Netns,
        in_if: &str,
        out_if: &str,
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
    ) -> Result<XdpRedirect> {
        ns.run(|| -> Result<XdpRedirect> {
            let in_idx = if_nametoindex(in_if)?;
            let out_idx = if_nametoindex(out_if)?;
            load_and_attach(&program(out_idx, dst_mac, src_mac), in_if, in_idx)
        })
    }
}

/// An attached XDP program that passes every frame to the stack. On veth, frames that
/// the peer sends with XDP_TX are only received when this end has an XDP program (GRO
/// is not enough), so the far end of an nva that hairpins gets one of these.
pub struct XdpPass(#[allow(dead_code)] XdpRedirect);

impl XdpPass {
    /// Attaches the pass-through program to `ifname` in `ns` (native mode).
    pub fn attach(ns: &Netns, ifname: &str) -> Result<XdpPass> {
        ns.run(|| -> Result<XdpPass> {
            let idx = if_nametoindex(ifname)?;
            let insns = vec![
                insn(0xb7, 0, 0, 0, XDP_PASS), // r0 = XDP_PASS
                insn(0x95, 0, 0, 0, 0),        // exit
            ];
            Ok(XdpPass(load_and_attach(&insns, ifname, idx)?))
        })
    }
}

fn load_and_attach(insns: &[u64], in_if: &str, in_idx: u32) -> Result<XdpRedirect> {
    let license = c"GPL";
    let mut log = vec![0u8; 65536];
    let mut a = [0u64; 16];
    a[0] = u64::from(BPF_PROG_TYPE_XDP) | (insns.len() as u64) << 32;
    a[1] = insns.as_ptr() as u64;
    a[2] = license.as_ptr() as u64;
    a[3] = 1 | (log.len() as u64) << 32; // log_level 1, log_size
    a[4] = log.as_mut_ptr() as u64;
    let prog = match bpf(BPF_PROG_LOAD, &mut a) {
        // SAFETY: the kernel returned a new fd we now own.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "BPF_PROG_LOAD: {e}\n{}",
                String::from_utf8_lossy(&log[..end])
            );
        }
    };
    let mut l = [0u64; 16];
    l[0] = prog.as_raw_fd() as u64 | u64::from(in_idx) << 32;
    l[1] = u64::from(BPF_XDP);
    let link = match bpf(BPF_LINK_CREATE, &mut l) {
        // SAFETY: the kernel returned a new fd we now own.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => bail!("BPF_LINK_CREATE (XDP on {in_if}): {e}"),
    };
    Ok(XdpRedirect {
        _link: link,
        _prog: prog,
    })
}
