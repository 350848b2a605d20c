use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::*;
use crate::bgp::codec::{AsPath, AsSegment, Community, LargeCommunity, NextHop, PathAttrs};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn entry(prefix: &str, ge: Option<u8>, le: Option<u8>) -> PrefixEntry {
    PrefixEntry {
        prefix: net(prefix),
        ge,
        le,
    }
}

fn attrs(path: &[u32]) -> PathAttrs {
    PathAttrs {
        as_path: AsPath::from_sequence(path.iter().copied()),
        next_hop: Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2))),
        ..PathAttrs::default()
    }
}

fn lists() -> HashMap<String, PrefixList> {
    let l = PrefixList {
        name: "spokes".into(),
        entries: vec![entry("10.0.0.0/8", None, Some(24))],
    };
    HashMap::from([(l.name.clone(), l)])
}

fn ctx(lists: &HashMap<String, PrefixList>) -> PolicyContext<'_> {
    PolicyContext {
        local_as: 65001,
        local_next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        local_next_hop_v6: Some("2001:db8::1".parse().unwrap()),
        prefix_lists: lists,
        table: None,
    }
}

/// A policy from TOML, validated.
fn policy(toml_text: &str) -> Policy {
    let p: Policy = toml::from_str(toml_text).unwrap();
    p.validate("policies[0]", &lists()).unwrap();
    p
}

fn one_rule(m: Match, set: Set, action: Action) -> Policy {
    Policy {
        name: "p".into(),
        rules: vec![Rule {
            matches: m,
            set,
            action,
        }],
        default: Verdict::Reject,
    }
}

/// Whether a rule with only this match accepts the route (default reject).
fn hits(m: Match, prefix: &str, a: &PathAttrs) -> bool {
    let l = lists();
    one_rule(m, Set::default(), Action::Accept)
        .apply(&net(prefix), a, &ctx(&l))
        .is_some()
}

/// The attributes after a rule with only this `set`.
fn after(set: Set, prefix: &str, a: &PathAttrs) -> PathAttrs {
    let l = lists();
    one_rule(Match::default(), set, Action::Accept)
        .apply(&net(prefix), a, &ctx(&l))
        .unwrap()
}

fn path(a: &PathAttrs) -> Vec<u32> {
    a.as_path.iter().collect()
}

#[test]
fn prefix_entry_exact_by_default() {
    let e = entry("10.0.0.0/8", None, None);
    assert!(e.matches(&net("10.0.0.0/8")));
    assert!(!e.matches(&net("10.1.0.0/16")));
    assert!(!e.matches(&net("0.0.0.0/0")));
}

#[test]
fn prefix_entry_ge_only_goes_to_the_longest() {
    let e = entry("10.0.0.0/8", Some(24), None);
    assert_eq!(e.length_range(), (24, 32));
    assert!(!e.matches(&net("10.1.0.0/23")));
    assert!(e.matches(&net("10.1.2.0/24")));
    assert!(e.matches(&net("10.1.2.3/32")));
    let e6 = entry("2001:db8::/32", Some(48), None);
    assert_eq!(e6.length_range(), (48, 128));
}

#[test]
fn prefix_entry_le_only_starts_at_the_prefix() {
    let e = entry("10.0.0.0/8", None, Some(16));
    assert!(e.matches(&net("10.0.0.0/8")));
    assert!(e.matches(&net("10.255.0.0/16")));
    assert!(!e.matches(&net("10.1.1.0/24")));
    assert!(!e.matches(&net("11.0.0.0/16")));
}

