//! Host preflight: what this machine's kernel and NICs will make of native XDP, told
//! before nva attaches (`nva config check FILE` prints it as warnings).
//!
//! The facts ([`HostFacts`]) come from sysfs, /proc and two ethtool ioctls; the rules
//! ([`findings`]) are pure functions of them, unit-tested on facts captured from the
//! drivers' situations (virtio-net, hv_netvsc, MANA, ENA).

use std::path::Path;

/// One interface as preflight sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IfaceFacts {
    pub name: String,
    /// The driver (`/sys/class/net/IF/device/driver`), None for virtual devices.
    pub driver: Option<String>,
    pub mtu: u32,
    /// LRO on (ethtool flags), None when unknown.
    pub lro: Option<bool>,
    /// Combined channels in use and the maximum (ethtool -l), None when unknown.
    pub channels: Option<(u32, u32)>,
    /// virtio-net feature bits (`/sys/bus/virtio/devices/*/features`), virtio only.
    pub virtio_features: Option<String>,
}

/// The machine as preflight sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostFacts {
    /// Kernel (major, minor).
    pub kernel: (u32, u32),
    /// Online CPUs.
    pub cpus: u32,
    /// CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN) in the effective set.
    pub can_attach: bool,
    /// The pin path, when configured, and whether a bpf filesystem holds it.
    pub pin_path: Option<(String, bool)>,
    pub ifaces: Vec<IfaceFacts>,
}

/// Largest MTU a driver takes with a single-buffer XDP program (nva's is one), from the
/// drivers' sources (a page minus XDP headroom, `skb_shared_info` and headers); not
/// measured on the hardware. virtio-net's limit depends on the kernel version (6.1
/// attached at MTU 3,507 in a QEMU guest), so it is not checked here.
fn xdp_max_mtu(driver: &str) -> Option<u32> {
    match driver {
        // ENA_XDP_MAX_MTU: 4096 - 14 - 4 (FCS) - 4 (VLAN) - 256 - 320.
        "ena" => Some(3498),
        // netvsc_xdp_set: 4096 - 256 - 320 - 14.
        "hv_netvsc" => Some(3506),
        _ => None,
    }
}

/// The first kernel whose driver can transmit XDP_REDIRECTed frames (ndo_xdp_xmit).
fn redirect_since(driver: &str) -> Option<(u32, u32)> {
    match driver {
        "hv_netvsc" => Some((5, 19)),
        "mana" => Some((6, 0)),
        "ena" => Some((5, 9)),
        "gve" => Some((6, 4)),
        _ => None,
    }
}

// virtio-net feature bits (include/uapi/linux/virtio_net.h).
const VIRTIO_NET_F_GUEST_CSUM: usize = 1;
const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: usize = 2;
const VIRTIO_NET_F_GUEST_TSO4: usize = 7;
const VIRTIO_NET_F_GUEST_TSO6: usize = 8;
const VIRTIO_NET_F_GUEST_ECN: usize = 9;
const VIRTIO_NET_F_GUEST_UFO: usize = 10;

fn bit(features: &str, n: usize) -> bool {
    features.as_bytes().get(n) == Some(&b'1')
}

