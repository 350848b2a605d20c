//! ROUTE-REFRESH message (RFC 2918; the subtype byte is RFC 7313's).

use super::error::DecodeError;
use super::notification::{code, route_refresh_sub};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    /// 0 = normal request (RFC 2918 "reserved"), 1 = BoRR, 2 = EoRR (RFC 7313).
    pub subtype: u8,
    pub safi: u8,
}

impl RouteRefresh {
    /// `message` is the whole message: RFC 7313 returns it as the NOTIFICATION data.
    pub(super) fn decode(body: &[u8], message: &[u8]) -> Result<RouteRefresh, DecodeError> {
        match *body {
            [a, b, subtype, safi] => Ok(RouteRefresh {
                afi: u16::from_be_bytes([a, b]),
                subtype,
                safi,
            }),
            _ => Err(DecodeError::reset(
                code::ROUTE_REFRESH,
                route_refresh_sub::INVALID_LENGTH,
                message.to_vec(),
            )),
        }
    }

    pub(super) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.afi.to_be_bytes());
        out.push(self.subtype);
        out.push(self.safi);
    }
}
