//! ZMTP driver over libzmq (the `zmq` crate).
//!
//! libzmq's API blocks, so every socket lives on a blocking thread and talks to the async
//! scenario through tokio channels. Messages are `[subject][payload]`, so a broker reads frame
//! 0 as the subject and a libzmq proxy forwards both frames untouched.
//!
//! | scenario | sender (first port) | receiver (second port) |
//! |---|---|---|
//! | pubsub | PUB | SUB, prefix subscription on the subject |
//! | queue | PUSH | PULL workers |
//! | reqrep | REQ | REP, echoing every frame back |
//!
//! A ZMQ PUB drops whatever it sends before a subscription reached it, and a SUB misses what
//! was published before its own subscription reached the publisher. Readiness is therefore
//! proved, not waited for: a PUB publishes probes on a subject of its own, and a SUB receives
//! probes on one, until a probe has made the whole trip through the broker (bounded by
//! [`READY_LIMIT`]). PULL and REP workers are ready once their handshake with the broker has
//! succeeded (a socket monitor reports it).
//!
//! # Invariants
//! - Client sockets queue without limit (`SNDHWM`/`RCVHWM` 0): any drop happens in the broker.
//! - Every blocking loop is bounded: receives time out and check whether their channel closed,
//!   readiness gives up after [`READY_LIMIT`], a flush waits at most [`LINGER`].
//! - `flush` closes the sender after libzmq has written everything queued (linger), so the
//!   broker has it; the next publish opens a new connection.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{unique_name, Publisher, Requester, Subscriber};

/// Longest wait for a probe to come back or a handshake to succeed.
const READY_LIMIT: Duration = Duration::from_secs(5);
/// Longest wait for queued messages to be written when a sender closes.
const LINGER: Duration = Duration::from_secs(10);
/// How often a waiting receiver checks whether its reader has gone.
const RECEIVE_TICK: Duration = Duration::from_millis(100);
/// Longest wait for one reply.
const REPLY_LIMIT: Duration = Duration::from_secs(30);
/// Pause between probes while a subscription travels.
const PROBE_TICK: Duration = Duration::from_millis(20);
/// Messages queued between the scenario and a socket thread, either way.
const CHANNEL_CAPACITY: usize = 4096;
/// Frame 0 of the broker's own error replies to requests.
const ERROR_SUBJECT: &[u8] = b"$ERR";

/// The two endpoints of a ZMTP address: senders use `front`, receivers `back`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoints {
    front: String,
    back: String,
}

