//! Capabilities advertisement (RFC 5492) and the capabilities we understand.

use super::error::EncodeError;
use super::reader::Reader;

/// Address family identifiers and subsequent AFIs we speak (RFC 4760).
pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
pub const SAFI_UNICAST: u8 = 1;

pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// One <AFI, SAFI> of the graceful restart capability (RFC 4724 §3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrFamily {
    pub afi: u16,
    pub safi: u8,
    /// F bit: forwarding state was preserved across the restart.
    pub forwarding_preserved: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// R bit: the sender has just restarted.
    pub restarting: bool,
    /// N bit (RFC 8538): graceful restart also applies to NOTIFICATIONs.
    pub notification: bool,
    /// Seconds (12 bits).
    pub restart_time: u16,
    pub families: Vec<GrFamily>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// RFC 4760. AFI/SAFI are kept as numbers: a peer may offer families we do not use.
    Multiprotocol { afi: u16, safi: u8 },
    /// RFC 2918.
    RouteRefresh,
    /// RFC 8654.
    ExtendedMessage,
    /// RFC 4724.
    GracefulRestart(GracefulRestart),
    /// RFC 6793: the sender's real AS number.
    FourOctetAs(u32),
    /// Anything else, kept as received.
    Unknown { code: u8, value: Vec<u8> },
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => cap_code::MULTIPROTOCOL,
            Capability::RouteRefresh => cap_code::ROUTE_REFRESH,
            Capability::ExtendedMessage => cap_code::EXTENDED_MESSAGE,
            Capability::GracefulRestart(_) => cap_code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => cap_code::FOUR_OCTET_AS,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Parses one capability value; `None` when a capability we know is malformed.
    pub(super) fn decode(code: u8, value: &[u8]) -> Option<Capability> {
        let mut r = Reader::new(value);
        let cap = match code {
            cap_code::MULTIPROTOCOL => {
                let afi = r.u16()?;
                let _reserved = r.u8()?;
                let safi = r.u8()?;
                Capability::Multiprotocol { afi, safi }
            }
            cap_code::ROUTE_REFRESH => Capability::RouteRefresh,
            cap_code::EXTENDED_MESSAGE => Capability::ExtendedMessage,
            cap_code::FOUR_OCTET_AS => Capability::FourOctetAs(r.u32()?),
            cap_code::GRACEFUL_RESTART => {
                let word = r.u16()?;
                if !r.remaining().is_multiple_of(4) {
                    return None;
                }
                let mut families = Vec::with_capacity(r.remaining() / 4);
                while !r.is_empty() {
                    let afi = r.u16()?;
                    let safi = r.u8()?;
                    let flags = r.u8()?;
                    families.push(GrFamily {
                        afi,
                        safi,
                        forwarding_preserved: flags & 0x80 != 0,
                    });
                }
                Capability::GracefulRestart(GracefulRestart {
                    restarting: word & 0x8000 != 0,
                    notification: word & 0x4000 != 0,
                    restart_time: word & 0x0fff,
                    families,
                })
            }
            _ => {
                return Some(Capability::Unknown {
                    code,
                    value: value.to_vec(),
                });
            }
        };
        // Trailing bytes after a fixed-size capability: malformed.
        r.is_empty().then_some(cap)
    }

    /// Appends code, length and value.
    pub(super) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut value = Vec::new();
        match self {
            Capability::Multiprotocol { afi, safi } => {
                value.extend_from_slice(&afi.to_be_bytes());
                value.push(0);
                value.push(*safi);
            }
            Capability::RouteRefresh | Capability::ExtendedMessage => {}
            Capability::FourOctetAs(asn) => value.extend_from_slice(&asn.to_be_bytes()),
            Capability::GracefulRestart(gr) => {
                let mut word = gr.restart_time & 0x0fff;
                if gr.restarting {
                    word |= 0x8000;
                }
                if gr.notification {
                    word |= 0x4000;
                }
                value.extend_from_slice(&word.to_be_bytes());
                for f in &gr.families {
                    value.extend_from_slice(&f.afi.to_be_bytes());
                    value.push(f.safi);
                    value.push(if f.forwarding_preserved { 0x80 } else { 0 });
                }
            }
            Capability::Unknown { value: v, .. } => value.extend_from_slice(v),
        }
        let len = u8::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong("capability"))?;
        out.push(self.code());
        out.push(len);
        out.extend_from_slice(&value);
        Ok(())
    }
}
