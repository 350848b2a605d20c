//! The kernel's nexthop objects (RTM_NEWNEXTHOP, Linux >= 5.3) for nva's mirrored
//! routes. A mirrored route names an object (`nhid`) instead of carrying its next hops,
//! so a full table over a few next-hop sets is a few objects, and deleting an object
//! takes every route naming it with it, in the kernel, in one go: a graceful stop no
//! longer deletes a million routes one request at a time.
//!
//! rtnetlink (the crate) has no nexthop messages; they are small and encoded here.
//! Blocking: each request waits for its acknowledgement (objects are few).
use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use rtnetlink::sys::{Socket, protocols::NETLINK_ROUTE};

use super::routes::RTPROT_NVA;

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_REPLACE: u16 = 0x100;
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;

/// A nexthop object's request, built into a buffer.
struct Request(Vec<u8>);

impl Request {
    /// `protocol` only for RTM_NEWNEXTHOP: the kernel refuses a deletion or dump
    /// request whose header has one (EINVAL).
    fn new(kind: u16, flags: u16, family: u8) -> Self {
        let protocol = if kind == RTM_NEWNEXTHOP {
            RTPROT_NVA
        } else {
            0
        };
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        b.extend_from_slice(&0u32.to_ne_bytes()); // port
        // struct nhmsg: family, scope, protocol, reserved, flags
        b.extend_from_slice(&[family, 0, protocol, 0]);
        b.extend_from_slice(&0u32.to_ne_bytes());
        Request(b)
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.0
    }
}

