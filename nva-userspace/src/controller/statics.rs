//! Static routes: checked against the machine when a config is (`plan`, shared by
//! `nva config check`, the start and a reload), then kept in the FIB over next hops
//! that are connected or resolve recursively through other routes.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use nva_common::{PORT_FORCE_EAST_WEST, PORT_FORCE_NORTH_SOUTH};
use tracing::{info, warn};

use super::{Controller, Device, Iface, Machine, machine::port_of, settings::table_of};
use crate::{
    config::{Config, RouteAction, TrafficClass},
    fib::{NhKey, Source, Table, Target},
    netlink::{AddrInfo, routes::GatewayRoute},
    resolve::{self, Resolver, ResolvingRoute},
};

impl<D: Device> Controller<D> {
    /// Turns planned static routes into routes of the FIB, and withdraws static routes
    /// that are no longer configured. Unchanged routes are not touched; changed ones are
    /// replaced make-before-break.
    pub(super) fn apply_static_routes(&mut self, planned: &[PlannedRoute]) -> Result<()> {
        let mut wanted = std::collections::HashSet::new();
        let recursive = planned.iter().any(|r| {
            r.target
                .iter()
                .chain(&r.backup)
                .any(|h| matches!(h, PlannedHop::Recursive(_)))
        });
        let resolver = if recursive {
            self.resolver()
        } else {
            Resolver::default()
        };
        for route in planned {
            let table = route
                .table
                .unwrap_or_else(|| self.fib.classify(route.prefix));
            let target = match route.action {
                RouteAction::Forward => {
                    let ids = self.nexthop_ids(&route.target, &resolver)?;
                    if ids.is_empty() {
                        // No next hop resolves: not installed until one does.
                        if self.unresolved_statics.insert(route.prefix) {
                            warn!(prefix = %route.prefix, "static route not installed: none of its next hops resolves");
                        }
                        None
                    } else {
                        if self.unresolved_statics.remove(&route.prefix) {
                            info!(prefix = %route.prefix, "static route installed: its next hops resolve again");
                        }
                        Some(Target::Forward(ids.into()))
                    }
                }
                RouteAction::Blackhole => Some(Target::Blackhole),
                RouteAction::Kernel => Some(Target::Kernel),
            };
            if let Some(target) = target {
                self.fib
                    .set_route_in(table, route.prefix, Source::Static, target)?;
                wanted.insert((table, route.prefix.trunc(), Source::Static));
            }
            if !route.backup.is_empty() {
                let ids = self.nexthop_ids(&route.backup, &resolver)?;
                if !ids.is_empty() {
                    self.fib.set_route_in(
                        table,
                        route.prefix,
                        Source::StaticBackup,
                        Target::Forward(ids.into()),
                    )?;
                    wanted.insert((table, route.prefix.trunc(), Source::StaticBackup));
                }
            }
        }
        for source in [Source::Static, Source::StaticBackup] {
            for (table, prefix) in self.fib.prefixes_of(source) {
                if !wanted.contains(&(table, prefix, source)) {
                    self.fib.remove_route_in(table, prefix, source)?;
                }
            }
        }
        Ok(())
    }

