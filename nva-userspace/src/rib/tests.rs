use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use super::*;
use crate::bgp::codec::{AsPath, Family, NextHop, Origin, PathAttrs};

const LOCAL_AS: u32 = 65001;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn id(n: u8) -> PeerId {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

/// Peer `n`: address 10.0.0.n, router id 1.1.1.n.
fn info(n: u8, remote_as: u32) -> PeerInfo {
    PeerInfo {
        id: id(n),
        remote_as,
        local_as: LOCAL_AS,
        router_id: Ipv4Addr::new(1, 1, 1, n),
        address: id(n),
    }
}

fn attrs(nh: &str, path: &[u32]) -> Arc<PathAttrs> {
    Arc::new(PathAttrs {
        as_path: AsPath::from_sequence(path.iter().copied()),
        next_hop: Some(NextHop::from(ip(nh))),
        ..PathAttrs::default()
    })
}

fn with(a: &Arc<PathAttrs>, f: impl FnOnce(&mut PathAttrs)) -> Arc<PathAttrs> {
    let mut a = PathAttrs::clone(a);
    f(&mut a);
    Arc::new(a)
}

/// A RIB with eBGP peers 1 and 2 in AS 65515 (a route server pair).
fn rib(multipath: bool) -> Rib {
    let mut r = Rib::new(multipath, 8);
    r.peer_up(info(1, 65515));
    r.peer_up(info(2, 65515));
    r
}

fn announce(r: &mut Rib, peer: u8, prefix: &str, a: &Arc<PathAttrs>) -> Vec<RibChange> {
    r.update(id(peer), vec![(net(prefix), a.clone())], &[])
}

fn set(prefix: &str, best: &Arc<PathAttrs>, peer: u8, nhs: &[&str]) -> RibChange {
    RibChange::Set {
        prefix: net(prefix),
        best: best.clone(),
        best_peer: id(peer),
        nexthops: nhs.iter().map(|s| ip(s)).collect(),
    }
}

/// The best peer of a prefix.
fn best_peer(r: &Rib, prefix: &str) -> PeerId {
    match r.selection(&net(prefix)) {
        Some(RibChange::Set { best_peer, .. }) => best_peer,
        other => panic!("no selection: {other:?}"),
    }
}

fn nexthops(r: &Rib, prefix: &str) -> Vec<IpAddr> {
    match r.selection(&net(prefix)) {
        Some(RibChange::Set { nexthops, .. }) => nexthops,
        other => panic!("no selection: {other:?}"),
    }
}

/// Peer 1 and 2 announce `a` and `b` for 10.0.0.0/8; returns the best peer.
fn duel(r: &mut Rib, a: &Arc<PathAttrs>, b: &Arc<PathAttrs>) -> PeerId {
    announce(r, 1, "10.0.0.0/8", a);
    announce(r, 2, "10.0.0.0/8", b);
    let first = best_peer(r, "10.0.0.0/8");
    // Order of arrival never matters.
    let mut again = Rib::new(false, 1);
    for p in r.peers.iter() {
        again.peer_up(p.info.clone());
    }
    announce(&mut again, 2, "10.0.0.0/8", b);
    announce(&mut again, 1, "10.0.0.0/8", a);
    assert_eq!(best_peer(&again, "10.0.0.0/8"), first);
    first
}

#[test]
fn announce_replace_withdraw() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515, 64512]);
    assert_eq!(
        announce(&mut r, 1, "10.0.0.0/8", &a),
        vec![set("10.0.0.0/8", &a, 1, &["192.0.2.1"])]
    );
    assert_eq!((r.len(), r.prefix_count(id(1))), (1, 1));
    // The same attributes again (even in another Arc): nothing changed.
    assert!(announce(&mut r, 1, "10.0.0.0/8", &a).is_empty());
    assert!(
        announce(
            &mut r,
            1,
            "10.0.0.0/8",
            &attrs("192.0.2.1", &[65515, 64512])
        )
        .is_empty()
    );
    // New attributes from the best path: reported even with the same next hop.
    let b = attrs("192.0.2.1", &[65515, 64513]);
    assert_eq!(
        announce(&mut r, 1, "10.0.0.0/8", &b),
        vec![set("10.0.0.0/8", &b, 1, &["192.0.2.1"])]
    );
    assert_eq!(r.prefix_count(id(1)), 1);
    // Withdrawing what was never announced: nothing.
    assert!(r.update(id(1), vec![], &[net("10.1.0.0/16")]).is_empty());
    assert!(r.update(id(2), vec![], &[net("10.0.0.0/8")]).is_empty());
    assert_eq!(
        r.update(id(1), vec![], &[net("10.0.0.0/8")]),
        vec![RibChange::Removed {
            prefix: net("10.0.0.0/8")
        }]
    );
    assert_eq!((r.len(), r.prefix_count(id(1))), (0, 0));
    assert!(r.is_empty());
}

