//! polymq-zmtp: the ZMTP 3.0/3.1 (ZeroMQ) frontend.
//!
//! libzmq applications (pyzmq, czmq, cppzmq, the `zmq` crate) connect their sockets to the
//! broker and take part in its subject space. One endpoint serves every peer type: the broker
//! reads the peer's Socket-Type during the handshake and answers as the compatible socket.
//!
//! # Layout
//! - [`frame`]: pure codec: greeting, frames, commands, metadata, multipart assembly.
//! - [`session`]: one task per connection: NULL/PLAIN handshake, then the message loop.
//! - [`mapping`]: socket types to roles, frames to envelopes and back, READY metadata.
//! - [`error`]: why a connection ends and the ERROR the peer is sent first.
//! - [`config`]: the `[zmtp]` section and `[[zmtp.listener]]` extra listeners.
//!
//! # Peers
//! | peer | broker is | on the core |
//! |---|---|---|
//! | PUB/XPUB | XSUB | the broker sends SUBSCRIBE `""` (3.0: a `0x01` message); `[subject][body…]` is published |
//! | SUB/XSUB | XPUB | SUBSCRIBE/CANCEL (3.0: `0x01`/`0x00` parts) are refcounted byte-prefix subscriptions; receives `[subject][body…]`, once however many of its prefixes match |
//! | PUSH | PULL | publishes `[subject][body…]`, or `[body]` on `X-Subject`/`Resource`/`default_subject` |
//! | PULL | PUSH | member of group `X-Group`/`Resource`/`default_group` on filter `X-Subject`/`Resource`/`default_subject`; round-robin among members with room; receives `[subject][body…]` (or `[body…]` with `pull_subject_frame = false`) |
//! | REQ | ROUTER | `[""][subject][body…]` is a request with an inbox; exactly one reply `[""][subject][reply…]` |
//! | DEALER | ROUTER | as REQ when frame 0 is empty (many outstanding); otherwise as PUSH |
//! | REP/ROUTER | DEALER | member of group `X-Group`/`<default_group>.rep` on its filter; receives `[request id][""][subject][body…]`, replies `[request id][""][subject][reply…]`; requests are dealt round-robin among members with room, as a libzmq DEALER deals them |
//! | anything else | – | ERROR `Unsupported-Socket-Type`, then close |
//!
//! # Request-reply and the error replies (PROTOCOLS.md §8)
//! A requester always gets exactly one reply per request. A reply from a responder arrives as
//! `[envelope…][request subject][reply body…]`, where the envelope is every frame the request
//! carried up to and including its empty delimiter (`[""]` for REQ and DEALER, `[id][""]` for
//! a REQ with `ZMQ_REQ_CORRELATE`). When the broker must answer instead, frame 0 after the
//! envelope is `$ERR` (never a request subject: `$` names belong to the broker), followed by
//! a status and a description:
//! - `[envelope…]["$ERR"]["503"]["No Responders"]`: nothing subscribes to the subject (sent at
//!   once, as NATS sends its 503 status);
//! - `[envelope…]["$ERR"]["408"]["Request Timeout"]`: no reply within `request_timeout_ms`;
//! - `[envelope…]["$ERR"]["400"]["Bad Request"]`: frame 0 is not a valid subject.
//!
//! A REQ that sends a new request (`ZMQ_REQ_RELAXED`) abandons the previous one, which then
//! gets no reply. A DEALER may have up to `sndhwm` requests outstanding; more are dropped
//! and counted. Responders may keep up to `sndhwm` requests unanswered; beyond that the oldest
//! assignment is forgotten and its late reply dropped. A reply goes to the request's reply-to
//! subject; the subject frame the worker sends back is ignored (a lone frame after the
//! delimiter is the whole reply body).
//!
//! # Overflow policy
//! ZMTP is at-most-once (RFC 29/30): each peer has an outbox of `sndhwm` messages; when it is
//! full, further messages for that peer are dropped and counted in the metrics, and the
//! router is never blocked. Incoming messages with an invalid subject frame, or for the
//! broker's `$SYS` tree (as mosquitto keeps clients out of it), are dropped and counted too
//! (ZMTP has no NACK). Unlike a libzmq PUSH/PULL pipeline, which blocks the
//! producer at the HWM, a PUSH peer is never slowed down by slow PULL peers: their overflow
//! is dropped and counted (DESIGN.md: ZMQ legs are at-most-once).
//!
//! # Invariants
//! - Limits (`max_msg_size` per frame and per message, parts per message) are enforced before
//!   a frame body is buffered; a peer that exceeds them is disconnected, as libzmq does.
//! - A garbage greeting is rejected as soon as its first bytes prove it, and affects only its
//!   own connection.
//! - A session ends with every core subscription it made removed.

pub mod config;
pub mod error;
pub mod frame;
pub mod mapping;
pub mod session;

use std::sync::Arc;

use polymq_core::net::serve_tcp;
use polymq_core::router::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Serves ZMTP on `listener` until `shutdown` is cancelled, then waits for every connection
/// to close. Fails at once if the config's defaults are invalid (`default_subject` must be a
/// subject or filter in the listener's `topic_syntax`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let defaults = mapping::Defaults::new(&config).map_err(|err| {
        let text = format!("zmtp default_subject {:?}: {err}", config.default_subject);
        std::io::Error::new(std::io::ErrorKind::InvalidInput, text)
    })?;
    let max_connections = config.max_connections;
    let shared = Arc::new(session::Listener {
        router,
        config,
        defaults,
    });
    serve_tcp(
        listener,
        shutdown,
        max_connections,
        move |stream, peer, token| session::run(stream, peer, shared.clone(), token),
    )
    .await
}
