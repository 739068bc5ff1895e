//! Feeds arbitrary bytes through the ZMTP decoder, in arbitrary chunks, and checks that no
//! message exceeds the limits and that every decoded item re-encodes to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use polymq_zmtp::frame::{Inbound, Limits, Outbound, ZmtpCodec};
use tokio_util::codec::{Decoder, Encoder};

const LIMITS: Limits = Limits {
    max_msg_size: 4096,
    max_msg_parts: 16,
};

fn round_trip(item: &Inbound) {
    let (outbound, mut codec) = match item.clone() {
        Inbound::Greeting(g) => (Outbound::Greeting(g), ZmtpCodec::new(LIMITS)),
        Inbound::Command(c) => (Outbound::Command(c), ZmtpCodec::after_greeting(LIMITS)),
        Inbound::Message(m) => (Outbound::Message(m), ZmtpCodec::after_greeting(LIMITS)),
    };
    let mut wire = BytesMut::new();
    codec
        .encode(outbound, &mut wire)
        .expect("decoded items re-encode");
    let again = codec.decode(&mut wire).expect("re-encoded items decode");
    assert_eq!(again.as_ref(), Some(item));
    assert!(wire.is_empty());
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so incremental decoding is exercised too.
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    for mut codec in [ZmtpCodec::new(LIMITS), ZmtpCodec::after_greeting(LIMITS)] {
        let mut buf = BytesMut::new();
        'feed: for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(item)) => {
                        if let Inbound::Message(m) = &item {
                            assert!(m.size() <= LIMITS.max_msg_size);
                            assert!(!m.0.is_empty() && m.0.len() <= LIMITS.max_msg_parts);
                        }
                        round_trip(&item);
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
});
