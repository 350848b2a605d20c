//! Test support shared by the DIR-24-8 and multibit-trie tests: a seeded RNG, the
//! reference longest-prefix match, and the concurrent-reader harness.
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use ipnet::{Ipv4Net, Ipv6Net};
use nva_common::DIR_EXT;

use super::routes::Prefix;

/// The test kit's seeded RNG (these tests use its xorshift64 streams).
pub use nva_testkit::Rng;

/// A prefix the reference can match addresses against.
pub trait Matches: Prefix {
    type Addr;
    fn has(&self, addr: &Self::Addr) -> bool;
}

impl Matches for Ipv4Net {
    type Addr = std::net::Ipv4Addr;
    fn has(&self, addr: &Self::Addr) -> bool {
        self.contains(addr)
    }
}

impl Matches for Ipv6Net {
    type Addr = std::net::Ipv6Addr;
    fn has(&self, addr: &Self::Addr) -> bool {
        self.contains(addr)
    }
}

/// The reference: longest prefix match over a plain list (0 = no route).
pub fn reference<P: Matches>(routes: &HashMap<P, u32>, addr: P::Addr) -> u32 {
    routes
        .iter()
        .filter(|(p, _)| p.has(&addr))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// Make-before-break harness: `churn` inserts (values 2..=100) and removes routes under
/// a covering route (value 1) while another thread runs `lookup` on random numbers as
/// fast as it can. Every lookup must find a route entry: never 0 ("no route"), never a
/// block pointer, never a value nobody wrote.
pub fn assert_lookups_stay_valid<A: std::fmt::Debug + Send + 'static>(
    lookup: impl Fn(u64) -> (A, u32) + Send + 'static,
    churn: impl FnOnce(),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = Rng::xorshift(0x1234_5678_9abc_def1);
            let (mut reads, mut bad) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let (addr, v) = lookup(rng.next_u64());
                if v == 0 || v & DIR_EXT != 0 || v > 100 {
                    bad.push((addr, v));
                }
                reads += 1;
            }
            (reads, bad)
        })
    };
    churn();
    stop.store(true, Ordering::Relaxed);
    let (reads, bad) = reader.join().unwrap();
    assert!(reads > 1000, "the reader ran ({reads} lookups)");
    assert!(
        bad.is_empty(),
        "{} bad lookups, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

/// The writer side of the harness: `ops` random inserts (of prefixes built by
/// `prefix(random, length)`) and removals (one in three).
pub fn churn_routes<P: Copy>(
    ops: usize,
    lens: &[u8],
    prefix: impl Fn(u64, u8) -> P,
    mut insert: impl FnMut(P, u32),
    mut remove: impl FnMut(P),
) {
    let mut rng = Rng::xorshift(0x9e37_79b9_7f4a_7c15);
    let mut present: Vec<P> = Vec::new();
    for _ in 0..ops {
        let r = rng.next_u64();
        if r.is_multiple_of(3) && !present.is_empty() {
            remove(present.swap_remove((r >> 8) as usize % present.len()));
        } else {
            let p = prefix(rng.next_u64(), lens[(r >> 2) as usize % lens.len()]);
            insert(p, 2 + (r >> 40) as u32 % 99);
            present.push(p);
        }
    }
}