#[test]
fn best_path_local_pref() {
    let mut r = rib(false);
    let a = attrs("192.0.2.1", &[65515]);
    // Missing LOCAL_PREF counts as 100: 101 beats it, 99 loses.
    let b = with(&a, |a| a.local_pref = Some(101));
    assert_eq!(duel(&mut r, &a, &b), id(2));
    let b = with(&a, |a| a.local_pref = Some(99));
    assert_eq!(duel(&mut r, &a, &b), id(1));
    // Local pref beats a shorter path.
    let long = with(&attrs("192.0.2.1", &[65515, 1, 2, 3]), |a| {
        a.local_pref = Some(200)
    });
    assert_eq!(duel(&mut r, &a, &long), id(2));
}

#[test]
fn best_path_as_path_length() {
    let mut r = rib(false);
    let short = attrs("192.0.2.1", &[65515, 1]);
    let long = attrs("192.0.2.2", &[65515, 1, 2]);
    assert_eq!(duel(&mut r, &long, &short), id(2));
    // A set counts as one: [65515 {1 2 3}] has length 2, shorter than 3.
    let mut set = PathAttrs::clone(&attrs("192.0.2.1", &[65515]));
    set.as_path
        .segments
        .push(crate::bgp::codec::AsSegment::Set(vec![1, 2, 3]));
    let set = Arc::new(set);
    assert_eq!(duel(&mut r, &long, &set), id(2));
    // Shorter path beats a better origin.
    let short_incomplete = with(&short, |a| a.origin = Origin::Incomplete);
    assert_eq!(duel(&mut r, &long, &short_incomplete), id(2));
}

#[test]
fn best_path_origin() {
    let mut r = rib(false);
    let igp = attrs("192.0.2.1", &[65515]);
    let egp = with(&igp, |a| a.origin = Origin::Egp);
    let inc = with(&igp, |a| a.origin = Origin::Incomplete);
    assert_eq!(duel(&mut r, &egp, &igp), id(2));
    assert_eq!(duel(&mut r, &inc, &egp), id(2));
    // Origin beats MED.
    let egp_low_med = with(&egp, |a| a.med = Some(0));
    let igp_high_med = with(&igp, |a| a.med = Some(1000));
    assert_eq!(duel(&mut r, &egp_low_med, &igp_high_med), id(2));
}

#[test]
fn best_path_med_within_same_neighbour_as() {
    let mut r = rib(false);
    // Same neighbour AS: lower MED wins over the lower router id.
    let a = with(&attrs("192.0.2.1", &[65515, 1]), |a| a.med = Some(20));
    let b = with(&attrs("192.0.2.2", &[65515, 2]), |a| a.med = Some(10));
    assert_eq!(duel(&mut r, &a, &b), id(2));
    // Missing MED is 0, the best.
    let none = attrs("192.0.2.1", &[65515, 1]);
    assert_eq!(duel(&mut r, &none, &b), id(1));
    // Different neighbour AS: MED is not compared, router id decides.
    let mut r = Rib::new(false, 1);
    r.peer_up(info(1, 65515));
    r.peer_up(info(2, 65520));
    let a = with(&attrs("192.0.2.1", &[65515, 1]), |a| a.med = Some(20));
    let b = with(&attrs("192.0.2.2", &[65520, 1]), |a| a.med = Some(10));
    assert_eq!(duel(&mut r, &a, &b), id(1));
}

