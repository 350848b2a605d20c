//! UDP test frames (Ethernet + IPv4/IPv6 + UDP, zero payload) of an exact frame length.
use std::net::IpAddr;

use nva_testkit::checksum::ipv4_header_checksum;

/// Bytes in memory (no FCS) of a frame of nominal `size`: "64 B" is a 64-byte frame for
/// both families (IPv6 + UDP needs 62), "1500 B" a 1514-byte frame carrying a 1500-byte
/// (MTU-sized) IP packet.
pub fn frame_len(size: usize) -> usize {
    if size >= 1500 { size + 14 } else { size }
}

pub struct Udp {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
}

/// A frame of `len` bytes (>= 64). The UDP checksum is left 0 (nothing on the
/// forwarding path checks it).
pub fn udp(u: &Udp, len: usize) -> Vec<u8> {
    assert!(len >= 64);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&u.dmac);
    f[6..12].copy_from_slice(&u.smac);
    let l3 = len - 14;
    let l4 = match (u.src, u.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut f[14..34];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(l3 as u16).to_be_bytes());
            ip[8] = u.ttl;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = ipv4_header_checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            34
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let ip = &mut f[14..54];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((l3 - 40) as u16).to_be_bytes());
            ip[6] = 17;
            ip[7] = u.ttl;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            54
        }
        _ => panic!("mixed address families"),
    };
    f[l4..l4 + 2].copy_from_slice(&u.sport.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&u.dport.to_be_bytes());
    f[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use nva_testkit::checksum::ipv4_header_valid;

    use super::*;

    #[test]
    fn ipv4_checksum_verifies() {
        let u = Udp {
            dmac: [2; 6],
            smac: [4; 6],
            src: "10.0.0.1".parse().unwrap(),
            dst: "198.18.3.4".parse().unwrap(),
            sport: 1,
            dport: 9,
            ttl: 64,
        };
        let f = udp(&u, 64);
        assert!(ipv4_header_valid(&f[14..34]));
        assert_eq!(f.len(), 64);
        assert_eq!(udp(&u, frame_len(1500)).len(), 1514);
    }
}
