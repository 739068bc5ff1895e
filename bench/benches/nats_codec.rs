//! NATS wire micro-benchmarks: decoding a read buffer of `PUB`s (plain and with a reply
//! subject) into client ops, and encoding `MSG` deliveries into a write buffer, per message.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::codec::Decoder;

use polymq_core::{ConnId, Envelope, Origin, Protocol, Subject};
use polymq_nats::frame::{ClientOp, Limits, ServerCodec};
use polymq_nats::mapping;

/// Messages per iteration.
const BATCH: usize = 1000;

fn pubs(reply: bool) -> Bytes {
    let mut wire = Vec::new();
    for _ in 0..BATCH {
        if reply {
            wire.extend_from_slice(b"PUB bench.subject _INBOX.abcdef.1 16\r\n0123456789abcdef\r\n");
        } else {
            wire.extend_from_slice(b"PUB bench.subject 16\r\n0123456789abcdef\r\n");
        }
    }
    Bytes::from(wire)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("nats_decode");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, reply) in [("pub_16b", false), ("pub_reply_16b", true)] {
        let wire = pubs(reply);
        group.bench_function(name, |b| {
            let mut codec = ServerCodec::new(Limits::default());
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                let mut ops = 0;
                while let Ok(Some(op)) = codec.decode(&mut buf) {
                    if matches!(op, ClientOp::Pub { .. }) {
                        ops += 1;
                    }
                }
                assert_eq!(ops, BATCH);
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("nats_encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    let msg = Envelope::new(
        Subject::new("bench.subject").expect("subject"),
        Bytes::from_static(b"0123456789abcdef"),
        Origin {
            protocol: Protocol::Nats,
            conn: ConnId(1),
        },
    );
    group.bench_function("msg_16b", |b| {
        let mut out = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            for _ in 0..BATCH {
                mapping::put_delivery(&mut out, &msg, b"1", None);
            }
        });
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
