//! Multibit-trie IPv6 FIB writer (the layout is in nva-common): a 2^20-entry root and
//! 16-entry blocks, one per 4 more bits of the address.
//!
//! The same scheme as `Dir24`, over more levels: every cell remembers the prefix length
//! that set it ("depth"), so a prefix only overwrites cells owned by shorter prefixes
//! and a removed prefix hands its cells back to the covering one. A block is filled
//! before the cell pointing to it is switched, and every cell is one atomic u32 store,
//! so the data plane never sees a half-written or missing route while a route changes.
//!
//! Root cells and block cells share one numbering (`ROOT + block * 16 + i` for block
//! cells), which keeps the walk and the depth bookkeeping in one place.
use std::{collections::VecDeque, net::Ipv6Addr};

use anyhow::{Result, bail};
use ipnet::Ipv6Net;
use nva_common::{DIR_EXT, MBT6_BLOCK, MBT6_ROOT_BITS, MBT6_ROOT_ENTRIES, MBT6_STRIDE};
use smallvec::SmallVec;

use super::{cells::Cells, routes::Routes};

const ROOT: usize = MBT6_ROOT_ENTRIES as usize;
const BLOCK: usize = MBT6_BLOCK as usize;
/// Block indexes live in the low 28 bits of an entry.
const BLOCK_MASK: u32 = 0x0fff_ffff;

pub struct Mbt6<C: Cells> {
    root: C,
    nodes: C,
    /// Prefix length + 1 that set each cell (0 = no route); for a cell pointing to a
    /// block, the depth of the route covering the whole cell.
    depth: Vec<u8>,
    /// Routes inside each block that are longer than the cell pointing to it; the block
    /// is freed when none are left.
    block_routes: Vec<u32>,
    /// Free blocks, reused oldest first (a lookup that read the pointer to a block just
    /// before it was freed still finds its last, still correct, entries).
    free_blocks: VecDeque<u32>,
    routes: Routes<Ipv6Net>,
}

