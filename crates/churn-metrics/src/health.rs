//! Shared liveness/readiness flags behind `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared readiness/health flags. Cheap to clone; all clones see the same flags.
///
/// - *live* (default `true`): the process is not wedged; `/healthz` answers 503 once cleared,
///   so an orchestrator restarts it — and, once a service loop called [`Health::watch`], also
///   when that loop has not called [`Health::beat`] for longer than the watch's timeout (a
///   deadlock, a hung await, an endless computation).
/// - *ready* (default `false`): state is restored and the consumer is running; `/readyz`
///   answers 503 until set (and again while draining on shutdown).
#[derive(Clone, Debug)]
pub struct Health {
    ready: Arc<AtomicBool>,
    live: Arc<AtomicBool>,
    /// Milliseconds after `origin` of the loop's last beat.
    beat: Arc<AtomicU64>,
    /// Longest allowed gap between beats, in milliseconds; 0 = not watched.
    stall_ms: Arc<AtomicU64>,
    origin: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            live: Arc::new(AtomicBool::new(true)),
            beat: Arc::new(AtomicU64::new(0)),
            stall_ms: Arc::new(AtomicU64::new(0)),
            origin: Instant::now(),
        }
    }
}

impl Health {
    /// Marks the service ready (or not) to serve traffic.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the process live (or wedged).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }

    /// From now on the process is live only while [`Health::beat`] is called at least every
    /// `timeout` (`Duration::ZERO` = stop watching). Counts as a beat.
    pub fn watch(&self, timeout: Duration) {
        self.beat_at(Instant::now());
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.stall_ms.store(ms, Ordering::Release);
    }

    /// The watched loop made progress.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        self.beat
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Whether `/healthz` answers 200.
    pub fn is_live(&self) -> bool {
        self.is_live_at(Instant::now())
    }

    /// [`Health::is_live`] as of `now`.
    pub fn is_live_at(&self, now: Instant) -> bool {
        if !self.live.load(Ordering::Acquire) {
            return false;
        }
        let stall = self.stall_ms.load(Ordering::Acquire);
        if stall == 0 {
            return true;
        }
        let now_ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        now_ms.saturating_sub(self.beat.load(Ordering::Acquire)) <= stall
    }

    /// How long ago the watched loop last beat (`None` when not watched).
    pub fn since_beat(&self) -> Option<Duration> {
        if self.stall_ms.load(Ordering::Acquire) == 0 {
            return None;
        }
        let now_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(
            now_ms.saturating_sub(self.beat.load(Ordering::Acquire)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_shared_clones() {
        let h = Health::default();
        assert!(h.is_live());
        assert!(!h.is_ready());
        let c = h.clone();
        c.set_ready(true);
        c.set_live(false);
        assert!(h.is_ready());
        assert!(!h.is_live());
    }

    #[test]
    fn a_watched_loop_that_stops_beating_is_not_live() {
        let h = Health::default();
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        assert!(
            h.is_live_at(later(10_000)),
            "unwatched: live whatever the time"
        );
        h.watch(Duration::from_secs(60));
        let c = h.clone();
        assert!(c.is_live_at(later(59)));
        assert!(!c.is_live_at(later(120)), "no beat for 120 s > 60 s");
        c.beat_at(later(100));
        assert!(
            h.is_live_at(later(120)),
            "a beat (from any clone) revives it"
        );
        assert!(!h.is_live_at(later(200)));
        h.watch(Duration::ZERO);
        assert!(h.is_live_at(later(10_000)), "watch stopped");
        h.watch(Duration::from_secs(60));
        h.set_live(false);
        assert!(!h.is_live_at(later(1)), "cleared flag wins");
    }
}