#[test]
fn prefix_entry_ge_le_bounds_inclusive() {
    let e = entry("192.168.0.0/16", Some(20), Some(24));
    assert!(!e.matches(&net("192.168.0.0/19")));
    assert!(e.matches(&net("192.168.0.0/20")));
    assert!(e.matches(&net("192.168.255.0/24")));
    assert!(!e.matches(&net("192.168.1.0/25")));
    // Outside the prefix, right length.
    assert!(!e.matches(&net("192.169.0.0/24")));
    // Other family never matches.
    assert!(!e.matches(&net("::/0")));
    // The default route and "everything" lists.
    let any = entry("0.0.0.0/0", None, Some(32));
    assert!(any.matches(&net("0.0.0.0/0")) && any.matches(&net("1.2.3.4/32")));
    assert!(!any.matches(&net("2001:db8::/32")));
    let host = entry("10.0.0.1/32", None, None);
    assert!(host.matches(&net("10.0.0.1/32")));
}

#[test]
fn prefix_list_validation() {
    let bad = |e: PrefixEntry| {
        PrefixList {
            name: "l".into(),
            entries: vec![entry("10.0.0.0/8", None, None), e],
        }
        .validate("prefix_lists[3]")
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        bad(entry("10.0.0.0/8", Some(33), None)),
        "prefix_lists[3].entries[1].ge: 33 is outside 8..=32 (the lengths of 10.0.0.0/8)"
    );
    assert_eq!(
        bad(entry("10.0.0.0/16", None, Some(8))),
        "prefix_lists[3].entries[1].le: 8 is outside 16..=32 (the lengths of 10.0.0.0/16)"
    );
    assert_eq!(
        bad(entry("10.0.0.0/8", Some(24), Some(20))),
        "prefix_lists[3].entries[1].le: 20 is shorter than ge 24"
    );
    assert_eq!(
        bad(entry("10.1.0.0/8", None, None)),
        "prefix_lists[3].entries[1].prefix: 10.1.0.0/8 has host bits set"
    );
    let ok = PrefixList {
        name: "l".into(),
        entries: vec![
            entry("10.0.0.0/8", Some(8), Some(32)),
            entry("::/0", None, Some(128)),
        ],
    };
    ok.validate("x").unwrap();
    let unnamed = PrefixList {
        name: String::new(),
        entries: vec![],
    };
    assert_eq!(
        unnamed.validate("prefix_lists[0]").unwrap_err().to_string(),
        "prefix_lists[0].name: must not be empty"
    );
}

#[test]
fn match_prefix_list_and_prefix() {
    let a = attrs(&[65515]);
    let m = Match {
        prefix_list: Some("spokes".into()),
        ..Match::default()
    };
    assert!(hits(m.clone(), "10.1.0.0/16", &a));
    assert!(!hits(m.clone(), "10.1.1.128/25", &a));
    assert!(!hits(m, "192.0.2.0/24", &a));
    let m = Match {
        prefix: Some(vec![net("192.0.2.0/24"), net("2001:db8::/32")]),
        ..Match::default()
    };
    assert!(hits(m.clone(), "192.0.2.0/24", &a));
    assert!(hits(m.clone(), "192.0.2.128/25", &a));
    assert!(hits(m.clone(), "2001:db8:1::/48", &a));
    assert!(!hits(m.clone(), "192.0.0.0/16", &a));
    assert!(!hits(m, "198.51.100.0/24", &a));
}

#[test]
fn match_as_path_conditions() {
    let a = attrs(&[65515, 65520, 64512]);
    let m = |f: fn(&mut Match)| {
        let mut m = Match::default();
        f(&mut m);
        m
    };
    assert!(hits(
        m(|m| m.as_path_contains = Some(vec![1, 65520])),
        "10.0.0.0/8",
        &a
    ));
    assert!(!hits(
        m(|m| m.as_path_contains = Some(vec![1, 2])),
        "10.0.0.0/8",
        &a
    ));
    assert!(hits(
        m(|m| m.as_path_origin = Some(64512)),
        "10.0.0.0/8",
        &a
    ));
    assert!(!hits(
        m(|m| m.as_path_origin = Some(65515)),
        "10.0.0.0/8",
        &a
    ));
    assert!(hits(m(|m| m.as_path_first = Some(65515)), "10.0.0.0/8", &a));
    assert!(!hits(
        m(|m| m.as_path_first = Some(64512)),
        "10.0.0.0/8",
        &a
    ));
    assert!(hits(
        m(|m| m.as_path_length_max = Some(3)),
        "10.0.0.0/8",
        &a
    ));
    assert!(!hits(
        m(|m| m.as_path_length_max = Some(2)),
        "10.0.0.0/8",
        &a
    ));
    // An empty path (iBGP, locally originated) has no origin or first AS.
    let empty = attrs(&[]);
    assert!(!hits(
        m(|m| m.as_path_origin = Some(64512)),
        "10.0.0.0/8",
        &empty
    ));
    assert!(hits(
        m(|m| m.as_path_length_max = Some(0)),
        "10.0.0.0/8",
        &empty
    ));
    // A set counts as one.
    let mut with_set = attrs(&[65515]);
    with_set
        .as_path
        .segments
        .push(AsSegment::Set(vec![1, 2, 3]));
    assert!(hits(
        m(|m| m.as_path_length_max = Some(2)),
        "10.0.0.0/8",
        &with_set
    ));
}

