//! Codec tests: bytes captured from BIRD 2.0.12 and GoBGP 3.10 on this machine, error
//! actions, and encode/decode round trips.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const FOUR: CodecCtx = CodecCtx {
    four_octet_as: true,
    extended_message: false,
    ibgp: false,
};
const TWO: CodecCtx = CodecCtx {
    four_octet_as: false,
    extended_message: false,
    ibgp: false,
};

fn update(bytes: &[u8], ctx: &CodecCtx) -> Update {
    match decode_message(bytes, ctx) {
        Ok(Message::Update(u)) => u,
        other => panic!("not an update: {other:?}"),
    }
}

fn reset(bytes: &[u8], ctx: &CodecCtx) -> (u8, u8) {
    match decode_message(bytes, ctx) {
        Err(DecodeError::SessionReset(n)) => (n.code, n.subcode),
        other => panic!("expected a session reset, got {other:?}"),
    }
}

/// Builds an UPDATE from raw withdrawn / attribute / NLRI fields.
fn raw_update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    m
}

const ORIGIN_IGP: &[u8] = &[0x40, 1, 1, 0];
const PATH_65002: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xea];
const NH_10_0_0_2: &[u8] = &[0x40, 3, 4, 10, 0, 0, 2];
const NLRI_192_0_2: &[u8] = &[24, 192, 0, 2];

fn attrs_with(extra: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for a in extra {
        v.extend_from_slice(a);
    }
    v
}

// ---- captured bytes ----

/// BIRD 2.0.12 OPEN: AS 4200000002 (AS_TRANS in the header), hold 240, MP v4+v6, route
/// refresh, graceful restart 120 s, 4-octet AS, enhanced route refresh, LLGR.
const BIRD_OPEN: &str = "ffffffffffffffffffffffffffffffff004301045ba000f00a000002260224010400010001010400020001\
    0200400a007800010100000201004104fa56ea0246004700";

#[test]
fn bird_open() {
    let bytes = hex(BIRD_OPEN);
    let Ok(Message::Open(open)) = decode_message(&bytes, &CodecCtx::default()) else {
        panic!()
    };
    assert_eq!(open.asn, AS_TRANS);
    assert_eq!(open.effective_asn(), 4200000002);
    assert_eq!(open.hold_time, 240);
    assert_eq!(open.router_id, Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::Multiprotocol { afi: 2, safi: 1 },
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                notification: false,
                restart_time: 120,
                families: vec![
                    GrFamily {
                        afi: 1,
                        safi: 1,
                        forwarding_preserved: false
                    },
                    GrFamily {
                        afi: 2,
                        safi: 1,
                        forwarding_preserved: false
                    },
                ],
            }),
            Capability::FourOctetAs(4200000002),
            Capability::Unknown {
                code: 70,
                value: vec![]
            },
            Capability::Unknown {
                code: 71,
                value: vec![]
            },
        ]
    );
    // Byte-exact re-encoding (one capabilities parameter, same order).
    assert_eq!(
        encode_message(&Message::Open(open), &CodecCtx::default()).unwrap(),
        bytes
    );
}

#[test]
fn bird_ipv4_update_with_communities() {
    let bytes = hex(
        "ffffffffffffffffffffffffffffffff0046020000002a400101004002060201fa56ea024003040a000002\
         c00804fdea0064c0200c0000fdea000000010000000219c6336400",
    );
    let u = update(&bytes, &FOUR);
    assert_eq!(u.nlri, vec!["198.51.100.0/25".parse().unwrap()]);
    let a = u.attrs.as_ref().unwrap();
    assert_eq!(a.origin, Origin::Igp);
    assert_eq!(a.as_path, AsPath::from_sequence([4200000002]));
    assert_eq!(a.next_hop, Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2))));
    assert_eq!(a.communities, vec![Community::new(65002, 100)]);
    assert_eq!(
        a.large_communities,
        vec![LargeCommunity {
            global: 65002,
            local1: 1,
            local2: 2
        }]
    );
    assert_eq!(encode_message(&Message::Update(u), &FOUR).unwrap(), bytes);
}

