//! Route policies (import and export) and prefix lists, as written in the config, and
//! their evaluation. Pure: no I/O.
//!
//! A [`Policy`] is an ordered list of [`Rule`]s. For each route, rules are tried in
//! order; a rule whose `match` holds (every given condition holds; lists inside one
//! condition mean "any of") applies its `set` and then its `action` decides: `accept`,
//! `reject`, or `next` (keep the changes and go on with the next rule). Matches see the
//! attributes as changed by earlier `next` rules. When no rule decides, `default`
//! does (`accept` unless the config says otherwise).
//!
//! ```toml
//! [[prefix_lists]]
//! name = "spokes"
//! entries = [{ prefix = "10.0.0.0/8", le = 24 }]
//!
//! [[policies]]
//! name = "from-route-server"
//! default = "reject"
//! [[policies.rules]]
//! match = { prefix_list = "spokes" }
//! set = { as_path_exclude = [65515, 65520], local_pref = 200 }
//! action = "accept"
//! ```
//!
//! The protocol's own export rules (NO_ADVERTISE never, NO_EXPORT not to eBGP, our AS
//! prepended towards eBGP, next-hop-self when no next hop is left) are applied after
//! the export policy by [`crate::bgp::export::export_attrs`], not here.

mod community;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use anyhow::{Result, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::bgp::codec::{AsPath, AsSegment, NextHop, PathAttrs};

pub use community::CommunityPattern;

/// A named list of prefixes with optional length ranges, like `ip prefix-list ... ge/le`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefixList {
    pub name: String,
    #[serde(default)]
    pub entries: Vec<PrefixEntry>,
}

/// Matches routes inside `prefix` whose length is in a range, as in Cisco/FRR:
/// neither `ge` nor `le`: exactly `prefix`; `ge` only: from `ge` to the longest
/// (/32, /128); `le` only: from the prefix length to `le`; both: `ge` to `le`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefixEntry {
    pub prefix: IpNet,
    #[serde(default)]
    pub ge: Option<u8>,
    #[serde(default)]
    pub le: Option<u8>,
}

impl PrefixEntry {
    /// The lengths matched, inclusive.
    pub fn length_range(&self) -> (u8, u8) {
        let len = self.prefix.prefix_len();
        let max = self.prefix.max_prefix_len();
        match (self.ge, self.le) {
            (None, None) => (len, len),
            (Some(ge), None) => (ge, max),
            (None, Some(le)) => (len, le),
            (Some(ge), Some(le)) => (ge, le),
        }
    }

    pub fn matches(&self, route: &IpNet) -> bool {
        let (lo, hi) = self.length_range();
        let len = route.prefix_len();
        lo <= len && len <= hi && self.prefix.contains(route)
    }

    fn validate(&self, field: &str) -> Result<()> {
        let p = self.prefix;
        if p.trunc() != p {
            bail!("{field}.prefix: {p} has host bits set");
        }
        let (len, max) = (p.prefix_len(), p.max_prefix_len());
        for (name, v) in [("ge", self.ge), ("le", self.le)] {
            if let Some(v) = v
                && !(len..=max).contains(&v)
            {
                bail!("{field}.{name}: {v} is outside {len}..={max} (the lengths of {p})");
            }
        }
        if let (Some(ge), Some(le)) = (self.ge, self.le)
            && ge > le
        {
            bail!("{field}.le: {le} is shorter than ge {ge}");
        }
        Ok(())
    }
}

impl PrefixList {
    /// Whether any entry matches the route.
    pub fn matches(&self, route: &IpNet) -> bool {
        self.entries.iter().any(|e| e.matches(route))
    }

    /// Checks the name and every entry; errors start with `field` (e.g. `prefix_lists[0]`).
    pub fn validate(&self, field: &str) -> Result<()> {
        if self.name.is_empty() {
            bail!("{field}.name: must not be empty");
        }
        for (i, e) in self.entries.iter().enumerate() {
            e.validate(&format!("{field}.entries[{i}]"))?;
        }
        Ok(())
    }
}