#[test]
fn best_path_med_deterministic_over_three_paths() {
    // p1: AS 100, MED 10, router id 1.1.1.1; p2: AS 200, 1.1.1.2; p3: AS 100, MED 0,
    // 1.1.1.3. AS 100's best is p3 (MED), which loses to p2 on router id; pairwise
    // comparison in arrival order could pick p1 (beats p2 on router id) instead.
    let mut r = Rib::new(false, 1);
    r.peer_up(info(1, 100));
    r.peer_up(info(2, 200));
    r.peer_up(info(3, 100));
    let p1 = with(&attrs("192.0.2.1", &[100]), |a| a.med = Some(10));
    let p2 = attrs("192.0.2.2", &[200]);
    let p3 = with(&attrs("192.0.2.3", &[100]), |a| a.med = Some(0));
    for order in [[1, 2, 3], [3, 2, 1], [2, 3, 1], [1, 3, 2]] {
        let mut r2 = Rib::new(false, 1);
        for n in [1, 2, 3] {
            r2.peer_up(r.peers[r.peer_index[&id(n)] as usize].info.clone());
        }
        for n in order {
            let a = [&p1, &p2, &p3][n as usize - 1];
            announce(&mut r2, n, "10.0.0.0/8", a);
        }
        assert_eq!(best_peer(&r2, "10.0.0.0/8"), id(2), "order {order:?}");
    }
    for (n, a) in [(1, &p1), (2, &p2), (3, &p3)] {
        announce(&mut r, n, "10.0.0.0/8", a);
    }
    // Withdrawing p3, which is not selected, makes p1 the best of AS 100, and p1 beats
    // p2 on router id: a change although p3 was never in the selection.
    assert_eq!(
        r.update(id(3), vec![], &[net("10.0.0.0/8")]),
        vec![set("10.0.0.0/8", &p1, 1, &["192.0.2.1"])]
    );
    // Same through peer_down.
    announce(&mut r, 3, "10.0.0.0/8", &p3);
    assert_eq!(best_peer(&r, "10.0.0.0/8"), id(2));
    assert_eq!(
        r.peer_down(id(3)),
        vec![set("10.0.0.0/8", &p1, 1, &["192.0.2.1"])]
    );
}

#[test]
fn best_path_ebgp_over_ibgp() {
    let mut r = Rib::new(false, 1);
    r.peer_up(info(1, LOCAL_AS)); // iBGP, lower router id
    r.peer_up(info(2, 65515));
    // Equal length: the iBGP path carries the same AS path.
    let a = attrs("192.0.2.1", &[65515]);
    let b = attrs("192.0.2.2", &[65515]);
    assert_eq!(duel(&mut r, &a, &b), id(2));
}

#[test]
fn best_path_router_id_then_address() {
    let mut r = Rib::new(false, 1);
    let mut p1 = info(1, 65515);
    p1.router_id = Ipv4Addr::new(9, 9, 9, 9);
    r.peer_up(p1);
    r.peer_up(info(2, 65515));
    let a = attrs("192.0.2.1", &[65515]);
    let b = attrs("192.0.2.2", &[65515]);
    assert_eq!(duel(&mut r, &a, &b), id(2));
    // Same router id (two sessions to one route server): lower address.
    let mut r = Rib::new(false, 1);
    let mut p1 = info(1, 65515);
    let mut p2 = info(2, 65515);
    p1.router_id = Ipv4Addr::new(9, 9, 9, 9);
    p2.router_id = p1.router_id;
    r.peer_up(p2);
    r.peer_up(p1);
    assert_eq!(duel(&mut r, &b, &a), id(1));
}

#[test]
fn multipath_two_peers_two_next_hops() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515, 64512]);
    let b = attrs("192.0.2.2", &[65515, 64513]); // other content, same length
    announce(&mut r, 1, "10.0.0.0/8", &a);
    assert_eq!(
        announce(&mut r, 2, "10.0.0.0/8", &b),
        vec![set("10.0.0.0/8", &a, 1, &["192.0.2.1", "192.0.2.2"])]
    );
    let paths = r.paths(&net("10.0.0.0/8"));
    assert_eq!(
        paths
            .iter()
            .map(|(p, _, best, mp)| (*p, *best, *mp))
            .collect::<Vec<_>>(),
        vec![(id(1), true, true), (id(2), false, true)]
    );
    // Without multipath: only the best.
    let mut r1 = rib(false);
    announce(&mut r1, 1, "10.0.0.0/8", &a);
    assert!(announce(&mut r1, 2, "10.0.0.0/8", &b).is_empty());
    assert_eq!(nexthops(&r1, "10.0.0.0/8"), vec![ip("192.0.2.1")]);
    let paths = r1.paths(&net("10.0.0.0/8"));
    assert_eq!((paths[1].2, paths[1].3), (false, false));
}

