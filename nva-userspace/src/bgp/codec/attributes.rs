//! The path attribute list of an UPDATE: per-attribute decoding with the RFC 7606 error
//! action of each attribute, and the encoder.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::CodecCtx;
use super::as_path;
use super::attrs::{
    Aggregator, AsPath, Community, LargeCommunity, NextHop, Origin, PathAttrs, RawAttribute, flags,
};
use super::error::{AttrError, DecodeError, EncodeError};
use super::nlri::{Family, decode_prefixes, write_prefix};
use super::notification::{code, update_sub};
use super::open::AS_TRANS;
use super::reader::Reader;
use super::update::{MpReach, MpUnreach};

/// Attribute type codes.
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}
use attr_type::*;

const WELL_KNOWN: u8 = flags::TRANSITIVE;
const OPT_TRANSITIVE: u8 = flags::OPTIONAL | flags::TRANSITIVE;
const OPT_NON_TRANSITIVE: u8 = flags::OPTIONAL;

/// Type codes this module encodes itself (a [`RawAttribute`] with one of these is skipped
/// when encoding, so a hand-built value cannot produce duplicates).
fn is_native(t: u8) -> bool {
    matches!(t, 1..=8 | 14 | 15 | 17 | 18 | 32)
}

/// What the attribute list decoded to, before the UPDATE-level checks.
#[derive(Default)]
pub(super) struct AttrList {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub as4_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub as4_aggregator: Option<Aggregator>,
    pub communities: Option<Vec<Community>>,
    pub large_communities: Option<Vec<LargeCommunity>>,
    pub other: Vec<RawAttribute>,
    /// MP_REACH_NLRI: family, next hop (`None` if malformed: then `withdraw` is set),
    /// prefixes.
    pub mp_reach: Option<(Family, Option<NextHop>, Vec<IpNet>)>,
    pub mp_unreach: Option<MpUnreach>,
    /// The first error calling for treat-as-withdraw.
    pub withdraw: Option<AttrError>,
    pub discarded: Vec<AttrError>,
    /// The list itself could not be walked to its end (RFC 7606 §4).
    pub broken: bool,
}

impl AttrList {
    fn withdraw(&mut self, type_code: u8, reason: &'static str) {
        if self.withdraw.is_none() {
            self.withdraw = Some(AttrError { type_code, reason });
        }
    }

    fn discard(&mut self, type_code: u8, reason: &'static str) {
        self.discarded.push(AttrError { type_code, reason });
    }

    /// Builds the attribute set of a route, applying the RFC 6793 AS4 merge; `None`
    /// unless ORIGIN and AS_PATH are present.
    pub fn into_path_attrs(self, ctx: &CodecCtx) -> Option<PathAttrs> {
        let mut as_path = self.as_path?;
        let origin = self.origin?;
        let mut aggregator = self.aggregator;
        if !ctx.four_octet_as {
            // RFC 6793 §4.2.3: an AGGREGATOR from a NEW speaker (AS != AS_TRANS) means
            // the AS4 attributes are stale; ignore both.
            let agg_ok = aggregator.is_none_or(|a| a.asn == AS_TRANS as u32);
            if agg_ok {
                // AS4_AGGREGATOR only counts alongside an AGGREGATOR of AS_TRANS.
                if aggregator.is_some() && self.as4_aggregator.is_some() {
                    aggregator = self.as4_aggregator;
                }
                if let Some(p4) = self.as4_path {
                    as_path = as_path::merge_as4(as_path, p4);
                }
            }
        }
        Some(PathAttrs {
            origin,
            as_path,
            next_hop: self.next_hop.map(NextHop::V4),
            med: self.med,
            local_pref: self.local_pref,
            atomic_aggregate: self.atomic_aggregate,
            aggregator,
            communities: self.communities.unwrap_or_default(),
            large_communities: self.large_communities.unwrap_or_default(),
            other: self.other,
        })
    }
}