#[test]
fn bird_ipv6_update_and_end_of_rib() {
    let bytes = hex(
        "ffffffffffffffffffffffffffffffff0044020000002d900e001c0002011020010db80000000000000000\
         00000002003020010db80001400101004002060201fa56ea02",
    );
    let u = update(&bytes, &FOUR);
    let mp = u.mp_reach.as_ref().unwrap();
    assert_eq!(mp.family, Family::Ipv6Unicast);
    assert_eq!(mp.nlri, vec![net("2001:db8:1::/48")]);
    let global: Ipv6Addr = "2001:db8::2".parse().unwrap();
    assert_eq!(
        mp.next_hop,
        NextHop::V6 {
            global,
            link_local: None
        }
    );
    assert_eq!(u.all_announced().count(), 1);
    // BIRD sets the extended-length flag on every MP_REACH_NLRI; we only when needed.
    let ours = encode_message(&Message::Update(u.clone()), &FOUR).unwrap();
    assert_eq!(ours.len() + 1, bytes.len());
    assert_eq!(update(&ours, &FOUR), u);

    let eor4 = hex("ffffffffffffffffffffffffffffffff00170200000000");
    assert_eq!(update(&eor4, &FOUR).end_of_rib(), Some(Family::Ipv4Unicast));
    let eor6 = hex("ffffffffffffffffffffffffffffffff001d0200000006800f03000201");
    assert_eq!(update(&eor6, &FOUR).end_of_rib(), Some(Family::Ipv6Unicast));
    assert_eq!(end_of_rib_message(Family::Ipv6Unicast, &FOUR), eor6);
    assert_eq!(end_of_rib_message(Family::Ipv4Unicast, &FOUR), eor4);
}

#[test]
fn gobgp_messages() {
    // OPEN with FQDN (73) and extended next hop (5) capabilities, kept as unknown.
    let open = hex(
        "ffffffffffffffffffffffffffffffff00410104fdeb005a0a0000022402220200490402766d0001040001\
         000101040002000141040000fdeb0506000100010002",
    );
    let Ok(Message::Open(o)) = decode_message(&open, &CodecCtx::default()) else {
        panic!()
    };
    assert_eq!(o.effective_asn(), 65003);
    assert!(
        o.capabilities
            .iter()
            .any(|c| matches!(c, Capability::Unknown { code: 73, .. }))
    );
    assert_eq!(
        encode_message(&Message::Open(o), &CodecCtx::default()).unwrap(),
        open
    );

    let u = update(
        &hex(
            "ffffffffffffffffffffffffffffffff003e02000000234001010040020e02030000fdeb0000fdf2fa56\
             ea01c00804fdeb00074003040a00000218cb0071",
        ),
        &FOUR,
    );
    let a = u.attrs.unwrap();
    assert_eq!(a.as_path, AsPath::from_sequence([65003, 65010, 4200000001]));
    assert_eq!(a.as_path.path_len(), 3);
    assert_eq!(a.communities, vec![Community::new(65003, 7)]);

    // MP_REACH after AS_PATH; ORIGIN incomplete.
    let u = update(
        &hex(
            "ffffffffffffffffffffffffffffffff0043020000002c4001010240020602010000fdeb800e1c000201\
             1020010db8000000000000000000000002003020010db80002",
        ),
        &FOUR,
    );
    assert_eq!(u.attrs.as_ref().unwrap().origin, Origin::Incomplete);
    assert_eq!(u.mp_reach.unwrap().nlri, vec![net("2001:db8:2::/48")]);

    let Ok(Message::Notification(n)) =
        decode_message(&hex("ffffffffffffffffffffffffffffffff0015030603"), &FOUR)
    else {
        panic!()
    };
    assert_eq!(
        (n.code, n.subcode),
        (code::CEASE, cease_sub::PEER_DECONFIGURED)
    );
}

