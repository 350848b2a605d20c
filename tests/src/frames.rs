//! Builders for raw Ethernet frames (IPv4/IPv6 + UDP) with correct checksums, so tests can
//! send them with [`crate::inject_frames`] as is, or corrupt fields on purpose first.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum::{IPPROTO_UDP, ipv4_header_checksum, udp_checksum_v4, udp_checksum_v6};

/// Ethernet header length (no VLAN tag).
pub const ETH_LEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_LEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_LEN: usize = 40;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;

/// Byte offsets into a frame built by [`eth_ipv4_udp`] (no VLAN tag), for corrupting fields.
pub mod off4 {
    /// Version (high nibble) / IHL (low nibble).
    pub const VER_IHL: usize = 14;
    /// Total length (2 bytes).
    pub const TOT_LEN: usize = 16;
    /// Flags / fragment offset (2 bytes).
    pub const FRAG: usize = 20;
    /// TTL.
    pub const TTL: usize = 22;
    /// Protocol.
    pub const PROTO: usize = 23;
    /// Header checksum (2 bytes).
    pub const CSUM: usize = 24;
    /// Source address (4 bytes).
    pub const SRC: usize = 26;
    /// Destination address (4 bytes).
    pub const DST: usize = 30;
    /// Start of the UDP header.
    pub const UDP: usize = 34;
    /// UDP checksum (2 bytes).
    pub const UDP_CSUM: usize = 40;
}

/// Byte offsets into a frame built by [`eth_ipv6_udp`] (no VLAN tag).
pub mod off6 {
    /// Version / traffic class / flow label (4 bytes).
    pub const VER: usize = 14;
    /// Payload length (2 bytes).
    pub const PAYLOAD_LEN: usize = 18;
    /// Next header.
    pub const NEXT_HDR: usize = 20;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 21;
    /// Source address (16 bytes).
    pub const SRC: usize = 22;
    /// Destination address (16 bytes).
    pub const DST: usize = 38;
    /// Start of the UDP header.
    pub const UDP: usize = 54;
    /// UDP checksum (2 bytes).
    pub const UDP_CSUM: usize = 60;
}

fn eth_header(dst_mac: [u8; 6], src_mac: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (UDP_LEN + payload.len()) as u16;
    let mut u = Vec::with_capacity(len as usize);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// Ethernet + IPv4 (20 bytes, DF set, id 0) + UDP frame with valid IPv4 and UDP checksums.
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv4_udp(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut udp = udp_header(sport, dport, payload);
    let c = udp_checksum_v4(src, dst, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let mut f = eth_header(dst_mac, src_mac, ETH_P_IPV4);
    let tot_len = (IPV4_LEN + udp.len()) as u16;
    f.extend_from_slice(&[0x45, 0x00]);
    f.extend_from_slice(&tot_len.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x00, 0x40, 0x00, ttl, IPPROTO_UDP, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    fix_ipv4_checksum(&mut f);
    f.extend_from_slice(&udp);
    f
}

/// Ethernet + IPv6 + UDP frame with a valid UDP checksum.
#[allow(clippy::too_many_arguments)]
pub fn eth_ipv6_udp(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut udp = udp_header(sport, dport, payload);
    let c = udp_checksum_v6(src, dst, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());

    let mut f = eth_header(dst_mac, src_mac, ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[IPPROTO_UDP, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&udp);
    f
}

/// Recomputes the IPv4 header checksum of an untagged frame in place (after editing fields).
/// Uses the IHL in the frame, clamped to the bytes present.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[off4::VER_IHL] & 0x0f) * 4;
    let end = (ETH_LEN + ihl.max(IPV4_LEN)).min(frame.len());
    frame[off4::CSUM..off4::CSUM + 2].fill(0);
    let c = ipv4_header_checksum(&frame[ETH_LEN..end]);
    frame[off4::CSUM..off4::CSUM + 2].copy_from_slice(&c.to_be_bytes());
}

/// Returns `frame` with an 802.1Q tag (`vid`, PCP 0) inserted after the MAC addresses.
pub fn with_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len() + 4);
    f.extend_from_slice(&frame[..12]);
    f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{fold, ipv4_header_valid, sum_words};

    #[test]
    fn ipv4_frame_layout() {
        let f = eth_ipv4_udp(
            [2; 6],
            [4; 6],
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 1, 2),
            1234,
            5678,
            64,
            b"hi",
        );
        assert_eq!(f.len(), ETH_LEN + IPV4_LEN + UDP_LEN + 2);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[off4::TTL], 64);
        assert_eq!(
            u16::from_be_bytes([f[off4::TOT_LEN], f[off4::TOT_LEN + 1]]),
            30
        );
        assert!(ipv4_header_valid(&f[ETH_LEN..ETH_LEN + IPV4_LEN]));
        // Same UDP checksum as the hand-computed example in checksum.rs.
        assert_eq!(&f[off4::UDP_CSUM..off4::UDP_CSUM + 2], &[0x67, 0x6d]);
    }

    #[test]
    fn ipv6_frame_layout() {
        let src: Ipv6Addr = "fd00::2".parse().unwrap();
        let dst: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let f = eth_ipv6_udp([2; 6], [4; 6], src, dst, 1, 2, 9, b"abc");
        assert_eq!(f.len(), ETH_LEN + IPV6_LEN + UDP_LEN + 3);
        assert_eq!(f[off6::HOP_LIMIT], 9);
        assert_eq!(&f[off6::SRC..off6::SRC + 16], &src.octets());
        assert_eq!(&f[off6::DST..off6::DST + 16], &dst.octets());
        let mut sum = sum_words(&src.octets(), 0);
        sum = sum_words(&dst.octets(), sum);
        sum += 17 + (UDP_LEN + 3) as u32;
        assert_eq!(fold(sum_words(&f[off6::UDP..], sum)), 0xffff);
    }

    #[test]
    fn vlan_tag_inserted() {
        let f = eth_ipv4_udp(
            [2; 6],
            [4; 6],
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            1,
            2,
            1,
            b"",
        );
        let t = with_vlan(&f, 100);
        assert_eq!(t.len(), f.len() + 4);
        assert_eq!(&t[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        assert_eq!(&t[18..], &f[14..]);
    }
}
