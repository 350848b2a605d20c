//! Turning a received UPDATE into routes for the owner: next hop per family, the
//! AS-path loop check, and the optional first-AS check. No policy here.

use std::sync::Arc;

use ipnet::IpNet;

use super::codec::{Family, NextHop, PathAttrs, Update};

#[derive(Clone, Debug)]
pub struct ImportCtx {
    pub local_as: u32,
    pub peer_as: u32,
    pub ibgp: bool,
    pub enforce_first_as: bool,
    /// Negotiated families; routes of others are ignored.
    pub families: Vec<Family>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub announced: Vec<(IpNet, Arc<PathAttrs>)>,
    pub withdrawn: Vec<IpNet>,
    pub end_of_rib: Option<Family>,
    /// Prefixes dropped by the loop / first-AS checks (already in `withdrawn`).
    pub rejected: usize,
    /// Announced prefixes that no router forwards to (loopback, multicast, reserved,
    /// link-local, "this network"), ignored as BIRD does ("bogus route"); already in
    /// `withdrawn`.
    pub martian: usize,
}

/// A destination prefix no router forwards to: its network address is loopback
/// (127/8, ::1), multicast (224/4, ff00::/8), reserved (240/4), IPv4 "this network"
/// (0/8) or IPv6 unspecified (except the default routes 0.0.0.0/0 and ::/0), or IPv6
/// link-local (fe80::/10).
pub fn martian(prefix: &IpNet) -> bool {
    match prefix {
        IpNet::V4(p) => {
            let first = p.network().octets()[0];
            first == 127 || first >= 224 || (first == 0 && p.prefix_len() > 0)
        }
        IpNet::V6(p) => {
            let a = p.network();
            a.is_multicast()
                || a.is_loopback()
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || (a.is_unspecified() && p.prefix_len() > 0)
        }
    }
}

pub fn import_update(update: Update, ctx: &ImportCtx) -> Imported {
    let mut out = Imported {
        end_of_rib: update.end_of_rib(),
        ..Imported::default()
    };
    if out.end_of_rib.is_some() {
        return out;
    }
    let wanted = |p: &IpNet| ctx.families.contains(&Family::of(p));
    out.withdrawn = update.all_withdrawn().filter(wanted).collect();
    let Some(attrs) = &update.attrs else {
        return out;
    };
    // Our own AS in the path: a loop (routes reflected back, e.g. by a route server).
    // Also, RFC 7606 §6: a wrong first AS is treat-as-withdraw. Either way the prefixes
    // are withdrawn quietly, replacing any earlier route for them.
    let reject = attrs.as_path.contains(ctx.local_as)
        || (ctx.enforce_first_as && !ctx.ibgp && attrs.as_path.first_as() != Some(ctx.peer_as));
    let classic: Vec<IpNet> = update
        .nlri
        .iter()
        .map(|&n| IpNet::V4(n))
        .filter(wanted)
        .collect();
    let mp: Vec<IpNet> = update
        .mp_reach
        .iter()
        .flat_map(|m| m.nlri.iter().copied())
        .filter(wanted)
        .collect();
    if reject {
        out.rejected = classic.len() + mp.len();
        out.withdrawn.extend(classic);
        out.withdrawn.extend(mp);
        return out;
    }
    // Martians are ignored (and withdrawn, should an earlier version be in the RIB).
    let (classic, bogus): (Vec<IpNet>, Vec<IpNet>) = classic.into_iter().partition(|p| !martian(p));
    let (mp, bogus_mp): (Vec<IpNet>, Vec<IpNet>) = mp.into_iter().partition(|p| !martian(p));
    out.martian = bogus.len() + bogus_mp.len();
    out.withdrawn.extend(bogus);
    out.withdrawn.extend(bogus_mp);
    if !classic.is_empty() {
        let a = Arc::new(attrs.clone());
        out.announced
            .extend(classic.into_iter().map(|p| (p, a.clone())));
    }
    if let (Some(m), false) = (&update.mp_reach, mp.is_empty()) {
        let mut a = attrs.clone();
        a.next_hop = Some(m.next_hop);
        let a = Arc::new(a);
        out.announced.extend(mp.into_iter().map(|p| (p, a.clone())));
    }
    out
}

