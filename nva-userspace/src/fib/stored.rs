//! How the FIB stores a full table compactly. A million prefixes point at a handful of
//! distinct targets, and almost every prefix has a route from one source only, so:
//! - each distinct target is stored once (`Targets`, reference counted) and a route
//!   names it by a 4-byte `TargetId`;
//! - a prefix's one route is held inline (`Sources::One`); two or more live in a side
//!   list (`SourceLists`) that the prefix names by index.
//!
//! With these a prefix's entry is 20 bytes and its hash-table bucket 40 (was 80 and 105).
use rustc_hash::FxHashMap;

use super::{Source, Target};

/// A stored target (an index into `Targets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TargetId(u32);

/// Every distinct target routes name, with how many references each has (routes
/// offered and routes installed); freed at 0.
#[derive(Default)]
pub struct Targets {
    slots: Vec<Option<(Target, u32)>>,
    ids: FxHashMap<Target, TargetId>,
    free: Vec<u32>,
}

impl Targets {
    /// The id of `target`, taking a reference to it.
    pub fn intern(&mut self, target: Target) -> TargetId {
        if let Some(&id) = self.ids.get(&target) {
            self.retain(id);
            return id;
        }
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        self.slots[i as usize] = Some((target.clone(), 1));
        self.ids.insert(target, TargetId(i));
        TargetId(i)
    }

    /// Takes another reference to `id`.
    pub fn retain(&mut self, id: TargetId) {
        self.slot(id).1 += 1;
    }

    /// Drops a reference to `id`; the target is forgotten with its last one.
    pub fn release(&mut self, id: TargetId) {
        let slot = self.slot(id);
        slot.1 -= 1;
        if slot.1 == 0 {
            let (target, _) = self.slots[id.0 as usize].take().expect("interned");
            self.ids.remove(&target);
            self.free.push(id.0);
        }
    }

    pub fn get(&self, id: TargetId) -> &Target {
        &self.slots[id.0 as usize]
            .as_ref()
            .expect("interned target")
            .0
    }

    /// The forward targets that name next hop `nh`.
    pub fn naming(&self, nh: super::NhId) -> Vec<TargetId> {
        self.ids
            .iter()
            .filter(|(t, _)| matches!(t, Target::Forward(m) if m.contains(&nh)))
            .map(|(_, id)| *id)
            .collect()
    }

    /// Distinct targets stored.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    fn slot(&mut self, id: TargetId) -> &mut (Target, u32) {
        self.slots[id.0 as usize].as_mut().expect("interned target")
    }
}

/// The routes of every source for one prefix, ordered by preference (last = most
/// preferred).
#[derive(Clone, Copy, Debug, Default)]
pub enum Sources {
    #[default]
    Empty,
    One((Source, TargetId)),
    /// Two or more: `SourceLists` entry of this index.
    Many(u32),
}

/// The prefixes' lists of two or more routes (rare: a static route and BGP for the same
/// prefix, a local address inside a connected subnet's prefix).
#[derive(Default)]
pub struct SourceLists {
    lists: Vec<Vec<(Source, TargetId)>>,
    free: Vec<u32>,
}

impl SourceLists {
    /// The routes of `sources`, sorted by source.
    pub fn get<'a>(&'a self, sources: &'a Sources) -> &'a [(Source, TargetId)] {
        match sources {
            Sources::Empty => &[],
            Sources::One(pair) => std::slice::from_ref(pair),
            Sources::Many(i) => &self.lists[*i as usize],
        }
    }

    /// Sets `source`'s route; returns the target it replaced.
    pub fn insert(
        &mut self,
        sources: &mut Sources,
        source: Source,
        target: TargetId,
    ) -> Option<TargetId> {
        let at = self.get(sources).binary_search_by_key(&source, |(s, _)| *s);
        match (*sources, at) {
            (Sources::One((s, old)), Ok(_)) => {
                *sources = Sources::One((s, target));
                Some(old)
            }
            (Sources::Many(i), Ok(at)) => {
                Some(std::mem::replace(&mut self.lists[i as usize][at].1, target))
            }
            (Sources::Empty, _) => {
                *sources = Sources::One((source, target));
                None
            }
            (Sources::One(pair), Err(at)) => {
                let mut list = Vec::with_capacity(2);
                list.push(pair);
                list.insert(at, (source, target));
                *sources = Sources::Many(self.store(list));
                None
            }
            (Sources::Many(i), Err(at)) => {
                self.lists[i as usize].insert(at, (source, target));
                None
            }
        }
    }

