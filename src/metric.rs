//! Metrics, computed by trusted code from predictions and labels the runner holds.
//!
//! An agent's own claim of a score is never used: every number loop-runner reports comes from
//! here. Definitions follow scikit-learn's (`roc_auc_score` with one-vs-rest macro averaging for
//! more than two classes over the task's classes, `f1_score(average="macro")` over the union of
//! labels, `log_loss` as scikit-learn 1.9 computes it: rows are not renormalized, probabilities
//! are clipped to `[eps, 1 - eps]` with the float64 machine epsilon), and the unit tests pin
//! values computed with scikit-learn. Where scikit-learn gives `nan` (an AUC with a class absent
//! from the scored rows), loop-runner reports the score as undefined, with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A supported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    RocAuc,
    Accuracy,
    MacroF1,
    LogLoss,
    Rmse,
    Mae,
    R2,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::RocAuc,
        Metric::Accuracy,
        Metric::MacroF1,
        Metric::LogLoss,
        Metric::Rmse,
        Metric::Mae,
        Metric::R2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::RocAuc => "roc_auc",
            Metric::Accuracy => "accuracy",
            Metric::MacroF1 => "macro_f1",
            Metric::LogLoss => "log_loss",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::RocAuc | Metric::Accuracy | Metric::MacroF1 | Metric::R2)
    }

    /// The best value the metric can take (nothing can beat a model that reaches it).
    pub fn perfect(self) -> Option<f64> {
        match self {
            Metric::RocAuc | Metric::Accuracy | Metric::MacroF1 | Metric::R2 => Some(1.0),
            Metric::Rmse | Metric::Mae | Metric::LogLoss => Some(0.0),
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        if self.higher_is_better() { a > b } else { a < b }
    }

    /// Whether `a` ranks strictly ahead of `b`: a better score, or the same score and a lower
    /// tie-break (see [`Standing`]).
    pub fn ahead(self, a: Standing, b: Standing) -> bool {
        self.better(a.score, b.score)
            || (a.score == b.score && matches!((a.tiebreak, b.tiebreak), (Some(x), Some(y)) if x < y))
    }

    /// Best first: by score, then by tie-break, one without a tie-break after those with one
    /// (a total order, for sorting).
    pub fn rank(self, a: Standing, b: Standing) -> std::cmp::Ordering {
        Standing::rank(a, b, self.higher_is_better())
    }

    /// Whether equal scores of this metric are told apart by the log loss of the same
    /// predictions: every classification metric but log loss itself.
    pub fn has_tiebreak(self) -> bool {
        !self.is_regression() && self != Metric::LogLoss
    }

    /// Whether the metric applies to regression (else classification).
    pub fn is_regression(self) -> bool {
        matches!(self, Metric::Rmse | Metric::Mae | Metric::R2)
    }

    /// Whether the metric needs class probabilities (not just labels).
    pub fn needs_probabilities(self) -> bool {
        matches!(self, Metric::RocAuc | Metric::LogLoss)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            format!("unknown metric `{s}`; use one of: {}", names.join(", "))
        })
    }
}

/// How a validation result ranks: its score, and where the metric [has a
/// tie-break](Metric::has_tiebreak), the log loss of the same probabilities. Accuracy on a few
/// hundred rows takes few values: a dozen models reach the same one (on small data, often 1.0),
/// and the first of them to get there is no better a choice than the others. The log loss, a
/// proper score of the probabilities behind those labels, orders them by how sure they were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub score: f64,
    /// Lower is better; `None` compares as a tie.
    pub tiebreak: Option<f64>,
}

impl Standing {
    pub fn new(score: f64, tiebreak: Option<f64>) -> Self {
        Self { score, tiebreak }
    }

    /// [`Metric::rank`] for a score whose direction is `higher_is_better`.
    pub fn rank(a: Self, b: Self, higher_is_better: bool) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let by_score =
            if higher_is_better { b.score.total_cmp(&a.score) } else { a.score.total_cmp(&b.score) };
        by_score.then(match (a.tiebreak, b.tiebreak) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
    }
}

/// Why a score could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("{predicted} predictions for {expected} rows")]
    Length { predicted: usize, expected: usize },
    #[error("no rows to score")]
    Empty,
    #[error("prediction {value} in row {row} is not a finite number")]
    NotFinite { row: usize, value: f64 },
    #[error("roc_auc is undefined: {0}")]
    Undefined(String),
    #[error("no probability column for class `{0}`")]
    MissingClass(String),
    #[error("probability {value} in row {row} of class `{class}` is outside 0..=1")]
    NotProbability { class: String, row: usize, value: f64 },
}

