//! Greedy ensemble selection with replacement (Caruana et al., 2004), as AutoGluon's weighted
//! ensemble does it: starting from nothing, repeatedly add the candidate (possibly one already
//! in) whose addition makes the averaged predictions score best on the validation rows; keep
//! the best ensemble seen. Weights are the number of times each candidate was added.

use crate::data::TargetInfo;
use crate::metric::{self, Metric};
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
}

impl Blend {
    pub fn members(&self) -> usize {
        self.weights.len()
    }
}

/// Selects an ensemble of `candidates` in at most `rounds` additions. `None` if fewer than two
/// candidates are usable, nothing can be scored, or `stop` says time is up.
pub fn select(
    candidates: &[Candidate],
    target: &TargetInfo,
    truth: &Truth,
    rounds: usize,
    stop: &dyn Fn() -> bool,
) -> Option<Blend> {
    if candidates.len() < 2 || truth.is_empty() {
        return None;
    }
    let rows = truth.len();
    let classes: Vec<String> = target.classes.clone();
    let width = match truth {
        Truth::Values(_) => 1,
        Truth::Classes(_) => classes.len(),
    };
    // Each candidate as one flat rows × width matrix.
    let matrices: Vec<Vec<f64>> = candidates
        .iter()
        .map(|c| c.predicted.probability_rows(&classes).into_iter().flatten().collect::<Vec<f64>>())
        .collect();
    if width == 0 || matrices.iter().any(|m| m.len() != rows * width) {
        return None;
    }
    let scorer = Scorer::new(target, truth, &classes)?;
    let better = |a: f64, b: f64| target.metric.better(a, b);
    let mut sum = vec![0.0; rows * width];
    let mut trial = vec![0.0; rows * width];
    let mut counts = vec![0u32; candidates.len()];
    let mut best: Option<(f64, Vec<u32>)> = None;
    for round in 1..=rounds.max(1) {
        if stop() {
            return None;
        }
        let mut pick: Option<(usize, f64)> = None;
        for (i, m) in matrices.iter().enumerate() {
            for ((t, s), v) in trial.iter_mut().zip(&sum).zip(m) {
                *t = s + v;
            }
            let Some(score) = scorer.score(&trial, round as u32) else { continue };
            if pick.is_none_or(|(_, s)| better(score, s)) {
                pick = Some((i, score));
            }
        }
        let (i, score) = pick?;
        for (s, v) in sum.iter_mut().zip(&matrices[i]) {
            *s += v;
        }
        counts[i] += 1;
        if best.as_ref().is_none_or(|(s, _)| better(score, *s)) {
            best = Some((score, counts.clone()));
        }
    }
    let (score, counts) = best?;
    let weights: Vec<(u32, u32)> =
        candidates.iter().zip(&counts).filter(|(_, n)| **n > 0).map(|(c, n)| (c.iteration, *n)).collect();
    Some(Blend { weights, score })
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
    fn new(target: &TargetInfo, truth: &'a Truth, classes: &[String]) -> Option<Self> {
        match truth {
            Truth::Values(v) => {
                Some(Self { metric: target.metric, values: Some(v), classes: vec![], width: 1, positive: 0 })
            }
            Truth::Classes(labels) => {
                let index: Option<Vec<usize>> =
                    labels.iter().map(|l| classes.iter().position(|c| c == l)).collect();
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
            Metric::LogLoss => {
                let eps = f64::EPSILON;
                let total: f64 =
                    (0..rows).map(|r| -(row(r)[self.classes[r]] / n).clamp(eps, 1.0 - eps).ln()).sum();
                Some(total / rows as f64)
            }
            _ => None,
        }
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
        let blend =
            select(&[a, b, worse], &target(TaskKind::Regression, Metric::Rmse, &[]), &truth, 10, &|| false)
                .unwrap();
        assert_eq!(blend.score, 0.0);
        assert_eq!(blend.weights, vec![(1, 1), (2, 1)]);
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
        let blend = select(&[x.clone(), y.clone()], &t, &truth, 5, &|| false).unwrap();
        assert_eq!(blend.score, 1.0);
        assert_eq!(blend.members(), 2);
        // The fast scorer agrees with the metric module on every metric it serves.
        for metric in [Metric::Accuracy, Metric::MacroF1, Metric::RocAuc, Metric::LogLoss] {
            let t = target(TaskKind::Binary, metric, &classes);
            let scorer = Scorer::new(&t, &truth, &t.classes).unwrap();
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
        assert!(select(&[x, y], &t, &truth, 5, &|| true).is_none(), "stopped");
    }
}
