//! Prefix encoding (RFC 4271 §4.3 NLRI, RFC 4760 for IPv6): length in bits, then the
//! minimum number of bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::reader::Reader;

/// AFI of a prefix family we carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub fn afi(self) -> u16 {
        match self {
            Family::Ipv4Unicast => super::AFI_IPV4,
            Family::Ipv6Unicast => super::AFI_IPV6,
        }
    }

    pub fn safi(self) -> u8 {
        super::SAFI_UNICAST
    }

    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (super::AFI_IPV4, super::SAFI_UNICAST) => Some(Family::Ipv4Unicast),
            (super::AFI_IPV6, super::SAFI_UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }

    fn max_bits(self) -> u8 {
        match self {
            Family::Ipv4Unicast => 32,
            Family::Ipv6Unicast => 128,
        }
    }
}

/// Reads one prefix; `None` when the length is too long or the bytes run out.
/// Host bits beyond the prefix length are cleared so equal prefixes compare equal.
fn read_prefix(r: &mut Reader<'_>, family: Family) -> Option<IpNet> {
    let bits = r.u8()?;
    if bits > family.max_bits() {
        return None;
    }
    let bytes = r.take((bits as usize).div_ceil(8))?;
    Some(match family {
        Family::Ipv4Unicast => {
            let mut a = [0u8; 4];
            a[..bytes.len()].copy_from_slice(bytes);
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), bits).ok()?.trunc())
        }
        Family::Ipv6Unicast => {
            let mut a = [0u8; 16];
            a[..bytes.len()].copy_from_slice(bytes);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), bits).ok()?.trunc())
        }
    })
}

/// Decodes a whole NLRI field; `None` if any prefix is invalid.
pub(super) fn decode_prefixes(buf: &[u8], family: Family) -> Option<Vec<IpNet>> {
    let mut r = Reader::new(buf);
    // A prefix takes at least one byte, so this bounds the allocation by the input.
    let mut out = Vec::with_capacity(buf.len().min(4096));
    while !r.is_empty() {
        out.push(read_prefix(&mut r, family)?);
    }
    Some(out)
}

pub(super) fn decode_v4_prefixes(buf: &[u8]) -> Option<Vec<Ipv4Net>> {
    decode_prefixes(buf, Family::Ipv4Unicast).map(|v| {
        v.into_iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(n),
                IpNet::V6(_) => None,
            })
            .collect()
    })
}

/// Bytes one prefix takes on the wire.
pub fn prefix_wire_len(net: &IpNet) -> usize {
    1 + (net.prefix_len() as usize).div_ceil(8)
}

pub(super) fn write_prefix(out: &mut Vec<u8>, net: &IpNet) {
    let bits = net.prefix_len();
    let n = (bits as usize).div_ceil(8);
    out.push(bits);
    match net.trunc() {
        IpNet::V4(v) => out.extend_from_slice(&v.addr().octets()[..n]),
        IpNet::V6(v) => out.extend_from_slice(&v.addr().octets()[..n]),
    }
}
