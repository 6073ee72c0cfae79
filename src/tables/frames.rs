//! Rows to typed polars frames. Each table's columns are declared once, with their type; the
//! row structs in [`super::rows`] must serialize to exactly those names (a test holds them to it).

use polars::prelude::*;
use serde::Serialize;

/// A column's type in every format (SQL, Parquet, Arrow, CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Float,
    Int,
    Bool,
    /// Milliseconds since the epoch in the rows; a UTC timestamp in the tables.
    Time,
}

impl Kind {
    pub fn sql_name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Float => "double",
            Kind::Int => "bigint",
            Kind::Bool => "boolean",
            Kind::Time => "timestamp (UTC)",
        }
    }
}

/// A table's name and columns.
pub struct Schema {
    pub name: &'static str,
    pub about: &'static str,
    pub columns: &'static [(&'static str, Kind)],
}

use Kind::{Bool, Float, Int, Text, Time};

pub const RUNS: Schema = Schema {
    name: "runs",
    about: "one row per run",
    columns: &[
        ("run_id", Text),
        ("task", Text),
        ("metric", Text),
        ("higher_is_better", Bool),
        ("agent", Text),
        ("model", Text),
        ("sandbox", Text),
        ("state", Text),
        ("stop_reason", Text),
        ("validation", Text),
        ("folds", Int),
        ("best_iteration", Int),
        ("validation_score", Float),
        ("final_iteration", Int),
        ("test_score", Float),
        ("iterations", Int),
        ("failed_iterations", Int),
        ("budget_seconds", Float),
        ("wall_seconds", Float),
        ("cost_usd", Float),
        ("prompt_tokens", Int),
        ("completion_tokens", Int),
        ("started_at", Time),
        ("finished_at", Time),
        ("loop_runner_version", Text),
    ],
};

pub const ITERATIONS: Schema = Schema {
    name: "iterations",
    about: "one row per iteration: its parent and operation in the solution tree, model, representation, scores, timings",
    columns: &[
        ("run_id", Text),
        ("iteration", Int),
        ("parent", Int),
        ("operation", Text),
        ("reason", Text),
        ("status", Text),
        ("failed_step", Text),
        ("status_detail", Text),
        ("family", Text),
        ("hyperparameters", Text),
        ("representation", Text),
        ("numeric", Text),
        ("categorical", Text),
        ("missing", Text),
        ("drop_columns", Text),
        ("split_id", Int),
        ("validation_score", Float),
        ("validation_tiebreak", Float),
        ("is_best", Bool),
        ("is_final", Bool),
        ("test_score", Float),
        ("seconds", Float),
        ("script_seconds", Float),
        ("runner_seconds", Float),
        ("cost_usd", Float),
        ("prompt_tokens", Int),
        ("completion_tokens", Int),
        ("commit", Text),
        ("started_at", Time),
        ("finished_at", Time),
    ],
};

pub const STEPS: Schema = Schema {
    name: "steps",
    about: "one row per agent step: tokens, cost, attempts, latency",
    columns: &[
        ("run_id", Text),
        ("iteration", Int),
        ("step", Text),
        ("ok", Bool),
        ("seconds", Float),
        ("attempts", Int),
        ("calls", Int),
        ("cost_usd", Float),
        ("prompt_tokens", Int),
        ("completion_tokens", Int),
        ("detail", Text),
        ("finished_at", Time),
    ],
};

pub const SCRIPT_RUNS: Schema = Schema {
    name: "script_runs",
    about: "one row per sandboxed script: outcome, wall time, peak memory, limit hit",
    columns: &[
        ("run_id", Text),
        ("iteration", Int),
        ("step", Text),
        ("script", Text),
        ("exit", Text),
        ("exit_code", Int),
        ("ok", Bool),
        ("limit_hit", Text),
        ("crash", Text),
        ("wall_seconds", Float),
        ("peak_memory_bytes", Int),
        ("stdout_dropped_bytes", Int),
        ("stderr_dropped_bytes", Int),
        ("finished_at", Time),
    ],
};

pub const SNAPSHOTS: Schema = Schema {
    name: "snapshots",
    about: "one row per git snapshot: commit, tree, tag, and what git says about it",
    columns: &[
        ("run_id", Text),
        ("iteration", Int),
        ("tag", Text),
        ("commit", Text),
        ("tree", Text),
        ("best_when_committed", Bool),
        ("is_best", Bool),
        ("committed_at", Time),
        ("message", Text),
        ("files", Int),
        ("bytes", Int),
    ],
};

