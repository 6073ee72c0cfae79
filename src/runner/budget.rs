//! The wall-clock budget: a hard end for the whole run, with a reserve kept back for the final
//! evaluation and the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Budget {
    start: Instant,
    /// The whole budget, if any (`None`: iterations alone bound the run).
    total: Option<Duration>,
    /// Time already spent in earlier sessions (resume).
    spent_before: Duration,
    reserve: Duration,
    /// Kept back as well for making the final model of the current best (a refit or a bag),
    /// in milliseconds; follows the best as it changes.
    final_model: Arc<AtomicU64>,
}

impl Budget {
    /// A budget whose clock starts now.
    pub fn new(total: Option<Duration>, spent_before: Duration) -> Self {
        Self::starting_at(Instant::now(), total, spent_before)
    }

    /// A budget whose clock started at `start` (when the command started: loading the data and
    /// opening the sandbox count).
    pub fn starting_at(start: Instant, total: Option<Duration>, spent_before: Duration) -> Self {
        let reserve = total.map_or(Duration::from_secs(60), reserve_for);
        Self { start, total, spent_before, reserve, final_model: Arc::default() }
    }

    /// When the loop must stop starting work (the reserve is left for the final model and the
    /// final evaluation).
    pub fn loop_deadline(&self) -> Option<Instant> {
        let kept = self.reserve + Duration::from_millis(self.final_model.load(Ordering::Relaxed));
        self.end().map(|end| end.checked_sub(kept).unwrap_or(end))
    }

    /// Keeps back what the end of the run needs beyond the reserve: `final_model`, the time
    /// making the final model and scoring it and the selected iteration on the test split take,
    /// when that is at most a quarter of the budget; else (no final model is made then, see
    /// `Runner::refit`) `test_only`, the selected iteration's test scoring, which every run
    /// needs, at most half of the budget.
    pub fn keep_for_final_model(&self, final_model: Duration, test_only: Duration) {
        let total = self.total.unwrap_or(Duration::ZERO);
        let kept = if final_model <= total / 4 { final_model } else { test_only.min(total / 2) };
        self.final_model.store(kept.as_millis() as u64, Ordering::Relaxed);
    }

    /// When everything, final evaluation and report included, must be done.
    pub fn end(&self) -> Option<Instant> {
        self.total.map(|t| self.start + t.saturating_sub(self.spent_before))
    }

    /// Time left for the loop.
    pub fn loop_left(&self) -> Option<Duration> {
        self.loop_deadline().map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Time left for making the final model after the loop: all but the reserve for the test
    /// evaluation and the report.
    pub fn final_model_left(&self) -> Option<Duration> {
        self.end()
            .map(|end| end.checked_sub(self.reserve).unwrap_or(end).saturating_duration_since(Instant::now()))
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

    /// What the end of the reserve keeps for writing the report: the final evaluations stop
    /// short of it (a fifth of the reserve, at least 2 s).
    pub fn report_time(&self) -> Duration {
        (self.reserve / 5).max(Duration::from_secs(2)).min(self.reserve)
    }
}

/// Cancels `token` at the loop's deadline, which moves as the time kept back for the end of
/// the run does (a new best may need more): looked at again at least every second, so that
/// scripts already running are cut when the end of the run needs their time, not only at the
/// deadline they were started with.
pub fn end_the_loop_on_time(budget: Budget, token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(deadline) = budget.loop_deadline() {
            let now = Instant::now();
            if now >= deadline {
                token.cancel();
                return;
            }
            tokio::time::sleep_until(deadline.min(now + Duration::from_secs(1)).into()).await;
        }
    })
}

/// A twentieth of the budget, between 6 s and 1 min, and never more than half of it. The
/// final model and the test evaluation have their own time kept back (estimated from the runs
/// of the current best, see `keep_for_final_model`): the reserve is the report's and the
/// margin for what those estimates miss.
fn reserve_for(total: Duration) -> Duration {
    total.mul_f64(0.05).clamp(Duration::from_secs(6), Duration::from_secs(60)).min(total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_scales_and_is_bounded() {
        assert_eq!(reserve_for(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(reserve_for(Duration::from_secs(600)), Duration::from_secs(30));
        assert_eq!(reserve_for(Duration::from_secs(6 * 3600)), Duration::from_secs(60));
        assert_eq!(reserve_for(Duration::from_secs(8)), Duration::from_secs(4));
    }

    #[test]
    fn time_for_the_final_model_is_kept_back_unless_it_is_too_much() {
        let b = Budget::new(Some(Duration::from_secs(400)), Duration::ZERO);
        let before = b.loop_left().unwrap();
        let kept = |b: &Budget| before - b.loop_left().unwrap();
        b.keep_for_final_model(Duration::from_secs(30), Duration::from_secs(10));
        assert!(kept(&b) > Duration::from_secs(29) && kept(&b) < Duration::from_secs(31), "{:?}", kept(&b));
        // Over a quarter: no final model is made, but the selected iteration is still scored.
        b.clone().keep_for_final_model(Duration::from_secs(101), Duration::from_secs(40));
        assert!(kept(&b) > Duration::from_secs(39) && kept(&b) < Duration::from_secs(41), "{:?}", kept(&b));
        b.keep_for_final_model(Duration::from_secs(301), Duration::from_secs(300));
        assert!(kept(&b) > Duration::from_secs(199) && kept(&b) < Duration::from_secs(201), "at most half");
    }

    #[tokio::test]
    async fn the_loop_ends_when_the_time_kept_back_grows_past_now() {
        // 26 s into a 40 s budget: the loop's deadline is 8 s away (6 s reserve)...
        let start = Instant::now() - Duration::from_secs(26);
        let b = Budget::starting_at(start, Some(Duration::from_secs(40)), Duration::ZERO);
        let token = CancellationToken::new();
        let watch = end_the_loop_on_time(b.clone(), token.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!token.is_cancelled());
        // ...until a new best needs 10 s kept back: it is then past, and running work stops.
        b.keep_for_final_model(Duration::from_secs(10), Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(3), token.cancelled())
            .await
            .expect("cancelled within about a second, not at the deadline the loop started with");
        watch.await.unwrap();
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
