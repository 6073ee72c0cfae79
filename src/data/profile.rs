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
    /// Dates or timestamps (as text like `2024-03-01` or `2024-03-01 12:30`, or a date type):
    /// worth turning into year, month, weekday... rather than treating as categories.
    Date,
    /// A row identifier (a name like `id` or `customer_id` with a value per row, or text that
    /// never repeats): it carries no signal that generalizes.
    Identifier,
    /// Free text: words in sentences, titles, names or remarks (three words or more on average,
    /// few values repeated). Its words carry the signal, not its values as categories: a
    /// column of product reviews is almost one category per row.
    Text,
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
    /// For numbers written with thousands separators, currency or percent signs: one value as
    /// the data spell it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_as: Option<String>,
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
            features.push(column_profile(column.as_materialized_series(), df.height())?);
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
        self.columns(ColumnKind::Categorical)
    }

    /// Numeric columns the data hold as text (numbers with a few markers such as `?` or `NA`):
    /// scripts must read them as numbers.
    pub fn numbers_as_text(&self) -> Vec<&str> {
        self.features
            .iter()
            .filter(|c| c.kind == ColumnKind::Numeric && c.dtype == DataType::String.to_string())
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The feature columns of one kind.
    pub fn columns(&self, kind: ColumnKind) -> Vec<&str> {
        self.features.iter().filter(|c| c.kind == kind).map(|c| c.name.as_str()).collect()
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
            if let Some(example) = &c.written_as {
                out.push_str(&format!(", numbers written like `{example}`"));
            }
            if !c.top.is_empty() {
                let parts: Vec<String> = c.top.iter().map(|(v, n)| format!("{v} ({n})")).collect();
                let label =
                    if c.kind == ColumnKind::Numeric { "not numbers (read as missing)" } else { "top" };
                out.push_str(&format!(", {label}: {}", parts.join(", ")));
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
        ColumnKind::Date => "date",
        ColumnKind::Identifier => "identifier",
        ColumnKind::Text => "text",
    }
}

/// Whether a column name reads like an identifier: `id`, `ID`, `user_id`, `customerID`, `row-id`.
fn id_like_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let trimmed = lower.trim();
    trimmed == "id"
        || ["_id", "-id", " id", ".id"].iter().any(|s| trimmed.ends_with(s))
        || ["id_", "id-", "id "].iter().any(|s| trimmed.starts_with(s))
        || (name.ends_with("ID") || name.ends_with("Id")) && name.len() > 2
}

/// Whether text looks like a date or timestamp: `2024-03-01`, `2024/03/01`, `2024-03-01 12:30`,
/// `2024-03-01T12:30:00`, `03/01/2024`, with a zone (`Z`) or an offset (`+01:00`) after the time.
fn date_like(text: &str) -> bool {
    let t = text.trim();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, rest)) => (d, Some(rest)),
        None => (t, None),
    };
    let parts: Vec<&str> = date.split(['-', '/']).collect();
    let date_ok = match parts.as_slice() {
        [y, m, d] if digits(y, 4) => (digits(m, 2) || digits(m, 1)) && (digits(d, 2) || digits(d, 1)),
        [m, d, y] if digits(y, 4) => (digits(m, 2) || digits(m, 1)) && (digits(d, 2) || digits(d, 1)),
        _ => false,
    };
    let time_ok = time.is_none_or(|t| {
        let t = t.trim_end_matches('Z');
        // An offset after the time: `+01:00`, `+0100`, `-05`.
        let t = match t.rfind(['+', '-']) {
            Some(at)
                if matches!(t.len() - at - 1, 2 | 4 | 5)
                    && t[at + 1..].bytes().all(|b| b.is_ascii_digit() || b == b':') =>
            {
                &t[..at]
            }
            _ => t,
        };
        let hms: Vec<&str> = t.split(':').collect();
        (2..=3).contains(&hms.len()) && digits(hms[0], 2) && digits(hms[1], 2)
    });
    date_ok && time_ok
}