#[test]
fn match_communities() {
    let mut a = attrs(&[65515]);
    a.communities = vec![Community::new(65000, 100), Community::NO_EXPORT];
    a.large_communities = vec![LargeCommunity {
        global: 1,
        local1: 2,
        local2: 3,
    }];
    let m = |list: &[&str]| Match {
        community: Some(list.iter().map(|s| s.to_string()).collect()),
        ..Match::default()
    };
    assert!(hits(m(&["65000:100"]), "10.0.0.0/8", &a));
    assert!(hits(m(&["1:1", "65000:100"]), "10.0.0.0/8", &a));
    assert!(!hits(m(&["65000:200"]), "10.0.0.0/8", &a));
    assert!(hits(m(&["65000:*"]), "10.0.0.0/8", &a));
    assert!(hits(m(&["*:100"]), "10.0.0.0/8", &a));
    assert!(hits(m(&["no-export"]), "10.0.0.0/8", &a));
    assert!(hits(m(&["65535:65281"]), "10.0.0.0/8", &a));
    assert!(!hits(m(&["no-advertise"]), "10.0.0.0/8", &a));
    assert!(hits(m(&["1:2:3"]), "10.0.0.0/8", &a));
    assert!(hits(m(&["1:*:*"]), "10.0.0.0/8", &a));
    assert!(!hits(m(&["1:2:4"]), "10.0.0.0/8", &a));
    // "1:2" is a standard community, not a prefix of the large one.
    assert!(!hits(m(&["1:2"]), "10.0.0.0/8", &a));
}

#[test]
fn match_family_and_next_hop() {
    let a = attrs(&[65515]);
    let fam = |f| Match {
        family: Some(f),
        ..Match::default()
    };
    assert!(hits(fam(AddressFamily::Ipv4), "10.0.0.0/8", &a));
    assert!(!hits(fam(AddressFamily::Ipv4), "2001:db8::/32", &a));
    assert!(hits(fam(AddressFamily::Ipv6), "2001:db8::/32", &a));
    assert!(!hits(fam(AddressFamily::Ipv6), "10.0.0.0/8", &a));
    let nh = |n: &str| Match {
        next_hop: Some(vec![net(n)]),
        ..Match::default()
    };
    assert!(hits(nh("10.0.0.0/24"), "192.0.2.0/24", &a));
    assert!(hits(nh("10.0.0.2/32"), "192.0.2.0/24", &a));
    assert!(!hits(nh("10.0.1.0/24"), "192.0.2.0/24", &a));
    let no_nh = PathAttrs::default();
    assert!(!hits(nh("0.0.0.0/0"), "192.0.2.0/24", &no_nh));
}

#[test]
fn match_all_conditions_must_hold() {
    let a = attrs(&[65515, 64512]);
    let m = Match {
        prefix_list: Some("spokes".into()),
        as_path_origin: Some(64512),
        ..Match::default()
    };
    assert!(hits(m.clone(), "10.2.0.0/16", &a));
    assert!(!hits(m.clone(), "192.0.2.0/24", &a));
    assert!(!hits(m, "10.2.0.0/16", &attrs(&[65515, 64513])));
    // No condition: everything matches.
    assert!(hits(Match::default(), "2001:db8::/32", &a));
}

