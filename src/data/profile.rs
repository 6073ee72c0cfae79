//! A summary of a table for prompts and for the built-in agent: types, missing values,
//! cardinality, and the target's class balance or range.

use std::collections::HashMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// How a column is best treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    Numeric,
    Categorical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    pub dtype: String,
    pub kind: ColumnKind,
    pub missing: usize,
    pub unique: usize,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Most frequent values (categorical columns), at most five.
    pub top: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TargetProfile {
    Classes { counts: Vec<(String, usize)> },
    Range { min: f64, max: f64, mean: f64, median: f64, std: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub rows: usize,
    pub target: String,
    pub target_profile: TargetProfile,
    pub features: Vec<ColumnProfile>,
}

impl Profile {
    /// Profiles `df`; `classification` decides how the target is summarized.
    pub fn of(df: &DataFrame, target: &str, classification: bool) -> PolarsResult<Self> {
        let mut features = Vec::new();
        for column in df.columns() {
            if column.name().as_str() == target {
                continue;
            }
            features.push(column_profile(column.as_materialized_series())?);
        }
        let target_series = df.column(target)?.as_materialized_series();
        let target_profile = if classification {
            TargetProfile::Classes { counts: value_counts(target_series)? }
        } else {
            let values = numeric_values(target_series)?;
            TargetProfile::Range {
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                mean: mean(&values),
                median: median(&values),
                std: std(&values),
            }
        };
        Ok(Self { rows: df.height(), target: target.to_string(), target_profile, features })
    }

    pub fn categorical_columns(&self) -> Vec<&str> {
        self.features.iter().filter(|c| c.kind == ColumnKind::Categorical).map(|c| c.name.as_str()).collect()
    }

    /// A compact plain-text rendering for prompts.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} rows, {} feature columns, target `{}`\n",
            self.rows,
            self.features.len(),
            self.target
        );
        match &self.target_profile {
            TargetProfile::Classes { counts } => {
                let parts: Vec<String> = counts.iter().map(|(v, n)| format!("{v}: {n}")).collect();
                out.push_str(&format!("target classes: {}\n", parts.join(", ")));
            }
            TargetProfile::Range { min, max, mean, median, std } => {
                out.push_str(&format!(
                    "target range: min {min:.4}, median {median:.4}, mean {mean:.4}, max {max:.4}, std {std:.4}\n"
                ));
            }
        }
        for c in &self.features {
            out.push_str(&format!(
                "- {} ({}, {}): {} missing, {} unique",
                c.name,
                c.dtype,
                kind_name(c.kind),
                c.missing,
                c.unique
            ));
            if let (Some(min), Some(max), Some(mean)) = (c.min, c.max, c.mean) {
                out.push_str(&format!(", min {min:.4}, mean {mean:.4}, max {max:.4}"));
            }
            if !c.top.is_empty() {
                let parts: Vec<String> = c.top.iter().map(|(v, n)| format!("{v} ({n})")).collect();
                out.push_str(&format!(", top: {}", parts.join(", ")));
            }
            out.push('\n');
        }
        out
    }
}

fn kind_name(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Numeric => "numeric",
        ColumnKind::Categorical => "categorical",
    }
}

fn column_profile(series: &Series) -> PolarsResult<ColumnProfile> {
    let dtype = series.dtype();
    let numeric = dtype.is_primitive_numeric();
    let (min, max, mean_value) = if numeric {
        let values = numeric_values(series)?;
        if values.is_empty() {
            (None, None, None)
        } else {
            (
                Some(values.iter().copied().fold(f64::INFINITY, f64::min)),
                Some(values.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                Some(mean(&values)),
            )
        }
    } else {
        (None, None, None)
    };
    let unique = series.n_unique()?;
    let top = if numeric { Vec::new() } else { value_counts(series)?.into_iter().take(5).collect() };
    Ok(ColumnProfile {
        name: series.name().to_string(),
        dtype: dtype.to_string(),
        kind: if numeric { ColumnKind::Numeric } else { ColumnKind::Categorical },
        missing: series.null_count(),
        unique,
        min,
        max,
        mean: mean_value,
        top,
    })
}

/// Non-null values as f64.
pub fn numeric_values(series: &Series) -> PolarsResult<Vec<f64>> {
    let cast = series.cast(&DataType::Float64)?;
    Ok(cast.f64()?.iter().flatten().filter(|v| v.is_finite()).collect())
}

/// Non-null values as canonical labels, with counts, most frequent first (ties by label).
pub fn value_counts(series: &Series) -> PolarsResult<Vec<(String, usize)>> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for label in labels(series)?.into_iter().flatten() {
        *counts.entry(label).or_default() += 1;
    }
    let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(counts)
}

/// Every value as a canonical label (`None` for nulls).
pub fn labels(series: &Series) -> PolarsResult<Vec<Option<String>>> {
    let cast = series.cast(&DataType::String)?;
    Ok(cast.str()?.iter().map(|v| v.map(canonical_label)).collect())
}

/// One spelling per label: `3`, `3.0` and ` 3 ` are the same class, as are `True` and `true`.
/// Scripts write predictions with whatever types pandas chose; the runner compares these.
pub fn canonical_label(raw: &str) -> String {
    let trimmed = raw.trim();
    if let Ok(value) = trimmed.parse::<f64>()
        && value.is_finite()
        && value.fract() == 0.0
        && value.abs() < 1e15
    {
        return format!("{}", value as i64);
    }
    match trimmed {
        "True" | "TRUE" => "true".to_string(),
        "False" | "FALSE" => "false".to_string(),
        other => other.to_string(),
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
}

fn std(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / values.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_canonical() {
        assert_eq!(canonical_label("3.0"), "3");
        assert_eq!(canonical_label(" 3 "), "3");
        assert_eq!(canonical_label("3.5"), "3.5");
        assert_eq!(canonical_label("True"), "true");
        assert_eq!(canonical_label("bad"), "bad");
    }

    #[test]
    fn profiles_a_small_table() {
        let df = df!(
            "age" => [Some(30.0), None, Some(50.0), Some(40.0)],
            "home" => [Some("rent"), Some("own"), Some("rent"), None],
            "y" => ["a", "b", "a", "a"],
        )
        .unwrap();
        let p = Profile::of(&df, "y", true).unwrap();
        assert_eq!(p.rows, 4);
        assert_eq!(
            p.target_profile,
            TargetProfile::Classes { counts: vec![("a".into(), 3), ("b".into(), 1)] }
        );
        assert_eq!(p.features[0].kind, ColumnKind::Numeric);
        assert_eq!(p.features[0].missing, 1);
        assert_eq!(p.features[0].mean, Some(40.0));
        assert_eq!(p.features[1].kind, ColumnKind::Categorical);
        assert_eq!(p.features[1].top, vec![("rent".to_string(), 2), ("own".to_string(), 1)]);
        assert_eq!(p.categorical_columns(), ["home"]);
        assert!(p.render().contains("target classes: a: 3, b: 1"));
    }
}