#[test]
fn multipath_longer_path_drops_out() {
    // An active/passive NVA pair: the passive one prepends.
    let mut r = rib(true);
    let active = attrs("192.0.2.1", &[65515, 64512]);
    let passive = attrs("192.0.2.2", &[65515, 64512, 64512]);
    announce(&mut r, 1, "10.0.0.0/8", &active);
    assert!(announce(&mut r, 2, "10.0.0.0/8", &passive).is_empty());
    assert_eq!(nexthops(&r, "10.0.0.0/8"), vec![ip("192.0.2.1")]);
    // The passive one stops prepending: ECMP.
    let equal = attrs("192.0.2.2", &[65515, 64512]);
    assert_eq!(
        announce(&mut r, 2, "10.0.0.0/8", &equal),
        vec![set("10.0.0.0/8", &active, 1, &["192.0.2.1", "192.0.2.2"])]
    );
    // The active one fails: the other takes over alone.
    assert_eq!(
        r.update(id(1), vec![], &[net("10.0.0.0/8")]),
        vec![set("10.0.0.0/8", &equal, 2, &["192.0.2.2"])]
    );
}

#[test]
fn multipath_ties_down_to_ebgp_ibgp() {
    let mut r = Rib::new(true, 8);
    r.peer_up(info(1, 65515));
    r.peer_up(info(2, 65515));
    r.peer_up(info(3, LOCAL_AS)); // iBGP
    r.peer_up(info(4, 65520));
    let a = attrs("192.0.2.1", &[65515, 1]);
    announce(&mut r, 1, "10.0.0.0/8", &a);
    // Higher MED from the same neighbour AS: out.
    announce(
        &mut r,
        2,
        "10.0.0.0/8",
        &with(&attrs("192.0.2.2", &[65515, 1]), |a| a.med = Some(5)),
    );
    // iBGP: out.
    announce(&mut r, 3, "10.0.0.0/8", &attrs("192.0.2.3", &[65515, 1]));
    // Other neighbour AS with a MED: MED not compared, in.
    announce(
        &mut r,
        4,
        "10.0.0.0/8",
        &with(&attrs("192.0.2.4", &[65520, 1]), |a| a.med = Some(50)),
    );
    assert_eq!(
        nexthops(&r, "10.0.0.0/8"),
        vec![ip("192.0.2.1"), ip("192.0.2.4")]
    );
    // Lower origin or local pref elsewhere: out.
    r.update(
        id(4),
        vec![(
            net("10.0.0.0/8"),
            with(&attrs("192.0.2.4", &[65520, 1]), |a| a.origin = Origin::Egp),
        )],
        &[],
    );
    assert_eq!(nexthops(&r, "10.0.0.0/8"), vec![ip("192.0.2.1")]);
    r.update(
        id(4),
        vec![(
            net("10.0.0.0/8"),
            with(&attrs("192.0.2.4", &[65520, 1]), |a| {
                a.local_pref = Some(99)
            }),
        )],
        &[],
    );
    assert_eq!(nexthops(&r, "10.0.0.0/8"), vec![ip("192.0.2.1")]);
    r.update(
        id(4),
        vec![(
            net("10.0.0.0/8"),
            with(&attrs("192.0.2.4", &[65520, 1]), |a| {
                a.local_pref = Some(100)
            }),
        )],
        &[],
    );
    assert_eq!(nexthops(&r, "10.0.0.0/8").len(), 2);
}

#[test]
fn multipath_same_next_hop_and_cap() {
    // Two route-server sessions reflecting the same next hop: one next hop.
    let mut r = rib(true);
    let a = attrs("192.0.2.9", &[65515]);
    announce(&mut r, 1, "10.0.0.0/8", &a);
    assert!(announce(&mut r, 2, "10.0.0.0/8", &attrs("192.0.2.9", &[65515])).is_empty());
    assert_eq!(nexthops(&r, "10.0.0.0/8"), vec![ip("192.0.2.9")]);
    assert!(r.paths(&net("10.0.0.0/8")).iter().all(|p| p.3));
    // Four peers, max_paths 2: the best and the next by router id.
    let mut r = Rib::new(true, 2);
    for n in [4, 3, 2, 1] {
        r.peer_up(info(n, 65515));
        announce(
            &mut r,
            n,
            "10.0.0.0/8",
            &attrs(&format!("192.0.2.{n}"), &[65515]),
        );
    }
    assert_eq!(
        nexthops(&r, "10.0.0.0/8"),
        vec![ip("192.0.2.1"), ip("192.0.2.2")]
    );
    // The best goes: 2 and 3.
    assert_eq!(
        r.peer_down(id(1)),
        vec![set(
            "10.0.0.0/8",
            &attrs("192.0.2.2", &[65515]),
            2,
            &["192.0.2.2", "192.0.2.3"]
        )]
    );
    // A path outside the capped set changes: no change.
    assert!(announce(&mut r, 4, "10.0.0.0/8", &attrs("192.0.2.44", &[65515])).is_empty());
    // IPv6 next hops sort after IPv4 ones and are deduplicated too.
    let mut r = rib(true);
    let v6 = Arc::new(PathAttrs {
        next_hop: Some(NextHop::V6 {
            global: "2001:db8::2".parse().unwrap(),
            link_local: Some("fe80::2".parse().unwrap()),
        }),
        ..PathAttrs::default()
    });
    announce(&mut r, 2, "2001:db8:1::/48", &v6);
    announce(
        &mut r,
        1,
        "2001:db8:1::/48",
        &with(&v6, |a| a.next_hop = Some(NextHop::from(ip("2001:db8::1")))),
    );
    assert_eq!(
        nexthops(&r, "2001:db8:1::/48"),
        vec![ip("2001:db8::1"), ip("2001:db8::2")]
    );
}