/// What happens to a route no rule decided on.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[default]
    Accept,
    Reject,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    Reject,
    /// Apply `set` and continue with the next rule.
    Next,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What happens when no rule decides (default `accept`).
    #[serde(default)]
    pub default: Verdict,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Conditions, all of which must hold; none given: every route matches.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Changes applied when the rule matches and its action is not `reject`.
    #[serde(default)]
    pub set: Set,
    pub action: Action,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The route matches an entry of this prefix list.
    #[serde(default)]
    pub prefix_list: Option<String>,
    /// The route is one of these prefixes or inside one (more specific).
    #[serde(default)]
    pub prefix: Option<Vec<IpNet>>,
    /// Any of these ASes appears anywhere in the AS path.
    #[serde(default)]
    pub as_path_contains: Option<Vec<u32>>,
    /// The originating (last) AS.
    #[serde(default)]
    pub as_path_origin: Option<u32>,
    /// The neighbouring (first) AS.
    #[serde(default)]
    pub as_path_first: Option<u32>,
    /// At most this many ASes (best-path length: a set counts as one).
    #[serde(default)]
    pub as_path_length_max: Option<usize>,
    /// The route carries any of these communities: "65000:100", "65000:*",
    /// "no-export", "no-advertise", large "1:2:3".
    #[serde(default)]
    pub community: Option<Vec<String>>,
    #[serde(default)]
    pub family: Option<AddressFamily>,
    /// The next hop is inside any of these networks.
    #[serde(default)]
    pub next_hop: Option<Vec<IpNet>>,
    /// The route is in this table ("east-west" or "north-south"): lets export policy
    /// announce each table's routes to different peers.
    #[serde(default)]
    pub table: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Set {
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub med: Option<u32>,
    /// Remove these ASes everywhere in the path (e.g. 65515 and 65520, so routes from
    /// another route-server domain survive its loop prevention).
    #[serde(default)]
    pub as_path_exclude: Option<Vec<u32>>,
    /// Every occurrence of an AS in `from` becomes `to` (default: our own AS).
    #[serde(default)]
    pub as_path_replace: Option<AsPathReplace>,
    /// Prepend an AS (default: our own) `count` times.
    #[serde(default)]
    pub prepend: Option<Prepend>,
    /// Communities to add (exact values).
    #[serde(default)]
    pub communities_add: Option<Vec<String>>,
    /// Communities to remove (patterns allowed: "65000:*").
    #[serde(default)]
    pub communities_remove: Option<Vec<String>>,
    /// Our own address as next hop ([`PolicyContext::local_next_hop_v4`] / `_v6`); when
    /// the context has none for the route's family, the next hop is cleared so the
    /// session fills in its own address on export.
    #[serde(default)]
    pub next_hop_self: Option<bool>,
    /// This next hop, for routes of its family (others keep theirs).
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AsPathReplace {
    pub from: Vec<u32>,
    #[serde(default)]
    pub to: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prepend {
    #[serde(default)]
    pub asn: Option<u32>,
    #[serde(default = "one")]
    pub count: u8,
}

fn one() -> u8 {
    1
}

/// What evaluation needs besides the route.
#[derive(Clone, Copy, Debug)]
pub struct PolicyContext<'a> {
    pub local_as: u32,
    pub local_next_hop_v4: Option<Ipv4Addr>,
    pub local_next_hop_v6: Option<Ipv6Addr>,
    pub prefix_lists: &'a HashMap<String, PrefixList>,
    /// The table of the route being evaluated, when known.
    pub table: Option<&'a str>,
}

/// The result of [`Policy::apply_routes`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Accepted routes with their (possibly changed) attributes.
    pub accepted: Vec<(IpNet, Arc<PathAttrs>)>,
    /// Rejected prefixes: to be withdrawn, in case an earlier version was accepted.
    pub rejected: Vec<IpNet>,
}

fn parse_communities(list: &[String]) -> impl Iterator<Item = CommunityPattern> + '_ {
    // Validated beforehand; anything unparsable is ignored.
    list.iter().filter_map(|s| s.parse().ok())
}