#[test]
fn ipv6_next_hop_with_link_local() {
    // RFC 2545: 32-byte next hop, global then link-local, as BIRD sends on a shared link.
    let mut mp =
        hex("0002012020010db8000000000000000000000001fe80000000000000000000fffe000001002020010db8");
    let mut attr = vec![0x90, 14];
    attr.extend_from_slice(&(mp.len() as u16).to_be_bytes());
    attr.append(&mut mp);
    let msg = raw_update(&[], &attrs_with(&[&attr, ORIGIN_IGP, PATH_65002]), &[]);
    let u = update(&msg, &FOUR);
    let m = u.mp_reach.unwrap();
    assert_eq!(
        m.next_hop,
        NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: Some("fe80::ff:fe00:1".parse().unwrap())
        }
    );
    assert_eq!(m.nlri, vec![net("2001:db8::/32")]);
}

// ---- header and message-level errors ----

#[test]
fn header_errors() {
    let mut ka = hex("ffffffffffffffffffffffffffffffff001304");
    assert_eq!(decode_message(&ka, &FOUR), Ok(Message::Keepalive));
    ka[3] = 0;
    assert_eq!(reset(&ka, &FOUR), (1, 1));
    let long_ka = hex("ffffffffffffffffffffffffffffffff00140400");
    assert_eq!(reset(&long_ka, &FOUR), (1, 2));
    let Err(DecodeError::SessionReset(n)) = decode_message(&long_ka, &FOUR) else {
        panic!()
    };
    assert_eq!(n.data, vec![0, 0x14]);
    assert_eq!(
        reset(&hex("ffffffffffffffffffffffffffffffff001309"), &FOUR),
        (1, 3)
    );
    assert_eq!(
        reset(&hex("ffffffffffffffffffffffffffffffff001202"), &FOUR),
        (1, 2)
    );
    // 5000 bytes: too long without extended messages, fine with them.
    let mut big = raw_update(&[], &[], &[]);
    big.resize(5000, 0);
    big[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert_eq!(
        parse_header(&big, MAX_MESSAGE_LEN),
        Some(Err(Notification::new(1, 2, vec![0x13, 0x88])))
    );
    assert!(
        parse_header(&big, MAX_EXTENDED_MESSAGE_LEN)
            .unwrap()
            .is_ok()
    );
    assert_eq!(parse_header(&big[..10], MAX_MESSAGE_LEN), None);
    // ROUTE-REFRESH with a wrong length: 7/1 (RFC 7313).
    assert_eq!(
        reset(
            &hex("ffffffffffffffffffffffffffffffff0016050001000000"[..44].as_ref()),
            &FOUR
        ),
        (7, 1)
    );
}

#[test]
fn open_errors() {
    let mut open = hex(BIRD_OPEN);
    open[19] = 3;
    assert_eq!(reset(&open, &FOUR), (2, 1));
    let mut open = hex(BIRD_OPEN);
    open[22..24].copy_from_slice(&[0, 2]);
    assert_eq!(reset(&open, &FOUR), (2, 6));
    let mut open = hex(BIRD_OPEN);
    open[24..28].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(reset(&open, &FOUR), (2, 3));
    let mut open = hex(BIRD_OPEN);
    open[29] = 1; // optional parameter type 1 (deprecated authentication)
    assert_eq!(reset(&open, &FOUR), (2, 4));
    let mut open = hex(BIRD_OPEN);
    open[30] = 0x30; // parameter length overruns
    assert_eq!(reset(&open, &FOUR), (2, 0));
    let mut open = hex(BIRD_OPEN);
    let n = open.len();
    open[n - 9] = 3; // 4-octet AS capability of length 3
    assert_eq!(reset(&open, &FOUR), (2, 0));
}

#[test]
fn open_with_many_capabilities_uses_extended_parameters() {
    let open = Open {
        asn: 65001,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: (0..60)
            .map(|i| Capability::Unknown {
                code: 200,
                value: vec![i; 3],
            })
            .collect(),
    };
    let bytes = encode_message(&Message::Open(open.clone()), &FOUR).unwrap();
    assert_eq!(bytes[28], 255);
    assert_eq!(bytes[29], 255);
    assert_eq!(decode_message(&bytes, &FOUR), Ok(Message::Open(open)));
}

// ---- UPDATE errors (RFC 7606) ----

#[test]
fn malformed_origin_is_treat_as_withdraw() {
    let msg = raw_update(
        &[16, 10, 1],
        &attrs_with(&[&[0x40, 1, 1, 7], PATH_65002, NH_10_0_0_2]),
        NLRI_192_0_2,
    );
    match decode_message(&msg, &FOUR) {
        Err(DecodeError::TreatAsWithdraw { withdrawn, error }) => {
            assert_eq!(withdrawn, vec![net("10.1.0.0/16"), net("192.0.2.0/24")]);
            assert_eq!(error.type_code, attr_type::ORIGIN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn treat_as_withdraw_cases() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing NEXT_HOP", attrs_with(&[ORIGIN_IGP, PATH_65002])),
        ("missing ORIGIN", attrs_with(&[PATH_65002, NH_10_0_0_2])),
        ("missing AS_PATH", attrs_with(&[ORIGIN_IGP, NH_10_0_0_2])),
        (
            "bad AS_PATH segment",
            attrs_with(&[ORIGIN_IGP, &[0x40, 2, 2, 2, 0], NH_10_0_0_2]),
        ),
        (
            "AS_CONFED_SEQUENCE",
            attrs_with(&[
                ORIGIN_IGP,
                &[0x40, 2, 6, 3, 1, 0, 0, 0xfd, 0xe9],
                NH_10_0_0_2,
            ]),
        ),
        (
            "NEXT_HOP length",
            attrs_with(&[ORIGIN_IGP, PATH_65002, &[0x40, 3, 3, 10, 0, 0]]),
        ),
        (
            "NEXT_HOP 0.0.0.0",
            attrs_with(&[ORIGIN_IGP, PATH_65002, &[0x40, 3, 4, 0, 0, 0, 0]]),
        ),
        (
            "MED length",
            attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2, &[0x80, 4, 2, 0, 1]]),
        ),
        (
            "MED flags",
            attrs_with(&[
                ORIGIN_IGP,
                PATH_65002,
                NH_10_0_0_2,
                &[0x40, 4, 4, 0, 0, 0, 1],
            ]),
        ),
        (
            "COMMUNITIES length",
            attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2, &[0xc0, 8, 3, 1, 2, 3]]),
        ),
        (
            "LARGE_COMMUNITY length",
            attrs_with(&[
                ORIGIN_IGP,
                PATH_65002,
                NH_10_0_0_2,
                &[0xc0, 32, 4, 1, 2, 3, 4],
            ]),
        ),
        (
            "ORIGIN flags",
            attrs_with(&[&[0xc0, 1, 1, 0], PATH_65002, NH_10_0_0_2]),
        ),
        (
            "attribute overrun",
            attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2, &[0xc0, 8, 9, 1, 2]]),
        ),
        ("no attributes at all", vec![]),
    ];
    for (what, attrs) in cases {
        let msg = raw_update(&[], &attrs, NLRI_192_0_2);
        match decode_message(&msg, &FOUR) {
            Err(DecodeError::TreatAsWithdraw { withdrawn, .. }) => {
                assert_eq!(withdrawn, vec![net("192.0.2.0/24")], "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn ibgp_requires_local_pref_and_ebgp_ignores_it() {
    let ibgp = CodecCtx { ibgp: true, ..FOUR };
    let msg = raw_update(
        &[],
        &attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2]),
        NLRI_192_0_2,
    );
    assert!(matches!(
        decode_message(&msg, &ibgp),
        Err(DecodeError::TreatAsWithdraw { .. })
    ));
    let lp: &[u8] = &[0x40, 5, 4, 0, 0, 0, 200];
    let msg = raw_update(
        &[],
        &attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2, lp]),
        NLRI_192_0_2,
    );
    assert_eq!(update(&msg, &ibgp).attrs.unwrap().local_pref, Some(200));
    assert_eq!(update(&msg, &FOUR).attrs.unwrap().local_pref, None);
}