/// Decodes the path attributes field. Only `SessionReset` is returned as an error;
/// treat-as-withdraw and discards are recorded in the result, because the rest of the
/// list still has to be parsed to find every prefix to withdraw.
pub(super) fn decode(buf: &[u8], ctx: &CodecCtx) -> Result<AttrList, DecodeError> {
    let mut list = AttrList::default();
    let mut seen = [false; 256];
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let start = r.rest();
        let (Some(fl), Some(t)) = (r.u8(), r.u8()) else {
            // RFC 7606 §4: fewer bytes than a minimal attribute is a malformed list.
            list.withdraw(0, "truncated attribute header");
            list.broken = true;
            break;
        };
        let len = if fl & flags::EXTENDED_LENGTH != 0 {
            r.u16()
        } else {
            r.u8().map(u16::from)
        };
        let Some(value) = len.and_then(|l| r.take(l as usize)) else {
            list.withdraw(t, "attribute length overruns the attribute list");
            list.broken = true;
            break;
        };
        let raw = &start[..start.len() - r.remaining()];
        if std::mem::replace(&mut seen[t as usize], true) {
            if t == MP_REACH_NLRI || t == MP_UNREACH_NLRI {
                return Err(DecodeError::reset(
                    code::UPDATE,
                    update_sub::MALFORMED_ATTRIBUTE_LIST,
                    Vec::new(),
                ));
            }
            list.discard(t, "duplicate attribute");
            continue;
        }
        decode_one(&mut list, fl, t, value, raw, ctx)?;
    }
    Ok(list)
}

