//! A run that only fails: when every iteration for a long while has failed, another attempt
//! is unlikely to differ (the data trips up every script the agent writes, the sandbox refuses
//! them all), and an unattended run would spend its whole budget committing failures. The run
//! stops instead, scoring what did succeed earlier, and says what the failures were.

use std::path::Path;

use crate::journal::IterationRecord;
use crate::search::Operation;
use crate::steps::Failure;

/// The iterations that failed since the last one that was scored, and the last of them.
/// Iterations cut by the budget or skipped, and the runner's own refits, neither count nor
/// break the streak.
fn streak<'a>(records: impl DoubleEndedIterator<Item = &'a IterationRecord>) -> (u32, Option<u32>) {
    let mut count = 0;
    let mut last = None;
    for r in records.rev().filter(|r| r.operation != Operation::Refit) {
        if r.succeeded() {
            break;
        }
        if r.status.starts_with("failed") {
            count += 1;
            last = last.or(Some(r.iteration));
        }
    }
    (count, last)
}

/// Why the run stops when its last `limit` (or more) iterations failed; `None` otherwise or
/// when `limit` is 0 (never). `iterations` is the run's directory of iterations, where the
/// last failure's record is read for its error line.
pub fn stuck(records: &[IterationRecord], limit: u32, iterations: &Path) -> Option<String> {
    let (count, last) = streak(records.iter());
    if limit == 0 || count < limit {
        return None;
    }
    let last = last?;
    let record = &records[last as usize - 1];
    let dir = iterations.join(crate::snapshot::tag_name(last));
    let error = std::fs::read_to_string(dir.join("steps").join("failure.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Failure>(&t).ok())
        .and_then(|f| error_line(&f.stderr_tail))
        .map(|l| format!(" ({l})"))
        .unwrap_or_default();
    Some(format!(
        "{count} iterations in a row failed, the last {}{error}; see `{}`, or raise [loop] failures_in_a_row (0: never stop)",
        record.status.lines().next().unwrap_or_default().trim_end_matches(':'),
        dir.join("logs").display(),
    ))
}

/// Whether the run may be stuck once the iterations in flight are committed: `finished` are
/// those that ended after an earlier one still running, in order. Their failures count as if
/// committed (the one still running may yet break the streak), so no further iteration starts
/// on a streak the run would stop at.
pub fn may_be_stuck<'a>(
    records: &'a [IterationRecord],
    finished: impl DoubleEndedIterator<Item = &'a IterationRecord>,
    limit: u32,
) -> bool {
    limit != 0 && streak(records.iter().chain(finished)).0 >= limit
}

/// The line of a script's error output that names the error (Python's last line), cut short
/// and with control characters blanked: the text is the agent's code's, not the runner's (the
/// final evaluation names its failure with it too).
pub(super) fn error_line(stderr: &str) -> Option<String> {
    let line = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let clean: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    Some(match clean.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(iteration: u32, status: &str, operation: Operation) -> IterationRecord {
        IterationRecord {
            iteration,
            status: status.into(),
            operation,
            validation_score: (status == "succeeded").then_some(0.5),
            ..Default::default()
        }
    }

    #[test]
    fn failures_since_the_last_score_count_and_cuts_do_not() {
        let none = Path::new("/nonexistent");
        let mut records = vec![record(1, "succeeded", Operation::Draft)];
        for n in 2..=4 {
            records.push(record(n, "failed at train: exit 1", Operation::Draft));
        }
        records.push(record(5, "cut: no time left to run train", Operation::Draft));
        records.push(record(6, "failed at train: exit 1", Operation::Refit));
        assert_eq!(streak(records.iter()), (3, Some(4)));
        assert!(stuck(&records, 4, none).is_none());
        let why = stuck(&records, 3, none).unwrap();
        assert!(
            why.starts_with("3 iterations in a row failed, the last failed at train: exit 1; see `"),
            "{why}"
        );
        assert!(why.contains("iter-0004"), "{why}");
        assert!(stuck(&records, 0, none).is_none(), "0 never stops");
        records.push(record(7, "succeeded", Operation::Improve));
        assert_eq!(streak(records.iter()), (0, None));
    }

    #[test]
    fn failures_that_ended_while_an_earlier_iteration_runs_count_toward_the_streak() {
        let failed = |n| record(n, "failed at train: exit 1", Operation::Draft);
        let committed: Vec<_> = (1..=3).map(failed).collect();
        let ended = [failed(5)];
        assert!(may_be_stuck(&committed, ended.iter(), 4));
        assert!(!may_be_stuck(&committed, ended.iter(), 5));
        assert!(!may_be_stuck(&committed, ended.iter(), 0), "0 never stops");
        let scored = [record(5, "succeeded", Operation::Improve)];
        assert!(!may_be_stuck(&committed, scored.iter(), 3), "a later score breaks the streak");
    }

    #[test]
    fn the_error_named_is_the_last_line_of_the_scripts_output_made_harmless() {
        let tail = "Traceback (most recent call last):\n  File \"/work/train.py\"\nValueError: Mixed timezones\x1b[2J\n\n";
        assert_eq!(error_line(tail).unwrap(), "ValueError: Mixed timezones [2J");
        let long = "x".repeat(500);
        assert_eq!(error_line(&long).unwrap().chars().count(), 201);
        assert_eq!(error_line(" \n"), None);
    }

    #[test]
    fn the_last_failures_record_gives_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let steps = dir.path().join(crate::snapshot::tag_name(2)).join("steps");
        std::fs::create_dir_all(&steps).unwrap();
        let failure = Failure {
            step: "train".into(),
            script: "/work/train.py".into(),
            summary: "exit 1".into(),
            stderr_tail: "Traceback\nKeyError: 'when'\n".into(),
            stdout_tail: String::new(),
        };
        std::fs::write(steps.join("failure.json"), serde_json::to_string(&failure).unwrap()).unwrap();
        let records: Vec<_> =
            (1..=2).map(|n| record(n, "failed at train: exit 1", Operation::Draft)).collect();
        let why = stuck(&records, 2, dir.path()).unwrap();
        assert!(why.contains("exit 1 (KeyError: 'when'); see"), "{why}");
    }
}
