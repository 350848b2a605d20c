//! DIR-24-8 IPv4 FIB writer (the layout is in nva-common).
//!
//! `Dir24` keeps, beside the two tables, the prefix length that set every entry
//! ("depth"), so inserting a prefix only overwrites entries owned by shorter prefixes
//! and removing one hands its entries back to the covering prefix — the classic DPDK
//! scheme. Entries are written one u32 at a time (a single atomic store), and a /24
//! is only switched to its 256-entry block after the block is filled, so the data
//! plane never sees a half-written or missing route while a route changes.
use std::collections::VecDeque;

use anyhow::{Result, bail};
use ipnet::Ipv4Net;
use nva_common::{DIR_EXT, DIR24_ENTRIES};

pub use super::cells::{Cells, MmapCells};
use super::routes::{Prefix, Routes};

pub struct Dir24<C: Cells> {
    tbl24: C,
    tbl8: C,
    /// Prefix length + 1 that set each entry (0 = no route). For an entry pointing to a
    /// block: the depth of the route covering the whole /24.
    depth24: Vec<u8>,
    depth8: Vec<u8>,
    /// Prefixes longer than /24 per block; a block is freed when it has none.
    block_routes: Vec<u32>,
    /// Free blocks, reused oldest first: a lookup that read the pointer to a block just
    /// before it was freed still finds the block's last (still correct) entries.
    free_blocks: VecDeque<u32>,
    /// Blocks in `tbl8`.
    blocks: u32,
    routes: Routes<Ipv4Net>,
}

impl<C: Cells> Dir24<C> {
    /// `tbl24` must hold DIR24_ENTRIES cells and `tbl8` `blocks` * 256, all zero.
    pub fn new(tbl24: C, tbl8: C, blocks: u32) -> Self {
        Self {
            tbl24,
            tbl8,
            depth24: vec![0; DIR24_ENTRIES as usize],
            depth8: vec![0; blocks as usize * 256],
            block_routes: vec![0; blocks as usize],
            free_blocks: (0..blocks).collect(),
            blocks,
            routes: Routes::default(),
        }
    }