    /// The data plane's next hops of a static route: direct ones as they are,
    /// recursive ones through what they resolve to (none when unresolved).
    fn nexthop_ids(&mut self, hops: &[PlannedHop], resolver: &Resolver) -> Result<Vec<u16>> {
        let mut ids = Vec::new();
        for hop in hops {
            let keys: Vec<NhKey> = match hop {
                PlannedHop::Direct(k) => vec![*k],
                PlannedHop::Recursive(via) => resolver.resolve(*via).hops().to_vec(),
            };
            for key in keys {
                let (port, neigh) =
                    super::gateway(&self.ifaces, &self.known_macs, &self.neigh_failed, key)
                        .context("next hop on an unknown interface")?;
                let id = self.fib.nexthop_with(key, &port, neigh)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// How a static route's recursive next hops resolve (`backup`: its backup next
    /// hops'), for `nva routes`.
    pub(super) fn static_resolved_via(
        &self,
        backup: bool,
        prefix: &IpNet,
    ) -> Vec<serde_json::Value> {
        let Some(route) = self.planned.iter().find(|r| r.prefix == *prefix) else {
            return Vec::new();
        };
        let hops = if backup { &route.backup } else { &route.target };
        let recursive: Vec<IpAddr> = hops
            .iter()
            .filter_map(|h| match h {
                PlannedHop::Recursive(via) => Some(*via),
                PlannedHop::Direct(_) => None,
            })
            .collect();
        if recursive.is_empty() {
            return Vec::new();
        }
        let resolver = self.resolver();
        recursive
            .into_iter()
            .map(|via| {
                let r = resolver.resolve(via);
                serde_json::json!({
                    "next_hop": via,
                    "resolution": r.describe(),
                    "gateways": r.hops().iter().map(|h| h.via).collect::<Vec<_>>(),
                })
            })
            .collect()
    }
}

/// A static route's next hop, checked against the machine.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum PlannedHop {
    /// On a connected subnet of (or explicitly out of) one of nva's interfaces.
    Direct(NhKey),
    /// Anywhere else: resolved through other routes (see `resolve`).
    Recursive(IpAddr),
}

/// A static route with its next hops checked against the machine.
#[derive(Clone, Debug)]
pub(super) struct PlannedRoute {
    prefix: IpNet,
    /// Explicit table; by the prefix's class when None.
    table: Option<Table>,
    target: Vec<PlannedHop>,
    /// Backup next hops (used while all of `target` are down).
    backup: Vec<PlannedHop>,
    action: RouteAction,
}

/// What next hops resolve through, from the config and the machine (without which
/// gateways are down: see `Controller::resolver`).
pub(super) fn base_resolver<'a>(
    config: &Config,
    ifaces: &[Iface],
    addrs: &[AddrInfo],
    planned: &[PlannedRoute],
    kernel: impl Iterator<Item = &'a GatewayRoute>,
) -> Resolver {
    let attached: HashSet<u32> = ifaces.iter().map(|f| f.ifindex).collect();
    let mut r = Resolver {
        connected: addrs
            .iter()
            .filter(|a| attached.contains(&a.ifindex))
            .filter_map(|a| Some((IpNet::new(a.addr, a.prefix_len).ok()?.trunc(), a.ifindex)))
            .collect(),
        own: addrs.iter().map(|a| a.addr).collect(),
        via_default: config.resolve.via_default,
        ..Default::default()
    };
    for route in planned {
        if route.action != RouteAction::Forward {
            continue;
        }
        let hops: Option<Vec<NhKey>> = route
            .target
            .iter()
            .map(|h| match h {
                PlannedHop::Direct(k) => Some(*k),
                PlannedHop::Recursive(_) => None,
            })
            .collect();
        if let Some(hops) = hops {
            r.routes.push(ResolvingRoute {
                prefix: route.prefix,
                origin: resolve::Origin::Static,
                hops,
            });
        }
    }
    if config.resolve.kernel_routes {
        // Among routes of one prefix, the lowest metric.
        let mut best: HashMap<IpNet, &GatewayRoute> = HashMap::new();
        for g in kernel {
            if g.hops.iter().all(|(_, oif)| attached.contains(oif)) {
                let e = best.entry(g.prefix).or_insert(g);
                if g.metric < e.metric {
                    *e = g;
                }
            }
        }
        for g in best.into_values() {
            r.routes.push(ResolvingRoute {
                prefix: g.prefix,
                origin: resolve::Origin::Kernel,
                hops: g
                    .hops
                    .iter()
                    .map(|(via, ifindex)| NhKey {
                        ifindex: *ifindex,
                        via: *via,
                        vlan: 0,
                    })
                    .collect(),
            });
        }
    }
    r.index();
    r
}

/// Checks the config against the machine (interfaces exist, next hops are on a
/// connected subnet of a configured interface or resolve through a route) before
/// anything is attached.
pub(super) fn plan(config: &Config, machine: &Machine) -> Result<(Vec<Iface>, Vec<PlannedRoute>)> {
    let Machine {
        links,
        addrs,
        gateway_routes: kernel,
        ..
    } = machine;
    let mut ifaces = Vec::new();
    for (i, iface) in config.interfaces.iter().enumerate() {
        let link = links
            .iter()
            .find(|l| l.name == iface.name)
            .with_context(|| {
                format!("interfaces[{i}].name: no interface named {:?}", iface.name)
            })?;
        ifaces.push(Iface {
            name: iface.name.clone(),
            ifindex: link.ifindex,
            slot: 0,
            flags: match iface.class {
                None => 0,
                Some(TrafficClass::EastWest) => PORT_FORCE_EAST_WEST,
                Some(TrafficClass::NorthSouth) => PORT_FORCE_NORTH_SOUTH,
            },
            port: port_of(link),
        });
    }
    let mut routes = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let plan_hops = |list: &[crate::config::NextHopSpec],
                         name: &str|
         -> Result<Vec<PlannedHop>> {
            let mut out = Vec::new();
            for (j, nh) in list.iter().enumerate() {
                let field = format!("routes[{i}].{name}[{j}]");
                if addrs.iter().any(|a| a.addr == nh.via) {
                    bail!("{field}.via: {} is an address of this box", nh.via);
                }
                let iface_idx = match &nh.dev {
                    Some(dev) => Some(ifaces.iter().position(|f| &f.name == dev).with_context(
                        || format!("{field}.dev: {dev:?} is not a configured interface"),
                    )?),
                    None => ifaces.iter().position(|f| {
                        addrs.iter().any(|a| {
                            a.ifindex == f.ifindex
                                && IpNet::new(a.addr, a.prefix_len)
                                    .is_ok_and(|n| n.contains(&nh.via))
                        })
                    }),
                };
                out.push(match iface_idx {
                    Some(idx) => PlannedHop::Direct(NhKey {
                        ifindex: ifaces[idx].ifindex,
                        via: nh.via,
                        vlan: nh.vlan.unwrap_or(0),
                    }),
                    None if nh.vlan.is_some() => bail!(
                        "{field}.vlan: a VLAN next hop must be on a connected subnet (or set `dev`)"
                    ),
                    // Not on a connected subnet: resolved through other routes.
                    None => PlannedHop::Recursive(nh.via),
                });
            }
            Ok(out)
        };
        let target = plan_hops(&route.nexthops, "nexthops")?;
        let backup = plan_hops(&route.backup_nexthops, "backup_nexthops")?;
        routes.push(PlannedRoute {
            prefix: route.prefix,
            table: route.table.map(table_of),
            backup,
            target,
            action: route.action,
        });
    }
    // A next hop off the connected subnets must resolve through some route now (a
    // static route with direct next hops, or the kernel's); later it may come and go.
    let resolver = base_resolver(config, &ifaces, addrs, &routes, kernel.iter());
    for (i, route) in routes.iter().enumerate() {
        for (name, hops) in [
            ("nexthops", &route.target),
            ("backup_nexthops", &route.backup),
        ] {
            for (j, hop) in hops.iter().enumerate() {
                if let PlannedHop::Recursive(via) = hop
                    && let resolve::Resolution::Unresolved(why) = resolver.resolve(*via)
                {
                    bail!(
                        "routes[{i}].{name}[{j}].via: {via} is not on a connected subnet of \
                         any configured interface and {why} (add a route to it, set `dev`, \
                         or add an address)"
                    );
                }
            }
        }
    }
    Ok((ifaces, routes))
}
