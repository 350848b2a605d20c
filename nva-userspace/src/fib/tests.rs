//! The FIB's decisions, replayed against the recording writer (`recorder`), which
//! panics on any write that breaks make-before-break.
use std::collections::{BTreeMap, HashSet};

use nva_common::{ROUTE_BLACKHOLE, ROUTE_FORWARD};

use super::{recorder::Recorder, *};

const NS: u32 = CLASS_NORTH_SOUTH;

fn port(up: bool) -> Port {
    Port {
        name: "p1".into(),
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        up,
    }
}

fn key(last: u8) -> NhKey {
    NhKey {
        ifindex: 2,
        via: IpAddr::from([192, 0, 2, last]),
        vlan: 0,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn fib() -> Fib<Recorder> {
    Fib::new(Recorder::default())
}

fn fwd(ids: &[NhId]) -> Target {
    Target::Forward(ids.into())
}

/// The buckets of the group `prefix` forwards over in the north-south table.
fn buckets_of(fib: &Fib<Recorder>, prefix: &str) -> Vec<NhId> {
    let r = fib.dp.routes[&(NS, net(prefix))];
    assert_eq!(r.action, ROUTE_FORWARD);
    let mut b = fib.dp.groups[&r.group].to_vec();
    b.sort_unstable();
    b.dedup();
    b
}

/// Nothing left anywhere: maps, registries, stored targets.
fn assert_empty(fib: &Fib<Recorder>) {
    assert!(fib.dp.routes.is_empty(), "{:?}", fib.dp.routes);
    assert!(fib.dp.groups.is_empty(), "{:?}", fib.dp.groups);
    assert!(fib.dp.nexthops.is_empty(), "{:?}", fib.dp.nexthops);
    assert!(fib.entries.is_empty());
    assert_eq!(fib.targets.len(), 0, "stored targets leaked");
    assert!(fib.kernel_objects.is_empty());
    assert_eq!(fib.nexthops.iter().count(), 0);
}

#[test]
fn an_ecmp_route_is_written_after_its_group_and_released_before_it() {
    let mut fib = fib();
    let (a, b) = (
        fib.nexthop(key(1), &port(true)).unwrap(),
        fib.nexthop(key(2), &port(true)).unwrap(),
    );
    fib.set_route(net("198.51.100.0/24"), Source::Bgp, fwd(&[a, b]))
        .unwrap();
    fib.set_route(net("203.0.113.0/24"), Source::Bgp, fwd(&[b, a]))
        .unwrap();
    assert_eq!(buckets_of(&fib, "198.51.100.0/24"), [a, b]);
    // The same set in another order is the same group.
    assert_eq!(fib.dp.groups.len(), 1);
    assert_eq!(fib.targets.len(), 2);
    fib.remove_route(net("198.51.100.0/24"), Source::Bgp)
        .unwrap();
    assert_eq!(fib.dp.groups.len(), 1);
    fib.remove_route(net("203.0.113.0/24"), Source::Bgp)
        .unwrap();
    assert_empty(&fib);
}

#[test]
fn the_most_preferred_source_is_installed_and_the_next_takes_over() {
    let mut fib = fib();
    let (a, b) = (
        fib.nexthop(key(1), &port(true)).unwrap(),
        fib.nexthop(key(2), &port(true)).unwrap(),
    );
    let p = "198.51.100.0/24";
    fib.set_route(net(p), Source::Bgp, fwd(&[a])).unwrap();
    fib.set_route(net(p), Source::Static, fwd(&[b])).unwrap();
    assert_eq!(buckets_of(&fib, p), [b]);
    assert_eq!(
        fib.longest_match(IpAddr::from([198, 51, 100, 7]))
            .unwrap()
            .source,
        Source::Static
    );
    // A replaced route of the same source.
    fib.set_route(net(p), Source::Static, Target::Blackhole)
        .unwrap();
    assert_eq!(fib.dp.routes[&(NS, net(p))].action, ROUTE_BLACKHOLE);
    fib.remove_route(net(p), Source::Static).unwrap();
    assert_eq!(buckets_of(&fib, p), [a]);
    fib.remove_route(net(p), Source::Bgp).unwrap();
    assert_empty(&fib);
}

#[test]
fn a_dead_next_hop_leaves_its_groups_and_routes_fall_back_to_a_backup() {
    let mut fib = fib();
    let a = fib.nexthop(key(1), &port(true)).unwrap();
    let b = fib.nexthop(key(2), &port(true)).unwrap();
    let c = fib.nexthop(key(3), &port(true)).unwrap();
    fib.set_route(net("198.51.100.0/24"), Source::Bgp, fwd(&[a, b]))
        .unwrap();
    fib.set_route(net("203.0.113.0/24"), Source::Static, fwd(&[a]))
        .unwrap();
    fib.set_route(net("203.0.113.0/24"), Source::StaticBackup, fwd(&[c]))
        .unwrap();
    assert_eq!(buckets_of(&fib, "203.0.113.0/24"), [a]);
    let writes = fib.dp.writes;
    fib.update_health(key(1).via, false).unwrap();
    // Only a's buckets moved; the route over a alone fell back to c.
    assert_eq!(buckets_of(&fib, "198.51.100.0/24"), [b]);
    assert_eq!(buckets_of(&fib, "203.0.113.0/24"), [c]);
    // The next hop, one group's buckets, the backup's new group, the route, the old
    // group's release: nothing else is rewritten.
    assert_eq!(fib.dp.writes - writes, 5);
    fib.update_health(key(1).via, true).unwrap();
    assert_eq!(buckets_of(&fib, "198.51.100.0/24"), [a, b]);
    assert_eq!(buckets_of(&fib, "203.0.113.0/24"), [a]);
    // With every next hop down and no backup, the route goes (its destinations fall
    // through to a shorter prefix) unless configured to stay.
    fib.update_neighbour(2, key(2).via, None, true).unwrap();
    fib.update_health(key(1).via, false).unwrap();
    assert!(!fib.dp.routes.contains_key(&(NS, net("198.51.100.0/24"))));
    fib.update_health(key(1).via, true).unwrap();
    assert_eq!(buckets_of(&fib, "198.51.100.0/24"), [a]);
}

#[test]
fn a_route_that_cannot_be_installed_fails_alone_and_is_retried() {
    let mut fib = fib();
    let a = fib.nexthop(key(1), &port(true)).unwrap();
    let b = fib.nexthop(key(2), &port(true)).unwrap();
    fib.dp.refuse.insert(net("198.51.100.128/25"));
    fib.set_route(net("198.51.100.128/25"), Source::Bgp, fwd(&[a, b]))
        .unwrap();
    fib.set_route(net("198.51.100.0/25"), Source::Bgp, fwd(&[a]))
        .unwrap();
    assert_eq!(fib.failed_count(), 1);
    assert_eq!(fib.failed_routes()[0].1, net("198.51.100.128/25"));
    assert!(fib.dp.routes.contains_key(&(NS, net("198.51.100.0/25"))));
    // The group the failed route would have used is not kept.
    assert_eq!(fib.dp.groups.len(), 1);
    assert_eq!(fib.retry_failed(), 0);
    fib.dp.refuse.clear();
    assert_eq!(fib.retry_failed(), 1);
    assert_eq!(fib.failed_count(), 0);
    assert_eq!(buckets_of(&fib, "198.51.100.128/25"), [a, b]);
    // A failed route withdrawn meanwhile is forgotten.
    fib.dp.refuse.insert(net("192.0.2.0/24"));
    fib.set_route(net("192.0.2.0/24"), Source::Bgp, fwd(&[b]))
        .unwrap();
    fib.remove_route(net("192.0.2.0/24"), Source::Bgp).unwrap();
    assert_eq!(fib.retry_failed(), 0);
    assert_eq!(fib.failed_count(), 0);
    for p in ["198.51.100.128/25", "198.51.100.0/25"] {
        fib.remove_route(net(p), Source::Bgp).unwrap();
    }
    assert_empty(&fib);
}

#[test]
fn the_kernel_mirror_creates_objects_before_routes_name_them_and_deletes_them_after() {
    let mut fib = fib();
    fib.set_kernel_id_base(100);
    let a = fib.nexthop(key(1), &port(true)).unwrap();
    let b = fib.nexthop(key(2), &port(true)).unwrap();
    fib.set_route(net("198.51.100.0/24"), Source::Bgp, fwd(&[a, b]))
        .unwrap();
    fib.set_route(net("203.0.113.0/24"), Source::Bgp, fwd(&[a, b]))
        .unwrap();
    fib.set_route(net("192.0.2.0/24"), Source::Static, Target::Blackhole)
        .unwrap();
    // Local and connected routes are the kernel's own: not mirrored.
    fib.set_route(net("10.0.0.1/32"), Source::Local, Target::Local)
        .unwrap();
    let hops: Arc<[(IpAddr, u32)]> = [(key(1).via, 2), (key(2).via, 2)].into();
    assert_eq!(
        fib.take_kernel_ops(),
        [
            KernelOp::AddNexthop { id: 100, hops },
            KernelOp::Route(net("198.51.100.0/24"), Some(KernelRoute::Nexthop(100))),
            KernelOp::Route(net("203.0.113.0/24"), Some(KernelRoute::Nexthop(100))),
            KernelOp::Route(net("192.0.2.0/24"), Some(KernelRoute::Blackhole)),
        ]
    );
    assert_eq!(fib.kernel_plain_prefixes(), [net("192.0.2.0/24")]);
    // Moving one prefix to a new set: a new object (ids never reused), the old one
    // stays while a prefix names it.
    fib.set_route(net("203.0.113.0/24"), Source::Bgp, fwd(&[b]))
        .unwrap();
    assert_eq!(
        fib.take_kernel_ops(),
        [
            KernelOp::AddNexthop {
                id: 103,
                hops: [(key(2).via, 2)].into()
            },
            KernelOp::Route(net("203.0.113.0/24"), Some(KernelRoute::Nexthop(103))),
        ]
    );
    fib.remove_route(net("198.51.100.0/24"), Source::Bgp)
        .unwrap();
    assert_eq!(
        fib.take_kernel_ops(),
        [
            KernelOp::Route(net("198.51.100.0/24"), None),
            KernelOp::DelNexthop { id: 100, ids: 3 },
        ]
    );
    // Not mirrored when so configured. (A next hop no route names any more is freed:
    // a route names one got from `nexthop` right before, as the daemon does.)
    fib.set_mirror_bgp(false);
    let a = fib.nexthop(key(1), &port(true)).unwrap();
    fib.set_route(net("198.18.0.0/15"), Source::Bgp, fwd(&[a]))
        .unwrap();
    assert_eq!(fib.take_kernel_ops(), []);
}

/// Random route changes from several sources over several next-hop sets, checked after
/// every step against what the most preferred source offers, and all of it removed at
/// the end leaves nothing behind.
#[test]
fn random_changes_keep_the_maps_equal_to_the_preferred_routes() {
    let mut fib = fib();
    // Next-hop sets by key (an id is freed with the last route naming it and may come
    // back as another; the daemon asks for ids right before it sets a route).
    let sets: Vec<Vec<u8>> = vec![vec![1], vec![1, 2], vec![2, 3, 4], vec![5], vec![]];
    let target = |fib: &mut Fib<Recorder>, set: &[u8]| {
        if set.is_empty() {
            return Target::Blackhole;
        }
        let ids: Vec<NhId> = set
            .iter()
            .map(|k| fib.nexthop(key(*k), &port(true)).unwrap())
            .collect();
        fwd(&ids)
    };
    let prefixes: Vec<IpNet> = (0..40)
        .map(|i| net(&format!("198.{}.{}.0/24", 18 + i % 2, i)))
        .collect();
    let sources = [Source::StaticBackup, Source::Bgp, Source::Static];
    // prefix -> source -> set index
    let mut oracle: BTreeMap<IpNet, BTreeMap<Source, usize>> = BTreeMap::new();
    let mut rng = nva_testkit::Rng::new(7);
    let mut rnd = |n: usize| rng.below(n as u64) as usize;
    // All five next hops stay named by a route outside the test's prefixes, so their
    // health survives while the test's routes come and go.
    let all = target(&mut fib, &[1, 2, 3, 4, 5]);
    fib.set_route(net("100.64.0.0/10"), Source::Bgp, all)
        .unwrap();
    let mut down: HashSet<u8> = HashSet::new();
    for step in 0..3000 {
        let p = prefixes[rnd(prefixes.len())];
        let s = sources[rnd(sources.len())];
        if rnd(8) == 0 {
            let k = 1 + rnd(5) as u8;
            let healthy = down.contains(&k);
            fib.update_health(key(k).via, healthy).unwrap();
            if healthy {
                down.remove(&k);
            } else {
                down.insert(k);
            }
        } else if rnd(3) == 0 {
            fib.remove_route(p, s).unwrap();
            oracle.entry(p).or_default().remove(&s);
        } else {
            let t = rnd(sets.len());
            let target = target(&mut fib, &sets[t]);
            fib.set_route(p, s, target).unwrap();
            oracle.entry(p).or_default().insert(s, t);
        }
        let _ = fib.take_kernel_ops();
        for (p, offered) in &oracle {
            // The most preferred route with a live next hop (a blackhole always is).
            let want = offered
                .iter()
                .rev()
                .map(|(_, t)| &sets[*t])
                .find(|set| set.is_empty() || set.iter().any(|k| !down.contains(k)));
            let have = fib.dp.routes.get(&(NS, *p));
            match (want, have) {
                (None, None) => {}
                (Some(set), Some(r)) if set.is_empty() => assert_eq!(r.action, ROUTE_BLACKHOLE),
                (Some(set), Some(r)) => {
                    assert_eq!(r.action, ROUTE_FORWARD, "step {step} {p}");
                    let mut want: Vec<NhId> = set
                        .iter()
                        .filter(|k| !down.contains(k))
                        .map(|k| fib.nh_ids[&key(*k)])
                        .collect();
                    want.sort_unstable();
                    let mut got = fib.dp.groups[&r.group].to_vec();
                    got.sort_unstable();
                    got.dedup();
                    assert_eq!(got, want, "step {step} {p}");
                }
                (want, have) => panic!("step {step} {p}: want {want:?}, have {have:?}"),
            }
        }
    }
    for (p, offered) in oracle {
        for s in offered.keys() {
            fib.remove_route(p, *s).unwrap();
        }
    }
    fib.remove_route(net("100.64.0.0/10"), Source::Bgp).unwrap();
    assert!(fib.dp.routes.is_empty() && fib.dp.groups.is_empty());
    assert!(fib.entries.is_empty());
    assert_eq!(fib.targets.len(), 0);
    assert!(fib.kernel_objects.is_empty());
    // Every mirrored object created was deleted again.
    assert_eq!(fib.nexthops.iter().count(), 0);
}
