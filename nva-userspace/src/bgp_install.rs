//! BGP's selected routes into the FIB. Each RIB change's BGP next hops resolve (through
//! the feed's tracker) to the data plane's next hops: the next hop itself when it is on
//! a connected subnet, else the gateways of the route it resolves through; the route
//! goes over all of them as one ECMP set, with source `Bgp`.
use std::{collections::HashSet, net::IpAddr};

use anyhow::Result;
use ipnet::IpNet;
use tracing::warn;

use crate::{
    fib::{Fib, FibWriter, Neigh, NhKey, Port, Source, Table, Target},
    resolve::{Resolution, Tracker},
    rib::RibChange,
};

/// A gateway's egress port and its neighbour entry as the kernel has it.
pub type Gateways<'a> = dyn Fn(NhKey) -> Option<(Port, Neigh)> + 'a;

/// The routes BGP selected that are not in the FIB because none of their next hops
/// could be written (a full next-hop table, or no egress port yet): tried again by
/// `retry`.
#[derive(Debug, Default)]
pub struct BgpInstall {
    unapplied: HashSet<(Table, IpNet)>,
}

impl BgpInstall {
    /// Writes selection changes into the FIB. `gateways` gives a gateway's egress port
    /// and neighbour entry (None for a gateway out of no port of nva's).
    pub fn apply<W: FibWriter>(
        &mut self,
        changes: &[(Table, RibChange)],
        tracker: &Tracker,
        fib: &mut Fib<W>,
        gateways: &Gateways,
    ) -> Result<()> {
        // The routes of one UPDATE share their next hops: resolve them once per set.
        let mut last: Option<(&[IpAddr], Option<Target>)> = None;
        for (table, change) in changes {
            match change {
                RibChange::Set {
                    prefix, nexthops, ..
                } => {
                    let target = match &last {
                        Some((vias, target)) if *vias == nexthops.as_slice() => target.clone(),
                        _ => {
                            let target = Self::target(nexthops, tracker, fib, gateways);
                            last = Some((nexthops, target.clone()));
                            target
                        }
                    };
                    let Some(target) = target else {
                        // No next hop we can reach: not in the data plane (retried when
                        // a resolution or the next-hop table changes).
                        fib.remove_route_in(*table, *prefix, Source::Bgp)?;
                        if !nexthops.is_empty() {
                            self.unapplied.insert((*table, *prefix));
                        }
                        continue;
                    };
                    self.unapplied.remove(&(*table, *prefix));
                    fib.set_route_in(*table, *prefix, Source::Bgp, target)?;
                }
                RibChange::Removed { prefix } => {
                    self.unapplied.remove(&(*table, *prefix));
                    fib.remove_route_in(*table, *prefix, Source::Bgp)?;
                }
            }
        }
        Ok(())
    }

    /// The FIB target of a route over BGP next hops `vias`; None when none resolves to a
    /// next hop the FIB can hold.
    fn target<W: FibWriter>(
        vias: &[IpAddr],
        tracker: &Tracker,
        fib: &mut Fib<W>,
        gateways: &Gateways,
    ) -> Option<Target> {
        let mut ids = Vec::new();
        for via in vias {
            let hops = tracker.get(*via).map_or(&[][..], Resolution::hops);
            for key in hops {
                let Some((port, neigh)) = gateways(*key) else {
                    continue;
                };
                // A full next-hop table fails this next hop alone; the route goes over
                // the others (retried later if none).
                match fib.nexthop_with(*key, &port, neigh) {
                    Ok(id) if !ids.contains(&id) => ids.push(id),
                    Ok(_) => {}
                    Err(e) => warn!(next_hop = %key.via, "BGP: {e:#}"),
                }
            }
        }
        ids.sort_unstable();
        (!ids.is_empty()).then(|| Target::Forward(ids.into()))
    }

    /// Whether some selected routes wait to be written again.
    pub fn has_unapplied(&self) -> bool {
        !self.unapplied.is_empty()
    }

    /// The routes waiting to be written again (the caller applies their current
    /// selection).
    pub fn take_unapplied(&mut self) -> Vec<(Table, IpNet)> {
        self.unapplied.drain().collect()
    }
}
