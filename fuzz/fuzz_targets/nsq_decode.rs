//! Feeds arbitrary bytes through the NSQ V2 server decoder.
//!
//! Checks: no panic; every decoded body respects the limits; every decoded command re-encodes
//! to bytes that decode back to the same command. The first byte picks the session gate so
//! the IDENTIFY/AUTH/MPUB state checks are exercised too.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use polymq_nsq::frame::{Codec, Command, Gate, Limits};
use tokio_util::codec::Decoder;

const LIMITS: Limits = Limits { max_msg_size: 64, max_body_size: 256, max_req_timeout_ms: 3_600_000 };

fn check_limits(cmd: &Command) {
    let max_msg = LIMITS.max_msg_size as usize;
    let max_body = LIMITS.max_body_size as usize;
    match cmd {
        Command::Pub { body, .. } | Command::Dpub { body, .. } => {
            assert!(!body.is_empty() && body.len() <= max_msg)
        }
        Command::Identify(body) | Command::Auth(body) => {
            assert!(!body.is_empty() && body.len() <= max_body)
        }
        Command::Mpub { bodies, .. } => {
            assert!(!bodies.is_empty());
            assert!(bodies.iter().all(|b| !b.is_empty() && b.len() <= max_msg));
            assert!(4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>() <= max_body);
        }
        _ => {}
    }
    if let Command::Dpub { defer_ms, .. } = cmd {
        assert!(*defer_ms <= LIMITS.max_req_timeout_ms);
    }
}

fn decode_all(codec: &mut Codec, buf: &mut BytesMut) -> Vec<Command> {
    let mut out = Vec::new();
    // Every iteration consumes input or ends the loop, so the bound is never reached early.
    for _ in 0..=buf.len() {
        match codec.decode_eof(buf) {
            Ok(Some(cmd)) => out.push(cmd),
            Ok(None) | Err(_) => break,
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let gate = Gate { initial: flags & 1 == 0, auth_missing: flags & 2 != 0 };
    let mut codec = Codec::new(LIMITS);
    codec.set_gate(gate);
    let mut buf = BytesMut::from(input);
    for cmd in decode_all(&mut codec, &mut buf) {
        check_limits(&cmd);
        let mut wire = BytesMut::new();
        cmd.encode(&mut wire);
        let mut again = Codec::new(LIMITS);
        again.set_gate(gate);
        assert_eq!(decode_all(&mut again, &mut wire), vec![cmd]);
    }
});
