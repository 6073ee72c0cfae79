//! Provenance as tables: runs' journals and git snapshots turned into five typed tables
//! (`runs`, `iterations`, `steps`, `script_runs`, `snapshots`), which `query` runs SQL over and
//! `export` writes as Parquet, Arrow IPC or CSV. The journal stays the only source of truth:
//! tables are made from it each time, never stored beside it.

mod frames;
pub mod rows;
pub mod synth;
mod write;

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::UserError;
use crate::run_dir::RunDir;
pub use frames::{Kind, SCHEMAS, Schema};
pub use rows::RunRows;
pub use write::{Format, write_tables};

/// The five tables of one or more runs.
pub struct Tables {
    pub runs: DataFrame,
    pub iterations: DataFrame,
    pub steps: DataFrame,
    pub script_runs: DataFrame,
    pub snapshots: DataFrame,
}

impl Tables {
    /// Reads every run directory. A damaged or foreign journal is an error naming the run.
    pub fn load(dirs: &[RunDir]) -> anyhow::Result<Self> {
        let mut all = RunRows::default();
        let mut runs = Vec::new();
        for dir in dirs {
            let rows = rows::read_run(dir)
                .map_err(|e| e.context(format!("reading run `{}`", dir.root.display())))?;
            runs.extend(rows.run);
            all.iterations.extend(rows.iterations);
            all.steps.extend(rows.steps);
            all.script_runs.extend(rows.script_runs);
            all.snapshots.extend(rows.snapshots);
        }
        Ok(Self {
            runs: frames::frame(&runs, &frames::RUNS)?,
            iterations: frames::frame(&all.iterations, &frames::ITERATIONS)?,
            steps: frames::frame(&all.steps, &frames::STEPS)?,
            script_runs: frames::frame(&all.script_runs, &frames::SCRIPT_RUNS)?,
            snapshots: frames::frame(&all.snapshots, &frames::SNAPSHOTS)?,
        })
    }

    /// `(name, frame)` of each table, in [`SCHEMAS`] order.
    pub fn named(&self) -> [(&'static str, &DataFrame); 5] {
        [
            ("runs", &self.runs),
            ("iterations", &self.iterations),
            ("steps", &self.steps),
            ("script_runs", &self.script_runs),
            ("snapshots", &self.snapshots),
        ]
    }

    /// Runs a SQL query over the tables (polars' SQL dialect).
    pub fn query(&self, sql: &str) -> anyhow::Result<DataFrame> {
        let mut context = polars::sql::SQLContext::new();
        for (name, frame) in self.named() {
            context.register(name, frame.clone().lazy());
        }
        let planned = context.execute(sql).map_err(|e| query_error(&e))?;
        Ok(planned.collect().map_err(|e| query_error(&e))?)
    }
}

fn query_error(e: &PolarsError) -> UserError {
    let tables: Vec<&str> = SCHEMAS.iter().map(|s| s.name).collect();
    UserError::setup(format!("the query failed: {e}"))
        .with_hint(format!("tables: {}; `loop-runner query --schema` lists their columns", tables.join(", ")))
}

/// `frame` with its timestamps as RFC 3339 text (UTC, milliseconds): how CSV and terminal output
/// show them.
pub fn with_text_times(frame: &DataFrame) -> PolarsResult<DataFrame> {
    let columns = frame
        .columns()
        .iter()
        .map(|c| {
            if !matches!(c.dtype(), DataType::Datetime(..)) {
                return Ok(c.clone());
            }
            let ms = c
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))?
                .cast(&DataType::Int64)?;
            let text: Vec<Option<String>> = ms.i64()?.iter().map(|v| v.map(millis_text)).collect();
            Ok(Column::new(c.name().clone(), text))
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    DataFrame::new(frame.height(), columns)
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn millis_text(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Run directories given on the command line, or every run directory under `runs_dir`.
pub fn find_runs(explicit: &[PathBuf], runs_dir: &Path) -> anyhow::Result<Vec<RunDir>> {
    if !explicit.is_empty() {
        return explicit.iter().map(|p| Ok(RunDir::open(p)?)).collect();
    }
    let entries = fs_err::read_dir(runs_dir).map_err(|e| {
        UserError::setup(format!("cannot read the runs directory `{}`: {e}", runs_dir.display()))
            .with_hint("pass --runs-dir DIR, or run directories by name")
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("journal.jsonl").is_file())
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().map(|root| RunDir { root }).collect())
}

/// The tables and their columns, for `query --schema`.
pub fn describe() -> String {
    let mut out = String::new();
    for schema in SCHEMAS {
        out.push_str(&format!("{} ({})\n", schema.name, schema.about));
        for (name, kind) in schema.columns {
            out.push_str(&format!("  {name:<22} {}\n", kind.sql_name()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_runs_load_query_and_keep_every_iteration_field() {
        let dir = tempfile::tempdir().unwrap();
        let roots = synth::synthesize(dir.path(), 2, 6, 3).unwrap();
        let dirs = find_runs(&[], dir.path()).unwrap();
        assert_eq!(dirs.len(), roots.len());
        let rows = rows::read_run(&dirs[0]).unwrap();
        let mut keys: Vec<String> =
            serde_json::to_value(&rows.iterations[0]).unwrap().as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut declared: Vec<String> = frames::ITERATIONS.columns.iter().map(|c| c.0.to_string()).collect();
        declared.sort();
        assert_eq!(keys, declared);

        let tables = Tables::load(&dirs).unwrap();
        assert_eq!(tables.runs.height(), 2);
        assert_eq!(tables.iterations.height(), 12);
        assert_eq!(tables.steps.height(), 48);
        // The parent join gives what the rows say, computed by hand.
        let run = &rows.iterations[0].run_id;
        let improved = tables
            .query(&format!(
                "SELECT c.iteration FROM iterations c JOIN iterations p \
                 ON c.run_id = p.run_id AND c.parent = p.iteration \
                 WHERE c.run_id = '{run}' AND c.validation_score > p.validation_score ORDER BY c.iteration"
            ))
            .unwrap();
        let got: Vec<i64> =
            improved.column("iteration").unwrap().i64().unwrap().into_no_null_iter().collect();
        let by_hand: Vec<i64> = rows
            .iterations
            .iter()
            .filter(|c| {
                let parent = c.parent.and_then(|p| rows.iterations.iter().find(|r| r.iteration == p));
                matches!((c.validation_score, parent.and_then(|p| p.validation_score)), (Some(a), Some(b)) if a > b)
            })
            .map(|c| c.iteration)
            .collect();
        assert_eq!(got, by_hand);
        let err = tables.query("SELECT nope FROM iterations").unwrap_err();
        assert!(format!("{err:#}").contains("the query failed"), "{err:#}");
    }
}
