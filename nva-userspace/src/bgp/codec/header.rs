//! The 19-byte message header (RFC 4271 §4.1) and framing.

use super::notification::{Notification, code, header_sub};

pub const MARKER: [u8; 16] = [0xff; 16];
pub const HEADER_LEN: usize = 19;
/// Maximum message size without the extended message capability.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message size with RFC 8654 extended messages.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }

    /// Smallest valid total length for this type.
    fn min_len(self) -> usize {
        match self {
            MessageType::Open => 29,
            MessageType::Update => 23,
            MessageType::Notification => 21,
            MessageType::Keepalive => 19,
            // RFC 7313 wants a ROUTE-REFRESH of the wrong length answered with 7/1, not
            // a header error, so accept any length here and check it in the body.
            MessageType::RouteRefresh => 19,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Total length including the header.
    pub length: usize,
    pub kind: MessageType,
}

fn bad_length(len: u16) -> Notification {
    Notification::new(
        code::MESSAGE_HEADER,
        header_sub::BAD_MESSAGE_LENGTH,
        len.to_be_bytes().to_vec(),
    )
}

/// Validates a header. `buf` must hold at least [`HEADER_LEN`] bytes (`None` otherwise:
/// read more). `max_len` is 4096, or 65535 once extended messages are negotiated.
pub fn parse_header(buf: &[u8], max_len: usize) -> Option<Result<Header, Notification>> {
    let head = buf.get(..HEADER_LEN)?;
    if head[..16] != MARKER {
        return Some(Err(Notification::new(
            code::MESSAGE_HEADER,
            header_sub::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
        )));
    }
    let len = u16::from_be_bytes([head[16], head[17]]);
    let length = len as usize;
    if !(HEADER_LEN..=max_len).contains(&length) {
        return Some(Err(bad_length(len)));
    }
    let Some(kind) = MessageType::from_u8(head[18]) else {
        return Some(Err(Notification::new(
            code::MESSAGE_HEADER,
            header_sub::BAD_MESSAGE_TYPE,
            vec![head[18]],
        )));
    };
    // RFC 8654: OPEN and KEEPALIVE never exceed 4096 even with extended messages.
    let type_max = match kind {
        MessageType::Open => MAX_MESSAGE_LEN,
        MessageType::Keepalive => HEADER_LEN,
        _ => max_len,
    };
    if length < kind.min_len() || length > type_max {
        return Some(Err(bad_length(len)));
    }
    Some(Ok(Header { length, kind }))
}

/// Appends a header for a body of `body_len` bytes; the caller checks the total length.
pub(super) fn write_header(out: &mut Vec<u8>, kind: MessageType) {
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&[0, 0]); // patched by `finish_message`
    out.push(kind as u8);
}

/// Patches the length of a message started at `start` by [`write_header`].
pub(super) fn finish_message(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u16;
    out[start + 16..start + 18].copy_from_slice(&len.to_be_bytes());
}
