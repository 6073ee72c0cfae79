//! A task's data made ready for a run: loaded, checked, typed, and split into the part agents
//! may see (the pool) and the held-out test set.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::load::read_table;
use super::profile::{Profile, labels, numbers_from_text, numeric_values};
use super::split::split;
use crate::error::UserError;
use crate::metric::Metric;
use crate::task::{Source, Task, TaskKind, check_metric};

/// What the run needs to know about the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub column: String,
    pub kind: TaskKind,
    pub metric: Metric,
    /// Sorted class labels (classification).
    pub classes: Vec<String>,
    /// The positive class (binary).
    pub positive: Option<String>,
}

#[cfg(test)]
impl TargetInfo {
    /// Column `y`, binary between `a` and `b` (positive), scored by AUC.
    pub fn binary_ab() -> Self {
        Self {
            column: "y".into(),
            kind: TaskKind::Binary,
            metric: Metric::RocAuc,
            classes: vec!["a".into(), "b".into()],
            positive: Some("b".into()),
        }
    }
}

/// Loaded and checked data.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub target: TargetInfo,
    /// Rows agents may see (training and validation come from here).
    pub pool: DataFrame,
    /// Held-out rows, labels included; never shown to agent code.
    pub test: DataFrame,
    /// Rows dropped because their target was missing.
    pub dropped_rows: usize,
    /// Test classes the training rows lack, with their rows: no model can predict them.
    pub unseen_classes: Vec<(String, usize)>,
    pub profile: Profile,
}

impl Dataset {
    /// Loads the task's data and applies every check a user should hear about before a run.
    pub fn prepare(task: &Task) -> Result<Self, UserError> {
        let (mut pool, mut test, dropped_rows) = match &task.source {
            Source::Single { data } => {
                let df = read_table(data)?;
                require_target(&df, &task.target, &data.display().to_string())?;
                let df = with_numeric_target(df, task)?;
                let (df, dropped) = drop_null_target(df, &task.target)?;
                let kind = infer_kind(task, &df)?;
                let stratify =
                    if kind.is_classification() { Some(target_labels(&df, &task.target)?) } else { None };
                let parts = split(df.height(), stratify.as_deref(), task.test_fraction, task.seed);
                let pool = take(&df, &parts.kept)?;
                let test = take(&df, &parts.held)?;
                (pool, test, dropped)
            }
            Source::TrainTest { train, test } => {
                let pool = read_table(train)?;
                require_target(&pool, &task.target, &train.display().to_string())?;
                let test_df = read_table(test)?;
                require_target(&test_df, &task.target, &test.display().to_string()).map_err(|e| {
                    e.with_hint("the test file must hold the labels: loop-runner scores it itself and never shows it to agent code")
                })?;
                let missing: Vec<String> = pool
                    .get_column_names()
                    .into_iter()
                    .filter(|c| test_df.column(c.as_str()).is_err())
                    .map(|c| c.to_string())
                    .collect();
                if !missing.is_empty() {
                    return Err(UserError::setup(format!(
                        "test file `{}` lacks columns of the training file: {}",
                        test.display(),
                        missing.join(", ")
                    )));
                }
                let test_df = test_df
                    .select(pool.get_column_names().into_iter().cloned())
                    .map_err(|e| UserError::setup(format!("test file `{}`: {e}", test.display())))?;
                let (pool, dropped) = drop_null_target(with_numeric_target(pool, task)?, &task.target)?;
                let (test_df, dropped_test) =
                    drop_null_target(with_numeric_target(test_df, task)?, &task.target)?;
                (pool, test_df, dropped + dropped_test)
            }
        };
        let kind = infer_kind(task, &pool)?;
        let metric = task.metric.unwrap_or(kind.default_metric());
        check_metric(kind, metric).map_err(|e| {
            UserError::setup(format!("task `{}`: {e}", task.name))
                .with_hint("set `task` or `metric` in the task file")
        })?;
        let mut classes = Vec::new();
        let mut positive = None;
        let mut unseen = Vec::new();
        if kind.is_classification() {
            let pool_labels = target_labels(&pool, &task.target)?;
            let mut set: Vec<String> = pool_labels.clone();
            set.sort();
            set.dedup();
            if set.len() < 2 {
                return Err(UserError::setup(format!(
                    "target `{}` has a single class (`{}`) in the training data; there is nothing to predict",
                    task.target,
                    set.first().map(String::as_str).unwrap_or("")
                )));
            }
            if kind == TaskKind::Binary && set.len() != 2 {
                return Err(UserError::setup(format!(
                    "task is binary but target `{}` has {} classes: {}",
                    task.target,
                    set.len(),
                    preview(&set)
                ))
                .with_hint("use `task = \"multiclass\"`"));
            }
            if let Some(p) = &task.positive {
                let p = super::profile::canonical_label(p);
                if !set.contains(&p) {
                    return Err(UserError::setup(format!(
                        "positive class `{p}` is not a value of target `{}` ({})",
                        task.target,
                        preview(&set)
                    )));
                }
                positive = Some(p);
            } else if kind == TaskKind::Binary {
                positive = set.last().cloned();
            }
            unseen = unseen_classes(&target_labels(&test, &task.target)?, &set);
            classes = set;
            pool = with_canonical_target(pool, &task.target)?;
            test = with_canonical_target(test, &task.target)?;
        }
        let profile = Profile::of(&pool, &task.target, kind.is_classification())
            .map_err(|e| UserError::setup(format!("profiling the data failed: {e}")))?;
        Ok(Self {
            target: TargetInfo { column: task.target.clone(), kind, metric, classes, positive },
            pool,
            test,
            dropped_rows,
            unseen_classes: unseen,
            profile,
        })
    }
}

