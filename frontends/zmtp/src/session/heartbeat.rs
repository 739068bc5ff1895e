//! ZMTP 3.1 heartbeats (RFC 37): the broker's own PINGs, and the deadlines after which a
//! silent peer is closed.
//!
//! # Invariants
//! - Only ZMTP 3.1 peers are PINGed (3.0 has no PING command).
//! - Any inbound traffic clears both deadlines ([`Heartbeat::traffic`]), as libzmq cancels its
//!   timers on every read; a peer's PING with a TTL then starts the TTL deadline afresh.
//! - A TTL is in tenths of a second and is applied in full (libzmq multiplies it by 100 in
//!   16 bits, so TTLs above 655 tenths wrap there; the RFC's value is used here).

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::Config;
use crate::error::SessionError;
use crate::frame::{Command, Revision};

/// Heartbeat timers of one session.
#[derive(Debug)]
pub(super) struct Heartbeat {
    interval: Option<Duration>,
    timeout: Duration,
    ttl_tenths: u16,
    next_ping: Option<Instant>,
    /// Close if nothing arrives by then (after our PING).
    ping_deadline: Option<Instant>,
    /// Close if nothing arrives by then (after the peer's PING with a TTL).
    ttl_deadline: Option<Instant>,
}

impl Heartbeat {
    pub(super) fn new(config: &Config, revision: Revision) -> Self {
        let interval = (config.heartbeat_ivl_ms > 0 && revision == Revision::V3_1)
            .then(|| Duration::from_millis(config.heartbeat_ivl_ms));
        let timeout_ms = match config.heartbeat_timeout_ms {
            0 => config.heartbeat_ivl_ms,
            ms => ms,
        };
        Self {
            interval,
            timeout: Duration::from_millis(timeout_ms),
            ttl_tenths: u16::try_from(config.heartbeat_ttl_ms / 100).unwrap_or(u16::MAX),
            next_ping: interval.map(|ivl| Instant::now() + ivl),
            ping_deadline: None,
            ttl_deadline: None,
        }
    }

    /// Something arrived from the peer: it is alive.
    pub(super) fn traffic(&mut self) {
        self.ping_deadline = None;
        self.ttl_deadline = None;
    }

    /// The peer PINGed with a TTL of `ttl` tenths of a second (0: none).
    pub(super) fn peer_ping(&mut self, ttl: u16, now: Instant) {
        if ttl > 0 {
            let ttl = Duration::from_millis(u64::from(ttl) * 100);
            self.ttl_deadline = Some(now + ttl);
        }
    }

    /// Runs the timers due at `now`: an error when the peer stayed silent too long, else the
    /// PING to send, if one is due.
    pub(super) fn on_timer(&mut self, now: Instant) -> Result<Option<Command>, SessionError> {
        let expired = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if expired(self.ping_deadline) || expired(self.ttl_deadline) {
            return Err(SessionError::HeartbeatTimeout);
        }
        let (Some(at), Some(interval)) = (self.next_ping, self.interval) else {
            return Ok(None);
        };
        if at > now {
            return Ok(None);
        }
        self.next_ping = Some(now + interval);
        if self.ping_deadline.is_none() && !self.timeout.is_zero() {
            self.ping_deadline = Some(now + self.timeout);
        }
        Ok(Some(Command::Ping {
            ttl: self.ttl_tenths,
            context: Bytes::new(),
        }))
    }

    /// When [`Heartbeat::on_timer`] next has something to do.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [self.next_ping, self.ping_deadline, self.ttl_deadline]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_go_only_to_zmtp_3_1_peers() {
        let config = Config {
            heartbeat_ivl_ms: 100,
            heartbeat_ttl_ms: 2500,
            ..Config::default()
        };
        let old = Heartbeat::new(&config, Revision::V3_0);
        assert_eq!((old.interval, old.next_deadline()), (None, None));
        let new = Heartbeat::new(&config, Revision::V3_1);
        assert_eq!(new.interval, Some(Duration::from_millis(100)));
        assert_eq!(
            new.timeout,
            Duration::from_millis(100),
            "timeout defaults to the interval"
        );
        assert_eq!(new.ttl_tenths, 25);
        assert!(new.next_deadline().is_some());
        let off = Heartbeat::new(&Config::default(), Revision::V3_1);
        assert_eq!(off.next_deadline(), None);
    }

    #[test]
    fn peer_ttl_is_applied_in_full_and_cleared_by_traffic() {
        let mut beat = Heartbeat::new(&Config::default(), Revision::V3_1);
        let now = Instant::now();
        beat.peer_ping(0, now);
        assert_eq!(beat.next_deadline(), None, "TTL 0 means none");
        // 7000 tenths overflow libzmq's 16-bit product; here they are 700 s.
        beat.peer_ping(7000, now);
        assert_eq!(beat.next_deadline(), Some(now + Duration::from_secs(700)));
        assert!(beat.on_timer(now + Duration::from_secs(699)).is_ok());
        assert!(beat.on_timer(now + Duration::from_secs(700)).is_err());
        beat.traffic();
        assert_eq!(beat.next_deadline(), None);
    }

    #[test]
    fn own_pings_start_the_timeout_once() {
        let config = Config {
            heartbeat_ivl_ms: 100,
            heartbeat_timeout_ms: 250,
            heartbeat_ttl_ms: 1000,
            ..Config::default()
        };
        let mut beat = Heartbeat::new(&config, Revision::V3_1);
        let start = Instant::now() + Duration::from_millis(100);
        let ping = beat.on_timer(start).unwrap();
        assert_eq!(
            ping,
            Some(Command::Ping {
                ttl: 10,
                context: Bytes::new()
            })
        );
        assert_eq!(beat.on_timer(start).unwrap(), None, "not due again yet");
        // The second PING does not push the deadline of the first one back.
        let second = start + Duration::from_millis(100);
        assert!(beat.on_timer(second).unwrap().is_some());
        assert!(beat.on_timer(start + Duration::from_millis(250)).is_err());
    }
}
