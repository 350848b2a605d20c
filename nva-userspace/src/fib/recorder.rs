//! A `FibWriter` for unit tests: holds the maps as the data plane would and panics on
//! any write that breaks make-before-break: a route naming a group not written yet, a
//! group naming a next hop not written yet, a group released while a route names it, a
//! next hop released while a group names it.
use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Result, bail};
use ipnet::IpNet;
use nva_common::{ECMP_BUCKETS, EcmpGroup, NextHop, ROUTE_FORWARD, Route};

use super::{FibWriter, buckets::NhId};

#[derive(Default)]
pub struct Recorder {
    pub nexthops: HashMap<NhId, NextHop>,
    pub groups: HashMap<u32, [NhId; ECMP_BUCKETS]>,
    pub routes: BTreeMap<(u32, IpNet), Route>,
    pub classes: BTreeMap<IpNet, u32>,
    /// Prefixes whose insertion fails (as into a full table).
    pub refuse: HashSet<IpNet>,
    pub writes: usize,
}

impl Recorder {
    /// The gateways (next-hop addresses, by `views`) the maps forward `prefix` over in
    /// the table of `class`; None when it has no route.
    pub fn gateways(
        &self,
        class: u32,
        prefix: IpNet,
        views: &[super::NextHopView],
    ) -> Option<Vec<std::net::IpAddr>> {
        let route = self.routes.get(&(class, prefix))?;
        assert_eq!(route.action, ROUTE_FORWARD);
        let mut out: Vec<_> = self.groups[&route.group]
            .iter()
            .map(|id| views.iter().find(|v| v.id == *id).expect("written").via)
            .collect();
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

impl FibWriter for Recorder {
    fn write_nexthop(&mut self, id: NhId, nh: &NextHop) -> Result<()> {
        self.writes += 1;
        if nh.flags == 0 {
            let named = self.groups.iter().find(|(_, b)| b.contains(&id));
            assert!(
                named.is_none(),
                "next hop {id} released while group {named:?} names it"
            );
            self.nexthops.remove(&id);
        } else {
            self.nexthops.insert(id, *nh);
        }
        Ok(())
    }

    fn write_group(&mut self, id: u32, group: &EcmpGroup) -> Result<()> {
        self.writes += 1;
        if group.buckets.iter().all(|b| *b == 0) {
            let named = self
                .routes
                .iter()
                .find(|(_, r)| r.action == ROUTE_FORWARD && r.group == id);
            assert!(
                named.is_none(),
                "group {id} released while {named:?} names it"
            );
            self.groups.remove(&id);
        } else {
            for b in group.buckets.iter().filter(|b| **b != 0) {
                assert!(
                    self.nexthops.contains_key(b),
                    "group {id} names next hop {b} before it is written"
                );
            }
            self.groups.insert(id, group.buckets);
        }
        Ok(())
    }

    fn insert_route(&mut self, class: u32, prefix: &IpNet, route: Route) -> Result<()> {
        self.writes += 1;
        if self.refuse.contains(prefix) {
            bail!("table full");
        }
        if route.action == ROUTE_FORWARD {
            assert!(
                self.groups.contains_key(&route.group),
                "{prefix} names group {} before it is written",
                route.group
            );
        }
        self.routes.insert((class, *prefix), route);
        Ok(())
    }

    fn remove_route(&mut self, class: u32, prefix: &IpNet) -> Result<()> {
        self.writes += 1;
        self.routes.remove(&(class, *prefix));
        Ok(())
    }

    fn set_class_prefix(&mut self, prefix: &IpNet, class: Option<u32>) -> Result<()> {
        match class {
            Some(c) => self.classes.insert(*prefix, c),
            None => self.classes.remove(prefix),
        };
        Ok(())
    }
}
