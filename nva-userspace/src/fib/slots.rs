//! A table indexed by small integer ids (next hops, ECMP groups): the data plane's
//! arrays are indexed the same way, ids are dense and bounded, so a vector beats a map
//! on the per-route path.
use std::ops::Index;

pub struct Slots<K, T> {
    slots: Vec<Option<T>>,
    _key: std::marker::PhantomData<K>,
}

/// Ids usable as slot indexes.
pub trait SlotId: Copy {
    fn index(self) -> usize;
    fn from_index(i: usize) -> Self;
}

impl SlotId for u16 {
    fn index(self) -> usize {
        self as usize
    }
    fn from_index(i: usize) -> Self {
        i as u16
    }
}

impl SlotId for u32 {
    fn index(self) -> usize {
        self as usize
    }
    fn from_index(i: usize) -> Self {
        i as u32
    }
}

impl<K: SlotId, T> Slots<K, T> {
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            _key: std::marker::PhantomData,
        }
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }

    pub fn get(&self, k: &K) -> Option<&T> {
        self.slots.get(k.index()).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut T> {
        self.slots.get_mut(k.index()).and_then(Option::as_mut)
    }

    pub fn insert(&mut self, k: K, v: T) -> Option<T> {
        let i = k.index();
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i].replace(v)
    }

    pub fn remove(&mut self, k: &K) -> Option<T> {
        self.slots.get_mut(k.index()).and_then(Option::take)
    }

    /// Entries in id order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|v| (K::from_index(i), v)))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }
}

impl<K: SlotId, T> Default for Slots<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: SlotId, T> Index<&K> for Slots<K, T> {
    type Output = T;
    fn index(&self, k: &K) -> &T {
        self.get(k).expect("no entry for this id")
    }
}