fn is_v6(prefix: &IpNet) -> bool {
    matches!(prefix, IpNet::V6(_))
}

impl Match {
    pub fn matches(&self, prefix: &IpNet, attrs: &PathAttrs, ctx: &PolicyContext) -> bool {
        if let Some(t) = &self.table
            && ctx.table != Some(t.as_str())
        {
            return false;
        }
        if let Some(f) = self.family
            && (f == AddressFamily::Ipv6) != is_v6(prefix)
        {
            return false;
        }
        if let Some(nets) = &self.prefix
            && !nets.iter().any(|n| n.contains(prefix))
        {
            return false;
        }
        if let Some(name) = &self.prefix_list
            && !ctx
                .prefix_lists
                .get(name)
                .is_some_and(|l| l.matches(prefix))
        {
            return false;
        }
        if let Some(asns) = &self.as_path_contains
            && !asns.iter().any(|&a| attrs.as_path.contains(a))
        {
            return false;
        }
        if let Some(a) = self.as_path_origin
            && attrs.as_path.origin_as() != Some(a)
        {
            return false;
        }
        if let Some(a) = self.as_path_first
            && attrs.as_path.first_as() != Some(a)
        {
            return false;
        }
        if let Some(max) = self.as_path_length_max
            && attrs.as_path.path_len() > max
        {
            return false;
        }
        if let Some(list) = &self.community
            && !parse_communities(list).any(|c| c.matches(attrs))
        {
            return false;
        }
        if let Some(nets) = &self.next_hop
            && !attrs
                .next_hop
                .is_some_and(|nh| nets.iter().any(|n| n.contains(&nh.addr())))
        {
            return false;
        }
        true
    }

    fn validate(&self, field: &str, prefix_lists: &HashMap<String, PrefixList>) -> Result<()> {
        if let Some(t) = &self.table
            && t != "east-west"
            && t != "north-south"
        {
            bail!("{field}.table: {t:?} is not a table (east-west, north-south)");
        }
        if let Some(name) = &self.prefix_list {
            let Some(list) = prefix_lists.get(name) else {
                bail!("{field}.prefix_list: no prefix list {name:?}");
            };
            list.validate(&format!("prefix_lists[{name:?}]"))?;
        }
        for (what, nets) in [("prefix", &self.prefix), ("next_hop", &self.next_hop)] {
            for (i, n) in nets.iter().flatten().enumerate() {
                if n.trunc() != *n {
                    bail!("{field}.{what}[{i}]: {n} has host bits set");
                }
            }
        }
        for (i, c) in self.community.iter().flatten().enumerate() {
            c.parse::<CommunityPattern>()
                .map_err(|e| anyhow::anyhow!("{field}.community[{i}]: {e}"))?;
        }
        Ok(())
    }
}

/// Removes `asns` everywhere; segments left empty go, neighbouring sequences merge.
fn as_path_exclude(path: &mut AsPath, asns: &[u32]) {
    let mut out: Vec<AsSegment> = Vec::with_capacity(path.segments.len());
    for mut seg in std::mem::take(&mut path.segments) {
        let v = match &mut seg {
            AsSegment::Set(v)
            | AsSegment::Sequence(v)
            | AsSegment::ConfedSequence(v)
            | AsSegment::ConfedSet(v) => v,
        };
        v.retain(|a| !asns.contains(a));
        if v.is_empty() {
            continue;
        }
        match (out.last_mut(), seg) {
            (Some(AsSegment::Sequence(head)), AsSegment::Sequence(tail))
                if head.len() + tail.len() <= 255 =>
            {
                head.extend(tail)
            }
            (Some(AsSegment::ConfedSequence(head)), AsSegment::ConfedSequence(tail))
                if head.len() + tail.len() <= 255 =>
            {
                head.extend(tail)
            }
            (_, seg) => out.push(seg),
        }
    }
    path.segments = out;
}

