//! Which XDP program each interface runs, as the kernel reports it in RTM_GETLINK
//! (IFLA_XDP_PROG_ID). Reading it needs no capability, unlike listing BPF links
//! (BPF_LINK_GET_NEXT_ID needs CAP_SYS_ADMIN): the self check works in a service that
//! runs with only the capabilities forwarding needs.
use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use rtnetlink::{
    packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage, LinkXdp},
    },
    sys::{Socket, protocols::NETLINK_ROUTE},
};

/// ifindex -> id of the XDP program attached to it (interfaces without one are left out),
/// in the calling thread's network namespace. Blocking.
pub fn xdp_program_ids() -> Result<HashMap<u32, u32>> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .connect(&rtnetlink::sys::SocketAddr::new(0, 0))
        .context("connecting the netlink socket")?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    msg.finalize();
    let mut request = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut request);
    socket
        .send(&request, 0)
        .context("sending the link dump request")?;
    let mut ids = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .context("reading the link dump")?;
        for m in super::datagram_messages(&buf[..n]) {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m)
                .context("decoding a link message")?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(ids),
                NetlinkPayload::Error(e) => bail!("link dump: {e}"),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    let prog = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
                            LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                            _ => None,
                        }),
                        _ => None,
                    });
                    if let Some(id) = prog {
                        ids.insert(link.header.index, id);
                    }
                }
                _ => {}
            }
        }
    }
}
