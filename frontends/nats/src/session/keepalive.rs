//! nats-server's PING timer (`processPingTimer`): when the server PINGs, when a connection
//! is stale, and the round-trip estimate `/connz` shows.
//!
//! # Invariants
//! - Pure state: the caller supplies the clock, so the rules are testable without waiting.
//! - More than `max_out` unanswered PINGs is a stale connection; any PONG clears the count.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::SessionError;

/// nats-server's first PING after CONNECT comes after at most this long.
const FIRST_PING: Duration = Duration::from_secs(2);
/// nats-server re-measures RTT with a PING at least this often.
const RTT_REFRESH: Duration = Duration::from_secs(3600);

/// nats-server's PING timer state (`processPingTimer`).
#[derive(Debug)]
pub(super) struct Keepalive {
    interval: Duration,
    max_out: u32,
    pings_out: u32,
    /// Last PUB/SUB/UNSUB/PING from the client.
    pub(super) last_in: Instant,
    /// When the last server PING went out.
    probe: Option<Instant>,
    pub(super) rtt: Option<Duration>,
    /// When the timer fires next.
    pub(super) deadline: Instant,
    pub(super) first_pong_sent: bool,
}

impl Keepalive {
    pub(super) fn new(interval: Duration, max_out: u32, now: Instant) -> Self {
        Self {
            interval,
            max_out,
            pings_out: 0,
            last_in: now,
            probe: None,
            rtt: None,
            deadline: now + interval,
            first_pong_sent: false,
        }
    }

    /// CONNECT arrived: RTT estimate from accept to CONNECT, and the short first PING
    /// (at most 2 s, plus up to 20 % jitter).
    pub(super) fn connected(&mut self, started: Instant, now: Instant) {
        self.rtt = Some((now - started).max(Duration::from_nanos(1)));
        let first = self.interval.min(FIRST_PING);
        let jitter = u64::try_from(first.as_nanos() / 5).unwrap_or(0);
        self.deadline = now + first + Duration::from_nanos(fastrand::u64(0..=jitter));
    }

    /// The timer fired: `Ok(true)` means send a PING now.
    pub(super) fn fire(&mut self, now: Instant) -> Result<bool, SessionError> {
        self.deadline = now + self.interval;
        let need_rtt = self.rtt.is_none() || self.probe.is_none_or(|t| now - t > RTT_REFRESH);
        if now.saturating_duration_since(self.last_in) < self.interval && !need_rtt {
            return Ok(false);
        }
        if self.pings_out + 1 > self.max_out {
            return Err(SessionError::StaleConnection);
        }
        self.pings_out += 1;
        self.probe = Some(now);
        Ok(true)
    }

    /// A PONG arrived; returns the measured round trip, if a PING was outstanding.
    pub(super) fn pong(&mut self, now: Instant) -> Option<Duration> {
        self.pings_out = 0;
        let rtt = self.probe.map(|sent| now - sent);
        if rtt.is_some() {
            self.rtt = rtt;
        }
        rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_follows_process_ping_timer() {
        let start = Instant::now();
        let interval = Duration::from_secs(120);
        let mut k = Keepalive::new(interval, 2, start);
        assert_eq!(k.deadline, start + interval);
        // Before CONNECT there is no RTT: the timer always pings.
        assert!(k.fire(start + interval).unwrap());
        assert_eq!(k.pings_out, 1);
        // CONNECT: the first PING comes within 2 s + 20 %.
        let t = start + interval + Duration::from_secs(1);
        k.connected(start, t);
        assert!(k.deadline >= t + FIRST_PING && k.deadline <= t + FIRST_PING * 6 / 5);
        assert_eq!(k.pong(t), Some(Duration::from_secs(1)));
        assert_eq!(k.pings_out, 0);
        // Recent activity and a fresh RTT probe: no PING.
        k.last_in = t;
        assert!(!k.fire(t + Duration::from_secs(60)).unwrap());
        // Idle for an interval: PING; a third unanswered one would exceed max_pings_out.
        let t = t + interval * 3;
        assert!(k.fire(t).unwrap());
        assert!(k.fire(t + interval).unwrap());
        assert!(matches!(
            k.fire(t + interval * 2),
            Err(SessionError::StaleConnection)
        ));
    }
}
