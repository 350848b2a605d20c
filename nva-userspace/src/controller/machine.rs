//! The machine as the controller sees it: links, addresses and neighbours, kept in
//! step with netlink's events, and the routes they imply (local addresses, connected
//! subnets, neighbours' host routes).
use std::net::IpAddr;

use anyhow::Result;
use ipnet::IpNet;
use tracing::{info, warn};

use super::{Controller, Device};
use crate::{
    fib::{NhKey, Port, Source, Target},
    netlink::{AddrInfo, LinkInfo, Neighbour, NetEvent, routes::GatewayRoute},
};

/// A snapshot of the machine (netlink dumps): what a config is checked against and
/// what the controller starts from.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub links: Vec<LinkInfo>,
    pub addrs: Vec<AddrInfo>,
    pub neighbours: Vec<Neighbour>,
    /// The kernel's gateway routes that are not nva's own.
    pub gateway_routes: Vec<GatewayRoute>,
}

pub(super) fn port_of(link: &LinkInfo) -> Port {
    Port {
        name: link.name.clone(),
        mac: link.mac,
        mtu: link.mtu,
        up: link.up,
    }
}

/// Routes every address of the box implies: the address itself is local, its subnet
/// is connected (the kernel resolves and forwards to hosts there).
pub(super) fn address_routes(addr: &AddrInfo) -> Vec<(IpNet, Source, Target)> {
    let is_link_local = match addr.addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    };
    if is_link_local || addr.addr.is_loopback() {
        return vec![];
    }
    let host = IpNet::from(addr.addr);
    let mut out = vec![(host, Source::Local, Target::Local)];
    if let Ok(net) = IpNet::new(addr.addr, addr.prefix_len) {
        let net = net.trunc();
        if net != host {
            out.push((net, Source::Connected, Target::Connected));
        }
    }
    out
}

impl<D: Device> Controller<D> {
    /// Follows a link, address or neighbour change.
    pub(super) fn apply_event(&mut self, event: NetEvent) -> Result<()> {
        let st = self;
        tracing::debug!(?event, "netlink event");
        match event {
            NetEvent::Link(link) => {
                let Some(idx) = st.ifaces.iter().position(|f| f.ifindex == link.ifindex) else {
                    return Ok(());
                };
                let port = port_of(&link);
                if st.ifaces[idx].port.up != port.up {
                    info!(interface = %link.name, up = port.up, "link state changed");
                }
                if st.ifaces[idx].port.mac != port.mac {
                    let f = &st.ifaces[idx];
                    let (slot, flags) = (f.slot, f.flags);
                    st.fib
                        .dataplane_mut()
                        .add_port(link.ifindex, slot, flags, port.mac)?;
                }
                st.ifaces[idx].port = port.clone();
                st.fib.update_port(link.ifindex, &port)?;
            }
            NetEvent::LinkRemoved(ifindex) => {
                if let Some(idx) = st.ifaces.iter().position(|f| f.ifindex == ifindex) {
                    warn!(interface = %st.ifaces[idx].name, "interface removed");
                    let mut port = st.ifaces[idx].port.clone();
                    port.up = false;
                    st.ifaces[idx].port = port.clone();
                    st.fib.update_port(ifindex, &port)?;
                }
            }
            NetEvent::Neighbour(n) => {
                match n.mac.filter(|_| n.usable) {
                    Some(mac) => st.known_macs.insert((n.ifindex, n.ip), mac),
                    None => st.known_macs.remove(&(n.ifindex, n.ip)),
                };
                if n.failed {
                    st.neigh_failed.insert((n.ifindex, n.ip));
                } else {
                    st.neigh_failed.remove(&(n.ifindex, n.ip));
                }
                st.fib
                    .update_neighbour(n.ifindex, n.ip, n.mac.filter(|_| n.usable), n.failed)?;
                st.neighbour_route(&n)?;
            }
            NetEvent::NeighbourRemoved { ifindex, ip } => {
                st.known_macs.remove(&(ifindex, ip));
                st.neigh_failed.remove(&(ifindex, ip));
                st.fib.remove_route(IpNet::from(ip), Source::Neighbour)?;
                // Next hops keep their last MAC; ask the kernel for a fresh entry.
                if st.fib.is_nexthop(ifindex, ip) {
                    st.resolve_now.push((ifindex, ip));
                }
            }
            NetEvent::AddrAdded(addr) => {
                for (prefix, source, target) in address_routes(&addr) {
                    st.fib.set_route(prefix, source, target)?;
                }
                st.addrs.push(addr);
            }
            NetEvent::AddrRemoved(addr) => {
                for (prefix, source, _) in address_routes(&addr) {
                    st.fib.remove_route(prefix, source)?;
                }
                st.addrs.retain(|a| a != &addr);
            }
        }
        Ok(())
    }

    /// Keeps the host route of a neighbour on a connected subnet of one of our ports in
    /// step with the neighbour entry: present while usable, gone otherwise (the kernel
    /// then resolves it again, and the route comes back with the entry).
    pub(super) fn neighbour_route(&mut self, n: &Neighbour) -> Result<()> {
        let Some(iface) = self.ifaces.iter().find(|f| f.ifindex == n.ifindex) else {
            return Ok(());
        };
        let on_subnet = self.addrs.iter().any(|a| {
            a.ifindex == n.ifindex
                && a.addr != n.ip
                && IpNet::new(a.addr, a.prefix_len).is_ok_and(|net| net.contains(&n.ip))
        });
        let link_local = match n.ip {
            IpAddr::V4(a) => a.is_link_local(),
            IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        };
        // Link-local destinations are never forwarded (the data plane passes them).
        if !on_subnet || link_local || n.ip.is_multicast() {
            return Ok(());
        }
        let host = IpNet::from(n.ip);
        if n.usable && n.mac.is_some() {
            let key = NhKey {
                ifindex: n.ifindex,
                via: n.ip,
                vlan: 0,
            };
            let port = iface.port.clone();
            let id = self.fib.nexthop(key, &port)?;
            self.fib
                .update_neighbour(n.ifindex, n.ip, n.mac, n.failed)?;
            self.fib
                .set_route(host, Source::Neighbour, Target::Forward([id].into()))
        } else {
            self.fib.remove_route(host, Source::Neighbour)
        }
    }
}
