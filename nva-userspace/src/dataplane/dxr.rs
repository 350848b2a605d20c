//! DXR IPv4 FIB writer (the layout is in nva-common, `DXR_TOP_ENTRIES`).
//!
//! The table is cut into 65,536 chunks of one /16 each. A chunk whose destinations all
//! share one route is a single top cell; any other chunk is a sorted list of ranges
//! (first address, route) that the data plane binary-searches. The writer keeps the
//! routes themselves: prefixes up to /16 in `Routes` (what covers a whole chunk) and the
//! longer ones ordered by address, so a chunk is rebuilt from exactly the routes inside
//! it plus the one covering it. A rebuilt chunk is written to free cells first and the
//! top cell is switched to it with one atomic store (make-before-break); the old chunk's
//! cells are reused oldest first, as DIR-24-8 reuses its blocks.
use std::collections::{BTreeMap, VecDeque};

use anyhow::{Result, bail};
use ipnet::Ipv4Net;
use nva_common::{DIR_EXT, dxr_compact, dxr_entry};

use super::cells::Cells;
use super::routes::Routes;

/// Size classes of chunks: 2^0 .. 2^17 cells (a chunk has at most 65,536 ranges plus
/// its length cell).
const CLASSES: usize = 18;

pub struct Dxr<C: Cells> {
    /// Address bits that index the top table (16 or 18): a chunk covers the rest.
    bits: u8,
    top: C,
    ranges: C,
    /// Cells in `ranges`.
    capacity: u32,
    /// Routes of /16 or shorter: what a chunk falls back to.
    short: Routes<Ipv4Net>,
    /// Routes longer than /16 by (network, length): one chunk's are one range of keys.
    long: BTreeMap<(u32, u8), u32>,
    /// Per chunk: the route of /16 or shorter covering it (0: none), and its length + 1.
    base: Vec<u32>,
    base_depth: Vec<u8>,
    /// Per chunk: routes longer than /16 inside it.
    long_count: Vec<u32>,
    /// Per chunk: the cells it occupies (offset, size class), if it is not a single top cell.
    chunks: Vec<Option<(u32, u8)>>,
    /// Freed chunk cells per size class, reused oldest first.
    free: [VecDeque<u32>; CLASSES],
    /// Cells never used yet start here.
    fresh: u32,
    /// Cells held by chunks.
    used: u64,
}