#[test]
fn missing_attributes_on_mp_reach_withdraw_ipv6() {
    let mp = hex("900e001c0002011020010db8000000000000000000000002003020010db80001");
    let msg = raw_update(&[], &attrs_with(&[&mp, PATH_65002]), &[]);
    match decode_message(&msg, &FOUR) {
        Err(DecodeError::TreatAsWithdraw { withdrawn, error }) => {
            assert_eq!(withdrawn, vec![net("2001:db8:1::/48")]);
            assert_eq!(error.type_code, attr_type::ORIGIN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn attribute_discard_cases() {
    let base = [ORIGIN_IGP, PATH_65002, NH_10_0_0_2];
    for (what, bad) in [
        ("ATOMIC_AGGREGATE length", vec![0x40, 6, 1, 0]),
        ("AGGREGATOR length", vec![0xc0, 7, 4, 0, 1, 2, 3]),
        ("duplicate ORIGIN", vec![0x40, 1, 1, 2]),
    ] {
        let mut list: Vec<&[u8]> = base.to_vec();
        list.push(&bad);
        let msg = raw_update(&[], &attrs_with(&list), NLRI_192_0_2);
        match decode_message(&msg, &FOUR) {
            Err(DecodeError::AttributeDiscard { update, discarded }) => {
                assert_eq!(discarded.len(), 1, "{what}");
                let a = update.attrs.unwrap();
                assert_eq!(a.origin, Origin::Igp, "{what}");
                assert!(!a.atomic_aggregate && a.aggregator.is_none(), "{what}");
                assert_eq!(update.nlri.len(), 1);
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn update_session_reset_cases() {
    let mp = hex("900e001c0002011020010db8000000000000000000000002003020010db80001");
    let cases: Vec<(&str, Vec<u8>, (u8, u8))> = vec![
        (
            "duplicate MP_REACH",
            raw_update(&[], &attrs_with(&[&mp, &mp, ORIGIN_IGP, PATH_65002]), &[]),
            (3, 1),
        ),
        (
            "withdrawn length overrun",
            {
                let mut m = raw_update(&[], &[], &[]);
                m[19..21].copy_from_slice(&[0, 9]);
                m
            },
            (3, 1),
        ),
        (
            "attribute length overrun",
            {
                let mut m = raw_update(&[], &[], &[]);
                m[21..23].copy_from_slice(&[0, 1]);
                m
            },
            (3, 1),
        ),
        (
            "NLRI prefix length 33",
            raw_update(
                &[],
                &attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2]),
                &[33, 1, 2, 3, 4, 5],
            ),
            (3, 10),
        ),
        (
            "NLRI truncated",
            raw_update(
                &[],
                &attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2]),
                &[24, 1, 2],
            ),
            (3, 10),
        ),
        (
            "unknown well-known attribute",
            raw_update(
                &[],
                &attrs_with(&[ORIGIN_IGP, PATH_65002, NH_10_0_0_2, &[0x40, 99, 0]]),
                NLRI_192_0_2,
            ),
            (3, 2),
        ),
        (
            "MP_REACH flags",
            raw_update(&[], &attrs_with(&[&[0xc0, 14, 0]]), &[]),
            (3, 4),
        ),
        (
            "MP_REACH truncated",
            raw_update(&[], &attrs_with(&[&[0x80, 14, 2, 0, 2]]), &[]),
            (3, 9),
        ),
        (
            "broken list, nothing located",
            raw_update(&[], &[0x40, 1, 5, 0], &[]),
            (3, 1),
        ),
        (
            // RFC 7606 §7.11: a next-hop length IPv6 has no encoding for (8 bytes) is
            // never treat-as-withdraw.
            "MP_REACH next-hop length 8",
            raw_update(
                &[],
                &attrs_with(&[
                    &hex("900e00140002010820010db80000000000302001 0db80001"),
                    ORIGIN_IGP,
                    PATH_65002,
                ]),
                &[],
            ),
            (3, 9),
        ),
    ];
    for (what, msg, want) in cases {
        assert_eq!(reset(&msg, &FOUR), want, "{what}");
    }
}

#[test]
fn unknown_attributes() {
    let transitive: &[u8] = &[0xc0, 99, 2, 0xab, 0xcd];
    let non_transitive: &[u8] = &[0x80, 98, 1, 0xef];
    let msg = raw_update(
        &[],
        &attrs_with(&[
            ORIGIN_IGP,
            PATH_65002,
            NH_10_0_0_2,
            transitive,
            non_transitive,
        ]),
        NLRI_192_0_2,
    );
    let u = update(&msg, &FOUR);
    let other = &u.attrs.as_ref().unwrap().other;
    assert_eq!(
        other,
        &vec![RawAttribute {
            flags: 0xe0,
            type_code: 99,
            value: vec![0xab, 0xcd]
        }]
    );
    // Re-advertised with the partial bit.
    let bytes = encode_message(&Message::Update(u), &FOUR).unwrap();
    assert!(bytes.windows(5).any(|w| w == [0xe0, 99, 2, 0xab, 0xcd]));
    assert!(!bytes.windows(2).any(|w| w == [0x80, 98]));
}

// ---- AS4 (RFC 6793) ----

#[test]
fn two_octet_session_carries_as4_path() {
    let attrs = PathAttrs {
        as_path: AsPath::from_sequence([65001, 4200000001, 65003]),
        next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1))),
        aggregator: Some(Aggregator {
            asn: 4200000001,
            address: Ipv4Addr::new(1, 2, 3, 4),
        }),
        ..PathAttrs::default()
    };
    let u = Update {
        attrs: Some(attrs),
        nlri: vec!["192.0.2.0/24".parse().unwrap()],
        ..Update::default()
    };
    let bytes = encode_message(&Message::Update(u.clone()), &TWO).unwrap();
    // AS_PATH with AS_TRANS (0x5ba0), AS4_PATH (17) and AS4_AGGREGATOR (18) present.
    assert!(
        bytes
            .windows(10)
            .any(|w| w == [0x40, 2, 8, 2, 3, 0xfd, 0xe9, 0x5b, 0xa0, 0xfd])
    );
    assert!(bytes.windows(2).any(|w| w == [0xc0, 17]));
    assert!(bytes.windows(2).any(|w| w == [0xc0, 18]));
    assert_eq!(update(&bytes, &TWO), u);
    // Read as a 4-octet session, the 2-octet AS_PATH is malformed.
    assert!(matches!(
        decode_message(&bytes, &FOUR),
        Err(DecodeError::TreatAsWithdraw { .. })
    ));
}

#[test]
fn as_path_loop_helpers() {
    let mut p = AsPath::from_sequence([65515, 65010]);
    assert!(p.contains(65515));
    p.prepend(65001, 2);
    assert_eq!(p.to_string(), "65001 65001 65515 65010");
    assert_eq!(p.first_as(), Some(65001));
    assert_eq!(p.origin_as(), Some(65010));
}

// ---- round trips ----

fn full_attrs() -> PathAttrs {
    PathAttrs {
        origin: Origin::Egp,
        as_path: AsPath {
            segments: vec![
                AsSegment::Sequence(vec![65001, 65002]),
                AsSegment::Set(vec![65010, 65011]),
            ],
        },
        next_hop: Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))),
        med: Some(10),
        local_pref: Some(300),
        atomic_aggregate: true,
        aggregator: Some(Aggregator {
            asn: 65010,
            address: Ipv4Addr::new(192, 0, 2, 9),
        }),
        communities: vec![Community::NO_EXPORT, Community::new(65001, 1)],
        large_communities: vec![LargeCommunity {
            global: 4200000001,
            local1: 0,
            local2: 7,
        }],
        other: vec![RawAttribute {
            flags: 0xe0,
            type_code: 16,
            value: vec![0, 2, 0xfd, 0xe9, 0, 0, 0, 1],
        }],
    }
}