/// `host:port` (one port for both sides) or `host:port1,port2` (a proxy's frontend and
/// backend).
fn endpoints(addr: &str) -> anyhow::Result<Endpoints> {
    let (host, ports) = addr
        .rsplit_once(':')
        .context("ZMTP address wants host:port or host:port1,port2")?;
    let (front, back) = ports.split_once(',').unwrap_or((ports, ports));
    for port in [front, back] {
        port.parse::<u16>()
            .with_context(|| format!("ZMTP port {port:?}"))?;
    }
    Ok(Endpoints {
        front: format!("tcp://{host}:{front}"),
        back: format!("tcp://{host}:{back}"),
    })
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// A socket of `kind` on a context of its own, so closing it can wait for its linger.
fn socket(kind: zmq::SocketType) -> anyhow::Result<(zmq::Context, zmq::Socket)> {
    let context = zmq::Context::new();
    let socket = context.socket(kind)?;
    socket.set_sndhwm(0)?;
    socket.set_rcvhwm(0)?;
    socket.set_linger(0)?;
    Ok((context, socket))
}

/// Sends `[subject][payload]`.
fn send(socket: &zmq::Socket, subject: &[u8], payload: &[u8]) -> zmq::Result<()> {
    socket.send(subject, zmq::SNDMORE)?;
    socket.send(payload, 0)
}

/// Publishes probes on `probe` through `sender` until `receiver` (already subscribed to it)
/// gets one back.
fn await_probe(sender: &zmq::Socket, receiver: &zmq::Socket, probe: &[u8]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_LIMIT;
    while Instant::now() < deadline {
        send(sender, probe, b"probe")?;
        if receiver.poll(zmq::POLLIN, i64::from(millis(PROBE_TICK)))? == 0 {
            continue;
        }
        while let Ok(frames) = receiver.recv_multipart(zmq::DONTWAIT) {
            if frames.first().is_some_and(|f| f.as_slice() == probe) {
                return Ok(());
            }
        }
    }
    bail!("no probe came back through the broker within {READY_LIMIT:?}")
}

/// Connects `socket` to `endpoint` and waits until its ZMTP handshake has succeeded.
fn connect_handshaken(
    context: &zmq::Context,
    socket: &zmq::Socket,
    endpoint: &str,
) -> anyhow::Result<()> {
    let monitor = format!("inproc://{}", unique_name("monitor"));
    let event = zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw();
    socket.monitor(&monitor, i32::from(event))?;
    let events = context.socket(zmq::PAIR)?;
    events.set_linger(0)?;
    events.set_rcvtimeo(millis(READY_LIMIT))?;
    events.connect(&monitor)?;
    socket.connect(endpoint)?;
    let frames = events
        .recv_multipart(0)
        .with_context(|| format!("no ZMTP handshake with {endpoint} within {READY_LIMIT:?}"))?;
    // Frame 0 is [u16 event][u32 value] in host order.
    let got = frames
        .first()
        .and_then(|f| f.first_chunk::<2>())
        .map(|b| u16::from_ne_bytes(*b));
    if got != Some(event) {
        bail!("unexpected monitor event {got:?} from {endpoint}");
    }
    Ok(())
}

/// Opens a sender: PUB proven ready by a probe, or PUSH (which queues until connected).
fn open_sender(ends: &Endpoints, to_group: bool) -> anyhow::Result<(zmq::Context, zmq::Socket)> {
    let kind = if to_group { zmq::PUSH } else { zmq::PUB };
    let (context, sender) = socket(kind)?;
    sender.set_linger(millis(LINGER))?;
    sender.connect(&ends.front)?;
    if !to_group {
        let probe = unique_name("bench-probe");
        let receiver = context.socket(zmq::SUB)?;
        receiver.set_linger(0)?;
        receiver.set_subscribe(probe.as_bytes())?;
        receiver.connect(&ends.back)?;
        await_probe(&sender, &receiver, probe.as_bytes())?;
    }
    Ok((context, sender))
}

/// What the scenario asks of a sender thread.
enum Command {
    Publish { subject: Bytes, payload: Bytes },
    Flush(oneshot::Sender<anyhow::Result<()>>),
}

/// Publishes with PUB (plain subscribers) or PUSH (a group) from a blocking thread.
pub struct ZmtpPublisher {
    commands: mpsc::Sender<Command>,
    subject: Bytes,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl ZmtpPublisher {
    pub async fn connect(addr: &str, to_group: bool) -> anyhow::Result<Self> {
        let ends = endpoints(addr)?;
        let (commands, queued) = mpsc::channel(CHANNEL_CAPACITY);
        let (ready, opened) = oneshot::channel();
        let thread = tokio::task::spawn_blocking(move || match open_sender(&ends, to_group) {
            Ok(sender) => {
                let _ = ready.send(Ok(()));
                run_sender(&ends, to_group, Some(sender), queued)
            }
            Err(err) => {
                let _ = ready.send(Err(err));
                Ok(())
            }
        });
        opened.await.context("ZMTP sender thread ended")??;
        Ok(Self {
            commands,
            subject: Bytes::new(),
            thread,
        })
    }

    async fn command(&mut self, command: Command) -> anyhow::Result<()> {
        match self.commands.send(command).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stopped().await),
        }
    }

    /// Why the sender thread stopped.
    async fn stopped(&mut self) -> anyhow::Error {
        match (&mut self.thread).await {
            Ok(Err(err)) => err,
            Ok(Ok(())) => anyhow::anyhow!("ZMTP sender thread ended"),
            Err(join) => join.into(),
        }
    }
}

