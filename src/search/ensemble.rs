//! Greedy ensemble selection with replacement (Caruana et al., 2004), as AutoGluon's weighted
//! ensemble does it: starting from nothing, repeatedly add the candidate (possibly one already
//! in) whose addition makes the averaged predictions score best on the validation rows; keep
//! the best ensemble seen. Weights are the number of times each candidate was added. Blends of
//! equal score rank by the log loss of their averaged probabilities ([`Standing`]): with
//! accuracy on a small split every addition may tie, and the first candidate in the list is no
//! reason to choose.

use std::ops::Range;

use crate::data::TargetInfo;
use crate::metric::{self, Metric, Standing};
use crate::scoring::{Predicted, Truth};

/// One candidate's validation predictions.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub iteration: u32,
    pub predicted: Predicted,
}

/// The selected ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct Blend {
    /// `(iteration, times chosen)`, by iteration.
    pub weights: Vec<(u32, u32)>,
    /// Validation score of the blend (as computed here; the runner scores the real run too).
    pub score: f64,
    /// What ordered it among blends of the same score.
    pub tiebreak: Option<f64>,
}

impl Blend {
    pub fn members(&self) -> usize {
        self.weights.len()
    }
}

/// Selects an ensemble of `candidates` in at most `rounds` additions. `folds` are the ranges of
/// `truth` that cross-validation scored one by one (a blend scores the mean over them, as a
/// candidate did); none for a held-out split. `None` if fewer than two candidates are usable,
/// nothing can be scored, or `stop` says time is up.
pub fn select(
    candidates: &[Candidate],
    target: &TargetInfo,
    truth: &Truth,
    folds: &[Range<usize>],
    rounds: usize,
    stop: &dyn Fn() -> bool,
) -> Option<Blend> {
    if candidates.len() < 2 || truth.is_empty() {
        return None;
    }
    let (matrices, width) = matrices(candidates, target, truth)?;
    let rows = truth.len();
    let scorer = FoldScorer::new(target, truth, folds, width)?;
    let ahead = |a: Standing, b: Standing| target.metric.ahead(a, b);
    let mut sum = vec![0.0; rows * width];
    let mut trial = vec![0.0; rows * width];
    let mut counts = vec![0u32; candidates.len()];
    let mut best: Option<(Standing, Vec<u32>)> = None;
    for round in 1..=rounds.max(1) {
        if stop() {
            return None;
        }
        let mut pick: Option<(usize, Standing)> = None;
        for (i, m) in matrices.iter().enumerate() {
            for ((t, s), v) in trial.iter_mut().zip(&sum).zip(m) {
                *t = s + v;
            }
            let Some(standing) = scorer.standing(&trial, round as u32) else { continue };
            if pick.is_none_or(|(_, s)| ahead(standing, s)) {
                pick = Some((i, standing));
            }
        }
        let (i, standing) = pick?;
        for (s, v) in sum.iter_mut().zip(&matrices[i]) {
            *s += v;
        }
        counts[i] += 1;
        if best.as_ref().is_none_or(|(s, _)| ahead(standing, *s)) {
            best = Some((standing, counts.clone()));
        }
    }
    let (standing, counts) = best?;
    let weights: Vec<(u32, u32)> =
        candidates.iter().zip(&counts).filter(|(_, n)| **n > 0).map(|(c, n)| (c.iteration, *n)).collect();
    Some(Blend { weights, score: standing.score, tiebreak: standing.tiebreak })
}

/// The validation score of `weights` (`(iteration, times chosen)`) over `candidates`: what
/// [`select`] found, computed in one fixed order so that an audit gets the same bits.
pub fn blend_score(
    candidates: &[Candidate],
    weights: &[(u32, u32)],
    target: &TargetInfo,
    truth: &Truth,
    folds: &[Range<usize>],
) -> Option<Standing> {
    let (matrices, width) = matrices(candidates, target, truth)?;
    let scorer = FoldScorer::new(target, truth, folds, width)?;
    let mut sum = vec![0.0; truth.len() * width];
    let mut count = 0;
    for (iteration, times) in weights {
        let i = candidates.iter().position(|c| c.iteration == *iteration)?;
        for _ in 0..*times {
            for (s, v) in sum.iter_mut().zip(&matrices[i]) {
                *s += v;
            }
        }
        count += times;
    }
    scorer.standing(&sum, count)
}