fn decode_one(
    list: &mut AttrList,
    fl: u8,
    t: u8,
    value: &[u8],
    raw: &[u8],
    ctx: &CodecCtx,
) -> Result<(), DecodeError> {
    let category = fl & (flags::OPTIONAL | flags::TRANSITIVE);
    let u32_value = || <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes);
    match t {
        ORIGIN => match (category == WELL_KNOWN, value) {
            (true, &[v]) => match Origin::from_u8(v) {
                Some(o) => list.origin = Some(o),
                None => list.withdraw(t, "undefined ORIGIN value"),
            },
            _ => list.withdraw(t, "bad ORIGIN flags or length"),
        },
        AS_PATH => match as_path::decode(value, ctx.four_octet_as) {
            // nva is never a confederation member, so every peer is outside ours and
            // confederation segments from it are malformed (RFC 5065 §5, RFC 7606 §7.2).
            Some(p) if p.segments.iter().any(|s| s.is_confed()) => {
                list.withdraw(t, "AS_PATH with confederation segments")
            }
            Some(p) if category == WELL_KNOWN => list.as_path = Some(p),
            _ => list.withdraw(t, "malformed AS_PATH"),
        },
        NEXT_HOP => match <[u8; 4]>::try_from(value) {
            Ok(a) if category == WELL_KNOWN => list.next_hop = Some(Ipv4Addr::from(a)),
            _ => list.withdraw(t, "bad NEXT_HOP flags or length"),
        },
        MED => match u32_value() {
            Some(v) if category == OPT_NON_TRANSITIVE => list.med = Some(v),
            _ => list.withdraw(t, "bad MULTI_EXIT_DISC flags or length"),
        },
        LOCAL_PREF => match u32_value() {
            // RFC 7606 §7.5: LOCAL_PREF from an external peer is disregarded.
            Some(v) if category == WELL_KNOWN => list.local_pref = ctx.ibgp.then_some(v),
            _ if !ctx.ibgp => {}
            _ => list.withdraw(t, "bad LOCAL_PREF flags or length"),
        },
        ATOMIC_AGGREGATE => {
            if category == WELL_KNOWN && value.is_empty() {
                list.atomic_aggregate = true;
            } else {
                list.discard(t, "bad ATOMIC_AGGREGATE flags or length");
            }
        }
        AGGREGATOR => match decode_aggregator(value, ctx.four_octet_as) {
            Some(a) if category == OPT_TRANSITIVE => list.aggregator = Some(a),
            _ => list.discard(t, "bad AGGREGATOR flags or length"),
        },
        COMMUNITIES => {
            if category == OPT_TRANSITIVE && !value.is_empty() && value.len().is_multiple_of(4) {
                let v = value
                    .chunks_exact(4)
                    .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])));
                list.communities = Some(v.collect());
            } else {
                list.withdraw(t, "bad COMMUNITIES flags or length");
            }
        }
        LARGE_COMMUNITY => {
            if category == OPT_TRANSITIVE && !value.is_empty() && value.len().is_multiple_of(12) {
                let v = value.chunks_exact(12).map(|c| {
                    let w = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                    LargeCommunity {
                        global: w(0),
                        local1: w(4),
                        local2: w(8),
                    }
                });
                list.large_communities = Some(v.collect());
            } else {
                list.withdraw(t, "bad LARGE_COMMUNITY flags or length");
            }
        }
        AS4_PATH if !ctx.four_octet_as => match as_path::decode(value, true) {
            Some(p) if category == OPT_TRANSITIVE && !p.segments.iter().any(|s| s.is_confed()) => {
                list.as4_path = Some(p)
            }
            // RFC 6793 §6 / RFC 7606 §7.7: a malformed AS4_PATH is discarded.
            _ => list.discard(t, "malformed AS4_PATH"),
        },
        AS4_AGGREGATOR if !ctx.four_octet_as => match decode_aggregator(value, true) {
            Some(a) if category == OPT_TRANSITIVE => list.as4_aggregator = Some(a),
            _ => list.discard(t, "malformed AS4_AGGREGATOR"),
        },
        // RFC 6793: between two NEW speakers the AS4 attributes are meaningless; drop.
        AS4_PATH | AS4_AGGREGATOR => {}
        MP_REACH_NLRI | MP_UNREACH_NLRI => {
            if category != OPT_NON_TRANSITIVE {
                return Err(DecodeError::reset(
                    code::UPDATE,
                    update_sub::ATTRIBUTE_FLAGS,
                    raw.to_vec(),
                ));
            }
            if t == MP_REACH_NLRI {
                decode_mp_reach(list, value, raw)?;
            } else {
                decode_mp_unreach(list, value, raw)?;
            }
        }
        _ if fl & flags::OPTIONAL == 0 => {
            return Err(DecodeError::reset(
                code::UPDATE,
                update_sub::UNRECOGNIZED_WELL_KNOWN,
                raw.to_vec(),
            ));
        }
        _ if fl & flags::TRANSITIVE != 0 => list.other.push(RawAttribute {
            flags: flags::OPTIONAL | flags::TRANSITIVE | flags::PARTIAL,
            type_code: t,
            value: value.to_vec(),
        }),
        // Unknown optional non-transitive: quietly ignored (RFC 4271 §5).
        _ => {}
    }
    Ok(())
}

fn decode_aggregator(value: &[u8], four_octet: bool) -> Option<Aggregator> {
    let mut r = Reader::new(value);
    let asn = if four_octet {
        r.u32()?
    } else {
        r.u16()? as u32
    };
    let address = Ipv4Addr::from(r.u32()?);
    r.is_empty().then_some(Aggregator { asn, address })
}

fn mp_error(raw: &[u8]) -> DecodeError {
    DecodeError::reset(code::UPDATE, update_sub::OPTIONAL_ATTRIBUTE, raw.to_vec())
}

fn nlri_error() -> DecodeError {
    DecodeError::reset(code::UPDATE, update_sub::INVALID_NETWORK_FIELD, Vec::new())
}