#[test]
fn round_trips() {
    let ibgp = CodecCtx { ibgp: true, ..FOUR };
    let two_ibgp = CodecCtx { ibgp: true, ..TWO };
    let v6nh = NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    let msgs = vec![
        Message::Keepalive,
        Message::Notification(Notification::admin_shutdown("maintenance")),
        Message::RouteRefresh(RouteRefresh {
            afi: 2,
            subtype: 0,
            safi: 1,
        }),
        Message::Open(Open {
            asn: 65001,
            hold_time: 180,
            router_id: Ipv4Addr::new(10, 9, 8, 7),
            capabilities: vec![
                Capability::Multiprotocol { afi: 1, safi: 1 },
                Capability::ExtendedMessage,
                Capability::GracefulRestart(GracefulRestart {
                    restarting: true,
                    notification: true,
                    restart_time: 4095,
                    families: vec![GrFamily {
                        afi: 2,
                        safi: 1,
                        forwarding_preserved: true,
                    }],
                }),
                Capability::FourOctetAs(65001),
            ],
        }),
        Message::Update(Update {
            withdrawn: vec!["10.0.0.0/8".parse().unwrap(), "0.0.0.0/0".parse().unwrap()],
            attrs: Some(full_attrs()),
            mp_reach: Some(MpReach {
                family: Family::Ipv6Unicast,
                next_hop: v6nh,
                nlri: vec![net("2001:db8::/32"), net("::/0")],
            }),
            mp_unreach: Some(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: vec![net("2001:db8:ffff::/48")],
            }),
            nlri: vec![
                "198.51.100.128/25".parse().unwrap(),
                "203.0.113.7/32".parse().unwrap(),
            ],
        }),
        Message::Update(Update {
            withdrawn: vec!["10.0.0.0/8".parse().unwrap()],
            ..Update::default()
        }),
    ];
    for ctx in [ibgp, two_ibgp] {
        for m in &msgs {
            let bytes = encode_message(m, &ctx).unwrap();
            assert_eq!(decode_message(&bytes, &ctx).as_ref(), Ok(m), "{ctx:?}");
        }
    }
    assert!(
        Notification::admin_shutdown("maintenance")
            .to_string()
            .contains("\"maintenance\"")
    );
}