fn column_profile(series: &Series, rows: usize) -> PolarsResult<ColumnProfile> {
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
    let (mut min, mut max, mut mean_value) = (min, max, mean_value);
    let unique = series.n_unique()?;
    let present = rows.saturating_sub(series.null_count()).max(1);
    let name = series.name().to_string();
    let is_date = matches!(dtype, DataType::Date | DataType::Datetime(_, _))
        || (dtype == &DataType::String && {
            let sample: Vec<String> = labels(&series.head(Some(200)))?.into_iter().flatten().collect();
            !sample.is_empty() && sample.iter().filter(|v| date_like(v)).count() * 20 >= sample.len() * 19
        });
    let as_text = if dtype == &DataType::String && !is_date { numbers_in_text(series)? } else { None };
    if let Some(NumbersInText { numbers: values, .. }) = &as_text {
        min = Some(values.iter().copied().fold(f64::INFINITY, f64::min));
        max = Some(values.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        mean_value = Some(mean(values));
    }
    let kind = if is_date {
        ColumnKind::Date
    } else if !id_like_name(&name) && as_text.is_none() && free_text(series, unique, present)? {
        ColumnKind::Text
    } else if (id_like_name(&name) && unique * 10 >= present * 9 && present >= 20)
        || (!numeric && as_text.is_none() && unique == present && present > 50)
    {
        ColumnKind::Identifier
    } else if numeric || as_text.is_some() {
        ColumnKind::Numeric
    } else {
        ColumnKind::Categorical
    };
    let (top, written_as) = match as_text {
        Some(NumbersInText { markers, formatted, .. }) => (markers.into_iter().take(5).collect(), formatted),
        // Free text repeats little, and its values are long: no "top" to show.
        None if numeric || kind == ColumnKind::Text => (Vec::new(), None),
        None => (value_counts(series)?.into_iter().take(5).collect(), None),
    };
    Ok(ColumnProfile {
        name,
        dtype: dtype.to_string(),
        kind,
        missing: series.null_count(),
        unique,
        min,
        max,
        mean: mean_value,
        top,
        written_as,
    })
}

/// Words a value of free text has on average, at least.
const TEXT_WORDS: f64 = 3.0;

/// Whether a column is free text: strings of [`TEXT_WORDS`] words or more on average (over its
/// first 1,000 values), at least a fifth of them distinct and 20 or more (a categorical whose
/// few levels are phrases, such as `Precautionary Landing`, stays categorical).
fn free_text(series: &Series, unique: usize, present: usize) -> PolarsResult<bool> {
    if series.dtype() != &DataType::String || unique < 20 || unique * 5 < present {
        return Ok(false);
    }
    let sample = series.str()?;
    let (mut values, mut words) = (0usize, 0usize);
    for v in sample.iter().flatten().take(1000) {
        values += 1;
        words += v.split_whitespace().count();
    }
    Ok(values > 0 && words as f64 >= TEXT_WORDS * values as f64)
}

/// Share of a text column's values that must be numbers for it to count as numbers written as
/// text, the rest being missing-value markers (`?`, `NA`, `n/a`, `inf`) as many public tables
/// write them.
const NUMBERS_SHARE: f64 = 0.95;

/// A text column's finite numbers, and its other values (the markers) with their counts, most
/// frequent first.
struct NumbersInText {
    numbers: Vec<f64>,
    markers: Vec<(String, usize)>,
    /// The first value written with separators or signs, if any was.
    formatted: Option<String>,
}

/// A text column that is numbers but for a few markers. `None` when it is no such column.
fn numbers_in_text(series: &Series) -> PolarsResult<Option<NumbersInText>> {
    let mut numbers = Vec::new();
    let mut formatted = None;
    let mut other: HashMap<String, usize> = HashMap::new();
    for v in series.str()?.iter().flatten() {
        match number_in_text(v) {
            Some((x, plain)) if x.is_finite() => {
                numbers.push(x);
                if !plain && formatted.is_none() {
                    formatted = Some(v.trim().to_string());
                }
            }
            _ => *other.entry(v.to_string()).or_default() += 1,
        }
    }
    let present = numbers.len() + other.values().sum::<usize>();
    if numbers.is_empty() || (numbers.len() as f64) < NUMBERS_SHARE * present as f64 {
        return Ok(None);
    }
    let mut markers: Vec<(String, usize)> = other.into_iter().collect();
    markers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Some(NumbersInText { numbers, markers, formatted }))
}