/// Predictions in the form a metric needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Regression values.
    Values(Vec<f64>),
    /// Predicted labels, and for each class its probability per row (may be empty when the
    /// metric needs only labels).
    Classes { labels: Vec<String>, probabilities: BTreeMap<String, Vec<f64>> },
}

/// Scores regression predictions.
pub fn regression(metric: Metric, truth: &[f64], predicted: &[f64]) -> Result<f64, MetricError> {
    check_lengths(predicted.len(), truth.len())?;
    if let Some((row, &value)) = predicted.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MetricError::NotFinite { row, value });
    }
    let n = truth.len() as f64;
    Ok(match metric {
        Metric::Rmse => (truth.iter().zip(predicted).map(|(t, p)| (t - p).powi(2)).sum::<f64>() / n).sqrt(),
        Metric::Mae => truth.iter().zip(predicted).map(|(t, p)| (t - p).abs()).sum::<f64>() / n,
        Metric::R2 => {
            let mean = truth.iter().sum::<f64>() / n;
            let ss_res: f64 = truth.iter().zip(predicted).map(|(t, p)| (t - p).powi(2)).sum();
            let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
            if ss_tot == 0.0 { if ss_res == 0.0 { 1.0 } else { 0.0 } } else { 1.0 - ss_res / ss_tot }
        }
        other => unreachable!("{other} is not a regression metric"),
    })
}

/// The classes of a classification task, as the metric needs them.
#[derive(Debug, Clone, Copy)]
pub struct Classes<'a> {
    /// Every class of the task (sorted); two means a binary task.
    pub all: &'a [String],
    /// The positive class of a binary task (default: the larger label, as scikit-learn does).
    pub positive: Option<&'a str>,
}

/// Scores classification predictions.
pub fn classification(
    metric: Metric,
    truth: &[String],
    labels: &[String],
    probabilities: &BTreeMap<String, Vec<f64>>,
    classes: Classes<'_>,
) -> Result<f64, MetricError> {
    if truth.is_empty() {
        return Err(MetricError::Empty);
    }
    match metric {
        Metric::Accuracy => {
            check_lengths(labels.len(), truth.len())?;
            Ok(truth.iter().zip(labels).filter(|(t, p)| t == p).count() as f64 / truth.len() as f64)
        }
        Metric::MacroF1 => {
            check_lengths(labels.len(), truth.len())?;
            Ok(macro_f1(truth, labels))
        }
        Metric::RocAuc => {
            let present: BTreeSet<&String> = truth.iter().collect();
            // The task decides binary or one-vs-rest, not the rows at hand: a multiclass set
            // that happens to hold two classes is still scored one-vs-rest over every class.
            let all: Vec<&String> = if classes.all.is_empty() {
                present.iter().copied().collect()
            } else {
                classes.all.iter().collect()
            };
            if all.len() <= 2 {
                if present.len() < 2 {
                    return Err(MetricError::Undefined(format!(
                        "the scored rows hold only class `{}`",
                        present.iter().next().map_or("", |c| c.as_str())
                    )));
                }
                let positive = classes
                    .positive
                    .map(str::to_string)
                    .unwrap_or_else(|| (*all.last().expect("two classes")).clone());
                let scores = class_column(probabilities, &positive, truth.len())?;
                let is_pos: Vec<bool> = truth.iter().map(|t| *t == positive).collect();
                return Ok(binary_auc(&is_pos, scores));
            }
            if let Some(absent) = all.iter().find(|c| !present.contains(*c)) {
                return Err(MetricError::Undefined(format!(
                    "class `{absent}` has no row among the scored rows (one-vs-rest needs every class)"
                )));
            }
            let mut total = 0.0;
            for class in &all {
                let scores = class_column(probabilities, class, truth.len())?;
                let is_pos: Vec<bool> = truth.iter().map(|t| t == *class).collect();
                total += binary_auc(&is_pos, scores);
            }
            Ok(total / all.len() as f64)
        }
        Metric::LogLoss => {
            let present: BTreeSet<&String> = truth.iter().collect();
            for class in classes.all.iter().chain(present.iter().copied()) {
                let column = class_column(probabilities, class, truth.len())?;
                if let Some((row, &value)) =
                    column.iter().enumerate().find(|(_, v)| !(0.0..=1.0).contains(*v))
                {
                    return Err(MetricError::NotProbability { class: class.clone(), row, value });
                }
            }
            Ok(mean_log_loss(truth.iter().enumerate().map(|(row, t)| probabilities[t][row])))
        }
        other => unreachable!("{other} is not a classification metric"),
    }
}