#[test]
fn packing_splits_large_announcements() {
    let attrs = PathAttrs {
        as_path: AsPath::from_sequence([65001]),
        next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ..PathAttrs::default()
    };
    let mut prefixes: Vec<IpNet> = (0..3000u32)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    prefixes.extend((0..1000u32).map(|i| {
        IpNet::V6(
            ipnet::Ipv6Net::new(
                Ipv6Addr::from((0x2001_0db8u128 << 96) + ((i as u128) << 64)),
                64,
            )
            .unwrap(),
        )
    }));
    let v6nh = Some(NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: None,
    });
    let msgs = announce_messages(&attrs, &prefixes, v6nh, &FOUR).unwrap();
    assert!(msgs.len() > 4);
    let mut seen = Vec::new();
    for m in &msgs {
        assert!(m.len() <= MAX_MESSAGE_LEN);
        seen.extend(update(m, &FOUR).all_announced().map(|(p, _)| p));
    }
    assert_eq!(seen, prefixes);
    let msgs = withdraw_messages(&prefixes, &FOUR).unwrap();
    let mut seen = Vec::new();
    for m in &msgs {
        assert!(m.len() <= MAX_MESSAGE_LEN);
        seen.extend(update(m, &FOUR).all_withdrawn());
    }
    assert_eq!(seen, prefixes);
    assert!(announce_messages(&attrs, &prefixes, None, &FOUR).is_err());
}