/// RFC 4760 §3. A structure we cannot walk (so cannot find the prefixes to withdraw), or
/// a next-hop length the family has no encoding for, resets the session (RFC 7606 §7.11).
fn decode_mp_reach(list: &mut AttrList, value: &[u8], raw: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or_else(|| mp_error(raw))?;
    let safi = r.u8().ok_or_else(|| mp_error(raw))?;
    let nh_len = r.u8().ok_or_else(|| mp_error(raw))?;
    let nh = r.take(nh_len as usize).ok_or_else(|| mp_error(raw))?;
    let _reserved = r.u8().ok_or_else(|| mp_error(raw))?;
    // A family we did not negotiate: not ours to interpret.
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        return Ok(());
    };
    let nlri = decode_prefixes(r.rest(), family).ok_or_else(nlri_error)?;
    let v6 = |b: &[u8]| <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from);
    let next_hop = match (family, nh.len()) {
        (Family::Ipv4Unicast, 4) => <[u8; 4]>::try_from(nh).ok().map(|a| NextHop::V4(a.into())),
        (_, 16) => v6(nh).map(|global| NextHop::V6 {
            global,
            link_local: None,
        }),
        (_, 32) => match (v6(&nh[..16]), v6(&nh[16..])) {
            (Some(global), Some(ll)) => Some(NextHop::V6 {
                global,
                link_local: Some(ll),
            }),
            _ => None,
        },
        _ => None,
    };
    // RFC 7606 §7.11: a next-hop length that fits no encoding of the family must not
    // be treated as withdraw (the parse cannot be trusted): the session is reset.
    if next_hop.is_none() {
        return Err(mp_error(raw));
    }
    list.mp_reach = Some((family, next_hop, nlri));
    Ok(())
}

fn decode_mp_unreach(list: &mut AttrList, value: &[u8], raw: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(value);
    let afi = r.u16().ok_or_else(|| mp_error(raw))?;
    let safi = r.u8().ok_or_else(|| mp_error(raw))?;
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        return Ok(());
    };
    let withdrawn = decode_prefixes(r.rest(), family).ok_or_else(nlri_error)?;
    list.mp_unreach = Some(MpUnreach { family, withdrawn });
    Ok(())
}

fn write_attr(out: &mut Vec<u8>, fl: u8, t: u8, value: &[u8]) -> Result<(), EncodeError> {
    let fl = fl & !flags::EXTENDED_LENGTH;
    if value.len() > 255 {
        let len =
            u16::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong("path attribute"))?;
        out.extend_from_slice(&[fl | flags::EXTENDED_LENGTH, t]);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.extend_from_slice(&[fl, t, value.len() as u8]);
    }
    out.extend_from_slice(value);
    Ok(())
}

fn aggregator_bytes(a: &Aggregator, four_octet: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(8);
    if four_octet {
        v.extend_from_slice(&a.asn.to_be_bytes());
    } else {
        v.extend_from_slice(&u16::try_from(a.asn).unwrap_or(AS_TRANS).to_be_bytes());
    }
    v.extend_from_slice(&a.address.octets());
    v
}