#[test]
fn non_selected_path_changes_are_silent() {
    let mut r = rib(true);
    let best = attrs("192.0.2.1", &[65515]);
    announce(&mut r, 1, "10.0.0.0/8", &best);
    let worse = attrs("192.0.2.2", &[65515, 1]);
    assert!(announce(&mut r, 2, "10.0.0.0/8", &worse).is_empty());
    // Another worse path: still nothing.
    assert!(announce(&mut r, 2, "10.0.0.0/8", &attrs("192.0.2.3", &[65515, 1, 2])).is_empty());
    assert!(r.update(id(2), vec![], &[net("10.0.0.0/8")]).is_empty());
    assert_eq!(r.prefix_count(id(2)), 0);
    // Peer 2 going down with only non-selected paths: nothing.
    announce(&mut r, 2, "10.0.0.0/8", &worse);
    assert!(r.peer_down(id(2)).is_empty());
    assert_eq!(r.len(), 1);
}

#[test]
fn batch_compares_with_before_the_batch() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515]);
    announce(&mut r, 1, "10.0.0.0/8", &a);
    // Withdrawn and re-announced in one UPDATE, same attributes: nothing.
    let same = r.update(
        id(1),
        vec![(net("10.0.0.0/8"), a.clone())],
        &[net("10.0.0.0/8")],
    );
    assert!(same.is_empty());
    // Announced twice in one batch: the last wins, one change.
    let b = attrs("192.0.2.5", &[65515]);
    let changes = r.update(
        id(1),
        vec![
            (net("10.0.0.0/8"), attrs("192.0.2.4", &[65515])),
            (net("10.0.0.0/8"), b.clone()),
            (net("10.1.0.0/16"), b.clone()),
        ],
        &[],
    );
    assert_eq!(
        changes,
        vec![
            set("10.0.0.0/8", &b, 1, &["192.0.2.5"]),
            set("10.1.0.0/16", &b, 1, &["192.0.2.5"])
        ]
    );
    assert_eq!(r.prefix_count(id(1)), 2);
    // Host bits are ignored.
    assert_eq!(
        r.update(id(1), vec![], &[net("10.1.2.3/16")]),
        vec![RibChange::Removed {
            prefix: net("10.1.0.0/16")
        }]
    );
}

#[test]
fn peer_down_changes() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515]);
    let b = attrs("192.0.2.2", &[65515]);
    let b_long = attrs("192.0.2.2", &[65515, 1]);
    announce(&mut r, 1, "10.0.0.0/8", &a); // only peer 1
    announce(&mut r, 1, "10.1.0.0/16", &a); // ECMP with 2
    announce(&mut r, 2, "10.1.0.0/16", &b);
    announce(&mut r, 1, "10.2.0.0/16", &a); // peer 1 best, 2 backup
    announce(&mut r, 2, "10.2.0.0/16", &b_long);
    announce(&mut r, 2, "10.3.0.0/16", &b); // only peer 2
    announce(&mut r, 1, "2001:db8::/32", &a);
    let changes: HashSet<String> = r
        .peer_down(id(1))
        .iter()
        .map(|c| format!("{c:?}"))
        .collect();
    let want: HashSet<String> = [
        RibChange::Removed {
            prefix: net("10.0.0.0/8"),
        },
        set("10.1.0.0/16", &b, 2, &["192.0.2.2"]),
        set("10.2.0.0/16", &b_long, 2, &["192.0.2.2"]),
        RibChange::Removed {
            prefix: net("2001:db8::/32"),
        },
    ]
    .iter()
    .map(|c| format!("{c:?}"))
    .collect();
    assert_eq!(changes, want);
    assert_eq!(r.prefix_count(id(1)), 0);
    assert_eq!(r.prefix_count(id(2)), 3);
    assert_eq!(r.len(), 3);
    // Down again, or an unknown peer: nothing.
    assert!(r.peer_down(id(1)).is_empty());
    assert!(r.peer_down(id(99)).is_empty());
    // Back up: its routes come back.
    r.peer_up(info(1, 65515));
    assert_eq!(
        announce(&mut r, 1, "10.1.0.0/16", &a),
        vec![set("10.1.0.0/16", &a, 1, &["192.0.2.1", "192.0.2.2"])]
    );
}

