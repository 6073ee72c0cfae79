//! The wall-clock budget: a hard end for the whole run, with a reserve kept back for the final
//! evaluation and the report.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    start: Instant,
    /// The whole budget, if any (`None`: iterations alone bound the run).
    total: Option<Duration>,
    /// Time already spent in earlier sessions (resume).
    spent_before: Duration,
    reserve: Duration,
}

impl Budget {
    /// A budget whose clock starts now.
    pub fn new(total: Option<Duration>, spent_before: Duration) -> Self {
        Self::starting_at(Instant::now(), total, spent_before)
    }

    /// A budget whose clock started at `start` (when the command started: loading the data and
    /// opening the sandbox count).
    pub fn starting_at(start: Instant, total: Option<Duration>, spent_before: Duration) -> Self {
        let reserve = total.map_or(Duration::from_secs(120), reserve_for);
        Self { start, total, spent_before, reserve }
    }

    /// When the loop must stop starting work (the reserve is left for the final evaluation).
    pub fn loop_deadline(&self) -> Option<Instant> {
        self.end().map(|end| end.checked_sub(self.reserve).unwrap_or(end))
    }

    /// When everything, final evaluation and report included, must be done.
    pub fn end(&self) -> Option<Instant> {
        self.total.map(|t| self.start + t.saturating_sub(self.spent_before))
    }

    /// Time left for the loop.
    pub fn loop_left(&self) -> Option<Duration> {
        self.loop_deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Time left in total.
    pub fn left(&self) -> Option<Duration> {
        self.end().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Wall time of the run so far, earlier sessions included.
    pub fn elapsed(&self) -> Duration {
        self.spent_before + self.start.elapsed()
    }

    pub fn total(&self) -> Option<Duration> {
        self.total
    }

    pub fn reserve(&self) -> Duration {
        self.reserve
    }
}

/// A tenth of the budget, between 10 s and 2 min, and never more than half of it.
fn reserve_for(total: Duration) -> Duration {
    total.mul_f64(0.1).clamp(Duration::from_secs(10), Duration::from_secs(120)).min(total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_scales_and_is_bounded() {
        assert_eq!(reserve_for(Duration::from_secs(60)), Duration::from_secs(10));
        assert_eq!(reserve_for(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(reserve_for(Duration::from_secs(6 * 3600)), Duration::from_secs(120));
        assert_eq!(reserve_for(Duration::from_secs(8)), Duration::from_secs(4));
    }

    #[test]
    fn earlier_sessions_count() {
        let b = Budget::new(Some(Duration::from_secs(100)), Duration::from_secs(40));
        let left = b.left().unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(59));
        assert!(b.elapsed() >= Duration::from_secs(40));
        assert!(Budget::new(None, Duration::ZERO).loop_left().is_none());
    }
}
