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
