//! Which iteration a run has chosen so far: the one `best` points at, the one scored on the
//! test split and made into the final model. One rule, applied by the loop as it records
//! iterations, by `resume` and by the report, all from the records in iteration order.
//!
//! The choice is the better, on validation, of the best single model and the current ensemble.
//! Ensembles are selected again every few iterations over the candidates of the moment, and
//! each selection replaces the one before: its score was found by choosing among candidates on
//! these very validation rows, so the best of many such scores says more about luck than about
//! the blend (on small data the earlier, higher-scoring selections tested worse than the later
//! ones). A selection that settles on a blend made before keeps that one; one that settles on a
//! single model leaves no ensemble standing.
//!
//! "Better" is [`Metric::ahead`]: equal scores are ordered by their tie-break (the log loss of
//! classification probabilities), and without one the earlier iteration stays chosen.

use crate::journal::IterationRecord;
use crate::metric::{Metric, Standing};
use crate::search::Operation;

/// The choice among the records seen so far.
#[derive(Debug, Clone)]
pub struct Choice {
    metric: Metric,
    split: Option<u32>,
    single: Option<(u32, Standing)>,
    ensemble: Option<(u32, Standing)>,
    /// Ensembles made on the split in force: iteration, standing, members as recorded.
    made: Vec<(u32, Standing, Vec<crate::steps::Hyperparameter>)>,
}

impl Choice {
    pub fn new(metric: Metric) -> Self {
        Self { metric, split: None, single: None, ensemble: None, made: Vec::new() }
    }

    /// The choice after each of `records`, in order.
    pub fn of(metric: Metric, records: &[IterationRecord]) -> Self {
        let mut choice = Self::new(metric);
        for r in records {
            choice.observe(r);
        }
        choice
    }

    /// Takes the next record (in iteration order) into account.
    pub fn observe(&mut self, r: &IterationRecord) {
        if self.split != Some(r.split_id) {
            // Scores on another split do not compare: the choice starts again on this one.
            *self = Self { split: Some(r.split_id), ..Self::new(self.metric) };
        }
        let score = r.standing().filter(|_| r.succeeded());
        match r.operation {
            Operation::Refit => {}
            Operation::Ensemble => {
                if let Some(score) = score {
                    self.ensemble = Some((r.iteration, score));
                    self.made.push((r.iteration, score, sorted(&r.hyperparameters)));
                } else if is_selection(r) {
                    let members = sorted(&r.hyperparameters);
                    self.ensemble =
                        self.made.iter().rev().find(|(_, _, m)| *m == members).map(|(n, s, _)| (*n, *s));
                }
            }
            _ => {
                if let Some(score) = score
                    && self.single.is_none_or(|(_, b)| self.metric.ahead(score, b))
                {
                    self.single = Some((r.iteration, score));
                }
            }
        }
    }

    /// The chosen iteration and its validation score.
    pub fn best(&self) -> Option<(u32, f64)> {
        let (n, s) = match (self.single, self.ensemble) {
            (Some(s), Some(e)) => Some(if self.metric.ahead(e.1, s.1) { e } else { s }),
            (s, e) => s.or(e),
        }?;
        Some((n, s.score))
    }
}

/// Whether an ensemble that made no snapshot still settled on something: a blend made before,
/// or a single model, recorded as its members.
fn is_selection(r: &IterationRecord) -> bool {
    r.status.starts_with("skipped") && !r.hyperparameters.is_empty()
}