/// Writes the round-trip messages as fuzz seeds (first byte: the context bits of the
/// fuzz target). `NVA_FUZZ_SEEDS=DIR cargo test write_fuzz_seeds -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("NVA_FUZZ_SEEDS") else {
        return;
    };
    let v6nh = NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    let mut a2 = full_attrs();
    a2.as_path = AsPath::from_sequence([65001, 4200000001, 23456]);
    a2.aggregator = Some(Aggregator {
        asn: 4200000009,
        address: Ipv4Addr::new(1, 2, 3, 4),
    });
    let msgs = [
        Message::Update(Update {
            withdrawn: vec!["10.0.0.0/8".parse().unwrap()],
            attrs: Some(full_attrs()),
            mp_reach: Some(MpReach {
                family: Family::Ipv6Unicast,
                next_hop: v6nh,
                nlri: vec![net("2001:db8::/32")],
            }),
            mp_unreach: Some(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: vec![net("2001:db8:ffff::/48")],
            }),
            nlri: vec!["198.51.100.128/25".parse().unwrap()],
        }),
        Message::Update(Update {
            attrs: Some(a2),
            nlri: vec!["192.0.2.0/24".parse().unwrap()],
            ..Update::default()
        }),
        Message::RouteRefresh(RouteRefresh {
            afi: 2,
            subtype: 0,
            safi: 1,
        }),
        Message::Notification(Notification::admin_shutdown("bye")),
    ];
    // Large: extended messages, a 300-AS path (split segments), extended-length
    // attributes.
    let mut big = full_attrs();
    big.as_path = AsPath::from_sequence((0..300).map(|i| 4200000000 + i));
    big.communities = (0..100).map(Community).collect();
    let big = Message::Update(Update {
        attrs: Some(big),
        nlri: (0..2000u32)
            .map(|i| ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
            .collect(),
        ..Update::default()
    });
    for sel in [1u8, 2, 3, 7] {
        let ctx = CodecCtx {
            four_octet_as: sel & 1 != 0,
            extended_message: true,
            ibgp: sel & 4 != 0,
        };
        let mut bytes = vec![sel | 2];
        bytes.extend(encode_message(&big, &ctx).unwrap());
        std::fs::write(format!("{dir}/built_big_ctx{sel}"), bytes).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        for sel in [0u8, 1, 5, 7] {
            let ctx = CodecCtx {
                four_octet_as: sel & 1 != 0,
                extended_message: sel & 2 != 0,
                ibgp: sel & 4 != 0,
            };
            let mut bytes = vec![sel];
            bytes.extend(encode_message(m, &ctx).unwrap());
            std::fs::write(format!("{dir}/built_{i:02}_ctx{sel}"), bytes).unwrap();
        }
    }
}

/// Rough codec speed for a full-table-sized feed (run in release:
/// `cargo test --release throughput -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput() {
    let attrs = PathAttrs {
        as_path: AsPath::from_sequence([65515, 65010, 4200000001]),
        next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2))),
        communities: vec![Community::new(65515, 1)],
        ..PathAttrs::default()
    };
    let prefixes: Vec<IpNet> = (0..1_000_000u32)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap()))
        .collect();
    let t = std::time::Instant::now();
    let msgs = announce_messages(&attrs, &prefixes, None, &FOUR).unwrap();
    let enc = t.elapsed();
    let t = std::time::Instant::now();
    let mut n = 0;
    for m in &msgs {
        n += update(m, &FOUR).nlri.len();
    }
    let dec = t.elapsed();
    assert_eq!(n, prefixes.len());
    eprintln!(
        "{} prefixes in {} UPDATEs: encode {:?} ({:.0} prefixes/s), decode {:?} ({:.0} prefixes/s)",
        n,
        msgs.len(),
        enc,
        n as f64 / enc.as_secs_f64(),
        dec,
        n as f64 / dec.as_secs_f64()
    );
}
