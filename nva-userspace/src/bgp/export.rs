//! What the protocol itself requires of routes we send (RFC 4271 §5, RFC 1997):
//! next-hop-self when no next hop is given, our AS prepended and LOCAL_PREF removed
//! towards eBGP peers, LOCAL_PREF present towards iBGP peers, and the well-known
//! communities NO_ADVERTISE / NO_EXPORT(_SUBCONFED) honoured. Policy is the caller's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::codec::{Community, Family, NextHop, PathAttrs};

#[derive(Clone, Debug)]
pub struct ExportCtx {
    pub local_as: u32,
    pub ibgp: bool,
    /// Our address on the session (next-hop-self for its own family).
    pub local_addr: IpAddr,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// The attributes to send for a route of `family`, or `None` if it must not be sent
/// (well-known community, or no usable next hop).
pub fn export_attrs(attrs: &PathAttrs, family: Family, ctx: &ExportCtx) -> Option<PathAttrs> {
    if attrs.has_community(Community::NO_ADVERTISE) {
        return None;
    }
    if !ctx.ibgp
        && (attrs.has_community(Community::NO_EXPORT)
            || attrs.has_community(Community::NO_EXPORT_SUBCONFED))
    {
        return None;
    }
    let mut a = attrs.clone();
    if ctx.ibgp {
        a.local_pref.get_or_insert(DEFAULT_LOCAL_PREF);
    } else {
        a.local_pref = None;
        // We are not in a confederation: confederation segments never leave us.
        a.as_path.segments.retain(|s| !s.is_confed());
        a.as_path.prepend(ctx.local_as, 1);
    }
    a.next_hop = match (family, a.next_hop) {
        (Family::Ipv4Unicast, Some(nh @ NextHop::V4(_))) => Some(nh),
        (Family::Ipv6Unicast, Some(nh @ NextHop::V6 { .. })) => Some(nh),
        (Family::Ipv4Unicast, _) => match ctx.local_addr {
            IpAddr::V4(a) => Some(NextHop::V4(a)),
            IpAddr::V6(a) => a.to_ipv4_mapped().or(ctx.next_hop_v4).map(NextHop::V4),
        },
        (Family::Ipv6Unicast, _) => match ctx.local_addr {
            IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => Some(NextHop::V6 {
                global: a,
                link_local: None,
            }),
            _ => ctx.next_hop_v6.map(|global| NextHop::V6 {
                global,
                link_local: None,
            }),
        },
    };
    a.next_hop?;
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::AsPath;

    fn ctx(ibgp: bool) -> ExportCtx {
        ExportCtx {
            local_as: 65001,
            ibgp,
            local_addr: "10.0.0.1".parse().unwrap(),
            next_hop_v4: None,
            next_hop_v6: Some("2001:db8::1".parse().unwrap()),
        }
    }

    #[test]
    fn ebgp_prepends_and_sets_next_hop_self() {
        let a = PathAttrs {
            as_path: AsPath::from_sequence([65010]),
            local_pref: Some(200),
            ..PathAttrs::default()
        };
        let out = export_attrs(&a, Family::Ipv4Unicast, &ctx(false)).unwrap();
        assert_eq!(out.as_path, AsPath::from_sequence([65001, 65010]));
        assert_eq!(out.local_pref, None);
        assert_eq!(out.next_hop, Some(NextHop::V4("10.0.0.1".parse().unwrap())));
        let out6 = export_attrs(&a, Family::Ipv6Unicast, &ctx(false)).unwrap();
        assert_eq!(
            out6.next_hop.unwrap().addr(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ibgp_keeps_path_and_adds_local_pref() {
        let a = PathAttrs::default();
        let out = export_attrs(&a, Family::Ipv4Unicast, &ctx(true)).unwrap();
        assert!(out.as_path.is_empty());
        assert_eq!(out.local_pref, Some(100));
    }

    #[test]
    fn well_known_communities() {
        let mut a = PathAttrs {
            communities: vec![Community::NO_EXPORT],
            ..PathAttrs::default()
        };
        assert!(export_attrs(&a, Family::Ipv4Unicast, &ctx(false)).is_none());
        assert!(export_attrs(&a, Family::Ipv4Unicast, &ctx(true)).is_some());
        a.communities = vec![Community::NO_ADVERTISE];
        assert!(export_attrs(&a, Family::Ipv4Unicast, &ctx(true)).is_none());
    }

    #[test]
    fn no_v6_next_hop_means_not_sent() {
        let mut c = ctx(false);
        c.next_hop_v6 = None;
        assert!(export_attrs(&PathAttrs::default(), Family::Ipv6Unicast, &c).is_none());
    }
}