/// Each candidate's predictions as one flat rows × width matrix, and the width.
fn matrices(candidates: &[Candidate], target: &TargetInfo, truth: &Truth) -> Option<(Vec<Vec<f64>>, usize)> {
    let width = match truth {
        Truth::Values(_) => 1,
        Truth::Classes(_) => target.classes.len(),
    };
    let matrices: Vec<Vec<f64>> = candidates
        .iter()
        .map(|c| c.predicted.probability_rows(&target.classes).into_iter().flatten().collect::<Vec<f64>>())
        .collect();
    if width == 0 || matrices.iter().any(|m| m.len() != truth.len() * width) {
        return None;
    }
    Some((matrices, width))
}

/// The mean of [`Scorer`]s over folds (one fold: the whole truth), and the tie-break over all
/// rows (as [`crate::scoring::score_folds`] computes it).
struct FoldScorer<'a> {
    folds: Vec<(Range<usize>, Scorer<'a>)>,
    width: usize,
    whole: Option<Scorer<'a>>,
}

impl<'a> FoldScorer<'a> {
    fn new(target: &TargetInfo, truth: &'a Truth, folds: &[Range<usize>], width: usize) -> Option<Self> {
        let whole: Vec<Range<usize>> = std::iter::once(0..truth.len()).collect();
        let ranges = if folds.len() <= 1 { &whole[..] } else { folds };
        let folds = ranges
            .iter()
            .map(|r| Scorer::new(target, truth, r.clone(), &target.classes).map(|s| (r.clone(), s)))
            .collect::<Option<Vec<_>>>()?;
        let whole = if target.metric.has_tiebreak() {
            Some(Scorer::new(target, truth, 0..truth.len(), &target.classes)?)
        } else {
            None
        };
        Some(Self { folds, width, whole })
    }

    fn standing(&self, sum: &[f64], count: u32) -> Option<Standing> {
        let w = self.width;
        let mut total = 0.0;
        for (range, scorer) in &self.folds {
            total += scorer.score(&sum[range.start * w..range.end * w], count)?;
        }
        let tiebreak = self.whole.as_ref().and_then(|s| s.log_loss(sum, count)).filter(|v| v.is_finite());
        Some(Standing::new(total / self.folds.len() as f64, tiebreak))
    }
}

/// Scores a blend (a flat sum of `count` candidates' rows) without building labels: the same
/// definitions as [`crate::metric`], computed straight from the summed probabilities.
struct Scorer<'a> {
    metric: Metric,
    values: Option<&'a [f64]>,
    /// Each row's true class, as an index into the task's classes.
    classes: Vec<usize>,
    width: usize,
    positive: usize,
}

impl<'a> Scorer<'a> {
    /// A scorer for the rows `rows` of `truth`.
    fn new(target: &TargetInfo, truth: &'a Truth, rows: Range<usize>, classes: &[String]) -> Option<Self> {
        match truth {
            Truth::Values(v) => Some(Self {
                metric: target.metric,
                values: Some(&v[rows]),
                classes: vec![],
                width: 1,
                positive: 0,
            }),
            Truth::Classes(labels) => {
                let index: Option<Vec<usize>> =
                    labels[rows].iter().map(|l| classes.iter().position(|c| c == l)).collect();
                let positive = target
                    .positive
                    .as_ref()
                    .and_then(|p| classes.iter().position(|c| c == p))
                    .unwrap_or(classes.len().saturating_sub(1));
                Some(Self {
                    metric: target.metric,
                    values: None,
                    classes: index?,
                    width: classes.len(),
                    positive,
                })
            }
        }
    }

