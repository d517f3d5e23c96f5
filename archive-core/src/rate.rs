//! A sliding one-minute window of events and bytes, for rates shown by the admin API.

use parking_lot::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const SLOTS: usize = 60;

/// Counts per second over the last minute.
#[derive(Debug)]
pub struct RateWindow {
    slots: Mutex<[(u64, u64, u64); SLOTS]>,
}

impl Default for RateWindow {
    fn default() -> Self {
        Self { slots: Mutex::new([(0, 0, 0); SLOTS]) }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RateWindow {
    /// Records one event of `bytes`.
    pub fn record(&self, bytes: u64) {
        self.record_at(now_secs(), bytes);
    }

    fn record_at(&self, sec: u64, bytes: u64) {
        let mut slots = self.slots.lock();
        let slot = &mut slots[(sec % SLOTS as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0);
        }
        slot.1 += 1;
        slot.2 += bytes;
    }

    /// Events and bytes in the last 60 seconds.
    pub fn last_minute(&self) -> (u64, u64) {
        self.last_minute_at(now_secs())
    }

    fn last_minute_at(&self, now: u64) -> (u64, u64) {
        let slots = self.slots.lock();
        slots
            .iter()
            .filter(|(sec, _, _)| *sec + (SLOTS as u64) > now && *sec <= now)
            .fold((0, 0), |(n, b), (_, sn, sb)| (n + sn, b + sb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_seconds_fall_out_of_the_window() {
        let w = RateWindow::default();
        w.record_at(1000, 10);
        w.record_at(1000, 5);
        w.record_at(1030, 1);
        assert_eq!(w.last_minute_at(1030), (3, 16));
        assert_eq!(w.last_minute_at(1060), (1, 1));
        w.record_at(1060, 7); // same slot as 1000, which it replaces
        assert_eq!(w.last_minute_at(1060), (2, 8));
        assert_eq!(w.last_minute_at(2000), (0, 0));
    }
}
