//! The BGP RIB: every peer's accepted paths (Adj-RIB-In, after import policy), best-path
//! selection and the multipath (ECMP) set per prefix. Pure: no I/O, no tokio.
//!
//! Layout, for a full table from several peers: one hash table per address family maps
//! a prefix to its paths, one small boxed slice of `(attributes, peer, generation)` per
//! prefix. Attributes are `Arc`s shared with the UPDATE they came in (one allocation per
//! UPDATE, not per prefix). An UPDATE costs O(its prefixes); a peer going down costs one
//! pass over the table.
//!
//! Best path ([`Rib::paths`], [`RibChange::Set`]), RFC 4271 §9.1.2.2 and common
//! practice:
//! 0. a path whose next hop cannot be resolved is not eligible (RFC 4271 §9.1.2: the
//!    caller says which next hops are unreachable, [`Rib::set_reachability`]); a prefix
//!    with no eligible path is not selected at all,
//! 1. higher LOCAL_PREF (missing: 100),
//! 2. shorter AS_PATH ([`AsPath::path_len`](crate::bgp::codec::AsPath::path_len): a set
//!    counts as one),
//! 3. lower ORIGIN (IGP < EGP < INCOMPLETE),
//! 4. lower MED (missing: 0), compared only between paths from the same neighbouring
//!    AS (the first AS of the path; an empty path is its own group). This is done
//!    deterministically: the best of each neighbour-AS group first, then the groups'
//!    best are compared without MED, so the result never depends on arrival order,
//! 5. eBGP over iBGP,
//! 6. lower peer router id, 7. lower peer address.
//!
//! Multipath: every path that ties with the best on steps 1-5 (AS paths of equal
//! length, not equal content; MED only within a neighbour AS) contributes its next hop,
//! best first, then by router id and address, up to `max_paths` distinct next hops.
//!
//! Graceful restart: [`Rib::mark_stale`] only bumps the peer's generation (O(1)); paths
//! from an older generation are stale until re-announced or swept.

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bgp::codec::{Family, Origin, PathAttrs};
use crate::bgp::event::PeerId;
use crate::bgp::export::DEFAULT_LOCAL_PREF;

/// What the RIB knows about a peer (for best-path tie breaks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: PeerId,
    pub remote_as: u32,
    pub local_as: u32,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    pub address: IpAddr,
}

impl PeerInfo {
    pub fn is_ebgp(&self) -> bool {
        self.remote_as != self.local_as
    }

    /// Stands in for a peer whose session the RIB was not told about: it loses every
    /// tie break.
    fn unknown(id: PeerId) -> PeerInfo {
        PeerInfo {
            id,
            remote_as: 0,
            local_as: 0,
            router_id: Ipv4Addr::BROADCAST,
            address: id,
        }
    }

    fn same_ranking(&self, other: &PeerInfo) -> bool {
        self.is_ebgp() == other.is_ebgp()
            && self.router_id == other.router_id
            && self.address == other.address
    }
}

/// A prefix's selected paths changed.
#[derive(Clone, Debug, PartialEq)]
pub enum RibChange {
    /// The best path and the ECMP set's next hops (sorted, deduplicated; empty when the
    /// selected paths have no next hop). Reported when the best peer, the best path's
    /// attributes or the next-hop set changed.
    Set {
        prefix: IpNet,
        best: Arc<PathAttrs>,
        best_peer: PeerId,
        nexthops: Vec<IpAddr>,
    },
    /// No path left.
    Removed { prefix: IpNet },
}

impl RibChange {
    pub fn prefix(&self) -> IpNet {
        match self {
            RibChange::Set { prefix, .. } | RibChange::Removed { prefix } => *prefix,
        }
    }
}

/// One peer's path for one prefix (16 bytes).
#[derive(Clone, Debug)]
struct Path {
    attrs: Arc<PathAttrs>,
    peer: u32,
    /// The peer's generation when received; older than the peer's current one: stale.
    generation: u32,
}

struct PeerSlot {
    info: PeerInfo,
    generation: u32,
    /// Paths per family (IPv4, IPv6), and how many of them are stale.
    count: [usize; 2],
    stale: [usize; 2],
}