#[test]
fn set_as_path_exclude() {
    let set = Set {
        as_path_exclude: Some(vec![65515, 65520]),
        ..Set::default()
    };
    let out = after(set.clone(), "10.0.0.0/8", &attrs(&[65515, 65520, 64512]));
    assert_eq!(out.as_path, AsPath::from_sequence([64512]));
    // Everywhere, also in sets; empty segments go and sequences around them merge.
    let mut a = attrs(&[64500, 65515]);
    a.as_path.segments.push(AsSegment::Set(vec![65520]));
    a.as_path
        .segments
        .push(AsSegment::Sequence(vec![65515, 64512]));
    a.as_path.segments.push(AsSegment::Set(vec![65520, 7]));
    let out = after(set.clone(), "10.0.0.0/8", &a);
    assert_eq!(
        out.as_path.segments,
        vec![
            AsSegment::Sequence(vec![64500, 64512]),
            AsSegment::Set(vec![7])
        ]
    );
    // Only excluded ASes: an empty path.
    let out = after(set, "10.0.0.0/8", &attrs(&[65515, 65515]));
    assert!(out.as_path.is_empty());
}

#[test]
fn set_as_path_replace() {
    let set = Set {
        as_path_replace: Some(AsPathReplace {
            from: vec![65515, 65520],
            to: None,
        }),
        ..Set::default()
    };
    let out = after(set, "10.0.0.0/8", &attrs(&[65515, 64512, 65520]));
    assert_eq!(path(&out), vec![65001, 64512, 65001]);
    let set = Set {
        as_path_replace: Some(AsPathReplace {
            from: vec![65515],
            to: Some(64999),
        }),
        ..Set::default()
    };
    let out = after(set, "10.0.0.0/8", &attrs(&[65515, 65515, 1]));
    assert_eq!(path(&out), vec![64999, 64999, 1]);
    assert_eq!(out.as_path.path_len(), 3);
}

#[test]
fn set_prepend() {
    let set = Set {
        prepend: Some(Prepend {
            asn: None,
            count: 3,
        }),
        ..Set::default()
    };
    let out = after(set, "10.0.0.0/8", &attrs(&[65515]));
    assert_eq!(path(&out), vec![65001, 65001, 65001, 65515]);
    let set = Set {
        prepend: Some(Prepend {
            asn: Some(64600),
            count: 1,
        }),
        ..Set::default()
    };
    let out = after(set, "10.0.0.0/8", &attrs(&[]));
    assert_eq!(path(&out), vec![64600]);
    // From TOML, count defaults to 1.
    let p = policy(
        r#"name = "x"
           rules = [{ set = { prepend = {} }, action = "accept" }]"#,
    );
    let l = lists();
    let out = p.apply(&net("10.0.0.0/8"), &attrs(&[1]), &ctx(&l)).unwrap();
    assert_eq!(path(&out), vec![65001, 1]);
}

#[test]
fn set_communities_add_and_remove() {
    let mut a = attrs(&[65515]);
    a.communities = vec![
        Community::new(65000, 1),
        Community::new(65000, 2),
        Community::new(65100, 1),
    ];
    a.large_communities = vec![LargeCommunity {
        global: 1,
        local1: 2,
        local2: 3,
    }];
    let set = Set {
        communities_remove: Some(vec!["65000:*".into(), "1:2:3".into()]),
        communities_add: Some(vec![
            "no-export".into(),
            "65100:1".into(),
            "65000:7".into(),
            "4200000000:1:2".into(),
        ]),
        ..Set::default()
    };
    let out = after(set, "10.0.0.0/8", &a);
    assert_eq!(
        out.communities,
        vec![
            Community::new(65100, 1),
            Community::NO_EXPORT,
            Community::new(65000, 7)
        ]
    );
    assert_eq!(
        out.large_communities,
        vec![LargeCommunity {
            global: 4200000000,
            local1: 1,
            local2: 2
        }]
    );
    // Removing a well-known community by name.
    let set = Set {
        communities_remove: Some(vec!["no-export".into(), "no-advertise".into()]),
        ..Set::default()
    };
    let mut a = attrs(&[1]);
    a.communities = vec![Community::NO_ADVERTISE, Community::NO_EXPORT];
    assert!(after(set, "10.0.0.0/8", &a).communities.is_empty());
}

