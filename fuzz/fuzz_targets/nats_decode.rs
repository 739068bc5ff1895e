//! Feeds arbitrary bytes through the NATS server-side decoder in small chunks.
//!
//! # Invariants checked
//! - Decoding never panics and the read buffer never grows past the limits.
//! - No decoded message exceeds `max_payload`.
//! - Every decoded op re-encodes to bytes that decode back to the same op.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use polymq_nats::frame::{encode_client_op, ClientOp, Limits, ServerCodec};
use tokio_util::codec::Decoder;

const LIMITS: Limits = Limits { max_control_line: 128, max_payload: 256 };

fn codec() -> ServerCodec {
    let mut codec = ServerCodec::new(LIMITS);
    codec.set_headers(true);
    codec
}

fn message_size(op: &ClientOp) -> usize {
    match op {
        ClientOp::Pub { payload, .. } => payload.len(),
        ClientOp::HPub { headers, payload, .. } => headers.len() + payload.len(),
        _ => 0,
    }
}

fn assert_round_trip(op: &ClientOp) {
    let mut wire = BytesMut::new();
    encode_client_op(op, &mut wire);
    let mut again = codec();
    let decoded = again.decode(&mut wire).expect("re-encoded op decodes");
    assert_eq!(decoded.as_ref(), Some(op));
    assert!(wire.is_empty(), "re-encoded op leaves no bytes behind");
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 16) + 1;
    let mut codec = codec();
    let mut buf = BytesMut::new();
    for part in input.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(op)) => {
                    assert!(message_size(&op) <= LIMITS.max_payload);
                    assert_round_trip(&op);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= LIMITS.max_control_line + LIMITS.max_payload + 2 + chunk);
    }
});
