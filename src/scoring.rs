//! Reading a script's `predictions.csv` and scoring it against labels only the runner holds.

use std::collections::BTreeMap;
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

    /// Reads the target column of a labelled CSV.
    pub fn from_csv(path: &Path, target: &TargetInfo) -> Result<Self, String> {
        let df = read_table(path).map_err(|e| e.to_string())?;
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
    let bytes = dir.read(rel, MAX_PREDICTIONS_BYTES).map_err(|e| match e {
        GuestFileError::Missing(_) => format!("the script wrote no predictions file (`{rel}`)"),
        other => format!("the predictions file was not read: {other}"),
    })?;
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
            probabilities.insert(canonical_label(class), values);
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
            Ok(Scored { score, details: residual_details(values, predicted) })
        }
        (Truth::Classes(truth), Predicted::Classes { labels, probabilities }) => {
            let classes = Classes { all: &target.classes, positive: target.positive.as_deref() };
            let score = metric::classification(target.metric, truth, labels, probabilities, classes)
                .map_err(|e| e.to_string())?;
            Ok(Scored { score, details: class_details(truth, labels) })
        }
        _ => Err("the predictions do not fit the task (values for classes, or classes for values)".into()),
    }
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
