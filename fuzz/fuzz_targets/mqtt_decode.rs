//! Feeds arbitrary bytes through the MQTT codec, as a server (version learnt from CONNECT) and
//! as a 3.1.1 and 5.0 peer, asserting that no packet exceeds the limit and that every decoded
//! packet re-encodes to bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use polymq_mqtt::frame::{Codec, ProtocolVersion};
use tokio_util::codec::Decoder;

const LIMIT: usize = 64 * 1024;

fn run(mut codec: Codec, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    for _ in 0..data.len() + 1 {
        let before = buf.len();
        let packet = match codec.decode(&mut buf) {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(_) => return,
        };
        assert!(
            before - buf.len() <= LIMIT,
            "packet over the limit was decoded"
        );
        let version = codec.version().unwrap_or(ProtocolVersion::V311);
        let mut wire = BytesMut::new();
        packet
            .encode(&mut wire, version)
            .expect("a decoded packet re-encodes");
        let mut again = Codec::with_version(version, usize::MAX);
        let decoded = again.decode(&mut wire).expect("re-encoded bytes decode");
        assert_eq!(
            decoded.as_ref(),
            Some(&packet),
            "round trip changed the packet"
        );
        assert!(wire.is_empty(), "re-encoding left trailing bytes");
    }
}

fuzz_target!(|data: &[u8]| {
    run(Codec::new(LIMIT), data);
    run(Codec::with_version(ProtocolVersion::V311, LIMIT), data);
    run(Codec::with_version(ProtocolVersion::V5, LIMIT), data);
});