/// The forwarding address of a next hop, for logs and tests.
pub fn next_hop_addr(nh: &Option<NextHop>) -> Option<std::net::IpAddr> {
    nh.as_ref().map(NextHop::addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::{AsPath, MpReach, MpUnreach};
    use std::net::Ipv4Addr;

    fn ctx() -> ImportCtx {
        ImportCtx {
            local_as: 65001,
            peer_as: 65515,
            ibgp: false,
            enforce_first_as: false,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        }
    }

    fn attrs(path: &[u32]) -> PathAttrs {
        PathAttrs {
            as_path: AsPath::from_sequence(path.iter().copied()),
            next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2))),
            ..PathAttrs::default()
        }
    }

    #[test]
    fn splits_families_and_next_hops() {
        let v6nh = NextHop::V6 {
            global: "2001:db8::2".parse().unwrap(),
            link_local: None,
        };
        let u = Update {
            attrs: Some(attrs(&[65515])),
            nlri: vec!["192.0.2.0/24".parse().unwrap()],
            mp_reach: Some(MpReach {
                family: Family::Ipv6Unicast,
                next_hop: v6nh,
                nlri: vec!["2001:db8:1::/48".parse().unwrap()],
            }),
            mp_unreach: Some(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: vec!["2001:db8:9::/48".parse().unwrap()],
            }),
            withdrawn: vec!["198.51.100.0/24".parse().unwrap()],
        };
        let out = import_update(u, &ctx());
        assert_eq!(out.announced.len(), 2);
        assert_eq!(
            out.announced[0].1.next_hop,
            Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert_eq!(out.announced[1].1.next_hop, Some(v6nh));
        assert_eq!(out.withdrawn.len(), 2);
    }

    /// Loopback, multicast, reserved and link-local destinations are never routes
    /// (before, nva installed 127.0.0.0/8 from a peer); default routes are.
    #[test]
    fn martian_prefixes_are_ignored_and_counted() {
        let v6nh = NextHop::V6 {
            global: "2001:db8::2".parse().unwrap(),
            link_local: None,
        };
        let u = Update {
            attrs: Some(attrs(&[65515])),
            nlri: [
                "127.0.0.0/8",
                "127.1.2.0/24",
                "224.0.0.0/4",
                "240.0.0.0/4",
                "0.1.0.0/16",
            ]
            .iter()
            .chain(&["0.0.0.0/0", "126.0.0.0/8", "223.255.255.0/24"])
            .map(|s| s.parse().unwrap())
            .collect(),
            mp_reach: Some(MpReach {
                family: Family::Ipv6Unicast,
                next_hop: v6nh,
                nlri: [
                    "::1/128",
                    "ff02::/16",
                    "fe80::/64",
                    "::/8",
                    "::/0",
                    "2001:db8::/32",
                ]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            }),
            mp_unreach: None,
            withdrawn: vec![],
        };
        let out = import_update(u, &ctx());
        let announced: Vec<String> = out.announced.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            announced,
            [
                "0.0.0.0/0",
                "126.0.0.0/8",
                "223.255.255.0/24",
                "::/0",
                "2001:db8::/32"
            ]
        );
        assert_eq!(out.martian, 9);
        assert_eq!(out.withdrawn.len(), 9);
    }

    #[test]
    fn loop_check_withdraws_quietly() {
        let u = Update {
            attrs: Some(attrs(&[65515, 65001, 65010])),
            nlri: vec!["192.0.2.0/24".parse().unwrap()],
            ..Update::default()
        };
        let out = import_update(u, &ctx());
        assert!(out.announced.is_empty());
        assert_eq!(
            out.withdrawn,
            vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(out.rejected, 1);
    }

    #[test]
    fn first_as_check_is_optional() {
        let u = Update {
            attrs: Some(attrs(&[65010])),
            nlri: vec!["192.0.2.0/24".parse().unwrap()],
            ..Update::default()
        };
        assert_eq!(import_update(u.clone(), &ctx()).announced.len(), 1);
        let strict = ImportCtx {
            enforce_first_as: true,
            ..ctx()
        };
        assert_eq!(import_update(u, &strict).rejected, 1);
    }

    #[test]
    fn unnegotiated_family_ignored_and_eor() {
        let only4 = ImportCtx {
            families: vec![Family::Ipv4Unicast],
            ..ctx()
        };
        let u = Update {
            mp_unreach: Some(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: vec!["2001:db8::/32".parse().unwrap()],
            }),
            ..Update::default()
        };
        assert!(import_update(u, &only4).withdrawn.is_empty());
        assert_eq!(
            import_update(Update::default(), &only4).end_of_rib,
            Some(Family::Ipv4Unicast)
        );
    }
}