/// Encodes MP_UNREACH_NLRI, MP_REACH_NLRI (first, as RFC 7606 §5.1 asks), then the
/// attributes of `attrs` in type order, then the unrecognised ones.
pub(super) fn encode(
    attrs: Option<&PathAttrs>,
    mp_reach: Option<&MpReach>,
    mp_unreach: Option<&MpUnreach>,
    ctx: &CodecCtx,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let Some(u) = mp_unreach {
        let mut v = Vec::new();
        v.extend_from_slice(&u.family.afi().to_be_bytes());
        v.push(u.family.safi());
        for p in &u.withdrawn {
            write_prefix(&mut v, p);
        }
        write_attr(out, OPT_NON_TRANSITIVE, MP_UNREACH_NLRI, &v)?;
    }
    if let Some(m) = mp_reach {
        let mut v = Vec::new();
        v.extend_from_slice(&m.family.afi().to_be_bytes());
        v.push(m.family.safi());
        match m.next_hop {
            NextHop::V4(a) => {
                v.push(4);
                v.extend_from_slice(&a.octets());
            }
            NextHop::V6 {
                global,
                link_local: None,
            } => {
                v.push(16);
                v.extend_from_slice(&global.octets());
            }
            NextHop::V6 {
                global,
                link_local: Some(ll),
            } => {
                v.push(32);
                v.extend_from_slice(&global.octets());
                v.extend_from_slice(&ll.octets());
            }
        }
        v.push(0);
        for p in &m.nlri {
            write_prefix(&mut v, p);
        }
        write_attr(out, OPT_NON_TRANSITIVE, MP_REACH_NLRI, &v)?;
    }
    let Some(a) = attrs else { return Ok(()) };
    write_attr(out, WELL_KNOWN, ORIGIN, &[a.origin as u8])?;
    let mut path = Vec::new();
    as_path::encode(&a.as_path, ctx.four_octet_as, &mut path);
    write_attr(out, WELL_KNOWN, AS_PATH, &path)?;
    if let Some(NextHop::V4(nh)) = a.next_hop {
        write_attr(out, WELL_KNOWN, NEXT_HOP, &nh.octets())?;
    }
    if let Some(med) = a.med {
        write_attr(out, OPT_NON_TRANSITIVE, MED, &med.to_be_bytes())?;
    }
    if let Some(lp) = a.local_pref {
        write_attr(out, WELL_KNOWN, LOCAL_PREF, &lp.to_be_bytes())?;
    }
    if a.atomic_aggregate {
        write_attr(out, WELL_KNOWN, ATOMIC_AGGREGATE, &[])?;
    }
    // To an OLD speaker, an AGGREGATOR next to an AS4_PATH must say AS_TRANS, or the
    // receiver ignores the AS4_PATH (RFC 6793 §4.2.3); the real AS goes in AS4_AGGREGATOR.
    let as4_path = !ctx.four_octet_as && as_path::needs_as4_path(&a.as_path);
    let as4_aggregator = a
        .aggregator
        .filter(|g| !ctx.four_octet_as && (as4_path || g.asn > 0xffff));
    if let Some(agg) = &a.aggregator {
        let mut v = aggregator_bytes(agg, ctx.four_octet_as);
        if as4_aggregator.is_some() {
            v[..2].copy_from_slice(&AS_TRANS.to_be_bytes());
        }
        write_attr(out, OPT_TRANSITIVE, AGGREGATOR, &v)?;
    }
    if !a.communities.is_empty() {
        let v: Vec<u8> = a
            .communities
            .iter()
            .flat_map(|c| c.0.to_be_bytes())
            .collect();
        write_attr(out, OPT_TRANSITIVE, COMMUNITIES, &v)?;
    }
    // RFC 6793 §4.2.2: to an OLD speaker, carry what AS_TRANS replaced.
    if as4_path {
        let mut v = Vec::new();
        as_path::encode(&as_path::as4_path_of(&a.as_path), true, &mut v);
        write_attr(out, OPT_TRANSITIVE, AS4_PATH, &v)?;
    }
    if let Some(agg) = as4_aggregator {
        write_attr(
            out,
            OPT_TRANSITIVE,
            AS4_AGGREGATOR,
            &aggregator_bytes(&agg, true),
        )?;
    }
    if !a.large_communities.is_empty() {
        let v: Vec<u8> = a
            .large_communities
            .iter()
            .flat_map(|c| [c.global, c.local1, c.local2])
            .flat_map(u32::to_be_bytes)
            .collect();
        write_attr(out, OPT_TRANSITIVE, LARGE_COMMUNITY, &v)?;
    }
    for raw in a.other.iter().filter(|r| !is_native(r.type_code)) {
        write_attr(out, raw.flags, raw.type_code, &raw.value)?;
    }
    Ok(())
}