impl<C: Cells> Mbt6<C> {
    /// `root` must hold MBT6_ROOT_ENTRIES cells and `nodes` `blocks * 16`, all zero.
    pub fn new(root: C, nodes: C, blocks: u32) -> Self {
        assert!(blocks <= BLOCK_MASK + 1);
        Self {
            root,
            nodes,
            depth: vec![0; ROOT + blocks as usize * BLOCK],
            block_routes: vec![0; blocks as usize],
            free_blocks: (0..blocks).collect(),
            routes: Routes::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Blocks in use.
    pub fn blocks_used(&self) -> usize {
        self.block_routes.len() - self.free_blocks.len()
    }

    /// Blocks in the table.
    pub fn blocks_total(&self) -> usize {
        self.block_routes.len()
    }

    fn get(&self, cell: usize) -> u32 {
        if cell < ROOT {
            self.root.get(cell)
        } else {
            self.nodes.get(cell - ROOT)
        }
    }

    fn set(&mut self, cell: usize, value: u32) {
        if cell < ROOT {
            self.root.set(cell, value)
        } else {
            self.nodes.set(cell - ROOT, value)
        }
    }

    /// The cells `prefix` is written to: the first one and how many, the blocks on the way
    /// there and the cell pointing to each. `allocate`: create missing blocks (None when
    /// a block is missing and `allocate` is false; an error, with nothing changed, when
    /// there are not enough free blocks).
    fn walk(&mut self, prefix: Ipv6Net, allocate: bool) -> Result<Option<Walk>> {
        let len = prefix.prefix_len();
        let addr = u128::from(prefix.network());
        let mut cell = (addr >> (128 - MBT6_ROOT_BITS)) as usize;
        let mut cell_len = MBT6_ROOT_BITS as u8;
        let mut path = SmallVec::new();
        let mut checked = false;
        while cell_len < len {
            let entry = self.get(cell);
            let block = if entry & DIR_EXT != 0 {
                (entry & BLOCK_MASK) as usize
            } else if allocate {
                // From here on every level needs a new block: check there are enough
                // before taking the first, so a full table fails the route cleanly
                // instead of leaving half a path behind.
                if !checked {
                    checked = true;
                    let needed = (len - cell_len).div_ceil(MBT6_STRIDE as u8) as usize;
                    if self.free_blocks.len() < needed {
                        bail!(
                            "IPv6 multibit trie: all {} blocks are in use",
                            self.block_routes.len()
                        );
                    }
                }
                self.allocate_under(cell)?
            } else {
                return Ok(None);
            };
            path.push((cell, block));
            cell_len += MBT6_STRIDE as u8;
            cell = cell_in(block, addr, cell_len);
        }
        Ok(Some(Walk {
            first: cell,
            count: 1 << (cell_len - len),
            path,
        }))
    }

    /// Inserts or replaces `prefix` with the (non-zero, non-extended) entry `value`.
    pub fn insert(&mut self, prefix: Ipv6Net, value: u32) -> Result<()> {
        let prefix = prefix.trunc();
        if value == 0 || value & DIR_EXT != 0 {
            bail!("invalid multibit-trie entry {value:#x}");
        }
        let depth = prefix.prefix_len() + 1;
        let walk = self.walk(prefix, true)?.expect("allocating walk");
        for cell in walk.first..walk.first + walk.count {
            self.set_covering(cell, value, depth, &|d| d <= depth);
        }
        if self.routes.insert(prefix, value) {
            for (_, block) in &walk.path {
                self.block_routes[*block] += 1;
            }
        }
        Ok(())
    }

    /// Removes `prefix`; its destinations fall back to the longest covering prefix.
    pub fn remove(&mut self, prefix: Ipv6Net) {
        let prefix = prefix.trunc();
        if !self.routes.remove(prefix) {
            return;
        }
        let depth = prefix.prefix_len() + 1;
        let (value, cover_depth) = self.routes.covering(prefix);
        let walk = self
            .walk(prefix, false)
            .expect("walk without allocation")
            .expect("an installed route has its blocks");
        for cell in walk.first..walk.first + walk.count {
            self.set_covering(cell, value, cover_depth, &|d| d == depth);
        }
        // Deepest first: a block without routes holds one value everywhere (that of the
        // route covering it), which its parent cell takes back before the block is free.
        // Its entries stay as they are for a lookup still reading them.
        for (parent, block) in walk.path.into_iter().rev() {
            self.block_routes[block] -= 1;
            if self.block_routes[block] == 0 {
                let first = ROOT + block * BLOCK;
                debug_assert!(self.get(first) & DIR_EXT == 0);
                self.set(parent, self.get(first));
                self.depth[parent] = self.depth[first];
                self.free_blocks.push_back(block as u32);
            }
        }
    }

    /// Sets `cell` (or, when it points to a block, every cell below it) to
    /// `value`/`depth` where the cell's current depth satisfies `owned`.
    fn set_covering(&mut self, cell: usize, value: u32, depth: u8, owned: &dyn Fn(u8) -> bool) {
        let entry = self.get(cell);
        if entry & DIR_EXT != 0 {
            let first = ROOT + (entry & BLOCK_MASK) as usize * BLOCK;
            for child in first..first + BLOCK {
                self.set_covering(child, value, depth, owned);
            }
            if owned(self.depth[cell]) {
                self.depth[cell] = depth;
            }
        } else if owned(self.depth[cell]) {
            self.set(cell, value);
            self.depth[cell] = depth;
        }
    }

    /// Allocates a block under `cell`, filled with the cell's route, then points the
    /// cell to it.
    fn allocate_under(&mut self, cell: usize) -> Result<usize> {
        let Some(block) = self.free_blocks.pop_front() else {
            bail!("IPv6 multibit trie: no free block");
        };
        let block = block as usize;
        let (entry, depth) = (self.get(cell), self.depth[cell]);
        let first = ROOT + block * BLOCK;
        for child in first..first + BLOCK {
            self.set(child, entry);
            self.depth[child] = depth;
        }
        // Only now does the data plane follow the pointer.
        self.set(cell, DIR_EXT | block as u32);
        Ok(block)
    }

    /// The entry the data plane finds for `addr` (0 = no route).
    pub fn lookup(&self, addr: Ipv6Addr) -> u32 {
        lookup(&self.root, &self.nodes, addr)
    }
}

/// The data plane's lookup, over the tables themselves (what a concurrent reader sees).
pub fn lookup(root: &impl Cells, nodes: &impl Cells, addr: Ipv6Addr) -> u32 {
    let a = u128::from(addr);
    let mut entry = root.get((a >> (128 - MBT6_ROOT_BITS)) as usize);
    let mut cell_len = MBT6_ROOT_BITS as u8;
    while entry & DIR_EXT != 0 {
        cell_len += MBT6_STRIDE as u8;
        let cell = cell_in((entry & BLOCK_MASK) as usize, a, cell_len);
        entry = nodes.get(cell - ROOT);
    }
    entry
}

/// The cell of `addr` in `block`, whose cells cover prefixes of length `cell_len`.
fn cell_in(block: usize, addr: u128, cell_len: u8) -> usize {
    let nibble = (addr >> (128 - cell_len as u32)) as usize & (BLOCK - 1);
    ROOT + block * BLOCK + nibble
}

/// Where a prefix lives in the trie.
struct Walk {
    /// First cell the prefix is expanded to, and how many (consecutive) cells.
    first: usize,
    count: usize,
    /// (cell pointing to the block, block) for every block on the way, root first.
    path: SmallVec<[(usize, usize); 8]>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::dataplane::testing::{Rng, assert_lookups_stay_valid, churn_routes, reference};

    const BLOCKS: u32 = 1 << 16;

    fn table() -> Mbt6<Vec<u32>> {
        Mbt6::new(vec![0; ROOT], vec![0; BLOCKS as usize * BLOCK], BLOCKS)
    }

    #[test]
    fn nested_prefixes_and_removal() {
        let mut t = table();
        let p = |s: &str| s.parse::<Ipv6Net>().unwrap();
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        t.insert(p("::/0"), 1).unwrap();
        t.insert(p("2001:db8::/32"), 2).unwrap();
        t.insert(p("2001:db8:1::/48"), 3).unwrap();
        t.insert(p("2001:db8:1:2::/63"), 4).unwrap();
        t.insert(p("2001:db8:1:2::5/128"), 5).unwrap();
        assert_eq!(t.lookup(a("2a00::1")), 1);
        assert_eq!(t.lookup(a("2001:db8:ffff::1")), 2);
        assert_eq!(t.lookup(a("2001:db8:1:ff::1")), 3);
        assert_eq!(t.lookup(a("2001:db8:1:3::1")), 4);
        assert_eq!(t.lookup(a("2001:db8:1:2::5")), 5);
        assert_eq!(t.lookup(a("2001:db8:1:2::6")), 4);
        // A shorter prefix inserted later does not override the longer ones.
        t.insert(p("2001:db8::/40"), 6).unwrap();
        assert_eq!(t.lookup(a("2001:db8:1:3::1")), 4);
        assert_eq!(t.lookup(a("2001:db8:2::1")), 6);
        assert_eq!(t.lookup(a("2001:db8:100::1")), 2);
        t.remove(p("2001:db8:1:2::/63"));
        assert_eq!(t.lookup(a("2001:db8:1:3::1")), 3);
        assert_eq!(t.lookup(a("2001:db8:1:2::5")), 5);
        t.remove(p("2001:db8:1:2::5/128"));
        assert_eq!(t.lookup(a("2001:db8:1:2::5")), 3);
        t.remove(p("2001:db8:1::/48"));
        t.remove(p("2001:db8::/40"));
        assert_eq!(t.lookup(a("2001:db8:1:2::5")), 2);
        t.remove(p("2001:db8::/32"));
        assert_eq!(t.blocks_used(), 0, "blocks are freed with their last route");
        assert_eq!(t.lookup(a("2001:db8:1:2::5")), 1);
        t.remove(p("::/0"));
        assert_eq!(t.lookup(a("2a00::1")), 0);
        // Replacing a route's value.
        t.insert(p("2001:db8::/32"), 7).unwrap();
        assert_eq!(t.lookup(a("2001:db8::1")), 7);
        t.insert(p("2001:db8::/32"), 8).unwrap();
        assert_eq!(t.lookup(a("2001:db8::1")), 8);
    }

    #[test]
    fn differential_against_a_reference_lpm() {
        let mut rng = Rng::xorshift(0x9e37_79b9_7f4a_7c15);
        let lens = [
            0u8, 12, 16, 19, 20, 24, 29, 32, 32, 33, 36, 40, 44, 47, 48, 48, 48, 52, 56, 64, 96,
            127, 128,
        ];
        for round in 0..3 {
            let mut t = table();
            let mut routes = HashMap::new();
            // Prefixes inside a few /16s and /32s so that they nest and overlap a lot.
            let base = |rng: &mut Rng| -> u128 {
                let top =
                    [0x2001_0db8u128, 0x2001_0db9, 0x2a00_1450][(rng.next_u64() % 3) as usize];
                let r = (rng.next_u64() as u128) << 64 | rng.next_u64() as u128;
                // Keep the bits below /32 mostly in a small range.
                (top << 96) | (r & ((1u128 << 96) - 1) & !(0xffffu128 << 72))
            };
            for n in 0..3000 {
                let addr = Ipv6Addr::from(base(&mut rng));
                let len = lens[(rng.next_u64() % lens.len() as u64) as usize];
                let prefix = Ipv6Net::new(addr, len).unwrap().trunc();
                let value = 1 + (n as u32 % 1000);
                t.insert(prefix, value).unwrap();
                routes.insert(prefix, value);
                if rng.next_u64().is_multiple_of(4) {
                    let victim = *routes.keys().next().unwrap();
                    routes.remove(&victim);
                    t.remove(victim);
                }
            }
            for _ in 0..5_000 {
                let addr = Ipv6Addr::from(base(&mut rng));
                assert_eq!(
                    t.lookup(addr),
                    reference(&routes, addr),
                    "round {round}, {addr}"
                );
            }
            for p in routes.keys() {
                for addr in [p.network(), p.broadcast()] {
                    assert_eq!(t.lookup(addr), reference(&routes, addr), "{p} at {addr}");
                }
            }
            // Removing everything frees every block.
            let all: Vec<_> = routes.keys().copied().collect();
            for p in all {
                t.remove(p);
            }
            assert_eq!(t.blocks_used(), 0, "round {round}");
            assert_eq!(t.lookup(Ipv6Addr::from(base(&mut rng))), 0);
        }
    }

    /// Make-before-break: a reader walking the tables while routes under a covering route
    /// come and go (blocks allocated, filled, collapsed and reused) never sees "no route"
    /// nor anything but a route entry.
    #[test]
    fn concurrent_lookups_never_see_a_missing_or_half_written_route() {
        use crate::dataplane::cells::SharedCells;

        let blocks = 1 << 14;
        let (root, nodes) = (
            SharedCells::new(ROOT),
            SharedCells::new(blocks as usize * BLOCK),
        );
        let mut t = Mbt6::new(root.clone(), nodes.clone(), blocks);
        t.insert("2001:db8::/32".parse().unwrap(), 1).unwrap();
        // Addresses in 2001:db8::/32 with 8 random bits at 48..56, so that readers and
        // the writer's prefixes (/36 to /64) meet often.
        let addr = |r: u64| {
            let hi = 0x2001_0db8_0000_0000u64 | ((r & 0xff) << 8) | ((r >> 8) & 0xff) << 24;
            Ipv6Addr::from((hi as u128) << 64 | (r >> 16) as u128)
        };
        let t = std::cell::RefCell::new(t);
        assert_lookups_stay_valid(
            move |r| (addr(r), lookup(&root, &nodes, addr(r))),
            || {
                churn_routes(
                    30_000,
                    &[36, 40, 44, 48, 52, 56, 60, 64],
                    |r, len| Ipv6Net::new(addr(r), len).unwrap().trunc(),
                    |p, v| t.borrow_mut().insert(p, v).unwrap(),
                    |p| t.borrow_mut().remove(p),
                )
            },
        );
    }

    #[test]
    fn a_full_trie_refuses_the_route_and_keeps_the_others() {
        // A /32 takes 3 blocks (/24, /28, /32), a /48 under it 4 more: 19 are left, one
        // short of the 20 a /128 under the /48 needs.
        let blocks = 26;
        let mut t = Mbt6::new(vec![0; ROOT], vec![0; blocks as usize * BLOCK], blocks);
        let p = |s: &str| s.parse::<Ipv6Net>().unwrap();
        t.insert(p("2001:db8::/32"), 1).unwrap();
        t.insert(p("2001:db8:1::/48"), 3).unwrap();
        assert!(t.insert(p("2001:db8:1::/128"), 2).is_err());
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), 1);
        assert_eq!(t.lookup("2001:db8:1::1".parse().unwrap()), 3);
        // Routes that need no new block still go in: a changed value, a sibling.
        t.insert(p("2001:db8::/32"), 4).unwrap();
        t.insert(p("2001:db8:2::/48"), 5).unwrap();
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), 4);
        assert_eq!(t.lookup("2001:db8:2::1".parse().unwrap()), 5);
        t.remove(p("2001:db8:1::/48"));
        t.remove(p("2001:db8:2::/48"));
        t.remove(p("2001:db8::/32"));
        assert_eq!(t.blocks_used(), 0);
    }
}