fn family_of(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// The request creating (or replacing) a gateway nexthop.
fn gateway_request(id: u32, via: IpAddr, ifindex: u32) -> Request {
    let gw = match via {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    Request::new(
        RTM_NEWNEXTHOP,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        family_of(&via),
    )
    .attr(NHA_ID, &id.to_ne_bytes())
    .attr(NHA_OIF, &ifindex.to_ne_bytes())
    .attr(NHA_GATEWAY, &gw)
}

/// The request creating (or replacing) a multipath group of `members` (equal weight).
fn group_request(id: u32, members: impl Iterator<Item = u32>) -> Request {
    // struct nexthop_grp: id, weight (0 = 1), two reserved fields.
    let mut group = Vec::new();
    for m in members {
        group.extend_from_slice(&m.to_ne_bytes());
        group.extend_from_slice(&[0; 4]);
    }
    Request::new(
        RTM_NEWNEXTHOP,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        libc::AF_UNSPEC as u8,
    )
    .attr(NHA_ID, &id.to_ne_bytes())
    .attr(NHA_GROUP, &group)
}

/// Ids an object over `hops` takes, starting at its own id: one for a single next hop,
/// else the group and one per member.
pub fn ids_needed(hops: usize) -> u32 {
    if hops <= 1 { 1 } else { hops as u32 + 1 }
}

/// A netlink socket for nexthop objects, in the calling thread's network namespace.
pub struct Nexthops {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Nexthops {
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        socket.bind_auto().context("binding the netlink socket")?;
        socket
            .connect(&rtnetlink::sys::SocketAddr::new(0, 0))
            .context("connecting the netlink socket")?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; 1 << 16],
        })
    }

    /// Creates (or replaces) object `id` forwarding over `hops` (gateway, ifindex):
    /// one gateway nexthop, or members `id + 1 ..` and the group `id` over them.
    pub fn add(&mut self, id: u32, hops: &[(IpAddr, u32)]) -> Result<()> {
        match hops {
            [] => bail!("nexthop object {id} without next hops"),
            [(via, ifindex)] => self.request(gateway_request(id, *via, *ifindex)),
            _ => {
                for (i, (via, ifindex)) in hops.iter().enumerate() {
                    self.request(gateway_request(id + 1 + i as u32, *via, *ifindex))?;
                }
                self.request(group_request(
                    id,
                    (0..hops.len() as u32).map(|i| id + 1 + i),
                ))
            }
        }
        .with_context(|| format!("creating kernel nexthop object {id}"))
    }

    /// Deletes the object `id` of `ids` ids (see `ids_needed`), the group first; the
    /// kernel removes the routes naming it. Absent objects are fine.
    pub fn delete(&mut self, id: u32, ids: u32) -> Result<()> {
        for i in id..id + ids.max(1) {
            let req = Request::new(RTM_DELNEXTHOP, NLM_F_REQUEST | NLM_F_ACK, 0)
                .attr(NHA_ID, &i.to_ne_bytes());
            match self.request(req) {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::ENOENT) => {}
                Err(e) => return Err(e.context(format!("deleting kernel nexthop object {i}"))),
            }
        }
        Ok(())
    }

    /// The ids of nva's objects (protocol `RTPROT_NVA`), groups first.
    pub fn own(&mut self) -> Result<Vec<u32>> {
        self.seq += 1;
        let seq = self.seq;
        let req = Request::new(RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, 0).finish(seq);
        self.socket
            .send(&req, 0)
            .context("sending the nexthop dump request")?;
        let (mut groups, mut singles) = (Vec::new(), Vec::new());
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .context("reading the nexthop dump")?;
            for (kind, body) in messages(&self.buf[..n]) {
                match kind {
                    NLMSG_DONE => {
                        groups.extend(singles);
                        return Ok(groups);
                    }
                    NLMSG_ERROR => {
                        let code = error_code(body);
                        // A kernel without nexthop objects has none of nva's.
                        if code == -libc::EOPNOTSUPP {
                            return Ok(Vec::new());
                        }
                        bail!("nexthop dump: {}", std::io::Error::from_raw_os_error(-code));
                    }
                    RTM_NEWNEXTHOP if body.len() >= 8 && body[2] == RTPROT_NVA => {
                        let mut id = None;
                        let mut group = false;
                        for (t, v) in attrs(&body[8..]) {
                            match t {
                                NHA_ID if v.len() >= 4 => {
                                    id = Some(u32::from_ne_bytes(v[..4].try_into().expect("4")))
                                }
                                NHA_GROUP => group = true,
                                _ => {}
                            }
                        }
                        if let Some(id) = id {
                            if group {
                                groups.push(id)
                            } else {
                                singles.push(id)
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn request(&mut self, req: Request) -> Result<()> {
        self.seq += 1;
        let seq = self.seq;
        self.socket
            .send(&req.finish(seq), 0)
            .context("sending a nexthop request")?;
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .context("reading a nexthop acknowledgement")?;
            for (kind, body) in messages(&self.buf[..n]) {
                if kind == NLMSG_ERROR {
                    let code = error_code(body);
                    if code == 0 {
                        return Ok(());
                    }
                    return Err(std::io::Error::from_raw_os_error(-code).into());
                }
            }
        }
    }
}

/// Whether `e` is the OS error `errno`.
fn is_errno(e: &anyhow::Error, errno: i32) -> bool {
    e.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
        == Some(errno)
}

/// The error code of an NLMSG_ERROR body (0 = acknowledgement).
fn error_code(body: &[u8]) -> i32 {
    body.get(..4)
        .map_or(-libc::EIO, |b| i32::from_ne_bytes(b.try_into().expect("4")))
}

/// The (type, body) of each netlink message in a datagram.
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    super::datagram_messages(buf)
        .map(|m| (u16::from_ne_bytes(m[4..6].try_into().expect("2")), &m[16..]))
}

/// The (type, value) of each attribute.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes(buf[..2].try_into().expect("2")) as usize;
        if len < 4 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[2..4].try_into().expect("2")) & 0x3fff;
        let value = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_request_is_what_iproute2_sends() {
        // `ip nexthop add id 7 via 10.0.0.2 dev <ifindex 3> proto 250`
        let b = gateway_request(7, "10.0.0.2".parse().unwrap(), 3).finish(9);
        assert_eq!(b.len(), 16 + 8 + 8 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()),
            b.len() as u32
        );
        assert_eq!(
            u16::from_ne_bytes(b[4..6].try_into().unwrap()),
            RTM_NEWNEXTHOP
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 9);
        assert_eq!(&b[16..20], &[libc::AF_INET as u8, 0, 250, 0]);
        // Only a creation carries the protocol (the kernel refuses others with one).
        let del = Request::new(RTM_DELNEXTHOP, NLM_F_REQUEST, 0).finish(1);
        assert_eq!(&del[16..24], &[0; 8]);
        let a: Vec<(u16, Vec<u8>)> = attrs(&b[24..]).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(
            a,
            [
                (NHA_ID, 7u32.to_ne_bytes().to_vec()),
                (NHA_OIF, 3u32.to_ne_bytes().to_vec()),
                (NHA_GATEWAY, vec![10, 0, 0, 2]),
            ]
        );
    }

    #[test]
    fn a_group_names_its_members_with_equal_weight() {
        let b = group_request(20, [21, 22].into_iter()).finish(1);
        let a: Vec<(u16, Vec<u8>)> = attrs(&b[24..]).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(a[1].0, NHA_GROUP);
        assert_eq!(a[1].1.len(), 16);
        assert_eq!(&a[1].1[0..4], &21u32.to_ne_bytes());
        assert_eq!(&a[1].1[4..8], &[0; 4]);
        assert_eq!(&a[1].1[8..12], &22u32.to_ne_bytes());
        assert_eq!(ids_needed(1), 1);
        assert_eq!(ids_needed(2), 3);
    }
}
