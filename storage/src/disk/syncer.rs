//! The background thread behind [`FsyncPolicy::Interval`](super::FsyncPolicy::Interval).
//!
//! A plain OS thread rather than a tokio task: syncing is blocking I/O, and the store can be
//! opened outside a runtime.
//!
//! # Invariants
//! - The thread runs `tick` once per period and once more when the [`Syncer`] is dropped;
//!   dropping the [`Syncer`] waits for the thread to finish, so no sync outlives the store.

use std::io;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Handle of the sync thread; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts a thread calling `tick` every `period`.
    pub(crate) fn start(
        period: Duration,
        mut tick: impl FnMut() + Send + 'static,
    ) -> io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("polymq-fsync".into())
            .spawn(move || loop {
                match stopped.recv_timeout(period) {
                    Err(RecvTimeoutError::Timeout) => tick(),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                        tick();
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("fsync thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn ticks_periodically_and_once_more_on_drop() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ticks);
        let (seen, saw) = mpsc::channel();
        let syncer = Syncer::start(Duration::from_millis(1), move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 2 {
                let _ = seen.send(());
            }
        })
        .unwrap();
        saw.recv_timeout(Duration::from_secs(10))
            .expect("three ticks");
        drop(syncer);
        let after_drop = ticks.load(Ordering::SeqCst);
        assert!(
            after_drop >= 4,
            "the final tick ran before drop returned: {after_drop}"
        );
    }
}