    fn score(&self, sum: &[f64], count: u32) -> Option<f64> {
        let n = f64::from(count);
        if let Some(values) = self.values {
            let predicted: Vec<f64> = sum.iter().map(|v| v / n).collect();
            return metric::regression(self.metric, values, &predicted).ok();
        }
        let w = self.width;
        let row = |r: usize| &sum[r * w..(r + 1) * w];
        let argmax = |r: &[f64]| r.iter().enumerate().fold(0, |b, (i, v)| if *v > r[b] { i } else { b });
        let rows = self.classes.len();
        match self.metric {
            Metric::Accuracy => {
                Some((0..rows).filter(|&r| argmax(row(r)) == self.classes[r]).count() as f64 / rows as f64)
            }
            Metric::MacroF1 => {
                let mut tp = vec![0usize; w];
                let mut called = vec![0usize; w];
                let mut actual = vec![0usize; w];
                for r in 0..rows {
                    let p = argmax(row(r));
                    called[p] += 1;
                    actual[self.classes[r]] += 1;
                    if p == self.classes[r] {
                        tp[p] += 1;
                    }
                }
                let present: Vec<usize> = (0..w).filter(|&c| called[c] + actual[c] > 0).collect();
                let total: f64 = present
                    .iter()
                    .map(|&c| {
                        let d = (called[c] + actual[c]) as f64;
                        if d == 0.0 { 0.0 } else { 2.0 * tp[c] as f64 / d }
                    })
                    .sum();
                Some(total / present.len().max(1) as f64)
            }
            Metric::RocAuc => {
                let auc = |class: usize| {
                    let is_pos: Vec<bool> = self.classes.iter().map(|&c| c == class).collect();
                    let scores: Vec<f64> = (0..rows).map(|r| row(r)[class]).collect();
                    let positives = is_pos.iter().filter(|p| **p).count();
                    (positives > 0 && positives < rows).then(|| metric::binary_auc(&is_pos, &scores))
                };
                if w <= 2 {
                    auc(self.positive)
                } else {
                    let each: Option<Vec<f64>> = (0..w).map(auc).collect();
                    each.map(|a| a.iter().sum::<f64>() / w as f64)
                }
            }
            Metric::LogLoss => self.log_loss(sum, count),
            _ => None,
        }
    }