/// The labels of `test` that are not among `classes`, with how many rows each has.
fn unseen_classes(test: &[String], classes: &[String]) -> Vec<(String, usize)> {
    let mut unseen = std::collections::BTreeMap::<&str, usize>::new();
    for label in test.iter().filter(|l| classes.binary_search(l).is_err()) {
        *unseen.entry(label).or_default() += 1;
    }
    unseen.into_iter().map(|(l, n)| (l.to_string(), n)).collect()
}

fn preview(values: &[String]) -> String {
    let shown: Vec<&str> = values.iter().take(8).map(String::as_str).collect();
    if values.len() > 8 { format!("{}, ...", shown.join(", ")) } else { shown.join(", ") }
}

fn require_target(df: &DataFrame, target: &str, file: &str) -> Result<(), UserError> {
    if df.column(target).is_ok() {
        return Ok(());
    }
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    let close = names.iter().find(|n| n.eq_ignore_ascii_case(target) || n.trim() == target.trim());
    let mut err = UserError::setup(format!(
        "target column `{target}` is not in `{file}` (columns: {})",
        preview(&names)
    ));
    if let Some(close) = close {
        err = err.with_hint(format!("did you mean `{close}`? set `target = \"{close}\"` in the task file"));
    }
    Err(err)
}

fn drop_null_target(df: DataFrame, target: &str) -> Result<(DataFrame, usize), UserError> {
    let column = df.column(target).map_err(|e| UserError::setup(e.to_string()))?;
    let nulls = column.null_count();
    if nulls == df.height() {
        return Err(UserError::setup(format!("target column `{target}` is empty (every value is missing)")));
    }
    if nulls == 0 {
        return Ok((df, 0));
    }
    let mask = column.as_materialized_series().is_not_null();
    let kept = df.filter(&mask).map_err(|e| UserError::setup(e.to_string()))?;
    Ok((kept, nulls))
}

fn infer_kind(task: &Task, df: &DataFrame) -> Result<TaskKind, UserError> {
    let series =
        df.column(&task.target).map_err(|e| UserError::setup(e.to_string()))?.as_materialized_series();
    if let Some(kind) = task.kind {
        if kind == TaskKind::Regression && !series.dtype().is_primitive_numeric() {
            return Err(UserError::setup(format!(
                "task is regression but target `{}` is not numeric ({})",
                task.target,
                series.dtype()
            )));
        }
        return Ok(kind);
    }
    let unique = series.n_unique().map_err(|e| UserError::setup(e.to_string()))?;
    if !series.dtype().is_primitive_numeric() {
        return Ok(if unique <= 2 { TaskKind::Binary } else { TaskKind::Multiclass });
    }
    let values = numeric_values(series).map_err(|e| UserError::setup(e.to_string()))?;
    let integral = values.iter().all(|v| v.fract() == 0.0);
    Ok(match unique {
        2 if integral => TaskKind::Binary,
        n if integral && n <= 20 => TaskKind::Multiclass,
        _ => TaskKind::Regression,
    })
}

