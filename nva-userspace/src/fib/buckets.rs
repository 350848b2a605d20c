//! Resilient ECMP bucket allocation.
//!
//! A group has `ECMP_BUCKETS` buckets; each names one next hop. When the set of live
//! next hops changes, buckets of next hops that stay keep their owner up to each
//! member's fair share, and only orphaned or surplus buckets are handed out again.
//! So removing a next hop moves exactly its own flows, and adding one takes only the
//! buckets it needs for its share.
use std::collections::BTreeMap;

use nva_common::ECMP_BUCKETS;

/// A next-hop id as stored in buckets; 0 means "none".
pub type NhId = u16;

/// Reassigns `buckets` to the `members` (live next-hop ids) with minimal movement.
/// With no members every bucket becomes 0.
pub fn rebalance(buckets: &mut [NhId; ECMP_BUCKETS], members: &[NhId]) {
    let mut members: Vec<NhId> = members.iter().copied().filter(|&m| m != 0).collect();
    members.sort_unstable();
    members.dedup();
    if members.is_empty() {
        *buckets = [0; ECMP_BUCKETS];
        return;
    }
    let n = members.len();
    // Fair share: ECMP_BUCKETS / n each, the first (ECMP_BUCKETS % n) members get one more.
    let target: BTreeMap<NhId, usize> = members
        .iter()
        .enumerate()
        .map(|(i, &m)| (m, ECMP_BUCKETS / n + usize::from(i < ECMP_BUCKETS % n)))
        .collect();
    let mut kept: BTreeMap<NhId, usize> = members.iter().map(|&m| (m, 0)).collect();
    let mut free = Vec::new();
    for (i, owner) in buckets.iter().enumerate() {
        match kept.get_mut(owner) {
            Some(count) if *count < target[owner] => *count += 1,
            _ => free.push(i),
        }
    }
    // Hand free buckets to members below their share, in member order.
    let mut free = free.into_iter();
    for &m in &members {
        let missing = target[&m] - kept[&m];
        for _ in 0..missing {
            let i = free.next().expect("bucket shares add up to ECMP_BUCKETS");
            buckets[i] = m;
        }
    }
}

/// Number of buckets per next hop.
pub fn shares(buckets: &[NhId; ECMP_BUCKETS]) -> BTreeMap<NhId, usize> {
    let mut out = BTreeMap::new();
    for &b in buckets {
        *out.entry(b).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(members: &[NhId]) -> [NhId; ECMP_BUCKETS] {
        let mut b = [0; ECMP_BUCKETS];
        rebalance(&mut b, members);
        b
    }

    #[test]
    fn spreads_evenly() {
        for n in 1..=7u16 {
            let members: Vec<NhId> = (1..=n).collect();
            let s = shares(&fresh(&members));
            assert_eq!(s.len(), n as usize);
            let (min, max) = (s.values().min().unwrap(), s.values().max().unwrap());
            assert!(max - min <= 1, "n={n}: {s:?}");
            assert!(!s.contains_key(&0));
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_buckets() {
        let before = fresh(&[1, 2, 3, 4]);
        let mut after = before;
        rebalance(&mut after, &[1, 2, 4]);
        for i in 0..ECMP_BUCKETS {
            if before[i] != 3 {
                assert_eq!(before[i], after[i], "bucket {i} moved");
            } else {
                assert_ne!(after[i], 3);
            }
        }
        let s = shares(&after);
        assert!(s.values().max().unwrap() - s.values().min().unwrap() <= 1);
    }

    #[test]
    fn adding_a_member_takes_only_its_share() {
        let before = fresh(&[1, 2, 3]);
        let mut after = before;
        rebalance(&mut after, &[1, 2, 3, 4]);
        let moved = (0..ECMP_BUCKETS).filter(|&i| before[i] != after[i]).count();
        assert_eq!(moved, shares(&after)[&4]);
        assert!(
            (0..ECMP_BUCKETS).all(|i| before[i] == after[i] || after[i] == 4),
            "only buckets given to the new member change"
        );
    }

    #[test]
    fn remove_then_restore_is_stable_for_others() {
        let start = fresh(&[5, 6, 7]);
        let mut b = start;
        rebalance(&mut b, &[5, 7]);
        rebalance(&mut b, &[5, 6, 7]);
        for i in 0..ECMP_BUCKETS {
            if start[i] != 6 && b[i] != 6 {
                assert_eq!(start[i], b[i]);
            }
        }
        assert_eq!(shares(&b), shares(&start));
    }

    #[test]
    fn empty_group_has_no_next_hop() {
        let mut b = fresh(&[1, 2]);
        rebalance(&mut b, &[]);
        assert!(b.iter().all(|&x| x == 0));
        rebalance(&mut b, &[0]);
        assert!(b.iter().all(|&x| x == 0));
    }
}
