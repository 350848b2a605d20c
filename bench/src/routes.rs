//! Route tables with a realistic prefix-length mix, generated from a seed.
//!
//! IPv4 follows the shape of the public IPv4 table (about 60% /24, then /22 and /23,
//! then /16-/21, a few shorter) plus what an enterprise's table adds: 3% longer than /24
//! (/28-/30 links and /32 hosts, one or two per /24, so about 30,000 /24s of a million
//! routes hold longer prefixes); IPv6 the shape of the public IPv6 table (/48 heavy,
//! then /32, /44, /40, /36, /29). Prefixes are drawn uniformly from public unicast space
//! (minus private, reserved and the ranges the benchmark topology uses), so some nest
//! inside others as in a real table. A table of size 1 is one benchmarking prefix.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use nva_testkit::Rng;

/// (prefix length, share in percent) of the IPv4 table.
pub const V4_MIX: &[(u8, f64)] = &[
    (24, 60.0),
    (23, 9.5),
    (22, 11.5),
    (21, 4.5),
    (20, 4.5),
    (19, 3.3),
    (18, 1.6),
    (17, 0.9),
    (16, 1.6),
    (15, 0.3),
    (14, 0.25),
    (13, 0.15),
    (12, 0.08),
    (11, 0.05),
    (10, 0.03),
    (9, 0.01),
    (8, 0.02),
];

/// Share in percent of IPv4 routes longer than /24, and their (length, share) mix.
pub const V4_LONG_SHARE: f64 = 3.0;
pub const V4_LONG_MIX: &[(u8, f64)] = &[(32, 40.0), (30, 30.0), (29, 15.0), (28, 15.0)];

/// (prefix length, share in percent) of the IPv6 table.
pub const V6_MIX: &[(u8, f64)] = &[
    (48, 47.0),
    (32, 13.0),
    (44, 8.0),
    (40, 6.0),
    (36, 3.0),
    (29, 3.0),
    (46, 2.0),
    (47, 2.0),
    (45, 1.5),
    (33, 1.5),
    (34, 1.5),
    (38, 1.5),
    (35, 1.0),
    (37, 1.0),
    (39, 1.0),
    (41, 1.0),
    (42, 1.0),
    (43, 1.0),
    (28, 1.0),
    (30, 0.5),
    (31, 0.5),
    (27, 0.3),
    (26, 0.2),
    (24, 0.2),
    (20, 0.1),
];

/// The single route of the 1-route tables (RFC 2544 / RFC 5180 benchmarking ranges).
pub fn single_v4() -> Ipv4Net {
    "198.18.0.0/15".parse().expect("literal")
}

pub fn single_v6() -> Ipv6Net {
    "2001:2::/48".parse().expect("literal")
}

fn reserved_v4() -> Vec<Ipv4Net> {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/3",
    ]
    .iter()
    .map(|s| s.parse().expect("literal"))
    .collect()
}

fn reserved_v6() -> Vec<Ipv6Net> {
    ["2001:2::/48", "2001:db8::/32", "2002::/16"]
        .iter()
        .map(|s| s.parse().expect("literal"))
        .collect()
}

fn pick_len(mix: &[(u8, f64)], rng: &mut Rng) -> u8 {
    let total: f64 = mix.iter().map(|(_, w)| w).sum();
    let mut x = rng.unit() * total;
    for (len, w) in mix {
        if x < *w {
            return *len;
        }
        x -= w;
    }
    mix[0].0
}

/// `n` distinct IPv4 prefixes.
pub fn table_v4(n: usize, seed: u64) -> Vec<Ipv4Net> {
    if n == 1 {
        return vec![single_v4()];
    }
    let reserved = reserved_v4();
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = if rng.unit() * 100.0 < V4_LONG_SHARE {
            pick_len(V4_LONG_MIX, &mut rng)
        } else {
            pick_len(V4_MIX, &mut rng)
        };
        let addr = Ipv4Addr::from(rng.next_u64() as u32);
        let net = Ipv4Net::new(addr, len).expect("len <= 32").trunc();
        if reserved
            .iter()
            .any(|r| r.contains(&net.network()) || net.contains(&r.network()))
        {
            continue;
        }
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// `n` distinct IPv6 prefixes inside 2000::/3.
pub fn table_v6(n: usize, seed: u64) -> Vec<Ipv6Net> {
    if n == 1 {
        return vec![single_v6()];
    }
    let reserved = reserved_v6();
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = pick_len(V6_MIX, &mut rng);
        let bits = ((rng.next_u64() as u128) << 64 | rng.next_u64() as u128) >> 3;
        let addr = Ipv6Addr::from(bits | 0x2000u128 << 112);
        let net = Ipv6Net::new(addr, len).expect("len <= 128").trunc();
        if reserved
            .iter()
            .any(|r| r.contains(&net.network()) || net.contains(&r.network()))
        {
            continue;
        }
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// A random host inside `net`.
pub fn host_in(net: &IpNet, rng: &mut Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host = (rng.next_u64() as u32) & !u32::from(n.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
        }
        IpNet::V6(n) => {
            let r = (rng.next_u64() as u128) << 64 | rng.next_u64() as u128;
            let host = r & !u128::from(n.netmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
        }
    }
}

/// `count` destinations: each a random host of a random route of `table`. Also returns
/// the routes they were drawn from.
pub fn destinations(table: &[IpNet], count: usize, seed: u64) -> (Vec<IpAddr>, Vec<IpNet>) {
    let mut rng = Rng::new(seed);
    let mut dsts = Vec::with_capacity(count);
    let mut nets = Vec::with_capacity(count);
    for _ in 0..count {
        let net = table[rng.below(table.len() as u64) as usize];
        dsts.push(host_in(&net, &mut rng));
        nets.push(net);
    }
    (dsts, nets)
}

/// Share of each prefix length in `table`, in percent, longest first.
pub fn histogram(table: &[IpNet]) -> Vec<(u8, f64)> {
    let mut counts = [0usize; 129];
    for n in table {
        counts[n.prefix_len() as usize] += 1;
    }
    (0..=128u8)
        .rev()
        .filter(|l| counts[*l as usize] > 0)
        .map(|l| (l, 100.0 * counts[l as usize] as f64 / table.len() as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_reproducible_and_shaped() {
        let a = table_v4(20_000, 7);
        assert_eq!(a, table_v4(20_000, 7));
        let h = histogram(&a.iter().map(|n| IpNet::V4(*n)).collect::<Vec<_>>());
        let p24 = h.iter().find(|(l, _)| *l == 24).unwrap().1;
        assert!((57.0..63.0).contains(&p24), "{p24}");
        let long: f64 = h.iter().filter(|(l, _)| *l > 24).map(|(_, s)| s).sum();
        assert!((2.5..3.5).contains(&long), "{long}");
        assert!(h.iter().any(|(l, _)| *l == 32));
        let b = table_v6(5_000, 7);
        assert!(b.iter().all(|n| n.network().segments()[0] >> 13 == 1));
    }
}