/// What the operator should know before nva attaches natively (empty: nothing found).
pub fn findings(h: &HostFacts) -> Vec<String> {
    let mut out = Vec::new();
    if !h.can_attach {
        out.push(
            "nva run needs CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN): run it as root or \
             with those capabilities (the shipped unit does)"
                .to_string(),
        );
    }
    if let Some((path, false)) = &h.pin_path {
        out.push(format!(
            "pin_path {path} is not on a bpf filesystem: `mount -t bpf bpf /sys/fs/bpf` \
             (systemd mounts it at boot)"
        ));
    }
    for f in &h.ifaces {
        let name = &f.name;
        if f.lro == Some(true) {
            out.push(format!(
                "{name}: LRO is on and native XDP needs it off: `ethtool -K {name} lro off`"
            ));
        }
        let Some(driver) = f.driver.as_deref() else {
            continue;
        };
        if let Some(max) = xdp_max_mtu(driver)
            && f.mtu > max
        {
            out.push(format!(
                "{name}: MTU {} is above what {driver} takes with XDP ({max}): \
                 `ip link set {name} mtu {max}`",
                f.mtu
            ));
        }
        if let Some(since) = redirect_since(driver)
            && h.kernel < since
        {
            out.push(format!(
                "{name}: {driver} cannot transmit redirected XDP frames before Linux {}.{} \
                 (this is {}.{}): forwarding out of it needs a newer kernel",
                since.0, since.1, h.kernel.0, h.kernel.1
            ));
        }
        match (driver, f.channels) {
            ("virtio_net", Some((combined, max))) if combined + h.cpus > max => {
                let what = if h.kernel < (5, 13) {
                    "the attach fails on this kernel"
                } else {
                    "XDP_REDIRECT shares locked TX queues"
                };
                out.push(format!(
                    "{name}: {combined} of {max} queue pairs in use and {} CPUs: virtio-net \
                     needs a free TX queue per CPU for XDP, else {what}; give the NIC more \
                     queues (QEMU: queues=N on the netdev, mq=on) or use fewer \
                     (`ethtool -L {name} combined {}`)",
                    h.cpus,
                    max.saturating_sub(h.cpus).max(1)
                ));
            }
            ("ena", Some((combined, max))) if combined > max / 2 => {
                out.push(format!(
                    "{name}: ENA needs half its queues for XDP: {combined} of {max} in use; \
                     `ethtool -L {name} combined {}`",
                    max / 2
                ));
            }
            _ => {}
        }
        if let Some(features) = &f.virtio_features {
            let offloads = [
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6,
                VIRTIO_NET_F_GUEST_ECN,
                VIRTIO_NET_F_GUEST_UFO,
            ]
            .iter()
            .any(|&b| bit(features, b));
            if offloads && !bit(features, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) {
                out.push(format!(
                    "{name}: the hypervisor implements receive offloads (GRO_HW/CSUM) the \
                     guest cannot turn off, so native XDP will be refused: turn the NIC's \
                     guest offloads off on the host (QEMU: guest_tso4=off,guest_tso6=off,\
                     guest_ecn=off,guest_ufo=off,guest_csum=off) or let the guest control \
                     them (ctrl_guest_offloads=on)"
                ));
            }
        }
    }
    out
}

/// Reads the facts for `ifaces` from this machine.
pub fn gather(ifaces: &[String], pin_path: Option<&str>) -> HostFacts {
    HostFacts {
        kernel: kernel_version(),
        // SAFETY: sysconf has no preconditions.
        cpus: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32,
        can_attach: can_attach(),
        pin_path: pin_path.map(|p| (p.to_string(), on_bpffs(p))),
        ifaces: ifaces.iter().map(|n| iface_facts(n)).collect(),
    }
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn can_attach() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    // CAP_NET_ADMIN 12, CAP_SYS_ADMIN 21, CAP_BPF 39.
    has(12) && (has(39) || has(21))
}

/// True when the longest mount point holding `path` (or its nearest existing parent) is
/// a bpf filesystem.
fn on_bpffs(path: &str) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            Path::new(path)
                .starts_with(point)
                .then(|| (point.len(), fstype == "bpf"))
        })
        .max_by_key(|(len, _)| *len)
        .is_some_and(|(_, bpf)| bpf)
}

fn iface_facts(name: &str) -> IfaceFacts {
    let sys = Path::new("/sys/class/net").join(name);
    let driver = std::fs::read_link(sys.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mtu = std::fs::read_to_string(sys.join("mtu"))
        .ok()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0);
    let virtio_features = (driver.as_deref() == Some("virtio_net"))
        .then(|| std::fs::read_to_string(sys.join("device/features")).ok())
        .flatten()
        .map(|f| f.trim().to_string());
    IfaceFacts {
        name: name.to_string(),
        driver,
        mtu,
        lro: ethtool::lro(name),
        channels: ethtool::channels(name),
        virtio_features,
    }
}