/// The sender thread: sends each message, and on flush closes the socket once libzmq has
/// written everything (the context's termination waits for the linger).
fn run_sender(
    ends: &Endpoints,
    to_group: bool,
    mut open: Option<(zmq::Context, zmq::Socket)>,
    mut queued: mpsc::Receiver<Command>,
) -> anyhow::Result<()> {
    while let Some(command) = queued.blocking_recv() {
        match command {
            Command::Publish { subject, payload } => {
                if open.is_none() {
                    open = Some(open_sender(ends, to_group)?);
                }
                if let Some((_, sender)) = &open {
                    send(sender, &subject, &payload)?;
                }
            }
            Command::Flush(done) => {
                // Socket first, then the context: its termination blocks until sent.
                if let Some((context, sender)) = open.take() {
                    drop(sender);
                    drop(context);
                }
                let _ = done.send(Ok(()));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Publisher for ZmtpPublisher {
    async fn publish(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<()> {
        if self.subject != subject.as_bytes() {
            self.subject = Bytes::copy_from_slice(subject.as_bytes());
        }
        let subject = self.subject.clone();
        self.command(Command::Publish { subject, payload }).await
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let (done, flushed) = oneshot::channel();
        self.command(Command::Flush(done)).await?;
        match tokio::time::timeout(LINGER + READY_LIMIT, flushed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped().await),
            Err(_) => bail!("ZMTP flush took longer than {:?}", LINGER + READY_LIMIT),
        }
    }
}

/// Receives with SUB (every message on the subject) or PULL (a share of a group's).
pub struct ZmtpSubscriber {
    deliveries: mpsc::Receiver<Bytes>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl ZmtpSubscriber {
    pub async fn connect(addr: &str, subject: &str, group: Option<&str>) -> anyhow::Result<Self> {
        let ends = endpoints(addr)?;
        let subject = Bytes::copy_from_slice(subject.as_bytes());
        let (tx, deliveries) = mpsc::channel(CHANNEL_CAPACITY);
        let (ready, opened) = oneshot::channel();
        let in_group = group.is_some();
        let thread =
            tokio::task::spawn_blocking(move || match open_receiver(&ends, &subject, in_group) {
                Ok((_context, receiver)) => {
                    let _ = ready.send(Ok(()));
                    run_receiver(&receiver, &subject, &tx)
                }
                Err(err) => {
                    let _ = ready.send(Err(err));
                    Ok(())
                }
            });
        opened.await.context("ZMTP receiver thread ended")??;
        Ok(Self {
            deliveries,
            thread: Some(thread),
        })
    }
}

/// Opens a receiver: SUB proven ready by a probe, or PULL ready after its handshake.
fn open_receiver(
    ends: &Endpoints,
    subject: &[u8],
    in_group: bool,
) -> anyhow::Result<(zmq::Context, zmq::Socket)> {
    if in_group {
        let (context, receiver) = socket(zmq::PULL)?;
        connect_handshaken(&context, &receiver, &ends.back)?;
        return Ok((context, receiver));
    }
    let (context, receiver) = socket(zmq::SUB)?;
    let probe = unique_name("bench-probe");
    receiver.set_subscribe(subject)?;
    receiver.set_subscribe(probe.as_bytes())?;
    receiver.connect(&ends.back)?;
    let prober = context.socket(zmq::PUB)?;
    prober.set_linger(0)?;
    prober.connect(&ends.front)?;
    await_probe(&prober, &receiver, probe.as_bytes())?;
    receiver.set_unsubscribe(probe.as_bytes())?;
    Ok((context, receiver))
}

/// The receiver thread: forwards the payload of every `[subject][payload]` until the reader
/// goes away. Other messages (late probes) are skipped.
fn run_receiver(
    receiver: &zmq::Socket,
    subject: &[u8],
    tx: &mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    receiver.set_rcvtimeo(millis(RECEIVE_TICK))?;
    loop {
        let mut frames = match receiver.recv_multipart(0) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) if tx.is_closed() => return Ok(()),
            Err(zmq::Error::EAGAIN) => continue,
            Err(err) => return Err(err.into()),
        };
        if frames.len() < 2 || frames.first().is_some_and(|f| f.as_slice() != subject) {
            continue;
        }
        let Some(payload) = frames.pop() else {
            continue;
        };
        if tx.blocking_send(Bytes::from(payload)).is_err() {
            return Ok(());
        }
    }
}

#[async_trait]
impl Subscriber for ZmtpSubscriber {
    async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        if let Some(payload) = self.deliveries.recv().await {
            return Ok(Some(payload));
        }
        match self.thread.take() {
            Some(thread) => thread.await?.map(|()| None),
            None => Ok(None),
        }
    }
}

/// Starts a REP worker that echoes every request back; its thread lives as long as the
/// process (it is not a tokio blocking task, so it never holds up the runtime's shutdown).
pub async fn spawn_responder(addr: &str) -> anyhow::Result<()> {
    let ends = endpoints(addr)?;
    let (ready, opened) = oneshot::channel();
    std::thread::Builder::new()
        .name("zmtp-responder".into())
        .spawn(move || match open_worker(&ends) {
            Ok((_context, worker)) => {
                let _ = ready.send(Ok(()));
                echo(&worker);
            }
            Err(err) => {
                let _ = ready.send(Err(err));
            }
        })?;
    opened.await.context("ZMTP responder thread ended")?
}

/// Opens a REP worker, ready once its handshake has succeeded.
fn open_worker(ends: &Endpoints) -> anyhow::Result<(zmq::Context, zmq::Socket)> {
    let (context, worker) = socket(zmq::REP)?;
    connect_handshaken(&context, &worker, &ends.back)?;
    Ok((context, worker))
}

/// Sends every request's frames back as its reply.
fn echo(worker: &zmq::Socket) {
    while let Ok(frames) = worker.recv_multipart(0) {
        if worker.send_multipart(frames, 0).is_err() {
            return;
        }
    }
}

/// One request and where its reply goes.
struct Request {
    subject: Bytes,
    payload: Bytes,
    reply: oneshot::Sender<anyhow::Result<Bytes>>,
}

/// Sends requests with REQ from a blocking thread, one at a time.
pub struct ZmtpRequester {
    requests: mpsc::Sender<Request>,
    _thread: JoinHandle<()>,
}

impl ZmtpRequester {
    pub async fn connect(addr: &str) -> anyhow::Result<Self> {
        let ends = endpoints(addr)?;
        let (context, requester) = socket(zmq::REQ)?;
        requester.set_rcvtimeo(millis(REPLY_LIMIT))?;
        requester.connect(&ends.front)?;
        let (requests, queued) = mpsc::channel(1);
        let thread = tokio::task::spawn_blocking(move || {
            let _context = context;
            run_requester(&requester, queued);
        });
        Ok(Self {
            requests,
            _thread: thread,
        })
    }
}

/// The requester thread: one round trip per request; stops at the first failure, since a
/// REQ that missed a reply cannot send again.
fn run_requester(requester: &zmq::Socket, mut queued: mpsc::Receiver<Request>) {
    while let Some(request) = queued.blocking_recv() {
        let result = round_trip(requester, &request.subject, &request.payload);
        let failed = result.is_err();
        let _ = request.reply.send(result);
        if failed {
            return;
        }
    }
}

fn round_trip(requester: &zmq::Socket, subject: &[u8], payload: &[u8]) -> anyhow::Result<Bytes> {
    send(requester, subject, payload)?;
    let mut frames = requester
        .recv_multipart(0)
        .with_context(|| format!("no reply within {REPLY_LIMIT:?}"))?;
    if frames
        .first()
        .is_some_and(|f| f.as_slice() == ERROR_SUBJECT)
    {
        let text: Vec<_> = frames.iter().map(|f| String::from_utf8_lossy(f)).collect();
        bail!("broker answered {}", text.join(" "));
    }
    frames.pop().map(Bytes::from).context("empty reply")
}

#[async_trait]
impl Requester for ZmtpRequester {
    async fn request(&mut self, subject: &str, payload: Bytes) -> anyhow::Result<Bytes> {
        let (reply, replied) = oneshot::channel();
        let request = Request {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            payload,
            reply,
        };
        self.requests
            .send(request)
            .await
            .ok()
            .context("ZMTP requester thread ended")?;
        replied.await.context("ZMTP requester thread ended")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_serves_both_sides_two_ports_split_them() {
        assert_eq!(
            endpoints("127.0.0.1:5555").ok(),
            Some(Endpoints {
                front: "tcp://127.0.0.1:5555".into(),
                back: "tcp://127.0.0.1:5555".into(),
            })
        );
        assert_eq!(
            endpoints("127.0.0.1:25555,25556").ok(),
            Some(Endpoints {
                front: "tcp://127.0.0.1:25555".into(),
                back: "tcp://127.0.0.1:25556".into(),
            })
        );
        assert!(endpoints("127.0.0.1").is_err());
        assert!(endpoints("127.0.0.1:1,x").is_err());
    }
}