    /// Blocks in all.
    pub fn blocks_total(&self) -> usize {
        self.blocks as usize
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Blocks in use for prefixes longer than /24.
    pub fn blocks_used(&self) -> usize {
        self.blocks as usize - self.free_blocks.len()
    }

    /// Inserts or replaces `prefix` with the (non-zero, non-extended) entry `value`.
    pub fn insert(&mut self, prefix: Ipv4Net, value: u32) -> Result<()> {
        let prefix = prefix.trunc();
        if value == 0 || value & DIR_EXT != 0 {
            bail!("invalid DIR-24-8 entry {value:#x}");
        }
        let len = prefix.prefix_len();
        let addr = u32::from(prefix.network());
        let depth = len + 1;
        if len <= 24 {
            let first = (addr >> 8) as usize;
            for i in first..first + (1usize << (24 - len)) {
                self.set_covering_24(i, value, depth, |d| d <= depth);
            }
            self.routes.insert(prefix, value);
            return Ok(());
        }
        let i = (addr >> 8) as usize;
        let block = self.block_of(i)?;
        let first = block * 256 + (addr & 0xff) as usize;
        for j in first..first + (1usize << (32 - len)) {
            if self.depth8[j] <= depth {
                self.tbl8.set(j, value);
                self.depth8[j] = depth;
            }
        }
        if self.routes.insert(prefix, value) {
            self.block_routes[block] += 1;
        }
        Ok(())
    }

    /// Removes `prefix`; its destinations fall back to the longest covering prefix.
    pub fn remove(&mut self, prefix: Ipv4Net) {
        let prefix = prefix.trunc();
        if !self.routes.remove(prefix) {
            return;
        }
        let len = prefix.prefix_len();
        let addr = u32::from(prefix.network());
        let depth = len + 1;
        let (value, cover_depth) = self.routes.covering(prefix);
        if len <= 24 {
            let first = (addr >> 8) as usize;
            for i in first..first + (1usize << (24 - len)) {
                self.set_covering_24(i, value, cover_depth, |d| d == depth);
            }
            return;
        }
        let i = (addr >> 8) as usize;
        let block = (self.tbl24.get(i) & !DIR_EXT) as usize;
        let first = block * 256 + (addr & 0xff) as usize;
        for j in first..first + (1usize << (32 - len)) {
            if self.depth8[j] == depth {
                self.tbl8.set(j, value);
                self.depth8[j] = cover_depth;
            }
        }
        self.block_routes[block] -= 1;
        if self.block_routes[block] == 0 {
            // Collapse: the /24 entry takes the route covering the whole /24 again,
            // then the block is free. Its entries are left as they are (all equal to
            // that route) for a lookup still reading it; reuse refills them.
            let (base, base_depth) = self.routes.covering(prefix.widened(25));
            self.tbl24.set(i, base);
            self.depth24[i] = base_depth;
            self.free_blocks.push_back(block as u32);
        }
    }

    /// Sets /24 entry `i` (or, when it points to a block, every block entry) to
    /// `value`/`depth` where the entry's current depth satisfies `owned`.
    fn set_covering_24(&mut self, i: usize, value: u32, depth: u8, owned: impl Fn(u8) -> bool) {
        let entry = self.tbl24.get(i);
        if entry & DIR_EXT != 0 {
            let block = (entry & !DIR_EXT) as usize;
            for j in block * 256..block * 256 + 256 {
                if owned(self.depth8[j]) {
                    self.tbl8.set(j, value);
                    self.depth8[j] = depth;
                }
            }
            if owned(self.depth24[i]) {
                self.depth24[i] = depth;
            }
        } else if owned(self.depth24[i]) {
            self.tbl24.set(i, value);
            self.depth24[i] = depth;
        }
    }

    /// The block of /24 entry `i`, allocating and filling it first if needed.
    fn block_of(&mut self, i: usize) -> Result<usize> {
        let entry = self.tbl24.get(i);
        if entry & DIR_EXT != 0 {
            return Ok((entry & !DIR_EXT) as usize);
        }
        let Some(block) = self.free_blocks.pop_front() else {
            bail!(
                "DIR-24-8: all {} blocks for prefixes longer than /24 are in use \
                 (dataplane.ipv4_fib_blocks)",
                self.blocks
            );
        };
        let block = block as usize;
        for j in block * 256..block * 256 + 256 {
            self.tbl8.set(j, entry);
            self.depth8[j] = self.depth24[i];
        }
        // Only now does the data plane follow the pointer.
        self.tbl24.set(i, DIR_EXT | block as u32);
        Ok(block)
    }

    /// The entry the data plane finds for `addr` (0 = no route).
    pub fn lookup(&self, addr: std::net::Ipv4Addr) -> u32 {
        lookup(&self.tbl24, &self.tbl8, addr)
    }
}

/// The data plane's lookup, over the tables themselves (what a concurrent reader sees).
pub fn lookup(tbl24: &impl Cells, tbl8: &impl Cells, addr: std::net::Ipv4Addr) -> u32 {
    let a = u32::from(addr);
    let entry = tbl24.get((a >> 8) as usize);
    if entry & DIR_EXT != 0 {
        tbl8.get((((entry & !DIR_EXT) << 8) | (a & 0xff)) as usize)
    } else {
        entry
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::Ipv4Addr};

    use super::*;
    use crate::dataplane::testing::{Rng, assert_lookups_stay_valid, churn_routes, reference};
    use nva_common::DIR8_BLOCKS;

    fn table() -> Dir24<Vec<u32>> {
        Dir24::new(
            vec![0; DIR24_ENTRIES as usize],
            vec![0; DIR8_BLOCKS as usize * 256],
            DIR8_BLOCKS,
        )
    }

    #[test]
    fn nested_prefixes_and_removal() {
        let mut t = table();
        let p = |s: &str| s.parse::<Ipv4Net>().unwrap();
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        t.insert(p("0.0.0.0/0"), 1).unwrap();
        t.insert(p("10.0.0.0/8"), 2).unwrap();
        t.insert(p("10.1.2.0/24"), 3).unwrap();
        t.insert(p("10.1.2.128/25"), 4).unwrap();
        t.insert(p("10.1.2.200/32"), 5).unwrap();
        assert_eq!(t.lookup(a("8.8.8.8")), 1);
        assert_eq!(t.lookup(a("10.9.9.9")), 2);
        assert_eq!(t.lookup(a("10.1.2.1")), 3);
        assert_eq!(t.lookup(a("10.1.2.129")), 4);
        assert_eq!(t.lookup(a("10.1.2.200")), 5);
        // A shorter prefix inserted later does not override the longer ones.
        t.insert(p("10.1.0.0/16"), 6).unwrap();
        assert_eq!(t.lookup(a("10.1.2.129")), 4);
        assert_eq!(t.lookup(a("10.1.3.1")), 6);
        t.remove(p("10.1.2.128/25"));
        assert_eq!(t.lookup(a("10.1.2.129")), 3);
        assert_eq!(t.lookup(a("10.1.2.200")), 5);
        t.remove(p("10.1.2.200/32"));
        assert_eq!(
            t.blocks_used(),
            0,
            "block freed when its last long prefix goes"
        );
        assert_eq!(t.lookup(a("10.1.2.200")), 3);
        t.remove(p("10.1.2.0/24"));
        assert_eq!(t.lookup(a("10.1.2.200")), 6);
        t.remove(p("0.0.0.0/0"));
        assert_eq!(t.lookup(a("8.8.8.8")), 0);
        // Replacing a route's value.
        t.insert(p("10.0.0.0/8"), 7).unwrap();
        assert_eq!(t.lookup(a("10.200.0.1")), 7);
    }

    /// Make-before-break: a reader doing the data plane's lookup while routes under a
    /// covering route come and go (blocks allocated, filled, collapsed and reused) never
    /// sees "no route" nor anything but a route entry.
    #[test]
    fn concurrent_lookups_never_see_a_missing_or_half_written_route() {
        use crate::dataplane::cells::SharedCells;

        let (tbl24, tbl8) = (
            SharedCells::new(DIR24_ENTRIES as usize),
            SharedCells::new(DIR8_BLOCKS as usize * 256),
        );
        let mut t = Dir24::new(tbl24.clone(), tbl8.clone(), DIR8_BLOCKS);
        t.insert("10.0.0.0/8".parse().unwrap(), 1).unwrap();
        // Addresses in 10.0.0.0/12 so that readers and the writer's prefixes meet often.
        let addr = |r: u64| Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x000f_ffff));
        let t = std::cell::RefCell::new(t);
        assert_lookups_stay_valid(
            move |r| (addr(r), lookup(&tbl24, &tbl8, addr(r))),
            || {
                churn_routes(
                    10_000,
                    &[16, 20, 22, 24, 25, 26, 28, 30, 32],
                    |r, len| Ipv4Net::new(addr(r), len).unwrap().trunc(),
                    |p, v| t.borrow_mut().insert(p, v).unwrap(),
                    |p| t.borrow_mut().remove(p),
                )
            },
        );
    }

    #[test]
    fn differential_against_a_reference_lpm() {
        let mut rng = Rng::xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..3 {
            let mut t = table();
            let mut routes = HashMap::new();
            // Prefixes clustered in a few /8s so they nest and overlap a lot.
            for n in 0..3000 {
                let first = [10u32, 172, 192][(rng.next_u64() % 3) as usize];
                let addr = (first << 24) | (rng.next_u64() as u32 & 0x00ff_ffff);
                let len = [8, 12, 16, 20, 22, 24, 24, 24, 25, 26, 28, 30, 32]
                    [(rng.next_u64() % 13) as usize];
                let prefix = Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
                let value = 1 + (n as u32 % 1000);
                t.insert(prefix, value).unwrap();
                routes.insert(prefix, value);
                // Remove some along the way.
                if rng.next_u64().is_multiple_of(4) {
                    let victim = *routes.keys().next().unwrap();
                    routes.remove(&victim);
                    t.remove(victim);
                }
            }
            for _ in 0..20_000 {
                let first = [10u32, 172, 192, 8][(rng.next_u64() % 4) as usize];
                let addr = Ipv4Addr::from((first << 24) | (rng.next_u64() as u32 & 0x00ff_ffff));
                assert_eq!(
                    t.lookup(addr),
                    reference(&routes, addr),
                    "round {round}, {addr}"
                );
            }
            // Under every remaining route: its first and last address.
            for p in routes.keys() {
                for addr in [p.network(), p.broadcast()] {
                    assert_eq!(t.lookup(addr), reference(&routes, addr), "{p} at {addr}");
                }
            }
        }
    }
}
