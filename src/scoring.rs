//! Reading a script's `predictions.csv` and scoring it against labels only the runner holds.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use crate::data::{TargetInfo, canonical_label, labels, numeric_values, read_csv_bytes, read_table};
use crate::guest_fs::{GuestDir, GuestFileError};
use crate::metric::{self, Classes};
use crate::task::TaskKind;

/// Largest predictions file the runner reads (a script could leave a huge sparse file).
const MAX_PREDICTIONS_BYTES: u64 = 4 << 30;

/// The true answers for a set of rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    Classes(Vec<String>),
    Values(Vec<f64>),
}

impl Truth {
    pub fn len(&self) -> usize {
        match self {
            Truth::Classes(v) => v.len(),
            Truth::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows in `range`.
    pub fn slice(&self, range: Range<usize>) -> Self {
        match self {
            Truth::Classes(v) => Truth::Classes(v[range].to_vec()),
            Truth::Values(v) => Truth::Values(v[range].to_vec()),
        }
    }

    /// Reads the target column of a labelled CSV.
    pub fn from_csv(path: &Path, target: &TargetInfo) -> Result<Self, String> {
        Self::from_table(&read_table(path).map_err(|e| e.to_string())?, target)
    }

    /// The target column of a labelled table already read.
    pub fn from_table(df: &polars::prelude::DataFrame, target: &TargetInfo) -> Result<Self, String> {
        let series = df.column(&target.column).map_err(|e| e.to_string())?.as_materialized_series().clone();
        Ok(if target.kind == TaskKind::Regression {
            Truth::Values(numeric_values(&series).map_err(|e| e.to_string())?)
        } else {
            Truth::Classes(
                labels(&series)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
            )
        })
    }
}

/// A score and a short analysis of the errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f64,
    pub details: String,
    /// What orders equal scores ([`metric::Standing`]): the log loss of all the rows scored.
    pub tiebreak: Option<f64>,
}

/// Predictions read from a file, checked against the number of rows they are for.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    Values(Vec<f64>),
    /// Predicted labels and, per class (canonical label), its probability for every row; a class
    /// without a column is absent from the map.
    Classes {
        labels: Vec<String>,
        probabilities: BTreeMap<String, Vec<f64>>,
    },
}