/// The mean over rows of `-ln p`, `p` each row's probability of its true class clipped to
/// `[eps, 1 - eps]`: scikit-learn's `log_loss` (rows not renormalized). `NaN` for no rows.
pub(crate) fn mean_log_loss(true_class: impl Iterator<Item = f64>) -> f64 {
    let eps = f64::EPSILON;
    let (mut total, mut rows) = (0.0, 0usize);
    for p in true_class {
        total -= p.clamp(eps, 1.0 - eps).ln();
        rows += 1;
    }
    total / rows as f64
}

fn check_lengths(predicted: usize, expected: usize) -> Result<(), MetricError> {
    if expected == 0 {
        return Err(MetricError::Empty);
    }
    if predicted != expected {
        return Err(MetricError::Length { predicted, expected });
    }
    Ok(())
}

fn class_column<'a>(
    probabilities: &'a BTreeMap<String, Vec<f64>>,
    class: &str,
    rows: usize,
) -> Result<&'a [f64], MetricError> {
    let column = probabilities.get(class).ok_or_else(|| MetricError::MissingClass(class.to_string()))?;
    check_lengths(column.len(), rows)?;
    if let Some((row, &value)) = column.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MetricError::NotFinite { row, value });
    }
    Ok(column)
}

/// Area under the ROC curve via the rank statistic, ties getting their average rank.
pub(crate) fn binary_auc(is_positive: &[bool], scores: &[f64]) -> f64 {
    // Sorted as pairs rather than through an index (the ensemble selection scores thousands of
    // blends). Every rank is a multiple of one half, so the rank sum is exact in any order.
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(is_positive.iter().copied()).collect();
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
            j += 1;
        }
        let average = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average * pairs[i..=j].iter().filter(|p| p.1).count() as f64;
        i = j + 1;
    }
    let positives = is_positive.iter().filter(|p| **p).count() as f64;
    let negatives = is_positive.len() as f64 - positives;
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

