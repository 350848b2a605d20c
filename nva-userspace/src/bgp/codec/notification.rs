//! NOTIFICATION message (RFC 4271 §4.5) and the error codes we send or recognise.

use std::fmt;

/// Error codes (RFC 4271 §4.5, RFC 7313 for ROUTE-REFRESH).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Subcodes of [`code::MESSAGE_HEADER`].
pub mod header_sub {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// Subcodes of [`code::OPEN`].
pub mod open_sub {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// RFC 5492.
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// Subcodes of [`code::UPDATE`].
pub mod update_sub {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const MISSING_WELL_KNOWN: u8 = 3;
    pub const ATTRIBUTE_FLAGS: u8 = 4;
    pub const ATTRIBUTE_LENGTH: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Subcodes of [`code::FSM`] (RFC 6608).
pub mod fsm_sub {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNEXPECTED_IN_OPENSENT: u8 = 1;
    pub const UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Subcodes of [`code::CEASE`] (RFC 4486).
pub mod cease_sub {
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMIN_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMIN_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIG_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
}

/// Subcodes of [`code::ROUTE_REFRESH`] (RFC 7313).
pub mod route_refresh_sub {
    pub const INVALID_LENGTH: u8 = 1;
}

/// A NOTIFICATION: what we send before closing, or what the peer told us.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Notification {
            code,
            subcode,
            data,
        }
    }

    pub fn cease(subcode: u8) -> Self {
        Notification::new(code::CEASE, subcode, Vec::new())
    }

    /// Cease / administrative shutdown with an RFC 8203 shutdown communication.
    pub fn admin_shutdown(message: &str) -> Self {
        // At most 255 octets of UTF-8 (RFC 9003); cut on a char boundary.
        let mut end = message.len().min(255);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = Vec::with_capacity(end + 1);
        data.push(end as u8);
        data.extend_from_slice(&message.as_bytes()[..end]);
        Notification::new(code::CEASE, cease_sub::ADMIN_SHUTDOWN, data)
    }

    pub fn hold_timer_expired() -> Self {
        Notification::new(code::HOLD_TIMER_EXPIRED, 0, Vec::new())
    }

    /// The RFC 8203 shutdown communication of a Cease 2 or 4, if present and valid UTF-8.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != code::CEASE
            || !matches!(
                self.subcode,
                cease_sub::ADMIN_SHUTDOWN | cease_sub::ADMIN_RESET
            )
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..len as usize)?;
        String::from_utf8(text.to_vec()).ok()
    }

    pub(super) fn decode(body: &[u8]) -> Option<Self> {
        let (&code, rest) = body.split_first()?;
        let (&subcode, data) = rest.split_first()?;
        Some(Notification::new(code, subcode, data.to_vec()))
    }

    pub(super) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data);
    }

    pub fn code_name(&self) -> &'static str {
        match (self.code, self.subcode) {
            (code::MESSAGE_HEADER, header_sub::CONNECTION_NOT_SYNCHRONIZED) => {
                "message header error / connection not synchronized"
            }
            (code::MESSAGE_HEADER, header_sub::BAD_MESSAGE_LENGTH) => {
                "message header error / bad message length"
            }
            (code::MESSAGE_HEADER, header_sub::BAD_MESSAGE_TYPE) => {
                "message header error / bad message type"
            }
            (code::MESSAGE_HEADER, _) => "message header error",
            (code::OPEN, open_sub::UNSUPPORTED_VERSION) => "OPEN error / unsupported version",
            (code::OPEN, open_sub::BAD_PEER_AS) => "OPEN error / bad peer AS",
            (code::OPEN, open_sub::BAD_BGP_IDENTIFIER) => "OPEN error / bad BGP identifier",
            (code::OPEN, open_sub::UNSUPPORTED_OPTIONAL_PARAMETER) => {
                "OPEN error / unsupported optional parameter"
            }
            (code::OPEN, open_sub::UNACCEPTABLE_HOLD_TIME) => "OPEN error / unacceptable hold time",
            (code::OPEN, open_sub::UNSUPPORTED_CAPABILITY) => "OPEN error / unsupported capability",
            (code::OPEN, _) => "OPEN error",
            (code::UPDATE, _) => "UPDATE error",
            (code::HOLD_TIMER_EXPIRED, _) => "hold timer expired",
            (code::FSM, _) => "finite state machine error",
            (code::CEASE, cease_sub::MAX_PREFIXES) => "cease / maximum prefixes reached",
            (code::CEASE, cease_sub::ADMIN_SHUTDOWN) => "cease / administrative shutdown",
            (code::CEASE, cease_sub::PEER_DECONFIGURED) => "cease / peer de-configured",
            (code::CEASE, cease_sub::ADMIN_RESET) => "cease / administrative reset",
            (code::CEASE, cease_sub::CONNECTION_REJECTED) => "cease / connection rejected",
            (code::CEASE, cease_sub::OTHER_CONFIG_CHANGE) => "cease / other configuration change",
            (code::CEASE, cease_sub::CONNECTION_COLLISION) => "cease / connection collision",
            (code::CEASE, cease_sub::OUT_OF_RESOURCES) => "cease / out of resources",
            (code::CEASE, _) => "cease",
            (code::ROUTE_REFRESH, _) => "ROUTE-REFRESH error",
            _ => "unknown error code",
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.code, self.subcode, self.code_name())?;
        if let Some(msg) = self.shutdown_message() {
            write!(f, " \"{}\"", msg.escape_debug())?;
        }
        Ok(())
    }
}