/// Target values as canonical labels (no nulls: they were dropped).
pub fn target_labels(df: &DataFrame, target: &str) -> Result<Vec<String>, UserError> {
    let series = df.column(target).map_err(|e| UserError::setup(e.to_string()))?.as_materialized_series();
    Ok(labels(series)
        .map_err(|e| UserError::setup(e.to_string()))?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// `df` with a target written as numbers with a few markers (`?`, `NA`, `inf`) read as numbers,
/// the marked rows then without a target (dropped, like empty ones). A task declared a
/// classification keeps its labels as written.
fn with_numeric_target(mut df: DataFrame, task: &Task) -> Result<DataFrame, UserError> {
    if task.kind.is_some_and(TaskKind::is_classification) {
        return Ok(df);
    }
    let failed = |e: PolarsError| UserError::setup(format!("reading target `{}`: {e}", task.target));
    let series = df.column(&task.target).map_err(failed)?.as_materialized_series().clone();
    if let Some(numbers) = numbers_from_text(&series).map_err(failed)? {
        tracing::info!(target = %task.target, "the target is numbers written as text; values that are not numbers are missing");
        df.with_column(numbers.into()).map_err(failed)?;
    }
    Ok(df)
}

/// `df` with its target column spelled one way per class (`profile::canonical_label`): scripts then
/// train on the classes the runner scores, where ` Yes` and `Yes`, or `1.0` and `1`, would be
/// two classes to a model (two probability columns) and one to the metric.
fn with_canonical_target(mut df: DataFrame, target: &str) -> Result<DataFrame, UserError> {
    let failed = |e: PolarsError| UserError::setup(format!("reading target `{target}`: {e}"));
    let series = df.column(target).map_err(failed)?.as_materialized_series().clone();
    let canonical = labels(&series).map_err(failed)?;
    let raw = series.cast(&DataType::String).map_err(failed)?;
    if raw.str().map_err(failed)?.iter().zip(&canonical).all(|(r, c)| r == c.as_deref()) {
        return Ok(df);
    }
    df.with_column(Column::new(target.into(), canonical)).map_err(failed)?;
    Ok(df)
}

/// The rows at `indices`.
pub fn take(df: &DataFrame, indices: &[u32]) -> Result<DataFrame, UserError> {
    let idx = IdxCa::from_vec("idx".into(), indices.iter().map(|&i| i as IdxSize).collect());
    df.take(&idx).map_err(|e| UserError::setup(format!("selecting rows failed: {e}")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn task_in(dir: &Path, body: &str) -> Task {
        let path = dir.join("task.toml");
        std::fs::write(&path, body).unwrap();
        Task::load(&path).unwrap()
    }

    #[test]
    fn single_file_is_split_and_kind_inferred() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("x,y\n");
        for i in 0..100 {
            csv.push_str(&format!("{i},{}\n", if i % 3 == 0 { "yes" } else { "no" }));
        }
        std::fs::write(dir.path().join("d.csv"), csv).unwrap();
        let task = task_in(dir.path(), "name = \"t\"\ndata = \"d.csv\"\ntarget = \"y\"\n");
        let ds = Dataset::prepare(&task).unwrap();
        assert_eq!(ds.target.kind, TaskKind::Binary);
        assert_eq!(ds.target.metric, Metric::RocAuc);
        assert_eq!(ds.target.classes, ["no", "yes"]);
        assert_eq!(ds.target.positive.as_deref(), Some("yes"));
        assert_eq!(ds.pool.height() + ds.test.height(), 100);
        assert_eq!(ds.test.height(), 20);
    }

    #[test]
    fn scripts_see_one_spelling_per_class() {
        let dir = tempfile::tempdir().unwrap();
        let spellings = ["yes", " yes", "no ", "no", "\"no\""];
        let mut csv = String::from("x,y\n");
        for i in 0..100 {
            csv.push_str(&format!("{i},{}\n", spellings[i % spellings.len()]));
        }
        std::fs::write(dir.path().join("d.csv"), csv).unwrap();
        let task = task_in(dir.path(), "name = \"t\"\ndata = \"d.csv\"\ntarget = \"y\"\n");
        let ds = Dataset::prepare(&task).unwrap();
        assert_eq!(ds.target.classes, ["no", "yes"]);
        for df in [&ds.pool, &ds.test] {
            let mut seen = target_labels(df, "y").unwrap();
            let raw: Vec<_> =
                df.column("y").unwrap().str().unwrap().iter().flatten().map(str::to_string).collect();
            assert_eq!(raw, seen);
            seen.sort();
            seen.dedup();
            assert_eq!(seen, ["no", "yes"]);
        }
        // Labels already spelled one way are left as they are (integers stay integers).
        std::fs::write(
            dir.path().join("ints.csv"),
            "x,y\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n7,0\n8,1\n9,0\n10,1\n",
        )
        .unwrap();
        let task = task_in(dir.path(), "name = \"t\"\ndata = \"ints.csv\"\ntarget = \"y\"\n");
        let ds = Dataset::prepare(&task).unwrap();
        assert_eq!(ds.pool.column("y").unwrap().dtype(), &DataType::Int64);
    }

    #[test]
    fn a_target_of_numbers_with_markers_is_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("x,y\n");
        for i in 0..100 {
            let y = match i {
                5 => "?".to_string(),
                9 => "inf".to_string(),
                _ => format!("{}.25", i * 3),
            };
            csv.push_str(&format!("{i},{y}\n"));
        }
        std::fs::write(dir.path().join("d.csv"), csv).unwrap();
        let task = task_in(dir.path(), "name = \"t\"\ndata = \"d.csv\"\ntarget = \"y\"\n");
        let ds = Dataset::prepare(&task).unwrap();
        assert_eq!((ds.target.kind, ds.dropped_rows), (TaskKind::Regression, 2));
        assert_eq!(ds.pool.column("y").unwrap().dtype(), &DataType::Float64);
        // Declared a classification, the labels stay as written.
        let task =
            task_in(dir.path(), "name = \"t\"\ndata = \"d.csv\"\ntarget = \"y\"\ntask = \"multiclass\"\n");
        assert_eq!(Dataset::prepare(&task).unwrap().target.classes.len(), 100);
    }

    #[test]
    fn bad_data_gets_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("one_class.csv", "x,y\n1,a\n2,a\n3,a\n4,a\n5,a\n");
        write("null_target.csv", "x,y\n1,\n2,\n");
        write("three.csv", "x,y\n1,a\n2,b\n3,c\n4,a\n5,b\n6,c\n");
        let cases = [
            ("data = \"one_class.csv\"\ntarget = \"y\"", "single class"),
            ("data = \"null_target.csv\"\ntarget = \"y\"", "every value is missing"),
            ("data = \"three.csv\"\ntarget = \"Y\"", "not in"),
            ("data = \"three.csv\"\ntarget = \"y\"\ntask = \"binary\"", "has 3 classes"),
            ("data = \"three.csv\"\ntarget = \"y\"\ntask = \"regression\"", "not numeric"),
            ("data = \"three.csv\"\ntarget = \"y\"\npositive = \"z\"", "positive class `z`"),
        ];
        for (body, expected) in cases {
            let task = task_in(dir.path(), &format!("name = \"t\"\n{body}\n"));
            let err = Dataset::prepare(&task).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
        let task = task_in(dir.path(), "name = \"t\"\ndata = \"three.csv\"\ntarget = \"Y\"\n");
        assert!(Dataset::prepare(&task).unwrap_err().hint.unwrap().contains("did you mean `y`"));
    }

    #[test]
    fn test_classes_the_training_rows_lack_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.csv"), "x,y\n1,a\n2,b\n3,1\n4,a\n").unwrap();
        std::fs::write(dir.path().join("test.csv"), "x,y\n1,a\n2,d\n3,1.0\n4,d\n5,e\n").unwrap();
        let task = task_in(
            dir.path(),
            "name = \"t\"\ntrain = \"train.csv\"\ntest = \"test.csv\"\ntarget = \"y\"\ntask = \"multiclass\"\n",
        );
        let ds = Dataset::prepare(&task).unwrap();
        // `1.0` is the class `1`: one spelling each.
        assert_eq!(ds.unseen_classes, [("d".to_string(), 2), ("e".to_string(), 1)]);
    }
}
