//! What the decoder says when a message is not simply good: the action the session must
//! take (RFC 4271 §6 as revised by RFC 7606), never just "invalid".

use std::fmt;

use ipnet::IpNet;

use super::notification::Notification;
use super::update::Update;

/// One attribute-level problem: which attribute and why (for logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrError {
    pub type_code: u8,
    pub reason: &'static str,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attribute {}: {}", self.type_code, self.reason)
    }
}

/// Why a received message is not accepted as it is, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Send this NOTIFICATION and close the connection.
    SessionReset(Notification),
    /// RFC 7606 treat-as-withdraw: every prefix the UPDATE carried (reachable or
    /// unreachable) must be removed from the Adj-RIB-In; the session stays up.
    TreatAsWithdraw {
        withdrawn: Vec<IpNet>,
        error: AttrError,
    },
    /// RFC 7606 attribute discard: the UPDATE is usable once the listed attributes are
    /// dropped; `update` is that UPDATE. Log `discarded` and process `update`.
    AttributeDiscard {
        update: Box<Update>,
        discarded: Vec<AttrError>,
    },
}

impl DecodeError {
    pub(super) fn reset(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        DecodeError::SessionReset(Notification::new(code, subcode, data))
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::SessionReset(n) => write!(f, "session reset: {n}"),
            DecodeError::TreatAsWithdraw { withdrawn, error } => {
                write!(
                    f,
                    "treat-as-withdraw of {} prefixes: {error}",
                    withdrawn.len()
                )
            }
            DecodeError::AttributeDiscard { discarded, .. } => {
                write!(f, "attributes discarded:")?;
                for d in discarded {
                    write!(f, " [{d}]")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a value cannot be put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The message would exceed the negotiated maximum (4096 or 65535).
    TooLong { len: usize, max: usize },
    /// A field does not fit its wire encoding (e.g. a capability value over 255 bytes).
    FieldTooLong(&'static str),
    /// Routes of a family without a usable next hop for it.
    NextHop(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            EncodeError::FieldTooLong(what) => write!(f, "{what} too long to encode"),
            EncodeError::NextHop(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for EncodeError {}