#[test]
fn set_local_pref_and_med() {
    let set = Set {
        local_pref: Some(200),
        med: Some(50),
        ..Set::default()
    };
    let out = after(set, "10.0.0.0/8", &attrs(&[1]));
    assert_eq!((out.local_pref, out.med), (Some(200), Some(50)));
}

#[test]
fn set_next_hop_self_and_next_hop() {
    let nhs = Set {
        next_hop_self: Some(true),
        ..Set::default()
    };
    let out = after(nhs.clone(), "10.0.0.0/8", &attrs(&[1]));
    assert_eq!(out.next_hop, Some(NextHop::V4(Ipv4Addr::new(192, 0, 2, 1))));
    let out = after(nhs.clone(), "2001:db8:5::/48", &attrs(&[1]));
    assert_eq!(
        out.next_hop.map(|n| n.addr()),
        Some("2001:db8::1".parse::<IpAddr>().unwrap())
    );
    // No local address of the family: cleared, so the session sets its own.
    let l = lists();
    let c = PolicyContext {
        local_next_hop_v6: None,
        ..ctx(&l)
    };
    let out = one_rule(Match::default(), nhs, Action::Accept)
        .apply(&net("2001:db8:5::/48"), &attrs(&[1]), &c)
        .unwrap();
    assert_eq!(out.next_hop, None);
    // An explicit next hop applies to its own family only.
    let set = Set {
        next_hop: Some("10.9.9.9".parse().unwrap()),
        ..Set::default()
    };
    let out = after(set.clone(), "10.0.0.0/8", &attrs(&[1]));
    assert_eq!(out.next_hop, Some(NextHop::V4(Ipv4Addr::new(10, 9, 9, 9))));
    let out = after(set, "2001:db8::/32", &attrs(&[1]));
    assert_eq!(out.next_hop, Some(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2))));
}

#[test]
fn rules_in_order_with_next() {
    let p = policy(
        r#"
        name = "import"
        default = "reject"
        [[rules]]
        set = { local_pref = 150, communities_add = ["65001:1"] }
        action = "next"
        [[rules]]
        match = { as_path_contains = [666] }
        action = "reject"
        [[rules]]
        match = { prefix_list = "spokes" }
        set = { med = 10 }
        action = "accept"
        [[rules]]
        match = { community = ["65001:1"] }
        set = { local_pref = 50 }
        action = "accept"
        "#,
    );
    let l = lists();
    let c = ctx(&l);
    // Rules 0 and 2.
    let out = p.apply(&net("10.1.0.0/16"), &attrs(&[1]), &c).unwrap();
    assert_eq!(out.local_pref, Some(150));
    assert_eq!(out.med, Some(10));
    assert_eq!(out.communities, vec![Community::new(65001, 1)]);
    // Rule 1 decides before the accepting rules.
    assert!(p.apply(&net("10.1.0.0/16"), &attrs(&[666]), &c).is_none());
    // Rule 3 matches on the community rule 0 added.
    let out = p.apply(&net("192.0.2.0/24"), &attrs(&[1]), &c).unwrap();
    assert_eq!(out.local_pref, Some(50));
    assert_eq!(out.med, None);
}