impl<C: Cells> Dxr<C> {
    /// `top` must hold 2^`bits` cells and `ranges` `capacity`, all zero.
    pub fn new(top: C, ranges: C, capacity: u32, bits: u8) -> Self {
        let chunks = 1usize << bits;
        Self {
            bits,
            top,
            ranges,
            capacity,
            short: Routes::default(),
            long: BTreeMap::new(),
            base: vec![0; chunks],
            base_depth: vec![0; chunks],
            long_count: vec![0; chunks],
            chunks: vec![None; chunks],
            free: Default::default(),
            fresh: 0,
            used: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Range cells in use (by chunks, including their size-class rounding).
    pub fn cells_used(&self) -> usize {
        self.used as usize
    }

    pub fn cells_total(&self) -> usize {
        self.capacity as usize
    }

    /// Inserts or replaces `prefix` with the (non-zero) entry `value`. On failure (no
    /// room for a chunk) nothing changes.
    pub fn insert(&mut self, prefix: Ipv4Net, value: u32) -> Result<()> {
        let prefix = prefix.trunc();
        if value == 0 || dxr_compact(value).is_none() {
            bail!("invalid DXR entry {value:#x}");
        }
        self.change(prefix, Some(value))
    }

    /// Removes `prefix`; its destinations fall back to the longest covering prefix.
    pub fn remove(&mut self, prefix: Ipv4Net) -> Result<()> {
        self.change(prefix.trunc(), None)
    }

    /// Sets or removes a route and rewrites the chunks it changes; on failure puts the
    /// previous route back.
    fn change(&mut self, prefix: Ipv4Net, value: Option<u32>) -> Result<()> {
        let old = self.set(prefix, value);
        if old.is_none() && value.is_none() {
            return Ok(());
        }
        let result = if prefix.prefix_len() <= self.bits {
            self.update_bases(prefix, value)
        } else {
            self.rebuild(u32::from(prefix.network()) >> self.shift())
        };
        if let Err(e) = result {
            self.set(prefix, old);
            for c in chunks_of(prefix, self.bits) {
                self.recompute_base(c);
                self.refresh(c).ok();
            }
            return Err(e);
        }
        Ok(())
    }

    /// A route of /16 or shorter changed: the chunks whose base it is (or becomes) take
    /// the new base; only those holding longer routes are rebuilt.
    fn update_bases(&mut self, prefix: Ipv4Net, value: Option<u32>) -> Result<()> {
        let depth = prefix.prefix_len() + 1;
        let (base, base_depth, owned): (u32, u8, fn(u8, u8) -> bool) = match value {
            Some(v) => (v, depth, |d, depth| d <= depth),
            None => {
                let (v, d) = self.short.covering(prefix);
                (v, d, |d, depth| d == depth)
            }
        };
        for c in chunks_of(prefix, self.bits) {
            if owned(self.base_depth[c as usize], depth) {
                self.base[c as usize] = base;
                self.base_depth[c as usize] = base_depth;
                self.refresh(c)?;
            }
        }
        Ok(())
    }

    /// The base of chunk `c` from the routes (the slow way, after a failure).
    fn recompute_base(&mut self, c: u32) {
        let whole = Ipv4Net::new((c << self.shift()).into(), self.bits).expect("valid length");
        let (base, depth) = match self.short.get(whole) {
            Some(v) => (v, self.bits + 1),
            None => self.short.covering(whole),
        };
        self.base[c as usize] = base;
        self.base_depth[c as usize] = depth;
    }

    /// Rewrites chunk `c` after its base changed.
    fn refresh(&mut self, c: u32) -> Result<()> {
        if self.long_count[c as usize] == 0 && self.chunks[c as usize].is_none() {
            self.top.set(c as usize, self.base[c as usize]);
            Ok(())
        } else {
            self.rebuild(c)
        }
    }

    /// Records (or forgets) a route; returns what it replaced.
    fn set(&mut self, prefix: Ipv4Net, value: Option<u32>) -> Option<u32> {
        let addr = u32::from(prefix.network());
        let len = prefix.prefix_len();
        if len <= self.bits {
            let old = self.short.get(prefix);
            match value {
                Some(v) => {
                    self.short.insert(prefix, v);
                }
                None => {
                    self.short.remove(prefix);
                }
            }
            return old;
        }
        let old = match value {
            Some(v) => self.long.insert((addr, len), v),
            None => self.long.remove(&(addr, len)),
        };
        let chunk = (addr >> self.shift()) as usize;
        let count = &mut self.long_count[chunk];
        match (old, value) {
            (None, Some(_)) => *count += 1,
            (Some(_), None) => *count -= 1,
            _ => {}
        }
        old
    }

    /// The ranges of chunk `c` (first address's low 16 bits, entry), adjacent ranges
    /// with the same entry merged; the first starts at 0.
    fn ranges_of(&self, c: u32) -> Vec<(u32, u32)> {
        let base = self.base[c as usize];
        let mut out: Vec<(u32, u32)> = Vec::new();
        let mut emit = |start: u32, entry: u32| {
            if out.last().is_none_or(|(_, e)| *e != entry) {
                out.push((start, entry));
            }
        };
        // Nested prefixes come in address order, a container before what it contains:
        // a stack of (end, entry) of the open prefixes, the chunk's base at the bottom.
        let shift = self.shift();
        let mut open: Vec<(u32, u32)> = vec![(1 << shift, base)];
        let mut pos = 0u32;
        let lo = (c << shift, 0u8);
        let hi = ((c << shift) | ((1 << shift) - 1), 32u8);
        for (&(addr, len), &entry) in self.long.range(lo..=hi) {
            let start = addr & ((1 << shift) - 1);
            while let Some(&(end, e)) = open.last()
                && end <= start
            {
                if pos < end {
                    emit(pos, e);
                    pos = end;
                }
                open.pop();
            }
            if pos < start {
                emit(pos, open.last().expect("base stays open").1);
                pos = start;
            }
            open.push((start + (1 << (32 - len)), entry));
        }
        while let Some((end, e)) = open.pop() {
            if pos < end {
                emit(pos, e);
                pos = end;
            }
        }
        out
    }

    /// Rewrites chunk `c` from the routes.
    fn rebuild(&mut self, c: u32) -> Result<()> {
        let ranges = self.ranges_of(c);
        let old = self.chunks[c as usize];
        if let [(_, entry)] = ranges[..] {
            self.top.set(c as usize, entry);
            self.chunks[c as usize] = None;
        } else {
            let cells = ranges.len() as u32 + 1;
            let class = cells.next_power_of_two().trailing_zeros() as u8;
            let off = self.allocate(class)?;
            self.ranges.set(off as usize, ranges.len() as u32);
            for (i, (start, entry)) in ranges.iter().enumerate() {
                let cell = start << 16 | dxr_compact(*entry).expect("checked at insert");
                self.ranges.set(off as usize + 1 + i, cell);
            }
            // Only now does the data plane follow the pointer.
            self.top.set(c as usize, DIR_EXT | off);
            self.chunks[c as usize] = Some((off, class));
        }
        if let Some((off, class)) = old {
            // A lookup that read the old pointer still finds the old (correct until
            // just now) ranges: the cells are reused last.
            self.free[class as usize].push_back(off);
            self.used -= 1 << class;
        }
        Ok(())
    }

    fn allocate(&mut self, class: u8) -> Result<u32> {
        let size = 1u32 << class;
        let off = match self.free[class as usize].pop_front() {
            Some(off) => off,
            None if self.capacity - self.fresh >= size => {
                self.fresh += size;
                self.fresh - size
            }
            // Split the oldest free chunk of the nearest larger class.
            None if let Some(j) =
                (class as usize + 1..CLASSES).find(|j| !self.free[*j].is_empty()) =>
            {
                let big = self.free[j].pop_front().expect("non-empty");
                for piece in 1..1u32 << (j - class as usize) {
                    self.free[class as usize].push_back(big + piece * size);
                }
                big
            }
            None => bail!(
                "DXR: no room for a chunk of {size} cells ({} of {} range cells in use; \
                 dataplane.ipv4_fib_blocks sets the size)",
                self.used,
                self.capacity
            ),
        };
        self.used += size as u64;
        Ok(off)
    }

    /// The entry the data plane finds for `addr` (0 = no route).
    pub fn lookup(&self, addr: std::net::Ipv4Addr) -> u32 {
        lookup(&self.top, &self.ranges, self.bits, addr)
    }

    /// Address bits a chunk covers.
    fn shift(&self) -> u8 {
        32 - self.bits
    }
}

/// The chunks a prefix covers or lies in (chunks of 2^(32 - `bits`) addresses).
fn chunks_of(prefix: Ipv4Net, bits: u8) -> std::ops::Range<u32> {
    let first = u32::from(prefix.network()) >> (32 - bits);
    first..first + (1u32 << bits.saturating_sub(prefix.prefix_len()))
}

/// The data plane's lookup, over the tables themselves (what a concurrent reader sees).
pub fn lookup(top: &impl Cells, ranges: &impl Cells, bits: u8, addr: std::net::Ipv4Addr) -> u32 {
    let a = u32::from(addr);
    let t = top.get((a >> (32 - bits)) as usize);
    if t & DIR_EXT == 0 {
        return t;
    }
    let off = (t & !DIR_EXT) as usize;
    let low = a & ((1 << (32 - bits)) - 1);
    let mut n = ranges.get(off) as usize;
    let mut base = off + 1;
    while n > 1 {
        let half = n / 2;
        if ranges.get(base + half) >> 16 <= low {
            base += half;
        }
        n -= half;
    }
    dxr_entry(ranges.get(base))
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::Ipv4Addr};

    use super::*;
    use crate::dataplane::testing::{Rng, assert_lookups_stay_valid};
    use nva_common::DXR_TOP_BITS;

    /// The reference longest-prefix match, one exact lookup per length.
    fn reference(routes: &HashMap<Ipv4Net, u32>, addr: Ipv4Addr) -> u32 {
        (0..=32u8)
            .rev()
            .find_map(|len| routes.get(&Ipv4Net::new(addr, len).unwrap().trunc()))
            .copied()
            .unwrap_or(0)
    }

    fn table(capacity: u32) -> Dxr<Vec<u32>> {
        table_bits(capacity, DXR_TOP_BITS as u8)
    }

    fn table_bits(capacity: u32, bits: u8) -> Dxr<Vec<u32>> {
        Dxr::new(
            vec![0; 1 << bits],
            vec![0; capacity as usize],
            capacity,
            bits,
        )
    }

    fn p(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn nested_prefixes_and_removal() {
        for bits in [16, 18] {
            nested_prefixes_and_removal_with(bits);
        }
    }

    fn nested_prefixes_and_removal_with(bits: u8) {
        let mut t = table_bits(1 << 16, bits);
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
        assert_eq!(t.lookup(a("10.1.2.201")), 4);
        assert_eq!(t.lookup(a("10.1.3.0")), 2);
        t.insert(p("10.1.0.0/16"), 6).unwrap();
        assert_eq!(t.lookup(a("10.1.2.129")), 4);
        assert_eq!(t.lookup(a("10.1.3.1")), 6);
        t.remove(p("10.1.2.128/25")).unwrap();
        assert_eq!(t.lookup(a("10.1.2.129")), 3);
        assert_eq!(t.lookup(a("10.1.2.200")), 5);
        t.remove(p("10.1.2.200/32")).unwrap();
        t.remove(p("10.1.2.0/24")).unwrap();
        assert_eq!(t.lookup(a("10.1.2.200")), 6);
        assert_eq!(t.cells_used(), 0, "a chunk with one route is a top cell");
        t.remove(p("0.0.0.0/0")).unwrap();
        assert_eq!(t.lookup(a("8.8.8.8")), 0);
        t.insert(p("10.0.0.0/8"), 7).unwrap();
        assert_eq!(t.lookup(a("10.200.0.1")), 7);
        // Edges: the last chunk, the last address, a /32 at a chunk's start and end.
        t.insert(p("255.255.255.255/32"), 8).unwrap();
        t.insert(p("255.255.0.0/32"), 9).unwrap();
        assert_eq!(t.lookup(a("255.255.255.255")), 8);
        assert_eq!(t.lookup(a("255.255.0.0")), 9);
        assert_eq!(t.lookup(a("255.255.0.1")), 0);
        assert_eq!(t.lookup(a("255.255.255.254")), 0);
    }

    /// Random tables of every prefix length against the reference longest-prefix match,
    /// through inserts, replacements and removals.
    #[test]
    fn matches_the_reference_through_churn() {
        let mut rng = Rng::xorshift(0x5eed_0001);
        let mut t = table(1 << 20);
        let mut routes: HashMap<Ipv4Net, u32> = HashMap::new();
        // Clustered: most prefixes in a few /8s so chunks hold many nested routes.
        let random_prefix = |rng: &mut Rng| {
            let r = rng.next_u64();
            let len = match r % 10 {
                0 => (r >> 8) as u8 % 17,
                1..=5 => 17 + (r >> 8) as u8 % 8,
                _ => 24 + (r >> 8) as u8 % 9,
            };
            let addr = ((r >> 16) as u32 & 0x03ff_ffff) | 0x0a00_0000;
            Ipv4Net::new(addr.into(), len).unwrap().trunc()
        };
        for round in 0..6 {
            for _ in 0..3000 {
                let prefix = random_prefix(&mut rng);
                let value = 1 + (rng.next_u64() % 4000) as u32;
                t.insert(prefix, value).unwrap();
                routes.insert(prefix, value);
            }
            let victims: Vec<Ipv4Net> = routes
                .keys()
                .copied()
                .filter(|_| rng.next_u64().is_multiple_of(3))
                .collect();
            for v in victims {
                t.remove(v).unwrap();
                routes.remove(&v);
            }
            for _ in 0..20_000 {
                let addr = Ipv4Addr::from((rng.next_u64() as u32 & 0x03ff_ffff) | 0x0a00_0000);
                assert_eq!(
                    t.lookup(addr),
                    reference(&routes, addr),
                    "round {round}: {addr}"
                );
            }
            // Every route's own first and last address too.
            for net in routes.keys() {
                for addr in [net.network(), net.broadcast()] {
                    assert_eq!(t.lookup(addr), reference(&routes, addr), "{net}: {addr}");
                }
            }
        }
        assert_eq!(t.len(), routes.len());
        for net in routes.keys().copied().collect::<Vec<_>>() {
            t.remove(net).unwrap();
        }
        assert_eq!(t.cells_used(), 0);
        assert_eq!(t.lookup(a("10.1.2.3")), 0);
    }

    /// Out of range cells: the route that does not fit fails alone, and the table is as
    /// it was (its previous value or nothing).
    #[test]
    fn a_full_table_fails_one_route_and_keeps_the_rest() {
        let mut t = table(64);
        t.insert(p("10.0.0.0/8"), 1).unwrap();
        let mut ok = Vec::new();
        let mut failed = None;
        for i in 0..64u32 {
            let prefix = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | i << 17 | 0x100), 24).unwrap();
            match t.insert(prefix, 2 + i) {
                Ok(()) => ok.push((prefix, 2 + i)),
                Err(e) => {
                    assert!(format!("{e}").contains("no room"), "{e}");
                    failed = Some(prefix);
                    break;
                }
            }
        }
        let failed = failed.expect("64 cells cannot hold 64 chunks");
        assert_eq!(
            t.lookup(failed.network()),
            1,
            "the failed route left nothing"
        );
        for (prefix, value) in ok {
            assert_eq!(t.lookup(prefix.network()), value);
        }
        // Replacing a short route rebuilds many chunks; if one does not fit, the old
        // route stays everywhere.
        let before: Vec<u32> = (0..64u32)
            .map(|i| t.lookup(Ipv4Addr::from(0x0a00_0000 | i << 17)))
            .collect();
        let _ = t.insert(p("10.0.0.0/8"), 3000);
        let after: Vec<u32> = (0..64u32)
            .map(|i| t.lookup(Ipv4Addr::from(0x0a00_0000 | i << 17)))
            .collect();
        assert!(
            after == before || after.iter().all(|v| *v == 3000),
            "all or nothing: {before:?} -> {after:?}"
        );
    }

