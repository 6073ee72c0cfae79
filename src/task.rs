//! Task files: which data, which column to predict, how to score.
//!
//! The TOML shape is written by hand by users and by other tools, so it is kept stable: fields
//! are only ever added. Paths are relative to the task file.
//!
//! ```toml
//! name = "credit"
//! data = "credit.csv"        # one file: the runner splits off a test set (stratified, seeded)
//! # train = "train.csv"      # ...or separate files; test labels stay with the runner
//! # test = "test.csv"
//! target = "Status"
//! task = "binary"            # binary | multiclass | regression (inferred when absent)
//! metric = "roc_auc"         # roc_auc | accuracy | macro_f1 | log_loss | rmse | mae | r2
//! positive = "bad"           # binary only, optional
//! description = "Loan applicants; predict who defaults."
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::metric::Metric;

/// The kind of prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Binary,
    Multiclass,
    Regression,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Binary => "binary",
            TaskKind::Multiclass => "multiclass",
            TaskKind::Regression => "regression",
        }
    }

    pub fn is_classification(self) -> bool {
        self != TaskKind::Regression
    }

    /// The metric used when the task file names none.
    pub fn default_metric(self) -> Metric {
        match self {
            TaskKind::Binary => Metric::RocAuc,
            TaskKind::Multiclass => Metric::Accuracy,
            TaskKind::Regression => Metric::Rmse,
        }
    }
}

/// The task file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub name: String,
    pub data: Option<PathBuf>,
    pub train: Option<PathBuf>,
    pub test: Option<PathBuf>,
    pub target: String,
    pub task: Option<TaskKind>,
    pub metric: Option<String>,
    pub positive: Option<String>,
    pub description: Option<String>,
    /// Fraction of a single data file held out as the test split (default 0.2).
    pub test_fraction: Option<f64>,
    /// Seed for the test split (default 0).
    pub seed: Option<u64>,
}

/// Where the rows come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    /// One file; the runner splits off the test set.
    Single { data: PathBuf },
    /// Separate training and test files.
    TrainTest { train: PathBuf, test: PathBuf },
}

/// A task with paths resolved and fields checked (kind and metric may still be inferred from
/// the data, see [`crate::data`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub name: String,
    pub file: PathBuf,
    pub source: Source,
    pub target: String,
    pub kind: Option<TaskKind>,
    pub metric: Option<Metric>,
    pub positive: Option<String>,
    pub description: Option<String>,
    pub test_fraction: f64,
    pub seed: u64,
}

impl Task {
    /// Reads and checks a task file.
    pub fn load(path: &Path) -> Result<Self, UserError> {
        let text = fs_err::read_to_string(path).map_err(|e| {
            UserError::setup(format!("cannot read the task file: {e}"))
                .with_hint("pass an existing file with --task, or run from a directory with task.toml")
        })?;
        Self::parse(&text, path)
    }

