//! Building our OPEN and checking the peer's (RFC 4271 §6.2, RFC 5492, RFC 6793).

use std::net::SocketAddr;

use super::codec::{
    AS_TRANS, Capability, Family, GrFamily, GracefulRestart, Notification, Open, code, open_sub,
};
use super::config::PeerConfig;
use super::event::SessionInfo;
use super::fsm::keepalive_interval;

/// Our OPEN for this peer: MP for each family, route refresh, 4-octet AS, graceful
/// restart (receiving speaker: no families, R bit clear), extended messages.
pub fn local_open(cfg: &PeerConfig) -> Open {
    let mut capabilities: Vec<Capability> = cfg
        .families()
        .into_iter()
        .map(|f| Capability::Multiprotocol {
            afi: f.afi(),
            safi: f.safi(),
        })
        .collect();
    capabilities.push(Capability::RouteRefresh);
    capabilities.push(Capability::FourOctetAs(cfg.local_as));
    if let Some(t) = cfg.graceful_restart_time {
        // Helper only, unless our forwarding survives a restart: then our families
        // are listed (the peer keeps our routes while we restart) with the F bit.
        let families = if cfg.gr_forwarding_preserved {
            cfg.families()
                .into_iter()
                .map(|f| GrFamily {
                    afi: f.afi(),
                    safi: f.safi(),
                    forwarding_preserved: cfg.gr_restarting,
                })
                .collect()
        } else {
            Vec::new()
        };
        capabilities.push(Capability::GracefulRestart(GracefulRestart {
            restarting: cfg.gr_restarting,
            notification: false,
            restart_time: t.min(4095),
            families,
        }));
    }
    if cfg.extended_message {
        capabilities.push(Capability::ExtendedMessage);
    }
    Open {
        asn: u16::try_from(cfg.local_as).unwrap_or(AS_TRANS),
        hold_time: cfg.hold_time,
        router_id: cfg.router_id,
        capabilities,
    }
}

fn open_error(subcode: u8, data: Vec<u8>) -> Notification {
    Notification::new(code::OPEN, subcode, data)
}