fn as_path_replace(path: &mut AsPath, from: &[u32], to: u32) {
    for seg in &mut path.segments {
        let (AsSegment::Set(v)
        | AsSegment::Sequence(v)
        | AsSegment::ConfedSequence(v)
        | AsSegment::ConfedSet(v)) = seg;
        for a in v.iter_mut().filter(|a| from.contains(a)) {
            *a = to;
        }
    }
}

impl Set {
    pub fn is_empty(&self) -> bool {
        *self == Set::default()
    }

    /// Applies the changes in a fixed order: AS-path exclude, replace, prepend;
    /// communities remove, add; local pref, MED; next hop.
    pub fn apply(&self, prefix: &IpNet, attrs: &mut PathAttrs, ctx: &PolicyContext) {
        if let Some(asns) = &self.as_path_exclude {
            as_path_exclude(&mut attrs.as_path, asns);
        }
        if let Some(r) = &self.as_path_replace {
            as_path_replace(&mut attrs.as_path, &r.from, r.to.unwrap_or(ctx.local_as));
        }
        if let Some(p) = &self.prepend {
            attrs
                .as_path
                .prepend(p.asn.unwrap_or(ctx.local_as), p.count as usize);
        }
        if let Some(list) = &self.communities_remove {
            for c in parse_communities(list) {
                c.remove_from(attrs);
            }
        }
        if let Some(list) = &self.communities_add {
            for c in parse_communities(list) {
                c.add_to(attrs);
            }
        }
        if let Some(lp) = self.local_pref {
            attrs.local_pref = Some(lp);
        }
        if let Some(med) = self.med {
            attrs.med = Some(med);
        }
        if self.next_hop_self == Some(true) {
            attrs.next_hop = match prefix {
                IpNet::V4(_) => ctx.local_next_hop_v4.map(NextHop::V4),
                IpNet::V6(_) => ctx.local_next_hop_v6.map(|global| NextHop::V6 {
                    global,
                    link_local: None,
                }),
            };
        }
        if let Some(nh) = self.next_hop
            && nh.is_ipv6() == is_v6(prefix)
        {
            attrs.next_hop = Some(NextHop::from(nh));
        }
    }

    fn validate(&self, field: &str) -> Result<()> {
        if let Some(r) = &self.as_path_replace
            && r.from.is_empty()
        {
            bail!("{field}.as_path_replace.from: must list at least one AS");
        }
        if self.next_hop_self == Some(true) && self.next_hop.is_some() {
            bail!("{field}.next_hop: next_hop and next_hop_self exclude each other");
        }
        for (i, c) in self.communities_remove.iter().flatten().enumerate() {
            c.parse::<CommunityPattern>()
                .map_err(|e| anyhow::anyhow!("{field}.communities_remove[{i}]: {e}"))?;
        }
        for (i, c) in self.communities_add.iter().flatten().enumerate() {
            let p = c
                .parse::<CommunityPattern>()
                .map_err(|e| anyhow::anyhow!("{field}.communities_add[{i}]: {e}"))?;
            if !p.is_exact() {
                bail!(
                    "{field}.communities_add[{i}]: {c:?} is a pattern; only exact communities can be added"
                );
            }
        }
        Ok(())
    }
}

/// The attributes during evaluation.
trait State {
    fn attrs(&self) -> &PathAttrs;
    fn apply(&mut self, rule: usize, set: &Set, prefix: &IpNet, ctx: &PolicyContext);
}

struct CowState<'a>(Cow<'a, PathAttrs>);

impl State for CowState<'_> {
    fn attrs(&self) -> &PathAttrs {
        &self.0
    }
    fn apply(&mut self, _rule: usize, set: &Set, prefix: &IpNet, ctx: &PolicyContext) {
        set.apply(prefix, self.0.to_mut(), ctx);
    }
}

/// Results of `set`s already computed in this batch: (input attributes, rules applied
/// so far as a bit set, IPv6) -> (input kept alive so its address stays unique, result).
type Memo = HashMap<(usize, u128, bool), (Arc<PathAttrs>, Arc<PathAttrs>)>;