/// The paths of one prefix. A full table from one peer is a million prefixes with one
/// path each: that one is held inline (16 bytes, no allocation of its own); more are in
/// one allocation behind a thin pointer, so the type stays 16 bytes.
#[derive(Debug)]
enum Paths {
    One(Path),
    Many(thin_vec::ThinVec<Path>),
}

impl std::ops::Deref for Paths {
    type Target = [Path];
    fn deref(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Paths {
    fn deref_mut(&mut self) -> &mut [Path] {
        match self {
            Paths::One(p) => std::slice::from_mut(p),
            Paths::Many(v) => v,
        }
    }
}

impl Paths {
    fn push(&mut self, path: Path) {
        match self {
            Paths::Many(v) => v.push(path),
            Paths::One(_) => {
                let Paths::One(first) =
                    std::mem::replace(self, Paths::Many(thin_vec::ThinVec::new()))
                else {
                    unreachable!()
                };
                let mut v = thin_vec::ThinVec::with_capacity(2);
                v.push(first);
                v.push(path);
                *self = Paths::Many(v);
            }
        }
    }

    /// Removes path `i` of two or more (the last path goes with the prefix).
    fn swap_remove(&mut self, i: usize) {
        let Paths::Many(v) = self else {
            panic!("removing the only path of a prefix");
        };
        v.swap_remove(i);
        if v.len() == 1 {
            *self = Paths::One(v.pop().expect("one left"));
        }
    }
}

/// Per-family table of prefixes.
type Table<K> = crate::PrefixMap<K, Paths>;
type PrefixSet = HashSet<IpNet, foldhash::fast::RandomState>;
type NextHopSet = HashSet<IpAddr, foldhash::fast::RandomState>;

trait Key: Copy + Eq + Hash + Into<IpNet> {
    const FAMILY: usize;
}
impl Key for Ipv4Net {
    const FAMILY: usize = 0;
}
impl Key for Ipv6Net {
    const FAMILY: usize = 1;
}

fn family_index(f: Family) -> usize {
    match f {
        Family::Ipv4Unicast => 0,
        Family::Ipv6Unicast => 1,
    }
}

/// Everything best-path selection reads of one path.
#[derive(Clone, Copy)]
struct Rank {
    /// The next hop resolves (step 0).
    eligible: bool,
    local_pref: u32,
    path_len: usize,
    origin: Origin,
    med: u32,
    neighbour_as: Option<u32>,
    ebgp: bool,
    router_id: Ipv4Addr,
    address: IpAddr,
}

impl Rank {
    const NONE: Rank = Rank {
        eligible: false,
        local_pref: 0,
        path_len: 0,
        origin: Origin::Igp,
        med: 0,
        neighbour_as: None,
        ebgp: false,
        router_id: Ipv4Addr::UNSPECIFIED,
        address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };

    /// Steps 0-3 (Less = better).
    fn cmp_head(&self, o: &Rank) -> Ordering {
        o.eligible
            .cmp(&self.eligible)
            .then(o.local_pref.cmp(&self.local_pref))
            .then(self.path_len.cmp(&o.path_len))
            .then(self.origin.cmp(&o.origin))
    }

    /// Steps 5-7.
    fn cmp_tail(&self, o: &Rank) -> Ordering {
        o.ebgp
            .cmp(&self.ebgp)
            .then(self.router_id.cmp(&o.router_id))
            .then(self.address.cmp(&o.address))
    }

    /// Every step, MED included (for paths from the same neighbour AS).
    fn cmp_full(&self, o: &Rank) -> Ordering {
        self.cmp_head(o)
            .then(self.med.cmp(&o.med))
            .then_with(|| self.cmp_tail(o))
    }

    fn cmp_no_med(&self, o: &Rank) -> Ordering {
        self.cmp_head(o).then_with(|| self.cmp_tail(o))
    }
}

/// Runs `f` on a scratch slice of `n` copies of `init`: on the stack for the usual
/// handful of paths, so selection does not allocate.
fn scratch<T: Copy, R>(n: usize, init: T, f: impl FnOnce(&mut [T]) -> R) -> R {
    const STACK: usize = 8;
    if n <= STACK {
        let mut buf = [init; STACK];
        f(&mut buf[..n])
    } else {
        f(&mut vec![init; n])
    }
}

/// The selected paths of a prefix, as indices into its paths.
struct Selection {
    best: usize,
    /// Paths in the ECMP set (the best included), in preference order.
    multipath: Vec<usize>,
}

/// What a change is judged on.
struct Summary {
    peer: u32,
    attrs: Arc<PathAttrs>,
    nexthops: Vec<IpAddr>,
}

impl Summary {
    fn same(&self, o: &Summary) -> bool {
        self.peer == o.peer
            && (Arc::ptr_eq(&self.attrs, &o.attrs) || self.attrs == o.attrs)
            && self.nexthops == o.nexthops
    }
}

/// Best-path selection over the peers' current infos.
#[derive(Clone, Copy)]
struct Selector<'a> {
    peers: &'a [PeerSlot],
    multipath: bool,
    max_paths: usize,
    /// Next hops that do not resolve (usually empty: checked without hashing then).
    unreachable: &'a NextHopSet,
}

impl Selector<'_> {
    fn eligible(&self, p: &Path) -> bool {
        self.unreachable.is_empty()
            || p.attrs
                .next_hop
                .is_none_or(|n| !self.unreachable.contains(&n.addr()))
    }

