//! Whether a blend is worth more than the best single model, judged on rows that neither was
//! chosen on.
//!
//! The greedy selection's first round takes the best single model, so the blend it keeps
//! always scores at least as well as that model on the rows it was chosen on: compared on
//! those rows, a blend always wins. On small data it can win by fitting their noise (a 455-row
//! table's blends scored below its best model on rows they had not seen). So the runner
//! repeats both choices without one part of the rows (each cross-validation fold in turn, or
//! each fifth of a held-out split) and scores what each chose on that part: the blend stands
//! only if it is ahead there.

use std::ops::Range;

use super::ensemble::{Candidate, FoldScorer, greedy, matrices};
use crate::data::TargetInfo;
use crate::metric::Standing;
use crate::scoring::Truth;

/// Parts a held-out split is cut into (cross-validation uses its folds).
const PARTS: usize = 5;

/// Above this many validated rows the check is not made: it costs five selections, and on that
/// many rows a blend has little noise to fit.
pub const MAX_ROWS: usize = 20_000;

/// The two choices, each scored on the rows it was not made on (means over the parts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldOut {
    pub blend: Standing,
    pub single: Standing,
    pub parts: usize,
}

/// The blend selection ([`super::select`] with these arguments) and the choice of the best
/// single model, each made without one part of the rows and scored on it. `None` when fewer
/// than two candidates are usable, there are more than [`MAX_ROWS`] rows, a part cannot be
/// scored, or `stop` says time is up.
pub fn held_out(
    candidates: &[Candidate],
    target: &TargetInfo,
    truth: &Truth,
    folds: &[Range<usize>],
    rounds: usize,
    stop: &dyn Fn() -> bool,
) -> Option<HeldOut> {
    let rows = truth.len();
    if candidates.len() < 2 || !(PARTS..=MAX_ROWS).contains(&rows) {
        return None;
    }
    let cv = folds.len() >= 2;
    let parts: Vec<Range<usize>> = if cv {
        folds.to_vec()
    } else {
        (0..PARTS).map(|k| k * rows / PARTS..(k + 1) * rows / PARTS).collect()
    };
    let (matrices, width) = matrices(candidates, target, truth)?;
    let (mut blends, mut singles) = (Vec::new(), Vec::new());
    for (k, out) in parts.iter().enumerate() {
        let inner: Vec<Range<usize>> =
            parts.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, r)| r.clone()).collect();
        let take = |m: &[f64]| -> Vec<f64> {
            inner.iter().flat_map(|r| m[r.start * width..r.end * width].iter().copied()).collect()
        };
        let inner_matrices: Vec<Vec<f64>> = matrices.iter().map(|m| take(m)).collect();
        let inner_truth = concat(truth, &inner);
        // The inner folds keep being scored one by one, as the candidates were.
        let mut inner_folds = Vec::new();
        if cv {
            let mut at = 0;
            for r in &inner {
                inner_folds.push(at..at + r.len());
                at += r.len();
            }
        }
        let scorer = FoldScorer::new(target, &inner_truth, &inner_folds, width)?;
        let chosen = greedy(&inner_matrices, &scorer, target, rounds, stop)?;
        let out_truth = truth.slice(out.clone());
        let judge = FoldScorer::new(target, &out_truth, &[], width)?;
        let part = |m: &[f64]| m[out.start * width..out.end * width].to_vec();
        let mut sum = vec![0.0; out.len() * width];
        for (m, &times) in matrices.iter().zip(&chosen.counts) {
            for (s, v) in sum.iter_mut().zip(&m[out.start * width..out.end * width]) {
                *s += f64::from(times) * v;
            }
        }
        blends.push(judge.standing(&sum, chosen.counts.iter().sum())?);
        singles.push(judge.standing(&part(&matrices[chosen.first]), 1)?);
    }
    Some(HeldOut { blend: mean(&blends), single: mean(&singles), parts: parts.len() })
}

impl HeldOut {
    /// Whether the blend is ahead of the best single model on the rows neither was chosen on
    /// (equal scores: the lower log loss, as everywhere).
    pub fn blend_ahead(&self, target: &TargetInfo) -> bool {
        target.metric.ahead(self.blend, self.single)
    }
}