#[test]
fn graceful_restart_stale_and_sweep() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515]);
    let b = attrs("192.0.2.2", &[65515]);
    for p in ["10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "2001:db8::/32"] {
        announce(&mut r, 1, p, &a);
    }
    announce(&mut r, 2, "10.2.0.0/16", &b);
    // Session lost with graceful restart: everything stays, nothing changes.
    r.mark_stale(id(1));
    assert_eq!((r.prefix_count(id(1)), r.stale_count(id(1))), (4, 4));
    assert_eq!(nexthops(&r, "10.2.0.0/16").len(), 2);
    // Back: re-announces two of them (one unchanged, one changed), withdraws one.
    r.peer_up(info(1, 65515));
    assert!(announce(&mut r, 1, "10.0.0.0/8", &a).is_empty());
    let a2 = attrs("192.0.2.11", &[65515]);
    assert_eq!(announce(&mut r, 1, "2001:db8::/32", &a2).len(), 1);
    assert_eq!(r.stale_count(id(1)), 2);
    assert_eq!(r.update(id(1), vec![], &[net("10.1.0.0/16")]).len(), 1);
    assert_eq!((r.prefix_count(id(1)), r.stale_count(id(1))), (3, 1));
    // End-of-RIB for IPv6 only: no stale IPv6 path, nothing goes.
    assert!(r.sweep_stale_family(id(1), Family::Ipv6Unicast).is_empty());
    // End-of-RIB for IPv4: 10.2.0.0/16 (never re-announced) goes, peer 2 remains.
    assert_eq!(
        r.sweep_stale_family(id(1), Family::Ipv4Unicast),
        vec![set("10.2.0.0/16", &b, 2, &["192.0.2.2"])]
    );
    assert_eq!((r.prefix_count(id(1)), r.stale_count(id(1))), (2, 0));
    assert!(r.sweep_stale(id(1)).is_empty());
    assert_eq!(best_peer(&r, "10.0.0.0/8"), id(1));
    // Restart timer expiry without any re-announcement: sweep removes everything.
    r.mark_stale(id(1));
    let changes = r.sweep_stale(id(1));
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|c| matches!(c, RibChange::Removed { .. }))
    );
    assert_eq!(r.prefix_count(id(1)), 0);
    // peer_down also removes stale paths.
    announce(&mut r, 1, "10.5.0.0/16", &a);
    r.mark_stale(id(1));
    assert_eq!(r.peer_down(id(1)).len(), 1);
    assert_eq!((r.prefix_count(id(1)), r.stale_count(id(1))), (0, 0));
}

#[test]
fn peer_up_with_new_router_id_re_ranks_stale_paths() {
    let mut r = rib(false);
    let a = attrs("192.0.2.1", &[65515]);
    let b = attrs("192.0.2.2", &[65515]);
    announce(&mut r, 1, "10.0.0.0/8", &a);
    announce(&mut r, 2, "10.0.0.0/8", &b);
    assert_eq!(best_peer(&r, "10.0.0.0/8"), id(1));
    r.mark_stale(id(1));
    let mut p1 = info(1, 65515);
    p1.router_id = Ipv4Addr::new(9, 9, 9, 9);
    assert_eq!(
        r.peer_up(p1),
        vec![set("10.0.0.0/8", &b, 2, &["192.0.2.2"])]
    );
    // Same ranking again: nothing.
    let mut p1 = info(1, 65515);
    p1.router_id = Ipv4Addr::new(9, 9, 9, 9);
    assert!(r.peer_up(p1).is_empty());
}

#[test]
fn unknown_peer_ranks_last() {
    let mut r = rib(true);
    let a = attrs("192.0.2.7", &[65515]);
    assert_eq!(
        announce(&mut r, 7, "10.0.0.0/8", &a),
        vec![set("10.0.0.0/8", &a, 7, &["192.0.2.7"])]
    );
    announce(&mut r, 2, "10.0.0.0/8", &attrs("192.0.2.2", &[65515]));
    assert_eq!(best_peer(&r, "10.0.0.0/8"), id(2));
    assert_eq!(r.prefix_count(id(7)), 1);
}

