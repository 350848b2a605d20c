//! Packing many prefixes into as few UPDATE messages as the maximum size allows.

use ipnet::{IpNet, Ipv4Net};

use super::attrs::{NextHop, PathAttrs};
use super::error::EncodeError;
use super::nlri::{Family, prefix_wire_len};
use super::update::{MpReach, MpUnreach, Update};
use super::{CodecCtx, Message, encode_message};

fn v4(nets: &[IpNet]) -> Vec<Ipv4Net> {
    nets.iter()
        .filter_map(|n| if let IpNet::V4(n) = n { Some(*n) } else { None })
        .collect()
}

/// Splits `prefixes` into chunks whose wire size fits in `room` bytes each.
fn chunks(prefixes: &[IpNet], room: usize) -> Vec<&[IpNet]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        let len = prefix_wire_len(p);
        if used + len > room && i > start {
            out.push(&prefixes[start..i]);
            start = i;
            used = 0;
        }
        used += len;
    }
    if start < prefixes.len() {
        out.push(&prefixes[start..]);
    }
    out
}

/// Encodes `make(chunk)` for chunks of `prefixes`. `empty_len` is the size of the message
/// without prefixes; 2 spare bytes cover an attribute growing into extended length.
fn pack(
    prefixes: &[IpNet],
    ctx: &CodecCtx,
    make: impl Fn(&[IpNet]) -> Update,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let empty_len = encode_message(&Message::Update(make(&[])), ctx)?.len();
    let room = ctx.max_message_len().saturating_sub(empty_len + 2);
    if room < 17 {
        return Err(EncodeError::TooLong {
            len: empty_len + 17,
            max: ctx.max_message_len(),
        });
    }
    chunks(prefixes, room)
        .into_iter()
        .map(|c| encode_message(&Message::Update(make(c)), ctx))
        .collect()
}

/// UPDATE messages announcing `prefixes` with `attrs`. IPv4 prefixes go in the NLRI
/// field with `attrs.next_hop` (IPv4) as NEXT_HOP; IPv6 prefixes in MP_REACH_NLRI with
/// `v6_next_hop`. A family whose next hop is missing is an error.
pub fn announce_messages(
    attrs: &PathAttrs,
    prefixes: &[IpNet],
    v6_next_hop: Option<NextHop>,
    ctx: &CodecCtx,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let (p4, p6): (Vec<IpNet>, Vec<IpNet>) = prefixes.iter().partition(|p| p.addr().is_ipv4());
    let mut out = Vec::new();
    if !p4.is_empty() {
        if !matches!(attrs.next_hop, Some(NextHop::V4(_))) {
            return Err(EncodeError::NextHop("IPv4 routes need an IPv4 next hop"));
        }
        out.extend(pack(&p4, ctx, |c| Update {
            attrs: Some(attrs.clone()),
            nlri: v4(c),
            ..Update::default()
        })?);
    }
    if !p6.is_empty() {
        let Some(next_hop @ NextHop::V6 { .. }) = v6_next_hop else {
            return Err(EncodeError::NextHop("IPv6 routes need an IPv6 next hop"));
        };
        let mut a = attrs.clone();
        a.next_hop = None;
        out.extend(pack(&p6, ctx, |c| Update {
            attrs: Some(a.clone()),
            mp_reach: Some(MpReach {
                family: Family::Ipv6Unicast,
                next_hop,
                nlri: c.to_vec(),
            }),
            ..Update::default()
        })?);
    }
    Ok(out)
}

/// UPDATE messages withdrawing `prefixes` (IPv4 in the Withdrawn Routes field, IPv6 in
/// MP_UNREACH_NLRI).
pub fn withdraw_messages(prefixes: &[IpNet], ctx: &CodecCtx) -> Result<Vec<Vec<u8>>, EncodeError> {
    let (p4, p6): (Vec<IpNet>, Vec<IpNet>) = prefixes.iter().partition(|p| p.addr().is_ipv4());
    let mut out = Vec::new();
    if !p4.is_empty() {
        out.extend(pack(&p4, ctx, |c| Update {
            withdrawn: v4(c),
            ..Update::default()
        })?);
    }
    if !p6.is_empty() {
        out.extend(pack(&p6, ctx, |c| Update {
            mp_unreach: Some(MpUnreach {
                family: Family::Ipv6Unicast,
                withdrawn: c.to_vec(),
            }),
            ..Update::default()
        })?);
    }
    Ok(out)
}

/// The RFC 4724 End-of-RIB marker for `family`.
pub fn end_of_rib_message(family: Family, ctx: &CodecCtx) -> Vec<u8> {
    let update = match family {
        Family::Ipv4Unicast => Update::default(),
        Family::Ipv6Unicast => Update {
            mp_unreach: Some(MpUnreach {
                family,
                withdrawn: Vec::new(),
            }),
            ..Update::default()
        },
    };
    // An empty UPDATE always fits.
    encode_message(&Message::Update(update), ctx).unwrap_or_default()
}