#[test]
fn default_verdict() {
    let l = lists();
    let c = ctx(&l);
    let mut p = policy(
        r#"name = "x"
           rules = [{ match = { prefix_list = "spokes" }, set = { med = 5 }, action = "next" }]"#,
    );
    assert_eq!(p.default, Verdict::Accept);
    // `next` changes survive into the default verdict.
    let out = p.apply(&net("10.0.0.0/8"), &attrs(&[1]), &c).unwrap();
    assert_eq!(out.med, Some(5));
    assert!(p.apply(&net("192.0.2.0/24"), &attrs(&[1]), &c).is_some());
    p.default = Verdict::Reject;
    assert!(p.apply(&net("10.0.0.0/8"), &attrs(&[1]), &c).is_none());
    // An empty policy is its default.
    let empty = policy(r#"name = "none""#);
    assert_eq!(
        empty.apply(&net("10.0.0.0/8"), &attrs(&[1]), &c),
        Some(attrs(&[1]))
    );
    let deny = policy("name = \"deny\"\ndefault = \"reject\"");
    assert!(deny.apply(&net("10.0.0.0/8"), &attrs(&[1]), &c).is_none());
}

#[test]
fn reject_rule_ignores_its_set() {
    let l = lists();
    let p = one_rule(
        Match::default(),
        Set {
            local_pref: Some(1),
            ..Set::default()
        },
        Action::Reject,
    );
    assert!(
        p.apply(&net("10.0.0.0/8"), &attrs(&[1]), &ctx(&l))
            .is_none()
    );
}

#[test]
fn config_parsing() {
    let p = policy(
        r#"
        name = "to-route-server"
        [[rules]]
        match = { family = "ipv6", next_hop = ["2001:db8::/32"], as_path_first = 1, as_path_origin = 2, as_path_length_max = 3, prefix = ["::/0"] }
        set = { as_path_replace = { from = [65515], to = 1 }, next_hop_self = true, communities_remove = ["*:*"] }
        action = "accept"
        "#,
    );
    assert_eq!(p.rules[0].matches.family, Some(AddressFamily::Ipv6));
    assert_eq!(
        p.rules[0].set.as_path_replace,
        Some(AsPathReplace {
            from: vec![65515],
            to: Some(1)
        })
    );
    let unknown = toml::from_str::<Policy>(
        r#"name = "x"
           rules = [{ match = { asn = 1 }, action = "accept" }]"#,
    );
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `asn`")
    );
    let no_action = toml::from_str::<Policy>(
        r#"name = "x"
        rules = [{ }]"#,
    );
    assert!(no_action.unwrap_err().to_string().contains("action"));
    let bad_action = toml::from_str::<Policy>(
        r#"name = "x"
           rules = [{ action = "permit" }]"#,
    );
    assert!(bad_action.is_err());
    let l: PrefixList = toml::from_str(
        r#"name = "l"
           entries = [{ prefix = "10.0.0.0/8", ge = 16, le = 24 }]"#,
    )
    .unwrap();
    assert_eq!(l.entries[0].length_range(), (16, 24));
    // Round trip through TOML.
    let text = toml::to_string(&p).unwrap();
    assert_eq!(toml::from_str::<Policy>(&text).unwrap(), p);
}