/// Checks the peer's OPEN against our configuration and returns what the session runs
/// with, or the NOTIFICATION to send.
pub fn negotiate(
    cfg: &PeerConfig,
    local: &Open,
    peer: &Open,
    local_addr: SocketAddr,
    remote_addr: SocketAddr,
) -> Result<SessionInfo, Notification> {
    let peer_as = peer.effective_asn();
    if peer_as != cfg.remote_as {
        // RFC 4271 §6.2: Bad Peer AS; RFC 6793 §4: with the 2-octet field as data.
        return Err(open_error(
            open_sub::BAD_PEER_AS,
            peer.asn.to_be_bytes().to_vec(),
        ));
    }
    let ibgp = cfg.is_ibgp();
    if ibgp && peer.router_id == cfg.router_id {
        // RFC 6286 §2.2: identifiers must differ within an AS.
        return Err(open_error(
            open_sub::BAD_BGP_IDENTIFIER,
            peer.router_id.octets().to_vec(),
        ));
    }
    let hold_time = local.hold_time.min(peer.hold_time);
    let has = |want: fn(&Capability) -> bool| peer.capabilities.iter().any(want);
    let peer_mp: Vec<Family> = peer
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Multiprotocol { afi, safi } => Family::from_afi_safi(*afi, *safi),
            _ => None,
        })
        .collect();
    let any_mp = has(|c| matches!(c, Capability::Multiprotocol { .. }));
    // RFC 4760 §8: a peer without MP capabilities speaks IPv4 unicast only.
    let peer_families = if any_mp {
        peer_mp
    } else {
        vec![Family::Ipv4Unicast]
    };
    let families: Vec<Family> = cfg
        .families()
        .into_iter()
        .filter(|f| peer_families.contains(f))
        .collect();
    if families.is_empty() {
        // RFC 5492 §3: Unsupported Capability, listing what we needed.
        let mut data = Vec::new();
        for f in cfg.families() {
            data.extend_from_slice(&[1, 4]);
            data.extend_from_slice(&f.afi().to_be_bytes());
            data.extend_from_slice(&[0, f.safi()]);
        }
        return Err(open_error(open_sub::UNSUPPORTED_CAPABILITY, data));
    }
    let local_has = |want: fn(&Capability) -> bool| local.capabilities.iter().any(want);
    let four_octet_as = has(|c| matches!(c, Capability::FourOctetAs(_)));
    let extended_message = has(|c| matches!(c, Capability::ExtendedMessage))
        && local_has(|c| matches!(c, Capability::ExtendedMessage));
    // 128 is the pre-standard (Cisco) route refresh code, still sent by some.
    let route_refresh = has(|c| {
        matches!(
            c,
            Capability::RouteRefresh | Capability::Unknown { code: 128, .. }
        )
    });
    let peer_graceful_restart = peer.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(gr.clone()),
        _ => None,
    });
    let keepalive = keepalive_interval(cfg.keepalive, hold_time);
    Ok(SessionInfo {
        peer_as,
        peer_router_id: peer.router_id,
        local_addr,
        remote_addr,
        hold_time,
        keepalive,
        ibgp,
        four_octet_as,
        extended_message,
        route_refresh,
        families,
        peer_graceful_restart,
        peer_capabilities: peer.capabilities.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn cfg() -> PeerConfig {
        let mut c = PeerConfig::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            65515,
            4200000001,
            Ipv4Addr::new(10, 0, 0, 1),
        );
        c.hold_time = 180;
        c.keepalive = 60;
        c
    }

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "10.0.0.1:179".parse().unwrap(),
            "10.0.0.2:40000".parse().unwrap(),
        )
    }

    fn peer_open(asn: u32, hold: u16, caps: Vec<Capability>) -> Open {
        let mut capabilities = caps;
        capabilities.push(Capability::FourOctetAs(asn));
        Open {
            asn: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time: hold,
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            capabilities,
        }
    }

    #[test]
    fn local_open_uses_as_trans() {
        let o = local_open(&cfg());
        assert_eq!(o.asn, AS_TRANS);
        assert_eq!(o.effective_asn(), 4200000001);
        assert!(
            o.capabilities
                .contains(&Capability::Multiprotocol { afi: 2, safi: 1 })
        );
        assert!(o.capabilities.contains(&Capability::RouteRefresh));
    }

    #[test]
    fn negotiates_min_hold_and_families() {
        let c = cfg();
        let peer = peer_open(
            65515,
            90,
            vec![
                Capability::Multiprotocol { afi: 1, safi: 1 },
                Capability::RouteRefresh,
            ],
        );
        let (l, r) = addrs();
        let info = negotiate(&c, &local_open(&c), &peer, l, r).unwrap();
        assert_eq!(info.hold_time, 90);
        assert_eq!(info.keepalive, 30);
        assert_eq!(info.families, vec![Family::Ipv4Unicast]);
        assert!(info.four_octet_as && info.route_refresh && !info.extended_message && !info.ibgp);
    }

    #[test]
    fn route_server_timers() {
        let c = cfg();
        let peer = peer_open(65515, 180, vec![]);
        let (l, r) = addrs();
        let info = negotiate(&c, &local_open(&c), &peer, l, r).unwrap();
        assert_eq!((info.hold_time, info.keepalive), (180, 60));
        // No MP capability at all: IPv4 unicast.
        assert_eq!(info.families, vec![Family::Ipv4Unicast]);
    }

    #[test]
    fn bad_peer_as() {
        let c = cfg();
        let (l, r) = addrs();
        let err = negotiate(&c, &local_open(&c), &peer_open(65000, 90, vec![]), l, r).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 2));
        // A 2-octet speaker (no capability) with the right AS is fine.
        let mut old = peer_open(65515, 90, vec![]);
        old.capabilities.clear();
        let info = negotiate(&c, &local_open(&c), &old, l, r).unwrap();
        assert!(!info.four_octet_as);
    }

    #[test]
    fn no_common_family_is_unsupported_capability() {
        let mut c = cfg();
        c.families = vec![crate::bgp::config::FamilyName::Ipv6Unicast];
        let peer = peer_open(
            65515,
            90,
            vec![Capability::Multiprotocol { afi: 1, safi: 1 }],
        );
        let (l, r) = addrs();
        let err = negotiate(&c, &local_open(&c), &peer, l, r).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 7));
        assert_eq!(err.data, vec![1, 4, 0, 2, 0, 1]);
    }

    #[test]
    fn ibgp_same_router_id_rejected() {
        let mut c = cfg();
        c.remote_as = c.local_as;
        c.router_id = Ipv4Addr::new(10, 0, 0, 2);
        let (l, r) = addrs();
        let err = negotiate(
            &c,
            &local_open(&c),
            &peer_open(4200000001, 90, vec![]),
            l,
            r,
        )
        .unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 3));
    }
}