    /// Removes `source`'s route; returns its target.
    pub fn remove(&mut self, sources: &mut Sources, source: Source) -> Option<TargetId> {
        let at = self
            .get(sources)
            .binary_search_by_key(&source, |(s, _)| *s)
            .ok()?;
        match *sources {
            Sources::Empty => None,
            Sources::One((_, target)) => {
                *sources = Sources::Empty;
                Some(target)
            }
            Sources::Many(i) => {
                let list = &mut self.lists[i as usize];
                let (_, target) = list.remove(at);
                if list.len() == 1 {
                    *sources = Sources::One(list.pop().expect("one left"));
                    self.free.push(i);
                }
                Some(target)
            }
        }
    }

    fn store(&mut self, list: Vec<(Source, TargetId)>) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.lists[i as usize] = list;
                i
            }
            None => {
                self.lists.push(list);
                (self.lists.len() - 1) as u32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(id: super::super::NhId) -> Target {
        Target::Forward([id].into())
    }

    #[test]
    fn a_prefix_entry_stays_small() {
        // The point of these types: a full table pays for them a million times.
        assert_eq!(std::mem::size_of::<Sources>(), 8);
    }

    #[test]
    fn targets_are_stored_once_and_freed_with_their_last_reference() {
        let mut t = Targets::default();
        let a = t.intern(fwd(1));
        let b = t.intern(Target::Forward([1].into()));
        assert_eq!(a, b);
        assert_eq!(t.len(), 1);
        let c = t.intern(fwd(2));
        assert_ne!(a, c);
        assert_eq!(t.naming(1), [a]);
        t.release(a);
        assert_eq!(t.get(a), &fwd(1));
        t.release(b);
        assert_eq!(t.len(), 1);
        // The freed slot is reused for the next new target.
        let d = t.intern(Target::Blackhole);
        assert_eq!(d, a);
        assert_eq!(t.get(d), &Target::Blackhole);
        assert_eq!(t.get(c), &fwd(2));
    }

    #[test]
    fn sources_stay_sorted_inline_for_one_and_lists_are_reused() {
        let mut t = Targets::default();
        let (x, y, z) = (t.intern(fwd(1)), t.intern(fwd(2)), t.intern(fwd(3)));
        let mut lists = SourceLists::default();
        let mut s = Sources::default();
        assert!(lists.get(&s).is_empty());
        assert_eq!(lists.insert(&mut s, Source::Bgp, x), None);
        assert!(matches!(s, Sources::One(_)));
        assert_eq!(lists.insert(&mut s, Source::Bgp, y), Some(x));
        assert_eq!(lists.insert(&mut s, Source::Static, z), None);
        assert_eq!(lists.insert(&mut s, Source::Connected, x), None);
        let order: Vec<Source> = lists.get(&s).iter().map(|(s, _)| *s).collect();
        assert_eq!(order, [Source::Connected, Source::Bgp, Source::Static]);
        assert_eq!(lists.get(&s).last(), Some(&(Source::Static, z)));
        assert_eq!(lists.remove(&mut s, Source::Local), None);
        assert_eq!(lists.remove(&mut s, Source::Bgp), Some(y));
        assert_eq!(lists.remove(&mut s, Source::Connected), Some(x));
        assert!(matches!(s, Sources::One((Source::Static, _))));
        // The list went back to the free list and serves the next prefix.
        let mut other = Sources::default();
        lists.insert(&mut other, Source::Bgp, x);
        lists.insert(&mut other, Source::Static, y);
        assert!(matches!(other, Sources::Many(0)));
        assert_eq!(lists.lists.len(), 1);
        assert_eq!(lists.remove(&mut s, Source::Static), Some(z));
        assert!(matches!(s, Sources::Empty));
        assert_eq!(lists.remove(&mut s, Source::Static), None);
    }
}