#[test]
fn best_routes_and_routes() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515]);
    let b = attrs("192.0.2.2", &[65515]);
    announce(&mut r, 1, "10.0.0.0/8", &a);
    announce(&mut r, 2, "10.0.0.0/8", &b);
    announce(&mut r, 2, "2001:db8::/32", &b);
    let mut best: Vec<(IpNet, PeerId)> = r.best_routes().map(|(p, _, peer)| (p, peer)).collect();
    best.sort();
    assert_eq!(
        best,
        vec![(net("10.0.0.0/8"), id(1)), (net("2001:db8::/32"), id(2))]
    );
    let mut all: Vec<RibChange> = r.routes().collect();
    all.sort_by_key(|c| c.prefix());
    assert_eq!(
        all,
        vec![
            set("10.0.0.0/8", &a, 1, &["192.0.2.1", "192.0.2.2"]),
            set("2001:db8::/32", &b, 2, &["192.0.2.2"])
        ]
    );
    assert!(r.paths(&net("10.9.0.0/16")).is_empty());
    assert!(r.selection(&net("10.9.0.0/16")).is_none());
}

#[test]
fn attributes_stay_shared() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515]);
    let announced: Vec<(IpNet, Arc<PathAttrs>)> = (0..1000u32)
        .map(|i| {
            (
                IpNet::V4(ipnet::Ipv4Net::new((0x0a00_0000 + (i << 8)).into(), 24).unwrap()),
                a.clone(),
            )
        })
        .collect();
    assert_eq!(r.update(id(1), announced, &[]).len(), 1000);
    // 1000 paths plus our own reference (the changes were dropped).
    assert_eq!(Arc::strong_count(&a), 1001);
}

/// 1M IPv4 prefixes from two peers (100 distinct attribute sets, batches of 10k),
/// then one peer down. `cargo test --release -p nva-userspace --lib rib::tests::timing
/// -- --ignored --nocapture`
#[test]
#[ignore]
fn timing_full_table_two_peers() {
    const N: u32 = 1_000_000;
    fn rss_mib() -> f64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: f64 = s
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        pages * 4096.0 / (1 << 20) as f64
    }
    // A realistic-ish spread: /24s mostly, then /16-/23, scattered over the space.
    let prefixes: Vec<IpNet> = {
        let mut seen = HashSet::new();
        (0u32..)
            .map(|i| {
                let len = [16, 20, 22, 23, 24, 24, 24, 24, 24, 24][i as usize % 10];
                let addr = Ipv4Addr::from(0x0100_0000u32.wrapping_add(i.wrapping_mul(0x9e37_79b9)));
                IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc())
            })
            .filter(|p| seen.insert(*p))
            .take(N as usize)
            .collect()
    };
    let n = prefixes.len();
    let rss0 = rss_mib();
    let mut r = rib(true);
    for (peer, nh) in [(1u8, "192.0.2.1"), (2, "192.0.2.2")] {
        let sets: Vec<Arc<PathAttrs>> = (0..100).map(|i| attrs(nh, &[65515, 64512 + i])).collect();
        let t = Instant::now();
        let mut changes = 0;
        let mut worst = std::time::Duration::ZERO;
        for (b, chunk) in prefixes.chunks(10_000).enumerate() {
            let batch: Vec<(IpNet, Arc<PathAttrs>)> =
                chunk.iter().map(|p| (*p, sets[b % 100].clone())).collect();
            let tb = Instant::now();
            changes += r.update(id(peer), batch, &[]).len();
            worst = worst.max(tb.elapsed());
        }
        println!(
            "peer {peer}: {n} prefixes in {:?} ({:.0} prefixes/s), worst 10k batch {:?}, {changes} changes",
            t.elapsed(),
            n as f64 / t.elapsed().as_secs_f64(),
            worst
        );
    }
    assert_eq!(r.len(), n);
    // The table's own size: buckets (key, paths, control byte) plus the lists of two
    // (a 16-byte header and 2 paths of 16 bytes, in a 64-byte malloc chunk).
    assert_eq!(std::mem::size_of::<Paths>(), 16);
    let table = r.v4.capacity() * (std::mem::size_of::<(ipnet::Ipv4Net, Paths)>() + 1);
    println!(
        "memory for {n} prefixes x 2 peers: RSS +{:.0} MiB; table {:.0} MiB + paths ~{:.0} MiB",
        rss_mib() - rss0,
        table as f64 / (1 << 20) as f64,
        (r.v4.len() * 64) as f64 / (1 << 20) as f64
    );
    let t = Instant::now();
    let best: usize = r.best_routes().count();
    println!("best_routes over {best}: {:?}", t.elapsed());
    let t = Instant::now();
    r.mark_stale(id(1));
    let swept = r.sweep_stale_family(id(1), Family::Ipv6Unicast);
    println!("mark_stale + empty IPv6 sweep: {:?}", t.elapsed());
    assert!(swept.is_empty());
    let t = Instant::now();
    let changes = r.peer_down(id(1));
    println!(
        "peer_down of {n} prefixes: {:?}, {} changes",
        t.elapsed(),
        changes.len()
    );
    assert_eq!(changes.len(), n);
    let t = Instant::now();
    let changes = r.peer_down(id(2));
    println!(
        "peer_down of the last peer: {:?}, {} changes",
        t.elapsed(),
        changes.len()
    );
    assert!(r.is_empty());
}

