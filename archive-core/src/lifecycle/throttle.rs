//! A byte-rate limit shared by every job that copies or re-reads objects.

use crate::tier::ByteStream;
use futures::StreamExt;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A shared bytes-per-second budget; a rate of 0 never waits.
#[derive(Debug, Clone)]
pub struct Throttle {
    bytes_per_sec: u64,
    next_free: Arc<Mutex<Instant>>,
}

/// How far ahead of the budget a caller may run (a short burst after idling).
const BURST: Duration = Duration::from_millis(250);

impl Throttle {
    /// A limit of `bytes_per_sec` (0 = unlimited).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec, next_free: Arc::new(Mutex::new(Instant::now())) }
    }

    /// Waits until `n` bytes fit in the budget.
    pub async fn take(&self, n: u64) {
        if self.bytes_per_sec == 0 || n == 0 {
            return;
        }
        let start = {
            let mut next = self.next_free.lock();
            let now = Instant::now();
            let earliest = now.checked_sub(BURST).unwrap_or(now);
            let start = (*next).max(earliest);
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// A stream that takes each chunk from the budget before passing it on.
    pub fn limit(&self, body: ByteStream) -> ByteStream {
        if self.bytes_per_sec == 0 {
            return body;
        }
        let this = self.clone();
        body.then(move |chunk| {
            let this = this.clone();
            async move {
                if let Ok(c) = &chunk {
                    this.take(c.len() as u64).await;
                }
                chunk
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_limit_spreads_bytes_over_time() {
        let t = Throttle::new(1000);
        let started = Instant::now();
        for _ in 0..10 {
            t.take(500).await;
        }
        // 5000 bytes at 1000 B/s: about 4.5 s after the first chunk's burst allowance.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(4200) && took <= Duration::from_millis(5000), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let t = Throttle::new(0);
        let started = Instant::now();
        t.take(u64::MAX).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
