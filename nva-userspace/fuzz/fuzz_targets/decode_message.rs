//! Arbitrary bytes into the message decoder. The first byte picks the session context
//! (bit 0: 4-octet AS, bit 1: extended messages, bit 2: iBGP); the rest is one message.
//! Whatever decodes must encode, and decode again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nva_fuzz::codec::{
    CodecCtx, DecodeError, EncodeError, Message, decode_message, encode_message, parse_header,
};

fn round_trip(msg: Message, ctx: &CodecCtx) {
    match encode_message(&msg, ctx) {
        Ok(bytes) => {
            let again = decode_message(&bytes, ctx);
            assert_eq!(again.as_ref(), Ok(&msg), "re-decode differs; encoded {bytes:02x?}");
        }
        // Rebuilding a 2-octet path from AS4_PATH can make it longer than it came.
        Err(EncodeError::TooLong { .. }) => {}
        Err(e) => panic!("cannot encode a decoded message: {e}: {msg:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else { return };
    let ctx = CodecCtx {
        four_octet_as: sel & 1 != 0,
        extended_message: sel & 2 != 0,
        ibgp: sel & 4 != 0,
    };
    let decoded = decode_message(msg, &ctx);
    if decoded.is_ok() {
        let header = parse_header(msg, ctx.max_message_len());
        assert!(matches!(header, Some(Ok(h)) if h.length == msg.len()));
    }
    match decoded {
        Ok(m) => round_trip(m, &ctx),
        Err(DecodeError::AttributeDiscard { update, .. }) => {
            round_trip(Message::Update(*update), &ctx)
        }
        Err(_) => {}
    }
});
