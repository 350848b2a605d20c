//! Why a native XDP attach failed, in the kernel's words, and what to do about it.
//!
//! nva attaches through `bpf_link_create`, which returns only an errno: a driver's reason
//! ("Can't set XDP while host is implementing GRO_HW/CSUM, disable GRO_HW/CSUM first" on
//! virtio-net) goes to netlink's extended ack, which the link call does not have. After a
//! failed attach, [`kernel_reason`] repeats it through rtnetlink (RTM_SETLINK with
//! IFLA_XDP, extended acks on) to read that message; [`advice`] turns known messages into
//! the fix.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_CAP_ACK: libc::c_int = 10;
const SOL_NETLINK: libc::c_int = 270;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// Attaches `prog_fd` to `ifindex` in driver mode through rtnetlink and returns the
/// kernel's extended-ack message if that fails (None when it fails without one, or when
/// netlink cannot be used). An attach that succeeds this way is undone at once: this
/// only asks why; the caller's attach has already failed and stays failed.
pub fn kernel_reason(ifindex: u32, prog_fd: RawFd) -> Option<String> {
    let sock = socket().ok()?;
    match set_xdp(
        &sock,
        ifindex,
        prog_fd,
        XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_DRV_MODE,
    ) {
        Ok(()) => {
            let _ = set_xdp(&sock, ifindex, -1, XDP_FLAGS_DRV_MODE);
            None
        }
        Err(msg) => msg,
    }
}

/// The fix for a kernel message, when nva knows one.
pub fn advice(name: &str, reason: &str) -> Option<String> {
    let r = reason.to_ascii_lowercase();
    if r.contains("gro_hw") || r.contains("lro") || r.contains("guest_offloads") {
        Some(format!(
            "turn the receive offloads off: `ethtool -K {name} gro-hw off lro off`; on \
             virtio-net where the hypervisor does not let the guest change them \
             (no VIRTIO_NET_F_CTRL_GUEST_OFFLOADS), turn off the NIC's guest offloads on \
             the host (QEMU: guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,\
             guest_csum=off, or ctrl_guest_offloads=on)"
        ))
    } else if r.contains("mtu") {
        Some(format!(
            "lower the MTU to what the driver takes with XDP (`ip link set {name} mtu ...`)"
        ))
    } else if r.contains("queue") || r.contains("channel") {
        Some(format!(
            "change the number of queues (`ethtool -L {name} combined N`, see `ethtool -l {name}`)"
        ))
    } else {
        None
    }
}

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the returned OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
        let one: libc::c_int = 1;
        // SAFETY: valid fd, pointer to a c_int of the size given.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                SOL_NETLINK,
                opt,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(sock)
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// The RTM_SETLINK request setting IFLA_XDP {FD, FLAGS} on `ifindex`.
fn request(ifindex: u32, prog_fd: RawFd, flags: u32) -> Vec<u8> {
    let mut xdp = Vec::new();
    push_attr(&mut xdp, IFLA_XDP_FD, &prog_fd.to_ne_bytes());
    push_attr(&mut xdp, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    let mut msg = vec![0u8; 16];
    // struct ifinfomsg: family, pad, type, index, flags, change.
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut msg, IFLA_XDP | NLA_F_NESTED, &xdp);
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    let nl_flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg[6..8].copy_from_slice(&nl_flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg
}

/// Sends the request; Ok when the kernel acked it, Err(message) when it refused.
fn set_xdp(sock: &OwnedFd, ifindex: u32, prog_fd: RawFd, flags: u32) -> Result<(), Option<String>> {
    let req = request(ifindex, prog_fd, flags);
    // SAFETY: valid fd and buffer.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(None);
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: valid fd and buffer of the given length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(None);
    }
    parse_ack(&buf[..n as usize])
}

/// Parses an NLMSG_ERROR reply (with NETLINK_CAP_ACK: the request's header only, then
/// the extended-ack attributes).
fn parse_ack(reply: &[u8]) -> Result<(), Option<String>> {
    if reply.len() < 20 {
        return Err(None);
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    let flags = u16::from_ne_bytes([reply[6], reply[7]]);
    if kind != libc::NLMSG_ERROR as u16 {
        return Err(None);
    }
    let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if error == 0 {
        return Ok(());
    }
    if flags & NLM_F_ACK_TLVS == 0 {
        return Err(None);
    }
    // nlmsghdr (16) + error (4) + the request's nlmsghdr (16, capped).
    let mut at = 36;
    let total =
        (u32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize).min(reply.len());
    while at + 4 <= total {
        let len = u16::from_ne_bytes([reply[at], reply[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([reply[at + 2], reply[at + 3]]);
        if len < 4 || at + len > total {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &reply[at + 4..at + len];
            let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
            return Err(Some(String::from_utf8_lossy(text).trim().to_string()));
        }
        at += (len + 3) & !3;
    }
    Err(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_extended_ack_message() {
        let msg = b"virtio_net: Can't set XDP while host is implementing GRO_HW/CSUM, disable GRO_HW/CSUM first\0";
        let mut reply = vec![0u8; 36];
        reply[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        reply[6..8].copy_from_slice(&(NLM_F_ACK_TLVS | 0x100).to_ne_bytes());
        reply[16..20].copy_from_slice(&(-libc::EOPNOTSUPP).to_ne_bytes());
        push_attr(&mut reply, NLMSGERR_ATTR_MSG, msg);
        let len = reply.len() as u32;
        reply[0..4].copy_from_slice(&len.to_ne_bytes());
        let got = parse_ack(&reply).unwrap_err().unwrap();
        assert!(got.starts_with("virtio_net: Can't set XDP"), "{got}");
        assert!(advice("eth0", &got).unwrap().contains("ethtool -K eth0"));
        // An ack without attributes, and success.
        reply[6..8].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(parse_ack(&reply), Err(None));
        reply[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(parse_ack(&reply), Ok(()));
    }

    #[test]
    fn the_request_is_a_setlink_with_nested_xdp_attributes() {
        let req = request(7, 42, XDP_FLAGS_DRV_MODE);
        assert_eq!(
            u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize,
            req.len()
        );
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), libc::RTM_SETLINK);
        assert_eq!(i32::from_ne_bytes(req[20..24].try_into().unwrap()), 7);
        // IFLA_XDP (nested) holding FD 42 and the flags.
        assert_eq!(
            u16::from_ne_bytes([req[34], req[35]]),
            IFLA_XDP | NLA_F_NESTED
        );
        assert_eq!(i32::from_ne_bytes(req[40..44].try_into().unwrap()), 42);
        assert_eq!(
            u32::from_ne_bytes(req[48..52].try_into().unwrap()),
            XDP_FLAGS_DRV_MODE
        );
    }

    #[test]
    fn known_reasons_get_a_fix() {
        assert!(
            advice("eth1", "MTU too large to enable XDP")
                .unwrap()
                .contains("mtu")
        );
        assert!(advice("eth1", "something else").is_none());
    }
}