/// `series` as numbers when it is text that is numbers but for a few markers (which become
/// missing, as do infinities); `None` otherwise.
pub fn numbers_from_text(series: &Series) -> PolarsResult<Option<Series>> {
    if series.dtype() != &DataType::String || numbers_in_text(series)?.is_none() {
        return Ok(None);
    }
    let values: Vec<Option<f64>> = series
        .str()?
        .iter()
        .map(|v| v.and_then(number_in_text).map(|(x, _)| x).filter(|x| x.is_finite()))
        .collect();
    Ok(Some(Series::new(series.name().clone(), values)))
}

/// A number as tables write them: plain (`-1.5e3`), or with one leading currency sign (`$`,
/// `€`, `£`, `¥`, after the sign if any), commas between groups of three digits, or a trailing
/// `%` (the number as written: `45%` is 45). With whether it was plain. The built-in agent's
/// scripts read text the same way (`FEATURES` in `builtin/scripts.rs`).
fn number_in_text(text: &str) -> Option<(f64, bool)> {
    let text = text.trim();
    if let Ok(x) = text.parse::<f64>() {
        return Some((x, true));
    }
    let (sign, rest) = match text.strip_prefix(['+', '-']) {
        Some(rest) => (&text[..1], rest),
        None => ("", text),
    };
    let rest = rest.strip_prefix(['$', '€', '£', '¥']).unwrap_or(rest);
    let rest = rest.strip_suffix('%').unwrap_or(rest);
    let (whole, fraction) = rest.split_once('.').unwrap_or((rest, ""));
    if whole.contains(',') {
        let mut groups = whole.split(',');
        let first = groups.next().unwrap_or_default();
        if !(1..=3).contains(&first.len()) || !groups.all(|g| g.len() == 3) {
            return None;
        }
    }
    let digits = whole.replace(',', "");
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if digits.is_empty() || !all_digits(&digits) || !all_digits(fraction) {
        return None;
    }
    let number = format!("{sign}{digits}.{fraction}0");
    number.parse::<f64>().ok().map(|x| (x, false))
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

    #[test]
    fn numbers_with_a_few_missing_markers_are_numbers() {
        let n = 100;
        let marked = |i: usize| match i {
            3 => "?".to_string(),
            50 => "NA".to_string(),
            70 => "inf".to_string(),
            _ => format!("{}.5", i),
        };
        let df = df!(
            "x" => (0..n).map(marked).collect::<Vec<_>>(),
            // A tenth not numbers: categories that happen to look like numbers.
            "grade" => (0..n).map(|i| if i % 10 == 0 { "K".to_string() } else { (i % 5).to_string() }).collect::<Vec<_>>(),
            "y" => (0..n).map(|i| (i % 2) as i64).collect::<Vec<_>>(),
        )
        .unwrap();
        let p = Profile::of(&df, "y", true).unwrap();
        assert_eq!(p.columns(ColumnKind::Numeric), ["x"]);
        assert_eq!(p.numbers_as_text(), ["x"]);
        assert_eq!(p.columns(ColumnKind::Categorical), ["grade"]);
        let x = &p.features[0];
        assert_eq!((x.min, x.max), (Some(0.5), Some(99.5)));
        assert_eq!(x.top, [("?".to_string(), 1), ("NA".to_string(), 1), ("inf".to_string(), 1)]);
        assert!(
            p.render().contains("not numbers (read as missing): ? (1), NA (1), inf (1)"),
            "{}",
            p.render()
        );
    }

    #[test]
    fn numbers_with_separators_and_signs_are_numbers() {
        let cases = [
            ("12,345", Some(12345.0)),
            ("$1,234.50", Some(1234.5)),
            ("-€3", Some(-3.0)),
            ("45%", Some(45.0)),
            ("+$12.", Some(12.0)),
            ("1,234,567", Some(1234567.0)),
            (" 7 ", Some(7.0)),
            // A decimal comma, Indian grouping, a sign alone: not numbers of this kind.
            ("1,5", None),
            ("12,34,567", None),
            ("$.5", None),
            ("$", None),
            ("1,2345", None),
            ("12a", None),
        ];
        for (text, want) in cases {
            assert_eq!(number_in_text(text).map(|(x, _)| x), want, "{text}");
        }
        assert_eq!(number_in_text("1e3"), Some((1000.0, true)));
        let n = 100;
        let df = df!(
            "income" => (0..n).map(|i| if i == 7 { "n/a".to_string() } else { format!("${},{:03}", i + 1, i) }).collect::<Vec<_>>(),
            "y" => (0..n).map(|i| (i % 2) as i64).collect::<Vec<_>>(),
        )
        .unwrap();
        let p = Profile::of(&df, "y", true).unwrap();
        assert_eq!(p.numbers_as_text(), ["income"]);
        let c = &p.features[0];
        assert_eq!((c.min, c.max, c.written_as.as_deref()), (Some(1000.0), Some(100099.0), Some("$1,000")));
        assert!(p.render().contains("numbers written like `$1,000`"), "{}", p.render());
    }

    #[test]
    fn dates_and_identifiers_are_recognised() {
        let n = 60;
        let df = df!(
            "customerID" => (0..n).map(|i| format!("C{i:04}")).collect::<Vec<_>>(),
            "row_id" => (0..n).map(|i| i as i64).collect::<Vec<_>>(),
            "signup" => (0..n).map(|i| format!("2024-{:02}-{:02}", 1 + i % 12, 1 + i % 28)).collect::<Vec<_>>(),
            "seen" => (0..n).map(|i| format!("03/{:02}/2023 10:{:02}", 1 + i % 28, i % 60)).collect::<Vec<_>>(),
            "city" => (0..n).map(|i| ["a", "b", "c"][i % 3].to_string()).collect::<Vec<_>>(),
            "idle" => (0..n).map(|i| (i % 7) as f64).collect::<Vec<_>>(),
            "y" => (0..n).map(|i| (i % 2) as i64).collect::<Vec<_>>(),
        )
        .unwrap();
        let p = Profile::of(&df, "y", true).unwrap();
        assert_eq!(p.columns(ColumnKind::Identifier), ["customerID", "row_id"]);
        assert_eq!(p.columns(ColumnKind::Date), ["signup", "seen"]);
        assert_eq!(p.columns(ColumnKind::Categorical), ["city"]);
        assert_eq!(p.columns(ColumnKind::Numeric), ["idle"], "`idle` is no identifier");
        assert!(!date_like("2024-13") && !date_like("hello") && date_like("2024-03-01T12:30:00Z"));
        for offset in ["+02:00", "+0100", "-05"] {
            assert!(date_like(&format!("2021-03-28T03:00:00{offset}")), "{offset}");
        }
        assert!(!date_like("2021-03-28 -05:00"));
    }

    #[test]
    fn free_text_is_told_from_phrases_codes_and_names() {
        let n = 200;
        let words = ["great", "taste", "stale", "would", "buy", "again", "never", "crunchy"];
        let sentence =
            |i: usize| (0..3 + i % 5).map(|k| words[(i * 7 + k * 3) % 8]).collect::<Vec<_>>().join(" ");
        let df = df!(
            "review" => (0..n).map(|i| format!("{} #{i}", sentence(i))).collect::<Vec<_>>(),
            "effect" => (0..n).map(|i| ["Precautionary Landing", "Aborted Take-off", "Engine Shut Down"][i % 3].to_string()).collect::<Vec<_>>(),
            "code" => (0..n).map(|i| format!("B{i:08}")).collect::<Vec<_>>(),
            "title_id" => (0..n).map(|i| format!("part {i} of the whole")).collect::<Vec<_>>(),
            "pair" => (0..n).map(|i| format!("{} {i}", words[i % 8])).collect::<Vec<_>>(),
            "y" => (0..n).map(|i| (i % 2) as i64).collect::<Vec<_>>(),
        )
        .unwrap();
        let p = Profile::of(&df, "y", true).unwrap();
        assert_eq!(p.columns(ColumnKind::Text), ["review"]);
        assert_eq!(p.columns(ColumnKind::Categorical), ["effect"], "phrases of a few levels");
        // Codes that never repeat, a name that says identifier, and two words a value.
        assert_eq!(p.columns(ColumnKind::Identifier), ["code", "title_id", "pair"]);
        assert!(p.features[0].top.is_empty());
        assert!(p.render().contains("- review (str, text)"), "{}", p.render());
    }
}
