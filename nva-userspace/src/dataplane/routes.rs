//! The routes an mmap-written FIB (DIR-24-8, the multibit trie) holds, by prefix: what
//! a removed prefix hands its cells back to.
use std::hash::Hash;

use ipnet::{Ipv4Net, Ipv6Net};

/// An IPv4 or IPv6 prefix.
pub trait Prefix: Copy + Eq + Hash {
    fn len(&self) -> u8;
    /// The prefix of length `len` (at most this one's) that contains this one.
    fn widened(&self, len: u8) -> Self;
}

impl Prefix for Ipv4Net {
    fn len(&self) -> u8 {
        self.prefix_len()
    }
    fn widened(&self, len: u8) -> Self {
        Ipv4Net::new(self.network(), len)
            .expect("valid length")
            .trunc()
    }
}

impl Prefix for Ipv6Net {
    fn len(&self) -> u8 {
        self.prefix_len()
    }
    fn widened(&self, len: u8) -> Self {
        Ipv6Net::new(self.network(), len)
            .expect("valid length")
            .trunc()
    }
}

/// Prefix -> table entry, with a count per prefix length so that finding the covering
/// route skips the lengths nobody uses.
pub struct Routes<P> {
    entries: crate::PrefixMap<P, u32>,
    per_len: [u32; 129],
}

impl<P: Prefix> Default for Routes<P> {
    fn default() -> Self {
        Self {
            entries: crate::PrefixMap::default(),
            per_len: [0; 129],
        }
    }
}

impl<P: Prefix> Routes<P> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of exactly `prefix`.
    pub fn get(&self, prefix: P) -> Option<u32> {
        self.entries.get(&prefix).copied()
    }

    /// Sets `prefix` to `entry`; true when the prefix is new.
    pub fn insert(&mut self, prefix: P, entry: u32) -> bool {
        let new = self.entries.insert(prefix, entry).is_none();
        if new {
            self.per_len[prefix.len() as usize] += 1;
        }
        new
    }

    /// Removes `prefix`; false when it was not there.
    pub fn remove(&mut self, prefix: P) -> bool {
        let had = self.entries.remove(&prefix).is_some();
        if had {
            self.per_len[prefix.len() as usize] -= 1;
        }
        had
    }

    /// Entry and depth (length + 1) of the longest route shorter than `prefix` that
    /// covers it; (0, 0) when there is none.
    pub fn covering(&self, prefix: P) -> (u32, u8) {
        for l in (0..prefix.len()).rev() {
            if self.per_len[l as usize] == 0 {
                continue;
            }
            if let Some(&v) = self.entries.get(&prefix.widened(l)) {
                return (v, l + 1);
            }
        }
        (0, 0)
    }
}
