//! The accept loop every frontend listener shares.
//!
//! [`serve_tcp`] accepts connections until its shutdown token is cancelled, limits concurrent
//! connections with a semaphore, backs off on accept errors (file-descriptor exhaustion must
//! not spin), and waits for every connection task to finish before it returns.
//!
//! # Invariants
//! - Each connection task gets a child token of the listener's token: cancelling the listener
//!   asks every connection to close.
//! - A connection holds its semaphore permit for its whole life.
//! - A connection task stores its handler future once: the future is created inside the
//!   spawned task, never captured by it and then awaited (which would reserve room for it
//!   twice in every task).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections and runs `handler` for each in its own task.
pub async fn serve_tcp<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    max_connections: usize,
    handler: F,
) -> std::io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let token = shutdown.child_token();
                tracker.spawn(async move {
                    let _permit = permit;
                    handler(stream, peer, token).await;
                });
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serves_until_cancelled_then_waits_for_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_tcp(
            listener,
            shutdown.clone(),
            8,
            |mut s, _, stop| async move {
                let mut buf = [0u8; 4];
                tokio::select! {
                    () = stop.cancelled() => {}
                    r = s.read_exact(&mut buf) => if r.is_ok() { let _ = s.write_all(&buf).await; }
                }
            },
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
        let _idle = TcpStream::connect(addr).await.unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
