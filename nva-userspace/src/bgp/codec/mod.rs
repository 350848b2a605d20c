//! BGP-4 wire codec: bytes in, values out, no I/O.
//!
//! [`decode_message`] takes one whole message (find its end with [`parse_header`]) and
//! returns a [`Message`] or a [`DecodeError`] that says what the session must do about
//! it (RFC 4271 §6, RFC 7606). [`encode_message`] is its inverse. Both depend on what
//! the OPEN exchange negotiated, carried in a [`CodecCtx`].
//!
//! The decoder never panics and allocates at most a small multiple of its input.

mod as_path;
mod attributes;
mod attrs;
mod capabilities;
mod error;
mod header;
mod nlri;
mod notification;
mod open;
mod pack;
mod reader;
mod route_refresh;
mod update;

#[cfg(test)]
mod tests;

pub use attributes::attr_type;
pub use attrs::{
    Aggregator, AsPath, AsSegment, Community, LargeCommunity, NextHop, Origin, PathAttrs,
    RawAttribute, flags as attr_flags,
};
pub use capabilities::{
    AFI_IPV4, AFI_IPV6, Capability, GrFamily, GracefulRestart, SAFI_UNICAST, cap_code,
};
pub use error::{AttrError, DecodeError, EncodeError};
pub use header::{
    HEADER_LEN, Header, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, MessageType, parse_header,
};
pub use nlri::{Family, prefix_wire_len};
pub use notification::{
    Notification, cease_sub, code, fsm_sub, header_sub, open_sub, route_refresh_sub, update_sub,
};
pub use open::{AS_TRANS, BGP_VERSION, Open};
pub use pack::{announce_messages, end_of_rib_message, withdraw_messages};
pub use route_refresh::RouteRefresh;
pub use update::{MpReach, MpUnreach, Update};

/// What the session negotiated that changes the encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CodecCtx {
    /// Both sides sent the 4-octet AS capability: AS_PATH/AGGREGATOR carry 4-byte ASes.
    pub four_octet_as: bool,
    /// Both sides sent the extended message capability: up to 65535 bytes.
    pub extended_message: bool,
    /// Internal peer: LOCAL_PREF is meaningful (and required).
    pub ibgp: bool,
}

impl CodecCtx {
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

// Messages are decoded one at a time and consumed at once: boxing UPDATE would cost an
// allocation per message for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }
}

/// Decodes one complete message (header included). Trailing bytes beyond the header's
/// length, or fewer bytes than it, are a bad message length.
pub fn decode_message(msg: &[u8], ctx: &CodecCtx) -> Result<Message, DecodeError> {
    let header = match parse_header(msg, ctx.max_message_len()) {
        Some(Ok(h)) => h,
        Some(Err(n)) => return Err(DecodeError::SessionReset(n)),
        None => return Err(bad_length(msg.len())),
    };
    if header.length != msg.len() {
        return Err(bad_length(msg.len()));
    }
    let body = &msg[HEADER_LEN..];
    match header.kind {
        MessageType::Open => Open::decode(body).map(Message::Open),
        MessageType::Update => Update::decode(body, ctx).map(Message::Update),
        MessageType::Notification => Notification::decode(body)
            .map(Message::Notification)
            .ok_or_else(|| bad_length(msg.len())),
        MessageType::Keepalive => Ok(Message::Keepalive),
        MessageType::RouteRefresh => RouteRefresh::decode(body, msg).map(Message::RouteRefresh),
    }
}

fn bad_length(len: usize) -> DecodeError {
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    DecodeError::reset(
        code::MESSAGE_HEADER,
        header_sub::BAD_MESSAGE_LENGTH,
        len.to_be_bytes().to_vec(),
    )
}

/// Encodes one message, appending it to `out`. On error `out` is left as it was.
pub fn encode_message_into(
    msg: &Message,
    ctx: &CodecCtx,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    header::write_header(out, msg.kind());
    let res = match msg {
        Message::Open(o) => o.encode_body(out),
        Message::Update(u) => u.encode_body(ctx, out),
        Message::Notification(n) => {
            n.encode_body(out);
            Ok(())
        }
        Message::Keepalive => Ok(()),
        Message::RouteRefresh(r) => {
            r.encode_body(out);
            Ok(())
        }
    };
    let max = match msg {
        Message::Open(_) | Message::Keepalive => MAX_MESSAGE_LEN,
        _ => ctx.max_message_len(),
    };
    let len = out.len() - start;
    let res = match res {
        Ok(()) if len > max => Err(EncodeError::TooLong { len, max }),
        other => other,
    };
    match res {
        Ok(()) => {
            header::finish_message(out, start);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Encodes one message into a new buffer.
pub fn encode_message(msg: &Message, ctx: &CodecCtx) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_message_into(msg, ctx, &mut out)?;
    Ok(out)
}