fn macro_f1(truth: &[String], predicted: &[String]) -> f64 {
    let classes: BTreeSet<&String> = truth.iter().chain(predicted).collect();
    let mut total = 0.0;
    for class in &classes {
        let tp = truth.iter().zip(predicted).filter(|(t, p)| t == class && p == class).count() as f64;
        let fp = truth.iter().zip(predicted).filter(|(t, p)| t != class && p == class).count() as f64;
        let fn_ = truth.iter().zip(predicted).filter(|(t, p)| t == class && p != class).count() as f64;
        let denominator = 2.0 * tp + fp + fn_;
        total += if denominator == 0.0 { 0.0 } else { 2.0 * tp / denominator };
    }
    total / classes.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    // Expected values from scikit-learn 1.9.1 on the same inputs.
    #[test]
    fn regression_metrics_match_sklearn() {
        let t = [3.0, -0.5, 2.0, 7.0];
        let p = [2.5, 0.0, 2.0, 8.0];
        close(regression(Metric::Rmse, &t, &p).unwrap(), 0.6123724356957945);
        close(regression(Metric::Mae, &t, &p).unwrap(), 0.5);
        close(regression(Metric::R2, &t, &p).unwrap(), 0.9486081370449679);
        assert!(matches!(regression(Metric::Rmse, &t, &p[..3]), Err(MetricError::Length { .. })));
        assert!(matches!(
            regression(Metric::Mae, &t, &[1.0, f64::NAN, 1.0, 1.0]),
            Err(MetricError::NotFinite { .. })
        ));
    }

    #[test]
    fn binary_metrics_match_sklearn() {
        let truth = s(&["a", "b", "b", "a", "b", "a"]);
        let labels = s(&["a", "b", "a", "a", "b", "b"]);
        let pb = vec![0.1, 0.4, 0.35, 0.8, 0.9, 0.35];
        let pa: Vec<f64> = pb.iter().map(|p| 1.0 - p).collect();
        let probs = BTreeMap::from([("a".to_string(), pa), ("b".to_string(), pb)]);
        let ab = s(&["a", "b"]);
        let c = Classes { all: &ab, positive: None };
        close(classification(Metric::Accuracy, &truth, &labels, &probs, c).unwrap(), 4.0 / 6.0);
        close(classification(Metric::MacroF1, &truth, &labels, &probs, c).unwrap(), 0.6666666666666666);
        // roc_auc_score([0,1,1,0,1,0], [0.1,0.4,0.35,0.8,0.9,0.35]) with a tie at 0.35
        close(classification(Metric::RocAuc, &truth, &labels, &probs, c).unwrap(), 0.7222222222222222);
        let positive_a = Classes { all: &ab, positive: Some("a") };
        close(
            classification(Metric::RocAuc, &truth, &labels, &probs, positive_a).unwrap(),
            0.7222222222222222,
        );
        close(classification(Metric::LogLoss, &truth, &labels, &probs, c).unwrap(), 0.7028424527025067);
    }

    #[test]
    fn multiclass_metrics_match_sklearn() {
        let truth = s(&["x", "y", "z", "x", "y", "z", "x"]);
        let labels = s(&["x", "y", "y", "x", "z", "z", "y"]);
        let px = vec![0.7, 0.1, 0.2, 0.6, 0.2, 0.1, 0.3];
        let py = vec![0.2, 0.6, 0.5, 0.3, 0.3, 0.2, 0.4];
        let pz = vec![0.1, 0.3, 0.3, 0.1, 0.5, 0.7, 0.3];
        let probs = BTreeMap::from([("x".into(), px), ("y".into(), py), ("z".into(), pz)]);
        let xyz = s(&["x", "y", "z"]);
        let c = Classes { all: &xyz, positive: None };
        close(classification(Metric::Accuracy, &truth, &labels, &probs, c).unwrap(), 4.0 / 7.0);
        close(classification(Metric::MacroF1, &truth, &labels, &probs, c).unwrap(), 0.5666666666666668);
        close(classification(Metric::RocAuc, &truth, &labels, &probs, c).unwrap(), 0.85);
        close(classification(Metric::LogLoss, &truth, &labels, &probs, c).unwrap(), 0.7638456497696078);
        let missing = BTreeMap::from([("x".to_string(), vec![0.5; 7])]);
        assert!(matches!(
            classification(Metric::RocAuc, &truth, &labels, &missing, c),
            Err(MetricError::MissingClass(_))
        ));
    }

    #[test]
    fn log_loss_clips_like_sklearn_and_does_not_renormalize() {
        let ab = s(&["a", "b"]);
        let c = Classes { all: &ab, positive: None };
        // log_loss(["a", "b"], [[0.0, 1.0], [0.0, 1.0]], labels=["a", "b"]) == 18.021826694558577
        let zero = BTreeMap::from([("a".to_string(), vec![0.0, 0.0]), ("b".to_string(), vec![1.0, 1.0])]);
        close(
            classification(Metric::LogLoss, &s(&["a", "b"]), &s(&["b", "b"]), &zero, c).unwrap(),
            18.021826694558577,
        );
        // Rows that do not sum to one are taken as given:
        // log_loss(["x", "y", "x"], [[0.5, 0.2, 0.1], [0.1, 0.6, 0.1], [0.7, 0.1, 0.1]],
        //          labels=["x", "y", "z"]) == 0.5202159160882228
        let xyz = s(&["x", "y", "z"]);
        let short = BTreeMap::from([
            ("x".to_string(), vec![0.5, 0.1, 0.7]),
            ("y".to_string(), vec![0.2, 0.6, 0.1]),
            ("z".to_string(), vec![0.1, 0.1, 0.1]),
        ]);
        let three = Classes { all: &xyz, positive: None };
        let truth = s(&["x", "y", "x"]);
        close(classification(Metric::LogLoss, &truth, &truth, &short, three).unwrap(), 0.5202159160882228);
        let over = BTreeMap::from([("a".to_string(), vec![1.5, 0.0]), ("b".to_string(), vec![0.0, 1.0])]);
        assert!(matches!(
            classification(Metric::LogLoss, &s(&["a", "b"]), &s(&["a", "b"]), &over, c),
            Err(MetricError::NotProbability { .. })
        ));
    }

    #[test]
    fn auc_counts_each_pair_once_and_a_tie_as_half() {
        // Scores on a coarse grid (many ties, zeros of both signs), against the count of
        // positive-negative pairs ranked right: the same bits.
        let mut rng = fastrand::Rng::with_seed(11);
        for rows in [2usize, 3, 10, 257] {
            let scores: Vec<f64> =
                (0..rows).map(|i| if i % 7 == 0 { -0.0 } else { f64::from(rng.u8(0..6)) / 5.0 }).collect();
            let mut is_positive: Vec<bool> = (0..rows).map(|_| rng.bool()).collect();
            is_positive[0] = true;
            is_positive[1] = false;
            let mut right = 0.0;
            for (a, pa) in scores.iter().zip(&is_positive) {
                for (b, pb) in scores.iter().zip(&is_positive) {
                    if *pa && !*pb {
                        right += if a > b {
                            1.0
                        } else if a == b {
                            0.5
                        } else {
                            0.0
                        };
                    }
                }
            }
            let p = is_positive.iter().filter(|x| **x).count() as f64;
            let pairs = right / (p * (rows as f64 - p));
            assert_eq!(binary_auc(&is_positive, &scores).to_bits(), pairs.to_bits(), "{rows} rows");
        }
    }

    #[test]
    fn auc_with_an_absent_class_is_undefined_not_binary() {
        // A multiclass task whose scored rows hold two of its three classes: scikit-learn's
        // roc_auc_score(y, p, multi_class="ovr", labels=["x", "y", "z"]) gives nan.
        let xyz = s(&["x", "y", "z"]);
        let c = Classes { all: &xyz, positive: None };
        let truth = s(&["x", "y", "x", "y"]);
        let probs = BTreeMap::from([
            ("x".to_string(), vec![0.6, 0.2, 0.5, 0.1]),
            ("y".to_string(), vec![0.3, 0.5, 0.2, 0.8]),
            ("z".to_string(), vec![0.1, 0.3, 0.3, 0.1]),
        ]);
        let err = classification(Metric::RocAuc, &truth, &truth, &probs, c).unwrap_err();
        assert!(err.to_string().contains("class `z` has no row"), "{err}");
        // A binary task scored on rows of one class: undefined too (scikit-learn: nan).
        let ab = s(&["a", "b"]);
        let one = BTreeMap::from([("a".to_string(), vec![0.4, 0.3]), ("b".to_string(), vec![0.6, 0.7])]);
        let err = classification(
            Metric::RocAuc,
            &s(&["a", "a"]),
            &s(&["a", "a"]),
            &one,
            Classes { all: &ab, positive: None },
        )
        .unwrap_err();
        assert!(matches!(err, MetricError::Undefined(_)), "{err}");
    }

    #[test]
    fn names_and_directions() {
        assert_eq!("roc_auc".parse::<Metric>().unwrap(), Metric::RocAuc);
        assert!("auc".parse::<Metric>().unwrap_err().contains("roc_auc, accuracy"));
        assert!(Metric::Rmse.better(1.0, 2.0));
        assert!(Metric::Accuracy.better(0.9, 0.8));
    }

    #[test]
    fn equal_scores_rank_by_the_tiebreak_and_never_against_a_better_score() {
        let m = Metric::Accuracy;
        let (sure, unsure) = (Standing::new(1.0, Some(0.05)), Standing::new(1.0, Some(0.3)));
        assert!(m.ahead(sure, unsure) && !m.ahead(unsure, sure));
        assert!(!m.ahead(sure, sure), "strictly ahead");
        assert!(m.ahead(Standing::new(1.0, Some(9.0)), Standing::new(0.99, Some(0.01))), "score first");
        assert!(!m.ahead(sure, Standing::new(1.0, None)) && !m.ahead(Standing::new(1.0, None), sure));
        assert!(Metric::Rmse.ahead(Standing::new(1.0, None), Standing::new(2.0, None)));
        let mut sorted = vec![Standing::new(1.0, None), unsure, Standing::new(0.9, Some(0.01)), sure];
        sorted.sort_by(|a, b| m.rank(*a, *b));
        assert_eq!(sorted, vec![sure, unsure, Standing::new(1.0, None), Standing::new(0.9, Some(0.01))]);
        assert!(m.has_tiebreak() && Metric::RocAuc.has_tiebreak());
        assert!(!Metric::LogLoss.has_tiebreak() && !Metric::Rmse.has_tiebreak());
    }
}