    fn rank(&self, p: &Path) -> Rank {
        let info = &self.peers[p.peer as usize].info;
        let a = &*p.attrs;
        Rank {
            eligible: self.eligible(p),
            local_pref: a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
            path_len: a.as_path.path_len(),
            origin: a.origin,
            med: a.med.unwrap_or(0),
            neighbour_as: a.as_path.first_as(),
            ebgp: info.is_ebgp(),
            router_id: info.router_id,
            address: info.address,
        }
    }

    fn best_of(ranks: &[Rank]) -> usize {
        let mut best: Option<usize> = None;
        for (i, r) in ranks.iter().enumerate() {
            // The best of its neighbour-AS group?
            let group_best = ranks.iter().enumerate().all(|(j, o)| {
                j == i || o.neighbour_as != r.neighbour_as || r.cmp_full(o) == Ordering::Less
            });
            if group_best && best.is_none_or(|b| r.cmp_no_med(&ranks[b]) == Ordering::Less) {
                best = Some(i);
            }
        }
        best.unwrap_or(0)
    }

    fn best(&self, paths: &[Path]) -> usize {
        if paths.len() == 1 {
            return 0;
        }
        scratch(paths.len(), Rank::NONE, |ranks| {
            for (r, p) in ranks.iter_mut().zip(paths) {
                *r = self.rank(p);
            }
            Self::best_of(ranks)
        })
    }

    /// Selects: passes the index of every path in the ECMP set to `each` (the best
    /// first, then in preference order) and returns the best's index and the set's
    /// sorted next hops.
    fn walk(&self, paths: &[Path], mut each: impl FnMut(usize)) -> (usize, Vec<IpAddr>) {
        let nh = |i: usize| paths[i].attrs.next_hop.map(|n| n.addr());
        if !self.multipath || paths.len() == 1 {
            let best = self.best(paths);
            each(best);
            return (best, nh(best).into_iter().collect());
        }
        scratch(paths.len(), Rank::NONE, |ranks| {
            for (r, p) in ranks.iter_mut().zip(paths) {
                *r = self.rank(p);
            }
            let best = Self::best_of(ranks);
            let b = &ranks[best];
            scratch(paths.len(), 0usize, |cands| {
                let mut n = 0;
                for (i, r) in ranks.iter().enumerate() {
                    // Ties with the best down to eBGP/iBGP, and survives the MED step
                    // within its neighbour AS.
                    if i == best
                        || (r.cmp_head(b) == Ordering::Equal
                            && r.ebgp == b.ebgp
                            && !ranks.iter().any(|o| {
                                o.neighbour_as == r.neighbour_as
                                    && o.cmp_head(r) == Ordering::Equal
                                    && o.med < r.med
                            }))
                    {
                        cands[n] = i;
                        n += 1;
                    }
                }
                let cands = &mut cands[..n];
                cands.sort_unstable_by(|&x, &y| {
                    (x != best)
                        .cmp(&(y != best))
                        .then_with(|| ranks[x].cmp_tail(&ranks[y]))
                });
                let max = self.max_paths.max(1);
                let mut nexthops: Vec<IpAddr> = Vec::with_capacity(n.min(max));
                for &i in cands.iter() {
                    match nh(i) {
                        Some(a) if nexthops.contains(&a) => each(i),
                        Some(a) if nexthops.len() < max => {
                            nexthops.push(a);
                            each(i);
                        }
                        None if i == best => each(i),
                        _ => {}
                    }
                }
                nexthops.sort_unstable();
                (best, nexthops)
            })
        })
    }

