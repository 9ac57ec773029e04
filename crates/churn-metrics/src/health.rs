//! Shared liveness/readiness flags behind `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared readiness/health flags. Cheap to clone; all clones see the same flags.
///
/// - *live* (default `true`): the process is not wedged; `/healthz` answers 503 once cleared,
///   so an orchestrator restarts it.
/// - *ready* (default `false`): state is restored and the consumer is running; `/readyz`
///   answers 503 until set (and again while draining on shutdown).
#[derive(Clone, Debug)]
pub struct Health {
    ready: Arc<AtomicBool>,
    live: Arc<AtomicBool>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            live: Arc::new(AtomicBool::new(true)),
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

    /// Whether `/healthz` answers 200.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
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
}