fn mean(standings: &[Standing]) -> Standing {
    let n = standings.len() as f64;
    let score = standings.iter().map(|s| s.score).sum::<f64>() / n;
    let tiebreak: Option<Vec<f64>> = standings.iter().map(|s| s.tiebreak).collect();
    Standing::new(score, tiebreak.map(|t| t.iter().sum::<f64>() / n))
}

/// The rows `ranges` of `truth`, one after the other.
fn concat(truth: &Truth, ranges: &[Range<usize>]) -> Truth {
    match truth {
        Truth::Values(v) => Truth::Values(ranges.iter().flat_map(|r| v[r.clone()].iter().copied()).collect()),
        Truth::Classes(v) => {
            Truth::Classes(ranges.iter().flat_map(|r| v[r.clone()].iter().cloned()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;
    use crate::scoring::Predicted;
    use crate::task::TaskKind;

    fn regression() -> TargetInfo {
        TargetInfo {
            column: "y".into(),
            kind: TaskKind::Regression,
            metric: Metric::Rmse,
            classes: vec![],
            positive: None,
        }
    }

    fn candidate(iteration: u32, values: Vec<f64>) -> Candidate {
        Candidate { iteration, predicted: Predicted::Values(values) }
    }

    /// A deterministic stream of noise in [-1, 1).
    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n).map(|_| rng.f64() * 2.0 - 1.0).collect()
    }

    #[test]
    fn models_that_err_independently_blend_ahead_on_rows_they_were_not_chosen_on() {
        let n = 400;
        let truth: Vec<f64> = (0..n).map(|i| i as f64).collect();
        // Three models, each the truth plus its own noise: their mean errs less than any.
        let candidates: Vec<Candidate> = (1..=3)
            .map(|k| candidate(k, truth.iter().zip(noise(k.into(), n)).map(|(t, e)| t + e).collect()))
            .collect();
        let t = regression();
        let folds: Vec<Range<usize>> = (0..5).map(|k| k * 80..(k + 1) * 80).collect();
        for folds in [&folds[..], &[]] {
            let check =
                held_out(&candidates, &t, &Truth::Values(truth.clone()), folds, 25, &|| false).unwrap();
            assert_eq!(check.parts, 5);
            assert!(check.blend_ahead(&t), "{check:?}");
            assert!(check.blend.score < 0.8 * check.single.score, "{check:?}");
        }
    }

    #[test]
    fn a_blend_that_only_fits_the_noise_of_few_rows_is_not_ahead_of_the_best_model() {
        let n = 30;
        let truth: Vec<f64> = (0..n).map(|i| (i % 7) as f64).collect();
        // One good model and many that know nothing (values drawn at random over the target's
        // range): on 30 rows some of them err against the good one by chance, which a blend
        // picks up, and which does not carry over to other rows.
        let good: Vec<f64> = truth.iter().zip(noise(1, n)).map(|(t, e)| t + e).collect();
        let mut candidates = vec![candidate(1, good)];
        for k in 2..60 {
            candidates.push(candidate(k as u32, noise(k, n).iter().map(|e| 3.0 + 3.0 * e).collect()));
        }
        let t = regression();
        let truth = Truth::Values(truth);
        let blend = super::super::select(&candidates, &t, &truth, &[], 25, &|| false).unwrap();
        let alone = super::super::blend_score(&candidates, &[(1, 1)], &t, &truth, &[]).unwrap();
        assert!(blend.members() >= 2 && blend.score < alone.score, "on the rows it was chosen on: {blend:?}");
        let check = held_out(&candidates, &t, &truth, &[], 25, &|| false).unwrap();
        assert!(!check.blend_ahead(&t), "{check:?}");
        assert!(held_out(&candidates, &t, &truth, &[], 25, &|| true).is_none(), "stopped");
        assert!(held_out(&candidates[..1], &t, &truth, &[], 25, &|| false).is_none(), "one candidate");
    }
}