    fn select(&self, paths: &[Path]) -> Selection {
        let mut multipath = Vec::new();
        let (best, _) = self.walk(paths, |i| multipath.push(i));
        Selection { best, multipath }
    }

    fn summary(&self, paths: &[Path]) -> Option<Summary> {
        if paths.is_empty() {
            return None;
        }
        let (best, nexthops) = self.walk(paths, |_| {});
        let best = &paths[best];
        if !self.eligible(best) {
            // Every path's next hop is unreachable: nothing is selected.
            return None;
        }
        Some(Summary {
            peer: best.peer,
            attrs: best.attrs.clone(),
            nexthops,
        })
    }

    /// The change from `old` to the current `paths`, if any.
    fn change(&self, prefix: IpNet, old: Option<Summary>, paths: &[Path]) -> Option<RibChange> {
        let new = self.summary(paths);
        match (old, new) {
            (None, None) => None,
            (Some(_), None) => Some(RibChange::Removed { prefix }),
            (Some(o), Some(n)) if o.same(&n) => None,
            (_, Some(n)) => Some(RibChange::Set {
                prefix,
                best: n.attrs,
                best_peer: self.peers[n.peer as usize].info.id,
                nexthops: n.nexthops,
            }),
        }
    }
}

/// Removes the paths of `peer` that `gone` selects from one table; returns the changes
/// and how many paths went.
fn remove_paths<K: Key>(
    table: &mut Table<K>,
    sel: Selector,
    peer: u32,
    gone: impl Fn(&Path) -> bool,
    changes: &mut Vec<RibChange>,
) -> usize {
    let mut removed = 0;
    table.retain(|k, paths| {
        let Some(i) = paths.iter().position(|p| p.peer == peer && gone(p)) else {
            return true;
        };
        removed += 1;
        if paths.len() == 1 {
            changes.push(RibChange::Removed {
                prefix: (*k).into(),
            });
            return false;
        }
        // Even a path outside the ECMP set can matter: through MED, it may have kept
        // another path of its neighbour AS out.
        let old = sel.summary(paths);
        paths.swap_remove(i);
        changes.extend(sel.change((*k).into(), old, paths));
        true
    });
    removed
}

fn route_iter<'a, K: Key>(
    table: &'a Table<K>,
    sel: Selector<'a>,
) -> impl Iterator<Item = (IpNet, &'a Path, &'a [Path])> + 'a {
    table.iter().map(move |(k, paths)| {
        let best = sel.best(paths);
        ((*k).into(), &paths[best], &paths[..])
    })
}

pub struct Rib {
    multipath: bool,
    max_paths: usize,
    peers: Vec<PeerSlot>,
    peer_index: HashMap<PeerId, u32>,
    v4: Table<Ipv4Net>,
    v6: Table<Ipv6Net>,
    /// Next hops that do not resolve: their paths are not eligible.
    unreachable: NextHopSet,
}

impl Rib {
    /// `multipath = false`: only the best path's next hop; otherwise up to `max_paths`.
    pub fn new(multipath: bool, max_paths: usize) -> Self {
        Rib {
            multipath,
            max_paths,
            peers: Vec::new(),
            peer_index: HashMap::new(),
            v4: Table::default(),
            v6: Table::default(),
            unreachable: NextHopSet::default(),
        }
    }

