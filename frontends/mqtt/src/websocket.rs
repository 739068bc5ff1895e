//! MQTT over WebSocket (MQTT 5 §6, 3.1.1 §6): the HTTP upgrade, and [`WsStream`], which turns
//! binary WebSocket messages back into the byte stream the session reads, so every protocol
//! rule runs unchanged on both transports.
//!
//! As mosquitto's `protocol websockets` listener: any request path is accepted; the server
//! selects the subprotocol `mqtt` (or the legacy `mqttv3.1`) when the client offers it; a
//! client offering only other subprotocols is refused with `400 Bad Request`; a client
//! offering none is served without one. MQTT packets may span WebSocket messages and one
//! message may hold several packets `[MQTT-6.0.0-2]`.
//!
//! # Invariants
//! - A text data frame ends the connection `[MQTT-6.0.0-1]`: reads fail with `InvalidData`.
//! - A WebSocket message is never larger than the listener's `max_packet_size` plus the
//!   fixed header, checked by the WebSocket layer before buffering.
//! - Each session write becomes one binary message; Ping is answered by the WebSocket layer;
//!   Close reads as end of stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Subprotocols the server selects, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// Room for the fixed header on top of the largest packet.
const FIXED_HEADER_MAX: usize = 5;

/// Answers the HTTP upgrade on `stream` and returns the WebSocket as a byte stream.
pub async fn accept<S>(stream: S, max_packet_size: usize) -> Result<WsStream<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = max_packet_size.saturating_add(FIXED_HEADER_MAX);
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, select_subprotocol, Some(config))
            .await?;
    Ok(WsStream {
        ws,
        pending: Bytes::new(),
    })
}

/// Picks the subprotocol from `Sec-WebSocket-Protocol`, or refuses a client that offers only
/// others.
#[allow(clippy::result_large_err)] // The signature is tungstenite's `Callback`.
fn select_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offered: Vec<&str> = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(response);
    }
    let Some(chosen) = SUBPROTOCOLS
        .iter()
        .find(|name| offered.iter().any(|p| p.eq_ignore_ascii_case(name)))
    else {
        let mut refusal = ErrorResponse::new(Some("no supported subprotocol\n".to_owned()));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    };
    response
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen));
    Ok(response)
}

/// A WebSocket carrying MQTT, read and written as bytes.
#[derive(Debug)]
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// Unread rest of the last binary message.
    pending: Bytes,
}

fn io_error(err: WsError) -> io::Error {
    match err {
        WsError::Io(err) => err,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(self.pending.get(..n).unwrap_or_default());
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary frames only",
                    )))
                }
                Some(Err(err)) => return Poll::Ready(Err(io_error(err))),
            }
        }
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        ws.start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    async fn pair(
        protocols: Option<&str>,
    ) -> Result<
        (
            WsStream<tokio::io::DuplexStream>,
            WebSocketStream<tokio::io::DuplexStream>,
        ),
        String,
    > {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let mut request = "ws://localhost/mqtt".into_client_request().unwrap();
        if let Some(p) = protocols {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
        }
        let (server, client) = tokio::join!(
            accept(server, 1024),
            tokio_tungstenite::client_async(request, client)
        );
        let (client, response) = client.map_err(|e| e.to_string())?;
        let server = server.map_err(|e| e.to_string())?;
        let chosen = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        match protocols {
            Some(p) if p.contains("mqtt") => assert_eq!(chosen.as_deref(), Some("mqtt")),
            _ => assert_eq!(chosen, None),
        }
        Ok((server, client))
    }

    #[tokio::test]
    async fn subprotocol_is_selected_or_refused() {
        assert!(pair(Some("mqtt")).await.is_ok());
        assert!(pair(Some("wamp, mqtt")).await.is_ok());
        assert!(pair(None).await.is_ok());
        assert!(pair(Some("wamp")).await.is_err());
    }

    #[tokio::test]
    async fn packets_cross_message_boundaries_both_ways() {
        let (mut server, mut client) = pair(Some("mqtt")).await.unwrap();
        // One packet split over two messages, then two packets in one message.
        for part in [&[0xc0u8][..], &[0x00, 0xc0, 0x00, 0xe0, 0x00]] {
            client
                .send(Message::Binary(Bytes::copy_from_slice(part)))
                .await
                .unwrap();
        }
        let mut got = [0u8; 6];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0xc0, 0x00, 0xc0, 0x00, 0xe0, 0x00]);
        server.write_all(&[0xd0, 0x00]).await.unwrap();
        server.flush().await.unwrap();
        let reply = client.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::Binary(Bytes::from_static(&[0xd0, 0x00])));
    }

    #[tokio::test]
    async fn text_frames_and_oversized_messages_end_the_stream() {
        let (mut server, mut client) = pair(Some("mqtt")).await.unwrap();
        client.send(Message::text("hello")).await.unwrap();
        let err = server.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let (mut server, mut client) = pair(Some("mqtt")).await.unwrap();
        client
            .send(Message::Binary(Bytes::from(vec![0u8; 2048])))
            .await
            .unwrap();
        assert!(
            server.read_u8().await.is_err(),
            "a message above the limit is refused"
        );
    }

    #[tokio::test]
    async fn close_reads_as_end_of_stream() {
        let (mut server, mut client) = pair(None).await.unwrap();
        client.close(None).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
