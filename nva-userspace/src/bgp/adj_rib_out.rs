//! What we advertise to one peer: the routes the owner asked for (kept across
//! reconnects, re-sent on ROUTE-REFRESH) and their encoding into UPDATE messages.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;
use tracing::warn;

use super::codec::{self, CodecCtx, Family, PathAttrs};
use super::export::{ExportCtx, export_attrs};

#[derive(Default)]
pub struct AdjRibOut {
    routes: HashMap<IpNet, Arc<PathAttrs>>,
}

impl AdjRibOut {
    /// Records announcements (replacing earlier ones for the same prefixes).
    pub fn announce(&mut self, routes: &[(IpNet, Arc<PathAttrs>)]) {
        for (p, a) in routes {
            self.routes.insert(p.trunc(), a.clone());
        }
    }

    /// Forgets prefixes; returns those that were announced.
    pub fn withdraw(&mut self, prefixes: &[IpNet]) -> Vec<IpNet> {
        prefixes
            .iter()
            .map(IpNet::trunc)
            .filter(|p| self.routes.remove(p).is_some())
            .collect()
    }

    /// Every route, or those of one family.
    pub fn routes(&self, family: Option<Family>) -> Vec<(IpNet, Arc<PathAttrs>)> {
        self.routes
            .iter()
            .filter(|(p, _)| family.is_none_or(|f| Family::of(p) == f))
            .map(|(p, a)| (*p, a.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// UPDATE messages for `routes`: grouped by attributes, the protocol's export rules
/// applied, packed to the maximum size. Routes of families not in `families` are
/// skipped; routes that must not be sent (e.g. NO_EXPORT to eBGP) are withdrawn instead,
/// in case an earlier version was sent.
pub fn announcements(
    routes: &[(IpNet, Arc<PathAttrs>)],
    families: &[Family],
    export: &ExportCtx,
    ctx: &CodecCtx,
) -> Vec<Vec<u8>> {
    let mut groups: HashMap<(Family, Arc<PathAttrs>), Vec<IpNet>> = HashMap::new();
    for (p, a) in routes {
        let f = Family::of(p);
        if families.contains(&f) {
            groups.entry((f, a.clone())).or_default().push(*p);
        }
    }
    let mut out = Vec::new();
    let mut unsendable = Vec::new();
    for ((family, attrs), prefixes) in groups {
        let Some(attrs) = export_attrs(&attrs, family, export) else {
            unsendable.extend(prefixes);
            continue;
        };
        let v6_next_hop = if family == Family::Ipv6Unicast {
            attrs.next_hop
        } else {
            None
        };
        match codec::announce_messages(&attrs, &prefixes, v6_next_hop, ctx) {
            Ok(msgs) => out.extend(msgs),
            Err(e) => warn!(error = %e, prefixes = prefixes.len(), "cannot encode announcement"),
        }
    }
    out.extend(withdrawals(&unsendable, families, ctx));
    out
}

/// UPDATE messages withdrawing `prefixes` (those of negotiated families).
pub fn withdrawals(prefixes: &[IpNet], families: &[Family], ctx: &CodecCtx) -> Vec<Vec<u8>> {
    let prefixes: Vec<IpNet> = prefixes
        .iter()
        .copied()
        .filter(|p| families.contains(&Family::of(p)))
        .collect();
    if prefixes.is_empty() {
        return Vec::new();
    }
    codec::withdraw_messages(&prefixes, ctx).unwrap_or_else(|e| {
        warn!(error = %e, "cannot encode withdrawal");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::codec::{AsPath, Community, Message, decode_message};

    fn ectx() -> ExportCtx {
        ExportCtx {
            local_as: 65001,
            ibgp: false,
            local_addr: "10.0.0.1".parse().unwrap(),
            next_hop_v4: None,
            next_hop_v6: Some("2001:db8::1".parse().unwrap()),
        }
    }

    fn decode_all(msgs: &[Vec<u8>]) -> (Vec<IpNet>, Vec<IpNet>) {
        let (mut ann, mut wd) = (Vec::new(), Vec::new());
        for m in msgs {
            let Ok(Message::Update(u)) = decode_message(m, &CodecCtx::default()) else {
                panic!()
            };
            ann.extend(u.all_announced().map(|(p, _)| p));
            wd.extend(u.all_withdrawn());
        }
        ann.sort();
        wd.sort();
        (ann, wd)
    }

    #[test]
    fn keeps_routes_across_sessions() {
        let a = Arc::new(PathAttrs::default());
        let mut rib = AdjRibOut::default();
        rib.announce(&[
            ("10.0.0.0/8".parse().unwrap(), a.clone()),
            ("2001:db8::/32".parse().unwrap(), a),
        ]);
        assert_eq!(rib.len(), 2);
        assert_eq!(rib.routes(Some(Family::Ipv6Unicast)).len(), 1);
        // Host bits do not make a different prefix.
        assert_eq!(
            rib.withdraw(&[
                "10.1.2.3/8".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap()
            ])
            .len(),
            1
        );
        assert_eq!(rib.len(), 1);
    }

    #[test]
    fn groups_exports_and_withdraws_unsendable() {
        let plain = Arc::new(PathAttrs {
            as_path: AsPath::from_sequence([65100]),
            ..PathAttrs::default()
        });
        let no_export = Arc::new(PathAttrs {
            communities: vec![Community::NO_EXPORT],
            ..PathAttrs::default()
        });
        let routes = vec![
            ("10.1.0.0/16".parse().unwrap(), plain.clone()),
            ("10.2.0.0/16".parse().unwrap(), plain.clone()),
            ("2001:db8:1::/48".parse().unwrap(), plain),
            ("10.3.0.0/16".parse().unwrap(), no_export),
        ];
        let families = [Family::Ipv4Unicast, Family::Ipv6Unicast];
        let msgs = announcements(&routes, &families, &ectx(), &CodecCtx::default());
        // One UPDATE per family for the shared attributes, one withdrawal.
        assert_eq!(msgs.len(), 3);
        let (ann, wd) = decode_all(&msgs);
        assert_eq!(ann.len(), 3);
        assert_eq!(wd, vec!["10.3.0.0/16".parse::<IpNet>().unwrap()]);
        // Only IPv4 negotiated: the IPv6 route is not sent at all.
        let msgs = announcements(
            &routes,
            &[Family::Ipv4Unicast],
            &ectx(),
            &CodecCtx::default(),
        );
        assert_eq!(decode_all(&msgs).0.len(), 2);
    }
}