    fn selector(&self) -> Selector<'_> {
        Selector {
            peers: &self.peers,
            multipath: self.multipath,
            max_paths: self.max_paths,
            unreachable: &self.unreachable,
        }
    }

    /// Whether paths via `nh` are eligible now.
    pub fn reachable(&self, nh: IpAddr) -> bool {
        !self.unreachable.contains(&nh)
    }

    /// Next-hop tracking: the reachability of some next hops changed (`true` =
    /// resolves now). Returns a change for every prefix with a path via one of them
    /// whose selection changed, and a `Set` of the unchanged selection for every other
    /// prefix whose selected next hops include one of them (its resolution may have
    /// moved: the caller re-installs it). One pass over the table; rare.
    pub fn set_reachability(&mut self, changed: &[(IpAddr, bool)]) -> Vec<RibChange> {
        if changed.is_empty() {
            return Vec::new();
        }
        let touched: NextHopSet = changed.iter().map(|(a, _)| *a).collect();
        let via_touched = |paths: &[Path]| {
            paths.iter().any(|p| {
                p.attrs
                    .next_hop
                    .is_some_and(|n| touched.contains(&n.addr()))
            })
        };
        let sel = self.selector();
        let before: Vec<(IpNet, Option<Summary>)> = route_iter(&self.v4, sel)
            .chain(route_iter(&self.v6, sel))
            .filter(|(_, _, paths)| via_touched(paths))
            .map(|(k, _, paths)| (k, sel.summary(paths)))
            .collect();
        for (addr, reachable) in changed {
            if *reachable {
                self.unreachable.remove(addr);
            } else {
                self.unreachable.insert(*addr);
            }
        }
        let sel = self.selector();
        let mut out = Vec::new();
        for (prefix, old) in before {
            let paths = self.paths_of(&prefix);
            let uses_touched = old
                .as_ref()
                .is_some_and(|o| o.nexthops.iter().any(|n| touched.contains(n)));
            match sel.change(prefix, old, paths) {
                Some(c) => out.push(c),
                None if uses_touched => out.extend(sel.change(prefix, None, paths)),
                None => {}
            }
        }
        out
    }

    /// How many paths each peer has via one of `nexthops`.
    pub fn paths_via(&self, nexthops: &[IpAddr]) -> Vec<(PeerId, usize)> {
        let mut counts = vec![0usize; self.peers.len()];
        let sel = self.selector();
        for (_, _, paths) in route_iter(&self.v4, sel).chain(route_iter(&self.v6, sel)) {
            for p in paths {
                if p.attrs
                    .next_hop
                    .is_some_and(|n| nexthops.contains(&n.addr()))
                {
                    counts[p.peer as usize] += 1;
                }
            }
        }
        counts
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .map(|(i, n)| (self.peers[i].info.id, n))
            .collect()
    }

    /// Marks a next hop no path uses yet as unreachable (no re-selection needed).
    pub fn set_unreachable_unused(&mut self, nh: IpAddr) {
        self.unreachable.insert(nh);
    }

    fn paths_of(&self, prefix: &IpNet) -> &[Path] {
        match prefix.trunc() {
            IpNet::V4(k) => self.v4.get(&k).map_or(&[], |p| &p[..]),
            IpNet::V6(k) => self.v6.get(&k).map_or(&[], |p| &p[..]),
        }
    }

    fn slot(&mut self, peer: PeerId) -> u32 {
        if let Some(&i) = self.peer_index.get(&peer) {
            return i;
        }
        let i = self.peers.len() as u32;
        self.peers.push(PeerSlot {
            info: PeerInfo::unknown(peer),
            generation: 0,
            count: [0; 2],
            stale: [0; 2],
        });
        self.peer_index.insert(peer, i);
        i
    }

    /// Registers a peer (or updates what is known of it; call it when its session comes
    /// up). A peer sending routes before this ranks last in tie breaks. Returns changes
    /// only if the peer still has paths (kept stale over a graceful restart) and its
    /// new router id, address or eBGP/iBGP-ness changes their selection.
    pub fn peer_up(&mut self, info: PeerInfo) -> Vec<RibChange> {
        let idx = self.slot(info.id) as usize;
        let slot = &self.peers[idx];
        if slot.count == [0; 2] || slot.info.same_ranking(&info) {
            self.peers[idx].info = info;
            return Vec::new();
        }
        // Rare: re-rank every prefix with a path from this peer.
        let peer = idx as u32;
        let sel = self.selector();
        let has = |paths: &[Path]| paths.iter().any(|p| p.peer == peer);
        let old4: Vec<(Ipv4Net, Option<Summary>)> = (self.v4.iter())
            .filter(|(_, p)| has(p))
            .map(|(k, p)| (*k, sel.summary(p)))
            .collect();
        let old6: Vec<(Ipv6Net, Option<Summary>)> = (self.v6.iter())
            .filter(|(_, p)| has(p))
            .map(|(k, p)| (*k, sel.summary(p)))
            .collect();
        self.peers[idx].info = info;
        let sel = self.selector();
        let mut changes = Vec::new();
        for (k, old) in old4 {
            changes.extend(sel.change(k.into(), old, &self.v4[&k]));
        }
        for (k, old) in old6 {
            changes.extend(sel.change(k.into(), old, &self.v6[&k]));
        }
        changes
    }

    /// Applies an UPDATE (already filtered by import policy): withdrawals first, then
    /// announcements, each replacing the peer's earlier path for its prefix. Returns the
    /// prefixes whose selection changed, compared with before the call.
    pub fn update(
        &mut self,
        peer: PeerId,
        announced: Vec<(IpNet, Arc<PathAttrs>)>,
        withdrawn: &[IpNet],
    ) -> Vec<RibChange> {
        let peer = self.slot(peer);
        let generation = self.peers[peer as usize].generation;
        let n = announced.len() + withdrawn.len();
        // The selection of every touched prefix before its first change.
        let mut before: Vec<(IpNet, Option<Summary>)> = Vec::with_capacity(n);
        let mut seen: PrefixSet =
            HashSet::with_capacity_and_hasher(if n > 1 { n } else { 0 }, Default::default());
        let Rib {
            multipath,
            max_paths,
            peers,
            v4,
            v6,
            unreachable,
            ..
        } = self;
        let mut ctx = UpdateCtx {
            sel: Selector {
                peers,
                multipath: *multipath,
                max_paths: *max_paths,
                unreachable,
            },
            peer,
            generation,
            n,
            before: &mut before,
            seen: &mut seen,
            count: [0; 2],
            stale: [0; 2],
        };
        for p in withdrawn {
            match p.trunc() {
                IpNet::V4(k) => ctx.withdraw(v4, k),
                IpNet::V6(k) => ctx.withdraw(v6, k),
            }
        }
        for (p, attrs) in announced {
            match p.trunc() {
                IpNet::V4(k) => ctx.announce(v4, k, attrs),
                IpNet::V6(k) => ctx.announce(v6, k, attrs),
            }
        }
        let (count, stale) = (ctx.count, ctx.stale);
        let slot = &mut self.peers[peer as usize];
        for f in 0..2 {
            slot.count[f] = slot.count[f].wrapping_add_signed(count[f]);
            slot.stale[f] -= stale[f];
        }
        let sel = self.selector();
        before
            .into_iter()
            .filter_map(|(prefix, old)| {
                let paths: &[Path] = match prefix {
                    IpNet::V4(k) => self.v4.get(&k).map_or(&[], |p| &p[..]),
                    IpNet::V6(k) => self.v6.get(&k).map_or(&[], |p| &p[..]),
                };
                sel.change(prefix, old, paths)
            })
            .collect()
    }

    /// Session down without graceful restart: all its paths go.
    pub fn peer_down(&mut self, peer: PeerId) -> Vec<RibChange> {
        self.remove_where(peer, [true, true], |_| true)
    }

    /// Graceful restart (RFC 4724): the peer's current paths become stale; they stay
    /// selectable until re-announced (then fresh again) or swept.
    pub fn mark_stale(&mut self, peer: PeerId) {
        let i = self.slot(peer) as usize;
        let slot = &mut self.peers[i];
        slot.generation = slot.generation.wrapping_add(1);
        slot.stale = slot.count;
    }

    /// After End-of-RIB for every family, or the restart timer: paths still stale are
    /// removed.
    pub fn sweep_stale(&mut self, peer: PeerId) -> Vec<RibChange> {
        self.sweep(peer, [true, true])
    }

    /// After End-of-RIB for one family: its paths still stale are removed.
    pub fn sweep_stale_family(&mut self, peer: PeerId, family: Family) -> Vec<RibChange> {
        let mut which = [false; 2];
        which[family_index(family)] = true;
        self.sweep(peer, which)
    }

    fn sweep(&mut self, peer: PeerId, which: [bool; 2]) -> Vec<RibChange> {
        let Some(&i) = self.peer_index.get(&peer) else {
            return Vec::new();
        };
        let slot = &self.peers[i as usize];
        let which = [0, 1].map(|f| which[f] && slot.stale[f] > 0);
        let generation = slot.generation;
        self.remove_where(peer, which, move |p| p.generation != generation)
    }

    fn remove_where(
        &mut self,
        peer: PeerId,
        which: [bool; 2],
        gone: impl Fn(&Path) -> bool + Copy,
    ) -> Vec<RibChange> {
        let Some(&i) = self.peer_index.get(&peer) else {
            return Vec::new();
        };
        // At most one change per path going: reserve it at once (untouched capacity
        // costs no memory) rather than regrow a million-entry vector.
        let slot = &self.peers[i as usize];
        let bound: usize = (0..2).filter(|&f| which[f]).map(|f| slot.count[f]).sum();
        let mut changes = Vec::with_capacity(bound);
        let sel = Selector {
            peers: &self.peers,
            multipath: self.multipath,
            max_paths: self.max_paths,
            unreachable: &self.unreachable,
        };
        let mut removed = [0; 2];
        if which[0] && self.peers[i as usize].count[0] > 0 {
            removed[0] = remove_paths(&mut self.v4, sel, i, gone, &mut changes);
        }
        if which[1] && self.peers[i as usize].count[1] > 0 {
            removed[1] = remove_paths(&mut self.v6, sel, i, gone, &mut changes);
        }
        let slot = &mut self.peers[i as usize];
        for (f, n) in removed.into_iter().enumerate() {
            slot.count[f] -= n;
            // Either everything of the family went, or exactly the stale paths.
            slot.stale[f] = slot.stale[f].saturating_sub(n);
        }
        changes
    }

    /// Accepted paths (prefixes) in the peer's Adj-RIB-In, stale ones included.
    pub fn prefix_count(&self, peer: PeerId) -> usize {
        self.family_counts(peer).iter().sum()
    }

    /// Paths from `peer` per family (IPv4, IPv6).
    pub fn family_counts(&self, peer: PeerId) -> [usize; 2] {
        self.peer_index
            .get(&peer)
            .map_or([0; 2], |&i| self.peers[i as usize].count)
    }

    /// Paths of the peer still stale from before a graceful restart.
    pub fn stale_count(&self, peer: PeerId) -> usize {
        self.peer_index
            .get(&peer)
            .map_or(0, |&i| self.peers[i as usize].stale.iter().sum())
    }

    /// Every path of a prefix, best first, then the rest of the ECMP set, then the
    /// others: (peer, attributes, best, in the ECMP set (the best included)).
    pub fn paths(&self, prefix: &IpNet) -> Vec<(PeerId, Arc<PathAttrs>, bool, bool)> {
        let paths: &[Path] = match prefix.trunc() {
            IpNet::V4(k) => self.v4.get(&k).map_or(&[], |p| &p[..]),
            IpNet::V6(k) => self.v6.get(&k).map_or(&[], |p| &p[..]),
        };
        if paths.is_empty() {
            return Vec::new();
        }
        let sel = self.selector();
        let mut s = sel.select(paths);
        if !sel.eligible(&paths[s.best]) {
            // Nothing is selected: list them all as candidates.
            s.multipath.clear();
        }
        let mut rest: Vec<usize> = (0..paths.len())
            .filter(|i| !s.multipath.contains(i))
            .collect();
        rest.sort_by(|&a, &b| sel.rank(&paths[a]).cmp_full(&sel.rank(&paths[b])));
        let mut order: Vec<usize> = vec![s.best];
        order.extend(s.multipath.iter().filter(|&&i| i != s.best));
        order.extend(rest);
        order
            .into_iter()
            .map(|i| {
                let p = &paths[i];
                (
                    self.peers[p.peer as usize].info.id,
                    p.attrs.clone(),
                    i == s.best && !s.multipath.is_empty(),
                    s.multipath.contains(&i),
                )
            })
            .collect()
    }

    /// The current selection of a prefix, as the [`RibChange::Set`] that installed it.
    pub fn selection(&self, prefix: &IpNet) -> Option<RibChange> {
        let prefix = prefix.trunc();
        let paths: &[Path] = match prefix {
            IpNet::V4(k) => self.v4.get(&k)?,
            IpNet::V6(k) => self.v6.get(&k)?,
        };
        self.selector().change(prefix, None, paths)
    }

    /// Prefixes with at least one path.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every prefix with its best path (for export to other peers), in no order.
    pub fn best_routes(&self) -> impl Iterator<Item = (IpNet, &Arc<PathAttrs>, PeerId)> + '_ {
        let sel = self.selector();
        let id = move |p: &Path| sel.peers[p.peer as usize].info.id;
        route_iter(&self.v4, sel)
            .chain(route_iter(&self.v6, sel))
            .filter(move |(_, best, _)| sel.eligible(best))
            .map(move |(k, best, _)| (k, &best.attrs, id(best)))
    }

    /// Every prefix's selection as a [`RibChange::Set`] (to program a FIB from scratch),
    /// in no order.
    pub fn routes(&self) -> impl Iterator<Item = RibChange> + '_ {
        let sel = self.selector();
        route_iter(&self.v4, sel)
            .chain(route_iter(&self.v6, sel))
            .filter_map(move |(k, _, paths)| sel.change(k, None, paths))
    }
}

