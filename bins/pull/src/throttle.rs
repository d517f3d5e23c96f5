//! Pacing between studies, so that the legacy archive keeps serving its users: at most
//! `max_studies_per_minute` fetches start per minute, and the bytes of each fetch are spread
//! so that the average stays under `max_mb_per_sec`.

use std::time::{Duration, Instant};

/// When the next fetch may start.
#[derive(Debug, Clone)]
pub struct Throttle {
    min_interval: Option<Duration>,
    bytes_per_sec: Option<f64>,
    next_start: Option<Instant>,
}

impl Throttle {
    /// A throttle for the given limits (0 disables each).
    pub fn new(max_studies_per_minute: u32, max_mb_per_sec: f64) -> Self {
        Throttle {
            min_interval: (max_studies_per_minute > 0)
                .then(|| Duration::from_secs_f64(60.0 / f64::from(max_studies_per_minute))),
            bytes_per_sec: (max_mb_per_sec > 0.0).then_some(max_mb_per_sec * 1024.0 * 1024.0),
            next_start: None,
        }
    }

    /// The instant the next fetch may start (`None`: now).
    pub fn next_start(&self) -> Option<Instant> {
        self.next_start
    }

    /// Records a fetch that started at `started` and delivered `bytes`.
    pub fn record(&mut self, started: Instant, bytes: u64) {
        let by_count = self.min_interval.map(|d| started + d);
        let by_rate = self.bytes_per_sec.map(|r| started + Duration::from_secs_f64(bytes as f64 / r));
        self.next_start = match (by_count, by_rate) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let t0 = Instant::now();
        let mut t = Throttle::new(0, 0.0);
        t.record(t0, 1 << 30);
        assert_eq!(t.next_start(), None);
        let mut t = Throttle::new(30, 0.0);
        t.record(t0, 1 << 30);
        assert_eq!(t.next_start(), Some(t0 + Duration::from_secs(2)));
        let mut t = Throttle::new(30, 1.0);
        t.record(t0, 10 << 20);
        assert_eq!(t.next_start(), Some(t0 + Duration::from_secs(10)));
        t.record(t0, 1 << 19);
        assert_eq!(t.next_start(), Some(t0 + Duration::from_secs(2)));
    }
}