/// RFC 4271 §9.1.2: a shorter path whose next hop does not resolve must not hide a
/// valid longer one; the prefix comes back to it once it resolves again.
#[test]
fn unreachable_next_hop_is_not_eligible() {
    let mut r = rib(true);
    let short = attrs("192.0.2.1", &[65515]);
    let long = attrs("192.0.2.2", &[65515, 65002]);
    announce(&mut r, 1, "10.1.0.0/16", &short);
    announce(&mut r, 2, "10.1.0.0/16", &long);
    assert_eq!(best_peer(&r, "10.1.0.0/16"), id(1));
    let changes = r.set_reachability(&[(ip("192.0.2.1"), false)]);
    assert_eq!(changes, vec![set("10.1.0.0/16", &long, 2, &["192.0.2.2"])]);
    assert!(!r.reachable(ip("192.0.2.1")));
    // Shown, but not best.
    let paths = r.paths(&net("10.1.0.0/16"));
    assert!(paths.iter().any(|(p, _, best, _)| *p == id(2) && *best));
    assert!(
        paths
            .iter()
            .any(|(p, _, best, mp)| *p == id(1) && !best && !mp)
    );
    assert_eq!(r.best_routes().count(), 1);
    // Both unreachable: nothing selected, nothing exported.
    let changes = r.set_reachability(&[(ip("192.0.2.2"), false)]);
    assert_eq!(
        changes,
        vec![RibChange::Removed {
            prefix: net("10.1.0.0/16")
        }]
    );
    assert!(r.selection(&net("10.1.0.0/16")).is_none());
    assert_eq!(r.best_routes().count(), 0);
    assert_eq!(r.routes().count(), 0);
    // Back.
    let changes = r.set_reachability(&[(ip("192.0.2.1"), true), (ip("192.0.2.2"), true)]);
    assert_eq!(changes, vec![set("10.1.0.0/16", &short, 1, &["192.0.2.1"])]);
}

/// Equal paths: an unreachable one leaves the ECMP set, and a prefix over a next hop
/// whose resolution changed (still reachable) is reported again for re-installing.
#[test]
fn reachability_changes_the_ecmp_set_and_reports_moved_resolutions() {
    let mut r = rib(true);
    let a = attrs("192.0.2.1", &[65515]);
    let b = attrs("192.0.2.2", &[65515]);
    announce(&mut r, 1, "10.1.0.0/16", &a);
    announce(&mut r, 2, "10.1.0.0/16", &b);
    announce(&mut r, 2, "10.2.0.0/16", &b);
    assert_eq!(
        nexthops(&r, "10.1.0.0/16"),
        vec![ip("192.0.2.1"), ip("192.0.2.2")]
    );
    let changes = r.set_reachability(&[(ip("192.0.2.1"), false)]);
    assert_eq!(changes, vec![set("10.1.0.0/16", &b, 2, &["192.0.2.2"])]);
    // Reachable before and after (its route moved): both prefixes over it come back.
    let mut changes = r.set_reachability(&[(ip("192.0.2.2"), true)]);
    changes.sort_by_key(|c| c.prefix());
    assert_eq!(
        changes,
        vec![
            set("10.1.0.0/16", &b, 2, &["192.0.2.2"]),
            set("10.2.0.0/16", &b, 2, &["192.0.2.2"]),
        ]
    );
    // A new next hop marked unreachable before its first path arrives.
    r.set_unreachable_unused(ip("192.0.2.9"));
    let changes = announce(&mut r, 1, "10.3.0.0/16", &attrs("192.0.2.9", &[65515]));
    assert!(changes.is_empty());
    assert!(r.selection(&net("10.3.0.0/16")).is_none());
}