impl Predicted {
    pub fn len(&self) -> usize {
        match self {
            Predicted::Values(v) => v.len(),
            Predicted::Classes { labels, .. } => labels.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows in `range`.
    pub fn slice(&self, range: Range<usize>) -> Self {
        match self {
            Predicted::Values(v) => Predicted::Values(v[range].to_vec()),
            Predicted::Classes { labels, probabilities } => Predicted::Classes {
                labels: labels[range.clone()].to_vec(),
                probabilities: probabilities
                    .iter()
                    .map(|(c, p)| (c.clone(), p[range.clone()].to_vec()))
                    .collect(),
            },
        }
    }

    /// The parts one after the other (the out-of-fold predictions from each fold's). A class
    /// that some parts give no probability column has probability 0 in them: a fold whose
    /// training rows lacked a rare class has a model that never predicts it. `None` if the
    /// parts do not fit together: values with classes, or probabilities with none.
    pub fn concat(parts: Vec<Predicted>) -> Option<Self> {
        let mut parts = parts.into_iter();
        let mut out = parts.next()?;
        for part in parts {
            match (&mut out, part) {
                (Predicted::Values(a), Predicted::Values(b)) => a.extend(b),
                (
                    Predicted::Classes { labels, probabilities },
                    Predicted::Classes { labels: more, probabilities: mut more_p },
                ) => {
                    if probabilities.is_empty() != more_p.is_empty() {
                        return None;
                    }
                    let (before, added) = (labels.len(), more.len());
                    for class in more_p.keys() {
                        probabilities.entry(class.clone()).or_insert_with(|| vec![0.0; before]);
                    }
                    for (class, values) in probabilities.iter_mut() {
                        values.extend(more_p.remove(class).unwrap_or_else(|| vec![0.0; added]));
                    }
                    labels.extend(more);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// Rows × classes probabilities in the order of `classes`, for blending: a class without a
    /// probability column gets 1 where it is the predicted label, else 0.
    pub fn probability_rows(&self, classes: &[String]) -> Vec<Vec<f64>> {
        match self {
            Predicted::Values(v) => v.iter().map(|x| vec![*x]).collect(),
            Predicted::Classes { labels, probabilities } => labels
                .iter()
                .enumerate()
                .map(|(row, label)| {
                    classes
                        .iter()
                        .map(|c| match probabilities.get(c) {
                            Some(col) => col[row],
                            None => f64::from(u8::from(label == c)),
                        })
                        .collect()
                })
                .collect(),
        }
    }
}

/// Reads the predictions file `rel` that a script left in `dir`, for `rows` input rows. The file
/// is read through [`GuestDir`] (no link followed, regular files only), so no message here can
/// quote a file the script did not write itself. Every problem is written for the agent that
/// produced the file.
pub fn read_predictions(
    dir: &GuestDir,
    rel: &str,
    target: &TargetInfo,
    rows: usize,
) -> Result<Predicted, String> {
    parse_predictions(read_prediction_bytes(dir, rel)?, rel, target, rows)
}

/// The bytes of the predictions file `rel` in `dir` (bounded, no link followed).
pub fn read_prediction_bytes(dir: &GuestDir, rel: &str) -> Result<Vec<u8>, String> {
    dir.read(rel, MAX_PREDICTIONS_BYTES).map_err(|e| match e {
        GuestFileError::Missing(_) => format!("the script wrote no predictions file (`{rel}`)"),
        other => format!("the predictions file was not read: {other}"),
    })
}

/// Parses a predictions file's bytes (named `rel` in messages) for `rows` input rows.
pub fn parse_predictions(
    bytes: Vec<u8>,
    rel: &str,
    target: &TargetInfo,
    rows: usize,
) -> Result<Predicted, String> {
    let df = read_csv_bytes(bytes, rel)?;
    if df.height() != rows {
        return Err(format!(
            "predictions.csv has {} rows; the input had {rows}: write one row per input row, in order",
            df.height(),
        ));
    }
    let column = df
        .column("prediction")
        .map_err(|_| {
            let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
            format!("predictions.csv has no `prediction` column (it has: {})", names.join(", "))
        })?
        .as_materialized_series()
        .clone();
    if target.kind == TaskKind::Regression {
        if column.null_count() > 0 {
            return Err(format!("{} predictions are empty", column.null_count()));
        }
        let predicted = numeric_values(&column).map_err(|e| format!("`prediction` is not numeric: {e}"))?;
        if predicted.len() != rows {
            return Err("some predictions are not finite numbers".into());
        }
        return Ok(Predicted::Values(predicted));
    }
    let labels: Vec<String> =
        labels(&column).map_err(|e| e.to_string())?.into_iter().map(Option::unwrap_or_default).collect();
    let mut probabilities: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for name in df.get_column_names() {
        if let Some(class) = name.strip_prefix("proba_") {
            let series =
                df.column(name.as_str()).map_err(|e| e.to_string())?.as_materialized_series().clone();
            if series.null_count() > 0 {
                return Err(format!("column `{name}` has empty values"));
            }
            let values =
                numeric_values(&series).map_err(|e| format!("column `{name}` is not numeric: {e}"))?;
            if values.len() != rows {
                return Err(format!("column `{name}` has values that are not finite numbers"));
            }
            // Two spellings of one class (`proba_1` and `proba_1.0`) are that class's share.
            match probabilities.entry(canonical_label(class)) {
                std::collections::btree_map::Entry::Occupied(mut seen) => {
                    seen.get_mut().iter_mut().zip(values).for_each(|(p, v)| *p += v);
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(values);
                }
            }
        }
    }
    if target.metric.needs_probabilities() {
        let missing: Vec<String> = target
            .classes
            .iter()
            .filter(|c| !probabilities.contains_key(*c))
            .map(|c| format!("proba_{c}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} needs class probabilities: predictions.csv lacks {}",
                target.metric,
                missing.join(", ")
            ));
        }
    }
    Ok(Predicted::Classes { labels, probabilities })
}

/// Scores predictions against `truth` (errors are written for the agent).
pub fn score_predicted(predicted: &Predicted, target: &TargetInfo, truth: &Truth) -> Result<Scored, String> {
    match (truth, predicted) {
        (Truth::Values(values), Predicted::Values(predicted)) => {
            let score = metric::regression(target.metric, values, predicted).map_err(|e| e.to_string())?;
            Ok(Scored { score, details: residual_details(values, predicted), tiebreak: None })
        }
        (Truth::Classes(truth), Predicted::Classes { labels, probabilities }) => {
            let classes = Classes { all: &target.classes, positive: target.positive.as_deref() };
            let score = metric::classification(target.metric, truth, labels, probabilities, classes)
                .map_err(|e| e.to_string())?;
            let tiebreak = target.metric.has_tiebreak().then(|| log_loss(predicted, target, truth)).flatten();
            Ok(Scored { score, details: class_details(truth, labels), tiebreak })
        }
        _ => Err("the predictions do not fit the task (values for classes, or classes for values)".into()),
    }
}

/// Scores out-of-fold predictions: each fold on its own rows (`folds`, ranges of `truth` in
/// fold order), the score their mean. With one range or none this is [`score_predicted`].
pub fn score_folds(
    predicted: &Predicted,
    target: &TargetInfo,
    truth: &Truth,
    folds: &[Range<usize>],
) -> Result<Scored, String> {
    if folds.len() <= 1 {
        return score_predicted(predicted, target, truth);
    }
    let mut scores = Vec::with_capacity(folds.len());
    for (i, range) in folds.iter().enumerate() {
        let s = score_predicted(&predicted.slice(range.clone()), target, &truth.slice(range.clone()))
            .map_err(|e| format!("fold {} of {}: {e}", i + 1, folds.len()))?;
        scores.push(s.score);
    }
    let score = scores.iter().sum::<f64>() / scores.len() as f64;
    let (pooled, tiebreak) =
        score_predicted(predicted, target, truth).map(|s| (s.details, s.tiebreak)).unwrap_or_default();
    let each: Vec<String> = scores.iter().map(|s| format!("{s:.4}")).collect();
    let details = format!("mean of {} folds ({})\n{pooled}", folds.len(), each.join(", "));
    Ok(Scored { score, details, tiebreak })
}

/// The log loss of `predicted`'s probabilities as [`metric`] defines it (clipped, rows not
/// renormalized); a class without a probability column counts 1 where it is the label, else 0.
fn log_loss(predicted: &Predicted, target: &TargetInfo, truth: &[String]) -> Option<f64> {
    let rows = predicted.probability_rows(&target.classes);
    let classes: Vec<usize> =
        truth.iter().map(|t| target.classes.iter().position(|c| c == t)).collect::<Option<_>>()?;
    let loss = metric::mean_log_loss(rows.iter().zip(classes).map(|(row, class)| row[class]));
    // Probabilities an accuracy task does not check may be anything: no order from those.
    Some(loss).filter(|v| v.is_finite())
}

/// Reads and scores the predictions file `rel` that a script left in `dir`.
pub fn score(dir: &GuestDir, rel: &str, target: &TargetInfo, truth: &Truth) -> Result<Scored, String> {
    score_predicted(&read_predictions(dir, rel, target, truth.len())?, target, truth)
}

/// Recall and precision per class, worst recall first.
fn class_details(truth: &[String], predicted: &[String]) -> String {
    let mut classes: Vec<&String> = truth.iter().collect();
    classes.sort();
    classes.dedup();
    let mut rows: Vec<(f64, String)> = classes
        .iter()
        .map(|class| {
            let tp = truth.iter().zip(predicted).filter(|(t, p)| t == class && p == class).count();
            let actual = truth.iter().filter(|t| t == class).count();
            let called = predicted.iter().filter(|p| p == class).count();
            let recall = tp as f64 / actual.max(1) as f64;
            let precision = if called == 0 { 0.0 } else { tp as f64 / called as f64 };
            (recall, format!("class {class}: recall {recall:.3}, precision {precision:.3} ({actual} rows)"))
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let accuracy =
        truth.iter().zip(predicted).filter(|(t, p)| t == p).count() as f64 / truth.len().max(1) as f64;
    let mut out = format!("accuracy {accuracy:.4}\n");
    for (_, line) in rows.iter().take(10) {
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

fn residual_details(truth: &[f64], predicted: &[f64]) -> String {
    let residuals: Vec<f64> = truth.iter().zip(predicted).map(|(t, p)| p - t).collect();
    let n = residuals.len().max(1) as f64;
    let mean = residuals.iter().sum::<f64>() / n;
    let std = (residuals.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    let worst = residuals.iter().map(|r| r.abs()).fold(0.0, f64::max);
    format!("mean error {mean:.4} (bias), error std {std:.4}, largest absolute error {worst:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;

    fn target(kind: TaskKind, metric: Metric) -> TargetInfo {
        TargetInfo {
            column: "y".into(),
            kind,
            metric,
            classes: vec!["a".into(), "b".into()],
            positive: Some("b".into()),
        }
    }

    #[test]
    fn scores_classification_with_probabilities() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.csv"),
            "prediction,proba_a,proba_b\na,0.9,0.1\nb,0.2,0.8\nb,0.4,0.6\n",
        )
        .unwrap();
        let guest = GuestDir::open(dir.path()).unwrap();
        let truth = Truth::Classes(vec!["a".into(), "b".into(), "a".into()]);
        let s = score(&guest, "p.csv", &target(TaskKind::Binary, Metric::RocAuc), &truth).unwrap();
        assert!((s.score - 1.0).abs() < 1e-12);
        let acc = score(&guest, "p.csv", &target(TaskKind::Binary, Metric::Accuracy), &truth).unwrap();
        assert!((acc.score - 2.0 / 3.0).abs() < 1e-12);
        assert!(acc.details.contains("class a: recall 0.500"), "{}", acc.details);
        // A class under two spellings: its probability is the sum of both columns.
        std::fs::write(
            dir.path().join("p.csv"),
            "prediction,proba_a,proba_b,proba_ b\na,0.5,0.25,0.25\nb,0.5,0.25,0.25\na,0.5,0.25,0.25\n",
        )
        .unwrap();
        let loss = score(&guest, "p.csv", &target(TaskKind::Binary, Metric::LogLoss), &truth).unwrap();
        assert!((loss.score - 0.5f64.ln().abs()).abs() < 1e-9, "{}", loss.score);
    }

    #[test]
    fn bad_prediction_files_say_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let truth = Truth::Classes(vec!["a".into(), "b".into()]);
        let t = target(TaskKind::Binary, Metric::RocAuc);
        let cases = [
            ("prediction\na\nb\nb\n", "has 3 rows; the input had 2"),
            ("label\na\nb\n", "no `prediction` column"),
            ("prediction,proba_a\na,0.1\nb,0.2\n", "lacks proba_b"),
        ];
        let guest = GuestDir::open(dir.path()).unwrap();
        for (text, expected) in cases {
            std::fs::write(dir.path().join("p.csv"), text).unwrap();
            let err = score(&guest, "p.csv", &t, &truth).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        assert!(score(&guest, "none.csv", &t, &truth).unwrap_err().contains("no predictions file"));
        // A link to a host file that would score perfectly is not followed, and not quoted.
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret.csv"), "prediction,proba_a,proba_b\na,1,0\nb,0,1\n").unwrap();
        std::os::unix::fs::symlink(host.path().join("secret.csv"), dir.path().join("link.csv")).unwrap();
        let err = score(&guest, "link.csv", &t, &truth).unwrap_err();
        assert!(err.contains("symbolic link") && !err.contains("proba_a,proba_b"), "{err}");
    }

    #[test]
    fn a_cv_score_is_the_mean_of_the_folds() {
        let t = target(TaskKind::Regression, Metric::Mae);
        let truth = Truth::Values(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let predicted = Predicted::concat(vec![
            Predicted::Values(vec![1.0, 3.0]),
            Predicted::Values(vec![3.0, 4.0, 8.0]),
        ])
        .unwrap();
        let s = score_folds(&predicted, &t, &truth, &[0..2, 2..5]).unwrap();
        // Fold 1: MAE 0.5; fold 2: MAE 1.0; pooled would be 0.8.
        assert!((s.score - 0.75).abs() < 1e-12, "{}", s.score);
        assert!(s.details.starts_with("mean of 2 folds (0.5000, 1.0000)"), "{}", s.details);
        let one = score_folds(&predicted, &t, &truth, std::slice::from_ref(&(0..5))).unwrap();
        assert!((one.score - 0.8).abs() < 1e-12);
        assert!(Predicted::concat(vec![Predicted::Values(vec![1.0]), probs_only()]).is_none());
    }

    #[test]
    fn a_fold_without_a_rare_class_gives_it_probability_zero() {
        let part = |labels: &[&str], columns: &[(&str, &[f64])]| Predicted::Classes {
            labels: labels.iter().map(|l| l.to_string()).collect(),
            probabilities: columns.iter().map(|(c, p)| (c.to_string(), p.to_vec())).collect(),
        };
        let joined = Predicted::concat(vec![
            part(&["a"], &[("a", &[0.9]), ("b", &[0.1])]),
            part(&["c", "a"], &[("a", &[0.2, 0.5]), ("b", &[0.1, 0.1]), ("c", &[0.7, 0.4])]),
            part(&["b"], &[("b", &[0.6]), ("c", &[0.4])]),
        ])
        .unwrap();
        let Predicted::Classes { labels, probabilities } = joined else { unreachable!() };
        assert_eq!(labels, ["a", "c", "a", "b"]);
        assert_eq!(probabilities["a"], [0.9, 0.2, 0.5, 0.0]);
        assert_eq!(probabilities["b"], [0.1, 0.1, 0.1, 0.6]);
        assert_eq!(probabilities["c"], [0.0, 0.7, 0.4, 0.4]);
        let with = part(&["a"], &[("a", &[1.0])]);
        assert!(Predicted::concat(vec![with, probs_only()]).is_none(), "probabilities with none");
    }

    fn probs_only() -> Predicted {
        Predicted::Classes { labels: vec!["a".into()], probabilities: BTreeMap::new() }
    }

    #[test]
    fn scores_regression() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.csv"), "prediction\n2.5\n0.0\n2\n8\n").unwrap();
        let truth = Truth::Values(vec![3.0, -0.5, 2.0, 7.0]);
        let guest = GuestDir::open(dir.path()).unwrap();
        let s = score(&guest, "p.csv", &target(TaskKind::Regression, Metric::Mae), &truth).unwrap();
        assert!((s.score - 0.5).abs() < 1e-12);
        assert!(s.details.contains("bias"));
    }
}