/// Evaluation that shares results: routes with the same input attributes that go
/// through the same rules get the same `Arc` (the input itself when nothing changed).
struct SharedState<'m> {
    input: Arc<PathAttrs>,
    current: Arc<PathAttrs>,
    trace: u128,
    v6: bool,
    /// `None` when the policy has too many rules for the trace.
    memo: Option<&'m mut Memo>,
}

impl State for SharedState<'_> {
    fn attrs(&self) -> &PathAttrs {
        &self.current
    }
    fn apply(&mut self, rule: usize, set: &Set, prefix: &IpNet, ctx: &PolicyContext) {
        let compute = |current: &Arc<PathAttrs>| {
            let mut a = PathAttrs::clone(current);
            set.apply(prefix, &mut a, ctx);
            if a == **current {
                current.clone()
            } else {
                Arc::new(a)
            }
        };
        let Some(memo) = self.memo.as_deref_mut() else {
            self.current = compute(&self.current);
            return;
        };
        self.trace |= 1 << rule;
        let key = (Arc::as_ptr(&self.input) as usize, self.trace, self.v6);
        self.current = match memo.get(&key) {
            Some((_, out)) => out.clone(),
            None => {
                let out = compute(&self.current);
                memo.insert(key, (self.input.clone(), out.clone()));
                out
            }
        };
    }
}

impl Policy {
    /// Validates names and values (references to unknown prefix lists, bad community
    /// strings, ge/le out of range); errors name the field, starting with `field`
    /// (e.g. `policies[2].rules[0].match.prefix_list: no prefix list "x"`).
    pub fn validate(&self, field: &str, prefix_lists: &HashMap<String, PrefixList>) -> Result<()> {
        if self.name.is_empty() {
            bail!("{field}.name: must not be empty");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let f = format!("{field}.rules[{i}]");
            rule.matches.validate(&format!("{f}.match"), prefix_lists)?;
            rule.set.validate(&format!("{f}.set"))?;
        }
        Ok(())
    }

    fn evaluate(&self, prefix: &IpNet, state: &mut impl State, ctx: &PolicyContext) -> bool {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches.matches(prefix, state.attrs(), ctx) {
                continue;
            }
            match rule.action {
                Action::Reject => return false,
                action => {
                    if !rule.set.is_empty() {
                        state.apply(i, &rule.set, prefix, ctx);
                    }
                    if action == Action::Accept {
                        return true;
                    }
                }
            }
        }
        self.default == Verdict::Accept
    }

    /// Applies the policy: `Some(attributes, changed or not)` if accepted, `None` if
    /// rejected.
    pub fn apply(
        &self,
        prefix: &IpNet,
        attrs: &PathAttrs,
        ctx: &PolicyContext,
    ) -> Option<PathAttrs> {
        let mut state = CowState(Cow::Borrowed(attrs));
        self.evaluate(prefix, &mut state, ctx)
            .then(|| state.0.into_owned())
    }

    /// Applies the policy to a batch (an UPDATE's routes, or best routes for export),
    /// keeping attributes shared: routes that came with the same `Arc` and meet the same
    /// rules leave with the same `Arc` — the input one when nothing changed — so a
    /// policy never multiplies the memory of a full table.
    pub fn apply_routes(
        &self,
        routes: Vec<(IpNet, Arc<PathAttrs>)>,
        ctx: &PolicyContext,
    ) -> Applied {
        let mut out = Applied {
            accepted: Vec::with_capacity(routes.len()),
            rejected: Vec::new(),
        };
        let mut memo = Memo::new();
        let memo_ok = self.rules.len() <= 128;
        for (prefix, attrs) in routes {
            let mut state = SharedState {
                current: attrs.clone(),
                input: attrs,
                trace: 0,
                v6: is_v6(&prefix),
                memo: memo_ok.then_some(&mut memo),
            };
            if self.evaluate(&prefix, &mut state, ctx) {
                out.accepted.push((prefix, state.current));
            } else {
                out.rejected.push(prefix);
            }
        }
        out
    }
}