    fn log_loss(&self, sum: &[f64], count: u32) -> Option<f64> {
        let (n, w, rows) = (f64::from(count), self.width, self.classes.len());
        (self.values.is_none() && rows > 0)
            .then(|| metric::mean_log_loss((0..rows).map(|r| sum[r * w + self.classes[r]] / n)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::task::TaskKind;

    fn target(kind: TaskKind, metric: Metric, classes: &[&str]) -> TargetInfo {
        TargetInfo {
            column: "y".into(),
            kind,
            metric,
            classes: classes.iter().map(|c| c.to_string()).collect(),
            positive: None,
        }
    }

    #[test]
    fn two_complementary_regressors_beat_either_alone() {
        // Each is off by +1 or -1 on alternate rows, in opposite directions: their mean is exact.
        let truth = Truth::Values(vec![1.0, 2.0, 3.0, 4.0]);
        let a = Candidate { iteration: 1, predicted: Predicted::Values(vec![2.0, 1.0, 4.0, 3.0]) };
        let b = Candidate { iteration: 2, predicted: Predicted::Values(vec![0.0, 3.0, 2.0, 5.0]) };
        let worse = Candidate { iteration: 3, predicted: Predicted::Values(vec![9.0, 9.0, 9.0, 9.0]) };
        let blend = select(
            &[a, b, worse],
            &target(TaskKind::Regression, Metric::Rmse, &[]),
            &truth,
            &[],
            10,
            &|| false,
        )
        .unwrap();
        assert_eq!(blend.score, 0.0);
        assert_eq!(blend.weights, vec![(1, 1), (2, 1)]);
    }

    #[test]
    fn with_folds_a_blend_scores_the_mean_of_the_folds() {
        let t = target(TaskKind::Regression, Metric::Mae, &[]);
        let truth = Truth::Values(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let a = Candidate { iteration: 1, predicted: Predicted::Values(vec![1.0, 3.0, 3.0, 4.0, 8.0]) };
        let b = Candidate { iteration: 2, predicted: Predicted::Values(vec![1.0, 1.0, 3.0, 4.0, 2.0]) };
        let folds = [0..2, 2..5];
        let blend = select(&[a.clone(), b.clone()], &t, &truth, &folds, 10, &|| false).unwrap();
        assert_eq!(blend.score, 0.0, "their mean is exact on every row");
        let alone = blend_score(&[a.clone(), b.clone()], &[(1, 1)], &t, &truth, &folds).unwrap().score;
        // Fold 1: MAE 0.5; fold 2: MAE 1.0 (pooled it would be 0.8).
        assert!((alone - 0.75).abs() < 1e-12, "{alone}");
        let recomputed = blend_score(&[a, b], &blend.weights, &t, &truth, &folds).unwrap().score;
        assert_eq!(recomputed.to_bits(), blend.score.to_bits());
    }

    #[test]
    fn classifiers_blend_their_probabilities() {
        let classes = ["a", "b"];
        let truth = Truth::Classes(vec!["a".into(), "b".into(), "a".into(), "b".into()]);
        let probs = |pa: [f64; 4]| {
            let labels =
                pa.iter().map(|p| if *p >= 0.5 { "a".to_string() } else { "b".to_string() }).collect();
            Predicted::Classes {
                labels,
                probabilities: BTreeMap::from([
                    ("a".to_string(), pa.to_vec()),
                    ("b".to_string(), pa.iter().map(|p| 1.0 - p).collect()),
                ]),
            }
        };
        // Each gets one row wrong, confidently; together they get all four right.
        let x = Candidate { iteration: 1, predicted: probs([0.9, 0.6, 0.9, 0.1]) };
        let y = Candidate { iteration: 2, predicted: probs([0.9, 0.1, 0.4, 0.1]) };
        let t = target(TaskKind::Binary, Metric::Accuracy, &classes);
        let blend = select(&[x.clone(), y.clone()], &t, &truth, &[], 5, &|| false).unwrap();
        assert_eq!(blend.score, 1.0);
        assert_eq!(blend.members(), 2);
        // The fast scorer agrees with the metric module on every metric it serves.
        for metric in [Metric::Accuracy, Metric::MacroF1, Metric::RocAuc, Metric::LogLoss] {
            let t = target(TaskKind::Binary, metric, &classes);
            let scorer = Scorer::new(&t, &truth, 0..4, &t.classes).unwrap();
            let flat: Vec<f64> = x.predicted.probability_rows(&t.classes).into_iter().flatten().collect();
            let fast = scorer.score(&flat, 1).unwrap();
            let Predicted::Classes { labels, probabilities } = &x.predicted else { unreachable!() };
            let Truth::Classes(truth_labels) = &truth else { unreachable!() };
            let slow = metric::classification(
                metric,
                truth_labels,
                labels,
                probabilities,
                metric::Classes { all: &t.classes, positive: None },
            )
            .unwrap();
            assert!((fast - slow).abs() < 1e-12, "{metric}: {fast} vs {slow}");
        }
        assert!(select(&[x, y], &t, &truth, &[], 5, &|| true).is_none(), "stopped");
    }

    #[test]
    fn among_blends_of_equal_accuracy_the_surer_one_is_chosen() {
        let classes = ["a", "b"];
        let truth = Truth::Classes(vec!["a".into(), "b".into(), "a".into(), "b".into()]);
        let sure_of_a = |p: f64| Predicted::Classes {
            labels: vec!["a".into(), "b".into(), "a".into(), "b".into()],
            probabilities: BTreeMap::from([
                ("a".to_string(), vec![p, 1.0 - p, p, 1.0 - p]),
                ("b".to_string(), vec![1.0 - p, p, 1.0 - p, p]),
            ]),
        };
        // Both get every row right; the first in the list is the less sure.
        let unsure = Candidate { iteration: 1, predicted: sure_of_a(0.6) };
        let sure = Candidate { iteration: 2, predicted: sure_of_a(0.9) };
        let t = target(TaskKind::Binary, Metric::Accuracy, &classes);
        let blend = select(&[unsure.clone(), sure.clone()], &t, &truth, &[], 5, &|| false).unwrap();
        assert_eq!(blend.weights, vec![(2, 1)], "{blend:?}");
        assert_eq!(blend.score, 1.0);
        let expected = -(0.9f64.ln());
        assert!((blend.tiebreak.unwrap() - expected).abs() < 1e-12, "{blend:?}");
        let again = blend_score(&[unsure, sure], &blend.weights, &t, &truth, &[0..2, 2..4]).unwrap();
        assert_eq!(
            again.tiebreak.map(f64::to_bits),
            blend.tiebreak.map(f64::to_bits),
            "pooled over the folds"
        );
    }
}
