//! Internet checksums (RFC 1071) for hand-built IPv4 / UDP headers.

use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Adds `data` as big-endian 16-bit words (odd tail padded with zero) to `sum`, unfolded.
pub fn sum_words(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a 32-bit one's-complement accumulator into 16 bits (not inverted).
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The RFC 1071 Internet checksum of `data` (inverted folded sum).
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

/// IPv4 header checksum of `hdr` (the whole header, IHL*4 bytes), ignoring bytes 10..12.
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    assert!(hdr.len() >= 20, "IPv4 header shorter than 20 bytes");
    let sum = sum_words(&hdr[..10], 0);
    !fold(sum_words(&hdr[12..], sum))
}

/// True if the IPv4 header `hdr` (checksum field included) sums to 0xffff.
pub fn ipv4_header_valid(hdr: &[u8]) -> bool {
    fold(sum_words(hdr, 0)) == 0xffff
}

/// UDP checksum over the IPv4 pseudo-header and `udp` (header + payload), ignoring bytes 6..8.
/// A computed 0 is returned as 0xffff (0 means "no checksum" in UDP over IPv4).
pub fn udp_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut sum = sum_words(&src.octets(), 0);
    sum = sum_words(&dst.octets(), sum);
    sum = sum.wrapping_add(u32::from(IPPROTO_UDP));
    sum = sum.wrapping_add(udp.len() as u32);
    l4_finish(udp, sum)
}

/// UDP checksum over the IPv6 pseudo-header and `udp` (header + payload), ignoring bytes 6..8.
/// A computed 0 is returned as 0xffff (UDP over IPv6 must carry a checksum).
pub fn udp_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, udp: &[u8]) -> u16 {
    let mut sum = sum_words(&src.octets(), 0);
    sum = sum_words(&dst.octets(), sum);
    let len = udp.len() as u32;
    sum = sum.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    sum = sum.wrapping_add(u32::from(IPPROTO_UDP));
    l4_finish(udp, sum)
}

fn l4_finish(udp: &[u8], sum: u32) -> u16 {
    assert!(udp.len() >= 8, "UDP segment shorter than its header");
    let sum = sum_words(&udp[..6], sum);
    let c = !fold(sum_words(&udp[8..], sum));
    if c == 0 { 0xffff } else { c }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic example header (192.168.0.1 -> 192.168.0.199, checksum 0xb861).
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn ipv4_known_example() {
        assert_eq!(ipv4_header_checksum(&HDR), 0xb861);
        assert!(ipv4_header_valid(&HDR));
        let mut bad = HDR;
        bad[8] = 0x3f; // TTL changed, checksum not updated
        assert!(!ipv4_header_valid(&bad));
        let c = ipv4_header_checksum(&bad);
        bad[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(ipv4_header_valid(&bad));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to 0x220d (folded 0xddf2).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&data, 0)), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(
            internet_checksum(&[0x12, 0x34, 0x56]),
            internet_checksum(&[0x12, 0x34, 0x56, 0])
        );
    }

    #[test]
    fn udp_v4_known_example() {
        // 10.0.0.2:1234 -> 10.0.1.2:5678, payload "hi", computed by hand:
        // pseudo-header 0a00+0002+0a00+0102+0011+000a = 0x151f
        // UDP 04d2+162e+000a+6869 = 0x8373; total 0x9892 -> !0x9892 = 0x676d
        let udp = [0x04, 0xd2, 0x16, 0x2e, 0x00, 0x0a, 0x00, 0x00, b'h', b'i'];
        let c = udp_checksum_v4(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 1, 2), &udp);
        assert_eq!(c, 0x676d);
        // Verifying over the segment with the checksum filled in gives 0xffff.
        let mut full = udp;
        full[6..8].copy_from_slice(&c.to_be_bytes());
        let mut sum = sum_words(&[10, 0, 0, 2, 10, 0, 1, 2], 0);
        sum += 17 + 10;
        assert_eq!(fold(sum_words(&full, sum)), 0xffff);
    }

    #[test]
    fn udp_v6_verifies() {
        let src: Ipv6Addr = "fd00::2".parse().unwrap();
        let dst: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let mut udp = vec![0x30, 0x39, 0x00, 0x35, 0x00, 0x0b, 0, 0, 1, 2, 3];
        let c = udp_checksum_v6(src, dst, &udp);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        let mut sum = sum_words(&src.octets(), 0);
        sum = sum_words(&dst.octets(), sum);
        sum += 17 + udp.len() as u32;
        assert_eq!(fold(sum_words(&udp, sum)), 0xffff);
    }
}