/// The state of one [`Rib::update`] call.
struct UpdateCtx<'a> {
    sel: Selector<'a>,
    peer: u32,
    generation: u32,
    n: usize,
    before: &'a mut Vec<(IpNet, Option<Summary>)>,
    seen: &'a mut PrefixSet,
    /// Change of the peer's path count and stale count per family.
    count: [isize; 2],
    stale: [usize; 2],
}

impl UpdateCtx<'_> {
    /// Records the selection before the first change of `prefix` in this call.
    fn remember(&mut self, prefix: IpNet, paths: &[Path]) {
        if self.n == 1 || self.seen.insert(prefix) {
            self.before.push((prefix, self.sel.summary(paths)));
        }
    }

    fn withdraw<K: Key>(&mut self, table: &mut Table<K>, k: K) {
        let Entry::Occupied(mut e) = table.entry(k) else {
            return;
        };
        let Some(i) = e.get().iter().position(|p| p.peer == self.peer) else {
            return;
        };
        self.remember(k.into(), e.get());
        if e.get()[i].generation != self.generation {
            self.stale[K::FAMILY] += 1;
        }
        self.count[K::FAMILY] -= 1;
        if e.get().len() == 1 {
            e.remove();
        } else {
            e.get_mut().swap_remove(i);
        }
    }

    fn announce<K: Key>(&mut self, table: &mut Table<K>, k: K, attrs: Arc<PathAttrs>) {
        let path = Path {
            attrs,
            peer: self.peer,
            generation: self.generation,
        };
        match table.entry(k) {
            Entry::Vacant(e) => {
                self.remember(k.into(), &[]);
                self.count[K::FAMILY] += 1;
                e.insert(Paths::One(path));
            }
            Entry::Occupied(mut e) => {
                self.remember(k.into(), e.get());
                let paths = e.get_mut();
                if let Some(old) = paths.iter_mut().find(|p| p.peer == self.peer) {
                    if old.generation != self.generation {
                        self.stale[K::FAMILY] += 1;
                    }
                    *old = path;
                } else {
                    self.count[K::FAMILY] += 1;
                    paths.push(path);
                }
            }
        }
    }
}