fn sorted(h: &[crate::steps::Hyperparameter]) -> Vec<crate::steps::Hyperparameter> {
    let mut h = h.to_vec();
    h.sort_by(|a, b| a.name.cmp(&b.name));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::Hyperparameter;

    fn record(
        n: u32,
        operation: Operation,
        status: &str,
        score: Option<f64>,
        members: &[u32],
    ) -> IterationRecord {
        IterationRecord {
            operation,
            status: status.into(),
            hyperparameters: members
                .iter()
                .map(|m| Hyperparameter { name: format!("iter-{m:04}"), value: "1/2".into() })
                .collect(),
            ..IterationRecord::for_tests(n, score)
        }
    }

    #[test]
    fn a_later_selection_replaces_an_earlier_ensemble_even_when_it_scores_lower() {
        let m = Metric::Accuracy;
        let mut records = vec![
            record(1, Operation::Draft, "succeeded", Some(0.80), &[]),
            record(2, Operation::Draft, "succeeded", Some(0.82), &[]),
            record(3, Operation::Ensemble, "succeeded", Some(0.90), &[1, 2]),
        ];
        assert_eq!(Choice::of(m, &records).best(), Some((3, 0.90)));
        records.push(record(4, Operation::Improve, "succeeded", Some(0.85), &[]));
        records.push(record(5, Operation::Ensemble, "succeeded", Some(0.88), &[2, 4]));
        assert_eq!(Choice::of(m, &records).best(), Some((5, 0.88)), "the newer selection stands");
        // A selection that lands on a blend made before brings that one back.
        records.push(record(6, Operation::Ensemble, "skipped: the same blend as iteration 3", None, &[2, 1]));
        assert_eq!(Choice::of(m, &records).best(), Some((3, 0.90)));
        // One that lands on a single model leaves the best single model.
        records.push(record(
            7,
            Operation::Ensemble,
            "skipped: the selection kept only iter-0004",
            None,
            &[4],
        ));
        assert_eq!(Choice::of(m, &records).best(), Some((4, 0.85)));
        // Nothing to choose from, a failure or a cut changes nothing; a refit is not a candidate.
        records.push(record(8, Operation::Ensemble, "skipped: 1 candidate", None, &[]));
        records.push(record(9, Operation::Ensemble, "failed at ensemble inference: x", None, &[1, 4]));
        records.push(record(10, Operation::Refit, "succeeded", None, &[]));
        assert_eq!(Choice::of(m, &records).best(), Some((4, 0.85)));
    }

    #[test]
    fn equal_scores_are_ordered_by_the_tiebreak() {
        let m = Metric::Accuracy;
        let with = |mut r: IterationRecord, tiebreak: Option<f64>| {
            r.validation_tiebreak = tiebreak;
            r
        };
        let mut records = vec![
            with(record(1, Operation::Draft, "succeeded", Some(1.0), &[]), Some(0.3)),
            with(record(2, Operation::Draft, "succeeded", Some(1.0), &[]), Some(0.1)),
            with(record(3, Operation::Improve, "succeeded", Some(1.0), &[]), None),
            with(record(4, Operation::Improve, "succeeded", Some(1.0), &[]), Some(0.2)),
        ];
        assert_eq!(Choice::of(m, &records).best(), Some((2, 1.0)), "the surer of the perfect ones");
        records.push(with(record(5, Operation::Ensemble, "succeeded", Some(1.0), &[2, 4]), Some(0.05)));
        assert_eq!(Choice::of(m, &records).best(), Some((5, 1.0)));
        // Journals from before the tie-break was recorded: the first to reach a score stays.
        let old: Vec<IterationRecord> = records.iter().map(|r| with(r.clone(), None)).collect();
        assert_eq!(Choice::of(m, &old).best(), Some((1, 1.0)));
    }

    #[test]
    fn single_models_compete_with_the_current_ensemble_and_a_new_split_starts_over() {
        let m = Metric::Rmse;
        let mut records = vec![
            record(1, Operation::Draft, "succeeded", Some(50.0), &[]),
            record(2, Operation::Draft, "succeeded", Some(40.0), &[]),
            record(3, Operation::Ensemble, "succeeded", Some(41.0), &[1, 2]),
        ];
        assert_eq!(Choice::of(m, &records).best(), Some((2, 40.0)), "lower is better");
        let mut moved = record(4, Operation::Draft, "succeeded", Some(60.0), &[]);
        moved.split_id = 2;
        records.push(moved);
        assert_eq!(Choice::of(m, &records).best(), Some((4, 60.0)));
    }
}