/// The five tables, in the order they are listed everywhere.
pub const SCHEMAS: [&Schema; 5] = [&RUNS, &ITERATIONS, &STEPS, &SCRIPT_RUNS, &SNAPSHOTS];

/// Builds a frame of `rows` with `schema`'s columns and types.
pub fn frame<R: Serialize>(rows: &[R], schema: &Schema) -> PolarsResult<DataFrame> {
    let values: Vec<serde_json::Value> =
        rows.iter().map(|r| serde_json::to_value(r).expect("rows serialize")).collect();
    let columns = schema
        .columns
        .iter()
        .map(|(name, kind)| {
            let cells = values.iter().map(|v| &v[*name]);
            let name = PlSmallStr::from_static(name);
            let series = match kind {
                Text => Series::new(name, cells.map(|c| c.as_str()).collect::<Vec<_>>()),
                Float => Series::new(name, cells.map(|c| c.as_f64()).collect::<Vec<_>>()),
                Int => Series::new(name, cells.map(|c| c.as_i64()).collect::<Vec<_>>()),
                Bool => Series::new(name, cells.map(|c| c.as_bool()).collect::<Vec<_>>()),
                Time => Series::new(name, cells.map(|c| c.as_i64()).collect::<Vec<_>>())
                    .into_datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)),
            };
            Column::from(series)
        })
        .collect();
    DataFrame::new(rows.len(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::rows::*;

    fn names(value: serde_json::Value) -> Vec<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    fn declared(schema: &Schema) -> Vec<String> {
        let mut v: Vec<String> = schema.columns.iter().map(|c| c.0.to_string()).collect();
        v.sort();
        v
    }

    /// Every row field is a declared column and every declared column a row field.
    #[test]
    fn schemas_name_exactly_the_row_fields() {
        let run = RunRow {
            run_id: "r".into(),
            task: "t".into(),
            metric: "accuracy".into(),
            higher_is_better: true,
            agent: "builtin".into(),
            model: "builtin".into(),
            sandbox: "wasi".into(),
            state: "finished".into(),
            stop_reason: None,
            validation: "cv".into(),
            folds: Some(5),
            best_iteration: None,
            validation_score: None,
            final_iteration: None,
            test_score: None,
            iterations: 0,
            failed_iterations: 0,
            budget_seconds: None,
            wall_seconds: 0.0,
            cost_usd: 0.0,
            prompt_tokens: 0,
            completion_tokens: 0,
            started_at: Some(1),
            finished_at: None,
            loop_runner_version: "0".into(),
        };
        let mut keys = names(serde_json::to_value(&run).unwrap());
        keys.sort();
        assert_eq!(keys, declared(&RUNS));
        let df = frame(&[run], &RUNS).unwrap();
        assert_eq!(df.height(), 1);
        assert!(matches!(
            df.column("started_at").unwrap().dtype(),
            DataType::Datetime(TimeUnit::Milliseconds, _)
        ));
        assert_eq!(df.column("folds").unwrap().dtype(), &DataType::Int64);
        let empty: Vec<StepRow> = vec![];
        let df = frame(&empty, &STEPS).unwrap();
        assert_eq!((df.height(), df.width()), (0, STEPS.columns.len()));
    }

    #[test]
    fn the_other_schemas_match_their_rows() {
        let step = StepRow {
            run_id: String::new(),
            iteration: 1,
            step: "plan".into(),
            ok: true,
            seconds: 0.0,
            attempts: 1,
            calls: None,
            cost_usd: 0.0,
            prompt_tokens: 0,
            completion_tokens: 0,
            detail: String::new(),
            finished_at: None,
        };
        let script = ScriptRunRow {
            run_id: String::new(),
            iteration: 1,
            step: "train".into(),
            script: "train.py".into(),
            exit: "exited".into(),
            exit_code: Some(0),
            ok: true,
            limit_hit: None,
            crash: None,
            wall_seconds: 0.0,
            peak_memory_bytes: 0,
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            finished_at: None,
        };
        let snapshot = SnapshotRow {
            run_id: String::new(),
            iteration: 1,
            tag: String::new(),
            commit: String::new(),
            tree: String::new(),
            best_when_committed: false,
            is_best: false,
            committed_at: None,
            message: None,
            files: None,
            bytes: None,
        };
        for (value, schema) in [
            (serde_json::to_value(&step).unwrap(), &STEPS),
            (serde_json::to_value(&script).unwrap(), &SCRIPT_RUNS),
            (serde_json::to_value(&snapshot).unwrap(), &SNAPSHOTS),
        ] {
            let mut keys = names(value);
            keys.sort();
            assert_eq!(keys, declared(schema), "{}", schema.name);
        }
    }
}
