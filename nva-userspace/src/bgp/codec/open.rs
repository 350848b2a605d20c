//! OPEN message (RFC 4271 §4.2) with optional parameters (RFC 5492, RFC 9072).

use std::net::Ipv4Addr;

use super::capabilities::Capability;
use super::error::{DecodeError, EncodeError};
use super::notification::{code, open_sub};
use super::reader::Reader;

pub const BGP_VERSION: u8 = 4;
/// RFC 6793: the 2-octet placeholder for a 4-octet AS number.
pub const AS_TRANS: u16 = 23456;
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072: an optional parameters length of 255 followed by this type marks the
/// extended (2-byte lengths) encoding.
const PARAM_EXTENDED: u8 = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// "My Autonomous System": AS_TRANS when the real AS does not fit in 16 bits.
    pub asn: u16,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    /// All capabilities of all capability parameters, in order.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The sender's AS: the 4-octet AS capability if present, else the 2-octet field.
    pub fn effective_asn(&self) -> u32 {
        self.four_octet_asn().unwrap_or(self.asn as u32)
    }

    pub fn four_octet_asn(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    pub(super) fn decode(body: &[u8]) -> Result<Open, DecodeError> {
        let malformed = || DecodeError::reset(code::OPEN, open_sub::UNSPECIFIC, Vec::new());
        let mut r = Reader::new(body);
        let version = r.u8().ok_or_else(malformed)?;
        if version != BGP_VERSION {
            // Data: the largest version we support (RFC 4271 §6.2).
            return Err(DecodeError::reset(
                code::OPEN,
                open_sub::UNSUPPORTED_VERSION,
                (BGP_VERSION as u16).to_be_bytes().to_vec(),
            ));
        }
        let asn = r.u16().ok_or_else(malformed)?;
        let hold_time = r.u16().ok_or_else(malformed)?;
        let router_id = Ipv4Addr::from(r.u32().ok_or_else(malformed)?);
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::reset(
                code::OPEN,
                open_sub::UNACCEPTABLE_HOLD_TIME,
                Vec::new(),
            ));
        }
        if router_id.is_unspecified() {
            return Err(DecodeError::reset(
                code::OPEN,
                open_sub::BAD_BGP_IDENTIFIER,
                router_id.octets().to_vec(),
            ));
        }
        let opt_len = r.u8().ok_or_else(malformed)?;
        let extended = opt_len == 255 && r.peek_u8() == Some(PARAM_EXTENDED);
        let params = if extended {
            r.u8();
            let len = r.u16().ok_or_else(malformed)?;
            r.take(len as usize).ok_or_else(malformed)?
        } else {
            r.take(opt_len as usize).ok_or_else(malformed)?
        };
        if !r.is_empty() {
            return Err(malformed());
        }
        let mut capabilities = Vec::new();
        let mut p = Reader::new(params);
        while !p.is_empty() {
            let ptype = p.u8().ok_or_else(malformed)?;
            let plen = if extended {
                p.u16()
            } else {
                p.u8().map(u16::from)
            };
            let value = p
                .take(plen.ok_or_else(malformed)? as usize)
                .ok_or_else(malformed)?;
            if ptype != PARAM_CAPABILITIES {
                return Err(DecodeError::reset(
                    code::OPEN,
                    open_sub::UNSUPPORTED_OPTIONAL_PARAMETER,
                    Vec::new(),
                ));
            }
            let mut c = Reader::new(value);
            while !c.is_empty() {
                let ccode = c.u8().ok_or_else(malformed)?;
                let clen = c.u8().ok_or_else(malformed)?;
                let cval = c.take(clen as usize).ok_or_else(malformed)?;
                capabilities.push(Capability::decode(ccode, cval).ok_or_else(malformed)?);
            }
        }
        Ok(Open {
            asn,
            hold_time,
            router_id,
            capabilities,
        })
    }

    pub(super) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(BGP_VERSION);
        out.extend_from_slice(&self.asn.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.router_id.octets());
        // One capabilities parameter per <= 255 bytes of capabilities.
        let mut params: Vec<Vec<u8>> = vec![Vec::new()];
        for cap in &self.capabilities {
            let mut one = Vec::new();
            cap.encode(&mut one)?;
            if params.last().is_some_and(|p| p.len() + one.len() > 255) {
                params.push(Vec::new());
            }
            if let Some(p) = params.last_mut() {
                p.extend_from_slice(&one);
            }
        }
        params.retain(|p| !p.is_empty());
        let classic_len: usize = params.iter().map(|p| 2 + p.len()).sum();
        if classic_len <= 255 {
            out.push(classic_len as u8);
            for p in &params {
                out.push(PARAM_CAPABILITIES);
                out.push(p.len() as u8);
                out.extend_from_slice(p);
            }
        } else {
            // RFC 9072 extended optional parameters.
            let ext_len: usize = params.iter().map(|p| 3 + p.len()).sum();
            let ext_len =
                u16::try_from(ext_len).map_err(|_| EncodeError::FieldTooLong("OPEN parameters"))?;
            out.push(255);
            out.push(PARAM_EXTENDED);
            out.extend_from_slice(&ext_len.to_be_bytes());
            for p in &params {
                out.push(PARAM_CAPABILITIES);
                out.extend_from_slice(&(p.len() as u16).to_be_bytes());
                out.extend_from_slice(p);
            }
        }
        Ok(())
    }
}