/// The two legacy ethtool ioctls preflight needs (SIOCETHTOOL).
mod ethtool {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GFLAGS: u32 = 0x25;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    const ETH_FLAG_LRO: u32 = 1 << 15;

    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }

    fn ioctl<T>(ifname: &str, cmd: &mut T) -> Option<()> {
        if ifname.len() >= libc::IFNAMSIZ {
            return None;
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: (cmd as *mut T).cast(),
            _pad: [0; 16],
        };
        req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: req points at a live ifreq whose data points at a live ethtool struct
        // of the kind the command's first word names.
        let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req) };
        // SAFETY: fd was opened above.
        unsafe { libc::close(fd) };
        (rc == 0).then_some(())
    }

    pub fn lro(ifname: &str) -> Option<bool> {
        let mut v = [ETHTOOL_GFLAGS, 0u32];
        ioctl(ifname, &mut v)?;
        Some(v[1] & ETH_FLAG_LRO != 0)
    }

    /// (combined in use, maximum combined); None when the driver has no channels.
    pub fn channels(ifname: &str) -> Option<(u32, u32)> {
        // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined,
        // rx_count, tx_count, other_count, combined_count.
        let mut c = [0u32; 9];
        c[0] = ETHTOOL_GCHANNELS;
        ioctl(ifname, &mut c)?;
        (c[4] > 0).then_some((c[8], c[4]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(kernel: (u32, u32), cpus: u32, iface: IfaceFacts) -> HostFacts {
        HostFacts {
            kernel,
            cpus,
            can_attach: true,
            pin_path: None,
            ifaces: vec![iface],
        }
    }

    fn nic(driver: &str, mtu: u32, channels: Option<(u32, u32)>) -> IfaceFacts {
        IfaceFacts {
            name: "eth1".into(),
            driver: Some(driver.into()),
            mtu,
            lro: Some(false),
            channels,
            virtio_features: None,
        }
    }

    #[test]
    fn a_good_virtio_guest_has_nothing_to_say() {
        let mut f = nic("virtio_net", 1500, Some((2, 4)));
        // QEMU's defaults: GUEST_CSUM, CTRL_GUEST_OFFLOADS, GUEST_TSO4/6, ECN, UFO on.
        f.virtio_features = Some("0111000111110000".into());
        assert!(findings(&host((6, 1), 2, f)).is_empty());
    }

    #[test]
    fn virtio_offloads_the_guest_cannot_control() {
        let mut f = nic("virtio_net", 1500, Some((2, 4)));
        f.virtio_features = Some("0101000111110000".into());
        let out = findings(&host((6, 12), 2, f.clone()));
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("guest_csum=off"), "{out:?}");
        // With the guest offloads off on the host, fine.
        f.virtio_features = Some("0000000000000000".into());
        assert!(findings(&host((6, 12), 2, f)).is_empty());
    }

    #[test]
    fn virtio_with_too_few_queues() {
        let out = findings(&host((6, 1), 4, nic("virtio_net", 1500, Some((1, 1)))));
        assert!(out[0].contains("locked TX queues"), "{out:?}");
        let out = findings(&host((5, 10), 4, nic("virtio_net", 1500, Some((1, 1)))));
        assert!(out[0].contains("attach fails"), "{out:?}");
    }

    #[test]
    fn mtu_above_the_xdp_limit() {
        let out = findings(&host((6, 1), 2, nic("ena", 9001, Some((2, 8)))));
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("(3498)"), "{out:?}");
        assert!(findings(&host((6, 1), 2, nic("ena", 3498, Some((2, 8))))).is_empty());
        let out = findings(&host((6, 1), 2, nic("hv_netvsc", 4000, None)));
        assert!(out[0].contains("mtu 3506"), "{out:?}");
    }

    #[test]
    fn drivers_that_cannot_redirect_on_old_kernels() {
        let out = findings(&host((5, 15), 2, nic("hv_netvsc", 1500, None)));
        assert!(out[0].contains("before Linux 5.19"), "{out:?}");
        assert!(findings(&host((5, 19), 2, nic("hv_netvsc", 1500, None))).is_empty());
        let out = findings(&host((5, 15), 2, nic("mana", 1500, None)));
        assert!(out[0].contains("before Linux 6.0"), "{out:?}");
    }

    #[test]
    fn ena_channels_over_half() {
        let out = findings(&host((6, 1), 8, nic("ena", 1500, Some((8, 8)))));
        assert!(out[0].contains("combined 4"), "{out:?}");
        assert!(findings(&host((6, 1), 8, nic("ena", 1500, Some((4, 8))))).is_empty());
    }

    #[test]
    fn lro_bpffs_and_capabilities() {
        let mut f = nic("mlx5_core", 1500, None);
        f.lro = Some(true);
        let mut h = host((6, 1), 2, f);
        h.can_attach = false;
        h.pin_path = Some(("/sys/fs/bpf/nva".into(), false));
        let out = findings(&h).join("\n");
        for needle in ["lro off", "CAP_BPF", "mount -t bpf"] {
            assert!(out.contains(needle), "{needle}: {out}");
        }
    }

    #[test]
    fn facts_of_this_machine_can_be_read() {
        let h = gather(&["lo".to_string()], Some("/sys/fs/bpf/nva"));
        assert!(h.kernel.0 >= 5, "{h:?}");
        assert!(h.cpus >= 1);
        assert_eq!(h.ifaces[0].driver, None);
    }
}