    /// Make-before-break: a reader doing the data plane's lookup while routes under a
    /// covering route come and go never sees "no route" nor a value nobody wrote.
    #[test]
    fn concurrent_lookups_never_see_a_missing_or_half_written_route() {
        use crate::dataplane::cells::SharedCells;

        let (top, ranges) = (
            SharedCells::new(1 << DXR_TOP_BITS),
            SharedCells::new(1 << 20),
        );
        let mut t = Dxr::new(top.clone(), ranges.clone(), 1 << 20, DXR_TOP_BITS as u8);
        t.insert(p("10.0.0.0/8"), 1).unwrap();
        assert_lookups_stay_valid(
            move |r| {
                let addr = Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x000f_ffff));
                (addr, lookup(&top, &ranges, DXR_TOP_BITS as u8, addr))
            },
            move || {
                let mut rng = Rng::xorshift(7);
                for _ in 0..30_000 {
                    let r = rng.next_u64();
                    let len = 17 + (r % 16) as u8;
                    let addr = 0x0a00_0000 | ((r >> 8) as u32 & 0x000f_ffff);
                    let prefix = Ipv4Net::new(addr.into(), len).unwrap().trunc();
                    if r >> 60 < 9 {
                        t.insert(prefix, 2 + (r >> 32) as u32 % 99).unwrap();
                    } else {
                        t.remove(prefix).unwrap();
                    }
                }
            },
        );
    }
}
