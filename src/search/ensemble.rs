//! Greedy ensemble selection with replacement (Caruana et al., 2004), as AutoGluon's weighted
//! ensemble does it: starting from nothing, repeatedly add the candidate (possibly one already
//! in) whose addition makes the averaged predictions score best on the validation rows; keep
//! the best ensemble seen. Weights are the number of times each candidate was added.

use std::collections::BTreeMap;

use crate::data::TargetInfo;
use crate::metric::{self, Classes};
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
/// candidates are usable or nothing can be scored.
pub fn select(candidates: &[Candidate], target: &TargetInfo, truth: &Truth, rounds: usize) -> Option<Blend> {
    if candidates.len() < 2 || truth.is_empty() {
        return None;
    }
    let classes: Vec<String> = target.classes.clone();
    let matrices: Vec<Vec<Vec<f64>>> =
        candidates.iter().map(|c| c.predicted.probability_rows(&classes)).collect();
    let width = matrices[0].first().map_or(0, Vec::len);
    let rows = truth.len();
    if matrices.iter().any(|m| m.len() != rows || m.iter().any(|r| r.len() != width)) {
        return None;
    }
    let score_of = |sum: &[Vec<f64>], count: u32| -> Option<f64> {
        let mean = |r: &Vec<f64>| r.iter().map(|v| v / f64::from(count)).collect::<Vec<f64>>();
        match truth {
            Truth::Values(values) => {
                let predicted: Vec<f64> = sum.iter().map(|r| r[0] / f64::from(count)).collect();
                metric::regression(target.metric, values, &predicted).ok()
            }
            Truth::Classes(labels) => {
                let averaged: Vec<Vec<f64>> = sum.iter().map(mean).collect();
                let predicted: Vec<String> = averaged
                    .iter()
                    .map(|r| {
                        let best = r.iter().enumerate().fold(0, |b, (i, v)| if *v > r[b] { i } else { b });
                        classes[best].clone()
                    })
                    .collect();
                let probabilities: BTreeMap<String, Vec<f64>> = classes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), averaged.iter().map(|r| r[i]).collect()))
                    .collect();
                let spec = Classes { all: &classes, positive: target.positive.as_deref() };
                metric::classification(target.metric, labels, &predicted, &probabilities, spec).ok()
            }
        }
    };
    let better = |a: f64, b: f64| target.metric.better(a, b);
    let mut sum = vec![vec![0.0; width]; rows];
    let mut counts = vec![0u32; candidates.len()];
    let mut best: Option<(f64, Vec<u32>)> = None;
    for round in 1..=rounds.max(1) {
        let mut pick: Option<(usize, f64)> = None;
        for (i, m) in matrices.iter().enumerate() {
            let trial: Vec<Vec<f64>> =
                sum.iter().zip(m).map(|(s, r)| s.iter().zip(r).map(|(a, b)| a + b).collect()).collect();
            let Some(score) = score_of(&trial, round as u32) else { continue };
            if pick.is_none_or(|(_, s)| better(score, s)) {
                pick = Some((i, score));
            }
        }
        let (i, score) = pick?;
        for (s, r) in sum.iter_mut().zip(&matrices[i]) {
            for (a, b) in s.iter_mut().zip(r) {
                *a += b;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;
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
            select(&[a, b, worse], &target(TaskKind::Regression, Metric::Rmse, &[]), &truth, 10).unwrap();
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
        let blend = select(&[x, y], &t, &truth, 5).unwrap();
        assert_eq!(blend.score, 1.0);
        assert_eq!(blend.members(), 2);
    }
}