#[test]
fn validation_errors_name_fields() {
    let err = |text: &str| {
        let p: Policy = toml::from_str(text).unwrap();
        p.validate("policies[2]", &lists()).unwrap_err().to_string()
    };
    assert_eq!(
        err(r#"name = "p"
               rules = [{ action = "next" }, { match = { prefix_list = "x" }, action = "accept" }]"#),
        "policies[2].rules[1].match.prefix_list: no prefix list \"x\""
    );
    assert!(
        err(r#"name = "p"
               rules = [{ match = { community = ["65000:100", "65536:1"] }, action = "accept" }]"#)
        .starts_with("policies[2].rules[0].match.community[1]: \"65536:1\" is not a community")
    );
    assert!(
        err(r#"name = "p"
               rules = [{ set = { communities_remove = ["no-such"] }, action = "accept" }]"#)
        .starts_with(
            "policies[2].rules[0].set.communities_remove[0]: \"no-such\" is not a community"
        )
    );
    assert_eq!(
        err(r#"name = "p"
               rules = [{ set = { communities_add = ["65000:*"] }, action = "accept" }]"#),
        "policies[2].rules[0].set.communities_add[0]: \"65000:*\" is a pattern; only exact communities can be added"
    );
    assert_eq!(
        err(r#"name = "p"
               rules = [{ match = { prefix = ["10.0.0.1/8"] }, action = "accept" }]"#),
        "policies[2].rules[0].match.prefix[0]: 10.0.0.1/8 has host bits set"
    );
    assert_eq!(
        err(r#"name = "p"
               rules = [{ set = { next_hop_self = true, next_hop = "10.0.0.1" }, action = "accept" }]"#),
        "policies[2].rules[0].set.next_hop: next_hop and next_hop_self exclude each other"
    );
    assert_eq!(
        err(r#"name = "p"
               rules = [{ set = { as_path_replace = { from = [] } }, action = "accept" }]"#),
        "policies[2].rules[0].set.as_path_replace.from: must list at least one AS"
    );
    assert_eq!(err(r#"name = """#), "policies[2].name: must not be empty");
    // A referenced list with a bad entry.
    let mut bad_lists = lists();
    bad_lists.get_mut("spokes").unwrap().entries[0].le = Some(40);
    let p: Policy = toml::from_str(
        r#"name = "p"
           rules = [{ match = { prefix_list = "spokes" }, action = "accept" }]"#,
    )
    .unwrap();
    assert_eq!(
        p.validate("policies[0]", &bad_lists)
            .unwrap_err()
            .to_string(),
        "prefix_lists[\"spokes\"].entries[0].le: 40 is outside 8..=32 (the lengths of 10.0.0.0/8)"
    );
}

#[test]
fn community_pattern_parsing() {
    let ok = |s: &str| s.parse::<CommunityPattern>().unwrap().to_string();
    assert_eq!(ok("65000:100"), "65000:100");
    assert_eq!(ok("no-export"), "65535:65281");
    assert_eq!(ok("*:5"), "*:5");
    assert_eq!(ok("4200000000:0:*"), "4200000000:0:*");
    for bad in ["", "1", "1:2:3:4", "65536:0", "a:b", "1::2", "-1:2", " 1:2"] {
        assert!(bad.parse::<CommunityPattern>().is_err(), "{bad:?}");
    }
}

#[test]
fn apply_routes_shares_attributes() {
    let l = lists();
    let c = ctx(&l);
    let p = policy(
        r#"
        name = "p"
        [[rules]]
        match = { prefix = ["192.0.2.0/24"] }
        action = "reject"
        [[rules]]
        match = { prefix_list = "spokes" }
        set = { local_pref = 200 }
        action = "accept"
        [[rules]]
        set = { next_hop_self = true }
        action = "accept"
        "#,
    );
    let shared = Arc::new(attrs(&[65515]));
    let routes: Vec<(IpNet, Arc<PathAttrs>)> = [
        "10.1.0.0/16",
        "10.2.0.0/16",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
    ]
    .iter()
    .map(|s| (net(s), shared.clone()))
    .collect();
    let out = p.apply_routes(routes.clone(), &c);
    assert_eq!(out.rejected, vec![net("192.0.2.0/24")]);
    let a = &out.accepted;
    assert_eq!(a.len(), 5);
    // Same rules, same Arc; different rules or family, different Arc.
    assert!(Arc::ptr_eq(&a[0].1, &a[1].1));
    assert_eq!(a[0].1.local_pref, Some(200));
    assert!(Arc::ptr_eq(&a[2].1, &a[3].1));
    assert!(!Arc::ptr_eq(&a[0].1, &a[2].1));
    assert!(!Arc::ptr_eq(&a[3].1, &a[4].1));
    assert_eq!(
        a[4].1.next_hop.map(|n| n.addr()),
        Some("2001:db8::1".parse::<IpAddr>().unwrap())
    );
    // The same results as route by route.
    for ((p1, a1), (p0, a0)) in a
        .iter()
        .zip(routes.iter().filter(|(n, _)| *n != net("192.0.2.0/24")))
    {
        assert_eq!(p1, p0);
        assert_eq!(**a1, p.apply(p0, a0, &c).unwrap());
    }
    // Nothing changed: the input Arc itself.
    let filter = policy(r#"name = "f""#);
    let out = filter.apply_routes(routes, &c);
    assert!(out.accepted.iter().all(|(_, a)| Arc::ptr_eq(a, &shared)));
    // A set that changes nothing keeps the input too.
    let noop = policy(
        r#"name = "n"
           rules = [{ set = { communities_remove = ["1:1"] }, action = "accept" }]"#,
    );
    let out = noop.apply_routes(vec![(net("10.0.0.0/8"), shared.clone())], &c);
    assert!(Arc::ptr_eq(&out.accepted[0].1, &shared));
}

/// A typical import policy over a full table. `cargo test --release -p nva-userspace
/// --lib policy::tests::timing -- --ignored --nocapture`
#[test]
#[ignore]
fn timing_import_policy_full_table() {
    let l = lists();
    let c = ctx(&l);
    let p = policy(
        r#"
        name = "import"
        [[rules]]
        match = { as_path_contains = [64666] }
        action = "reject"
        [[rules]]
        match = { prefix_list = "spokes" }
        set = { as_path_exclude = [65515, 65520], local_pref = 200 }
        action = "accept"
        [[rules]]
        match = { community = ["65000:666"] }
        action = "reject"
        [[rules]]
        set = { communities_add = ["65001:1"] }
        action = "accept"
        "#,
    );
    let sets: Vec<Arc<PathAttrs>> = (0..100)
        .map(|i| {
            let mut a = attrs(&[65515, 65520, 64512 + i]);
            a.communities = vec![Community::new(65000, 1), Community::new(65000, 2)];
            Arc::new(a)
        })
        .collect();
    let routes: Vec<(IpNet, Arc<PathAttrs>)> = (0..1_000_000u32)
        .map(|i| {
            let addr = Ipv4Addr::from(0x0a00_0000u32.wrapping_add(i.wrapping_mul(0x9e37_79b9)));
            (
                IpNet::V4(ipnet::Ipv4Net::new(addr, 24).unwrap().trunc()),
                sets[(i / 10_000) as usize % 100].clone(),
            )
        })
        .collect();
    let t = std::time::Instant::now();
    let mut accepted = 0;
    let mut most = 0;
    for chunk in routes.chunks(10_000) {
        let out = p.apply_routes(chunk.to_vec(), &c);
        accepted += out.accepted.len();
        let distinct: std::collections::HashSet<usize> = (out.accepted.iter())
            .map(|(_, a)| Arc::as_ptr(a) as usize)
            .collect();
        most = most.max(distinct.len());
    }
    println!(
        "import policy over 1M routes in batches of 10k (one attribute set each): {:?}, \
         {accepted} accepted, at most {most} distinct attribute sets out of a batch",
        t.elapsed(),
    );
}

#[test]
fn table_match_follows_the_route_table() {
    let l = lists();
    let m = Match {
        table: Some("east-west".into()),
        ..Match::default()
    };
    let p = one_rule(m, Set::default(), Action::Accept);
    let route = net("10.1.0.0/16");
    for (table, accepted) in [
        (Some("east-west"), true),
        (Some("north-south"), false),
        (None, false),
    ] {
        let c = PolicyContext { table, ..ctx(&l) };
        assert_eq!(
            p.apply(&route, &attrs(&[1]), &c).is_some(),
            accepted,
            "{table:?}"
        );
    }
    let bad = one_rule(
        Match {
            table: Some("south".into()),
            ..Match::default()
        },
        Set::default(),
        Action::Accept,
    );
    let err = bad.validate("policies[0]", &l).unwrap_err().to_string();
    assert!(err.contains("policies[0].rules[0].match.table"), "{err}");
}
