//! Conversion of rtnetlink messages into the plain types of this module.
//!
//! Everything here is pure (no I/O) so it can be unit-tested with hand-built
//! messages.

use std::net::IpAddr;

use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage, State},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage},
};

use super::{AddrInfo, LinkInfo, Neighbour, NetEvent};

// NUD_* state bits (include/uapi/linux/neighbour.h). The kernel reports a
// single bit, but `ndm_state` is a bitmask, so test bits rather than compare.
pub(super) const NUD_REACHABLE: u16 = 0x02;
pub(super) const NUD_STALE: u16 = 0x04;
pub(super) const NUD_DELAY: u16 = 0x08;
pub(super) const NUD_PROBE: u16 = 0x10;
pub(super) const NUD_FAILED: u16 = 0x20;
pub(super) const NUD_NOARP: u16 = 0x40;
pub(super) const NUD_PERMANENT: u16 = 0x80;

/// States in which the entry's link-layer address may be used to send
/// (the kernel's NUD_VALID).
const NUD_USABLE: u16 =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;
fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    <[u8; 6]>::try_from(bytes).ok()
}

/// Decodes an RTM_NEWLINK message (reply to a dump/get or a notification).
pub(super) fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut name = String::new();
    let mut mac = [0u8; 6];
    let mut mtu = 0u32;
    let mut operstate = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::Address(a) => {
                if let Some(m) = mac6(a) {
                    mac = m;
                }
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::OperState(s) => operstate = Some(*s),
            _ => {}
        }
    }
    let flags = msg.header.flags;
    // IFF_UP: administratively up; IFF_LOWER_UP: carrier. The operational
    // state must also be up, or unknown (drivers without operstate support,
    // loopback); dormant / lower-layer-down / testing count as down.
    let oper_ok = matches!(operstate, None | Some(State::Up) | Some(State::Unknown));
    let up = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp) && oper_ok;
    LinkInfo {
        name,
        ifindex: msg.header.index,
        mac,
        mtu,
        up,
    }
}

/// Decodes an RTM_NEWADDR / RTM_DELADDR message. `None` for families other
/// than IPv4/IPv6 or when the message carries no address.
pub(super) fn addr_info(msg: &AddressMessage) -> Option<AddrInfo> {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the same
    // except on point-to-point links where it is the peer's. IPv6 only sends
    // IFA_LOCAL when a peer is configured, so prefer LOCAL, else ADDRESS.
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    let addr = local.or(address)?;
    Some(AddrInfo {
        ifindex: msg.header.index,
        addr,
        prefix_len: msg.header.prefix_len,
    })
}

/// Decodes an RTM_NEWNEIGH / RTM_DELNEIGH message. `None` for anything that
/// is not an IPv4/IPv6 neighbour entry (bridge FDB entries share the
/// RTNLGRP_NEIGH group) and for proxy entries.
pub(super) fn neighbour(msg: &NeighbourMessage) -> Option<Neighbour> {
    if !matches!(
        msg.header.family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) {
        return None;
    }
    if msg.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac6(l),
            _ => {}
        }
    }
    let ip = ip?;
    let state: u16 = msg.header.state.into();
    Some(Neighbour {
        ifindex: msg.header.ifindex,
        ip,
        mac,
        usable: state & NUD_USABLE != 0 && mac.is_some(),
        failed: state & NUD_FAILED != 0,
    })
}

/// Decodes a multicast notification into an event; `None` for messages this
/// module does not report.
pub(super) fn event(msg: &RouteNetlinkMessage) -> Option<NetEvent> {
    match msg {
        // Only AF_UNSPEC link messages describe the device itself. The bridge
        // sends AF_BRIDGE RTM_NEWLINK/RTM_DELLINK for port changes (a DELLINK
        // when a port leaves the bridge, while the device still exists).
        RouteNetlinkMessage::NewLink(m) if m.header.interface_family == AddressFamily::Unspec => {
            Some(NetEvent::Link(link_info(m)))
        }
        RouteNetlinkMessage::DelLink(m) if m.header.interface_family == AddressFamily::Unspec => {
            Some(NetEvent::LinkRemoved(m.header.index))
        }
        RouteNetlinkMessage::NewNeighbour(m) => neighbour(m).map(NetEvent::Neighbour),
        RouteNetlinkMessage::DelNeighbour(m) => neighbour(m).map(|n| NetEvent::NeighbourRemoved {
            ifindex: n.ifindex,
            ip: n.ip,
        }),
        RouteNetlinkMessage::NewAddress(m) => addr_info(m).map(NetEvent::AddrAdded),
        RouteNetlinkMessage::DelAddress(m) => addr_info(m).map(NetEvent::AddrRemoved),
        _ => None,
    }
}
