//! UPDATE message (RFC 4271 §4.3, RFC 4760 MP extensions) and the UPDATE-level checks
//! of RFC 7606 (missing mandatory attributes, next hop sanity).

use ipnet::{IpNet, Ipv4Net};

use super::CodecCtx;
use super::attributes::{self, attr_type};
use super::attrs::{NextHop, PathAttrs};
use super::error::{AttrError, DecodeError, EncodeError};
use super::nlri::{Family, decode_v4_prefixes, write_prefix};
use super::notification::{code, update_sub};
use super::reader::Reader;

/// MP_REACH_NLRI for IPv4/IPv6 unicast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: NextHop,
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI for IPv4/IPv6 unicast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Update {
    /// The IPv4 Withdrawn Routes field.
    pub withdrawn: Vec<Ipv4Net>,
    /// The path attributes other than MP_(UN)REACH_NLRI; `None` when the message carries
    /// no usable attribute set (withdraw-only, End-of-RIB). `attrs.next_hop` is the
    /// NEXT_HOP attribute; MP routes use `mp_reach.next_hop`.
    pub attrs: Option<PathAttrs>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// The IPv4 NLRI field.
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    /// RFC 4724 §2 End-of-RIB marker: which family, if this UPDATE is one.
    pub fn end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty()
            || !self.nlri.is_empty()
            || self.attrs.is_some()
            || self.mp_reach.is_some()
        {
            return None;
        }
        match &self.mp_unreach {
            None => Some(Family::Ipv4Unicast),
            Some(u) if u.withdrawn.is_empty() => Some(u.family),
            Some(_) => None,
        }
    }

    /// Every prefix this UPDATE withdraws, both encodings.
    pub fn all_withdrawn(&self) -> impl Iterator<Item = IpNet> + '_ {
        let mp = self
            .mp_unreach
            .iter()
            .flat_map(|u| u.withdrawn.iter().copied());
        self.withdrawn.iter().map(|&n| IpNet::V4(n)).chain(mp)
    }

    /// Every prefix this UPDATE announces, each with the next hop of its encoding.
    pub fn all_announced(&self) -> impl Iterator<Item = (IpNet, Option<NextHop>)> + '_ {
        let nh = self.attrs.as_ref().and_then(|a| a.next_hop);
        let classic = self.nlri.iter().map(move |&n| (IpNet::V4(n), nh));
        let mp = self
            .mp_reach
            .iter()
            .flat_map(|m| m.nlri.iter().map(move |&n| (n, Some(m.next_hop))));
        classic.chain(mp)
    }

    pub(super) fn decode(body: &[u8], ctx: &CodecCtx) -> Result<Update, DecodeError> {
        let list_error = || {
            DecodeError::reset(
                code::UPDATE,
                update_sub::MALFORMED_ATTRIBUTE_LIST,
                Vec::new(),
            )
        };
        let mut r = Reader::new(body);
        let wlen = r.u16().ok_or_else(list_error)?;
        let wbuf = r.take(wlen as usize).ok_or_else(list_error)?;
        let alen = r.u16().ok_or_else(list_error)?;
        let abuf = r.take(alen as usize).ok_or_else(list_error)?;
        let network_error =
            || DecodeError::reset(code::UPDATE, update_sub::INVALID_NETWORK_FIELD, Vec::new());
        let withdrawn = decode_v4_prefixes(wbuf).ok_or_else(network_error)?;
        let nlri = decode_v4_prefixes(r.rest()).ok_or_else(network_error)?;

        let mut list = attributes::decode(abuf, ctx)?;
        let mp_nlri = list.mp_reach.as_ref().is_some_and(|m| !m.2.is_empty());
        if list.broken
            && withdrawn.is_empty()
            && nlri.is_empty()
            && list.mp_reach.is_none()
            && list.mp_unreach.is_none()
        {
            // The attribute list cannot be walked and nothing to withdraw was located:
            // what follows the break may have been an MP_(UN)REACH_NLRI, whose prefixes
            // we could not withdraw (RFC 7606 §5.1), so only a reset is safe.
            return Err(list_error());
        }
        if list.withdraw.is_none() && (!nlri.is_empty() || mp_nlri) {
            let missing = if list.origin.is_none() {
                Some(attr_type::ORIGIN)
            } else if list.as_path.is_none() {
                Some(attr_type::AS_PATH)
            } else if !nlri.is_empty() && list.next_hop.is_none() {
                Some(attr_type::NEXT_HOP)
            } else if ctx.ibgp && list.local_pref.is_none() {
                Some(attr_type::LOCAL_PREF)
            } else {
                None
            };
            if let Some(t) = missing {
                // RFC 7606 §3.d: treat-as-withdraw rather than RFC 4271's reset.
                list.withdraw = Some(AttrError {
                    type_code: t,
                    reason: "missing well-known attribute",
                });
            }
        }
        if list.withdraw.is_none() && !nlri.is_empty() {
            // RFC 4271 §6.3: a semantically wrong NEXT_HOP means the routes are ignored.
            if let Some(nh) = list.next_hop
                && (nh.is_unspecified() || nh.is_broadcast() || nh.is_multicast())
            {
                list.withdraw = Some(AttrError {
                    type_code: attr_type::NEXT_HOP,
                    reason: "invalid NEXT_HOP address",
                });
            }
        }
        if let Some(error) = list.withdraw.take() {
            let mut all: Vec<IpNet> = withdrawn
                .iter()
                .chain(&nlri)
                .map(|&n| IpNet::V4(n))
                .collect();
            if let Some((_, _, p)) = &list.mp_reach {
                all.extend_from_slice(p);
            }
            if let Some(u) = &list.mp_unreach {
                all.extend_from_slice(&u.withdrawn);
            }
            return Err(DecodeError::TreatAsWithdraw {
                withdrawn: all,
                error,
            });
        }
        let discarded = std::mem::take(&mut list.discarded);
        let mp_unreach = list.mp_unreach.take();
        let mp_reach = list.mp_reach.take().and_then(|(family, nh, nlri)| {
            nh.map(|next_hop| MpReach {
                family,
                next_hop,
                nlri,
            })
        });
        let update = Update {
            withdrawn,
            attrs: list.into_path_attrs(ctx),
            mp_reach,
            mp_unreach,
            nlri,
        };
        if discarded.is_empty() {
            Ok(update)
        } else {
            Err(DecodeError::AttributeDiscard {
                update: Box::new(update),
                discarded,
            })
        }
    }

    pub(super) fn encode_body(&self, ctx: &CodecCtx, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            write_prefix(out, &IpNet::V4(*p));
        }
        let wlen = out.len() - start - 2;
        let wlen =
            u16::try_from(wlen).map_err(|_| EncodeError::FieldTooLong("withdrawn routes"))?;
        out[start..start + 2].copy_from_slice(&wlen.to_be_bytes());
        let astart = out.len();
        out.extend_from_slice(&[0, 0]);
        attributes::encode(
            self.attrs.as_ref(),
            self.mp_reach.as_ref(),
            self.mp_unreach.as_ref(),
            ctx,
            out,
        )?;
        let alen = out.len() - astart - 2;
        let alen = u16::try_from(alen).map_err(|_| EncodeError::FieldTooLong("path attributes"))?;
        out[astart..astart + 2].copy_from_slice(&alen.to_be_bytes());
        for p in &self.nlri {
            write_prefix(out, &IpNet::V4(*p));
        }
        Ok(())
    }
}