    /// Parses task-file text; `path` locates relative data paths and names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, UserError> {
        let shown = path.display();
        let raw: TaskFile = toml::from_str(text).map_err(|e| {
            UserError::setup(format!("task file `{shown}` is not valid: {}", e.message().trim())).with_hint(
                "see the task file format in README.md (name, data or train/test, target, task, metric)",
            )
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &PathBuf| {
            if p.is_absolute() { p.clone() } else { dir.join(p) }
        };
        let source = match (&raw.data, &raw.train, &raw.test) {
            (Some(data), None, None) => Source::Single { data: resolve(data) },
            (None, Some(train), Some(test)) => {
                Source::TrainTest { train: resolve(train), test: resolve(test) }
            }
            (None, Some(_), None) => {
                return Err(UserError::setup(format!(
                    "task file `{shown}` names `train` but no `test` file"
                ))
                .with_hint(
                    "add `test = \"...\"`, or use `data = \"...\"` and let the runner split off a test set",
                ));
            }
            (Some(_), _, _) => {
                return Err(UserError::setup(format!(
                    "task file `{shown}` names both `data` and `train`/`test`; use one or the other"
                )));
            }
            _ => {
                return Err(UserError::setup(format!("task file `{shown}` names no data"))
                    .with_hint("add `data = \"file.csv\"` (or `train` and `test`)"));
            }
        };
        if raw.target.trim().is_empty() {
            return Err(UserError::setup(format!("task file `{shown}`: `target` is empty")));
        }
        let metric = raw
            .metric
            .as_deref()
            .map(str::parse::<Metric>)
            .transpose()
            .map_err(|e| UserError::setup(format!("task file `{shown}`: {e}")))?;
        if let (Some(kind), Some(metric)) = (raw.task, metric) {
            check_metric(kind, metric).map_err(|e| UserError::setup(format!("task file `{shown}`: {e}")))?;
        }
        if raw.positive.is_some() && matches!(raw.task, Some(TaskKind::Regression | TaskKind::Multiclass)) {
            return Err(UserError::setup(format!(
                "task file `{shown}`: `positive` applies to binary tasks only"
            )));
        }
        let test_fraction = raw.test_fraction.unwrap_or(0.2);
        if !(0.05..=0.5).contains(&test_fraction) {
            return Err(UserError::setup(format!(
                "task file `{shown}`: test_fraction {test_fraction} is outside 0.05..=0.5"
            )));
        }
        Ok(Task {
            name: raw.name,
            file: path.to_path_buf(),
            source,
            target: raw.target,
            kind: raw.task,
            metric,
            positive: raw.positive,
            description: raw.description,
            test_fraction,
            seed: raw.seed.unwrap_or(0),
        })
    }
}

/// Whether `metric` fits a task of `kind`.
pub fn check_metric(kind: TaskKind, metric: Metric) -> Result<(), String> {
    if kind.is_classification() == metric.is_regression() {
        return Err(format!("metric `{metric}` does not apply to a {} task", kind.name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Task, UserError> {
        Task::parse(text, Path::new("/tasks/t.toml"))
    }

    #[test]
    fn the_documented_shape_parses() {
        let task = parse(
            "name = \"credit\"\ndata = \"credit.csv\"\ntarget = \"Status\"\ntask = \"binary\"\nmetric = \"roc_auc\"\npositive = \"bad\"\ndescription = \"x\"\n",
        )
        .unwrap();
        assert_eq!(task.source, Source::Single { data: PathBuf::from("/tasks/credit.csv") });
        assert_eq!(task.kind, Some(TaskKind::Binary));
        assert_eq!(task.metric, Some(Metric::RocAuc));
        assert_eq!(task.positive.as_deref(), Some("bad"));
        let task = parse("name = \"d\"\ntrain = \"a/train.csv\"\ntest = \"/abs/test.csv\"\ntarget = \"y\"\n")
            .unwrap();
        assert_eq!(
            task.source,
            Source::TrainTest { train: "/tasks/a/train.csv".into(), test: "/abs/test.csv".into() }
        );
        assert_eq!(task.metric, None);
    }

    #[test]
    fn bad_task_files_say_what_is_wrong() {
        let cases = [
            ("name = \"x\"\ntarget = \"y\"\n", "names no data"),
            ("name = \"x\"\ndata = \"a\"\ntrain = \"b\"\ntest = \"c\"\ntarget = \"y\"\n", "both"),
            ("name = \"x\"\ntrain = \"b\"\ntarget = \"y\"\n", "no `test`"),
            ("name = \"x\"\ndata = \"a\"\ntarget = \"y\"\nmetric = \"auc\"\n", "unknown metric `auc`"),
            (
                "name = \"x\"\ndata = \"a\"\ntarget = \"y\"\ntask = \"regression\"\nmetric = \"roc_auc\"\n",
                "does not apply",
            ),
            ("name = \"x\"\ndata = \"a\"\ntarget = \"y\"\ntask = \"ranking\"\n", "not valid"),
            ("name = \"x\"\ndata = \"a\"\ntarget = \"y\"\ncolour = \"red\"\n", "unknown field `colour`"),
            ("name = \"x\"\ndata = \"a\"\n", "missing field `target`"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
            assert_eq!(err.exit_code, crate::exit_code::SETUP);
        }
    }
}
